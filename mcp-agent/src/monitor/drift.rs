//! Drift bookkeeping, free of I/O: what a status report says is wrong per
//! component ([`Observation`]), and which transitions a new observation makes
//! against the last confirmed one ([`DriftTracker`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::reconcile::{StatusReport, UNHEALTHY_DRIFT, UNMANAGED_DRIFT};
use crate::registry::EventRecord;

/// Prefix of the event kind recorded when a drift kind appears
/// (`drift:missing`, `drift:stopped`, ...).
pub const DRIFT_PREFIX: &str = "drift:";

/// Event kind recorded when a component's drift goes to none.
pub const DRIFT_CLEARED: &str = "drift-cleared";

/// One component of one service: the unit drift, events and rate limits are
/// kept for. For an unmanaged instance the component is the part of its name
/// after `<service>-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComponentKey {
    /// Service name.
    pub service: String,
    /// Component name.
    pub component: String,
}

impl ComponentKey {
    /// The key of `component` of `service`.
    pub fn new(service: impl Into<String>, component: impl Into<String>) -> ComponentKey {
        ComponentKey {
            service: service.into(),
            component: component.into(),
        }
    }
}

impl std::fmt::Display for ComponentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.service, self.component)
    }
}

/// The drift found for one component.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ComponentDrift {
    /// Drift kinds: `missing`, `stopped`, `wrong-image`, `unexpected`,
    /// `unmanaged`. Never empty in an [`Observation`].
    pub kinds: BTreeSet<String>,
    /// What was observed (state and image), for events and alerts.
    pub detail: String,
}

/// What one check found: the components with drift, and the services the
/// registry knows (drift of a service that is no longer known is forgotten,
/// not cleared: its removal is already in the history).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observation {
    /// Per component with drift.
    pub drift: BTreeMap<ComponentKey, ComponentDrift>,
    /// Every service the registry knows.
    pub services: BTreeSet<String>,
}

impl Observation {
    /// The drift in `report`. `services` are the services the registry knows
    /// (those of the report's components are added); an unmanaged instance
    /// counts for the service and component the report attributes it to.
    pub fn from_status(
        report: &StatusReport,
        services: impl IntoIterator<Item = String>,
    ) -> Observation {
        let mut services: BTreeSet<String> = services.into_iter().collect();
        services.extend(report.components.iter().map(|c| c.service.clone()));
        let mut drift = BTreeMap::new();
        for c in &report.components {
            if c.drift.is_empty() {
                continue;
            }
            let detail = if c.observed_state == "missing" && c.container_id.is_empty() {
                format!("no instance named {}", c.container_name)
            } else if c.drift.iter().any(|k| k == "wrong-image") {
                format!(
                    "{}, image {} (definition: {})",
                    c.observed_state, c.observed_image, c.desired_image
                )
            } else {
                format!("{}, image {}", c.observed_state, c.observed_image)
            };
            let detail =
                if c.drift.iter().any(|k| k == UNHEALTHY_DRIFT) && !c.health_detail.is_empty() {
                    format!("{detail}; {}", c.health_detail)
                } else {
                    detail
                };
            drift.insert(
                ComponentKey::new(&c.service, &c.component),
                ComponentDrift {
                    kinds: c.drift.iter().cloned().collect(),
                    detail,
                },
            );
        }
        for u in &report.unmanaged {
            let inst = &u.instance;
            let entry = drift
                .entry(ComponentKey::new(&u.service, &u.component))
                .or_insert_with(ComponentDrift::default);
            entry.kinds.insert(UNMANAGED_DRIFT.to_string());
            entry.detail = format!(
                "instance {} not managed by MCP ({}, image {})",
                inst.name, inst.state, inst.image
            );
        }
        Observation { drift, services }
    }
}

/// A change in a component's drift, recorded as one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// A drift kind appeared: event `drift:<kind>`.
    Appeared {
        /// The component.
        key: ComponentKey,
        /// The drift kind.
        kind: String,
        /// What was observed.
        detail: String,
    },
    /// The component's drift went to none: event `drift-cleared`.
    Cleared {
        /// The component.
        key: ComponentKey,
        /// The kinds that were in effect until then.
        kinds: Vec<String>,
    },
}

impl Transition {
    /// The component concerned.
    pub fn key(&self) -> &ComponentKey {
        match self {
            Transition::Appeared { key, .. } | Transition::Cleared { key, .. } => key,
        }
    }

    /// The event kind: `drift:<kind>` or `drift-cleared`.
    pub fn event_kind(&self) -> String {
        match self {
            Transition::Appeared { kind, .. } => format!("{DRIFT_PREFIX}{kind}"),
            Transition::Cleared { .. } => DRIFT_CLEARED.to_string(),
        }
    }

    /// The event detail: what was observed, or the kinds cleared.
    pub fn detail(&self) -> String {
        match self {
            Transition::Appeared { detail, .. } => detail.clone(),
            Transition::Cleared { kinds, .. } => kinds.join(", "),
        }
    }
}

/// What [`DriftTracker::update`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// Confirmed transitions, to record (and alert on), in key order.
    pub transitions: Vec<Transition>,
    /// When a change seen but not yet confirmed can be confirmed: check again
    /// then.
    pub recheck_at: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Pending {
    kinds: BTreeSet<String>,
    since: Instant,
}

/// The last confirmed drift per component, and changes waiting for
/// confirmation.
///
/// A change (a component's set of drift kinds differing from the confirmed
/// one) is acted on only once two observations at least `settle` apart have
/// found the same new set; until then it is pending, and the caller is told
/// when to look again. This keeps the moments in which a container is
/// briefly stopped or absent (a replace, a restart by podman) out of the
/// history. Then each kind that was not confirmed before becomes
/// [`Transition::Appeared`], and a set that became empty becomes
/// [`Transition::Cleared`]; a kind that goes away while others remain is
/// confirmed silently.
#[derive(Debug, Clone)]
pub struct DriftTracker {
    confirmed: BTreeMap<ComponentKey, ComponentDrift>,
    pending: BTreeMap<ComponentKey, Pending>,
    settle: Duration,
}

impl DriftTracker {
    /// A tracker that knows of no drift.
    pub fn new(settle: Duration) -> DriftTracker {
        DriftTracker::seeded(BTreeMap::new(), settle)
    }

    /// A tracker that starts from drift already recorded (see
    /// [`open_drift`]): a first observation that finds the same kinds makes
    /// no transition, kinds found but not recorded appear, and recorded drift
    /// no longer found is cleared.
    pub fn seeded(open: BTreeMap<ComponentKey, BTreeSet<String>>, settle: Duration) -> Self {
        let confirmed = open
            .into_iter()
            .filter(|(_, kinds)| !kinds.is_empty())
            .map(|(key, kinds)| {
                (
                    key,
                    ComponentDrift {
                        kinds,
                        detail: String::new(),
                    },
                )
            })
            .collect();
        DriftTracker {
            confirmed,
            pending: BTreeMap::new(),
            settle,
        }
    }

    /// The confirmed drift per component.
    pub fn confirmed(&self) -> &BTreeMap<ComponentKey, ComponentDrift> {
        &self.confirmed
    }

    /// Whether a change is waiting for confirmation.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Compares `obs`, taken at `now`, with the confirmed drift.
    pub fn update(&mut self, obs: &Observation, now: Instant) -> Update {
        self.confirmed
            .retain(|k, _| obs.services.contains(&k.service));
        self.pending
            .retain(|k, _| obs.services.contains(&k.service));
        let keys: BTreeSet<ComponentKey> = self
            .confirmed
            .keys()
            .chain(self.pending.keys())
            .chain(obs.drift.keys())
            .cloned()
            .collect();
        let empty = BTreeSet::new();
        let mut out = Update::default();
        for key in keys {
            let observed = obs.drift.get(&key);
            let now_kinds = observed.map_or(&empty, |d| &d.kinds);
            let before = self.confirmed.get(&key).map_or(&empty, |d| &d.kinds);
            if now_kinds == before {
                self.pending.remove(&key);
                if let (Some(o), Some(c)) = (observed, self.confirmed.get_mut(&key)) {
                    c.detail.clone_from(&o.detail);
                }
                continue;
            }
            let since = match self.pending.get(&key) {
                Some(p) if &p.kinds == now_kinds => p.since,
                _ => {
                    self.pending.insert(
                        key.clone(),
                        Pending {
                            kinds: now_kinds.clone(),
                            since: now,
                        },
                    );
                    now
                }
            };
            if now.saturating_duration_since(since) < self.settle {
                let at = since + self.settle;
                out.recheck_at = Some(out.recheck_at.map_or(at, |t| t.min(at)));
                continue;
            }
            self.pending.remove(&key);
            match observed {
                Some(o) => {
                    for kind in o.kinds.difference(before) {
                        out.transitions.push(Transition::Appeared {
                            key: key.clone(),
                            kind: kind.clone(),
                            detail: o.detail.clone(),
                        });
                    }
                    self.confirmed.insert(key, o.clone());
                }
                None => {
                    let kinds = before.iter().cloned().collect();
                    self.confirmed.remove(&key);
                    out.transitions.push(Transition::Cleared { key, kinds });
                }
            }
        }
        out
    }
}

/// The drift the registry's history says is still open: per component, the
/// kinds of its `drift:<kind>` events since its last `drift-cleared` (or
/// `removed`). `events` are oldest first, as [`crate::registry::Registry::events`]
/// returns them.
pub fn open_drift(events: &[EventRecord]) -> BTreeMap<ComponentKey, BTreeSet<String>> {
    let mut open: BTreeMap<ComponentKey, BTreeSet<String>> = BTreeMap::new();
    for e in events {
        let Some(component) = &e.component else {
            continue;
        };
        let key = ComponentKey::new(&e.service, component);
        if let Some(kind) = e.kind.strip_prefix(DRIFT_PREFIX) {
            open.entry(key).or_default().insert(kind.to_string());
        } else if e.kind == DRIFT_CLEARED || e.kind == "removed" {
            open.remove(&key);
        }
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{ComponentStatus, UnmanagedInstance};
    use mcp_runtime::{InstanceInfo, InstanceState, RuntimeKind};

    const SETTLE: Duration = Duration::from_millis(300);

    fn key(s: &str, c: &str) -> ComponentKey {
        ComponentKey::new(s, c)
    }

    fn obs(items: &[(&str, &str, &[&str])]) -> Observation {
        let mut o = Observation::default();
        for (s, c, kinds) in items {
            o.services.insert(s.to_string());
            if !kinds.is_empty() {
                o.drift.insert(
                    key(s, c),
                    ComponentDrift {
                        kinds: kinds.iter().map(|k| k.to_string()).collect(),
                        detail: format!("{s}/{c} detail"),
                    },
                );
            }
        }
        o
    }

    fn kinds(update: &Update) -> Vec<(String, String)> {
        update
            .transitions
            .iter()
            .map(|t| (t.key().to_string(), t.event_kind()))
            .collect()
    }

    fn pair(k: &str, e: &str) -> (String, String) {
        (k.to_string(), e.to_string())
    }

    #[test]
    fn a_change_is_confirmed_by_a_second_check_after_settle() {
        let mut t = DriftTracker::new(SETTLE);
        let t0 = Instant::now();
        let u = t.update(&obs(&[("a", "web", &["missing"])]), t0);
        assert!(u.transitions.is_empty());
        assert_eq!(u.recheck_at, Some(t0 + SETTLE));
        // Too early: still pending, same recheck time.
        let u = t.update(
            &obs(&[("a", "web", &["missing"])]),
            t0 + Duration::from_millis(100),
        );
        assert!(u.transitions.is_empty());
        assert_eq!(u.recheck_at, Some(t0 + SETTLE));
        let u = t.update(&obs(&[("a", "web", &["missing"])]), t0 + SETTLE);
        assert_eq!(kinds(&u), [pair("a/web", "drift:missing")]);
        assert_eq!(u.recheck_at, None);
        match &u.transitions[0] {
            Transition::Appeared { detail, .. } => assert_eq!(detail, "a/web detail"),
            other => panic!("{other:?}"),
        }
        // Repeated sweeps: nothing new.
        for i in 1..5 {
            let u = t.update(&obs(&[("a", "web", &["missing"])]), t0 + SETTLE * (i + 1));
            assert_eq!(u, Update::default());
        }
    }

    #[test]
    fn a_transient_change_is_never_recorded() {
        let mut t = DriftTracker::new(SETTLE);
        let t0 = Instant::now();
        assert!(
            t.update(&obs(&[("a", "web", &["stopped"])]), t0)
                .transitions
                .is_empty()
        );
        assert!(t.has_pending());
        // Back to normal before confirmation.
        let u = t.update(&obs(&[("a", "web", &[])]), t0 + Duration::from_millis(200));
        assert_eq!(u, Update::default());
        assert!(!t.has_pending());
        // stopped, then missing: the pending change restarts its clock.
        t.update(&obs(&[("a", "web", &["stopped"])]), t0 + SETTLE);
        let u = t.update(&obs(&[("a", "web", &["missing"])]), t0 + SETTLE * 2);
        assert!(u.transitions.is_empty());
        assert_eq!(u.recheck_at, Some(t0 + SETTLE * 3));
        let u = t.update(&obs(&[("a", "web", &["missing"])]), t0 + SETTLE * 3);
        assert_eq!(kinds(&u), [pair("a/web", "drift:missing")]);
    }

    #[test]
    fn clearing_and_partial_changes() {
        let mut t = DriftTracker::new(Duration::ZERO);
        let now = Instant::now();
        let u = t.update(&obs(&[("a", "web", &["stopped", "wrong-image"])]), now);
        assert_eq!(
            kinds(&u),
            [
                pair("a/web", "drift:stopped"),
                pair("a/web", "drift:wrong-image")
            ]
        );
        // One kind goes away: confirmed silently.
        let u = t.update(&obs(&[("a", "web", &["wrong-image"])]), now);
        assert!(u.transitions.is_empty());
        // It comes back: a new transition.
        let u = t.update(&obs(&[("a", "web", &["wrong-image", "stopped"])]), now);
        assert_eq!(kinds(&u), [pair("a/web", "drift:stopped")]);
        // All gone: one drift-cleared naming what was cleared.
        let u = t.update(&obs(&[("a", "web", &[])]), now);
        assert_eq!(
            u.transitions,
            [Transition::Cleared {
                key: key("a", "web"),
                kinds: vec!["stopped".into(), "wrong-image".into()]
            }]
        );
        assert_eq!(u.transitions[0].detail(), "stopped, wrong-image");
        assert!(t.confirmed().is_empty());
    }

    #[test]
    fn components_are_independent() {
        let mut t = DriftTracker::new(SETTLE);
        let t0 = Instant::now();
        t.update(&obs(&[("a", "web", &["missing"]), ("b", "db", &[])]), t0);
        let t1 = t0 + Duration::from_millis(200);
        let u = t.update(
            &obs(&[("a", "web", &["missing"]), ("b", "db", &["stopped"])]),
            t1,
        );
        assert!(u.transitions.is_empty());
        assert_eq!(u.recheck_at, Some(t0 + SETTLE));
        let u = t.update(
            &obs(&[("a", "web", &["missing"]), ("b", "db", &["stopped"])]),
            t0 + SETTLE,
        );
        assert_eq!(kinds(&u), [pair("a/web", "drift:missing")]);
        assert_eq!(u.recheck_at, Some(t1 + SETTLE));
        let u = t.update(
            &obs(&[("a", "web", &["missing"]), ("b", "db", &["stopped"])]),
            t1 + SETTLE,
        );
        assert_eq!(kinds(&u), [pair("b/db", "drift:stopped")]);
    }

    #[test]
    fn drift_of_a_removed_service_is_forgotten_not_cleared() {
        let mut t = DriftTracker::new(Duration::ZERO);
        let now = Instant::now();
        t.update(&obs(&[("a", "web", &["missing"]), ("b", "x", &[])]), now);
        assert_eq!(t.confirmed().len(), 1);
        let u = t.update(&obs(&[("b", "x", &[])]), now);
        assert_eq!(u, Update::default());
        assert!(t.confirmed().is_empty());
    }

    fn event(id: i64, service: &str, component: Option<&str>, kind: &str) -> EventRecord {
        EventRecord {
            id,
            ts: format!("2026-01-01T00:00:{id:02}.000Z"),
            service: service.into(),
            component: component.map(str::to_string),
            kind: kind.into(),
            detail: String::new(),
        }
    }

    #[test]
    fn open_drift_follows_the_history() {
        let events = [
            event(1, "a", Some("web"), "created"),
            event(2, "a", Some("web"), "drift:stopped"),
            event(3, "a", Some("web"), "drift:wrong-image"),
            event(4, "a", Some("db"), "drift:missing"),
            event(5, "a", Some("db"), "drift-cleared"),
            event(6, "a", None, "deployed"),
            event(7, "b", Some("x"), "drift:missing"),
            event(8, "b", Some("x"), "removed"),
            event(9, "c", Some("y"), "drift-cleared"),
            event(10, "c", Some("y"), "drift:unmanaged"),
        ];
        let open = open_drift(&events);
        let want: BTreeMap<ComponentKey, BTreeSet<String>> = [
            (
                key("a", "web"),
                ["stopped", "wrong-image"].map(String::from).into(),
            ),
            (key("c", "y"), ["unmanaged"].map(String::from).into()),
        ]
        .into();
        assert_eq!(open, want);
    }

    #[test]
    fn seeded_tracker_does_not_repeat_recorded_drift() {
        let open: BTreeMap<ComponentKey, BTreeSet<String>> = [
            (key("a", "web"), ["missing"].map(String::from).into()),
            (key("a", "db"), ["stopped"].map(String::from).into()),
            (key("gone", "x"), ["stopped"].map(String::from).into()),
        ]
        .into();
        let mut t = DriftTracker::seeded(open, Duration::ZERO);
        let u = t.update(
            &obs(&[
                ("a", "web", &["missing"]),
                ("a", "db", &[]),
                ("a", "api", &["stopped"]),
            ]),
            Instant::now(),
        );
        // web: recorded and still there, nothing; db: recorded, now fine,
        // cleared; api: new; the unknown service: forgotten.
        assert_eq!(
            kinds(&u),
            [
                pair("a/api", "drift:stopped"),
                pair("a/db", "drift-cleared")
            ]
        );
        assert_eq!(t.confirmed().len(), 2);
    }

    fn status(service: &str, component: &str, state: &str, drift: &[&str]) -> ComponentStatus {
        ComponentStatus {
            service: service.into(),
            component: component.into(),
            runtime: "container".into(),
            desired_active: true,
            desired_image: "img:2".into(),
            observed_state: state.into(),
            observed_image: if state == "missing" {
                String::new()
            } else {
                "img:1".into()
            },
            container_id: if state == "missing" {
                String::new()
            } else {
                "abc".into()
            },
            container_name: format!("{service}-{component}"),
            drift: drift.iter().map(|d| d.to_string()).collect(),
            started_at: 0,
            health: String::new(),
            health_detail: String::new(),
        }
    }

    fn instance(name: &str) -> InstanceInfo {
        InstanceInfo {
            name: name.into(),
            image: "other:1".into(),
            state: InstanceState::Running,
            id: format!("id-{name}"),
            image_id: String::new(),
            status: String::new(),
            exit_code: None,
            labels: Default::default(),
            ports: Vec::new(),
            created_at: 0,
            started_at: 0,
            runtime: RuntimeKind::Container,
            details: None,
        }
    }

    fn unmanaged(service: &str, component: &str, instance: InstanceInfo) -> UnmanagedInstance {
        UnmanagedInstance {
            service: service.into(),
            component: component.into(),
            instance,
        }
    }

    #[test]
    fn observation_from_a_status_report() {
        let report = StatusReport {
            components: vec![
                status("a", "ok", "running", &[]),
                status("a", "web", "missing", &["missing"]),
                status("a", "db", "exited", &["stopped", "wrong-image"]),
                ComponentStatus {
                    health: "unhealthy".into(),
                    health_detail: "3 failed checks in a row; last: HTTP 404".into(),
                    ..status("a", "api", "running", &["unhealthy"])
                },
            ],
            // Attributed by the status (see `reconcile::ownership`).
            unmanaged: vec![
                unmanaged("a", "extra", instance("a-extra")),
                unmanaged("a-b", "c", instance("a-b-c")),
            ],
        };
        let o = Observation::from_status(&report, ["a-b".to_string()]);
        assert_eq!(
            o.services,
            ["a", "a-b"].map(String::from).into_iter().collect()
        );
        let got: Vec<(String, Vec<String>, String)> = o
            .drift
            .iter()
            .map(|(k, d)| {
                (
                    k.to_string(),
                    d.kinds.iter().cloned().collect(),
                    d.detail.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "a/api".to_string(),
                    vec!["unhealthy".to_string()],
                    "running, image img:1; 3 failed checks in a row; last: HTTP 404".to_string()
                ),
                (
                    "a/db".to_string(),
                    vec!["stopped".to_string(), "wrong-image".to_string()],
                    "exited, image img:1 (definition: img:2)".to_string()
                ),
                (
                    "a/extra".to_string(),
                    vec!["unmanaged".to_string()],
                    "instance a-extra not managed by MCP (running, image other:1)".to_string()
                ),
                (
                    "a/web".to_string(),
                    vec!["missing".to_string()],
                    "no instance named a-web".to_string()
                ),
                (
                    "a-b/c".to_string(),
                    vec!["unmanaged".to_string()],
                    "instance a-b-c not managed by MCP (running, image other:1)".to_string()
                ),
            ]
        );
    }
}
