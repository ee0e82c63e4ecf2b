//! The master's alerts: the `[monitor] alert_command` run exec-style (the
//! agents' runner, [`mcp_core::alert`]) when a node goes suspect, down or
//! comes back, and when a service waits on a down node; at most
//! `alert_burst` per `alert_cooldown` for each node (and each waiting
//! service). Failures and suppressions are events.
//!
//! Each alert is sent once per transition: transitions are recorded once
//! ([`crate::fleet::Fleet`] settles a node's state in one place), and an
//! alert goes out only for a transition just recorded.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use mcp_core::alert::limit::{Decision, RateLimiter};
use mcp_core::alert::{AlertEvent, run_alert};
use mcp_core::wire::timestamp;

use crate::config::AlertSettings;
use crate::store::Store;

/// Sends the master's alerts. Cheap to share behind an `Arc`.
pub struct Alerter {
    settings: AlertSettings,
    limiter: Mutex<RateLimiter<(String, String)>>,
    store: Arc<Store>,
    runtime: tokio::runtime::Handle,
}

impl Alerter {
    /// An alerter for `settings`, recording its failures in `store`; `None`
    /// when no alert command is configured. Call it within the runtime the
    /// alerts are to run on.
    pub fn new(settings: AlertSettings, store: Arc<Store>) -> Option<Arc<Alerter>> {
        if settings.alert_command.is_empty() {
            return None;
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        Some(Arc::new(Alerter {
            limiter: Mutex::new(RateLimiter::new(
                settings.alert_burst,
                settings.alert_cooldown,
            )),
            settings,
            store,
            runtime,
        }))
    }

    /// Sends an alert about `node` (and `service`, or empty) in the
    /// background: `event` such as `node-down`, with `detail`. Rate-limited
    /// per node and service; a suppression is recorded once per window, a
    /// failed run as an `alert-failed` event.
    pub fn send(self: &Arc<Self>, node: &str, service: &str, event: &str, detail: &str) {
        let key = (node.to_string(), service.to_string());
        let decision = self
            .limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .check(&key, Instant::now());
        if let Decision::Suppress {
            first_in_window, ..
        } = decision
        {
            if first_in_window {
                tracing::warn!(
                    node,
                    service,
                    event,
                    "alert suppressed: the rate limit is reached"
                );
                if let Err(e) = self.store.record_event(
                    node,
                    service,
                    "alert-suppressed",
                    &format!(
                        "{event}: at most {} alerts per {} s",
                        self.settings.alert_burst,
                        self.settings.alert_cooldown.as_secs()
                    ),
                ) {
                    tracing::warn!(error = %e, "cannot record an event");
                }
            }
            return;
        }
        let alert = AlertEvent {
            node: node.to_string(),
            service: service.to_string(),
            component: String::new(),
            event: event.to_string(),
            detail: detail.to_string(),
            time: timestamp(chrono::Utc::now()),
        };
        let this = self.clone();
        self.runtime.spawn(async move {
            let outcome = run_alert(
                &this.settings.alert_command,
                &alert,
                this.settings.alert_timeout,
            )
            .await;
            if outcome.is_sent() {
                tracing::info!(node = %alert.node, event = %alert.event, elapsed_ms = outcome.elapsed.as_millis() as u64, "alert sent");
                return;
            }
            tracing::warn!(node = %alert.node, event = %alert.event, why = %outcome.detail(), stderr = %outcome.stderr, "alert failed");
            let store = this.store.clone();
            let detail = format!("{}: {}", alert.event, outcome.detail());
            let recorded = tokio::task::spawn_blocking(move || {
                store.record_event(&alert.node, &alert.service, "alert-failed", &detail)
            })
            .await;
            if !matches!(recorded, Ok(Ok(()))) {
                tracing::warn!("cannot record an alert-failed event");
            }
        });
    }
}
