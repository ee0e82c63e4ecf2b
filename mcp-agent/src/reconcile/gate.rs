//! The health gate: waits until a freshly started instance is ready, and
//! says why when it is not.
//!
//! [`wait_ready`] is what a deploy waits on after it starts an instance:
//!
//! - Without a health check, the instance is ready once it has kept running
//!   for the observation window (`[deploy] settle_ms`, 5 s by default): a
//!   process that dies at once (a bad flag, a missing file, a port in use)
//!   is caught, and the previous version put back.
//! - With a check ([`HealthCheck`]), it is probed at once and then every
//!   interval until a probe succeeds. Failures within the check's start
//!   period (counted from when the gate starts) do not count; after it,
//!   `retries` consecutive failures make the instance unhealthy.
//!
//! Either way the gate keeps looking at the instance: one that stops running
//! is reported at once ([`NotReady::Exited`], with its exit code and last log
//! lines), and the whole wait is bounded by a deadline
//! ([`NotReady::Timeout`]). Between looks it waits on the runtime's event
//! stream ([`Wakeups`]): an exit wakes it at once, and the window ends on a
//! timer, not on a polling tick. Only while the event stream is down does it
//! poll.
//!
//! Probes:
//! - `command`: the runtime runs the container's own health check
//!   ([`Runtime::run_health_check`]; the check was set on the container when
//!   it was created, see [`HealthCheck::runtime_spec`]).
//! - `tcp`: a TCP connection to the host side of the published container
//!   port.
//! - `http`: a `GET` of the check's path on that host port; healthy on the
//!   expected status, or any 2xx.
//!
//! A deploy hands it a `Gate` for each new instance, and the reconciler's
//! `pass_gate` runs it and records the verdict.

use std::fmt::Write as _;
use std::time::Duration;

use futures::StreamExt;
use mcp_runtime::{InstanceInfo, InstanceState, LogOptions, PortMapping, Runtime, RuntimeError};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::reconcile::RuntimeChange;

use mcp_core::servicedef::HealthCheck;

use mcp_core::servicedef::ComponentDef;

use super::Reconciler;
use crate::error::AgentError;
use crate::health::probe::{ProbeError, Target, span};
use crate::health::{ComponentHealth, HealthState};

/// What a new instance of a component must pass during a deploy.
pub(super) struct Gate<'a> {
    pub(super) service: &'a str,
    pub(super) def: &'a ComponentDef,
    pub(super) spec: &'a mcp_runtime::InstanceSpec,
    /// How long it may take to be ready; `None`: not waited for.
    pub(super) wait: Option<Duration>,
    pub(super) progress: &'a (dyn Fn(&'static str, String) + Send + Sync),
}

/// How often the gate looks at an instance while the runtime's event stream
/// is down, without a check (and while an instance has not started running
/// yet).
pub const SETTLE_POLL: Duration = Duration::from_millis(50);

/// How often the gate looks at an instance between two probes while the
/// runtime's event stream is down, so that one that stops running is
/// noticed well before the next probe is due.
pub const WATCH_POLL: Duration = Duration::from_millis(250);

/// How often the gate looks at an instance although the event stream is
/// up: a backstop, should an event never come.
pub const EVENT_BACKSTOP: Duration = Duration::from_secs(1);

/// What wakes the gate between two looks at its instance: the changes the
/// runtime's event stream reports (see
/// [`Reconciler::subscribe_changes`](crate::reconcile::Reconciler::subscribe_changes)),
/// or nothing, and then it polls.
pub struct Wakeups {
    changes: Option<broadcast::Receiver<RuntimeChange>>,
    /// Whether the event stream is connected (else the gate polls).
    live: bool,
}

impl Wakeups {
    /// Wakes on `changes`; `live` says whether the event stream is
    /// connected now (its later losses and returns come through `changes`).
    pub fn from_changes(changes: broadcast::Receiver<RuntimeChange>, live: bool) -> Wakeups {
        Wakeups {
            changes: Some(changes),
            live,
        }
    }

    /// No events: the gate polls.
    pub fn polling() -> Wakeups {
        Wakeups {
            changes: None,
            live: false,
        }
    }

    /// Waits until `until`, or until the event stream reports something
    /// about `instance` (its id or name) or its own loss or return. Without
    /// a live stream, waits at most `poll`; with one, at most
    /// [`EVENT_BACKSTOP`].
    async fn pause(&mut self, instance: &str, until: Instant, poll: Duration) {
        let now = Instant::now();
        let until = until.min(now + if self.live { EVENT_BACKSTOP } else { poll });
        let Some(changes) = self.changes.as_mut() else {
            tokio::time::sleep_until(until).await;
            return;
        };
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return,
                change = changes.recv() => match change {
                    Ok(RuntimeChange::Instance { id, name, .. }) => {
                        if id == instance || name == instance {
                            return;
                        }
                    }
                    Ok(RuntimeChange::Connected) => {
                        self.live = true;
                        return;
                    }
                    Ok(RuntimeChange::Lost) => {
                        self.live = false;
                        return;
                    }
                    // Fell behind: anything may have happened.
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        self.changes = None;
                        self.live = false;
                        return;
                    }
                },
            }
        }
    }
}

/// How many of its last log lines an instance that stopped reports.
pub const EXIT_LOG_LINES: usize = 10;

/// How long reading a stopped instance's last log lines may take.
const LOG_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the gate reports while it waits (for progress display).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateProgress {
    /// A probe is about to run.
    Probing {
        /// Which probe this is, from 1.
        attempt: u32,
        /// The previous probe's failure, if there was one.
        last: Option<String>,
    },
    /// A probe failed within the check's start period, so it did not count.
    StartPeriod {
        /// Time left in the start period.
        remaining: Duration,
    },
}

/// Why a component did not become ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// The instance stopped running: its exit code and its last log lines.
    #[error("{}", exited_message(*.exit_code, .logs))]
    Exited {
        /// The exit code, when the runtime reports one (`None` when, say,
        /// its restart policy restarted it before the gate saw it stopped).
        exit_code: Option<i64>,
        /// Its last log lines, oldest first, at most [`EXIT_LOG_LINES`].
        logs: Vec<String>,
    },
    /// `retries` consecutive probes failed after the start period.
    #[error(
        "unhealthy after {failures} failed check{}: last: {last}",
        if *.failures == 1 { "" } else { "s" }
    )]
    Unhealthy {
        /// How many probes failed in a row.
        failures: u32,
        /// What the last one said.
        last: String,
    },
    /// Not healthy within the deploy timeout.
    #[error("{}", timeout_message(*.after, .last.as_deref()))]
    Timeout {
        /// The timeout.
        after: Duration,
        /// What the last probe said, if one failed.
        last: Option<String>,
    },
    /// The instance could not be inspected or probed at all.
    #[error("{0}")]
    Runtime(String),
}

/// The instance is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// How long the gate waited.
    pub after: Duration,
    /// How many probes ran (0 without a check).
    pub probes: u32,
}

fn exited_message(exit_code: Option<i64>, logs: &[String]) -> String {
    let mut text = match exit_code {
        Some(code) => format!("exited with code {code}"),
        None => "stopped running".to_string(),
    };
    let shown = &logs[logs.len().saturating_sub(EXIT_LOG_LINES)..];
    if shown.is_empty() {
        text.push_str("; no output");
    } else {
        let _ = write!(text, "; last output: {}", shown.join(" | "));
    }
    text
}

fn timeout_message(after: Duration, last: Option<&str>) -> String {
    let mut text = format!("not ready within {}", span(after));
    if let Some(last) = last {
        let _ = write!(text, "; last check: {last}");
    }
    text
}

/// Waits until `instance` (an id, or a name) is ready, or says why it is
/// not.
///
/// `ports` are the instance's published ports (tcp and http checks probe the
/// host side of theirs). Without a `check`, the instance is ready once it
/// has been seen running for `settle` (at once when `settle` is zero). With
/// one, it is probed at once and then every `check.interval`; the first
/// success means ready, failures within `check.start_period` (from now) do
/// not count, and `check.retries` consecutive failures after it mean
/// [`NotReady::Unhealthy`]. The instance is looked at again whenever
/// `wakeups` reports an event about it (and, should events fail, every
/// [`SETTLE_POLL`] without a check, [`WATCH_POLL`] between probes): when it
/// stops running the answer is [`NotReady::Exited`] at once. The wait ends
/// at `timeout` ([`NotReady::Timeout`]); only reading the last log lines of
/// an instance that stopped may add a few seconds.
///
/// `progress` hears of each probe and of failures that did not count.
#[allow(clippy::too_many_arguments)]
pub async fn wait_ready(
    runtime: &dyn Runtime,
    instance: &str,
    ports: &[PortMapping],
    check: Option<&HealthCheck>,
    settle: Duration,
    timeout: Duration,
    wakeups: Wakeups,
    progress: &(dyn Fn(GateProgress) + Send + Sync),
) -> Result<Ready, NotReady> {
    let mut waiting = Waiting {
        runtime,
        instance,
        started: Instant::now(),
        timeout,
        wakeups,
    };
    match check {
        None => waiting.settle(settle).await,
        Some(check) => {
            let target = Target::resolve(check, ports).map_err(NotReady::Runtime)?;
            waiting.probe_until_ready(check, &target, progress).await
        }
    }
}

/// One wait of [`wait_ready`].
struct Waiting<'a> {
    runtime: &'a dyn Runtime,
    instance: &'a str,
    started: Instant,
    timeout: Duration,
    wakeups: Wakeups,
}

impl Waiting<'_> {
    fn deadline(&self) -> Instant {
        self.started + self.timeout
    }

    fn timed_out(&self, last: Option<String>) -> NotReady {
        NotReady::Timeout {
            after: self.timeout,
            last,
        }
    }

    /// Ready once running for `settle`.
    async fn settle(&mut self, settle: Duration) -> Result<Ready, NotReady> {
        let mut watch = Watch::default();
        let mut running_since: Option<Instant> = None;
        loop {
            let running = self.look(&mut watch, None).await?;
            let now = Instant::now();
            if running {
                let since = *running_since.get_or_insert(now);
                if now.duration_since(since) >= settle {
                    return Ok(Ready {
                        after: self.started.elapsed(),
                        probes: 0,
                    });
                }
            } else {
                running_since = None;
            }
            if now >= self.deadline() {
                return Err(self.timed_out(None));
            }
            let until = running_since.map_or(self.deadline(), |since| {
                (since + settle).min(self.deadline())
            });
            self.wakeups.pause(self.instance, until, SETTLE_POLL).await;
        }
    }

    /// Probes until a probe succeeds, the check gives up, or time runs out.
    async fn probe_until_ready(
        &mut self,
        check: &HealthCheck,
        target: &Target,
        progress: &(dyn Fn(GateProgress) + Send + Sync),
    ) -> Result<Ready, NotReady> {
        let mut watch = Watch::default();
        let mut count = FailureCount::new(check);
        let mut attempt: u32 = 0;
        let mut last: Option<String> = None;
        let mut next_probe = self.started;
        loop {
            let running = self.look(&mut watch, last.as_ref()).await?;
            let now = Instant::now();
            if now >= self.deadline() {
                return Err(self.timed_out(last));
            }
            if running && now >= next_probe {
                attempt = attempt.saturating_add(1);
                progress(GateProgress::Probing {
                    attempt,
                    last: last.clone(),
                });
                let probe_start = Instant::now();
                let probe = target.probe(self.runtime, self.instance, check.timeout);
                let Ok(outcome) = tokio::time::timeout_at(self.deadline(), probe).await else {
                    return Err(self.timed_out(last));
                };
                match outcome {
                    Ok(()) => {
                        tracing::debug!(instance = self.instance, attempt, "health probe passed");
                        return Ok(Ready {
                            after: self.started.elapsed(),
                            probes: attempt,
                        });
                    }
                    Err(ProbeError::Fatal(message)) => return Err(NotReady::Runtime(message)),
                    Err(ProbeError::Failed(text)) => {
                        tracing::debug!(instance = self.instance, attempt, failure = %text, "health probe failed");
                        // A probe often fails because the instance just
                        // died: report that rather than the probe.
                        self.look(&mut watch, Some(&text)).await?;
                        match count.failed(probe_start.duration_since(self.started)) {
                            Judged::InStartPeriod { remaining } => {
                                progress(GateProgress::StartPeriod { remaining })
                            }
                            Judged::Counted => {}
                            Judged::Unhealthy { failures } => {
                                return Err(NotReady::Unhealthy {
                                    failures,
                                    last: text,
                                });
                            }
                        }
                        last = Some(text);
                    }
                }
                next_probe = probe_start + check.interval;
            }
            let now = Instant::now();
            if now >= self.deadline() {
                return Err(self.timed_out(last));
            }
            let (until, poll) = if running {
                (next_probe.min(self.deadline()), WATCH_POLL)
            } else {
                (self.deadline(), SETTLE_POLL)
            };
            self.wakeups.pause(self.instance, until, poll).await;
        }
    }

    /// Looks at the instance: `true` while it runs, `false` before it
    /// does; an error when it stopped, is gone, or cannot be inspected (a
    /// timeout, with `last`, when the inspection outlasts the deadline).
    async fn look(&self, watch: &mut Watch, last: Option<&String>) -> Result<bool, NotReady> {
        let inspect = self.runtime.inspect(self.instance);
        let info = tokio::time::timeout_at(self.deadline(), inspect)
            .await
            .map_err(|_| self.timed_out(last.cloned()))?
            .map_err(|e| NotReady::Runtime(format!("cannot inspect {}: {e}", self.instance)))?;
        match watch.observe(info.as_ref()) {
            Observed::Running => Ok(true),
            Observed::NotYet => Ok(false),
            Observed::Gone => Err(NotReady::Runtime(format!(
                "{} no longer exists",
                self.instance
            ))),
            Observed::Exited { exit_code } => Err(NotReady::Exited {
                exit_code,
                logs: last_logs(self.runtime, self.instance).await,
            }),
        }
    }
}

/// The last [`EXIT_LOG_LINES`] lines an instance printed; none when they
/// cannot be read.
async fn last_logs(runtime: &dyn Runtime, instance: &str) -> Vec<String> {
    let options = LogOptions {
        follow: false,
        tail: u32::try_from(EXIT_LOG_LINES).ok(),
    };
    let read = async {
        let mut stream = runtime.logs(instance, &options).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?.data);
        }
        Ok::<_, RuntimeError>(bytes)
    };
    match tokio::time::timeout(LOG_READ_TIMEOUT, read).await {
        Ok(Ok(bytes)) => tail_lines(&String::from_utf8_lossy(&bytes), EXIT_LOG_LINES),
        Ok(Err(e)) => {
            tracing::warn!(instance, error = %e, "cannot read the logs of a stopped instance");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!(
                instance,
                "reading the logs of a stopped instance took too long"
            );
            Vec::new()
        }
    }
}

/// The last `n` non-blank lines of `text`, without trailing whitespace.
fn tail_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// What one look at the instance showed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Observed {
    /// It runs.
    Running,
    /// It has not started running (created, paused, in transition).
    NotYet,
    /// It stopped, or was restarted since the gate first saw it run.
    Exited { exit_code: Option<i64> },
    /// It does not exist.
    Gone,
}

/// Follows an instance across looks, to notice a restart between two.
#[derive(Debug, Default)]
struct Watch {
    /// When the run the gate first saw started (Unix seconds).
    started_at: Option<i64>,
}

impl Watch {
    fn observe(&mut self, info: Option<&InstanceInfo>) -> Observed {
        let Some(info) = info else {
            return Observed::Gone;
        };
        match info.state {
            InstanceState::Running => {
                if info.started_at > 0 {
                    match self.started_at {
                        Some(first) if first != info.started_at => {
                            return Observed::Exited { exit_code: None };
                        }
                        Some(_) => {}
                        None => self.started_at = Some(info.started_at),
                    }
                }
                Observed::Running
            }
            InstanceState::Exited => Observed::Exited {
                exit_code: info.exit_code,
            },
            InstanceState::Created | InstanceState::Paused | InstanceState::Other(_) => {
                Observed::NotYet
            }
        }
    }
}

/// How a failed probe counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judged {
    /// Within the start period: it does not count.
    InStartPeriod { remaining: Duration },
    /// It counts, but the check has not given up yet.
    Counted,
    /// `failures` in a row: the instance is unhealthy.
    Unhealthy { failures: u32 },
}

/// Counts failed probes.
#[derive(Debug, Clone)]
struct FailureCount {
    start_period: Duration,
    retries: u32,
    failures: u32,
}

impl FailureCount {
    fn new(check: &HealthCheck) -> FailureCount {
        FailureCount {
            start_period: check.start_period,
            retries: check.retries.max(1),
            failures: 0,
        }
    }

    /// A probe that started `elapsed` after the gate did failed.
    fn failed(&mut self, elapsed: Duration) -> Judged {
        if elapsed < self.start_period {
            return Judged::InStartPeriod {
                remaining: self.start_period - elapsed,
            };
        }
        self.failures += 1;
        if self.failures >= self.retries {
            Judged::Unhealthy {
                failures: self.failures,
            }
        } else {
            Judged::Counted
        }
    }
}

impl Reconciler {
    /// Waits until the instance `id` is ready for `gate`'s component
    /// (at once when the deploy does not wait).
    pub(super) async fn pass_gate(&self, id: &str, gate: &Gate<'_>) -> Result<(), AgentError> {
        let step = gate.progress;
        let Some(timeout) = gate.wait else {
            step("started", "not waiting for it to be ready".into());
            return Ok(());
        };
        // Subscribed before the gate's first look: whatever happens from
        // now on wakes it, and what happened before, that look sees.
        let wakeups = Wakeups::from_changes(self.subscribe_changes(), self.observed.is_live());
        let report = |p: GateProgress| match p {
            GateProgress::Probing { attempt, last } => step(
                "waiting",
                match last {
                    Some(last) => format!("check {attempt}: {last}"),
                    None => format!("check {attempt}"),
                },
            ),
            GateProgress::StartPeriod { remaining } => step(
                "waiting",
                format!("start period, {}s left", remaining.as_secs()),
            ),
        };
        match wait_ready(
            self.runtime.as_ref(),
            id,
            &gate.spec.ports,
            gate.def.health.as_ref(),
            self.deploy.settle,
            timeout,
            wakeups,
            &report,
        )
        .await
        {
            Ok(ready) => {
                step("ready", format!("after {:.1}s", ready.after.as_secs_f64()));
                // The check just passed: healthy until the monitor's checks
                // say otherwise.
                if gate.def.health.is_some() {
                    self.health.set(
                        gate.service,
                        &gate.def.name,
                        ComponentHealth {
                            instance: id.to_string(),
                            state: HealthState::Healthy,
                            failures: 0,
                            last_failure: None,
                        },
                    );
                }
                Ok(())
            }
            Err(reason) => Err(AgentError::NotReady {
                reason,
                rolled_back: false,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mcp_runtime::RuntimeKind;

    use mcp_core::servicedef::HealthProbe;

    use super::*;

    fn check(retries: u32, start_period: Duration) -> HealthCheck {
        HealthCheck {
            retries,
            start_period,
            ..HealthCheck::new(HealthProbe::Tcp { port: 80 })
        }
    }

    #[test]
    fn failures_count_after_the_start_period() {
        let secs = Duration::from_secs;
        let mut count = FailureCount::new(&check(2, secs(10)));
        assert_eq!(
            count.failed(Duration::ZERO),
            Judged::InStartPeriod {
                remaining: secs(10)
            }
        );
        assert_eq!(
            count.failed(secs(9)),
            Judged::InStartPeriod { remaining: secs(1) }
        );
        // The period is over once it has fully passed.
        assert_eq!(count.failed(secs(10)), Judged::Counted);
        assert_eq!(count.failed(secs(11)), Judged::Unhealthy { failures: 2 });

        let mut count = FailureCount::new(&check(1, Duration::ZERO));
        assert_eq!(
            count.failed(Duration::ZERO),
            Judged::Unhealthy { failures: 1 }
        );

        // Retries of 0 (never from a validated definition) act as 1.
        let mut count = FailureCount::new(&check(0, Duration::ZERO));
        assert_eq!(
            count.failed(Duration::ZERO),
            Judged::Unhealthy { failures: 1 }
        );

        let mut count = FailureCount::new(&check(3, Duration::ZERO));
        assert_eq!(count.failed(secs(0)), Judged::Counted);
        assert_eq!(count.failed(secs(1)), Judged::Counted);
        assert_eq!(count.failed(secs(2)), Judged::Unhealthy { failures: 3 });
    }

    fn info(state: InstanceState, started_at: i64, exit_code: Option<i64>) -> InstanceInfo {
        InstanceInfo {
            id: "id".into(),
            name: "svc-web".into(),
            image: "img".into(),
            image_id: "sha".into(),
            state,
            status: String::new(),
            exit_code,
            labels: BTreeMap::new(),
            ports: Vec::new(),
            created_at: 1,
            started_at,
            runtime: RuntimeKind::Container,
            details: None,
        }
    }

    #[test]
    fn watching_an_instance() {
        let mut watch = Watch::default();
        assert_eq!(watch.observe(None), Observed::Gone);
        assert_eq!(
            watch.observe(Some(&info(InstanceState::Created, 0, None))),
            Observed::NotYet
        );
        assert_eq!(
            watch.observe(Some(&info(InstanceState::Running, 100, None))),
            Observed::Running
        );
        assert_eq!(
            watch.observe(Some(&info(InstanceState::Running, 100, None))),
            Observed::Running
        );
        assert_eq!(
            watch.observe(Some(&info(
                InstanceState::Other("stopping".into()),
                100,
                None
            ))),
            Observed::NotYet
        );
        assert_eq!(
            watch.observe(Some(&info(InstanceState::Exited, 100, Some(3)))),
            Observed::Exited { exit_code: Some(3) }
        );
        // Restarted (by a restart policy) between two looks.
        assert_eq!(
            watch.observe(Some(&info(InstanceState::Running, 104, None))),
            Observed::Exited { exit_code: None }
        );
    }

    #[test]
    fn messages() {
        let exited = NotReady::Exited {
            exit_code: Some(3),
            logs: vec!["boom".into(), "bang".into()],
        };
        assert_eq!(
            exited.to_string(),
            "exited with code 3; last output: boom | bang"
        );
        let many: Vec<String> = (1..=12).map(|i| format!("line {i}")).collect();
        let exited = NotReady::Exited {
            exit_code: None,
            logs: many,
        };
        assert_eq!(
            exited.to_string(),
            "stopped running; last output: line 3 | line 4 | line 5 | line 6 | line 7 | line 8 | line 9 | line 10 | line 11 | line 12"
        );
        let silent = NotReady::Exited {
            exit_code: Some(0),
            logs: vec![],
        };
        assert_eq!(silent.to_string(), "exited with code 0; no output");
        let unhealthy = NotReady::Unhealthy {
            failures: 3,
            last: "HTTP 404 from 127.0.0.1:8080/nope".into(),
        };
        assert_eq!(
            unhealthy.to_string(),
            "unhealthy after 3 failed checks: last: HTTP 404 from 127.0.0.1:8080/nope"
        );
        let once = NotReady::Unhealthy {
            failures: 1,
            last: "x".into(),
        };
        assert_eq!(once.to_string(), "unhealthy after 1 failed check: last: x");
        let timeout = NotReady::Timeout {
            after: Duration::from_millis(1500),
            last: Some("cannot connect".into()),
        };
        assert_eq!(
            timeout.to_string(),
            "not ready within 1s 500ms; last check: cannot connect"
        );
        let timeout = NotReady::Timeout {
            after: Duration::from_secs(30),
            last: None,
        };
        assert_eq!(timeout.to_string(), "not ready within 30s");
        assert_eq!(
            NotReady::Runtime("podman is down".into()).to_string(),
            "podman is down"
        );
    }

    /// A runtime whose instance is as `state` says (`None`: gone, `Err`:
    /// inspect fails); everything else is refused.
    struct Fake {
        state: std::sync::Mutex<Option<Result<InstanceState, ()>>>,
    }

    impl Fake {
        fn new(state: Option<Result<InstanceState, ()>>) -> Fake {
            Fake {
                state: std::sync::Mutex::new(state),
            }
        }

        fn set(&self, state: InstanceState) {
            *self.state.lock().expect("lock") = Some(Ok(state));
        }
    }

    #[async_trait::async_trait]
    impl Runtime for Fake {
        fn kind(&self) -> RuntimeKind {
            RuntimeKind::Unikernel
        }
        async fn ping(&self) -> mcp_runtime::RuntimeResult<mcp_runtime::RuntimeVersion> {
            Err(RuntimeError::Invalid("fake".into()))
        }
        async fn image_exists(&self, _: &str) -> mcp_runtime::RuntimeResult<bool> {
            Err(RuntimeError::Invalid("fake".into()))
        }
        async fn pull(&self, _: &str) -> mcp_runtime::RuntimeResult<()> {
            Err(RuntimeError::Invalid("fake".into()))
        }
        async fn create(
            &self,
            _: &mcp_runtime::InstanceSpec,
        ) -> mcp_runtime::RuntimeResult<String> {
            Err(RuntimeError::Invalid("fake".into()))
        }
        async fn start(&self, _: &str) -> mcp_runtime::RuntimeResult<()> {
            Err(RuntimeError::Invalid("fake".into()))
        }
        async fn stop(&self, _: &str, _: Duration) -> mcp_runtime::RuntimeResult<()> {
            Err(RuntimeError::Invalid("fake".into()))
        }
        async fn remove(&self, _: &str, _: bool) -> mcp_runtime::RuntimeResult<()> {
            Err(RuntimeError::Invalid("fake".into()))
        }
        async fn rename(&self, _: &str, _: &str) -> mcp_runtime::RuntimeResult<()> {
            Err(RuntimeError::Invalid("fake".into()))
        }
        async fn inspect(&self, _: &str) -> mcp_runtime::RuntimeResult<Option<InstanceInfo>> {
            match &*self.state.lock().expect("lock") {
                None => Ok(None),
                Some(Err(())) => Err(RuntimeError::Unavailable {
                    endpoint: "/fake.sock".into(),
                    reason: "refused".into(),
                }),
                Some(Ok(state)) => Ok(Some(info(state.clone(), 100, None))),
            }
        }
        async fn list(&self) -> mcp_runtime::RuntimeResult<Vec<InstanceInfo>> {
            Err(RuntimeError::Invalid("fake".into()))
        }
        async fn logs(
            &self,
            _: &str,
            _: &LogOptions,
        ) -> mcp_runtime::RuntimeResult<mcp_runtime::LogStream> {
            Err(RuntimeError::Invalid("fake".into()))
        }
        async fn events(&self) -> mcp_runtime::RuntimeResult<mcp_runtime::EventStream> {
            Err(RuntimeError::Invalid("fake".into()))
        }
    }

    async fn gate(
        fake: Fake,
        check: Option<&HealthCheck>,
        timeout: Duration,
    ) -> Result<Ready, NotReady> {
        wait_ready(
            &fake,
            "svc-web",
            &[],
            check,
            Duration::ZERO,
            timeout,
            Wakeups::polling(),
            &|_| {},
        )
        .await
    }

    /// A change reported for the gate's instance `svc-web`.
    fn changed() -> RuntimeChange {
        RuntimeChange::Instance {
            id: "id-svc-web".into(),
            name: "svc-web".into(),
            settling: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn with_events_an_exit_wakes_the_gate_and_the_window_ends_on_time() {
        let (tx, rx) = broadcast::channel(16);
        let fake = std::sync::Arc::new(Fake::new(Some(Ok(InstanceState::Running))));
        // The instance dies 300 ms in; the runtime reports it then.
        let dying = fake.clone();
        let events = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            dying.set(InstanceState::Exited);
            let _ = events.send(changed());
        });
        let began = Instant::now();
        let window = Duration::from_millis(5500);
        let gated = wait_ready(
            fake.as_ref(),
            "svc-web",
            &[],
            None,
            window,
            Duration::from_secs(60),
            Wakeups::from_changes(rx, true),
            &|_| {},
        )
        .await;
        assert!(matches!(gated, Err(NotReady::Exited { .. })), "{gated:?}");
        // Woken by the event, not by the next look a second later.
        assert_eq!(began.elapsed(), Duration::from_millis(300));

        // One that keeps running is ready when the window ends, to the
        // millisecond, not on the next whole second of the backstop.
        let fake = Fake::new(Some(Ok(InstanceState::Running)));
        let began = Instant::now();
        let ready = wait_ready(
            &fake,
            "svc-web",
            &[],
            None,
            window,
            Duration::from_secs(60),
            Wakeups::from_changes(tx.subscribe(), true),
            &|_| {},
        )
        .await
        .expect("ready");
        assert_eq!(began.elapsed(), window);
        assert_eq!(ready.after, window);
    }

    #[tokio::test]
    async fn the_gate_on_a_fake_runtime() {
        let running = || Fake::new(Some(Ok(InstanceState::Running)));
        let long = Duration::from_secs(30);
        let ready = gate(running(), None, long).await.expect("running is ready");
        assert_eq!(ready.probes, 0);
        assert!(ready.after < long, "{ready:?}");
        // A runtime without health checks (the trait's default).
        let command = HealthCheck::new(HealthProbe::Command {
            argv: vec!["true".into()],
        });
        match gate(running(), Some(&command), long).await {
            Err(NotReady::Runtime(m)) => assert!(
                m.contains("svc-web") && m.contains("does not run health checks"),
                "{m}"
            ),
            other => panic!("expected Runtime, got {other:?}"),
        }
        match gate(Fake::new(None), None, long).await {
            Err(NotReady::Runtime(m)) => assert_eq!(m, "svc-web no longer exists"),
            other => panic!("expected Runtime, got {other:?}"),
        }
        match gate(Fake::new(Some(Err(()))), None, long).await {
            Err(NotReady::Runtime(m)) => assert!(m.starts_with("cannot inspect svc-web: "), "{m}"),
            other => panic!("expected Runtime, got {other:?}"),
        }
        // Never started: the deadline ends the wait.
        let created = Fake::new(Some(Ok(InstanceState::Created)));
        let short = Duration::from_millis(200);
        assert_eq!(
            gate(created, None, short).await,
            Err(NotReady::Timeout {
                after: short,
                last: None
            })
        );
    }

    #[test]
    fn the_gate_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let fake = Fake::new(None);
        let check = HealthCheck::new(HealthProbe::Tcp { port: 80 });
        let gate = wait_ready(
            &fake,
            "svc-web",
            &[],
            Some(&check),
            Duration::ZERO,
            Duration::ZERO,
            Wakeups::polling(),
            &|_| {},
        );
        assert_send(&gate);
    }

    #[test]
    fn tail_of_the_logs() {
        assert_eq!(tail_lines("a\nb\n\n  \nc  \r\n", 10), ["a", "b", "c"]);
        assert_eq!(tail_lines("1\n2\n3\n4", 2), ["3", "4"]);
        assert!(tail_lines("", 10).is_empty());
    }
}
