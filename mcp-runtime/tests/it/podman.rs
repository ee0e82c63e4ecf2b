//! Integration tests of the podman backend against a real podman.
//!
//! Needs the environment of `scripts/test-env.sh` (source `.test-env/env`):
//! `CONTAINERS_CONF`, `MCP_TEST_REGISTRY`, `MCP_TEST_IMAGE` and
//! `MCP_TEST_IMAGE_V2`. The tests fail (never skip) when it is missing.
//!
//! Each test runs its own `podman system service` on a socket in a temporary
//! directory and uses container names of its own, removed at the end even when
//! the test fails, so the tests can run in parallel with each other and with
//! other users of the same podman storage.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mcp_runtime::podman::{Podman, PodmanConfig};
use mcp_runtime::{
    HealthSpec, InstanceSpec, InstanceState, LogOptions, LogStreamKind, PortMapping, Runtime,
    RuntimeError, VolumeMount, labels,
};

use crate::ports::free_port;

/// The test environment, from `.test-env/env`.
struct TestEnv {
    registry: String,
    image: String,
    image_v2: String,
}

fn require(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set: the podman integration tests need the test environment; \
             run scripts/test-env.sh, then `source .test-env/env` before `cargo test`"
        ),
    }
}

fn test_env() -> TestEnv {
    require("CONTAINERS_CONF");
    TestEnv {
        registry: require("MCP_TEST_REGISTRY"),
        image: require("MCP_TEST_IMAGE"),
        image_v2: require("MCP_TEST_IMAGE_V2"),
    }
}

/// A `podman system service` of our own, killed on drop.
struct Service {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl Service {
    /// Starts a service on `socket` and waits until it answers.
    async fn start_at(socket: &Path) -> Service {
        let log = socket.with_extension("log");
        let log_file = std::fs::File::create(&log).expect("create service log");
        let child = Command::new("podman")
            .arg("system")
            .arg("service")
            .arg("--time=0")
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log"))
            .stderr(log_file)
            .spawn()
            .expect("cannot run `podman system service`; is podman installed?");
        let mut service = Service {
            child: Some(child),
            socket: socket.to_path_buf(),
            log,
        };
        let podman = podman_at(socket, &[]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if podman.ping().await.is_ok() {
                return service;
            }
            if let Some(child) = service.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "podman system service exited with {status}: {}",
                    std::fs::read_to_string(&service.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "podman system service on {} did not answer within 30 s: {}",
                    service.socket.display(),
                    std::fs::read_to_string(&service.log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the service now.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes the test's containers and volumes on drop, whatever happened.
struct Cleanup {
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.containers.is_empty() {
            let _ = Command::new("podman")
                .args(["rm", "--force", "--ignore", "--time", "0"])
                .args(&self.containers)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if !self.volumes.is_empty() {
            let _ = Command::new("podman")
                .args(["volume", "rm", "--force"])
                .args(&self.volumes)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A test's world: its service, a backend on it, and its cleanup.
struct Harness {
    env: TestEnv,
    podman: Podman,
    prefix: String,
    // Dropped in this order: containers removed, service killed, directory removed.
    cleanup: Cleanup,
    service: Service,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn new(test: &str) -> Harness {
        let env = test_env();
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("podman.sock");
        let service = Service::start_at(&socket).await;
        let podman = podman_at(&socket, &[env.registry.as_str()]);
        Harness {
            env,
            podman,
            prefix: format!("mcp-rt-{test}-{}", std::process::id()),
            cleanup: Cleanup {
                containers: Vec::new(),
                volumes: Vec::new(),
            },
            service,
            dir,
        }
    }

    /// A container name unique to this test, removed at the end.
    fn name(&mut self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.prefix);
        self.cleanup.containers.push(name.clone());
        name
    }

    /// A volume name unique to this test, removed at the end.
    fn volume(&mut self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.prefix);
        self.cleanup.volumes.push(name.clone());
        name
    }

    /// Makes sure the test image is present.
    async fn ensure_image(&self) {
        if !self
            .podman
            .image_exists(&self.env.image)
            .await
            .expect("image_exists")
        {
            self.podman
                .pull(&self.env.image)
                .await
                .expect("pull test image");
        }
    }

    fn spec(&self, name: &str) -> InstanceSpec {
        InstanceSpec {
            name: name.to_string(),
            image: self.env.image.clone(),
            labels: BTreeMap::from([(labels::MANAGED.to_string(), "true".to_string())]),
            ..InstanceSpec::default()
        }
    }

    async fn wait_state(&self, name: &str, state: InstanceState) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let info = self.podman.inspect(name).await.expect("inspect");
            let current = info.as_ref().map(|i| i.state.clone());
            if current.as_ref() == Some(&state) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not reach {state} within 20 s (now {current:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn podman_at(socket: &Path, insecure: &[&str]) -> Podman {
    Podman::new(PodmanConfig {
        socket: socket.to_path_buf(),
        insecure_registries: insecure.iter().map(|s| s.to_string()).collect(),
    })
}

/// Fetches `/` from 127.0.0.1:port, retrying until the server answers.
async fn fetch_page(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let attempt = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut stream = TcpStream::connect(("127.0.0.1", port))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        })
        .await
        .expect("join");
        match attempt {
            Ok(answer) if answer.contains("200") => return answer,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "no page from 127.0.0.1:{port} within 15 s: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Fails the test instead of hanging.
async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {secs} s"))
}

const STOP: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_reports_version() {
    let h = Harness::new("ping").await;
    let version = h.podman.ping().await.expect("ping");
    assert!(!version.version.is_empty(), "{version:?}");
    assert!(version.api_version.starts_with('4'), "{version:?}");
    assert_eq!(h.podman.socket(), h.service.socket.as_path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_from_insecure_registry() {
    let h = Harness::new("pull").await;
    within(300, "pull", h.podman.pull(&h.env.image))
        .await
        .expect("pull v1");
    within(300, "pull", h.podman.pull(&h.env.image_v2))
        .await
        .expect("pull v2");
    assert!(h.podman.image_exists(&h.env.image).await.expect("exists"));
    assert!(
        h.podman
            .image_exists(&h.env.image_v2)
            .await
            .expect("exists")
    );

    let missing = format!(
        "{}/mcp-test/busybox:no-such-tag-{}",
        h.env.registry,
        std::process::id()
    );
    assert!(!h.podman.image_exists(&missing).await.expect("exists"));
    match within(300, "pull", h.podman.pull(&missing)).await {
        Err(RuntimeError::Pull { image, reason }) => {
            assert_eq!(image, missing);
            assert!(!reason.is_empty());
            let shown = RuntimeError::Pull {
                image: image.clone(),
                reason,
            }
            .to_string();
            assert!(shown.contains(&missing), "{shown}");
        }
        other => panic!("expected a Pull error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_inspect_shows_the_spec() {
    let mut h = Harness::new("create").await;
    h.ensure_image().await;
    let name = h.name("web");
    let volume = h.volume("cache");
    let data = h.dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let port = free_port();
    let spec = InstanceSpec {
        cmd: vec![
            "busybox".into(),
            "httpd".into(),
            "-f".into(),
            "-p".into(),
            "8080".into(),
            "-h".into(),
            "/www".into(),
        ],
        env: BTreeMap::from([
            ("GREETING".into(), "hello world".into()),
            ("EQUATION".into(), "a=b".into()),
        ]),
        ports: vec![PortMapping {
            host_ip: "127.0.0.1".into(),
            host_port: port,
            container_port: 8080,
            protocol: "tcp".into(),
        }],
        volumes: vec![
            VolumeMount {
                source: data.display().to_string(),
                destination: "/data".into(),
                options: vec!["ro".into()],
            },
            VolumeMount {
                source: volume.clone(),
                destination: "/cache".into(),
                options: vec![],
            },
        ],
        network: Some("podman".into()),
        user: Some("1000:1000".into()),
        restart: Some("on-failure:3".into()),
        memory_bytes: Some(64 * 1024 * 1024),
        labels: BTreeMap::from([
            (labels::MANAGED.into(), "true".into()),
            (labels::SERVICE.into(), "svc".into()),
            (labels::COMPONENT.into(), "web".into()),
            (labels::SPEC_HASH.into(), "abc123".into()),
        ]),
        ..h.spec(&name)
    };
    let id = h.podman.create(&spec).await.expect("create");
    assert_eq!(id.len(), 64, "{id}");

    let info = h
        .podman
        .inspect(&name)
        .await
        .expect("inspect")
        .expect("exists");
    assert_eq!(info.id, id);
    assert_eq!(info.name, name);
    assert_eq!(info.image, h.env.image);
    assert!(!info.image_id.is_empty());
    assert_eq!(info.state, InstanceState::Created);
    assert_eq!(info.exit_code, None);
    assert!(info.created_at > 1_600_000_000, "{}", info.created_at);
    assert_eq!(info.started_at, 0);
    assert!(info.is_managed());
    assert_eq!(info.label(labels::SERVICE), Some("svc"));
    assert_eq!(info.label(labels::SPEC_HASH), Some("abc123"));
    assert_eq!(info.ports, spec.ports);
    let d = info.details.expect("inspect fills details");
    assert_eq!(d.cmd, spec.cmd);
    assert_eq!(
        d.env.get("GREETING").map(String::as_str),
        Some("hello world")
    );
    assert_eq!(d.env.get("EQUATION").map(String::as_str), Some("a=b"));
    assert_eq!(d.user, "1000:1000");
    assert_eq!(d.restart, "on-failure:3");
    assert_eq!(d.memory_bytes, 64 * 1024 * 1024);
    assert_eq!(d.networks, ["podman"]);
    let bind = d
        .volumes
        .iter()
        .find(|v| v.destination == "/data")
        .expect("bind mount");
    assert_eq!(bind.source, data.display().to_string());
    assert!(bind.options.iter().any(|o| o == "ro"), "{bind:?}");
    let named = d
        .volumes
        .iter()
        .find(|v| v.destination == "/cache")
        .expect("named volume");
    assert_eq!(named.source, volume);
    assert!(named.options.iter().any(|o| o == "rw"), "{named:?}");

    // The same name again is a conflict.
    match h.podman.create(&spec).await {
        Err(RuntimeError::Conflict(message)) => assert!(message.contains(&name), "{message}"),
        other => panic!("expected Conflict, got {other:?}"),
    }

    // An image that is not on the node: the error names it.
    let absent_name = h.name("absent");
    let mut absent = h.spec(&absent_name);
    absent.image = format!(
        "{}/mcp-test/busybox:absent-{}",
        h.env.registry,
        std::process::id()
    );
    match h.podman.create(&absent).await {
        Err(e @ RuntimeError::Api { .. }) => {
            assert!(e.to_string().contains(&absent.image), "{e}")
        }
        other => panic!("expected an Api error naming the image, got {other:?}"),
    }

    // An invalid restart policy is refused before podman sees it.
    let bad_name = h.name("bad");
    let mut bad = h.spec(&bad_name);
    bad.restart = Some("on-failure:often".into());
    assert!(matches!(
        h.podman.create(&bad).await,
        Err(RuntimeError::Invalid(_))
    ));

    h.podman.remove(&name, false).await.expect("remove");
    assert!(h.podman.inspect(&name).await.expect("inspect").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_serve_stop_start_rename_list_remove() {
    let mut h = Harness::new("life").await;
    h.ensure_image().await;
    let name = h.name("web");
    let renamed = h.name("web-renamed");
    let port = free_port();
    let spec = InstanceSpec {
        ports: vec![PortMapping {
            host_ip: "127.0.0.1".into(),
            host_port: port,
            container_port: 8080,
            protocol: "tcp".into(),
        }],
        labels: BTreeMap::from([
            (labels::MANAGED.into(), "true".into()),
            (labels::SERVICE.into(), "life".into()),
        ]),
        ..h.spec(&name)
    };
    let id = h.podman.create(&spec).await.expect("create");
    h.podman.start(&name).await.expect("start");
    h.podman
        .start(&name)
        .await
        .expect("start while running is fine");
    let page = fetch_page(port).await;
    assert!(page.contains("hello from v1"), "{page}");

    let info = h
        .podman
        .inspect(&name)
        .await
        .expect("inspect")
        .expect("exists");
    assert_eq!(info.state, InstanceState::Running);
    assert!(info.started_at >= info.created_at && info.started_at > 0);
    assert!(info.status.starts_with("Up"), "{}", info.status);

    let all = h.podman.list().await.expect("list");
    let listed = all.iter().find(|i| i.name == name).expect("listed");
    assert_eq!(listed.id, id);
    assert_eq!(listed.state, InstanceState::Running);
    assert_eq!(listed.label(labels::SERVICE), Some("life"));
    assert!(listed.is_managed());
    assert_eq!(listed.ports, spec.ports);
    assert_eq!(listed.image, h.env.image);
    assert!(listed.details.is_none());

    within(30, "stop", h.podman.stop(&name, STOP))
        .await
        .expect("stop");
    let info = h
        .podman
        .inspect(&name)
        .await
        .expect("inspect")
        .expect("exists");
    assert_eq!(info.state, InstanceState::Exited);
    assert!(info.exit_code.is_some());
    h.podman
        .stop(&name, STOP)
        .await
        .expect("stop while stopped is fine");

    h.podman.start(&name).await.expect("restart");
    assert!(fetch_page(port).await.contains("hello from v1"));

    h.podman.rename(&name, &renamed).await.expect("rename");
    assert!(h.podman.inspect(&name).await.expect("inspect").is_none());
    let info = h
        .podman
        .inspect(&renamed)
        .await
        .expect("inspect")
        .expect("renamed");
    assert_eq!(info.id, id);
    assert_eq!(info.state, InstanceState::Running);

    // Removing a running container needs force.
    assert!(matches!(
        h.podman.remove(&renamed, false).await,
        Err(RuntimeError::Conflict(_))
    ));
    within(30, "remove", h.podman.remove(&renamed, true))
        .await
        .expect("force remove");
    assert!(h.podman.inspect(&renamed).await.expect("inspect").is_none());
    assert!(
        !h.podman
            .list()
            .await
            .expect("list")
            .iter()
            .any(|i| i.id == id)
    );

    // Operations on a missing container.
    for result in [
        h.podman.remove(&renamed, true).await,
        h.podman.start(&renamed).await,
        h.podman.stop(&renamed, STOP).await,
        h.podman.rename(&renamed, &name).await,
    ] {
        assert!(
            matches!(&result, Err(RuntimeError::NotFound(n)) if *n == renamed),
            "{result:?}"
        );
    }
    assert!(matches!(
        h.podman.logs(&renamed, &LogOptions::default()).await,
        Err(RuntimeError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_stdout_and_stderr() {
    let mut h = Harness::new("logs").await;
    h.ensure_image().await;
    let name = h.name("echo");
    let spec = InstanceSpec {
        cmd: vec!["sh".into(), "-c".into(), "echo out; echo err >&2".into()],
        ..h.spec(&name)
    };
    h.podman.create(&spec).await.expect("create");
    h.podman.start(&name).await.expect("start");
    h.wait_state(&name, InstanceState::Exited).await;
    let info = h
        .podman
        .inspect(&name)
        .await
        .expect("inspect")
        .expect("exists");
    assert_eq!(info.exit_code, Some(0));

    let stream = h
        .podman
        .logs(&name, &LogOptions::default())
        .await
        .expect("logs");
    let chunks: Vec<_> = within(20, "logs", stream.collect::<Vec<_>>())
        .await
        .into_iter()
        .map(|c| c.expect("chunk"))
        .collect();
    let text = |kind: LogStreamKind| -> String {
        chunks
            .iter()
            .filter(|c| c.stream == kind)
            .map(|c| String::from_utf8_lossy(&c.data).into_owned())
            .collect()
    };
    assert_eq!(text(LogStreamKind::Stdout), "out\n", "{chunks:?}");
    assert_eq!(text(LogStreamKind::Stderr), "err\n", "{chunks:?}");

    let tail = h
        .podman
        .logs(
            &name,
            &LogOptions {
                follow: false,
                tail: Some(1),
            },
        )
        .await
        .expect("logs tail");
    let tail: Vec<_> = within(20, "logs", tail.collect::<Vec<_>>()).await;
    assert_eq!(tail.len(), 1, "{tail:?}");

    // Following an exited container ends by itself.
    let follow = h
        .podman
        .logs(
            &name,
            &LogOptions {
                follow: true,
                tail: None,
            },
        )
        .await
        .expect("logs follow");
    let all: Vec<_> = within(
        20,
        "follow of an exited container",
        follow.collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(all.len(), 2, "{all:?}");

    h.podman.remove(&name, true).await.expect("remove");
}

fn ticker_cmd() -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_delivers_and_can_be_dropped() {
    let mut h = Harness::new("follow").await;
    h.ensure_image().await;
    let name = h.name("ticker");
    let spec = InstanceSpec {
        cmd: ticker_cmd(),
        ..h.spec(&name)
    };
    h.podman.create(&spec).await.expect("create");
    h.podman.start(&name).await.expect("start");

    let options = LogOptions {
        follow: true,
        tail: Some(0),
    };
    let mut stream = within(10, "logs", h.podman.logs(&name, &options))
        .await
        .expect("logs");
    let mut lines = Vec::new();
    while lines.len() < 3 {
        let chunk = within(10, "next log chunk", stream.next())
            .await
            .expect("stream ended early")
            .expect("chunk");
        assert_eq!(chunk.stream, LogStreamKind::Stdout);
        lines.push(String::from_utf8_lossy(&chunk.data).into_owned());
    }
    assert!(lines.iter().all(|l| l.starts_with("tick ")), "{lines:?}");
    drop(stream);

    // The backend still works, and the container is unaffected.
    let info = h
        .podman
        .inspect(&name)
        .await
        .expect("inspect")
        .expect("exists");
    assert_eq!(info.state, InstanceState::Running);
    within(30, "remove", h.podman.remove(&name, true))
        .await
        .expect("remove");
}

/// A name held only in podman's storage, as an interrupted create leaves
/// it (made here with `buildah from`, which creates such containers), is
/// freed by the next create of that name; a name held by a real container
/// stays a conflict, and that container is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_frees_a_name_held_only_in_storage() {
    let mut h = Harness::new("storage-only").await;
    h.ensure_image().await;
    let name = h.name("web");
    let out = Command::new("buildah")
        .args(["from", "--pull-never", "--name", &name, &h.env.image])
        .output()
        .expect("cannot run buildah; run scripts/test-env.sh");
    assert!(
        out.status.success(),
        "buildah from: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let external = Command::new("podman")
        .args([
            "ps",
            "--all",
            "--external",
            "--format",
            "{{.Names}} {{.Status}}",
        ])
        .output()
        .expect("podman ps");
    let listing = String::from_utf8_lossy(&external.stdout);
    assert!(
        listing.lines().any(|l| l == format!("{name} Storage")),
        "a storage-only container named {name} expected: {listing}"
    );
    assert!(h.podman.inspect(&name).await.expect("inspect").is_none());

    let id = h.podman.create(&h.spec(&name)).await.expect("create");
    let info = h
        .podman
        .inspect(&name)
        .await
        .expect("inspect")
        .expect("created");
    assert_eq!(info.id, id);

    match h.podman.create(&h.spec(&name)).await {
        Err(RuntimeError::Conflict(message)) => {
            assert!(message.contains(&name), "{message}")
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    let still = h
        .podman
        .inspect(&name)
        .await
        .expect("inspect")
        .expect("kept");
    assert_eq!(still.id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_taken_on_host_is_a_conflict() {
    let mut h = Harness::new("port").await;
    h.ensure_image().await;
    let name = h.name("web");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let spec = InstanceSpec {
        ports: vec![PortMapping {
            host_ip: "127.0.0.1".into(),
            host_port: port,
            container_port: 8080,
            protocol: "tcp".into(),
        }],
        ..h.spec(&name)
    };
    h.podman.create(&spec).await.expect("create");
    match h.podman.start(&name).await {
        Err(RuntimeError::Conflict(message)) => {
            assert!(message.contains(&port.to_string()), "{message}")
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    drop(taken);
    h.podman.remove(&name, true).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_socket_is_unavailable_then_recovers() {
    let env = test_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("podman.sock");
    let podman = podman_at(&socket, &[env.registry.as_str()]);
    for result in [
        podman.ping().await.map(|_| ()),
        podman.list().await.map(|_| ()),
        podman.start("whatever").await,
    ] {
        match result {
            Err(RuntimeError::Unavailable { endpoint, reason }) => {
                assert_eq!(endpoint, socket.display().to_string());
                assert!(!reason.is_empty());
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    let mut service = Service::start_at(&socket).await;
    let version = podman.ping().await.expect("the same value recovers");
    assert!(!version.version.is_empty());
    podman.list().await.expect("list after recovery");

    // A socket whose service is gone (refused) is Unavailable too.
    service.kill();
    let err = podman.ping().await.expect_err("service is gone");
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_service_ends_a_followed_log() {
    let mut h = Harness::new("kill").await;
    h.ensure_image().await;
    let name = h.name("ticker");
    let spec = InstanceSpec {
        cmd: ticker_cmd(),
        ..h.spec(&name)
    };
    h.podman.create(&spec).await.expect("create");
    h.podman.start(&name).await.expect("start");
    let mut stream = h
        .podman
        .logs(
            &name,
            &LogOptions {
                follow: true,
                tail: None,
            },
        )
        .await
        .expect("logs");
    within(10, "first chunk", stream.next())
        .await
        .expect("a chunk")
        .expect("chunk ok");

    h.service.kill();
    // Chunks already on their way may still come; then the stream must end,
    // by itself or with Unavailable, and not hang.
    let end = within(15, "end of the stream after the kill", async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await;
    match end {
        None => {}
        Some(Err(e)) => assert!(e.is_unavailable(), "{e:?}"),
        Some(Ok(_)) => unreachable!(),
    }
    let err = h.podman.ping().await.expect_err("service is gone");
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_report_lifecycle_as_it_happens() {
    use futures::StreamExt;
    let mut h = Harness::new("events").await;
    h.ensure_image().await;
    let name = h.name("ev");
    let mut events = within(30, "subscribe", h.podman.events())
        .await
        .expect("events");
    let mut spec = h.spec(&name);
    spec.cmd = vec!["sleep".into(), "300".into()];
    h.podman.create(&spec).await.expect("create");
    h.podman.start(&name).await.expect("start");
    h.podman
        .stop(&name, Duration::from_secs(1))
        .await
        .expect("stop");
    let mut seen = Vec::new();
    let found = within(20, "events", async {
        while let Some(item) = events.next().await {
            let event = item.expect("event");
            if event.name == name {
                seen.push(event.action.clone());
                if event.action == "died" {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert!(found, "no died event; saw {seen:?}");
    for action in ["create", "start"] {
        assert!(
            seen.iter().any(|a| a == action),
            "{action} missing from {seen:?}"
        );
    }
}

/// A health check running `script` with the image's shell.
fn shell_check(script: &str) -> HealthSpec {
    HealthSpec {
        command: vec![
            "/bin/busybox".into(),
            "sh".into(),
            "-c".into(),
            script.into(),
        ],
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(10),
        retries: 3,
        start_period: Duration::ZERO,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_runs_on_demand() {
    let mut h = Harness::new("health").await;
    h.ensure_image().await;
    let good = h.name("good");
    let bad = h.name("bad");
    let silent = h.name("silent");
    let plain = h.name("plain");
    let specs = [
        InstanceSpec {
            health: Some(shell_check("echo all good; exit 0")),
            ..h.spec(&good)
        },
        InstanceSpec {
            health: Some(shell_check("echo not ready yet >&2; exit 1")),
            ..h.spec(&bad)
        },
        InstanceSpec {
            health: Some(shell_check("exit 7")),
            ..h.spec(&silent)
        },
        h.spec(&plain),
    ];
    for spec in &specs {
        h.podman.create(spec).await.expect("create");
    }

    // Created, not started: the check cannot run.
    match h.podman.run_health_check(&good).await {
        Err(RuntimeError::Conflict(m)) => assert!(m.contains("not running"), "{m}"),
        other => panic!("expected Conflict for a created container, got {other:?}"),
    }

    for spec in &specs {
        h.podman.start(&spec.name).await.expect("start");
    }
    let report = within(30, "health check", h.podman.run_health_check(&good))
        .await
        .expect("good check");
    assert!(report.healthy, "{report:?}");
    assert_eq!(report.output, "all good");

    let report = within(30, "health check", h.podman.run_health_check(&bad))
        .await
        .expect("bad check");
    assert!(!report.healthy, "{report:?}");
    assert_eq!(report.output, "not ready yet");

    let report = within(30, "health check", h.podman.run_health_check(&silent))
        .await
        .expect("silent check");
    assert!(!report.healthy, "{report:?}");
    assert_eq!(report.output, "the check failed and printed nothing");

    // Run again: each call runs the check anew.
    let report = within(30, "health check", h.podman.run_health_check(&good))
        .await
        .expect("good check again");
    assert!(report.healthy, "{report:?}");

    match h.podman.run_health_check(&plain).await {
        Err(e @ RuntimeError::Invalid(_)) => {
            let shown = e.to_string();
            assert!(
                shown.contains(&plain) && shown.contains("no health check configured"),
                "{shown}"
            );
        }
        other => panic!("expected Invalid for a container without a check, got {other:?}"),
    }

    let missing = format!("{}-missing", h.prefix);
    assert!(matches!(
        h.podman.run_health_check(&missing).await,
        Err(RuntimeError::NotFound(n)) if n == missing
    ));
    for spec in &specs {
        within(30, "remove", h.podman.remove(&spec.name, true))
            .await
            .expect("remove");
    }
}
