//! Health checks after the deploy: the monitor runs every running
//! component's `[components.health]` check at its interval, for as long as
//! the component runs, and publishes what it finds on the reconciler's
//! [`HealthBoard`], where status reads it.
//!
//! - TCP and HTTP checks are probed by the agent itself through the
//!   published host port (no process per probe); command checks run through
//!   the runtime (`podman healthcheck run`), the container's own check.
//! - Failures within the check's `start_period`, counted from the
//!   instance's start (so a restart of the agent does not restart it), do
//!   not count; `retries` failures in a row make the component
//!   `unhealthy`, which status reports as drift `unhealthy` (recorded,
//!   alerted and cleared like any drift); one passing check makes it
//!   `healthy` again.
//! - A new instance (a deploy, a restart) starts over as `starting`, unless
//!   the deploy's gate has just found it healthy.
//! - Every state change wakes the monitor's drift check at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;

use crate::health::{ComponentHealth, HealthBoard, HealthState, ProbeError, Target};
use crate::reconcile::{HealthTarget, Reconciler};

/// Longest the checker sleeps before it looks again for components that
/// appeared or went (a runtime event wakes it sooner).
pub const REFRESH: Duration = Duration::from_secs(1);

/// Most checks run at once.
const CONCURRENT_PROBES: usize = 16;

/// A component: (service, component).
type Key = (String, String);

/// One component being checked.
struct Checked {
    /// The instance (id) and start (Unix seconds) checked: another means
    /// starting over.
    instance: String,
    started_at: i64,
    /// When the checker first saw this instance, for an unknown start.
    seen: Instant,
    target: HealthTarget,
    /// What to probe; the reason when it cannot be probed at all.
    probe: Result<Target, String>,
    health: ComponentHealth,
    next_due: Instant,
}

impl Checked {
    fn new(target: HealthTarget, board: &HealthBoard, now: Instant) -> Checked {
        let instance = target.instance.id.clone();
        // A gate that just passed recorded the instance as healthy: the
        // next check is then due an interval on.
        let known = board.get(&target.service, &target.component, &instance);
        let next_due = match &known {
            Some(h) if h.state == HealthState::Healthy => now + target.check.interval,
            _ => now,
        };
        Checked {
            started_at: target.instance.started_at,
            seen: now,
            probe: Target::resolve(&target.check, &target.ports),
            health: known.unwrap_or(ComponentHealth {
                instance: instance.clone(),
                state: HealthState::Starting,
                failures: 0,
                last_failure: None,
            }),
            instance,
            target,
            next_due,
        }
    }

    /// Whether a failure at `now` falls within the check's start period,
    /// counted from the instance's start.
    fn in_start_period(&self, now: Instant) -> bool {
        let since_start = if self.started_at > 0 {
            let now_unix = chrono::Utc::now().timestamp();
            Duration::from_secs(u64::try_from(now_unix - self.started_at).unwrap_or(0))
        } else {
            now.saturating_duration_since(self.seen)
        };
        since_start < self.target.check.start_period
    }

    /// Takes in one probe's outcome; returns whether the state changed.
    fn judge(&mut self, outcome: Result<(), String>, now: Instant) -> bool {
        let before = self.health.state;
        match outcome {
            Ok(()) => {
                self.health.state = HealthState::Healthy;
                self.health.failures = 0;
                self.health.last_failure = None;
            }
            Err(text) => {
                if !self.in_start_period(now) {
                    self.health.failures = self.health.failures.saturating_add(1);
                    if self.health.failures >= self.target.check.retries.max(1) {
                        self.health.state = HealthState::Unhealthy;
                    }
                }
                self.health.last_failure = Some(text);
            }
        }
        self.health.state != before
    }
}

/// Runs the checks of `reconciler`'s components until dropped; `changed`
/// is notified whenever a component's health changes.
pub async fn run(reconciler: Arc<Reconciler>, changed: Arc<Notify>) {
    let board = reconciler.health_board().clone();
    let mut changes = reconciler.subscribe_changes();
    let mut checked: HashMap<Key, Checked> = HashMap::new();
    loop {
        let now = Instant::now();
        match reconciler.health_targets().await {
            Ok(targets) => track(&mut checked, targets, &board, now),
            Err(e) => tracing::debug!(error = %e, "health checks: cannot list the components"),
        }
        let due: Vec<Key> = checked
            .iter()
            .filter(|(_, c)| c.next_due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let outcomes: Vec<(Key, Result<(), String>, Instant)> =
            stream::iter(due.into_iter().filter_map(|key| {
                let c = checked.get(&key)?;
                let probe = c.probe.clone();
                let (instance, timeout) = (c.instance.clone(), c.target.check.timeout);
                let runtime = reconciler.runtime().clone();
                Some(async move {
                    let began = Instant::now();
                    let outcome = match probe {
                        Ok(target) => {
                            match target.probe(runtime.as_ref(), &instance, timeout).await {
                                Ok(()) => Ok(()),
                                Err(ProbeError::Failed(text) | ProbeError::Fatal(text)) => {
                                    Err(text)
                                }
                            }
                        }
                        Err(reason) => Err(reason),
                    };
                    (key, outcome, began)
                })
            }))
            .buffer_unordered(CONCURRENT_PROBES)
            .collect()
            .await;
        let mut any_changed = false;
        for (key, outcome, began) in outcomes {
            let Some(c) = checked.get_mut(&key) else {
                continue;
            };
            if c.judge(outcome, Instant::now()) {
                any_changed = true;
                log_change(&key, &c.health);
            }
            board.set(&key.0, &key.1, c.health.clone());
            c.next_due = began + c.target.check.interval;
        }
        if any_changed {
            changed.notify_one();
        }
        let wake = checked
            .values()
            .map(|c| c.next_due)
            .min()
            .unwrap_or(now + REFRESH)
            .min(Instant::now() + REFRESH);
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            change = changes.recv() => if let Err(broadcast::error::RecvError::Closed) = change {
                return;
            },
        }
    }
}

/// Brings `checked` in line with `targets`: new instances start over, those
/// gone are forgotten (on the board too).
fn track(
    checked: &mut HashMap<Key, Checked>,
    targets: Vec<HealthTarget>,
    board: &HealthBoard,
    now: Instant,
) {
    let mut present = std::collections::HashSet::new();
    for target in targets {
        let key = (target.service.clone(), target.component.clone());
        present.insert(key.clone());
        let same = checked.get(&key).is_some_and(|c| {
            c.instance == target.instance.id
                && c.started_at == target.instance.started_at
                && c.target.check == target.check
        });
        if !same {
            checked.insert(key, Checked::new(target, board, now));
        }
    }
    checked.retain(|key, _| {
        let keep = present.contains(key);
        if !keep {
            board.forget(&key.0, &key.1);
        }
        keep
    });
}

fn log_change(key: &Key, health: &ComponentHealth) {
    let (service, component) = key;
    match health.state {
        HealthState::Unhealthy => tracing::warn!(
            service,
            component,
            failures = health.failures,
            last = health.last_failure.as_deref().unwrap_or_default(),
            "component unhealthy"
        ),
        state => tracing::info!(
            service,
            component,
            state = state.as_str(),
            "component health"
        ),
    }
}

#[cfg(test)]
mod tests {
    use mcp_runtime::{InstanceInfo, InstanceState, RuntimeKind};

    use super::*;
    use mcp_core::servicedef::{HealthCheck, HealthProbe};

    fn target(start_period: Duration, started_at: i64) -> HealthTarget {
        let mut check = HealthCheck::new(HealthProbe::Tcp { port: 80 });
        check.retries = 2;
        check.start_period = start_period;
        HealthTarget {
            service: "web".into(),
            component: "api".into(),
            check,
            ports: Vec::new(),
            instance: InstanceInfo {
                id: "id-1".into(),
                name: "web-api".into(),
                image: "img:1".into(),
                image_id: String::new(),
                state: InstanceState::Running,
                status: String::new(),
                exit_code: None,
                labels: Default::default(),
                ports: Vec::new(),
                created_at: 0,
                started_at,
                runtime: RuntimeKind::Container,
                details: None,
            },
        }
    }

    #[test]
    fn retries_failures_in_a_row_make_it_unhealthy_and_one_pass_heals() {
        let board = HealthBoard::default();
        let now = Instant::now();
        let mut c = Checked::new(target(Duration::ZERO, 0), &board, now);
        assert_eq!(c.health.state, HealthState::Starting);
        assert_eq!(c.next_due, now, "a new instance is checked at once");
        assert!(c.judge(Ok(()), now), "starting -> healthy");
        assert!(!c.judge(Err("HTTP 404".into()), now), "one failure of two");
        assert_eq!(c.health.failures, 1);
        assert!(c.judge(Err("HTTP 404".into()), now), "healthy -> unhealthy");
        assert_eq!(c.health.state, HealthState::Unhealthy);
        assert_eq!(c.health.last_failure.as_deref(), Some("HTTP 404"));
        assert!(!c.judge(Err("HTTP 500".into()), now));
        assert_eq!(c.health.failures, 3);
        assert!(c.judge(Ok(()), now), "unhealthy -> healthy");
        assert_eq!(
            (c.health.failures, c.health.last_failure.clone()),
            (0, None)
        );
    }

    #[test]
    fn failures_in_the_start_period_of_the_instance_do_not_count() {
        let board = HealthBoard::default();
        let now = Instant::now();
        // Started just now: within a minute's start period.
        let fresh = chrono::Utc::now().timestamp();
        let mut c = Checked::new(target(Duration::from_secs(60), fresh), &board, now);
        for _ in 0..5 {
            assert!(!c.judge(Err("refused".into()), now));
        }
        assert_eq!(
            (c.health.state, c.health.failures),
            (HealthState::Starting, 0)
        );
        // Started two minutes ago (an agent restarted since): they count.
        let old = fresh - 120;
        let mut c = Checked::new(target(Duration::from_secs(60), old), &board, now);
        c.judge(Err("refused".into()), now);
        assert!(c.judge(Err("refused".into()), now));
        assert_eq!(c.health.state, HealthState::Unhealthy);
    }

    #[test]
    fn a_gate_that_passed_is_believed_until_the_next_interval() {
        let board = HealthBoard::default();
        board.set(
            "web",
            "api",
            ComponentHealth {
                instance: "id-1".into(),
                state: HealthState::Healthy,
                failures: 0,
                last_failure: None,
            },
        );
        let now = Instant::now();
        let t = target(Duration::ZERO, 0);
        let interval = t.check.interval;
        let c = Checked::new(t, &board, now);
        assert_eq!(c.health.state, HealthState::Healthy);
        assert_eq!(c.next_due, now + interval);
        // Another instance of the component starts over.
        let mut other = target(Duration::ZERO, 0);
        other.instance.id = "id-2".into();
        let c = Checked::new(other, &board, now);
        assert_eq!((c.health.state, c.next_due), (HealthState::Starting, now));
    }

    #[test]
    fn components_gone_are_forgotten_on_the_board() {
        let board = HealthBoard::default();
        let now = Instant::now();
        let mut checked = HashMap::new();
        track(&mut checked, vec![target(Duration::ZERO, 0)], &board, now);
        let key = ("web".to_string(), "api".to_string());
        checked.get_mut(&key).expect("tracked").judge(Ok(()), now);
        board.set("web", "api", checked[&key].health.clone());
        assert!(board.get("web", "api", "id-1").is_some());
        track(&mut checked, Vec::new(), &board, now);
        assert!(checked.is_empty());
        assert!(board.get("web", "api", "id-1").is_none());
    }
}
