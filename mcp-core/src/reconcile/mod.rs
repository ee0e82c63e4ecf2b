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

use futures::future::join_all;
use futures::stream::{self, StreamExt};
use mcp_runtime::{
    InstanceInfo, InstanceState, LogChunk, LogOptions, LogStream, Runtime, RuntimeError, labels,
};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::error::AgentError;
use crate::registry::{ComponentRecord, EventFilter, EventRecord, Registry, ServiceRecord};
use crate::servicedef::{ComponentDef, ServiceDef};

mod history;
pub mod ownership;
pub mod plan;

use ownership::{Owner, Owners};

/// What [`Reconciler::adopt`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Adoption {
    /// The service's definition afterwards: what it ran before plus what
    /// was adopted. Deployed unchanged, it changes nothing.
    pub definition: ServiceDef,
    /// Components adopted now.
    pub adopted: Vec<String>,
    /// Components MCP managed already.
    pub already_managed: Vec<String>,
}

/// Environment variables the runtime sets itself, left out of an adopted
/// definition.
const RUNTIME_ENV: &[&str] = &["HOSTNAME", "container", "TERM", "HOME"];

/// A component definition read back from an instance (with `inspect`
/// details).
fn component_from_instance(name: &str, inst: &InstanceInfo) -> ComponentDef {
    let details = inst.details.clone().unwrap_or_default();
    let none_if_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    ComponentDef {
        name: name.to_string(),
        image: inst.image.clone(),
        runtime: inst.runtime,
        cmd: details.cmd,
        env: details
            .env
            .into_iter()
            .filter(|(k, _)| !RUNTIME_ENV.contains(&k.as_str()))
            .collect(),
        ports: inst.ports.clone(),
        volumes: details.volumes,
        network: details
            .networks
            .into_iter()
            .find(|n| !matches!(n.as_str(), "podman" | "bridge" | "host" | "none" | "")),
        user: none_if_empty(&details.user),
        restart: none_if_empty(&details.restart).filter(|r| r != "no"),
        memory: (details.memory_bytes > 0)
            .then(|| crate::servicedef::Memory::from_bytes(details.memory_bytes)),
        vcpus: None,
        routes: Vec::new(),
        ..ComponentDef::default()
    }
}

/// Services a sync deploys at once.
const SYNC_CONCURRENCY: usize = 4;

/// Suffix of a replacement instance while it is created and started, before
/// it takes the component's name.
pub const STAGED_SUFFIX: &str = ".mcp-new";

/// When the agent pulls an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Only when the image is not on the node.
    #[default]
    Missing,
    /// Every deploy, so a moved tag is picked up.
    Always,
}

impl PullPolicy {
    /// The policy as sent on the wire.
    pub fn to_proto(self) -> mcp_proto::v1::PullPolicy {
        match self {
            PullPolicy::Missing => mcp_proto::v1::PullPolicy::Missing,
            PullPolicy::Always => mcp_proto::v1::PullPolicy::Always,
        }
    }

    /// The policy of a request's `pull` field; unknown values mean
    /// [`PullPolicy::Missing`].
    pub fn from_proto(value: i32) -> PullPolicy {
        match mcp_proto::v1::PullPolicy::try_from(value) {
            Ok(mcp_proto::v1::PullPolicy::Always) => PullPolicy::Always,
            _ => PullPolicy::Missing,
        }
    }
}

/// What happened to one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A new instance was created (and started when active).
    Created,
    /// The instance was replaced because its definition changed.
    Updated,
    /// Nothing needed doing.
    Unchanged,
    /// The instance was started.
    Started,
    /// The instance was stopped.
    Stopped,
    /// The instance was restarted.
    Restarted,
    /// The instance was removed.
    Removed,
    /// The operation failed; see the error.
    Failed,
    /// The new version did not become ready and the previous one was put
    /// back; see the error.
    RolledBack,
}

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

impl Action {
    /// The action's name, as events and JSON output spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Unchanged => "unchanged",
            Action::Started => "started",
            Action::Stopped => "stopped",
            Action::Restarted => "restarted",
            Action::Removed => "removed",
            Action::Failed => "failed",
            Action::RolledBack => "rolled-back",
        }
    }
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
        matches!(self.action, Action::Failed | Action::RolledBack)
    }
}

/// One step of a component's deploy, for progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployProgress {
    /// The component.
    pub component: String,
    /// `pulling`, `creating`, `starting`, `waiting`, `ready`, `started`
    /// (not waited for), `rolling-back` or `skipped`.
    pub phase: &'static str,
    /// For `waiting`, the last probe's result; otherwise a short note.
    pub detail: String,
}

/// Where a deploy reports its progress.
pub type ProgressFn = dyn Fn(DeployProgress) + Send + Sync;

/// How one deploy waits for what it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeployOptions {
    /// How long to wait for changed components to be ready; `None` for the
    /// agent's `[deploy] timeout`.
    pub timeout: Option<Duration>,
    /// Do not wait at all: a component counts as deployed once its new
    /// instance is started (fire and forget; the monitor watches it from
    /// then on, and nothing is rolled back).
    pub no_wait: bool,
}

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
    /// to (see [`ownership`]).
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
    pub check: crate::servicedef::HealthCheck,
    /// The ports its definition publishes (tcp and http checks probe the
    /// host side of theirs).
    pub ports: Vec<mcp_runtime::PortMapping>,
    /// Its running instance.
    pub instance: InstanceInfo,
}

/// What [`Reconciler::recover`] did, per (service, component).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Leftovers resolved (and started when their service is active).
    pub resolved: Vec<(String, String)>,
    /// Those that could not be: to try again later.
    pub failed: Vec<(String, String)>,
}

/// Event kind of a leftover of an interrupted deploy that could not be
/// resolved or started.
pub const RECOVERY_FAILED: &str = "recovery-failed";
/// Event kind of a leftover resolved on a later try.
pub const RECOVERED: &str = "recovered";

/// Drift kind of a running component whose health checks failed `retries`
/// times in a row.
pub const UNHEALTHY_DRIFT: &str = "unhealthy";

/// Drift kind of an instance named `<service>-<name>` that MCP does not
/// manage.
pub const UNMANAGED_DRIFT: &str = "unmanaged";

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

/// The last full listing of the runtime, valid only while the runtime's
/// event stream is connected: every event (and every change the reconciler
/// makes) drops it, so a listing is reused only while nothing has changed.
#[derive(Default)]
struct ObservedCache {
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

    fn invalidate(&self) {
        let mut s = self.state();
        s.generation += 1;
        s.instances = None;
    }

    fn set_live(&self, live: bool) {
        let mut s = self.state();
        s.live = live;
        s.generation += 1;
        s.instances = None;
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
    deploy: crate::config::DeploySettings,
    health: Arc<crate::health::HealthBoard>,
}

/// What converging one component did, and the instance id; or why not.
type Converged = Result<(Action, Option<String>), AgentError>;

/// What a new instance of a component must pass during a deploy.
struct Gate<'a> {
    service: &'a str,
    def: &'a ComponentDef,
    spec: &'a mcp_runtime::InstanceSpec,
    /// How long it may take to be ready; `None`: not waited for.
    wait: Option<Duration>,
    progress: &'a (dyn Fn(&'static str, String) + Send + Sync),
}

/// Where the files a unikernel component names (its disk image, kernel,
/// initrd) may be: a relative path is a regular file in the service's own
/// directory `<srv_root>/<service>/` (resolved beneath it, never through a
/// symlink); an absolute path must lie in one of `images_dirs`
/// (`[unikernel] images_dirs`), and is refused otherwise.
#[derive(Debug, Clone, Default)]
pub struct VmFiles {
    /// Root of the service directories.
    pub srv_root: std::path::PathBuf,
    /// Directories absolute paths may point into.
    pub images_dirs: Vec<std::path::PathBuf>,
}

impl VmFiles {
    /// The host path of `path`, which the definition of `service`'s
    /// `component` gives as its `what` (`image`, `kernel`, `initrd`).
    pub fn resolve(
        &self,
        service: &str,
        component: &str,
        what: &str,
        path: &str,
    ) -> Result<String, AgentError> {
        let bad = |why: String| {
            AgentError::InvalidArgument(format!("{service}/{component}: {what} {path:?}: {why}"))
        };
        let p = std::path::Path::new(path);
        if p.is_absolute() {
            let real = p
                .canonicalize()
                .map_err(|e| bad(format!("cannot be read: {e}")))?;
            let allowed = self
                .images_dirs
                .iter()
                .any(|d| d.canonicalize().is_ok_and(|d| real.starts_with(&d)));
            if !allowed {
                return Err(bad(if self.images_dirs.is_empty() {
                    "an absolute path must be in one of [unikernel] images_dirs, and none is configured; or push the file to the service's directory and name it relatively".into()
                } else {
                    format!(
                        "not in one of [unikernel] images_dirs ({})",
                        self.images_dirs
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }));
            }
            if !real.is_file() {
                return Err(bad("is not a regular file".into()));
            }
            return Ok(path.to_string());
        }
        let rel = crate::files::RemotePath::parse(path).map_err(|e| bad(e.to_string()))?;
        let tree = crate::files::ServiceTree::open(&self.srv_root, service)
            .map_err(|e| bad(e.to_string()))?;
        let meta = tree.stat(&rel).map_err(|e| bad(e.to_string()))?;
        if meta.kind != crate::files::FileKind::File {
            return Err(bad(format!(
                "is a {} in the service's directory, not a regular file",
                meta.kind
            )));
        }
        Ok(self.host_path(service, path))
    }

    /// The host path the runtime is given for `path` as a definition of
    /// `service` names it (no checks: see [`VmFiles::resolve`]).
    pub fn host_path(&self, service: &str, path: &str) -> String {
        // Empty: a VM booting a kernel without a disk.
        if path.is_empty() || std::path::Path::new(path).is_absolute() {
            return path.to_string();
        }
        match crate::files::RemotePath::parse(path) {
            Ok(rel) => self
                .srv_root
                .join(service)
                .join(rel.as_str())
                .display()
                .to_string(),
            Err(_) => path.to_string(),
        }
    }

    /// `spec` with the files of a VM resolved (a container's is returned as
    /// it is).
    pub fn resolve_spec(
        &self,
        service: &str,
        component: &str,
        mut spec: mcp_runtime::InstanceSpec,
    ) -> Result<mcp_runtime::InstanceSpec, AgentError> {
        if spec.runtime != mcp_runtime::RuntimeKind::Unikernel {
            return Ok(spec);
        }
        if !spec.image.is_empty() {
            spec.image = self.resolve(service, component, "image", &spec.image)?;
        }
        if let Some(k) = spec.kernel.as_mut() {
            k.kernel = self.resolve(service, component, "kernel", &k.kernel)?;
            if let Some(initrd) = k.initrd.as_mut() {
                *initrd = self.resolve(service, component, "initrd", initrd)?;
            }
        }
        Ok(spec)
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
    },
    /// The stream was lost; it is being reconnected.
    Lost,
}

/// Changes kept for a receiver that falls behind (it then learns that it
/// lagged, and must assume anything changed).
const CHANGES_BUFFER: usize = 1024;

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

    /// Where the files VMs boot from may be (see [`VmFiles`]).
    pub fn with_vm_files(mut self, vm_files: VmFiles) -> Self {
        self.vm_files = vm_files;
        self
    }

    /// Every instance on the node, from the cached listing when the event
    /// stream vouches that nothing changed since it was taken.
    async fn observed(&self) -> Result<Arc<Vec<InstanceInfo>>, AgentError> {
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

    /// The runtime driven.
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    /// The registry kept.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Deploys a service definition: pulls images, creates what is new,
    /// replaces what changed, leaves what did not, and removes components the
    /// definition no longer has. With `only`, touches that component alone.
    ///
    /// A component that fails keeps its previous instance and registry record.
    pub async fn deploy(
        &self,
        def: &ServiceDef,
        only: Option<&str>,
        pull: PullPolicy,
    ) -> Result<Vec<ComponentOutcome>, AgentError> {
        self.deploy_with(def, only, pull, DeployOptions::default(), &|_| {})
            .await
    }

    /// [`deploy`](Self::deploy), reporting progress and with `options`.
    ///
    /// Components start in dependency order (`depends_on`), those of one
    /// wave at once; a component whose dependency failed is not deployed.
    /// Every created or replaced instance must become ready (running, and
    /// healthy when it has a health check) within the deploy timeout. A
    /// replaced component that does not is put back: with host ports its
    /// old instance was stopped and starts again; without, the old
    /// instance was never stopped (the new one ran beside it).
    pub async fn deploy_with(
        &self,
        def: &ServiceDef,
        only: Option<&str>,
        pull: PullPolicy,
        options: DeployOptions,
        progress: &ProgressFn,
    ) -> Result<Vec<ComponentOutcome>, AgentError> {
        if let Some(name) = only
            && !def.components.iter().any(|c| c.name == name)
        {
            return Err(AgentError::NotFound(format!(
                "service {:?} has no component {name:?}",
                def.name
            )));
        }
        let _guard = self.locks.lock(&def.name).await;
        self.runtime.ping().await?;
        let previous_service = self.registry.get_service(&def.name)?;
        let previous: BTreeMap<String, ComponentRecord> = self
            .registry
            .components(&def.name)?
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        let targets: Vec<&ComponentDef> = def
            .components
            .iter()
            .filter(|c| only.is_none_or(|o| o == c.name))
            .collect();
        let dropped: Vec<&ComponentRecord> = if only.is_none() {
            previous
                .values()
                .filter(|p| !def.components.iter().any(|c| c.name == p.name))
                .collect()
        } else {
            Vec::new()
        };

        // What can be known before anything changes is checked for every
        // component first: a refusal leaves the whole service as it was.
        let specs = self.preflight(def, &targets).await?;

        // Record the intent first, so a crash mid-way leaves the registry
        // naming what the operator asked for.
        let service = ServiceRecord::from_def(def);
        let intent: Vec<ComponentRecord> = targets
            .iter()
            .map(|c| ComponentRecord {
                container_id: previous.get(&c.name).and_then(|p| p.container_id.clone()),
                ..ComponentRecord::from_def(&def.name, c)
            })
            .collect();
        self.registry.record_deploy(&service, &intent, &[])?;

        let wait = (!options.no_wait).then(|| options.timeout.unwrap_or(self.deploy.timeout));
        let planned: Vec<(&ComponentDef, mcp_runtime::InstanceSpec)> =
            targets.iter().copied().zip(specs).collect();
        let converged = self
            .converge_in_order(def, &planned, &previous, pull, wait, progress)
            .await;
        let removed = join_all(
            dropped
                .iter()
                .map(|p| self.remove_instance(&def.name, &p.name)),
        )
        .await;

        // Settle the registry: successes keep their new record, failures get
        // their previous record back (or none, when they are new).
        let mut settled = Vec::new();
        let mut forget = Vec::new();
        let mut outcomes = Vec::new();
        for (component, result) in converged {
            match result {
                Ok((action, id)) => {
                    settled.push(ComponentRecord {
                        container_id: id.clone(),
                        ..ComponentRecord::from_def(&def.name, component)
                    });
                    outcomes.push(ComponentOutcome::ok(&component.name, action, id));
                }
                Err(err) => {
                    tracing::warn!(service = %def.name, component = %component.name, error = %err, "deploy failed");
                    if let AgentError::NotReady {
                        rolled_back: true, ..
                    } = &err
                    {
                        tracing::warn!(service = %def.name, component = %component.name, "rolled back to the previous version");
                    }
                    match previous.get(&component.name) {
                        Some(p) => settled.push(p.clone()),
                        None => forget.push(component.name.clone()),
                    }
                    outcomes.push(ComponentOutcome::failed(&component.name, &err));
                }
            }
        }
        for (record, result) in dropped.iter().zip(removed) {
            match result {
                Ok(()) => {
                    forget.push(record.name.clone());
                    outcomes.push(ComponentOutcome::ok(&record.name, Action::Removed, None));
                }
                Err(err) => outcomes.push(ComponentOutcome::failed(&record.name, &err)),
            }
        }
        let all_failed = !outcomes.is_empty() && outcomes.iter().all(ComponentOutcome::is_failure);
        if all_failed && previous_service.is_none() {
            self.registry.delete_service(&def.name)?;
        } else {
            let service = match (&previous_service, all_failed) {
                (Some(prev), true) => prev.clone(),
                _ => service,
            };
            self.registry.record_deploy(&service, &settled, &forget)?;
        }

        // The revision history: what was created, replaced or failed.
        self.record_revisions(&def.name, &targets, &outcomes);

        self.observed.invalidate();
        self.record_events(&def.name, "deployed", &outcomes);
        Ok(outcomes)
    }

    /// Checks, before anything changes, what would make the node refuse any
    /// of `targets` for a reason it can know now: a unikernel on a node
    /// without QEMU, the files a VM boots from (missing, or where they may
    /// not be), an instance name another service's component also has, a
    /// host port an active service's component already publishes, an
    /// instance of the name that belongs to another service or that MCP
    /// does not manage. Returns each target's instance spec, its VM files
    /// resolved.
    async fn preflight(
        &self,
        def: &ServiceDef,
        targets: &[&ComponentDef],
    ) -> Result<Vec<mcp_runtime::InstanceSpec>, AgentError> {
        if let Some(c) = targets
            .iter()
            .find(|c| c.runtime == mcp_runtime::RuntimeKind::Unikernel)
            && self.runtime.vm_support().await.is_none()
        {
            return Err(AgentError::Conflict(format!(
                "{}/{}: this node cannot run unikernels: the agent found no QEMU at start ([unikernel] qemu)",
                def.name, c.name
            )));
        }
        let specs = targets
            .iter()
            .map(|c| {
                self.vm_files
                    .resolve_spec(&def.name, &c.name, c.instance_spec(&def.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let owners = self.owners()?;
        for c in targets {
            if let Some((service, component)) = owners.name_taken_by(&def.name, &c.name) {
                return Err(AgentError::Conflict(ownership::shared_name(
                    &def.name, &c.name, service, component,
                )));
            }
        }
        self.check_host_ports(def, targets)?;
        let found = join_all(specs.iter().map(|s| self.runtime.inspect(&s.name))).await;
        for ((c, spec), inst) in targets.iter().zip(&specs).zip(found) {
            if let Some(inst) = inst?
                && let Some(why) =
                    ownership::refusal(&owners.owner(&inst), &def.name, &c.name, &spec.name)
            {
                return Err(AgentError::Conflict(why));
            }
        }
        Ok(specs)
    }

    /// Refuses a component of `targets` that publishes a host port a
    /// component of another active service already publishes (the same
    /// port and protocol on an overlapping host address): one of the two
    /// could never start.
    fn check_host_ports(
        &self,
        def: &ServiceDef,
        targets: &[&ComponentDef],
    ) -> Result<(), AgentError> {
        let others: Vec<(ServiceRecord, Vec<ComponentRecord>)> = self
            .registry
            .list_services()?
            .into_iter()
            .filter(|s| s.active && s.name != def.name)
            .map(|s| {
                let comps = self.registry.components(&s.name)?;
                Ok((s, comps))
            })
            .collect::<Result<_, AgentError>>()?;
        for c in targets {
            for port in &c.ports {
                let taken = others.iter().find_map(|(s, comps)| {
                    comps.iter().find_map(|o| {
                        o.definition
                            .ports
                            .iter()
                            .any(|p| {
                                p.host_port == port.host_port
                                    && p.protocol == port.protocol
                                    && crate::servicedef::host_ips_overlap(
                                        &p.host_ip,
                                        &port.host_ip,
                                    )
                            })
                            .then_some((s.name.as_str(), o.name.as_str()))
                    })
                });
                if let Some((service, component)) = taken {
                    let host = match port.host_ip.as_str() {
                        "" => port.host_port.to_string(),
                        ip if ip.contains(':') => format!("[{ip}]:{}", port.host_port),
                        ip => format!("{ip}:{}", port.host_port),
                    };
                    return Err(AgentError::Conflict(format!(
                        "{}/{}: host port {host}/{} is already published by component {component:?} of service {service:?}",
                        def.name, c.name, port.protocol
                    )));
                }
            }
        }
        Ok(())
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

    /// Converges the `planned` components (each with its instance spec)
    /// wave by wave in dependency order (the components of a wave at once).
    /// A component whose dependency (directly or not) failed is not
    /// touched: it fails with the reason. Returns each component with its
    /// result, in the order they were handled.
    async fn converge_in_order<'d>(
        &self,
        def: &'d ServiceDef,
        planned: &[(&'d ComponentDef, mcp_runtime::InstanceSpec)],
        previous: &BTreeMap<String, ComponentRecord>,
        pull: PullPolicy,
        wait: Option<Duration>,
        progress: &ProgressFn,
    ) -> Vec<(&'d ComponentDef, Converged)> {
        let mut done: Vec<(&ComponentDef, Converged)> = Vec::new();
        let mut failed: Vec<String> = Vec::new();
        for wave in def.start_order() {
            let wave: Vec<&(&ComponentDef, mcp_runtime::InstanceSpec)> = wave
                .into_iter()
                .filter_map(|c| planned.iter().find(|(t, _)| t.name == c.name))
                .collect();
            let mut runnable = Vec::new();
            for planned @ (c, _) in wave {
                let c = *c;
                // A component that needs no change is left to converge
                // (unchanged, or started) whatever its dependencies did.
                let unchanged = previous
                    .get(&c.name)
                    .is_some_and(|p| p.spec_hash == c.spec_hash());
                match c.depends_on.iter().find(|d| failed.contains(d)) {
                    Some(dep) if !unchanged => {
                        progress(DeployProgress {
                            component: c.name.clone(),
                            phase: "skipped",
                            detail: format!("{dep} failed"),
                        });
                        failed.push(c.name.clone());
                        done.push((
                            c,
                            Err(AgentError::Conflict(format!(
                                "not deployed: it depends on {dep}, which failed"
                            ))),
                        ));
                    }
                    _ => runnable.push(planned),
                }
            }
            let results = join_all(runnable.iter().map(|(c, spec)| {
                self.converge(
                    &def.name,
                    c,
                    spec.clone(),
                    previous.get(&c.name),
                    def.active,
                    pull,
                    wait,
                    progress,
                )
            }))
            .await;
            for ((c, _), result) in runnable.into_iter().zip(results) {
                let c = *c;
                if result.is_err() {
                    failed.push(c.name.clone());
                }
                done.push((c, result));
            }
        }
        done
    }

    /// Makes one component's instance match `def` (whose instance `spec`
    /// has its VM files resolved); returns what was done and the instance
    /// id. A created or replaced instance must become ready within `wait`
    /// (not waited for when `None`; see [`deploy_with`](Self::deploy_with)).
    /// An instance of its name that is not the component's own is never
    /// touched.
    #[allow(clippy::too_many_arguments)]
    async fn converge(
        &self,
        service: &str,
        def: &ComponentDef,
        spec: mcp_runtime::InstanceSpec,
        recorded: Option<&ComponentRecord>,
        active: bool,
        pull: PullPolicy,
        wait: Option<Duration>,
        progress: &ProgressFn,
    ) -> Result<(Action, Option<String>), AgentError> {
        let step = |phase: &'static str, detail: String| {
            progress(DeployProgress {
                component: def.name.clone(),
                phase,
                detail,
            })
        };
        let name = spec.name.clone();
        // Both looked up at once; a leftover of an interrupted deploy (rare)
        // is resolved first and the instance looked up again.
        let staged = format!("{name}{STAGED_SUFFIX}");
        let (leftover, current) =
            tokio::join!(self.runtime.inspect(&staged), self.runtime.inspect(&name));
        let leftover = match leftover {
            // Half created by an agent killed mid-deploy: podman names a
            // container its storage no longer knows (see `create_staged`).
            Err(RuntimeError::Api { status: 500, .. }) => {
                tracing::info!(instance = %staged, "removing a half-created instance left by an interrupted deploy");
                match self.runtime.remove(&staged, true).await {
                    Ok(()) | Err(RuntimeError::NotFound(_)) => None,
                    Err(e) => return Err(e.into()),
                }
            }
            other => other?,
        };
        let current = if leftover.is_some() {
            self.resolve_leftover(service, &def.name).await?;
            self.runtime.inspect(&name).await?
        } else {
            current?
        };
        if let Some(cur) = &current
            && let Some(why) =
                ownership::refusal(&self.owners()?.owner(cur), service, &def.name, &name)
        {
            return Err(AgentError::Conflict(why));
        }
        let hash = def.spec_hash();
        // An adopted instance carries no labels: the registry vouches for it
        // by id, with the hash of the definition recorded at adoption.
        let adopted = |cur: &InstanceInfo| {
            !cur.is_managed()
                && recorded.is_some_and(|r| r.container_id.as_deref() == Some(cur.id.as_str()))
        };
        let current_hash = |cur: &InstanceInfo| -> Option<String> {
            if adopted(cur) {
                recorded.map(|r| r.spec_hash.clone())
            } else {
                cur.label(labels::SPEC_HASH).map(str::to_string)
            }
        };
        let gate = Gate {
            service,
            def,
            spec: &spec,
            wait,
            progress: &step,
        };
        match current {
            Some(cur) if current_hash(&cur).as_deref() == Some(hash.as_str()) => {
                let running = cur.state == InstanceState::Running;
                if active && !running {
                    step("starting", String::new());
                    self.runtime.start(&name).await?;
                    Ok((Action::Started, Some(cur.id)))
                } else if !active && running {
                    self.runtime.stop(&name, self.stop_timeout).await?;
                    Ok((Action::Stopped, Some(cur.id)))
                } else {
                    Ok((Action::Unchanged, Some(cur.id)))
                }
            }
            Some(cur) => {
                self.ensure_image(&spec.image, pull, &step).await?;
                let id = self.replace(&cur, &gate, active).await?;
                Ok((Action::Updated, Some(id)))
            }
            // An inactive service gets no instances: its definition is
            // recorded, and its start makes them.
            None if !active => Ok((Action::Unchanged, None)),
            None => {
                self.ensure_image(&spec.image, pull, &step).await?;
                step("creating", String::new());
                let id = self.runtime.create(&spec).await?;
                if active {
                    step("starting", String::new());
                    let started = match self.runtime.start(&id).await {
                        Ok(()) => self.wait_ready(&id, &gate).await,
                        Err(err) => Err(err.into()),
                    };
                    if let Err(err) = started {
                        self.discard(&id).await;
                        return Err(err);
                    }
                }
                Ok((Action::Created, Some(id)))
            }
        }
    }

    /// Waits until the instance `id` is ready for `gate`'s component
    /// (at once when the deploy does not wait).
    async fn wait_ready(&self, id: &str, gate: &Gate<'_>) -> Result<(), AgentError> {
        let step = gate.progress;
        let Some(timeout) = gate.wait else {
            step("started", "not waiting for it to be ready".into());
            return Ok(());
        };
        // Subscribed before the gate's first look: whatever happens from
        // now on wakes it, and what happened before, that look sees.
        let wakeups = crate::health::Wakeups::from_changes(
            self.subscribe_changes(),
            self.observed.state().live,
        );
        let report = |p: crate::health::GateProgress| match p {
            crate::health::GateProgress::Probing { attempt, last } => step(
                "waiting",
                match last {
                    Some(last) => format!("check {attempt}: {last}"),
                    None => format!("check {attempt}"),
                },
            ),
            crate::health::GateProgress::StartPeriod { remaining } => step(
                "waiting",
                format!("start period, {}s left", remaining.as_secs()),
            ),
        };
        match crate::health::wait_ready(
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
                        crate::health::ComponentHealth {
                            instance: id.to_string(),
                            state: crate::health::HealthState::Healthy,
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

    async fn ensure_image(
        &self,
        image: &str,
        pull: PullPolicy,
        step: &(dyn Fn(&'static str, String) + Send + Sync),
    ) -> Result<(), AgentError> {
        if image.is_empty() {
            // A VM booting a kernel without a disk.
            return Ok(());
        }
        if pull == PullPolicy::Always || !self.runtime.image_exists(image).await? {
            step("pulling", image.to_string());
            self.runtime.pull(image).await?;
        }
        Ok(())
    }

    /// Replaces `old` with a new instance from the gate's spec, which must
    /// become ready before `old` is removed. The replacement is staged as
    /// `<name>.mcp-new` and takes the name once the old one is gone; `old`
    /// is addressed by id throughout, so a failure can always put it back.
    /// (Renaming the old, just-stopped instance instead races with podman's
    /// exit clean-up, which can write the old name back.)
    ///
    /// An instance that publishes host ports is stopped before its
    /// replacement starts (the two cannot hold the same port): the
    /// component is down from that stop until the replacement runs, or,
    /// when it fails, until the old one is started again. One without host
    /// ports keeps running beside its replacement until that is ready.
    async fn replace(
        &self,
        old: &InstanceInfo,
        gate: &Gate<'_>,
        active: bool,
    ) -> Result<String, AgentError> {
        let spec = gate.spec;
        let step = gate.progress;
        let name = &spec.name;
        let staged = mcp_runtime::InstanceSpec {
            name: format!("{name}{STAGED_SUFFIX}"),
            ..spec.clone()
        };
        let was_running = old.state == InstanceState::Running;
        let stop_first = !spec.ports.is_empty() || !active;
        if stop_first {
            self.runtime.stop(&old.id, self.stop_timeout).await?;
        }
        let attempt = async {
            step("creating", String::new());
            let id = self.create_staged(gate, &staged).await?;
            if active {
                step("starting", String::new());
                let started = match self.runtime.start(&id).await {
                    Ok(()) => self.wait_ready(&id, gate).await,
                    Err(err) => Err(err.into()),
                };
                if let Err(err) = started {
                    self.discard(&id).await;
                    return Err(err);
                }
            }
            Ok(id)
        }
        .await;
        let new_id = match attempt {
            Ok(id) => id,
            Err(err) => {
                if stop_first {
                    step(
                        "rolling-back",
                        "starting the previous instance again".into(),
                    );
                    self.restart_old(old, was_running).await;
                }
                return Err(match err {
                    AgentError::NotReady { reason, .. } => AgentError::NotReady {
                        reason,
                        rolled_back: true,
                    },
                    other => other,
                });
            }
        };
        if !stop_first && let Err(err) = self.runtime.stop(&old.id, self.stop_timeout).await {
            self.discard(&new_id).await;
            return Err(err.into());
        }
        if let Err(err) = self.runtime.remove(&old.id, true).await {
            self.discard(&new_id).await;
            self.restart_old(old, was_running).await;
            return Err(err.into());
        }
        // Should this fail, the staged instance keeps running and the next
        // deploy or agent start gives it the name (`resolve_leftover`).
        self.runtime.rename(&new_id, name).await?;
        Ok(new_id)
    }

    /// Creates the staged replacement `<name>.mcp-new` of `gate`'s
    /// component. The deploy resolved any leftover of that name before it
    /// began, but a create sent by an agent killed mid-deploy can still be
    /// finishing in the runtime and take the name meanwhile: such a leftover
    /// of the component's own (of whatever version) is removed and the
    /// create tried once more. So is one the runtime cannot even inspect
    /// (podman, finishing such a create after its storage was freed, can
    /// name a container its storage no longer knows).
    async fn create_staged(
        &self,
        gate: &Gate<'_>,
        staged: &mcp_runtime::InstanceSpec,
    ) -> Result<String, AgentError> {
        let reason = match self.runtime.create(staged).await {
            Err(RuntimeError::Conflict(reason)) => reason,
            other => return Ok(other?),
        };
        let holder = match self.runtime.inspect(&staged.name).await {
            // Only this component's own: another service's staged instance
            // of the same name is never removed.
            Ok(Some(leftover)) => {
                if !self
                    .owners()?
                    .owner(&leftover)
                    .is(gate.service, &gate.def.name)
                {
                    return Err(RuntimeError::Conflict(reason).into());
                }
                leftover.id
            }
            Ok(None) => return Err(RuntimeError::Conflict(reason).into()),
            Err(RuntimeError::Api { status: 500, .. }) => staged.name.clone(),
            Err(e) => return Err(e.into()),
        };
        tracing::info!(instance = %staged.name, "removing instance left by an interrupted deploy");
        match self.runtime.remove(&holder, true).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(self.runtime.create(staged).await?)
    }

    /// Starts the instance a failed replacement stopped, if it was running.
    async fn restart_old(&self, old: &InstanceInfo, was_running: bool) {
        if was_running && let Err(err) = self.runtime.start(&old.id).await {
            tracing::error!(instance = %old.name, error = %err, "could not restart the previous instance");
        }
    }

    /// Removes an instance this reconciler created (by id), logging (not
    /// returning) errors.
    async fn discard(&self, id: &str) {
        match self.runtime.remove(id, true).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(err) => {
                tracing::warn!(instance = %id, error = %err, "could not remove failed instance")
            }
        }
    }

    /// Resolves the `<name>.mcp-new` instance of `component` of `service`
    /// left by an interrupted replace: removed while `<name>` still exists
    /// (the replacement did not finish; the next deploy redoes it), given
    /// the name otherwise (the old one was already removed). A staged
    /// instance that is not the component's own is left alone.
    async fn resolve_leftover(&self, service: &str, component: &str) -> Result<(), AgentError> {
        let name = mcp_runtime::instance_name(service, component);
        let staged = format!("{name}{STAGED_SUFFIX}");
        let Some(leftover) = self.runtime.inspect(&staged).await? else {
            return Ok(());
        };
        if !self.owners()?.owner(&leftover).is(service, component) {
            tracing::warn!(instance = %staged, "not resolving a staged instance that belongs to another service");
            return Ok(());
        }
        if self.runtime.inspect(&name).await?.is_some() {
            tracing::info!(instance = %staged, "removing instance left by an interrupted deploy");
            self.runtime.remove(&leftover.id, true).await?;
        } else {
            tracing::info!(instance = %staged, "completing a deploy interrupted before the rename");
            self.runtime.rename(&leftover.id, &name).await?;
        }
        Ok(())
    }

    /// Resolves every leftover of interrupted deploys on the node and starts
    /// the resulting instances whose service is active. Run at agent start
    /// and whenever the runtime comes back. One that fails (a port taken
    /// meanwhile, say) does not stop the others: each failure is recorded as
    /// a `recovery-failed` event and returned, for
    /// [`Reconciler::recover_components`] to try again later.
    pub async fn recover(&self) -> Result<Recovery, AgentError> {
        let mut found = Vec::new();
        for inst in self.runtime.list().await? {
            let Some(base) = inst.name.strip_suffix(STAGED_SUFFIX) else {
                continue;
            };
            let (Some(service), Some(component)) =
                (inst.label(labels::SERVICE), inst.label(labels::COMPONENT))
            else {
                continue;
            };
            // Only MCP's, named as MCP names them, and only this agent's
            // services: another agent sharing the runtime's storage may be
            // mid-deploy of its own.
            if !inst.is_managed()
                || base != mcp_runtime::instance_name(service, component)
                || self.registry.get_service(service)?.is_none()
            {
                continue;
            }
            found.push((service.to_string(), component.to_string()));
        }
        Ok(self.recover_components(&found, false).await)
    }

    /// Resolves the leftovers of `components` ((service, component) pairs)
    /// and starts their instances when the service is active, each on its
    /// own: a failure is recorded as a `recovery-failed` event and returned.
    /// `retry` says that these failed before: a success is then recorded as
    /// a `recovered` event.
    pub async fn recover_components(
        &self,
        components: &[(String, String)],
        retry: bool,
    ) -> Recovery {
        let mut out = Recovery::default();
        for (service, component) in components {
            let result = async {
                let _guard = self.locks.lock(service).await;
                self.resolve_leftover(service, component).await?;
                // Either instance may have been left stopped mid-replace.
                let active = self
                    .registry
                    .get_service(service)?
                    .is_some_and(|s| s.active);
                let name = mcp_runtime::instance_name(service, component);
                if active
                    && let Some(inst) = self.runtime.inspect(&name).await?
                    && self.owners()?.owner(&inst).is(service, component)
                {
                    self.runtime.start(&inst.id).await?;
                }
                Ok::<(), AgentError>(())
            }
            .await;
            let (kind, detail) = match result {
                Ok(()) => {
                    out.resolved.push((service.clone(), component.clone()));
                    if !retry {
                        continue;
                    }
                    tracing::info!(
                        service,
                        component,
                        "recovered an instance left by an interrupted deploy"
                    );
                    (
                        RECOVERED,
                        "started the instance left by an interrupted deploy".to_string(),
                    )
                }
                Err(e) => {
                    tracing::warn!(service, component, error = %e, "could not recover an instance left by an interrupted deploy; trying again later");
                    out.failed.push((service.clone(), component.clone()));
                    (
                        RECOVERY_FAILED,
                        format!(
                            "could not start the instance left by an interrupted deploy: {e}; trying again later"
                        ),
                    )
                }
            };
            if let Err(e) = self
                .registry
                .record_event(service, Some(component), kind, &detail)
            {
                tracing::warn!(service, error = %e, "cannot record an event");
            }
        }
        self.observed.invalidate();
        out
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

    /// Stops a service's instances (or one component's) and, for the whole
    /// service, marks it inactive.
    pub async fn stop(
        &self,
        service: &str,
        component: Option<&str>,
    ) -> Result<Vec<ComponentOutcome>, AgentError> {
        let _guard = self.locks.lock(service).await;
        let (_, comps) = self.selected(service, component)?;
        self.runtime.ping().await?;
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
        let _guard = self.locks.lock(service).await;
        let (_, comps) = self.selected(service, component)?;
        self.runtime.ping().await?;
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
        let _guard = self.locks.lock(service).await;
        let (record, comps) = self.selected(service, component)?;
        if !record.active {
            return Err(AgentError::Conflict(format!(
                "service {service:?} is stopped (active = false); start it instead"
            )));
        }
        self.runtime.ping().await?;
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
        let _guard = self.locks.lock(service).await;
        let (_, comps) = self.selected(service, None)?;
        self.runtime.ping().await?;
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

    /// Plans converging the node to exactly the services in `desired`
    /// (services outside it are removed only with `prune`) and, unless
    /// `dry_run`, carries the plan out: removals first, then a deploy of
    /// each service that is not unchanged, a few at a time. Returns the plan
    /// and, per service acted on, what was done.
    pub async fn sync(
        &self,
        desired: &[ServiceDef],
        prune: bool,
        dry_run: bool,
        pull: PullPolicy,
    ) -> Result<(plan::Plan, Vec<(String, Vec<ComponentOutcome>)>), AgentError> {
        let mut seen = std::collections::HashSet::new();
        for def in desired {
            if !seen.insert(def.name.as_str()) {
                return Err(AgentError::InvalidArgument(format!(
                    "service {:?} is in the set twice",
                    def.name
                )));
            }
        }
        if let Some(((i, a), (j, b))) = crate::servicedef::shared_instance_name(desired) {
            return Err(AgentError::InvalidArgument(
                crate::servicedef::shared_instance_name_message(
                    (&desired[j].name, b),
                    (&desired[i].name, a),
                ),
            ));
        }
        let mut recorded = Vec::new();
        for service in self.registry.list_services()? {
            let components = self.registry.components(&service.name)?;
            recorded.push((service, components));
        }
        let observed = self.runtime.list().await?;
        let plan = plan::plan(desired, &recorded, &observed, prune);
        if dry_run {
            return Ok((plan, Vec::new()));
        }
        let mut done = Vec::new();
        for s in plan
            .services
            .iter()
            .filter(|s| s.action == plan::ServiceAction::Remove)
        {
            let outcomes = match self.remove(&s.service).await {
                Ok(o) => o,
                Err(e) => vec![ComponentOutcome::failed("-", &e)],
            };
            done.push((s.service.clone(), outcomes));
        }
        let to_deploy: Vec<&ServiceDef> = desired
            .iter()
            .filter(|d| {
                plan.services
                    .iter()
                    .any(|s| s.service == d.name && s.action != plan::ServiceAction::Unchanged)
            })
            .collect();
        let deploys: Vec<_> = to_deploy
            .into_iter()
            .map(|def| self.deploy_named(def, pull))
            .collect();
        let mut deployed: Vec<(String, Vec<ComponentOutcome>)> = stream::iter(deploys)
            .buffer_unordered(SYNC_CONCURRENCY)
            .collect()
            .await;
        deployed.sort_by(|a, b| a.0.cmp(&b.0));
        done.extend(deployed);
        Ok((plan, done))
    }

    /// Takes containers named `<service>-*` that MCP does not manage yet
    /// into the registry, as they are: nothing is stopped, restarted or
    /// relabelled. Each becomes a component whose definition is read back
    /// from the runtime (image, cmd, env, ports, volumes, network, user,
    /// restart, memory), recorded with the instance's id, so deploying the
    /// returned definition unchanged changes nothing. Components already
    /// managed are listed, not touched.
    pub async fn adopt(&self, service: &str) -> Result<Adoption, AgentError> {
        let _guard = self.locks.lock(service).await;
        self.runtime.ping().await?;
        let recorded_service = self.registry.get_service(service)?;
        let recorded: BTreeMap<String, ComponentRecord> = self
            .registry
            .components(service)?
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        let prefix = format!("{service}-");
        let mut adopted = Vec::new();
        let mut already = Vec::new();
        let mut records = Vec::new();
        let mut any_running = false;
        // Whose each instance is, counting this service as registered: an
        // instance another registered service's labels, records or name
        // claim is never taken (`ux-hand-app` is `ux-hand`'s, not `ux`'s).
        let owners = Owners::new(
            &self.registry.all_components()?,
            self.registry
                .list_services()?
                .into_iter()
                .map(|s| s.name)
                .chain([service.to_string()]),
        );
        let mut candidates: Vec<(String, bool, InstanceInfo)> = self
            .runtime
            .list()
            .await?
            .into_iter()
            .filter(|i| !i.name.ends_with(STAGED_SUFFIX))
            .filter_map(|i| match owners.owner(&i) {
                Owner::Managed {
                    service: s,
                    component,
                } if s == service => Some((component, true, i)),
                Owner::Unmanaged {
                    service: s,
                    component,
                } if s == service && i.name == mcp_runtime::instance_name(service, &component) => {
                    Some((component, false, i))
                }
                _ => None,
            })
            .collect();
        candidates.sort_by(|a, b| a.2.name.cmp(&b.2.name));
        for (component, managed, inst) in candidates {
            if managed {
                already.push(component);
                continue;
            }
            let Some(full) = self.runtime.inspect(&inst.id).await? else {
                continue; // gone meanwhile
            };
            any_running |= full.state == InstanceState::Running;
            let def = component_from_instance(&component, &full);
            records.push(ComponentRecord {
                container_id: Some(full.id.clone()),
                ..ComponentRecord::from_def(service, &def)
            });
            adopted.push(def);
        }
        let mut def = ServiceDef {
            name: service.to_string(),
            active: recorded_service.as_ref().map_or(any_running, |s| s.active),
            node: recorded_service.as_ref().and_then(|s| s.node.clone()),
            tier: Default::default(),
            components: recorded.values().map(|r| r.definition.clone()).collect(),
        };
        def.components.extend(adopted.iter().cloned());
        if adopted.is_empty() {
            if already.is_empty() {
                return Err(AgentError::NotFound(format!(
                    "no instances named {prefix}* on this node"
                )));
            }
            return Ok(Adoption {
                definition: def,
                adopted: Vec::new(),
                already_managed: already,
            });
        }
        // The same validation as a pushed definition: names, values.
        let def = ServiceDef::from_proto(&def.to_proto())?;
        let service_record = match &recorded_service {
            Some(r) => r.clone(),
            None => ServiceRecord::from_def(&def),
        };
        self.registry
            .record_deploy(&service_record, &records, &[])?;
        for c in &adopted {
            if let Err(e) = self
                .registry
                .record_event(service, Some(&c.name), "adopted", &c.image)
            {
                tracing::warn!(service, error = %e, "cannot record an event");
            }
        }
        self.record_adopted(service, &adopted);
        self.observed.invalidate();
        Ok(Adoption {
            definition: def,
            adopted: adopted.into_iter().map(|c| c.name).collect(),
            already_managed: already,
        })
    }

    /// Deploys `def` for a sync: a failure of the whole service becomes one
    /// failed outcome, so the other services go on.
    async fn deploy_named(
        &self,
        def: &ServiceDef,
        pull: PullPolicy,
    ) -> (String, Vec<ComponentOutcome>) {
        let outcomes = match self.deploy(def, None, pull).await {
            Ok(o) => o,
            Err(e) => vec![ComponentOutcome::failed("-", &e)],
        };
        (def.name.clone(), outcomes)
    }

    /// The registry's event history, oldest first.
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<EventRecord>, AgentError> {
        Ok(self.registry.events(filter)?)
    }

    /// Deletes events older than `retention`; returns how many.
    pub fn prune_events(&self, retention: Duration) -> Result<usize, AgentError> {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        Ok(self.registry.prune_events(cutoff)?)
    }

    /// Brings a recorded component up: creates its instance when missing,
    /// replaces it when it no longer matches, starts it when stopped, and
    /// records a new instance id.
    async fn bring_up(
        &self,
        service: &str,
        c: &ComponentRecord,
    ) -> Result<(Action, Option<String>), AgentError> {
        let spec =
            self.vm_files
                .resolve_spec(service, &c.name, c.definition.instance_spec(service))?;
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
    async fn remove_instance(&self, service: &str, component: &str) -> Result<(), AgentError> {
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

    /// Who owns what, as the registry records it (see [`ownership`]).
    fn owners(&self) -> Result<Owners, AgentError> {
        let services = self.registry.list_services()?.into_iter().map(|s| s.name);
        Ok(Owners::new(&self.registry.all_components()?, services))
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
                    ports: comp.definition.ports.clone(),
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
