//! Running the configured alert program, exec-style, for an agent's drift
//! and a master's nodes alike; [`limit`] rate-limits it per key.
//!
//! The program is `argv[0]`, looked up in `PATH` when it has no `/`, and is
//! given `argv[1..]` as its arguments; it is never run through a shell. An
//! argument that is exactly one of [`PLACEHOLDERS`] is replaced by that
//! value, whole; nothing else in any argument is interpreted, so values with
//! spaces, quotes, `$(...)` or newlines arrive as they are.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

pub mod limit;

use std::path::Path;

use toml::Spanned;

use crate::config::{Bounds, ConfigError, DAY, bounded};

/// The alert program and its limits, as a daemon's `[monitor]` section
/// sets them (the agent's and the master's alike).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AlertSettings {
    /// Program and arguments run for each alert (exec-style, never a
    /// shell); empty: no alerts.
    pub alert_command: Vec<String>,
    /// How long an alert program may run before it is killed.
    pub alert_timeout: Duration,
    /// The window of the per-key alert rate limit.
    pub alert_cooldown: Duration,
    /// Most alerts per key within `alert_cooldown`.
    pub alert_burst: u32,
}

impl Default for AlertSettings {
    fn default() -> AlertSettings {
        AlertSettings {
            alert_command: Vec::new(),
            alert_timeout: Duration::from_secs(10),
            alert_cooldown: Duration::from_secs(300),
            alert_burst: 3,
        }
    }
}

impl AlertSettings {
    /// Sets the `[monitor]` alert keys a file names (`text`, the contents
    /// of `path`, for errors at their line and column): `alert_command`
    /// (its program name must not be empty), and `alert_timeout`,
    /// `alert_cooldown` and `alert_burst` within their bounds.
    pub fn apply_keys(
        &mut self,
        path: &Path,
        text: &str,
        command: Option<Vec<String>>,
        timeout: Option<&Spanned<u64>>,
        cooldown: Option<&Spanned<u64>>,
        burst: Option<&Spanned<u64>>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = command {
            if v.first().is_some_and(|p| p.is_empty()) {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    message: "monitor.alert_command: the program name is empty".into(),
                });
            }
            self.alert_command = v;
        }
        let secs = |key: &str, v: &Spanned<u64>, bounds: Bounds| {
            bounded(path, text, key, v, bounds).map(Duration::from_secs)
        };
        if let Some(v) = timeout {
            self.alert_timeout = secs("monitor.alert_timeout", v, ALERT_TIMEOUT_BOUNDS)?;
        }
        if let Some(v) = cooldown {
            self.alert_cooldown = secs("monitor.alert_cooldown", v, ALERT_COOLDOWN_BOUNDS)?;
        }
        if let Some(v) = burst {
            // To send no alerts, leave alert_command empty.
            let n = bounded(path, text, "monitor.alert_burst", v, ALERT_BURST_BOUNDS)?;
            self.alert_burst = u32::try_from(n).unwrap_or(u32::MAX);
        }
        Ok(())
    }
}

/// `alert_timeout`, seconds.
pub const ALERT_TIMEOUT_BOUNDS: Bounds = Bounds::new(1, 3_600, "seconds");
/// `alert_cooldown`, seconds.
pub const ALERT_COOLDOWN_BOUNDS: Bounds = Bounds::new(1, 7 * DAY, "seconds");
/// `alert_burst`, alerts per cooldown.
pub const ALERT_BURST_BOUNDS: Bounds = Bounds::new(1, 1_000, "alerts");

/// Most bytes of the program's stdout, and of its stderr, kept for the log.
pub const OUTPUT_LIMIT: usize = 4096;

/// How long the program's output is still read after it exited (a process
/// it left behind may hold the pipes open).
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// The arguments replaced when they are exactly one of these: `{node}`,
/// `{service}`, `{component}`, `{event}`, `{detail}`, `{time}`.
pub const PLACEHOLDERS: [&str; 6] = [
    "{node}",
    "{service}",
    "{component}",
    "{event}",
    "{detail}",
    "{time}",
];

/// What an alert is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertEvent {
    /// The node: an agent's own, or the one a master's alert is about
    /// (`MCP_NODE`, `{node}`).
    pub node: String,
    /// The service (`MCP_SERVICE`, `{service}`).
    pub service: String,
    /// The component (`MCP_COMPONENT`, `{component}`).
    pub component: String,
    /// The event kind, such as `drift:missing` or `drift-cleared`
    /// (`MCP_EVENT`, `{event}`).
    pub event: String,
    /// The event's detail (`MCP_DETAIL`, `{detail}`).
    pub detail: String,
    /// When the event was recorded, RFC 3339 UTC (`MCP_TIME`, `{time}`).
    pub time: String,
}

impl AlertEvent {
    /// The value a placeholder stands for, when `arg` is exactly one.
    fn placeholder(&self, arg: &str) -> Option<&str> {
        Some(match arg {
            "{node}" => &self.node,
            "{service}" => &self.service,
            "{component}" => &self.component,
            "{event}" => &self.event,
            "{detail}" => &self.detail,
            "{time}" => &self.time,
            _ => return None,
        })
    }

    /// The environment the program gets besides the agent's own.
    pub fn env(&self) -> [(&'static str, &str); 6] {
        [
            ("MCP_NODE", &self.node),
            ("MCP_SERVICE", &self.service),
            ("MCP_COMPONENT", &self.component),
            ("MCP_EVENT", &self.event),
            ("MCP_DETAIL", &self.detail),
            ("MCP_TIME", &self.time),
        ]
    }
}

/// `arg` with a whole-argument placeholder replaced; any other argument,
/// including one that merely contains a placeholder, unchanged. A value
/// that begins with `-` is given with a `_` before it: values come from
/// outside (an unmanaged container named `web--rf` has the component
/// `-rf`) and must never reach the program as an option. Its `MCP_*`
/// variable carries it exactly.
pub fn substitute(arg: &str, event: &AlertEvent) -> String {
    match event.placeholder(arg) {
        Some(value) if value.starts_with('-') => format!("_{value}"),
        Some(value) => value.to_string(),
        None => arg.to_string(),
    }
}

/// The program's arguments (`argv[1..]`) for `event`.
pub fn arguments(argv: &[String], event: &AlertEvent) -> Vec<String> {
    argv.iter().skip(1).map(|a| substitute(a, event)).collect()
}

/// `PATH` for alert programs when the agent has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why an alert failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertFailure {
    /// The command is empty.
    #[error("no alert program configured")]
    NoProgram,
    /// The program does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The program could not be started (permissions, not executable, ...).
    #[error("cannot run {program}: {error}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        error: String,
    },
    /// It exited with a non-zero code.
    #[error("exit code {0}")]
    Exit(i32),
    /// It was killed by a signal (not by the timeout).
    #[error("killed by signal {0}")]
    Signal(i32),
    /// It ran past the timeout and was killed.
    #[error("timed out after {}s", .0.as_secs_f64())]
    TimedOut(Duration),
    /// Waiting for it failed.
    #[error("cannot wait for the program: {0}")]
    Wait(String),
}

/// What running the alert program came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertOutcome {
    /// `Ok` when the program exited with status 0.
    pub result: Result<(), AlertFailure>,
    /// The start of its standard output (at most [`OUTPUT_LIMIT`] bytes,
    /// lossily UTF-8), marked when cut.
    pub stdout: String,
    /// The start of its standard error, likewise.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl AlertOutcome {
    fn failed(failure: AlertFailure, started: Instant) -> AlertOutcome {
        AlertOutcome {
            result: Err(failure),
            stdout: String::new(),
            stderr: String::new(),
            elapsed: started.elapsed(),
        }
    }

    /// Whether the program ran and exited with status 0.
    pub fn is_sent(&self) -> bool {
        self.result.is_ok()
    }

    /// One line for the event's detail: `exit status 0`, or why it failed.
    pub fn detail(&self) -> String {
        match &self.result {
            Ok(()) => "exit status 0".to_string(),
            Err(e) => e.to_string(),
        }
    }
}

/// Runs `argv` for `event`: exec-style (no shell), placeholders replaced in
/// whole arguments, the event in `MCP_*` variables, stdin from `/dev/null`,
/// stdout and stderr captured (the first [`OUTPUT_LIMIT`] bytes of each). The
/// program runs in a process group of its own; if it has not exited within
/// `timeout`, the group is killed (SIGKILL) and the alert has failed. Never
/// panics, whatever the program does.
pub async fn run_alert(argv: &[String], event: &AlertEvent, timeout: Duration) -> AlertOutcome {
    let started = Instant::now();
    let Some(program) = argv.first().filter(|p| !p.is_empty()) else {
        return AlertOutcome::failed(AlertFailure::NoProgram, started);
    };
    let mut cmd = Command::new(program);
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    cmd.args(arguments(argv, event))
        .env_clear()
        .env("PATH", path)
        .envs(event.env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return AlertOutcome::failed(AlertFailure::NotFound(program.clone()), started);
        }
        Err(e) => {
            return AlertOutcome::failed(
                AlertFailure::Spawn {
                    program: program.clone(),
                    error: e.to_string(),
                },
                started,
            );
        }
    };
    let stdout = capture(child.stdout.take());
    let stderr = capture(child.stderr.take());
    // The group's id is the program's pid: it runs in its own group.
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(nix::unistd::Pid::from_raw);
    let result = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => exit_result(status),
        Ok(Err(e)) => Err(AlertFailure::Wait(e.to_string())),
        Err(_) => {
            kill_group(group);
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(AlertFailure::TimedOut(timeout))
        }
    };
    // Whatever the program left running in its group ends with it.
    kill_group(group);
    AlertOutcome {
        result,
        stdout: collect(stdout).await,
        stderr: collect(stderr).await,
        elapsed: started.elapsed(),
    }
}

/// Kills every process left in the program's process group (nothing when
/// none is).
fn kill_group(group: Option<nix::unistd::Pid>) {
    if let Some(group) = group {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
}

fn exit_result(status: ExitStatus) -> Result<(), AlertFailure> {
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        Ok(())
    } else if let Some(code) = status.code() {
        Err(AlertFailure::Exit(code))
    } else {
        Err(AlertFailure::Signal(status.signal().unwrap_or(0)))
    }
}

/// Output read from one pipe so far: the first [`OUTPUT_LIMIT`] bytes and
/// the total count.
#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    total: usize,
}

type SharedCapture = Arc<Mutex<Captured>>;

/// Starts reading `pipe` to its end in a task of its own.
fn capture(
    pipe: Option<impl AsyncRead + Unpin + Send + 'static>,
) -> (SharedCapture, tokio::task::JoinHandle<()>) {
    let shared = SharedCapture::default();
    let task = tokio::spawn(read_capped(pipe, shared.clone()));
    (shared, task)
}

/// What was captured once the reader finished, or after [`OUTPUT_GRACE`]
/// (a process the program left behind may keep the pipe open).
async fn collect((shared, task): (SharedCapture, tokio::task::JoinHandle<()>)) -> String {
    let abort = task.abort_handle();
    if tokio::time::timeout(OUTPUT_GRACE, task).await.is_err() {
        abort.abort();
    }
    let c = shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut text = String::from_utf8_lossy(&c.kept).into_owned();
    if c.total > c.kept.len() {
        text.push_str(&format!("... ({} more bytes)", c.total - c.kept.len()));
    }
    text
}

/// Reads `pipe` to its end into `shared`, keeping the first
/// [`OUTPUT_LIMIT`] bytes.
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>, shared: SharedCapture) {
    let Some(mut pipe) = pipe else {
        return;
    };
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut c = shared
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                c.total += n;
                let room = OUTPUT_LIMIT.saturating_sub(c.kept.len());
                c.kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AlertEvent {
        AlertEvent {
            node: "rift".into(),
            service: "svc; rm -rf /".into(),
            component: "web".into(),
            event: "drift:missing".into(),
            detail: "$(touch x) `id` \"q\" 'q'\nnext".into(),
            time: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn whole_arguments_only() {
        let e = event();
        let argv: Vec<String> = [
            "/usr/bin/notify",
            "--to",
            "{node}",
            "{service}",
            "{component}",
            "{event}",
            "{detail}",
            "{time}",
            "svc={service}",
            "{service} ",
            "{SERVICE}",
            "{}",
            "{nope}",
            "$MCP_SERVICE",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            arguments(&argv, &e),
            [
                "--to",
                "rift",
                "svc; rm -rf /",
                "web",
                "drift:missing",
                "$(touch x) `id` \"q\" 'q'\nnext",
                "2026-01-01T00:00:00.000Z",
                "svc={service}",
                "{service} ",
                "{SERVICE}",
                "{}",
                "{nope}",
                "$MCP_SERVICE",
            ]
        );
        // The program itself is never substituted.
        let argv = vec!["{service}".to_string()];
        assert!(arguments(&argv, &e).is_empty());
        for p in PLACEHOLDERS {
            assert_ne!(substitute(p, &e), p);
        }
    }

    #[test]
    fn environment_names() {
        let e = event();
        let env: Vec<(&str, &str)> = e.env().to_vec();
        assert_eq!(
            env,
            [
                ("MCP_NODE", "rift"),
                ("MCP_SERVICE", "svc; rm -rf /"),
                ("MCP_COMPONENT", "web"),
                ("MCP_EVENT", "drift:missing"),
                ("MCP_DETAIL", "$(touch x) `id` \"q\" 'q'\nnext"),
                ("MCP_TIME", "2026-01-01T00:00:00.000Z"),
            ]
        );
    }

    #[test]
    fn failure_details() {
        assert_eq!(AlertFailure::Exit(3).to_string(), "exit code 3");
        assert_eq!(
            AlertFailure::TimedOut(Duration::from_secs(10)).to_string(),
            "timed out after 10s"
        );
        assert_eq!(
            AlertFailure::NotFound("/x/y".into()).to_string(),
            "not found: /x/y"
        );
    }

    #[tokio::test]
    async fn empty_command_fails_cleanly() {
        let out = run_alert(&[], &event(), Duration::from_secs(1)).await;
        assert_eq!(out.result, Err(AlertFailure::NoProgram));
        let out = run_alert(&[String::new()], &event(), Duration::from_secs(1)).await;
        assert_eq!(out.result, Err(AlertFailure::NoProgram));
    }

    #[test]
    fn values_never_become_options() {
        let e = AlertEvent {
            component: "-rf".into(),
            detail: "--exec=/bin/sh".into(),
            ..event()
        };
        let argv: Vec<String> = ["/usr/bin/notify", "--to", "{component}", "{detail}"]
            .map(String::from)
            .to_vec();
        assert_eq!(arguments(&argv, &e), ["--to", "_-rf", "_--exec=/bin/sh"]);
        assert!(e.env().contains(&("MCP_COMPONENT", "-rf")));
    }

    #[tokio::test]
    async fn the_program_gets_path_and_the_event_only() {
        // This process has variables of its own (cargo's, HOME, ...), which
        // the program must not see.
        assert!(
            std::env::vars().any(|(k, _)| k != "PATH" && !k.starts_with("MCP_")),
            "nothing to keep from the program"
        );
        let argv: Vec<String> = ["/usr/bin/env"].map(String::from).to_vec();
        let out = run_alert(&argv, &event(), Duration::from_secs(10)).await;
        assert!(out.is_sent(), "{out:?}");
        let names: Vec<&str> = out
            .stdout
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        assert!(names.contains(&"PATH"), "{}", out.stdout);
        for name in &names {
            assert!(
                *name == "PATH" || name.starts_with("MCP_"),
                "the program got {name}: {}",
                out.stdout
            );
        }
    }

    #[tokio::test]
    async fn what_the_program_leaves_behind_is_killed_with_it() {
        let argv: Vec<String> = ["/bin/sh", "-c", "sleep 60 & echo $!"]
            .map(String::from)
            .to_vec();
        let out = run_alert(&argv, &event(), Duration::from_secs(10)).await;
        assert!(out.is_sent(), "{out:?}");
        let pid = out.stdout.trim().to_string();
        assert!(!pid.is_empty(), "{out:?}");
        let gone = (0..100).any(|_| {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or dead and waiting for its new parent to reap it.
            let dead = state.is_empty() || state.contains(") Z ");
            if !dead {
                std::thread::sleep(Duration::from_millis(20));
            }
            dead
        });
        assert!(gone, "the program's background sleep ({pid}) outlived it");
    }

    #[tokio::test]
    async fn output_is_capped() {
        let argv: Vec<String> = ["/bin/dd", "if=/dev/zero", "bs=1024", "count=10"]
            .map(String::from)
            .to_vec();
        let out = run_alert(&argv, &event(), Duration::from_secs(10)).await;
        assert!(out.is_sent(), "{out:?}");
        assert_eq!(out.detail(), "exit status 0");
        assert!(out.stdout.starts_with('\0'));
        assert!(
            out.stdout
                .ends_with(&format!("... ({} more bytes)", 10240 - OUTPUT_LIMIT)),
            "{:?}",
            &out.stdout[OUTPUT_LIMIT..]
        );
        assert!(out.stderr.contains("10240 bytes"), "{}", out.stderr);
    }
}
