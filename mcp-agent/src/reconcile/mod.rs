//! Turning service definitions into running instances, and comparing what
//! the registry wants with what the runtime has.
//!
//! [`Reconciler`] owns the node-side lifecycle: deploy (pull, create, start,
//! replace what changed, leave what did not), stop, start, restart, remove,
//! status and logs. Each operation takes the service's lock, so two deploys
//! of one service never interleave, while different services and the
//! components of one service proceed in parallel.
//!
//! Replacing a changed instance is done so that a failure leaves the old one
//! as it was: the image is pulled first; then the old instance is stopped,
//! the new one created and started as `<name>.mcp-new`, the old one removed
//! and the new one renamed to `<name>`. If the new one cannot be created or
//! started it is removed and the old one started again. A crash in between
//! leaves a `.mcp-new` instance that the next deploy (or agent start)
//! resolves.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcp_runtime::{InstanceInfo, Runtime};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::error::AgentError;
use crate::registry::{
    ComponentRecord, EventCursor, EventFilter, EventPage, Registry, ServiceRecord,
};
use mcp_core::wire::{Action, PullPolicy};

mod adopt;
mod deploy;
pub mod gate;
mod lifecycle;
mod observe;

pub use adopt::Adoption;
pub use deploy::{DeployProgress, ProgressFn, RECOVERED, RECOVERY_FAILED, Recovery};
pub use observe::{
    ComponentStatus, HealthTarget, PsEntry, PsReport, RuntimeChange, StatusReport, UNHEALTHY_DRIFT,
    UNMANAGED_DRIFT, UnmanagedInstance,
};
mod history;

pub mod ownership;

pub mod plan;
pub mod policy;

use crate::files::VmFiles;
use observe::{CHANGES_BUFFER, ObservedCache};
use ownership::Owners;

/// Suffix of a replacement instance while it is created and started, before
/// it takes the component's name.
pub const STAGED_SUFFIX: &str = ".mcp-new";

/// The result of an operation on one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentOutcome {
    /// Component name.
    pub component: String,
    /// What was done.
    pub action: Action,
    /// Id of the instance afterwards, when there is one.
    pub container_id: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

impl ComponentOutcome {
    fn ok(component: &str, action: Action, id: Option<String>) -> Self {
        ComponentOutcome {
            component: component.to_string(),
            action,
            container_id: id,
            error: None,
        }
    }

    fn failed(component: &str, err: &AgentError) -> Self {
        let action = match err {
            AgentError::NotReady {
                rolled_back: true, ..
            } => Action::RolledBack,
            _ => Action::Failed,
        };
        ComponentOutcome {
            component: component.to_string(),
            action,
            container_id: None,
            error: Some(err.to_string()),
        }
    }

    /// Whether the component failed (or was rolled back).
    pub fn is_failure(&self) -> bool {
        self.action.is_failure()
    }
}

/// Per-service locks: operations on one service run one at a time.
#[derive(Default)]
struct ServiceLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ServiceLocks {
    async fn lock(&self, service: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self
                .locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.entry(service.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// Drives one runtime to match the registry. Cheap to share behind an `Arc`.
pub struct Reconciler {
    runtime: Arc<dyn Runtime>,
    registry: Arc<Registry>,
    stop_timeout: Duration,
    locks: ServiceLocks,
    observed: ObservedCache,
    changes: broadcast::Sender<RuntimeChange>,
    vm_files: VmFiles,
    volume_roots: policy::VolumeRoots,
    publish: policy::PublishAddress,
    deploy: crate::config::DeploySettings,
    health: Arc<crate::health::HealthBoard>,
}

/// What converging one component did, and the instance id; or why not.
type Converged = Result<(Action, Option<String>), AgentError>;

fn outcomes(
    comps: &[ComponentRecord],
    results: Vec<Result<(Action, Option<String>), AgentError>>,
) -> Vec<ComponentOutcome> {
    comps
        .iter()
        .zip(results)
        .map(|(c, r)| match r {
            Ok((action, id)) => ComponentOutcome::ok(&c.name, action, id),
            Err(e) => ComponentOutcome::failed(&c.name, &e),
        })
        .collect()
}

impl Reconciler {
    /// A reconciler over `runtime` and `registry`; instances get
    /// `stop_timeout` to stop before they are killed.
    pub fn new(runtime: Arc<dyn Runtime>, registry: Arc<Registry>, stop_timeout: Duration) -> Self {
        Reconciler {
            runtime,
            registry,
            stop_timeout,
            locks: ServiceLocks::default(),
            observed: ObservedCache::default(),
            changes: broadcast::channel(CHANGES_BUFFER).0,
            vm_files: VmFiles::default(),
            volume_roots: policy::VolumeRoots::default(),
            publish: policy::PublishAddress::default(),
            deploy: crate::config::DeploySettings::default(),
            health: Arc::default(),
        }
    }

    /// The health of the components with a check, as the deploy gate and
    /// the monitor's checks found it.
    pub fn health_board(&self) -> &Arc<crate::health::HealthBoard> {
        &self.health
    }

    /// How deploys wait for what they change (`[deploy]`).
    pub fn with_deploy_settings(mut self, deploy: crate::config::DeploySettings) -> Self {
        self.deploy = deploy;
        self
    }

    /// Where the host side of volumes may be (`[security]
    /// allowed_volume_roots`; see [`policy::VolumeRoots`]).
    pub fn with_volume_roots(mut self, roots: Vec<std::path::PathBuf>) -> Self {
        self.volume_roots = policy::VolumeRoots::new(roots);
        self
    }

    /// The address ports without a host address are published on
    /// (`publish_address`; see [`policy::PublishAddress`]).
    pub fn with_publish_address(mut self, address: Option<std::net::IpAddr>) -> Self {
        self.publish = policy::PublishAddress(address);
        self
    }

    /// The instance spec of component `c` of `service` on this node: its
    /// ports on the publish address, a VM's boot files resolved.
    fn spec_for(
        &self,
        service: &str,
        c: &mcp_core::servicedef::ComponentDef,
    ) -> Result<mcp_runtime::InstanceSpec, AgentError> {
        let mut spec = c.instance_spec(service);
        spec.ports = self.publish.ports(&spec.ports);
        self.vm_files.resolve_spec(service, &c.name, spec)
    }

    /// The directories the host side of a volume must lie in; empty for
    /// anywhere.
    pub fn volume_roots(&self) -> &[std::path::PathBuf] {
        self.volume_roots.roots()
    }

    /// Where the files VMs boot from may be (see [`VmFiles`]).
    pub fn with_vm_files(mut self, vm_files: VmFiles) -> Self {
        self.vm_files = vm_files;
        self
    }

    /// The runtime driven.
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    /// The registry kept.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Appends the history of one operation to the registry: a row per
    /// component that changed (its action, or `failed` with the reason) and
    /// one for the service with a summary. A failure to write is logged and
    /// does not fail the operation, which has already happened.
    fn record_events(&self, service: &str, kind: &str, outcomes: &[ComponentOutcome]) {
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for o in outcomes {
            let action = o.action.as_str();
            *counts.entry(action).or_default() += 1;
            if o.action == Action::Unchanged {
                continue;
            }
            let detail = o.error.as_deref().unwrap_or_default();
            if let Err(e) = self
                .registry
                .record_event(service, Some(&o.component), action, detail)
            {
                tracing::warn!(service, component = %o.component, error = %e, "cannot record an event");
            }
        }
        let summary: Vec<String> = counts.iter().map(|(a, n)| format!("{n} {a}")).collect();
        if let Err(e) = self
            .registry
            .record_event(service, None, kind, &summary.join(", "))
        {
            tracing::warn!(service, error = %e, "cannot record an event");
        }
    }

    fn selected(
        &self,
        service: &str,
        component: Option<&str>,
    ) -> Result<(ServiceRecord, Vec<ComponentRecord>), AgentError> {
        let record = self.registry.get_service(service)?.ok_or_else(|| {
            AgentError::NotFound(format!("no service named {service:?} on this node"))
        })?;
        let mut comps = self.registry.components(service)?;
        if let Some(only) = component {
            comps.retain(|c| c.name == only);
            if comps.is_empty() {
                return Err(AgentError::NotFound(format!(
                    "service {service:?} has no component {only:?}"
                )));
            }
        }
        Ok((record, comps))
    }

    /// One page of the registry's event history, oldest first (see
    /// [`Registry::events_page`]), read on a blocking thread: the async
    /// workers never wait for the registry's lock or a query.
    pub async fn events_page(
        &self,
        filter: EventFilter,
        cursor: Option<EventCursor>,
        size: usize,
    ) -> Result<EventPage, AgentError> {
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || registry.events_page(&filter, cursor.as_ref(), size))
            .await
            .map_err(|e| AgentError::Internal(format!("reading events: {e}")))?
            .map_err(AgentError::from)
    }

    /// Deletes events older than `retention`; returns how many.
    pub fn prune_events(&self, retention: Duration) -> Result<usize, AgentError> {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        Ok(self.registry.prune_events(cutoff)?)
    }

    /// The instance of `component` of `service`, when there is one and it is
    /// theirs (see [`ownership`]); an instance of that name that belongs to
    /// another service, or that MCP does not manage, is logged and left
    /// out.
    async fn own_instance(
        &self,
        service: &str,
        component: &str,
    ) -> Result<Option<InstanceInfo>, AgentError> {
        let name = mcp_runtime::instance_name(service, component);
        let Some(inst) = self.runtime.inspect(&name).await? else {
            return Ok(None);
        };
        let owner = self.owners()?.owner(&inst);
        if owner.is(service, component) {
            Ok(Some(inst))
        } else {
            tracing::warn!(instance = %name, owner = %owner.describe(), "leaving alone an instance that is not this component's");
            Ok(None)
        }
    }

    /// Who owns what, as the registry records it (see [`ownership`]).
    fn owners(&self) -> Result<Owners, AgentError> {
        let services = self.registry.list_services()?.into_iter().map(|s| s.name);
        Ok(Owners::new(&self.registry.all_components()?, services))
    }
}
