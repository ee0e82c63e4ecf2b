//! The health gate ([`mcp_agent::reconcile::gate::wait_ready`]) against real
//! containers: real podman, real published ports, real probes.
//!
//! Each test runs its own podman API service and creates its containers
//! directly through the podman backend, publishing ports on 127.0.0.1;
//! they are removed at the end, also when the test fails. No test bounds
//! how long the gate takes (the hosts are shared and noisy): what it did
//! (which probes ran, what it reported) says whether it noticed in time.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mcp_agent::reconcile::RuntimeChange;
use mcp_agent::reconcile::gate::{GateProgress, NotReady, Ready, Wakeups, wait_ready};
use mcp_core::servicedef::{HealthCheck, HealthProbe};
use mcp_e2e::{PodmanService, TestEnv, free_port, podman_client, unique};
use mcp_runtime::podman::Podman;
use mcp_runtime::{InstanceSpec, PortMapping, Runtime, labels};

/// A test's podman service and the containers it made.
struct World {
    env: TestEnv,
    podman: Podman,
    names: Vec<String>,
    /// The service's events, as the agent's event follower passes them on.
    changes: tokio::sync::broadcast::Sender<RuntimeChange>,
    follower: tokio::task::JoinHandle<()>,
    _service: PodmanService,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let env = TestEnv::require();
        let dir = tempfile::Builder::new()
            .prefix("mcp-health-")
            .tempdir()
            .expect("tempdir");
        let socket = dir.path().join("podman.sock");
        let service = PodmanService::start(&socket);
        let podman = podman_client(&socket, &env);
        if !podman
            .image_exists(&env.image_v1)
            .await
            .expect("image_exists")
        {
            podman
                .pull(&env.image_v1)
                .await
                .expect("pull the test image");
        }
        let (changes, _) = tokio::sync::broadcast::channel(1024);
        let mut events = podman.events().await.expect("follow podman's events");
        let sender = changes.clone();
        let follower = tokio::spawn(async move {
            while let Some(Ok(e)) = events.next().await {
                let _ = sender.send(RuntimeChange::Instance {
                    id: e.id,
                    name: e.name,
                    settling: e.settling,
                });
            }
        });
        World {
            env,
            podman,
            names: Vec::new(),
            changes,
            follower,
            _service: service,
            _dir: dir,
        }
    }

    /// Creates and starts a container of the test image running `cmd` (the
    /// image's httpd on 8080 when empty), publishing each of
    /// `container_ports` on a free port of 127.0.0.1, with `check` set on it
    /// as a component's definition would.
    async fn start(
        &mut self,
        cmd: &[&str],
        container_ports: &[u16],
        check: Option<&HealthCheck>,
    ) -> InstanceSpec {
        let name = unique("mcp-health");
        self.names.push(name.clone());
        let spec = InstanceSpec {
            name: name.clone(),
            image: self.env.image_v1.clone(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ports: container_ports
                .iter()
                .map(|&container_port| PortMapping {
                    host_ip: "127.0.0.1".into(),
                    host_port: free_port(),
                    container_port,
                    protocol: "tcp".into(),
                })
                .collect(),
            labels: BTreeMap::from([(labels::MANAGED.to_string(), "true".to_string())]),
            health: check.and_then(HealthCheck::runtime_spec),
            ..InstanceSpec::default()
        };
        self.podman.create(&spec).await.expect("create");
        self.podman.start(&name).await.expect("start");
        spec
    }

    /// Runs the gate on `spec`'s instance, recording its progress reports.
    async fn gate(
        &self,
        spec: &InstanceSpec,
        check: Option<&HealthCheck>,
        settle: Duration,
        timeout: Duration,
    ) -> Gated {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = {
            let seen = Arc::clone(&seen);
            move |p: GateProgress| seen.lock().expect("progress lock").push(p)
        };
        let began = Instant::now();
        let result = tokio::time::timeout(
            timeout + Duration::from_secs(30),
            wait_ready(
                &self.podman,
                &spec.name,
                &spec.ports,
                check,
                settle,
                timeout,
                Wakeups::from_changes(self.changes.subscribe(), true),
                &record,
            ),
        )
        .await
        .expect("the gate kept its own deadline");
        let elapsed = began.elapsed();
        let progress = seen.lock().expect("progress lock").clone();
        Gated {
            result,
            elapsed,
            progress,
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.follower.abort();
        if !self.names.is_empty() {
            let _ = Command::new("podman")
                .args(["rm", "--force", "--ignore", "--time", "0"])
                .args(&self.names)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// What one run of the gate gave.
#[derive(Debug)]
struct Gated {
    result: Result<Ready, NotReady>,
    elapsed: Duration,
    progress: Vec<GateProgress>,
}

impl Gated {
    fn ready(&self) -> Ready {
        match &self.result {
            Ok(ready) => *ready,
            Err(e) => panic!(
                "expected ready, got {e:?} ({e}); progress {:?}",
                self.progress
            ),
        }
    }

    fn not_ready(&self) -> &NotReady {
        match &self.result {
            Err(e) => e,
            Ok(ready) => panic!("expected not ready, got {ready:?}"),
        }
    }

    /// The attempt numbers of the probes the gate announced.
    fn attempts(&self) -> Vec<u32> {
        self.progress
            .iter()
            .filter_map(|p| match p {
                GateProgress::Probing { attempt, .. } => Some(*attempt),
                GateProgress::StartPeriod { .. } => None,
            })
            .collect()
    }
}

fn check(
    probe: HealthProbe,
    interval_ms: u64,
    retries: u32,
    start_period: Duration,
) -> HealthCheck {
    let interval = Duration::from_millis(interval_ms);
    HealthCheck {
        probe,
        interval,
        timeout: HealthCheck::default_timeout(interval),
        retries,
        start_period,
    }
}

fn http(path: &str) -> HealthProbe {
    HealthProbe::Http {
        port: 8080,
        path: path.into(),
        status: None,
    }
}

/// Waits (blocking in a worker thread) until the container's httpd answers.
async fn wait_for_page(spec: &InstanceSpec) {
    let port = spec.ports[0].host_port;
    let page = tokio::task::spawn_blocking(move || mcp_e2e::http_get(port))
        .await
        .expect("join");
    assert!(page.contains("hello from v1"), "{page}");
}

const SECS_10: Duration = Duration::from_secs(10);
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_on_a_web_server_is_ready() {
    let mut w = World::new().await;
    let check = check(http("/"), 500, 3, SECS_10);
    let spec = w.start(&[], &[8080], Some(&check)).await;
    let gated = w
        .gate(&spec, Some(&check), Duration::ZERO, DEPLOY_TIMEOUT)
        .await;
    let ready = gated.ready();
    assert!(ready.probes >= 1, "{ready:?}");
    assert_eq!(gated.attempts(), (1..=ready.probes).collect::<Vec<_>>());
    assert_eq!(
        gated.progress.first(),
        Some(&GateProgress::Probing {
            attempt: 1,
            last: None
        })
    );
    assert!(ready.after <= gated.elapsed, "{ready:?} {gated:?}");
    // The gate answered because the server answers.
    wait_for_page(&spec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_check_is_ready() {
    let mut w = World::new().await;
    let check = check(HealthProbe::Tcp { port: 8080 }, 500, 3, SECS_10);
    let spec = w.start(&[], &[8080], Some(&check)).await;
    let gated = w
        .gate(&spec, Some(&check), Duration::ZERO, DEPLOY_TIMEOUT)
        .await;
    let ready = gated.ready();
    assert!(ready.probes >= 1, "{ready:?}");
    assert_eq!(gated.attempts(), (1..=ready.probes).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_on_a_missing_page_is_unhealthy_after_exactly_retries() {
    let mut w = World::new().await;
    let check = check(http("/nope"), 1000, 3, Duration::ZERO);
    let spec = w.start(&[], &[8080], Some(&check)).await;
    // Once the server answers, every probe gets its 404.
    wait_for_page(&spec).await;
    let gated = w
        .gate(&spec, Some(&check), Duration::ZERO, DEPLOY_TIMEOUT)
        .await;
    let host_port = spec.ports[0].host_port;
    match gated.not_ready() {
        NotReady::Unhealthy { failures, last } => {
            assert_eq!(*failures, 3, "{gated:?}");
            assert_eq!(last, &format!("HTTP 404 from 127.0.0.1:{host_port}/nope"));
        }
        other => panic!("expected Unhealthy, got {other:?}"),
    }
    assert_eq!(gated.attempts(), [1, 2, 3], "{gated:?}");
    let shown = gated.not_ready().to_string();
    assert!(
        shown.starts_with("unhealthy after 3 failed checks: last: HTTP 404 from"),
        "{shown}"
    );
    // Later probes carry the previous failure.
    assert!(
        gated.progress.contains(&GateProgress::Probing {
            attempt: 3,
            last: Some(format!("HTTP 404 from 127.0.0.1:{host_port}/nope")),
        }),
        "{gated:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_check_passes_once_a_file_appears() {
    let mut w = World::new().await;
    let check = check(
        HealthProbe::Command {
            argv: vec![
                "/bin/busybox".into(),
                "test".into(),
                "-f".into(),
                "/tmp/ready".into(),
            ],
        },
        1000,
        2,
        SECS_10,
    );
    let spec = w
        .start(
            &[
                "/bin/busybox",
                "sh",
                "-c",
                "(/bin/busybox sleep 2; /bin/busybox touch /tmp/ready) & exec /bin/busybox httpd -f -p 8080 -h /www",
            ],
            &[],
            Some(&check),
        )
        .await;
    assert!(
        spec.health.is_some(),
        "a command check is the container's own"
    );
    let gated = w
        .gate(&spec, Some(&check), Duration::ZERO, DEPLOY_TIMEOUT)
        .await;
    let ready = gated.ready();
    // The file appears 2 s after the container starts, before the gate does.
    assert!(
        ready.after >= Duration::from_millis(1500),
        "ready before the file could exist: {gated:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_exits_at_once_is_reported_quickly() {
    let mut w = World::new().await;
    // A long interval: the exit must be noticed between probes, not at the next one.
    let check = check(http("/"), 10_000, 3, Duration::ZERO);
    let spec = w
        .start(
            &["/bin/busybox", "sh", "-c", "echo boom; exit 3"],
            &[8080],
            Some(&check),
        )
        .await;
    let gated = w
        .gate(&spec, Some(&check), Duration::ZERO, DEPLOY_TIMEOUT)
        .await;
    match gated.not_ready() {
        NotReady::Exited { exit_code, logs } => {
            assert_eq!(*exit_code, Some(3), "{gated:?}");
            assert!(logs.iter().any(|l| l.contains("boom")), "{logs:?}");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    let shown = gated.not_ready().to_string();
    assert!(
        shown.starts_with("exited with code 3; last output: ") && shown.contains("boom"),
        "{shown}"
    );
    // Noticed from the runtime's events, not at the next probe 10 s on.
    assert!(gated.attempts().len() <= 1, "{gated:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_between_two_probes_is_noticed_before_the_next() {
    let mut w = World::new().await;
    let check = check(http("/"), 10_000, 3, Duration::ZERO);
    let spec = w
        .start(
            &[
                "/bin/busybox",
                "sh",
                "-c",
                "/bin/busybox sleep 1; echo late boom; exit 4",
            ],
            &[8080],
            Some(&check),
        )
        .await;
    let gated = w
        .gate(&spec, Some(&check), Duration::ZERO, DEPLOY_TIMEOUT)
        .await;
    match gated.not_ready() {
        NotReady::Exited { exit_code, logs } => {
            assert_eq!(*exit_code, Some(4), "{gated:?}");
            assert_eq!(logs, &["late boom"], "{gated:?}");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    // The second probe would have been 10 s after the first: the exit was
    // noticed between the two.
    assert!(gated.attempts().len() <= 1, "{gated:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_listens_late_is_ready_within_its_start_period() {
    let mut w = World::new().await;
    let check = check(HealthProbe::Tcp { port: 8080 }, 500, 1, SECS_10);
    let spec = w
        .start(
            &[
                "/bin/busybox",
                "sh",
                "-c",
                "/bin/busybox sleep 3; exec /bin/busybox httpd -f -p 8080 -h /www",
            ],
            &[8080],
            Some(&check),
        )
        .await;
    let gated = w
        .gate(&spec, Some(&check), Duration::ZERO, DEPLOY_TIMEOUT)
        .await;
    let ready = gated.ready();
    // Early probes failed (nothing listened) and did not count, though one
    // failure is all the check allows.
    assert!(ready.probes >= 2, "{gated:?}");
    assert!(ready.after >= Duration::from_secs(2), "{gated:?}");
    assert!(
        gated
            .progress
            .iter()
            .any(|p| matches!(p, GateProgress::StartPeriod { remaining } if *remaining <= SECS_10)),
        "{gated:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_healthy_check_times_out() {
    let mut w = World::new().await;
    // Port 9090 is published but nothing listens on it.
    let check = check(HealthProbe::Tcp { port: 9090 }, 200, 100, Duration::ZERO);
    let spec = w.start(&[], &[8080, 9090], Some(&check)).await;
    let timeout = Duration::from_secs(3);
    let gated = w.gate(&spec, Some(&check), Duration::ZERO, timeout).await;
    let host_port = spec.ports[1].host_port;
    match gated.not_ready() {
        NotReady::Timeout { after, last } => {
            assert_eq!(*after, timeout);
            let last = last.as_deref().expect("a probe failed");
            assert!(last.contains(&format!("127.0.0.1:{host_port}")), "{last}");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(gated.elapsed >= timeout, "{gated:?}");
    assert!(
        gated
            .not_ready()
            .to_string()
            .starts_with("not ready within 3s; last check: "),
        "{}",
        gated.not_ready()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_check_an_exit_within_the_settle_time_is_reported() {
    let mut w = World::new().await;
    let spec = w
        .start(
            &[
                "/bin/busybox",
                "sh",
                "-c",
                "/bin/busybox sleep 0.3; echo bye; exit 0",
            ],
            &[],
            None,
        )
        .await;
    let gated = w
        .gate(&spec, None, Duration::from_secs(1), DEPLOY_TIMEOUT)
        .await;
    match gated.not_ready() {
        NotReady::Exited { exit_code, logs } => {
            assert_eq!(*exit_code, Some(0), "{gated:?}");
            assert_eq!(logs, &["bye"], "{gated:?}");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    assert!(gated.progress.is_empty(), "{gated:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_check_a_running_instance_is_ready_after_settling() {
    let mut w = World::new().await;
    let spec = w.start(&[], &[8080], None).await;

    let gated = w.gate(&spec, None, Duration::ZERO, DEPLOY_TIMEOUT).await;
    let ready = gated.ready();
    assert_eq!(ready.probes, 0);
    assert!(gated.progress.is_empty(), "{gated:?}");

    let gated = w
        .gate(&spec, None, Duration::from_secs(1), DEPLOY_TIMEOUT)
        .await;
    let ready = gated.ready();
    assert!(ready.after >= Duration::from_secs(1), "{gated:?}");

    // A command check on a container that has none configured cannot run.
    let command = HealthCheck::new(HealthProbe::Command {
        argv: vec!["/bin/busybox".into(), "true".into()],
    });
    let gated = w
        .gate(&spec, Some(&command), Duration::ZERO, DEPLOY_TIMEOUT)
        .await;
    match gated.not_ready() {
        NotReady::Runtime(message) => {
            assert!(message.contains("no health check configured"), "{message}");
            assert!(message.contains(&spec.name), "{message}");
        }
        other => panic!("expected Runtime, got {other:?}"),
    }

    // A probe of a port the instance does not publish cannot run either.
    let unpublished = HealthCheck::new(HealthProbe::Tcp { port: 7070 });
    let gated = w
        .gate(&spec, Some(&unpublished), Duration::ZERO, DEPLOY_TIMEOUT)
        .await;
    assert!(
        matches!(gated.not_ready(), NotReady::Runtime(m) if m.contains("7070/tcp is not published")),
        "{gated:?}"
    );
}
