//! Unikernel components end to end: a real agent with the QEMU runtime
//! (TCG), the test guest's raw disk image, and containers alongside.

use std::time::Duration;

use mcp_e2e::{Node, unique, wait_for};

fn require(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run `make test`, or scripts/test-env.sh then `. .test-env/env`")
    })
}

/// The node's VM state directory.
fn state_dir(node: &Node) -> std::path::PathBuf {
    node.dir.path().join("vms")
}

/// The agent configuration of the QEMU runtime (TCG), with the test
/// guest's directory as an images dir.
fn vm_config(node: &Node) -> String {
    let images = std::path::Path::new(&require("MCP_TEST_DISK"))
        .parent()
        .expect("the test disk's directory")
        .to_path_buf();
    format!(
        "\n[unikernel]\nqemu = \"{}\"\naccel = \"tcg\"\nstate_dir = \"{}\"\nimages_dirs = [\"{}\"]\n",
        require("MCP_TEST_QEMU"),
        state_dir(node).display(),
        images.display()
    )
}

/// Restarts the node's agent with the QEMU runtime configured.
fn enable_vms(node: &mut Node) -> std::path::PathBuf {
    enable_vms_with(node, "")
}

/// Restarts the node's agent with the QEMU runtime configured, and `extra`
/// lines in its `[unikernel]` table.
fn enable_vms_with(node: &mut Node, extra: &str) -> std::path::PathBuf {
    let vms = format!("{}{extra}\n", vm_config(node));
    node.reconfigure(|text| text.push_str(&vms));
    state_dir(node)
}

fn component<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["nodes"][0]["components"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["component"] == name))
        .unwrap_or_else(|| panic!("no component {name}: {status}"))
}

#[test]
fn a_vm_and_a_container_are_managed_alike_across_an_agent_restart() {
    let mut node = Node::start();
    let state_dir = enable_vms(&mut node);
    let service = unique("uni");
    // The disk image goes to the service's directory like any other file,
    // and the definition names it there.
    node.mcp(&["push", &service, &require("MCP_TEST_DISK"), "vm/disk.raw"])
        .success();
    let disk = "vm/disk.raw";
    node.write_service(
        &service,
        &format!(
            r#"name = "{service}"

[[components]]
name = "vm"
runtime = "unikernel"
image = "{disk}"
memory = "64M"
vcpus = 1

[[components]]
name = "web"
image = "{image}"
cmd = ["sleep", "3600"]
"#,
            image = node.env.image_v1
        ),
    );
    node.mcp(&["deploy", &service]).success();
    let info = node.mcp_json(&["node", "info"]);
    assert_eq!(info["nodes"][0]["unikernels"], true, "{info}");
    assert_eq!(info["nodes"][0]["accel"], "tcg", "{info}");

    // One status and one ps for both kinds.
    let status = node.mcp_json(&["status", &service]);
    let vm = component(&status, "vm");
    assert_eq!(vm["runtime"], "unikernel", "{status}");
    assert_eq!(vm["observed_state"], "running", "{status}");
    assert_eq!(vm["drift"], serde_json::json!([]), "{status}");
    assert_eq!(component(&status, "web")["observed_state"], "running");
    let ps = node.mcp_json(&["ps"]);
    let vm_name = format!("{service}-vm");
    let row = ps["nodes"][0]["instances"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == vm_name.as_str()))
        .unwrap_or_else(|| panic!("{vm_name} not in ps: {ps}"))
        .clone();
    assert_eq!(row["runtime"], "unikernel");
    assert_eq!(row["managed"], true);

    // Its serial console is its log.
    let logs = wait_for(Duration::from_secs(60), || {
        let out = node.mcp(&["logs", &service, "vm"]).success().stdout;
        out.contains("mcp-test-disk: up").then_some(out)
    });
    assert!(logs.is_some(), "no serial output:\n{}", node.agent_log());

    // The agent restarts; the VM runs on and is found again, not doubled.
    let pid = std::fs::read_to_string(state_dir.join(&vm_name).join("pid"))
        .expect("pidfile")
        .trim()
        .to_string();
    node.stop_agent();
    node.start_agent();
    let status = node.mcp_json(&["status", &service]);
    assert_eq!(
        component(&status, "vm")["observed_state"],
        "running",
        "{status}"
    );
    let again = std::fs::read_to_string(state_dir.join(&vm_name).join("pid")).expect("pidfile");
    assert_eq!(again.trim(), pid);
    let plan = node.mcp_json(&["deploy", &service]);
    assert!(
        plan.to_string().contains("unchanged"),
        "a redeploy replaced something: {plan}"
    );

    // QEMU dies while the agent is down: the restarted agent reports it as
    // drift (and alerts, like any drift).
    node.stop_agent();
    let status = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    node.start_agent();
    let drift = wait_for(Duration::from_secs(15), || {
        let v = node.mcp_json(&["events", "--service", &service]);
        v["nodes"][0]["events"].as_array().and_then(|a| {
            a.iter()
                .find(|e| e["component"] == "vm" && e["kind"] == "drift:stopped")
                .cloned()
        })
    });
    assert!(
        drift.is_some(),
        "no drift for the dead VM:\n{}",
        node.agent_log()
    );

    // Started again, then killed while the agent watches: drift again, from
    // the VM runtime's events.
    node.mcp(&["start", &service]).success();
    let cleared = wait_for(Duration::from_secs(15), || {
        let v = node.mcp_json(&["events", "--service", &service]);
        v["nodes"][0]["events"].as_array().and_then(|a| {
            a.iter()
                .find(|e| e["component"] == "vm" && e["kind"] == "drift-cleared")
                .cloned()
        })
    });
    assert!(
        cleared.is_some(),
        "the restarted VM did not clear its drift"
    );
    let pid = std::fs::read_to_string(state_dir.join(&vm_name).join("pid")).expect("pidfile");
    let status = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .expect("kill");
    assert!(status.success());
    let second = wait_for(Duration::from_secs(15), || {
        let v = node.mcp_json(&["events", "--service", &service]);
        let n = v["nodes"][0]["events"].as_array().map_or(0, |a| {
            a.iter()
                .filter(|e| e["component"] == "vm" && e["kind"] == "drift:stopped")
                .count()
        });
        (n >= 2).then_some(())
    });
    assert!(
        second.is_some(),
        "no drift for the VM killed under the agent:\n{}",
        node.agent_log()
    );

    // Removal leaves no VM state behind.
    node.mcp(&["remove", &service]).success();
    assert!(!state_dir.join(&vm_name).exists());

    // Files outside the service's directory and the images dirs are refused,
    // before anything is registered.
    for (image, why) in [
        ("/etc/hostname", "not in one of [unikernel] images_dirs"),
        ("../other/disk.raw", "invalid path"),
        ("vm/missing.raw", "does not exist"),
    ] {
        let bad = unique("badvm");
        node.write_service(
            &bad,
            &format!(
                "name = \"{bad}\"\n\n[[components]]\nname = \"vm\"\nruntime = \"unikernel\"\nimage = \"{image}\"\n"
            ),
        );
        let err = node.mcp(&["deploy", &bad]).failure();
        assert!(err.contains(why), "{image}: {err}");
        assert!(!state_dir.join(format!("{bad}-vm")).exists());
    }

    // Memory below what a VM can boot with, a host port already taken, a
    // corrupt kernel: clear errors, no VM left running or recorded.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("addr").port();
    let garbage = node.dir.path().join("garbage");
    std::fs::write(&garbage, vec![0x5a; 4096]).expect("write");
    node.mcp(&[
        "push",
        &service,
        garbage.to_str().expect("utf-8"),
        "vm/garbage",
    ])
    .success();
    for (extra, why) in [
        ("memory = \"16M\"", "a vm needs at least 32 mib"),
        (
            &*format!("ports = [\"127.0.0.1:{taken_port}:8080\"]"),
            "already in use",
        ),
        ("kernel = \"vm/garbage\"", "qemu"),
    ] {
        let bad = unique("badvm");
        node.mcp(&["push", &bad, &require("MCP_TEST_DISK"), "vm/disk.raw"])
            .success();
        if extra.starts_with("kernel") {
            node.mcp(&["push", &bad, garbage.to_str().expect("utf-8"), "vm/garbage"])
                .success();
        }
        node.write_service(
            &bad,
            &format!(
                "name = \"{bad}\"\n\n[[components]]\nname = \"vm\"\nruntime = \"unikernel\"\nimage = \"vm/disk.raw\"\n{extra}\n"
            ),
        );
        let err = node.mcp(&["deploy", &bad]).failure();
        assert!(err.to_lowercase().contains(why), "{extra}: {err}");
        let status = node.mcp_json(&["status"]);
        assert!(
            !status.to_string().contains(&format!("\"{bad}-vm\"")) || {
                let c = status["nodes"][0]["components"]
                    .as_array()
                    .and_then(|a| a.iter().find(|c| c["service"] == bad.as_str()).cloned())
                    .unwrap_or_default();
                c["observed_state"] != "running"
            },
            "{extra}: {status}"
        );
        let running = std::fs::read_to_string(state_dir.join(format!("{bad}-vm")).join("pid"))
            .ok()
            .filter(|pid| std::path::Path::new(&format!("/proc/{}", pid.trim())).exists());
        assert!(running.is_none(), "{extra}: a qemu was left running");
    }
    drop(taken);
}

/// What the definition alone or the node can tell before starting refuses
/// the whole service: none of its components changes.
#[test]
fn a_refused_component_leaves_every_component_of_its_service_as_it_was() {
    let mut node = Node::start();
    let _ = enable_vms(&mut node);
    let service = unique("whole");
    let (v1, v2) = (node.env.image_v1.clone(), node.env.image_v2.clone());
    let web = |image: &str| {
        format!(
            "name = \"{service}\"\n\n[[components]]\nname = \"web\"\nimage = \"{image}\"\ncmd = [\"sleep\", \"3600\"]\n"
        )
    };

    // A VM below the memory a VM needs, beside a container: refused by the
    // CLI at the value, nothing sent, the container not created.
    let path = node.write_service(
        &service,
        &format!(
            "{}\n[[components]]\nname = \"vm\"\nruntime = \"unikernel\"\nimage = \"vm/disk.raw\"\nmemory = \"8M\"\n",
            web(&v1)
        ),
    );
    let err = node.mcp(&["deploy", &service]).failure();
    assert!(
        err.contains(&format!(
            "{}:12:10: invalid memory \"8M\" for a unikernel component: a VM needs at least 32 MiB",
            path.display()
        )),
        "{err}"
    );
    assert!(node.instances_of(&service).is_empty());

    // The container runs v1. A new version of it together with a VM whose
    // disk is not on the node: the node refuses the VM before it starts,
    // so the container is not replaced either.
    node.write_service(&service, &web(&v1));
    node.mcp(&["deploy", &service]).success();
    let before: Vec<(String, i64)> = node
        .instances_of(&service)
        .into_iter()
        .map(|i| (i.id, i.started_at))
        .collect();
    assert_eq!(before.len(), 1);
    node.write_service(
        &service,
        &format!(
            "{}\n[[components]]\nname = \"vm\"\nruntime = \"unikernel\"\nimage = \"vm/missing.raw\"\n",
            web(&v2)
        ),
    );
    let err = node.mcp(&["deploy", &service]).failure();
    assert!(
        err.contains(&format!("{service}/vm: image \"vm/missing.raw\"")),
        "{err}"
    );
    let after: Vec<(String, i64)> = node
        .instances_of(&service)
        .into_iter()
        .map(|i| (i.id, i.started_at))
        .collect();
    assert_eq!(after, before, "the container was touched");
    let status = node.mcp_json(&["status", &service]);
    let comps = status["nodes"][0]["components"]
        .as_array()
        .expect("components");
    assert_eq!(comps.len(), 1, "the refused VM was recorded: {status}");
    assert_eq!(comps[0]["desired_image"], v1.as_str(), "{status}");
}

#[test]
fn a_node_without_qemu_refuses_unikernels_before_changing_anything() {
    let mut node = Node::start();
    node.reconfigure(|text| {
        text.push_str("\n[unikernel]\nqemu = \"/nonexistent/qemu-system-x86_64\"\n")
    });

    let info = node.mcp_json(&["node", "info"]);
    assert_eq!(info["nodes"][0]["unikernels"], false, "{info}");
    let table = node.mcp(&["node", "info"]).success().stdout;
    assert!(table.contains("QEMU not found"), "{table}");

    let service = unique("noqemu");
    node.write_service(
        &service,
        &format!(
            "name = \"{service}\"\n\n[[components]]\nname = \"web\"\nimage = \"{image}\"\ncmd = [\"sleep\", \"3600\"]\n\n[[components]]\nname = \"vm\"\nruntime = \"unikernel\"\nimage = \"{disk}\"\n",
            image = node.env.image_v1,
            disk = require("MCP_TEST_DISK"),
        ),
    );
    let err = node.mcp(&["deploy", &service]).failure();
    assert!(
        err.contains(&format!("{service}/vm: this node cannot run unikernels")),
        "{err}"
    );
    // Nothing changed: not registered, the container not created either.
    let list = node.mcp_json(&["list"]);
    assert!(!list.to_string().contains(&service), "{list}");
    assert!(node.instances_of(&service).is_empty());
}

#[test]
fn a_kernel_boot_guest_serves_its_port_and_powers_off_on_stop() {
    let mut node = Node::start();
    // The guest needs more than the harness's one-second stop timeout to
    // answer the power button under TCG.
    let vms = vm_config(&node);
    node.reconfigure(|text| {
        *text = text.replace("stop_timeout = 1\n", "stop_timeout = 30\n");
        text.push_str(&vms);
    });
    let service = unique("guest");
    let port = mcp_e2e::free_port();
    node.write_service(
        &service,
        &format!(
            r#"name = "{service}"

[[components]]
name = "vm"
runtime = "unikernel"
kernel = "{kernel}"
initrd = "{initrd}"
append = "console=ttyS0 quiet panic=-1"
memory = "256M"
ports = ["127.0.0.1:{port}:8080"]
"#,
            kernel = require("MCP_TEST_KERNEL"),
            initrd = require("MCP_TEST_INITRD"),
        ),
    );
    node.mcp(&["deploy", &service]).success();
    let up = wait_for(Duration::from_secs(90), || {
        let out = node.mcp(&["logs", &service]).success().stdout;
        out.contains("mcp-test-guest: up").then_some(out)
    });
    assert!(
        up.is_some(),
        "the guest did not come up:\n{}",
        node.agent_log()
    );
    let page = mcp_e2e::http_get(port);
    assert!(page.contains("hello from the mcp test guest"), "{page:?}");

    // `mcp stop`: the guest sees the power button and powers off by itself.
    node.mcp(&["stop", &service]).success();
    let logs = node.mcp(&["logs", &service]).success().stdout;
    assert!(
        logs.contains("mcp-test-guest: power button, powering off"),
        "{logs}"
    );
    let status = node.mcp_json(&["status", &service]);
    let vm = component(&status, "vm");
    assert_ne!(vm["observed_state"], "running", "{status}");
    assert_eq!(vm["drift"], serde_json::json!([]), "{status}");
    // And `mcp start` boots it again (its serial log goes on).
    node.mcp(&["start", &service]).success();
    let again = wait_for(Duration::from_secs(90), || {
        let out = node.mcp(&["logs", &service]).success().stdout;
        (out.matches("mcp-test-guest: up").count() >= 2).then_some(())
    });
    assert!(again.is_some(), "no second boot:\n{}", node.agent_log());
    let page = mcp_e2e::http_get(port);
    assert!(page.contains("hello from the mcp test guest"), "{page:?}");
}

/// Every QEMU process of `state_dir`'s VMs that holds `outside` open.
fn qemu_holding(state_dir: &std::path::Path, outside: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for vm in std::fs::read_dir(state_dir).into_iter().flatten().flatten() {
        let Ok(pid) = std::fs::read_to_string(vm.path().join("pid")) else {
            continue;
        };
        let fds = std::path::PathBuf::from(format!("/proc/{}/fd", pid.trim()));
        for fd in std::fs::read_dir(&fds).into_iter().flatten().flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|target| target == outside) {
                found.push(fd.path().display().to_string());
            }
        }
    }
    found
}

/// A container of the service can rewrite the service's directory at any
/// moment. Here the disk image is swapped for a symlink to a file outside
/// it, back and forth, while the VM is deployed anew and restarted: QEMU is
/// handed the file the agent opened, never a path, so it never opens the
/// outside file, which stays as it was.
#[test]
fn a_boot_file_swapped_for_a_symlink_never_reaches_qemu() {
    use std::os::unix::fs::MetadataExt as _;
    use std::sync::atomic::{AtomicBool, Ordering};

    let mut node = Node::start();
    let state_dir = enable_vms(&mut node);
    let service = unique("swap");
    node.mcp(&["push", &service, &require("MCP_TEST_DISK"), "vm/disk.raw"])
        .success();
    let outside = node.dir.path().join("outside.raw");
    std::fs::write(&outside, vec![0x42; 1 << 20]).expect("write");
    let outside = outside.canonicalize().expect("canonical");
    let before = std::fs::metadata(&outside).expect("stat");
    let definition = |memory: u32| {
        format!(
            "name = \"{service}\"\n\n[[components]]\nname = \"vm\"\nruntime = \"unikernel\"\nimage = \"vm/disk.raw\"\nmemory = \"{memory}M\"\n"
        )
    };
    node.write_service(&service, &definition(64));
    node.mcp(&["deploy", &service]).success();

    let vm_dir = node.dir.path().join("srv").join(&service).join("vm");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, vm_dir, outside, state_dir) = (
            stop.clone(),
            vm_dir.clone(),
            outside.clone(),
            state_dir.clone(),
        );
        std::thread::spawn(move || {
            let (disk, real) = (vm_dir.join("disk.raw"), vm_dir.join("real.raw"));
            let (mut swaps, mut held) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                std::fs::rename(&disk, &real).expect("move the image away");
                std::os::unix::fs::symlink(&outside, &disk).expect("symlink");
                std::thread::sleep(Duration::from_millis(2));
                held.extend(qemu_holding(&state_dir, &outside));
                // The real image back in place, atomically over the link.
                std::fs::rename(&real, &disk).expect("move the image back");
                std::thread::sleep(Duration::from_millis(6));
                held.extend(qemu_holding(&state_dir, &outside));
                swaps += 1;
            }
            (swaps, held)
        })
    };
    let (mut deployed, mut refused) = (0, Vec::new());
    for round in 0..20u32 {
        // A new definition replaces the VM; a restart relaunches it.
        let result = if round % 2 == 0 {
            node.write_service(&service, &definition(64 + 16 * (round % 4)));
            node.mcp(&["deploy", &service])
        } else {
            node.mcp(&["restart", &service, "--component", "vm"])
        };
        if result.code == 0 {
            deployed += 1;
        } else {
            refused.push(result.stderr);
        }
        let held = qemu_holding(&state_dir, &outside);
        assert!(held.is_empty(), "QEMU holds the outside file: {held:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let (swaps, held) = swapper.join().expect("swapper");
    assert!(held.is_empty(), "QEMU held the outside file: {held:?}");
    assert!(swaps > 10, "the image was swapped only {swaps} times");
    // Launches that found the real image went through; the others were
    // refused for the symlink (or the moment the image was away).
    assert!(deployed > 0, "every launch was refused: {refused:?}");
    eprintln!(
        "{deployed} launches went through, {} were refused, {swaps} swaps",
        refused.len()
    );
    for why in &refused {
        assert!(
            why.contains("through a symlink") || why.contains("does not exist"),
            "{why}"
        );
    }

    let after = std::fs::metadata(&outside).expect("stat");
    assert_eq!(after.ino(), before.ino());
    assert_eq!(after.mtime_nsec(), before.mtime_nsec());
    assert_eq!(after.mtime(), before.mtime());
    assert_eq!(
        std::fs::read(&outside).expect("read"),
        vec![0x42; 1 << 20],
        "the outside file changed"
    );

    // With the image in place and nothing swapping, the VM runs, from the
    // service's own file.
    node.mcp(&["restart", &service, "--component", "vm"])
        .success();
    let pid = std::fs::read_to_string(state_dir.join(format!("{service}-vm")).join("pid"))
        .expect("pidfile");
    let disk = vm_dir.join("disk.raw").canonicalize().expect("disk");
    let opened: Vec<_> = std::fs::read_dir(format!("/proc/{}/fd", pid.trim()))
        .expect("fds")
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .collect();
    assert!(opened.contains(&disk), "{opened:?}");
}

/// A guest that floods its console (busybox `yes` as its init) while two
/// `logs -f` follow it: the agent keeps answering, the followers get the
/// output across rotations, and `serial.log` (and `serial.log.1`) stay
/// within `[unikernel] log_max_size`.
#[test]
fn a_flooding_guest_cannot_fill_the_disk_nor_stall_the_agent() {
    const CAP: u64 = 64 * 1024;
    let mut node = Node::start();
    let state_dir = enable_vms_with(&mut node, "log_max_size = \"64K\"");
    let service = unique("flood");
    for (local, remote) in [
        (require("MCP_TEST_KERNEL"), "vm/vmlinuz"),
        (require("MCP_TEST_INITRD"), "vm/initrd.gz"),
    ] {
        node.mcp(&["push", &service, &local, remote]).success();
    }
    node.write_service(
        &service,
        &format!(
            "name = \"{service}\"\n\n[[components]]\nname = \"vm\"\nruntime = \"unikernel\"\nkernel = \"vm/vmlinuz\"\ninitrd = \"vm/initrd.gz\"\nappend = \"console=ttyS0 quiet rdinit=/bin/busybox -- yes flood\"\nmemory = \"128M\"\n"
        ),
    );
    node.mcp(&["deploy", &service, "--no-wait"]).success();
    let log_dir = state_dir.join(format!("{service}-vm"));

    // Two followers, each counting what it gets.
    let follow = || {
        let mut child = node
            .mcp_command(&["logs", "-f", &service, "vm"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn mcp logs -f");
        let mut out = child.stdout.take().expect("stdout");
        let counter = std::thread::spawn(move || {
            let (mut total, mut floods) = (0usize, 0usize);
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
                if n == 0 {
                    break;
                }
                total += n;
                floods += buf[..n].windows(5).filter(|w| w == b"flood").count();
            }
            (total, floods)
        });
        (child, counter)
    };
    let followers = [follow(), follow()];

    // The operator's status, while the guest floods.
    let mut latencies = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        let asked = std::time::Instant::now();
        node.mcp(&["status", &service]).ran();
        latencies.push(asked.elapsed());
        let size = std::fs::metadata(log_dir.join("serial.log")).map_or(0, |m| m.len());
        assert!(
            size <= CAP,
            "serial.log grew to {size} bytes, past its cap of {CAP}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rotated = std::fs::metadata(log_dir.join("serial.log.1")).map(|m| m.len());
    let mut got = Vec::new();
    for (mut child, counter) in followers {
        let _ = child.kill();
        let _ = child.wait();
        got.push(counter.join().expect("counter"));
    }
    latencies.sort();
    eprintln!(
        "flooding guest: status median {:?}, max {:?} over {} asks; followers got {got:?} (bytes, lines); serial.log.1 {rotated:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        latencies.len()
    );
    let rotated = rotated.expect("the log was never rotated: the guest did not flood");
    assert!(rotated <= CAP, "serial.log.1 is {rotated} bytes");
    for (total, floods) in got {
        assert!(floods > 0, "a follower got none of the flood");
        assert!(
            total as u64 > CAP,
            "a follower got only {total} bytes, less than one rotation"
        );
    }
    node.mcp(&["remove", &service]).success();
}
