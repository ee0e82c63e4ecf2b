//! Integration tests of the QEMU backend against a real QEMU, under TCG.
//!
//! Needs the environment of `scripts/test-env.sh` (source `.test-env/env`):
//! `MCP_TEST_QEMU`, `MCP_TEST_KERNEL`, `MCP_TEST_INITRD` and `MCP_TEST_DISK`.
//! The tests fail (never skip) when it is missing.
//!
//! The guest is a Debian cloud kernel with a busybox initramfs: it prints
//! `mcp-test-guest: up` on its serial console once `busybox httpd` serves
//! on port 8080, and powers off on the ACPI power button. Each test has its
//! own state directory and free host ports, and kills its VMs on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mcp_runtime::qemu::{Accel, Qemu, QemuConfig};
use mcp_runtime::{
    InstanceSpec, InstanceState, KernelBoot, LogOptions, PortMapping, Runtime, RuntimeError,
};

use crate::ports::free_port;

const GUEST_UP: &str = "mcp-test-guest: up";
const GUEST_POWEROFF: &str = "mcp-test-guest: power button, powering off";
const DISK_UP: &str = "mcp-test-disk: up";
const PAGE: &str = "hello from the mcp test guest";
/// How long a TCG boot may take on a busy 2-core host.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

fn require(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => {
            if var != "MCP_TEST_QEMU" {
                assert!(
                    Path::new(&v).is_file(),
                    "{var}={v} does not exist: run `make test` or scripts/test-env.sh \
                     (then `source .test-env/env`) to build the QEMU test guest"
                );
            }
            v
        }
        _ => panic!(
            "{var} is not set: the QEMU integration tests need QEMU and the test guest; \
             run `make test`, or scripts/test-env.sh then `source .test-env/env` before `cargo test`"
        ),
    }
}

/// A test's backend over its own state directory; kills its VMs on drop.
struct Env {
    _tmp: tempfile::TempDir,
    state_dir: PathBuf,
    qemu: PathBuf,
    kernel: String,
    initrd: String,
    disk: String,
}

impl Env {
    fn new() -> Env {
        let qemu = PathBuf::from(require("MCP_TEST_QEMU"));
        let kernel = require("MCP_TEST_KERNEL");
        let initrd = require("MCP_TEST_INITRD");
        let disk = require("MCP_TEST_DISK");
        let tmp = tempfile::tempdir().expect("tempdir");
        let state_dir = tmp.path().join("vms");
        Env {
            _tmp: tmp,
            state_dir,
            qemu,
            kernel,
            initrd,
            disk,
        }
    }

    fn backend(&self) -> Qemu {
        Qemu::new(QemuConfig {
            qemu: self.qemu.clone(),
            state_dir: self.state_dir.clone(),
            accel: Accel::Tcg,
            ..QemuConfig::default()
        })
    }

    /// The test guest, its port 8080 published on `port`.
    fn guest(&self, name: &str, port: u16) -> InstanceSpec {
        InstanceSpec {
            name: name.into(),
            ports: vec![PortMapping {
                host_ip: "127.0.0.1".into(),
                host_port: port,
                container_port: 8080,
                protocol: "tcp".into(),
            }],
            memory_bytes: Some(256 << 20),
            vcpus: Some(1),
            kernel: Some(KernelBoot {
                kernel: self.kernel.clone(),
                initrd: Some(self.initrd.clone()),
                append: Some("console=ttyS0 quiet panic=-1".into()),
            }),
            labels: [("mcp.managed".to_string(), "true".to_string())].into(),
            ..InstanceSpec::default()
        }
    }

    fn serial(&self, name: &str) -> String {
        std::fs::read_to_string(self.state_dir.join(name).join("serial.log")).unwrap_or_default()
    }

    /// Waits until `line` appears `count` times in the VM's serial log.
    async fn wait_serial(&self, name: &str, line: &str, count: usize) {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            let log = self.serial(name);
            if log.matches(line).count() >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {line:?} not seen {count} time(s) on the serial console within {} s; log:\n{log}",
                BOOT_TIMEOUT.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn pid(&self, name: &str) -> Option<i32> {
        std::fs::read_to_string(self.state_dir.join(name).join("pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Kill whatever still runs, so a failed test leaves no VM behind.
        let Ok(entries) = std::fs::read_dir(&self.state_dir) else {
            return;
        };
        for entry in entries.flatten() {
            if let Ok(pid) = std::fs::read_to_string(entry.path().join("pid"))
                && let Ok(pid) = pid.trim().parse::<i32>()
            {
                let _ = nix_kill(pid);
            }
        }
    }
}

fn nix_kill(pid: i32) -> std::io::Result<()> {
    // `kill -9` through the command, to keep this test free of signal crates.
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .map(drop)
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// GET / on 127.0.0.1:port; the body, retried until the deadline.
async fn http_get(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .await
        .expect("join");
        match attempt {
            Ok(body) if body.contains("200") => return body,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "GET http://127.0.0.1:{port}/ failed: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn state(rt: &Qemu, name: &str) -> InstanceState {
    rt.inspect(name)
        .await
        .expect("inspect")
        .expect("exists")
        .state
}

#[tokio::test]
async fn guest_boots_serves_and_stops_gracefully() {
    let env = Env::new();
    let rt = env.backend();
    let version = rt.ping().await.expect("ping");
    assert!(!version.version.is_empty(), "{version:?}");
    let port = free_port();
    let id = rt.create(&env.guest("web-vm", port)).await.expect("create");
    assert_eq!(state(&rt, "web-vm").await, InstanceState::Created);
    assert_eq!(state(&rt, &id).await, InstanceState::Created, "by id");

    rt.start("web-vm").await.expect("start");
    env.wait_serial("web-vm", GUEST_UP, 1).await;
    let body = http_get(port).await;
    assert!(body.contains(PAGE), "{body}");

    let info = rt
        .inspect("web-vm")
        .await
        .expect("inspect")
        .expect("exists");
    assert_eq!(info.state, InstanceState::Running, "{info:?}");
    assert_eq!(info.id, id);
    assert_eq!(info.runtime, mcp_runtime::RuntimeKind::Unikernel);
    assert!(info.is_managed());
    assert_eq!(
        info.details.as_ref().map(|d| d.memory_bytes),
        Some(256 << 20)
    );
    let list = rt.list().await.expect("list");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].name, "web-vm");
    assert_eq!(list[0].state, InstanceState::Running);

    // Starting a running VM is not an error and launches nothing.
    let pid = env.pid("web-vm").expect("pid");
    rt.start("web-vm").await.expect("start again");
    assert_eq!(env.pid("web-vm"), Some(pid));

    // Graceful stop: the guest sees the power button and QEMU exits on its
    // own, before the stop timeout (only then would `quit` follow).
    let stop_timeout = Duration::from_secs(60);
    let started = Instant::now();
    rt.stop("web-vm", stop_timeout).await.expect("stop");
    let took = started.elapsed();
    assert!(
        took < stop_timeout,
        "stop took {took:?}: QEMU did not exit on the power button"
    );
    assert!(
        env.serial("web-vm").contains(GUEST_POWEROFF),
        "{}",
        env.serial("web-vm")
    );
    assert!(!alive(pid), "qemu {pid} still alive");
    let info = rt
        .inspect("web-vm")
        .await
        .expect("inspect")
        .expect("exists");
    assert_eq!(info.state, InstanceState::Exited);
    assert_eq!(info.exit_code, Some(0));
    // Stopping a stopped VM is not an error.
    rt.stop("web-vm", Duration::from_secs(1))
        .await
        .expect("stop again");

    // Restart: the serial log is appended to.
    rt.start("web-vm").await.expect("restart");
    env.wait_serial("web-vm", GUEST_UP, 2).await;
    assert!(http_get(port).await.contains(PAGE));

    // Logs: tail and follow.
    let tail = rt
        .logs(
            "web-vm",
            &LogOptions {
                follow: false,
                tail: Some(1),
            },
        )
        .await
        .expect("logs");
    let tail: Vec<_> = tail.collect().await;
    let text: String = tail
        .iter()
        .map(|c| String::from_utf8_lossy(&c.as_ref().expect("chunk").data).into_owned())
        .collect();
    assert_eq!(text, format!("{GUEST_UP}\n"));
    let mut follow = rt
        .logs(
            "web-vm",
            &LogOptions {
                follow: true,
                tail: Some(0),
            },
        )
        .await
        .expect("follow");
    rt.stop("web-vm", Duration::from_secs(30))
        .await
        .expect("stop");
    let next = tokio::time::timeout(Duration::from_secs(10), follow.next())
        .await
        .expect("followed output")
        .expect("a chunk")
        .expect("ok");
    assert!(
        String::from_utf8_lossy(&next.data).contains(GUEST_POWEROFF),
        "{next:?}"
    );

    // Remove deletes the state directory and ends a followed log.
    rt.remove("web-vm", false).await.expect("remove");
    assert!(!env.state_dir.join("web-vm").exists());
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while follow.next().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "followed log did not end on remove");
    assert!(rt.inspect("web-vm").await.expect("inspect").is_none());
    assert!(matches!(
        rt.start("web-vm").await,
        Err(RuntimeError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_new_backend_reattaches_to_running_vms() {
    let env = Env::new();
    let port = free_port();
    {
        let first = env.backend();
        first
            .create(&env.guest("keep-vm", port))
            .await
            .expect("create");
        first.start("keep-vm").await.expect("start");
        // The first backend goes away, as with an agent restart.
    }
    let pid = env.pid("keep-vm").expect("pid");

    // The second finds the VM and copies its console again (what the guest
    // wrote while no backend was there is not kept).
    let second = env.backend();
    let list = second.list().await.expect("list");
    env.wait_serial("keep-vm", GUEST_UP, 1).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].state, InstanceState::Running);
    second.start("keep-vm").await.expect("start is a no-op");
    assert_eq!(env.pid("keep-vm"), Some(pid), "no second qemu");
    assert!(http_get(port).await.contains(PAGE));

    // Rename (as the replace flow does) keeps the VM running and reachable.
    second.rename("keep-vm", "kept-vm").await.expect("rename");
    assert_eq!(state(&second, "kept-vm").await, InstanceState::Running);
    assert!(second.inspect("keep-vm").await.expect("inspect").is_none());

    second
        .stop("kept-vm", Duration::from_secs(30))
        .await
        .expect("stop");
    assert!(!alive(pid));
    assert!(env.serial("kept-vm").contains(GUEST_POWEROFF));
    second.remove("kept-vm", false).await.expect("remove");
    assert!(second.list().await.expect("list").is_empty());
}

#[tokio::test]
async fn a_killed_vm_is_reported_by_events_and_inspect() {
    let env = Env::new();
    let rt = env.backend();
    let port = free_port();
    let id = rt
        .create(&env.guest("doomed-vm", port))
        .await
        .expect("create");
    rt.start("doomed-vm").await.expect("start");
    let pid = env.pid("doomed-vm").expect("pid");
    let mut events = rt.events().await.expect("events");
    nix_kill(pid).expect("kill -9");
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within 10 s")
        .expect("stream open")
        .expect("event");
    assert_eq!(event.action, "died");
    assert_eq!(event.name, "doomed-vm");
    assert_eq!(event.id, id);
    let info = rt
        .inspect("doomed-vm")
        .await
        .expect("inspect")
        .expect("exists");
    assert_eq!(info.state, InstanceState::Exited);
    assert_eq!(info.exit_code, None, "not stopped by MCP");
    // It can be started again, and removed with force while running.
    rt.start("doomed-vm").await.expect("start again");
    assert_eq!(state(&rt, "doomed-vm").await, InstanceState::Running);
    let pid = env.pid("doomed-vm").expect("pid");
    assert!(matches!(
        rt.remove("doomed-vm", false).await,
        Err(RuntimeError::Conflict(_))
    ));
    rt.remove("doomed-vm", true).await.expect("force remove");
    assert!(!alive(pid));
    assert!(!env.state_dir.join("doomed-vm").exists());
}

#[tokio::test]
async fn disk_image_boots_and_a_deaf_guest_is_quit() {
    let env = Env::new();
    let rt = env.backend();
    let spec = InstanceSpec {
        name: "disk-vm".into(),
        image: env.disk.clone(),
        memory_bytes: Some(64 << 20),
        ..InstanceSpec::default()
    };
    assert!(rt.image_exists(&env.disk).await.expect("exists"));
    rt.pull(&env.disk)
        .await
        .expect("pull of a present file is a no-op");
    rt.create(&spec).await.expect("create");
    rt.start("disk-vm").await.expect("start");
    env.wait_serial("disk-vm", DISK_UP, 1).await;
    let pid = env.pid("disk-vm").expect("pid");
    // The boot sector ignores the power button: stop falls back to quit.
    let started = Instant::now();
    rt.stop("disk-vm", Duration::from_secs(1))
        .await
        .expect("stop");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(!alive(pid));
    // Ended by `quit` (0), not killed (137).
    let info = rt.inspect("disk-vm").await.expect("inspect").expect("vm");
    assert_eq!(info.exit_code, Some(0), "{info:?}");
    rt.remove("disk-vm", false).await.expect("remove");
}

#[tokio::test]
async fn bad_input_is_refused_and_leaves_nothing_behind() {
    let env = Env::new();
    let rt = env.backend();
    let leftovers = || {
        std::fs::read_dir(&env.state_dir)
            .map(|d| d.count())
            .unwrap_or(0)
    };

    // A missing image file.
    let missing = InstanceSpec {
        name: "missing-vm".into(),
        image: "/nonexistent/mcp-test/unikernel.img".into(),
        ..InstanceSpec::default()
    };
    let err = rt.create(&missing).await.expect_err("missing image");
    assert!(matches!(err, RuntimeError::Invalid(_)), "{err}");
    assert!(
        err.to_string()
            .contains("/nonexistent/mcp-test/unikernel.img does not exist"),
        "{err}"
    );
    assert!(
        !rt.image_exists("/nonexistent/mcp-test/unikernel.img")
            .await
            .expect("exists")
    );
    let err = rt
        .pull("/nonexistent/mcp-test/unikernel.img")
        .await
        .expect_err("pull");
    assert!(matches!(err, RuntimeError::Pull { .. }), "{err}");

    // A missing kernel.
    let mut no_kernel = env.guest("nokernel-vm", free_port());
    if let Some(k) = no_kernel.kernel.as_mut() {
        k.kernel = "/nonexistent/mcp-test/vmlinuz".into();
    }
    let err = rt.create(&no_kernel).await.expect_err("missing kernel");
    assert!(err.to_string().contains("kernel file"), "{err}");

    // Memory below the minimum.
    let small = InstanceSpec {
        memory_bytes: Some(1 << 20),
        ..env.guest("small-vm", free_port())
    };
    let err = rt.create(&small).await.expect_err("small memory");
    assert!(matches!(err, RuntimeError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("below the minimum"), "{err}");
    assert_eq!(leftovers(), 0, "refused creates leave no state");

    // A host port already taken: refused at start, nothing runs.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    rt.create(&env.guest("port-vm", port))
        .await
        .expect("create");
    let err = rt.start("port-vm").await.expect_err("port taken");
    assert!(matches!(err, RuntimeError::Conflict(_)), "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    assert_eq!(state(&rt, "port-vm").await, InstanceState::Created);
    assert!(env.pid("port-vm").is_none());
    rt.remove("port-vm", false).await.expect("remove");

    // A corrupt kernel: QEMU refuses it at once, and its stderr is reported.
    let corrupt = env._tmp.path().join("corrupt-vmlinuz");
    std::fs::write(&corrupt, b"this is not a kernel").expect("write");
    let mut bad_kernel = env.guest("corrupt-vm", free_port());
    if let Some(k) = bad_kernel.kernel.as_mut() {
        k.kernel = corrupt.to_string_lossy().into_owned();
    }
    rt.create(&bad_kernel).await.expect("create");
    let err = rt.start("corrupt-vm").await.expect_err("corrupt kernel");
    assert!(matches!(err, RuntimeError::Api { .. }), "{err}");
    assert!(err.to_string().to_lowercase().contains("kernel"), "{err}");
    assert_eq!(state(&rt, "corrupt-vm").await, InstanceState::Created);
    assert!(env.pid("corrupt-vm").is_none());
    assert!(!env.state_dir.join("corrupt-vm").join("qmp.sock").exists());
    rt.remove("corrupt-vm", false).await.expect("remove");

    // A name taken twice.
    rt.create(&env.guest("twice-vm", free_port()))
        .await
        .expect("create");
    let err = rt
        .create(&env.guest("twice-vm", free_port()))
        .await
        .expect_err("twice");
    assert!(matches!(err, RuntimeError::Conflict(_)), "{err}");
    rt.remove("twice-vm", false).await.expect("remove");
    assert_eq!(leftovers(), 0);
}

#[tokio::test]
async fn kvm_probe_gives_an_answer_quickly() {
    // Whatever this host's KVM is like, the probe answers within its limit
    // and never hangs; with `auto`, TCG is the fallback.
    let env = Env::new();
    let started = Instant::now();
    let result = mcp_runtime::qemu::probe_kvm(&env.qemu).await;
    // Its own limit is 10 s; a hang would never end.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{result:?} after {:?}",
        started.elapsed()
    );
    eprintln!("KVM probe: {result:?}");
}
