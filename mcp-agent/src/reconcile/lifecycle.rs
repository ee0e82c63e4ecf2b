//! Stop, start, restart and remove of a recorded service (or one of its
//! components): each opens the same way ([`Reconciler::open`]) and ends by
//! recording what it did.

use futures::future::join_all;
use mcp_core::wire::{Action, PullPolicy};
use mcp_runtime::RuntimeError;

use super::{ComponentOutcome, Reconciler, STAGED_SUFFIX, outcomes};
use crate::error::AgentError;
use crate::registry::{ComponentRecord, ServiceRecord};

/// A recorded service opened for an operation: its lock held (released on
/// drop), its record, the components the operation is about, and the
/// runtime known to answer.
struct Opened {
    _lock: tokio::sync::OwnedMutexGuard<()>,
    record: ServiceRecord,
    comps: Vec<ComponentRecord>,
}

impl Reconciler {
    /// Opens `service` (or its `component` alone) for an operation: takes
    /// the service's lock, looks up its record and components (`NotFound`
    /// when there is no such service or component), and pings the runtime
    /// so that an unreachable one fails the operation before it starts.
    async fn open(&self, service: &str, component: Option<&str>) -> Result<Opened, AgentError> {
        let lock = self.locks.lock(service).await;
        let (record, comps) = self.selected(service, component)?;
        self.runtime.ping().await?;
        Ok(Opened {
            _lock: lock,
            record,
            comps,
        })
    }

    /// Ends a stop, start or restart: the cached listing is stale now, and
    /// the outcomes go to the history.
    fn conclude(
        &self,
        service: &str,
        kind: &str,
        comps: &[ComponentRecord],
        results: Vec<Result<(Action, Option<String>), AgentError>>,
    ) -> Vec<ComponentOutcome> {
        self.observed.invalidate();
        let out = outcomes(comps, results);
        self.record_events(service, kind, &out);
        out
    }

    /// Stops a service's instances (or one component's) and, for the whole
    /// service, marks it inactive.
    pub async fn stop(
        &self,
        service: &str,
        component: Option<&str>,
    ) -> Result<Vec<ComponentOutcome>, AgentError> {
        let Opened { _lock, comps, .. } = self.open(service, component).await?;
        if component.is_none() {
            self.registry.set_active(service, false)?;
        }
        let results = join_all(comps.iter().map(|c| async move {
            let Some(inst) = self.own_instance(service, &c.name).await? else {
                return Ok((Action::Unchanged, None));
            };
            match self.runtime.stop(&inst.id, self.stop_timeout).await {
                Ok(()) => Ok((Action::Stopped, Some(inst.id))),
                Err(RuntimeError::NotFound(_)) => Ok((Action::Unchanged, None)),
                Err(e) => Err(AgentError::from(e)),
            }
        }))
        .await;
        Ok(self.conclude(service, "stopped", &comps, results))
    }

    /// Starts a service's instances (or one component's), creating missing
    /// ones from the registry, and, for the whole service, marks it active.
    pub async fn start(
        &self,
        service: &str,
        component: Option<&str>,
    ) -> Result<Vec<ComponentOutcome>, AgentError> {
        let Opened { _lock, comps, .. } = self.open(service, component).await?;
        if component.is_none() {
            self.registry.set_active(service, true)?;
        }
        let results = join_all(comps.iter().map(|c| async move {
            let (action, id) = self.bring_up(service, c).await?;
            let action = match action {
                Action::Unchanged | Action::Created | Action::Updated => action,
                _ => Action::Started,
            };
            Ok((action, id))
        }))
        .await;
        Ok(self.conclude(service, "started", &comps, results))
    }

    /// Restarts a service's instances (or one component's) without changing
    /// the definition; missing instances are created.
    pub async fn restart(
        &self,
        service: &str,
        component: Option<&str>,
    ) -> Result<Vec<ComponentOutcome>, AgentError> {
        let Opened {
            _lock,
            record,
            comps,
        } = self.open(service, component).await?;
        if !record.active {
            return Err(AgentError::Conflict(format!(
                "service {service:?} is stopped (active = false); start it instead"
            )));
        }
        let results = join_all(comps.iter().map(|c| async move {
            if let Some(inst) = self.own_instance(service, &c.name).await? {
                match self.runtime.stop(&inst.id, self.stop_timeout).await {
                    Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                    Err(e) => return Err(AgentError::from(e)),
                }
            }
            let (action, id) = self.bring_up(service, c).await?;
            let action = match action {
                Action::Created | Action::Updated => action,
                _ => Action::Restarted,
            };
            Ok((action, id))
        }))
        .await;
        Ok(self.conclude(service, "restarted", &comps, results))
    }

    /// Stops and removes a service's instances and forgets the service.
    pub async fn remove(&self, service: &str) -> Result<Vec<ComponentOutcome>, AgentError> {
        let Opened { _lock, comps, .. } = self.open(service, None).await?;
        let results = join_all(comps.iter().map(|c| async move {
            self.remove_instance(service, &c.name)
                .await
                .map(|()| (Action::Removed, None))
        }))
        .await;
        self.observed.invalidate();
        let out = outcomes(&comps, results);
        if out.iter().all(|o| o.action != Action::Failed) {
            self.registry.delete_service(service)?;
        } else {
            let gone: Vec<String> = out
                .iter()
                .filter(|o| o.action == Action::Removed)
                .map(|o| o.component.clone())
                .collect();
            if let Some(record) = self.registry.get_service(service)? {
                self.registry.record_deploy(&record, &[], &gone)?;
            }
        }
        self.record_events(service, "removed", &out);
        Ok(out)
    }

    /// Brings a recorded component up: creates its instance when missing,
    /// replaces it when it no longer matches, starts it when stopped, and
    /// records a new instance id.
    async fn bring_up(
        &self,
        service: &str,
        c: &ComponentRecord,
    ) -> Result<(Action, Option<String>), AgentError> {
        let spec = self.spec_for(service, &c.definition)?;
        let (action, id) = self
            .converge(
                service,
                &c.definition,
                spec,
                Some(c),
                true,
                PullPolicy::Missing,
                Some(self.deploy.timeout),
                &|_| {},
            )
            .await?;
        if id.is_some() && id != c.container_id {
            self.registry
                .set_container_id(service, &c.name, id.as_deref())?;
        }
        Ok((action, id))
    }

    /// Removes the instance of `component` of `service` and its staged
    /// replacement, those that are theirs.
    pub(super) async fn remove_instance(
        &self,
        service: &str,
        component: &str,
    ) -> Result<(), AgentError> {
        let name = mcp_runtime::instance_name(service, component);
        for n in [format!("{name}{STAGED_SUFFIX}"), name] {
            let Some(inst) = self.runtime.inspect(&n).await? else {
                continue;
            };
            let owner = self.owners()?.owner(&inst);
            if !owner.is(service, component) {
                tracing::warn!(instance = %n, owner = %owner.describe(), "not removing an instance that is not this component's");
                continue;
            }
            match self.runtime.remove(&inst.id, true).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
