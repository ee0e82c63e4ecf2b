//! The monitor: drift detection as the runtime reports changes, drift
//! events in the registry, and alerts run exec-style.
//!
//! # What it owns
//!
//! [`Monitor::run`] is one task per agent (spawned by
//! [`crate::server::Agent::serve`]). It
//!
//! - follows the runtime's event stream (podman's, filtered to containers)
//!   as [`Reconciler::follow_events`] passes it on, which reconnects by
//!   itself with a backoff of 0.25 s doubling to 10 s when podman goes away
//!   or restarts;
//! - runs a **drift check** 100 ms after an event (a burst of events makes
//!   one check), at start and after each (re)connection of the stream, after
//!   the agent's own state-changing RPCs finish, and every `[monitor]
//!   interval` as a backstop sweep (which lists the runtime afresh rather than
//!   trusting the listing the event stream keeps valid);
//! - records each drift **transition** in the registry's event history and
//!   hands it to the alert program.
//!
//! A drift check is [`Reconciler::status`] for every service: per
//! component, the drift kinds `missing`, `stopped`, `wrong-image`,
//! `unexpected` (running although `active = false`), plus `unmanaged` for an
//! instance named `<service>-<name>` that MCP does not manage (its
//! "component" is `<name>`). A check that cannot reach the runtime changes
//! nothing: an unreachable podman is not a node full of missing containers.
//!
//! # Transitions and events
//!
//! The monitor keeps, in memory, the last confirmed set of drift kinds per
//! (service, component) ([`DriftTracker`]). A check whose set differs for a
//! component is acted on only when a second check at least 0.25 s later finds
//! the same set, so containers briefly stopped or absent (a replacement, a
//! restart by podman's restart policy, which follows the exit within about
//! 70 ms) do not enter the history. A container that died is not judged
//! before podman has cleaned it up (its `cleanup` event, or at the latest
//! 5 s later): a restart policy and a removal already under way (`podman rm
//! -f` kills first, and on a busy host the container may stay `exited` for
//! a good part of a second) act only then. While one
//! of the agent's own state-changing RPCs (deploy, stop, start, restart,
//! remove, sync) is in flight, checks wait for it to finish (for at most two
//! minutes): the agent's own work is not drift. Then:
//!
//! - each kind that appears is an event `drift:<kind>` for the component,
//!   its detail the observed state and image (`exited, image
//!   registry:5000/app:1`, `no instance named app-web`, ...);
//! - a component whose drift goes to none gets `drift-cleared`, its detail
//!   the kinds cleared (`missing`, `stopped, wrong-image`);
//! - a kind that goes while others remain is noted silently; drift of a
//!   service that was removed is forgotten (its removal is in the history).
//!
//! At start the in-memory state is seeded from the registry's history
//! ([`open_drift`]): per component, the `drift:<kind>` events since its last
//! `drift-cleared`. So a restarted agent does not record or alert again on
//! drift it already reported; drift that appeared while it was down is
//! recorded and alerted on; recorded drift that is gone is cleared.
//!
//! # Alerts
//!
//! With `[monitor] alert_command = ["/usr/local/bin/page", "{service}",
//! "{event}"]`, each transition (each `drift:<kind>` and each
//! `drift-cleared`, never a repeated sweep) runs that program
//! ([`alert::run_alert`]):
//!
//! - exec-style: `alert_command[0]` is the program (looked up in `PATH`
//!   without a `/`), the rest its arguments; **no shell** is ever involved;
//! - an argument that is exactly `{node}`, `{service}`, `{component}`,
//!   `{event}`, `{detail}` or `{time}` is replaced by that value, whole;
//!   anything else (including `x={service}`) is passed unchanged, so values
//!   arrive byte for byte, whatever quotes, `$(...)` or newlines they hold;
//! - the environment is the agent's plus `MCP_NODE`, `MCP_SERVICE`,
//!   `MCP_COMPONENT`, `MCP_EVENT` (`drift:missing`, `drift-cleared`, ...),
//!   `MCP_DETAIL` and `MCP_TIME` (the event's RFC 3339 UTC time);
//! - stdin is `/dev/null`; the first 4 KiB of stdout and stderr go to the
//!   agent's log;
//! - it runs in a process group of its own, killed (SIGKILL) when it runs
//!   past `alert_timeout` seconds (default 10), which counts as a failure;
//! - alerts run one at a time, in order, in a task of their own: a slow or
//!   failing program never holds up drift detection or the agent;
//! - the result is an event for the component: `alert-sent` (`drift:missing:
//!   exit status 0`) or `alert-failed` (`drift:missing: not found:
//!   /usr/local/bin/page`, `...: exit code 3`, `...: timed out after 10s`),
//!   and a log line.
//!
//! **Rate limit** ([`RateLimiter`]): at most `alert_burst` (default 3)
//! alerts per `alert_cooldown` seconds (default 300, a sliding window) per
//! (service, component). Beyond that, transitions are still recorded, but
//! the alert is not run: each suppression is logged, and the first in a
//! window is recorded as an `alert-suppressed` event. A flapping container
//! thus costs at most `alert_burst` alerts per window.
//!
//! [`Reconciler::status`]: crate::reconcile::Reconciler::status
//! [`Reconciler::follow_events`]: crate::reconcile::Reconciler::follow_events

pub mod checks;
pub mod drift;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, mpsc};
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::MonitorSettings;
use crate::health::HealthState;
use crate::reconcile::{Reconciler, RuntimeChange, UNHEALTHY_DRIFT};
use crate::registry::{EventFilter, Registry};
use crate::server::activity::Activity;

pub use drift::{ComponentKey, DriftTracker, Observation, Transition, open_drift};
pub use mcp_core::alert::limit::{self, Decision, RateLimiter};
pub use mcp_core::alert::{self, AlertEvent, AlertFailure, AlertOutcome, run_alert};

/// Delay between an event and the check it causes; events within it share
/// the check.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// How long a change of a component's drift must persist before it is
/// recorded.
pub const SETTLE: Duration = Duration::from_millis(250);

/// Longest a check waits for the agent's own operations to finish.
pub const MAX_HOLD: Duration = Duration::from_secs(120);

/// Longest a check waits for the runtime to settle an instance (see
/// [`mcp_runtime::RuntimeEvent::settling`]).
pub const SETTLING_HOLD: Duration = Duration::from_secs(5);

/// Event kind of a successful alert.
pub const ALERT_SENT: &str = "alert-sent";
/// Event kind of a failed alert.
pub const ALERT_FAILED: &str = "alert-failed";
/// Event kind recorded once per window when alerts are rate limited.
pub const ALERT_SUPPRESSED: &str = "alert-suppressed";

/// Alerts waiting to run, at most.
const ALERT_QUEUE: usize = 256;

/// The drift monitor of one node. See the [module documentation](self).
pub struct Monitor {
    reconciler: Arc<Reconciler>,
    node_name: String,
    settings: MonitorSettings,
    activity: Activity,
}

/// Aborts a task when dropped, so the monitor's helpers end with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Monitor {
    /// A monitor of `reconciler`'s node, named `node_name` in alerts.
    pub fn new(reconciler: Arc<Reconciler>, node_name: String, settings: MonitorSettings) -> Self {
        Monitor {
            reconciler,
            node_name,
            settings,
            activity: Activity::new(),
        }
    }

    /// Holds checks while `activity` counts operations in progress (the
    /// agent passes the count its RPC layer keeps).
    pub fn with_activity(mut self, activity: Activity) -> Self {
        self.activity = activity;
        self
    }

    /// Runs until dropped (the agent runs it for its lifetime).
    pub async fn run(self) {
        let Monitor {
            reconciler,
            node_name,
            settings,
            activity,
        } = self;
        let registry = reconciler.registry().clone();
        let open = match registry.events(&EventFilter::default()) {
            Ok(events) => open_drift(&events),
            Err(e) => {
                tracing::warn!(error = %e, "monitor: cannot read the event history; drift still open there may be reported again");
                Default::default()
            }
        };
        if !open.is_empty() {
            tracing::info!(
                components = open.len(),
                "monitor: drift already recorded for some components; not reporting it again"
            );
        }
        let mut _alert_worker = None;
        let alerts = if settings.alerts.alert_command.is_empty() {
            None
        } else {
            let (tx, rx) = mpsc::channel(ALERT_QUEUE);
            _alert_worker = Some(AbortOnDrop(tokio::spawn(alert_worker(
                settings.alerts.alert_command.clone(),
                settings.alerts.alert_timeout,
                registry.clone(),
                rx,
            ))));
            Some(tx)
        };
        tracing::info!(
            interval_s = settings.interval.as_secs(),
            alert_command = ?settings.alerts.alert_command,
            "monitor started"
        );
        let mut checker = Checker {
            reconciler: reconciler.clone(),
            registry,
            node_name,
            tracker: DriftTracker::seeded(open, SETTLE),
            limiter: RateLimiter::new(settings.alerts.alert_burst, settings.alerts.alert_cooldown),
            cooldown: settings.alerts.alert_cooldown,
            alerts,
        };
        let notify = Arc::new(Notify::new());
        let settling = Arc::new(Mutex::new(Settling::default()));
        let _relay = AbortOnDrop(tokio::spawn(relay_changes(
            reconciler.subscribe_changes(),
            reconciler.registry().clone(),
            notify.clone(),
            settling.clone(),
        )));
        // The components' health checks after their deploy; a change of
        // health wakes a drift check like a runtime event.
        let _checks = AbortOnDrop(tokio::spawn(checks::run(
            reconciler.clone(),
            notify.clone(),
        )));

        let mut activity_rx = activity.subscribe();
        let mut sweep =
            tokio::time::interval_at(Instant::now() + settings.interval, settings.interval);
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // A first check at once (one that cannot reach podman changes
        // nothing), and another whenever the event stream (re)connects.
        let mut next: Option<Instant> = Some(Instant::now());
        let mut busy_since = (activity.in_progress() > 0).then(Instant::now);
        loop {
            let mut due = false;
            let wake = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                () = notify.notified() => schedule(&mut next, Instant::now() + DEBOUNCE),
                () = tokio::time::sleep_until(wake), if next.is_some() => {
                    next = None;
                    due = true;
                }
                _ = sweep.tick() => {
                    // The backstop does not trust the cached listing.
                    reconciler.forget_observed();
                    due = true;
                }
                Ok(()) = activity_rx.changed() => {
                    let n = *activity_rx.borrow_and_update();
                    if n == 0 {
                        if busy_since.take().is_some() {
                            schedule(&mut next, Instant::now() + DEBOUNCE);
                        }
                    } else if busy_since.is_none() {
                        busy_since = Some(Instant::now());
                    }
                }
            }
            if !due {
                continue;
            }
            if let Some(since) = busy_since
                && Instant::now() < since + MAX_HOLD
            {
                // Looked at again when the operations finish, or at the latest then.
                schedule(&mut next, since + MAX_HOLD);
                continue;
            }
            let hold = lock(&settling).hold_until(Instant::now());
            if let Some(until) = hold {
                // Looked at again on the runtime's next event, or at the latest then.
                schedule(&mut next, until);
                continue;
            }
            if let Some(at) = checker.check().await {
                schedule(&mut next, at);
            }
        }
    }
}

/// Makes `next` no later than `at`.
fn schedule(next: &mut Option<Instant>, at: Instant) {
    *next = Some(next.map_or(at, |n| n.min(at)));
}

/// Whether an event about instance `name` can change drift: whether the
/// name is `<service>-...` for a service the registry knows (what
/// [`Reconciler::status`] looks at). Other instances on the node (or, with a
/// shared event log, on other podman services of the host) cause no check.
fn concerns_a_service(registry: &Registry, name: &str) -> bool {
    match registry.list_services() {
        Ok(services) => services.iter().any(|s| {
            name.strip_prefix(s.name.as_str())
                .is_some_and(|rest| rest.starts_with('-'))
        }),
        Err(_) => true,
    }
}

/// Instances of known services that the runtime is still settling (see
/// [`mcp_runtime::RuntimeEvent::settling`]), by id, with when that began.
#[derive(Debug, Default)]
struct Settling(HashMap<String, Instant>);

impl Settling {
    /// Notes an event about instance `id` at `now`.
    fn note(&mut self, id: &str, settling: bool, now: Instant) {
        if settling {
            self.0.entry(id.to_string()).or_insert(now);
        } else {
            self.0.remove(id);
        }
    }

    /// Forgets every instance (the event stream was lost or fell behind:
    /// their next events may never come).
    fn clear(&mut self) {
        self.0.clear();
    }

    /// Until when a check waits, if it waits: the earliest end of a hold
    /// still running at `now` (those that ran out are forgotten).
    fn hold_until(&mut self, now: Instant) -> Option<Instant> {
        self.0.retain(|_, since| now < *since + SETTLING_HOLD);
        self.0.values().map(|since| *since + SETTLING_HOLD).min()
    }
}

/// Locks `m`, whatever a panicking holder left.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Wakes the monitor on every change the reconciler passes on from the
/// runtime's event stream that concerns a known service's instance, on every
/// (re)connection of that stream, and when it fell behind; keeps `settling`
/// up to date.
async fn relay_changes(
    mut changes: broadcast::Receiver<RuntimeChange>,
    registry: Arc<Registry>,
    notify: Arc<Notify>,
    settling: Arc<Mutex<Settling>>,
) {
    loop {
        match changes.recv().await {
            Ok(RuntimeChange::Connected) | Err(broadcast::error::RecvError::Lagged(_)) => {
                lock(&settling).clear();
                notify.notify_one()
            }
            Ok(RuntimeChange::Instance {
                id,
                name,
                settling: s,
            }) => {
                if name.is_empty() || concerns_a_service(&registry, &name) {
                    tracing::trace!(instance = %name, settling = s, "runtime event");
                    lock(&settling).note(&id, s, Instant::now());
                    notify.notify_one();
                }
            }
            Ok(RuntimeChange::Lost) => lock(&settling).clear(),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The part of the monitor that checks and reports.
struct Checker {
    reconciler: Arc<Reconciler>,
    registry: Arc<Registry>,
    node_name: String,
    tracker: DriftTracker,
    limiter: RateLimiter<ComponentKey>,
    cooldown: Duration,
    alerts: Option<mpsc::Sender<AlertEvent>>,
}

impl Checker {
    /// One drift check; returns when to check again to confirm a change.
    async fn check(&mut self) -> Option<Instant> {
        let report = match self.reconciler.status(None).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "monitor: drift check skipped");
                return None;
            }
        };
        let services = match self.registry.list_services() {
            Ok(s) => s.into_iter().map(|s| s.name),
            Err(e) => {
                tracing::warn!(error = %e, "monitor: drift check skipped: cannot read the registry");
                return None;
            }
        };
        let mut observation = Observation::from_status(&report, services);
        // A component whose health is not judged yet (its instance new, or
        // the agent restarted) keeps the `unhealthy` drift it had: not
        // knowing is not having recovered.
        for c in report
            .components
            .iter()
            .filter(|c| c.health == HealthState::Starting.as_str())
        {
            let key = ComponentKey::new(&c.service, &c.component);
            if self
                .tracker
                .confirmed()
                .get(&key)
                .is_some_and(|d| d.kinds.contains(UNHEALTHY_DRIFT))
            {
                let entry = observation.drift.entry(key).or_default();
                entry.kinds.insert(UNHEALTHY_DRIFT.to_string());
                if entry.detail.is_empty() {
                    entry.detail = "health not checked yet since the instance started".into();
                }
            }
        }
        let update = self.tracker.update(&observation, std::time::Instant::now());
        for t in update.transitions {
            self.report(t);
        }
        update
            .recheck_at
            .map(|at| Instant::from_std(at) + Duration::from_millis(10))
    }

    /// Records a transition and hands it to the alert program.
    fn report(&mut self, t: Transition) {
        let key = t.key().clone();
        let kind = t.event_kind();
        let detail = t.detail();
        match &t {
            Transition::Appeared { .. } => {
                tracing::warn!(service = %key.service, component = %key.component, event = %kind, detail = %detail, "drift")
            }
            Transition::Cleared { .. } => {
                tracing::info!(service = %key.service, component = %key.component, event = %kind, detail = %detail, "drift cleared")
            }
        }
        let time = match self.registry.record_event(
            &key.service,
            Some(&key.component),
            &kind,
            &detail,
        ) {
            Ok(record) => record.ts,
            Err(e) => {
                tracing::warn!(service = %key.service, component = %key.component, error = %e, "monitor: cannot record an event");
                mcp_core::wire::timestamp(chrono::Utc::now())
            }
        };
        let Some(alerts) = &self.alerts else {
            return;
        };
        match self.limiter.check(&key, std::time::Instant::now()) {
            Decision::Send => {
                let event = AlertEvent {
                    node: self.node_name.clone(),
                    service: key.service.clone(),
                    component: key.component.clone(),
                    event: kind,
                    detail,
                    time,
                };
                if let Err(e) = alerts.try_send(event) {
                    tracing::warn!(service = %key.service, component = %key.component, error = %e, "monitor: alert dropped: too many waiting");
                }
            }
            Decision::Suppress {
                first_in_window,
                until,
            } => {
                let wait = until.saturating_duration_since(std::time::Instant::now());
                tracing::warn!(
                    service = %key.service, component = %key.component, event = %kind,
                    next_alert_in_s = wait.as_secs(),
                    "alert suppressed: rate limit reached"
                );
                if first_in_window {
                    let detail = format!(
                        "{kind}: not alerted: the limit of {} alerts per {}s for this component is reached; alerts resume in {}s",
                        self.limiter.burst(),
                        self.cooldown.as_secs(),
                        wait.as_secs().max(1)
                    );
                    if let Err(e) = self.registry.record_event(
                        &key.service,
                        Some(&key.component),
                        ALERT_SUPPRESSED,
                        &detail,
                    ) {
                        tracing::warn!(error = %e, "monitor: cannot record an event");
                    }
                }
            }
        }
    }
}

/// Runs queued alerts one at a time and records their outcome.
async fn alert_worker(
    argv: Vec<String>,
    timeout: Duration,
    registry: Arc<Registry>,
    mut queue: mpsc::Receiver<AlertEvent>,
) {
    while let Some(event) = queue.recv().await {
        let outcome = run_alert(&argv, &event, timeout).await;
        let detail = format!("{}: {}", event.event, outcome.detail());
        let kind = if outcome.is_sent() {
            tracing::info!(
                service = %event.service, component = %event.component, event = %event.event,
                elapsed_ms = outcome.elapsed.as_millis() as u64,
                stdout = %outcome.stdout, stderr = %outcome.stderr,
                "alert sent"
            );
            ALERT_SENT
        } else {
            tracing::warn!(
                service = %event.service, component = %event.component, event = %event.event,
                reason = %outcome.detail(),
                elapsed_ms = outcome.elapsed.as_millis() as u64,
                stdout = %outcome.stdout, stderr = %outcome.stderr,
                "alert failed"
            );
            ALERT_FAILED
        };
        if let Err(e) = registry.record_event(&event.service, Some(&event.component), kind, &detail)
        {
            tracing::warn!(error = %e, "monitor: cannot record an event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_death_holds_checks_until_its_cleanup_or_the_hold_runs_out() {
        let t0 = Instant::now();
        let mut s = Settling::default();
        assert_eq!(s.hold_until(t0), None);
        s.note("a", true, t0);
        // A second death of the same container does not prolong the hold.
        s.note("a", true, t0 + Duration::from_secs(1));
        s.note("b", true, t0 + Duration::from_secs(2));
        assert_eq!(s.hold_until(t0), Some(t0 + SETTLING_HOLD));
        // Cleaned up: only the other one holds.
        s.note("a", false, t0 + Duration::from_secs(3));
        assert_eq!(
            s.hold_until(t0 + Duration::from_secs(3)),
            Some(t0 + Duration::from_secs(2) + SETTLING_HOLD)
        );
        // Never cleaned up: the hold runs out.
        assert_eq!(
            s.hold_until(t0 + Duration::from_secs(2) + SETTLING_HOLD),
            None
        );
        s.note("c", true, t0);
        s.clear();
        assert_eq!(s.hold_until(t0), None);
    }
}
