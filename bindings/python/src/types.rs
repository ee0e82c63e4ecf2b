//! The records calls return: immutable, typed, compared by value, and
//! shown by `repr()` as `Name(field=value, ...)`, each built from the
//! agent's answer in one `From` impl.

use chrono::{DateTime, Utc};
use mcp_core::client::action_name;
use mcp_core::proto as pb;
use pyo3::prelude::*;

use crate::error::Error;
use crate::servicedef::ServiceDef;

/// Declares a record: a frozen Python class with read-only attributes,
/// value equality and a `repr` listing its fields; `methods` adds more
/// Python methods.
macro_rules! record {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
        $( methods { $($methods:tt)* } )?
    ) => {
        $(#[$meta])*
        #[pyclass(module = "metacircular_mcp", frozen, eq, get_all)]
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        #[pymethods]
        impl $name {
            fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
                let fields: Vec<String> = vec![
                    $( format!(
                        "{}={}",
                        stringify!($field),
                        pyo3::IntoPyObjectExt::into_bound_py_any(self.$field.clone(), py)?.repr()?
                    ), )*
                ];
                Ok(format!("{}({})", stringify!($name), fields.join(", ")))
            }

            $( $($methods)* )?
        }
    };
}

pub(crate) use record;

/// `None` for an empty string.
pub(crate) fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A time from Unix seconds; `None` for 0 (unknown).
fn unix_time(secs: i64) -> Option<DateTime<Utc>> {
    (secs != 0)
        .then(|| DateTime::from_timestamp(secs, 0))
        .flatten()
}

/// A time from RFC 3339 text; `None` when empty or unreadable.
fn rfc3339(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

record! {
    /// What the agent did to one component.
    ComponentResult {
        /// The component's name.
        component: String,
        /// `created`, `updated`, `unchanged`, `started`, `stopped`,
        /// `restarted`, `removed`, `failed` or `rolled-back` (the new
        /// version did not become ready; the previous one runs again).
        action: String,
        /// The container or VM id, when there is one.
        instance_id: Option<String>,
        /// Why it failed, when `action` is `failed`.
        error: Option<String>,
    }
}

impl ComponentResult {
    /// Whether it failed, or its new version was rolled back.
    fn is_failure(&self) -> bool {
        self.action == "failed" || self.action == "rolled-back"
    }
}

impl From<pb::ComponentResult> for ComponentResult {
    fn from(r: pb::ComponentResult) -> Self {
        ComponentResult {
            action: action_name(r.action).to_string(),
            component: r.component,
            instance_id: non_empty(r.container_id),
            error: non_empty(r.error),
        }
    }
}

record! {
    /// The answer to deploy, stop, start, restart and remove.
    ActionResult {
        /// The node that acted.
        node: String,
        /// The service.
        service: String,
        /// One result per component acted on.
        results: Vec<ComponentResult>,
    }
    methods {
        /// Whether no component failed (or was rolled back).
        #[getter]
        fn ok(&self) -> bool {
            !self.results.iter().any(ComponentResult::is_failure)
        }

        /// The components that failed or were rolled back.
        #[getter]
        fn failed(&self) -> Vec<ComponentResult> {
            self.results.iter().filter(|r| r.is_failure()).cloned().collect()
        }
    }
}

impl ActionResult {
    /// The answer of `node` for `service`.
    pub(crate) fn new(node: &str, service: String, results: Vec<pb::ComponentResult>) -> Self {
        ActionResult {
            node: node.to_string(),
            service,
            results: results.into_iter().map(Into::into).collect(),
        }
    }
}

record! {
    /// Desired versus observed state of one component.
    ComponentStatus {
        /// The service.
        service: String,
        /// The component.
        component: String,
        /// `container` or `unikernel`.
        runtime: String,
        /// Whether it should run.
        desired_active: bool,
        /// The image it should run.
        desired_image: String,
        /// `running`, `exited`, `created`, `paused`, `missing`, ...
        observed_state: String,
        /// The image its instance runs, when there is one.
        observed_image: Option<String>,
        /// Its instance's id, when there is one.
        instance_id: Option<String>,
        /// Its instance's name (`<service>-<component>`).
        instance_name: String,
        /// Drift kinds: `missing`, `stopped`, `wrong-image`, `unexpected`,
        /// `unhealthy`.
        drift: Vec<String>,
        /// When its instance last started, when known (UTC).
        started_at: Option<DateTime<Utc>>,
        /// For a running component with a health check: `starting`,
        /// `healthy` or `unhealthy`.
        health: Option<String>,
        /// While its checks fail: how many in a row, and the last failure.
        health_detail: Option<String>,
        /// Through a master: the node it is on (`None` from an agent).
        node: Option<String>,
    }
}

impl From<pb::ComponentStatus> for ComponentStatus {
    fn from(c: pb::ComponentStatus) -> Self {
        ComponentStatus {
            service: c.service,
            component: c.component,
            runtime: c.runtime,
            desired_active: c.desired_active,
            desired_image: c.desired_image,
            observed_state: c.observed_state,
            observed_image: non_empty(c.observed_image),
            instance_id: non_empty(c.container_id),
            instance_name: c.container_name,
            drift: c.drift,
            started_at: unix_time(c.started_at),
            health: non_empty(c.health),
            health_detail: non_empty(c.health_detail),
            node: non_empty(c.node),
        }
    }
}

record! {
    /// A container or VM as the node's runtime reports it.
    Instance {
        /// Its name.
        name: String,
        /// Its id.
        id: String,
        /// Its image.
        image: String,
        /// `running`, `exited`, ...
        state: String,
        /// The runtime's own status text.
        status: String,
        /// `container` or `unikernel`.
        runtime: String,
        /// Whether MCP manages it.
        managed: bool,
        /// The service it belongs to, for a managed instance.
        service: Option<String>,
        /// The component it is, for a managed instance.
        component: Option<String>,
        /// Published ports, as in definitions.
        ports: Vec<String>,
        /// When it was created, when known (UTC).
        created_at: Option<DateTime<Utc>>,
        /// Drift of the component it is named for, or `unmanaged`.
        drift: Vec<String>,
        /// Through a master: the node it is on (`None` from an agent).
        node: Option<String>,
    }
}

impl From<pb::RuntimeInstance> for Instance {
    fn from(i: pb::RuntimeInstance) -> Self {
        Instance {
            name: i.name,
            id: i.id,
            image: i.image,
            state: i.state,
            status: i.status,
            runtime: i.runtime,
            managed: i.managed,
            service: non_empty(i.service),
            component: non_empty(i.component),
            ports: i.ports,
            created_at: unix_time(i.created_at),
            drift: i.drift,
            node: non_empty(i.node),
        }
    }
}

record! {
    /// The answer to `status`.
    StatusReport {
        /// The node.
        node: String,
        /// Every component of the services asked about.
        components: Vec<ComponentStatus>,
        /// Instances named like a managed service's components that MCP
        /// does not manage.
        unmanaged: Vec<Instance>,
    }
    methods {
        /// The components with drift.
        #[getter]
        fn drifted(&self) -> Vec<ComponentStatus> {
            self.components.iter().filter(|c| !c.drift.is_empty()).cloned().collect()
        }
    }
}

impl From<pb::StatusResponse> for StatusReport {
    fn from(r: pb::StatusResponse) -> Self {
        StatusReport {
            node: r.node,
            components: r.components.into_iter().map(Into::into).collect(),
            unmanaged: r.unmanaged.into_iter().map(Into::into).collect(),
        }
    }
}

record! {
    /// The answer to `ps`.
    PsReport {
        /// The node.
        node: String,
        /// Every container and VM on the node, managed or not.
        instances: Vec<Instance>,
        /// Components that should have an instance and have none.
        missing: Vec<ComponentStatus>,
    }
}

impl From<pb::PsResponse> for PsReport {
    fn from(r: pb::PsResponse) -> Self {
        PsReport {
            node: r.node,
            instances: r.instances.into_iter().map(Into::into).collect(),
            missing: r.missing.into_iter().map(Into::into).collect(),
        }
    }
}

record! {
    /// A service the node's registry knows.
    ServiceSummary {
        /// Its name.
        name: String,
        /// Whether it should run.
        active: bool,
        /// Its components' names.
        components: Vec<String>,
        /// When it was last deployed (UTC).
        updated_at: Option<DateTime<Utc>>,
        /// Through a master: the node it is on (`None` from an agent).
        node: Option<String>,
    }
}

impl From<pb::ServiceSummary> for ServiceSummary {
    fn from(s: pb::ServiceSummary) -> Self {
        ServiceSummary {
            updated_at: rfc3339(&s.updated_at),
            name: s.name,
            active: s.active,
            components: s.components,
            node: non_empty(s.node),
        }
    }
}

record! {
    /// One entry of a node's event history.
    Event {
        /// Its sequence number on the node.
        id: i64,
        /// When it happened (UTC).
        time: Option<DateTime<Utc>>,
        /// The service.
        service: String,
        /// The component, for component events.
        component: Option<String>,
        /// What happened: `deployed`, `created`, `drift:stopped`, ...
        kind: String,
        /// Details, in words.
        detail: String,
        /// Through a master: the node it happened on, or is about (`None`
        /// from an agent, and for the master's own events about no node).
        node: Option<String>,
    }
}

impl From<pb::Event> for Event {
    fn from(e: pb::Event) -> Self {
        Event {
            id: e.id,
            time: rfc3339(&e.time),
            service: e.service,
            component: non_empty(e.component),
            kind: e.kind,
            detail: e.detail,
            node: non_empty(e.node),
        }
    }
}

record! {
    /// One revision of a component: a definition as a deploy left it.
    Revision {
        /// Its number: 1 for the component's first, one more for each after.
        revision: u64,
        /// The component.
        component: String,
        /// When it was recorded (UTC); revisions of one deploy share it.
        time: DateTime<Utc>,
        /// The definition's image.
        image: String,
        /// `deployed`, `failed`, `rolled-back` (deployed, then undone) or
        /// `rollback` (an earlier revision deployed again).
        outcome: String,
        /// Why it failed, or which revision a rollback restored; may be
        /// empty.
        detail: String,
        /// The digest of the definition's runtime settings.
        spec_hash: String,
    }
}

impl Revision {
    /// The record of a revision the agent sent; its time must be readable.
    pub(crate) fn from_proto(r: pb::Revision) -> Result<Self, Error> {
        let time = rfc3339(&r.time).ok_or_else(|| {
            Error::Invalid(format!(
                "the agent sent revision {} of {:?} with an unreadable time {:?}",
                r.revision, r.component, r.time
            ))
        })?;
        Ok(Revision {
            revision: r.revision,
            component: r.component,
            time,
            image: r.image,
            outcome: r.outcome,
            detail: r.detail,
            spec_hash: r.spec_hash,
        })
    }
}

record! {
    /// One field a sync would change.
    FieldChange {
        /// The field.
        field: String,
        /// Its value now.
        before: String,
        /// Its value after.
        after: String,
    }
}

impl From<pb::FieldChange> for FieldChange {
    fn from(f: pb::FieldChange) -> Self {
        FieldChange {
            field: f.field,
            before: f.from,
            after: f.to,
        }
    }
}

record! {
    /// What a sync does to one component.
    PlannedComponent {
        /// The component.
        component: String,
        /// `create`, `update`, `start`, `stop`, `record` (an inactive
        /// service's definition kept, no instance made), `remove`,
        /// `unchanged` or `conflict`.
        change: String,
        /// For an update: what differs.
        fields: Vec<FieldChange>,
        /// For a create or a conflict: why.
        reason: Option<String>,
        /// For an update: whether the instance is replaced.
        recreate: bool,
    }
}

impl From<pb::PlannedComponent> for PlannedComponent {
    fn from(c: pb::PlannedComponent) -> Self {
        PlannedComponent {
            component: c.component,
            change: c.change,
            fields: c.fields.into_iter().map(Into::into).collect(),
            reason: non_empty(c.reason),
            recreate: c.recreate,
        }
    }
}

record! {
    /// What a sync does to one service.
    PlannedService {
        /// The service.
        service: String,
        /// `create`, `update`, `unchanged`, `remove` or `keep`.
        action: String,
        /// Service-level changes (`active`, `tier`).
        fields: Vec<FieldChange>,
        /// Its components.
        components: Vec<PlannedComponent>,
    }
}

impl From<pb::PlannedService> for PlannedService {
    fn from(s: pb::PlannedService) -> Self {
        PlannedService {
            service: s.service,
            action: s.action,
            fields: s.fields.into_iter().map(Into::into).collect(),
            components: s.components.into_iter().map(Into::into).collect(),
        }
    }
}

record! {
    /// The answer to `sync`: the plan, and what was done (nothing for a
    /// dry run).
    SyncResult {
        /// The node.
        node: String,
        /// Whether this was only a plan.
        dry_run: bool,
        /// Removals first (with prune), then the set by name, then kept
        /// services.
        plan: Vec<PlannedService>,
        /// What was done, per service acted on.
        results: Vec<ActionResult>,
    }
    methods {
        /// Whether no component failed (or was rolled back).
        #[getter]
        fn ok(&self) -> bool {
            !self.results.iter().flat_map(|r| &r.results).any(ComponentResult::is_failure)
        }
    }
}

impl SyncResult {
    /// The answer of `node`.
    pub(crate) fn new(node: &str, r: pb::SyncResponse) -> Self {
        SyncResult {
            node: node.to_string(),
            dry_run: r.dry_run,
            plan: r.plan.into_iter().map(Into::into).collect(),
            results: r
                .results
                .into_iter()
                .map(|a| {
                    let on = if a.node.is_empty() { node } else { &a.node };
                    ActionResult::new(on, a.service, a.results)
                })
                .collect(),
        }
    }
}

record! {
    /// The answer to `adopt`.
    AdoptResult {
        /// The node.
        node: String,
        /// The service's definition afterwards; deployed unchanged, it
        /// changes nothing.
        definition: ServiceDef,
        /// Components adopted now.
        adopted: Vec<String>,
        /// Components MCP managed already.
        already_managed: Vec<String>,
    }
}

record! {
    /// A node's agent and what it can run.
    NodeInfo {
        /// The node's name.
        node: String,
        /// The agent's version.
        agent_version: String,
        /// Whether podman answers.
        runtime_available: bool,
        /// Podman's version.
        runtime_version: String,
        /// Why podman does not answer, when it does not.
        runtime_error: Option<String>,
        /// Whether the node runs unikernel components.
        unikernels: bool,
        /// The QEMU binary, when there is one.
        qemu: Option<String>,
        /// `kvm` or `tcg`, when there is QEMU.
        accel: Option<String>,
        /// Whether the `ops` unikernel builder is installed.
        ops: bool,
        /// Directories the host side of a volume must lie in (the agent's
        /// `[security] allowed_volume_roots`); empty for anywhere.
        allowed_volume_roots: Vec<String>,
        /// Whether the agent's last write to its audit file failed.
        audit_file_failing: bool,
        /// Audit records that never reached the file since the agent
        /// started.
        audit_records_lost: u64,
    }
}

impl From<pb::NodeInfoResponse> for NodeInfo {
    fn from(n: pb::NodeInfoResponse) -> Self {
        NodeInfo {
            node: n.node_name,
            agent_version: n.agent_version,
            runtime_available: n.runtime_available,
            runtime_version: n.runtime_version,
            runtime_error: non_empty(n.runtime_error),
            unikernels: n.unikernels,
            qemu: non_empty(n.qemu),
            accel: non_empty(n.accel),
            ops: n.ops,
            allowed_volume_roots: n.allowed_volume_roots,
            audit_file_failing: n.audit_file_failing,
            audit_records_lost: n.audit_records_lost,
        }
    }
}

record! {
    /// Memory and CPUs: what a node offers, holds or uses.
    Resources {
        /// Memory in bytes.
        memory_bytes: u64,
        /// Whole CPUs.
        cpus: u32,
    }
}

impl From<Option<pb::Resources>> for Resources {
    fn from(r: Option<pb::Resources>) -> Self {
        let r = r.unwrap_or_default();
        Resources {
            memory_bytes: r.memory_bytes,
            cpus: r.cpus,
        }
    }
}

record! {
    /// A node of the fleet as the master sees it.
    FleetNode {
        /// The node's name.
        node: String,
        /// `worker`, `core` or `edge`.
        role: String,
        /// `ready`, `suspect`, `down` or `draining`.
        state: String,
        /// Since when it is in that state.
        state_since: Option<DateTime<Utc>>,
        /// The address the master dials.
        address: String,
        /// The machine's architecture.
        arch: Option<String>,
        /// The agent's version.
        version: Option<String>,
        /// Its last heartbeat (or registration).
        last_heartbeat: Option<DateTime<Utc>>,
        /// What it offers services.
        capacity: Resources,
        /// What the services placed on it ask for.
        allocated: Resources,
        /// What it reported using in its last heartbeat.
        used: Resources,
        /// How many services are placed on it.
        services: u32,
        /// Where it publishes ports without a host address; `None` for
        /// every address.
        publish_address: Option<String>,
    }
}

impl From<pb::NodeSummary> for FleetNode {
    fn from(n: pb::NodeSummary) -> Self {
        FleetNode {
            state_since: rfc3339(&n.state_since),
            last_heartbeat: rfc3339(&n.last_heartbeat),
            capacity: n.capacity.into(),
            allocated: n.allocated.into(),
            used: n.used.into(),
            node: n.name,
            role: n.role,
            state: n.state,
            address: n.address,
            arch: non_empty(n.arch),
            version: non_empty(n.version),
            services: n.services,
            publish_address: non_empty(n.publish_address),
        }
    }
}

record! {
    /// Where the master would put one service.
    Placement {
        /// The service.
        service: String,
        /// The node it would run on, or wait for.
        node: String,
        /// `kept`, `new`, `moved` or `waiting`.
        decision: String,
        /// For `moved`: the node it would leave.
        moved_from: Option<String>,
    }
}

impl From<pb::PlannedPlacement> for Placement {
    fn from(p: pb::PlannedPlacement) -> Self {
        Placement {
            service: p.service,
            node: p.node,
            decision: p.decision,
            moved_from: non_empty(p.from),
        }
    }
}

record! {
    /// One entry of a service's directory on its node.
    FileEntry {
        /// Relative to the service's directory (`.` for the directory).
        path: String,
        /// `file`, `dir`, `symlink` or `other`.
        kind: String,
        /// Size in bytes.
        size: u64,
        /// Permission bits (e.g. `0o640`).
        mode: u32,
        /// Last modification (UTC).
        mtime: Option<DateTime<Utc>>,
        /// For a symlink: where it points.
        symlink_target: Option<String>,
    }
}

impl From<pb::FileEntry> for FileEntry {
    fn from(e: pb::FileEntry) -> Self {
        FileEntry {
            path: e.path,
            kind: e.kind,
            size: e.size,
            mode: e.mode,
            mtime: unix_time(e.mtime),
            symlink_target: non_empty(e.symlink_target),
        }
    }
}

record! {
    /// One file moved, as checked by both sides.
    Transfer {
        /// The file on this machine.
        local: String,
        /// Its path in the service's directory.
        remote: String,
        /// Bytes moved.
        size: u64,
        /// The SHA-256 both sides agree on, in hex.
        sha256: String,
    }
}

impl From<mcp_core::client::transfer::Moved> for Transfer {
    fn from(m: mcp_core::client::transfer::Moved) -> Self {
        Transfer {
            local: m.local.display().to_string(),
            remote: m.remote,
            size: m.size,
            sha256: m.sha256,
        }
    }
}

record! {
    /// The answer to `push` and `pull`.
    TransferResult {
        /// The node.
        node: String,
        /// The service.
        service: String,
        /// The files moved, in order.
        files: Vec<Transfer>,
        /// Symlinks and special files met while recursing, not moved.
        skipped: Vec<String>,
    }
}

impl From<mcp_core::client::transfer::TreeMoved> for TransferResult {
    fn from(t: mcp_core::client::transfer::TreeMoved) -> Self {
        TransferResult {
            node: t.node,
            service: t.service,
            files: t.files.into_iter().map(Transfer::from).collect(),
            skipped: t.skipped,
        }
    }
}

record! {
    /// One line of a component's output.
    LogLine {
        /// The component that wrote it.
        component: String,
        /// `stdout` or `stderr` (`console` for a VM's serial console).
        stream: String,
        /// The line, without its line ending (invalid UTF-8 replaced).
        text: String,
    }
}

impl From<mcp_core::client::LogLine> for LogLine {
    fn from(l: mcp_core::client::LogLine) -> Self {
        LogLine {
            component: l.component,
            stream: l.stream,
            text: String::from_utf8_lossy(&l.data).into_owned(),
        }
    }
}

record! {
    /// A node of the CLI configuration.
    Node {
        /// Its name.
        name: String,
        /// `host:port` of its agent.
        address: String,
    }
}

record! {
    /// The CLI configuration, as far as scripts need it.
    Config {
        /// The file it was read from.
        path: String,
        /// The directory of service definitions.
        services_dir: String,
        /// The nodes, in order; the first is the default.
        nodes: Vec<Node>,
    }
}
