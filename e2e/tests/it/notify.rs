//! The agent and the master speak systemd's notify protocol: `READY=1`
//! once they serve, `STATUS=` lines, `WATCHDOG=1` while their database
//! answers, `STOPPING=1` on SIGTERM. The test plays the service manager: a
//! datagram socket as `NOTIFY_SOCKET`. And their log lines leave the time
//! to the journal when their output is the journal (`JOURNAL_STREAM`).

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use mcp_e2e::{Master, Node};

/// The messages received within `within` (each whole, without its
/// trailing newline), up to the first that `until` accepts.
fn messages(socket: &UnixDatagram, within: Duration, until: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("read timeout");
        match socket.recv(&mut buf) {
            Ok(n) => {
                let m = String::from_utf8_lossy(&buf[..n]).trim_end().to_string();
                let done = until(&m);
                out.push(m);
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    out
}

/// A datagram socket in `dir` to play the service manager on, and the
/// environment that points a daemon at it (with a watchdog of 0.6 s when
/// `watchdog`).
fn manager(dir: &Path, watchdog: bool) -> (UnixDatagram, Vec<(String, String)>) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    let mut env = vec![("NOTIFY_SOCKET".to_string(), path.display().to_string())];
    if watchdog {
        env.push(("WATCHDOG_USEC".into(), "600000".into()));
    }
    (socket, env)
}

/// Restarts `node`'s agent under a service manager ([`manager`]), whose
/// socket this returns.
fn restart_under_manager(node: &mut Node, watchdog: bool) -> UnixDatagram {
    node.stop_agent();
    let (socket, env) = manager(node.dir.path(), watchdog);
    node.agent_env = env;
    node.start_agent();
    socket
}

/// The first `READY=1` message, within 10 s.
fn ready(socket: &UnixDatagram, log: &dyn Fn() -> String) -> String {
    let first = messages(socket, Duration::from_secs(10), |m| m.contains("READY=1"));
    first
        .iter()
        .find(|m| m.contains("READY=1"))
        .cloned()
        .unwrap_or_else(|| panic!("no READY=1 in {first:?}; log:\n{}", log()))
}

/// Fed every 0.3 s (half the interval) while the database answers: at
/// least three times in 2 s.
fn assert_fed(socket: &UnixDatagram) {
    let fed = messages(socket, Duration::from_secs(2), |_| false);
    let beats = fed.iter().filter(|m| m.as_str() == "WATCHDOG=1").count();
    assert!(beats >= 3, "{beats} watchdog messages in 2 s: {fed:?}");
}

/// `STOPPING=1` arrived (the daemon was sent SIGTERM and has exited).
fn assert_stopping(socket: &UnixDatagram) {
    let last = messages(socket, Duration::from_secs(5), |m| m.contains("STOPPING=1"));
    assert!(
        last.iter().any(|m| m.contains("STOPPING=1")),
        "no STOPPING=1 after SIGTERM: {last:?}"
    );
}

#[test]
fn the_agent_tells_its_service_manager_ready_alive_and_stopping() {
    let mut node = Node::start();
    let socket = restart_under_manager(&mut node, true);
    // Ready once the runtime was probed, with what it found.
    let ready = ready(&socket, &|| node.agent_log());
    assert!(
        ready
            .lines()
            .any(|l| l.starts_with("STATUS=serving; podman ")),
        "{ready:?}"
    );
    assert_fed(&socket);
    assert!(
        node.agent_log().contains("service manager watchdog on"),
        "{}",
        node.agent_log()
    );
    node.stop_agent();
    assert_stopping(&socket);
}

#[test]
fn the_master_tells_its_service_manager_ready_alive_and_stopping() {
    let mut master = Master::start();
    master.kill();
    let (socket, env) = manager(master.dir.path(), true);
    master.env = env;
    master.start_process();
    let ready = ready(&socket, &|| master.log());
    assert!(ready.lines().any(|l| l == "STATUS=serving"), "{ready:?}");
    assert_fed(&socket);
    master.stop();
    assert_stopping(&socket);
}

#[test]
fn an_agent_without_podman_is_ready_and_says_what_it_waits_for() {
    let mut node = Node::start_without_podman();
    let socket = restart_under_manager(&mut node, false);
    let ready = ready(&socket, &|| node.agent_log());
    assert!(
        ready
            .lines()
            .any(|l| l == "STATUS=serving; podman unavailable, retrying every 2 s"),
        "{ready:?}"
    );
}

#[test]
fn log_lines_leave_the_time_to_the_journal_only_when_they_go_to_it() {
    use std::os::unix::fs::MetadataExt;
    let mut node = Node::start();
    node.stop_agent();
    let log = node.dir.path().join("agent.log");
    let meta = std::fs::metadata(&log).expect("agent.log");
    // Per INFO line from `from` on: whether it starts with a time.
    let stamped = |node: &Node, from: usize| -> Vec<bool> {
        node.agent_log()[from..]
            .lines()
            .filter(|l| l.contains("INFO"))
            .map(|l| l.starts_with("20"))
            .collect()
    };
    // Standard error is the file JOURNAL_STREAM names: no time of its own.
    let from = node.agent_log().len();
    node.agent_env = vec![(
        "JOURNAL_STREAM".into(),
        format!("{}:{}", meta.dev(), meta.ino()),
    )];
    node.start_agent();
    node.stop_agent();
    let lines = stamped(&node, from);
    assert!(
        !lines.is_empty() && lines.iter().all(|s| !s),
        "{}",
        &node.agent_log()[from..]
    );
    // JOURNAL_STREAM inherited but naming another file: times as usual.
    let from = node.agent_log().len();
    node.agent_env = vec![(
        "JOURNAL_STREAM".into(),
        format!("{}:{}", meta.dev(), meta.ino() + 1),
    )];
    node.start_agent();
    node.stop_agent();
    let lines = stamped(&node, from);
    assert!(
        !lines.is_empty() && lines.iter().all(|s| *s),
        "{}",
        &node.agent_log()[from..]
    );
}
