//! What the node has, seen against what the registry wants: the cached
//! listing of the runtime and the following of its event stream, status
//! (desired versus observed, with drift), `ps`, logs, and the components
//! the monitor's health checks probe.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use mcp_runtime::{InstanceInfo, InstanceState, LogChunk, LogOptions, LogStream, RuntimeError};
use serde::Serialize;
use tokio::sync::broadcast;

use super::ownership::Owner;
use super::{Reconciler, STAGED_SUFFIX};
use crate::error::AgentError;
use crate::registry::{ComponentRecord, ServiceRecord};

/// Desired versus observed state of one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentStatus {
    /// Service name.
    pub service: String,
    /// Component name.
    pub component: String,
    /// `container` or `unikernel`.
    pub runtime: String,
    /// Whether the service should be running.
    pub desired_active: bool,
    /// The image the definition names.
    pub desired_image: String,
    /// The instance's state, or `missing`.
    pub observed_state: String,
    /// The image the instance runs, when there is one.
    pub observed_image: String,
    /// The instance's id, when there is one.
    pub container_id: String,
    /// The instance's name.
    pub container_name: String,
    /// Drift kinds found: `missing`, `stopped`, `wrong-image`, `unexpected`,
    /// `unhealthy`.
    pub drift: Vec<String>,
    /// Unix seconds of the last start, 0 when unknown.
    pub started_at: i64,
    /// For a running component with a health check: `starting`, `healthy`
    /// or `unhealthy` (see [`crate::health::HealthState`]); empty otherwise.
    pub health: String,
    /// While checks fail: how many in a row, and what the last one said.
    pub health_detail: String,
}

/// A status report for a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// Per managed component.
    pub components: Vec<ComponentStatus>,
    /// Instances of the services reported that MCP does not manage (or that
    /// stand for no component of theirs), each with the service it belongs
    /// to (see [`super::ownership`]).
    pub unmanaged: Vec<UnmanagedInstance>,
}

/// An instance a service has that stands for none of its components as
/// MCP runs them: made by hand (attributed by its name), or labelled for a
/// component the service no longer has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnmanagedInstance {
    /// The service it belongs to.
    pub service: String,
    /// The component it stands for: its labelled one, or the rest of its
    /// name after `<service>-`.
    pub component: String,
    /// The instance.
    pub instance: InstanceInfo,
}

/// What `ps` shows for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsReport {
    /// Every instance the runtime has, by name.
    pub instances: Vec<PsEntry>,
    /// Components that should have an instance and have none (drift
    /// `missing`).
    pub missing: Vec<ComponentStatus>,
}

/// One instance in a [`PsReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsEntry {
    /// The instance.
    pub instance: InstanceInfo,
    /// Drift kinds of the component it is named for (`stopped`,
    /// `wrong-image`, `unexpected`), or `unmanaged` for an instance named
    /// like a known service's component that MCP does not manage; empty for
    /// an instance as intended and for instances of no known service.
    pub drift: Vec<String>,
}

impl PsReport {
    /// Joins the runtime's `instances` with the `status` computed from them.
    pub fn from_status(mut instances: Vec<InstanceInfo>, status: StatusReport) -> PsReport {
        instances.sort_by(|a, b| a.name.cmp(&b.name));
        let mut drift: HashMap<String, Vec<String>> = status
            .unmanaged
            .into_iter()
            .map(|u| (u.instance.name, vec![UNMANAGED_DRIFT.to_string()]))
            .collect();
        let mut missing = Vec::new();
        for c in status.components {
            if c.container_id.is_empty() {
                if !c.drift.is_empty() {
                    missing.push(c);
                }
            } else if !c.drift.is_empty() {
                drift.insert(c.container_name.clone(), c.drift);
            }
        }
        let instances = instances
            .into_iter()
            .map(|instance| PsEntry {
                drift: drift.remove(&instance.name).unwrap_or_default(),
                instance,
            })
            .collect();
        PsReport { instances, missing }
    }
}

/// A running component with a health check ([`Reconciler::health_targets`]).
#[derive(Debug, Clone)]
pub struct HealthTarget {
    /// The service.
    pub service: String,
    /// The component.
    pub component: String,
    /// Its check.
    pub check: mcp_core::servicedef::HealthCheck,
    /// The ports its definition publishes (tcp and http checks probe the
    /// host side of theirs).
    pub ports: Vec<mcp_runtime::PortMapping>,
    /// Its running instance.
    pub instance: InstanceInfo,
}

/// Drift kind of a running component whose health checks failed `retries`
/// times in a row.
pub const UNHEALTHY_DRIFT: &str = "unhealthy";

/// Drift kind of an instance named `<service>-<name>` that MCP does not
/// manage.
pub const UNMANAGED_DRIFT: &str = "unmanaged";

/// The last full listing of the runtime, valid only while the runtime's
/// event stream is connected: every event (and every change the reconciler
/// makes) drops it, so a listing is reused only while nothing has changed.
#[derive(Default)]
pub(super) struct ObservedCache {
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    /// Whether the event stream is connected; without it nothing is cached.
    live: bool,
    /// Bumped by every invalidation, so a listing that raced with a change
    /// is not stored.
    generation: u64,
    instances: Option<Arc<Vec<InstanceInfo>>>,
}

impl ObservedCache {
    fn state(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops the listing: something changed.
    pub(super) fn invalidate(&self) {
        let mut s = self.state();
        s.generation += 1;
        s.instances = None;
    }

    /// Whether the event stream is connected (and so vouches for the
    /// listing).
    pub(super) fn is_live(&self) -> bool {
        self.state().live
    }

    fn set_live(&self, live: bool) {
        let mut s = self.state();
        s.live = live;
        s.generation += 1;
        s.instances = None;
    }
}

/// What the runtime's event stream reported ([`Reconciler::subscribe_changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeChange {
    /// The stream (re)connected: anything may have changed meanwhile.
    Connected,
    /// Something happened to this instance.
    Instance {
        /// Its id.
        id: String,
        /// Its name.
        name: String,
        /// Whether the runtime reports another change when the instance's
        /// state settles (see [`mcp_runtime::RuntimeEvent::settling`]).
        settling: bool,
    },
    /// The stream was lost; it is being reconnected.
    Lost,
}

/// Changes kept for a receiver that falls behind (it then learns that it
/// lagged, and must assume anything changed).
pub(super) const CHANGES_BUFFER: usize = 1024;

/// Compares one registry component with the instance observed for it and,
/// when it runs with a health check, what its checks found.
fn component_status(
    svc: &ServiceRecord,
    comp: &ComponentRecord,
    name: &str,
    observed: Option<&InstanceInfo>,
    runtime_image: &str,
    health: Option<&crate::health::ComponentHealth>,
) -> ComponentStatus {
    let mut drift = Vec::new();
    let (state, image, id, started) = match observed {
        None => {
            if svc.active {
                drift.push("missing".to_string());
            }
            ("missing".to_string(), String::new(), String::new(), 0)
        }
        Some(inst) => {
            let running = inst.state == InstanceState::Running;
            if svc.active && !running {
                drift.push("stopped".to_string());
            }
            if !svc.active && running {
                drift.push("unexpected".to_string());
            }
            if inst.image != runtime_image {
                drift.push("wrong-image".to_string());
            }
            if svc.active
                && health.is_some_and(|h| h.state == crate::health::HealthState::Unhealthy)
            {
                drift.push(UNHEALTHY_DRIFT.to_string());
            }
            (
                inst.state.to_string(),
                inst.image.clone(),
                inst.id.clone(),
                inst.started_at,
            )
        }
    };
    ComponentStatus {
        service: svc.name.clone(),
        component: comp.name.clone(),
        runtime: comp.runtime.to_string(),
        desired_active: svc.active,
        desired_image: comp.image.clone(),
        observed_state: state,
        observed_image: image,
        container_id: id,
        container_name: name.to_string(),
        drift,
        started_at: started,
        health: health.map_or_else(String::new, |h| h.state.as_str().to_string()),
        health_detail: health
            .filter(|h| h.failures > 0)
            .map(|h| {
                format!(
                    "{} failed check{} in a row; last: {}",
                    h.failures,
                    if h.failures == 1 { "" } else { "s" },
                    h.last_failure.as_deref().unwrap_or("-")
                )
            })
            .unwrap_or_default(),
    }
}

impl Reconciler {
    /// Every instance on the node, from the cached listing when the event
    /// stream vouches that nothing changed since it was taken.
    pub(super) async fn observed(&self) -> Result<Arc<Vec<InstanceInfo>>, AgentError> {
        let generation = {
            let s = self.observed.state();
            if let (true, Some(list)) = (s.live, &s.instances) {
                return Ok(list.clone());
            }
            s.generation
        };
        let list = Arc::new(self.runtime.list().await?);
        let mut s = self.observed.state();
        if s.live && s.generation == generation {
            s.instances = Some(list.clone());
        }
        Ok(list)
    }

    /// Follows the runtime's event stream for as long as the reconciler
    /// lives: every event drops the cached listing and is then passed on to
    /// [`Reconciler::subscribe_changes`]'s receivers; when the stream is
    /// lost (podman stopped or restarted), the cache is disabled and the
    /// stream reconnected with a backoff of 0.25 s doubling to 10 s.
    pub async fn follow_events(self: Arc<Self>) {
        const BACKOFF_MIN: Duration = Duration::from_millis(250);
        const BACKOFF_MAX: Duration = Duration::from_secs(10);
        // A connection that lasted this long resets the backoff.
        const STABLE: Duration = Duration::from_secs(10);
        let mut backoff = BACKOFF_MIN;
        let mut was_lost = false;
        loop {
            match self.runtime.events().await {
                Ok(mut events) => {
                    let connected = tokio::time::Instant::now();
                    self.observed.set_live(true);
                    if was_lost {
                        tracing::info!("following runtime events again");
                    } else {
                        tracing::debug!("following runtime events");
                    }
                    let _ = self.changes.send(RuntimeChange::Connected);
                    while let Some(item) = events.next().await {
                        match item {
                            Ok(event) => {
                                self.observed.invalidate();
                                let _ = self.changes.send(RuntimeChange::Instance {
                                    id: event.id,
                                    name: event.name,
                                    settling: event.settling,
                                });
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "runtime event stream failed");
                                break;
                            }
                        }
                    }
                    self.observed.set_live(false);
                    let _ = self.changes.send(RuntimeChange::Lost);
                    if connected.elapsed() >= STABLE {
                        backoff = BACKOFF_MIN;
                    }
                    if !was_lost {
                        tracing::warn!("runtime event stream lost; reconnecting");
                    }
                    was_lost = true;
                }
                Err(e) => tracing::debug!(error = %e, "cannot follow runtime events"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Changes reported by the runtime's event stream, as
    /// [`Reconciler::follow_events`] sees them: each arrives after the
    /// cached listing was dropped, so a status taken on receipt sees it.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<RuntimeChange> {
        self.changes.subscribe()
    }

    /// Drops the cached listing, so that the next status asks the runtime
    /// (the monitor's backstop sweep does not trust the event stream).
    pub fn forget_observed(&self) {
        self.observed.invalidate();
    }

    /// Desired versus observed state of every component (of one service when
    /// `service` is given), with the drift found.
    pub async fn status(&self, service: Option<&str>) -> Result<StatusReport, AgentError> {
        let services = match service {
            Some(name) => vec![self.registry.get_service(name)?.ok_or_else(|| {
                AgentError::NotFound(format!("no service named {name:?} on this node"))
            })?],
            None => self.registry.list_services()?,
        };
        let instances = self.observed().await?;
        self.status_of(&services, &instances)
    }

    /// The status of `services` given the runtime's `instances`. A
    /// component's instance is the one of its name that belongs to it (by
    /// its labels, or the id recorded at adoption); an instance of the name
    /// that belongs to another service is not this one's.
    fn status_of(
        &self,
        services: &[ServiceRecord],
        instances: &[InstanceInfo],
    ) -> Result<StatusReport, AgentError> {
        let owners = self.owners()?;
        let owned: Vec<(Owner, &InstanceInfo)> =
            instances.iter().map(|i| (owners.owner(i), i)).collect();
        let mut components = Vec::new();
        let mut theirs = std::collections::HashSet::new();
        for svc in services {
            for comp in self.registry.components(&svc.name)? {
                let name = mcp_runtime::instance_name(&svc.name, &comp.name);
                let observed = owned
                    .iter()
                    .find(|(o, i)| i.name == name && o.is(&svc.name, &comp.name))
                    .map(|(_, i)| *i);
                if let Some(i) = observed {
                    theirs.insert(i.id.as_str());
                }
                // A VM's image is the file it was created from.
                let runtime_image = if comp.runtime == mcp_runtime::RuntimeKind::Unikernel {
                    self.vm_files.host_path(&svc.name, &comp.image)
                } else {
                    comp.image.clone()
                };
                let health = match (&comp.definition.health, observed) {
                    (Some(_), Some(inst)) if inst.state == InstanceState::Running => Some(
                        self.health
                            .get(&svc.name, &comp.name, &inst.id)
                            .unwrap_or_else(|| crate::health::ComponentHealth {
                                instance: inst.id.clone(),
                                state: crate::health::HealthState::Starting,
                                failures: 0,
                                last_failure: None,
                            }),
                    ),
                    _ => None,
                };
                components.push(component_status(
                    svc,
                    &comp,
                    &name,
                    observed,
                    &runtime_image,
                    health.as_ref(),
                ));
            }
        }
        let unmanaged = owned
            .iter()
            .filter(|(_, i)| !theirs.contains(i.id.as_str()) && !i.name.ends_with(STAGED_SUFFIX))
            .filter_map(|(owner, i)| {
                let (service, component) = match owner {
                    Owner::Managed { service, component }
                    | Owner::Unmanaged { service, component } => (service, component),
                    Owner::Foreign => return None,
                };
                services
                    .iter()
                    .any(|s| &s.name == service)
                    .then(|| UnmanagedInstance {
                        service: service.clone(),
                        component: component.clone(),
                        instance: (*i).clone(),
                    })
            })
            .collect();
        Ok(StatusReport {
            components,
            unmanaged,
        })
    }

    /// Every component of an active service that has a health check and
    /// whose own instance runs: what the monitor's checks probe.
    pub async fn health_targets(&self) -> Result<Vec<HealthTarget>, AgentError> {
        let services = self.registry.list_services()?;
        let instances = self.observed().await?;
        let owners = self.owners()?;
        let mut targets = Vec::new();
        for svc in services.iter().filter(|s| s.active) {
            for comp in self.registry.components(&svc.name)? {
                let Some(check) = comp.definition.health.clone() else {
                    continue;
                };
                let name = mcp_runtime::instance_name(&svc.name, &comp.name);
                let Some(instance) = instances.iter().find(|i| {
                    i.name == name
                        && i.state == InstanceState::Running
                        && owners.owner(i).is(&svc.name, &comp.name)
                }) else {
                    continue;
                };
                targets.push(HealthTarget {
                    service: svc.name.clone(),
                    component: comp.name.clone(),
                    check,
                    ports: self.publish.ports(&comp.definition.ports),
                    instance: instance.clone(),
                });
            }
        }
        Ok(targets)
    }

    /// Everything the runtime has, managed or not, each with the drift of
    /// what it stands for, plus the components that have no instance.
    pub async fn ps(&self) -> Result<PsReport, AgentError> {
        let observed = self.observed().await?;
        let services = self.registry.list_services()?;
        let status = self.status_of(&services, &observed)?;
        Ok(PsReport::from_status(observed.as_ref().clone(), status))
    }

    /// Logs of a service's components (or one), merged as they arrive; each
    /// chunk is tagged with its component.
    pub async fn logs(
        &self,
        service: &str,
        component: Option<&str>,
        options: &LogOptions,
    ) -> Result<
        futures::stream::BoxStream<'static, (String, Result<LogChunk, RuntimeError>)>,
        AgentError,
    > {
        let (_, comps) = self.selected(service, component)?;
        let mut streams = Vec::new();
        for c in &comps {
            let name = mcp_runtime::instance_name(service, &c.name);
            // Only the component's own instance, by id.
            let id = match self.own_instance(service, &c.name).await? {
                Some(inst) => inst.id,
                None if comps.len() > 1 => continue,
                None => {
                    return Err(AgentError::NotFound(format!(
                        "{service}/{}: no instance named {name}",
                        c.name
                    )));
                }
            };
            let s: LogStream = match self.runtime.logs(&id, options).await {
                Ok(s) => s,
                Err(RuntimeError::NotFound(_)) if comps.len() > 1 => continue,
                Err(e) => return Err(e.into()),
            };
            let comp = c.name.clone();
            streams.push(s.map(move |item| (comp.clone(), item)).boxed());
        }
        Ok(stream::select_all(streams).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_runtime::RuntimeKind;

    fn instance(name: &str, state: InstanceState) -> InstanceInfo {
        InstanceInfo {
            id: format!("id-{name}"),
            name: name.into(),
            image: "img:1".into(),
            image_id: String::new(),
            state,
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

    fn component(name: &str, observed: Option<&InstanceInfo>, drift: &[&str]) -> ComponentStatus {
        ComponentStatus {
            service: "web".into(),
            component: name.into(),
            runtime: "container".into(),
            desired_active: true,
            desired_image: "img:1".into(),
            observed_state: observed.map_or("missing".into(), |i| i.state.to_string()),
            observed_image: observed.map(|i| i.image.clone()).unwrap_or_default(),
            container_id: observed.map(|i| i.id.clone()).unwrap_or_default(),
            container_name: format!("web-{name}"),
            drift: drift.iter().map(|d| d.to_string()).collect(),
            started_at: 0,
            health: String::new(),
            health_detail: String::new(),
        }
    }

    #[test]
    fn ps_joins_instances_with_their_drift_and_lists_the_missing() {
        let api = instance("web-api", InstanceState::Running);
        let db = instance("web-db", InstanceState::Exited);
        let extra = instance("web-extra", InstanceState::Running);
        let other = instance("zeta", InstanceState::Running);
        let status = StatusReport {
            components: vec![
                component("api", Some(&api), &[]),
                component("db", Some(&db), &["stopped"]),
                component("cache", None, &["missing"]),
            ],
            unmanaged: vec![UnmanagedInstance {
                service: "web".into(),
                component: "extra".into(),
                instance: extra.clone(),
            }],
        };
        let report = PsReport::from_status(
            vec![other.clone(), extra.clone(), db.clone(), api.clone()],
            status,
        );
        let rows: Vec<(&str, Vec<String>)> = report
            .instances
            .iter()
            .map(|e| (e.instance.name.as_str(), e.drift.clone()))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("web-api", vec![]),
                ("web-db", vec!["stopped".to_string()]),
                ("web-extra", vec![UNMANAGED_DRIFT.to_string()]),
                ("zeta", vec![]),
            ]
        );
        let missing: Vec<&str> = report
            .missing
            .iter()
            .map(|c| c.container_name.as_str())
            .collect();
        assert_eq!(missing, ["web-cache"]);
    }

    #[test]
    fn ps_does_not_list_an_absent_component_of_a_stopped_service_as_missing() {
        let status = StatusReport {
            components: vec![component("api", None, &[])],
            unmanaged: Vec::new(),
        };
        let report = PsReport::from_status(Vec::new(), status);
        assert!(report.missing.is_empty());
        assert!(report.instances.is_empty());
    }
}
