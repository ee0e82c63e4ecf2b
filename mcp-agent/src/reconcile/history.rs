//! Revision history and rollback.
//!
//! Every deploy records a revision per component it created or replaced
//! (`deployed`) and per component that failed (`failed`, with the reason):
//! [`Reconciler::record_revisions`], called once from `deploy` when it
//! settles the registry. [`Reconciler::rollback`] builds the service's
//! definition with earlier revisions of the chosen components and runs it
//! through `deploy` like any other definition; the revisions that deploy
//! makes are recorded as `rollback`.

use std::collections::BTreeMap;

use super::{Action, ComponentOutcome, PullPolicy, Reconciler};
use crate::error::AgentError;
use crate::registry::{ComponentRecord, NewRevision, RevisionOutcome, RevisionRecord};
use mcp_core::servicedef::{ComponentDef, ServiceDef};

tokio::task_local! {
    /// Set while [`Reconciler::rollback`] runs `deploy`: the components
    /// rolled back, each with the number of the revision it restores.
    static ROLLING_BACK: BTreeMap<String, u64>;
}

/// The event recorded per component a rollback restored.
const ROLLBACK_EVENT: &str = "rollback";

impl Reconciler {
    /// The revisions of `service` (of one `component` when given), newest
    /// first, at most `limit`. Revisions outlive their service, so a removed
    /// service still has its history; a service (or component) with neither
    /// history nor a record is not found.
    pub fn history(
        &self,
        service: &str,
        component: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<RevisionRecord>, AgentError> {
        let revisions = self.registry.revisions(service, component, limit)?;
        if revisions.is_empty()
            && self
                .registry
                .revisions(service, component, Some(1))?
                .is_empty()
        {
            // No history at all: does the service (component) exist?
            self.selected(service, component)?;
        }
        Ok(revisions)
    }

    /// Rolls back `component` of `service`, or with `None` the components
    /// the service's last change touched, to each one's previous revision
    /// that ran (see [`crate::registry::Registry::rollback_target`]): the
    /// service's definition as recorded, those components replaced by their
    /// earlier definitions, is deployed as any definition is, and the
    /// resulting revisions are recorded as `rollback`.
    ///
    /// A chosen component with no earlier revision that ran is an error
    /// (FailedPrecondition), and then nothing changes.
    pub async fn rollback(
        &self,
        service: &str,
        component: Option<&str>,
    ) -> Result<Vec<ComponentOutcome>, AgentError> {
        let (record, recorded) = self.selected(service, None)?;
        if let Some(only) = component
            && !recorded.iter().any(|c| c.name == only)
        {
            return Err(AgentError::NotFound(format!(
                "service {service:?} has no component {only:?}"
            )));
        }
        let chosen = match component {
            Some(only) => vec![only.to_string()],
            None => self.last_changed(service, &recorded)?,
        };
        let mut targets = BTreeMap::new();
        for name in chosen {
            let target = self
                .registry
                .rollback_target(service, &name)?
                .ok_or_else(|| {
                    AgentError::Conflict(format!(
                        "service {service:?} component {name:?} has no earlier revision to roll back to"
                    ))
                })?;
            targets.insert(name, target);
        }
        let components: Vec<ComponentDef> = recorded
            .iter()
            .map(|c| match targets.get(&c.name) {
                Some(t) => t.definition.clone(),
                None => c.definition.clone(),
            })
            .collect();
        let spec = mcp_proto::v1::ServiceSpec {
            name: record.name.clone(),
            active: record.active,
            node: record.node.clone().unwrap_or_default(),
            tier: record.tier.clone(),
            components: components.iter().map(ComponentDef::to_proto).collect(),
        };
        // The same validation as a pushed definition: an earlier revision
        // may name a component (`depends_on`) the service no longer has.
        let def = ServiceDef::from_proto(&spec).map_err(|e| {
            AgentError::Conflict(format!(
                "service {service:?} cannot be rolled back: with the earlier revisions its definition is not valid: {e}"
            ))
        })?;
        let restored = targets
            .iter()
            .map(|(name, t)| (name.clone(), t.revision))
            .collect();
        let outcomes = ROLLING_BACK
            .scope(restored, self.deploy(&def, component, PullPolicy::Missing))
            .await?;
        for o in outcomes.iter().filter(|o| o.action != Action::Failed) {
            let Some(t) = targets.get(&o.component) else {
                continue;
            };
            let detail = format!("to revision {} ({})", t.revision, t.image);
            if let Err(e) =
                self.registry
                    .record_event(service, Some(&o.component), ROLLBACK_EVENT, &detail)
            {
                tracing::warn!(service, component = %o.component, error = %e, "cannot record an event");
            }
        }
        Ok(outcomes)
    }

    /// The components of `service` (of those `recorded`) that its last
    /// change touched: each component's last change is its newest revision
    /// that ran with another spec than the one that ran before it; the last
    /// change of the service is the newest of those (revisions recorded by
    /// one deploy share their time).
    fn last_changed(
        &self,
        service: &str,
        recorded: &[ComponentRecord],
    ) -> Result<Vec<String>, AgentError> {
        let mut ran: BTreeMap<&str, Vec<RevisionRecord>> = BTreeMap::new();
        for r in self.registry.revisions(service, None, None)? {
            if r.outcome.ran()
                && let Some(c) = recorded.iter().find(|c| c.name == r.component)
            {
                ran.entry(c.name.as_str()).or_default().push(r);
            }
        }
        // Per component, newest first: the newest revision that changed the
        // spec (a recreated instance with the same spec is not a change).
        let changed: Vec<(&str, &str)> = ran
            .iter()
            .filter_map(|(name, revs)| {
                let at = revs
                    .windows(2)
                    .find(|w| w[0].spec_hash != w[1].spec_hash)
                    .map_or_else(|| revs.last(), |w| w.first())?;
                Some((*name, at.ts.as_str()))
            })
            .collect();
        let Some(last) = changed.iter().map(|(_, ts)| *ts).max() else {
            return Err(AgentError::Conflict(format!(
                "service {service:?} has no earlier revision to roll back to"
            )));
        };
        Ok(changed
            .iter()
            .filter(|(_, ts)| *ts == last)
            .map(|(name, _)| name.to_string())
            .collect())
    }

    /// Records the revisions one deploy of `service` made: for each of
    /// `targets` (the components it deployed), `deployed` when its outcome
    /// is created or updated, `failed` with the reason when it failed, and
    /// nothing otherwise; while [`Reconciler::rollback`] runs the deploy,
    /// each component it rolls back is recorded as `rollback` unless it
    /// failed. A failure to write is logged and does not fail the deploy,
    /// which has already happened.
    pub(super) fn record_revisions(
        &self,
        service: &str,
        targets: &[&ComponentDef],
        outcomes: &[ComponentOutcome],
    ) {
        let rolling_back = ROLLING_BACK.try_with(Clone::clone).ok();
        let mut entries: Vec<(&ComponentDef, RevisionOutcome, String)> = Vec::new();
        for o in outcomes {
            let Some(def) = targets.iter().find(|d| d.name == o.component) else {
                continue;
            };
            let restored = rolling_back
                .as_ref()
                .and_then(|m| m.get(&o.component))
                .copied();
            let error = o.error.as_deref().unwrap_or_default();
            let (outcome, detail) = match (o.action, restored) {
                (Action::Failed, None) => (RevisionOutcome::Failed, error.to_string()),
                (Action::Failed, Some(n)) => (
                    RevisionOutcome::Failed,
                    format!("rollback to revision {n}: {error}"),
                ),
                (Action::RolledBack, None) => (RevisionOutcome::RolledBack, error.to_string()),
                (Action::RolledBack, Some(n)) => (
                    RevisionOutcome::RolledBack,
                    format!("rollback to revision {n}: {error}"),
                ),
                (_, Some(n)) => (RevisionOutcome::Rollback, format!("revision {n}")),
                (Action::Created | Action::Updated, None) => {
                    (RevisionOutcome::Deployed, String::new())
                }
                _ => continue,
            };
            entries.push((def, outcome, detail));
        }
        self.record_revision_entries(service, &entries);
    }

    /// Records `entries` (a definition, its outcome and detail) as
    /// revisions of `service`, logging a failure to write.
    fn record_revision_entries(
        &self,
        service: &str,
        entries: &[(&ComponentDef, RevisionOutcome, String)],
    ) {
        if entries.is_empty() {
            return;
        }
        let new: Vec<NewRevision<'_>> = entries
            .iter()
            .map(|(definition, outcome, detail)| NewRevision {
                definition,
                outcome: *outcome,
                detail,
            })
            .collect();
        if let Err(e) = self.registry.record_revisions(service, &new) {
            tracing::warn!(service, error = %e, "cannot record revisions");
        }
    }

    /// Records the definitions [`Reconciler::adopt`] read back as the
    /// adopted components' revisions (`deployed`, detail `adopted`), so the
    /// first deploy after an adoption can be rolled back.
    pub(super) fn record_adopted(&self, service: &str, adopted: &[ComponentDef]) {
        let entries: Vec<_> = adopted
            .iter()
            .map(|c| (c, RevisionOutcome::Deployed, "adopted".to_string()))
            .collect();
        self.record_revision_entries(service, &entries);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::{TimeZone, Utc};
    use mcp_runtime::podman::{Podman, PodmanConfig};

    use super::*;
    use crate::registry::{Registry, ServiceRecord};
    use mcp_core::servicedef;

    /// A reconciler whose runtime is never reached: these tests stop
    /// before anything is deployed.
    fn reconciler() -> Reconciler {
        let runtime = Podman::new(PodmanConfig {
            socket: "/nonexistent/podman.sock".into(),
            insecure_registries: Vec::new(),
        });
        let registry = Registry::open_in_memory().expect("registry");
        Reconciler::new(
            Arc::new(runtime),
            Arc::new(registry),
            Duration::from_secs(1),
        )
    }

    fn web(api: &str, db: &str) -> ServiceDef {
        let text = format!(
            "name = \"web\"\n[[components]]\nname = \"api\"\nimage = \"{api}\"\n[[components]]\nname = \"db\"\nimage = \"{db}\"\n"
        );
        servicedef::parse(&text, Path::new("web.toml")).expect("valid")
    }

    /// Records a deploy of `def` at minute `minute`: its components as the
    /// registry's, and a revision of each component named in `changed`.
    fn deployed(r: &Reconciler, minute: u32, def: &ServiceDef, changed: &[&str]) {
        let records: Vec<_> = def
            .components
            .iter()
            .map(|c| ComponentRecord::from_def(&def.name, c))
            .collect();
        r.registry
            .record_deploy(&ServiceRecord::from_def(def), &records, &[])
            .expect("record_deploy");
        let new: Vec<_> = def
            .components
            .iter()
            .filter(|c| changed.contains(&c.name.as_str()))
            .map(|c| NewRevision {
                definition: c,
                outcome: RevisionOutcome::Deployed,
                detail: "",
            })
            .collect();
        let at = Utc
            .with_ymd_and_hms(2024, 5, 1, 12, minute, 0)
            .single()
            .expect("time");
        r.registry
            .record_revisions_at(at, &def.name, &new)
            .expect("revisions");
    }

    fn outcome(component: &str, action: Action, error: Option<&str>) -> ComponentOutcome {
        ComponentOutcome {
            component: component.into(),
            action,
            container_id: None,
            error: error.map(str::to_string),
        }
    }

    fn rows(r: &Reconciler) -> Vec<(String, u64, &'static str, String)> {
        r.history("web", None, None)
            .expect("history")
            .into_iter()
            .map(|v| (v.component, v.revision, v.outcome.as_str(), v.detail))
            .collect()
    }

    #[tokio::test]
    async fn a_deploy_records_created_updated_and_failed_components_only() {
        let r = reconciler();
        let def = web("api:1", "db:1");
        let mut more = def.components.clone();
        for (i, name) in ["cache", "job", "ui"].into_iter().enumerate() {
            let mut c = def.components[0].clone();
            c.name = name.into();
            c.image = format!("{name}:{i}");
            more.push(c);
        }
        let targets: Vec<&ComponentDef> = more.iter().collect();
        r.record_revisions(
            "web",
            &targets,
            &[
                outcome("api", Action::Created, None),
                outcome("db", Action::Updated, None),
                outcome("cache", Action::Unchanged, None),
                outcome("job", Action::Started, None),
                outcome("ui", Action::Failed, Some("pull failed")),
                outcome("gone", Action::Removed, None),
            ],
        );
        let mut got = rows(&r);
        got.sort();
        assert_eq!(
            got,
            [
                ("api".into(), 1, "deployed", String::new()),
                ("db".into(), 1, "deployed", String::new()),
                ("ui".into(), 1, "failed", "pull failed".into()),
            ]
        );

        // While a rollback runs the deploy, its components are `rollback`.
        let restored = BTreeMap::from([("api".to_string(), 1), ("db".to_string(), 1)]);
        ROLLING_BACK
            .scope(restored, async {
                r.record_revisions(
                    "web",
                    &targets,
                    &[
                        outcome("api", Action::Updated, None),
                        outcome("db", Action::Failed, Some("port taken")),
                        outcome("cache", Action::Unchanged, None),
                        outcome("ui", Action::Created, None),
                    ],
                );
            })
            .await;
        let newest: Vec<_> = rows(&r).into_iter().take(3).collect();
        assert_eq!(
            newest,
            [
                ("ui".into(), 2, "deployed", String::new()),
                (
                    "db".into(),
                    2,
                    "failed",
                    "rollback to revision 1: port taken".into()
                ),
                ("api".into(), 2, "rollback", "revision 1".into()),
            ]
        );
    }

    #[tokio::test]
    async fn history_and_rollback_name_what_is_missing() {
        let r = reconciler();
        let err = r.history("web", None, None).expect_err("no service");
        assert!(matches!(err, AgentError::NotFound(_)), "{err}");
        let err = r.rollback("web", None).await.expect_err("no service");
        assert!(matches!(err, AgentError::NotFound(_)), "{err}");

        deployed(&r, 0, &web("api:1", "db:1"), &["api", "db"]);
        assert_eq!(r.history("web", Some("api"), None).expect("api").len(), 1);
        let err = r
            .history("web", Some("nope"), None)
            .expect_err("no component");
        assert!(err.to_string().contains("\"nope\""), "{err}");
        let err = r.rollback("web", Some("nope")).await.expect_err("nope");
        assert!(matches!(err, AgentError::NotFound(_)), "{err}");

        let err = r
            .rollback("web", Some("api"))
            .await
            .expect_err("one revision");
        assert!(matches!(err, AgentError::Conflict(_)), "{err}");
        assert_eq!(
            err.to_string(),
            "service \"web\" component \"api\" has no earlier revision to roll back to"
        );
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::FailedPrecondition
        );
        let err = r
            .rollback("web", None)
            .await
            .expect_err("one revision each");
        assert!(err.to_string().contains("has no earlier revision"), "{err}");
        assert_eq!(rows(&r).len(), 2, "nothing recorded");

        // History outlives the service.
        assert!(r.registry.delete_service("web").expect("delete"));
        assert_eq!(r.history("web", None, Some(1)).expect("kept").len(), 1);
    }

    #[test]
    fn the_last_change_is_what_a_whole_service_rollback_undoes() {
        let r = reconciler();
        let last = |r: &Reconciler| {
            let recorded = r.registry.components("web").expect("components");
            r.last_changed("web", &recorded)
        };
        deployed(&r, 0, &web("api:1", "db:1"), &["api", "db"]);
        assert_eq!(last(&r).expect("both"), ["api", "db"]);
        deployed(&r, 1, &web("api:1", "db:2"), &["db"]);
        assert_eq!(last(&r).expect("db"), ["db"]);
        deployed(&r, 2, &web("api:2", "db:2"), &["api"]);
        assert_eq!(last(&r).expect("api"), ["api"]);
        // db's instance recreated with the same definition: not a change.
        deployed(&r, 3, &web("api:2", "db:2"), &["db"]);
        assert_eq!(last(&r).expect("still api"), ["api"]);
        // Failed revisions are not changes.
        let failed = web("api:3", "db:3");
        r.registry
            .record_revisions(
                "web",
                &[NewRevision {
                    definition: &failed.components[1],
                    outcome: RevisionOutcome::Failed,
                    detail: "x",
                }],
            )
            .expect("failed");
        assert_eq!(last(&r).expect("still api"), ["api"]);
        // A component the service no longer has is left out.
        let only_db = servicedef::parse(
            "name = \"web\"\n[[components]]\nname = \"db\"\nimage = \"db:2\"\n",
            Path::new("web.toml"),
        )
        .expect("valid");
        r.registry
            .record_deploy(&ServiceRecord::from_def(&only_db), &[], &["api".into()])
            .expect("drop api");
        assert_eq!(last(&r).expect("db"), ["db"]);
    }
}
