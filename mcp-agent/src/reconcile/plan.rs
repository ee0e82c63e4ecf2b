//! The sync plan: what `mcp sync` would change on a node, computed without
//! touching anything.
//!
//! [`plan`] takes the desired set of service definitions for a node, what the
//! registry records ([`ServiceRecord`]s with their [`ComponentRecord`]s) and
//! what the runtime reports ([`InstanceInfo`]s), and predicts, per service and
//! component, what [`Reconciler::deploy`](super::Reconciler::deploy) would do
//! with each definition (and what `--prune` would remove). It is pure: no
//! I/O, no async, so `mcp sync --dry-run` and the agent compute the same plan
//! from the same inputs.
//!
//! The prediction follows deploy's rules for one component:
//!
//! - no instance named `<service>-<component>` (nor a `<name>.mcp-new` left by
//!   an interrupted deploy, which deploy would rename into place): **create**,
//!   or, for an inactive service, which gets no instances, **record** (the
//!   definition is kept for its start) unless it is recorded as it is;
//! - an instance MCP does not manage, or one that belongs to another service
//!   (by its labels, its recorded id or, unmanaged, its name; see
//!   [`super::ownership`]), or an instance name another
//!   registered service's component also has: deploy refuses the service,
//!   so the plan reports a **conflict**;
//! - a managed instance whose `mcp.spec-hash` label differs from the desired
//!   definition's [`ComponentDef::spec_hash`]: **update** (the instance is
//!   recreated), with the fields that differ from the recorded definition, or
//!   a field `instance` when the instance itself drifted from the record;
//! - the same spec hash: **start** or **stop** when only the running state
//!   differs from `active`, **update** without recreate when only fields the
//!   hash does not cover changed (routes), else **unchanged**.
//!
//! ```
//! use std::path::Path;
//! use mcp_agent::reconcile::plan::{self, Change, CreateReason, ServiceAction};
//! use mcp_core::servicedef;
//!
//! let def = servicedef::parse(r#"
//! name = "hello"
//! [[components]]
//! name = "web"
//! image = "nginx:1.27"
//! "#, Path::new("hello.toml"))?;
//!
//! let plan = plan::plan(&[def], &[], &[], false);
//! assert_eq!(plan.services[0].action, ServiceAction::Create);
//! assert_eq!(plan.services[0].components[0].change,
//!     Change::Create { reason: CreateReason::New });
//! assert_eq!(plan.counts().create, 1);
//! assert!(!plan.is_noop());
//! # Ok::<(), servicedef::ServiceDefError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mcp_runtime::{InstanceInfo, InstanceState, instance_name, labels};
use serde::Serialize;

use super::STAGED_SUFFIX;
use super::ownership::{self, Owners};
use crate::registry::{ComponentRecord, ServiceRecord};
use mcp_core::servicedef::{
    ComponentDef, Memory, RouteDef, ServiceDef, format_port, format_volume,
};

/// How a [`FieldChange`] shows a value that is not set (an absent
/// environment variable, an unset option).
pub const UNSET: &str = "(unset)";

/// How a [`FieldChange`] shows an empty list (no ports, no volumes, ...).
pub const NONE: &str = "(none)";

/// How many characters of a spec hash the `instance` field shows.
const SHORT_HASH: usize = 12;

/// What a sync would do on one node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Plan {
    /// Services to remove first (only with prune), then the desired set in
    /// name order, then the services kept although not in the set (without
    /// prune).
    pub services: Vec<ServicePlan>,
}

/// What a sync would do with one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicePlan {
    /// The service's name.
    pub service: String,
    /// What happens to the service as a whole.
    pub action: ServiceAction,
    /// Service-level settings the registry records that change: `active`
    /// and `tier`, in that order. Empty unless `action` is
    /// [`ServiceAction::Update`].
    pub fields: Vec<FieldChange>,
    /// Per component: for a desired service its components in definition
    /// order, then the recorded components it no longer has (by name); for a
    /// removed or kept service its recorded components by name.
    pub components: Vec<ComponentPlan>,
}

/// What happens to a service as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceAction {
    /// The registry does not know the service: it is recorded and its
    /// components brought up.
    Create,
    /// Some component or service-level setting changes.
    Update,
    /// In the set and already as desired.
    Unchanged,
    /// In the registry but not in the set, and prune was asked: every
    /// component is removed and the service forgotten.
    Remove,
    /// In the registry but not in the set, without prune: left alone.
    Keep,
}

impl ServiceAction {
    /// The action as one lower-case word, as in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceAction::Create => "create",
            ServiceAction::Update => "update",
            ServiceAction::Unchanged => "unchanged",
            ServiceAction::Remove => "remove",
            ServiceAction::Keep => "keep",
        }
    }
}

/// What a sync would do with one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentPlan {
    /// The component's name.
    pub component: String,
    /// The change; in JSON its fields sit beside `component`, with the
    /// variant's name under `change`.
    #[serde(flatten)]
    pub change: Change,
}

/// The change to one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "lowercase")]
pub enum Change {
    /// A new instance is created (and started when the service is active).
    Create {
        /// Why there is no instance to keep.
        reason: CreateReason,
    },
    /// The component changes.
    Update {
        /// What differs: fields of the recorded definition versus the
        /// desired one (see [`diff_components`]), then `instance` when the
        /// instance does not match the recorded definition (its spec hash),
        /// and `state` when a change that keeps the instance also starts or
        /// stops it.
        fields: Vec<FieldChange>,
        /// Whether the instance is replaced by a new one. False when only
        /// fields the spec hash does not cover (routes) changed: the
        /// registry is updated, the instance left running.
        recreate: bool,
    },
    /// Only the running state differs: the instance is started.
    Start,
    /// Only the running state differs: the instance is stopped.
    Stop,
    /// The service is inactive and the component has no instance: its
    /// definition is recorded (for the service's start), no instance made.
    Record,
    /// The instance is removed and the component forgotten.
    Remove,
    /// Nothing changes.
    Unchanged,
    /// Deploy would fail: an instance of the component's name exists that
    /// MCP does not manage, and MCP never replaces those.
    Conflict {
        /// What is in the way, and what to do about it.
        reason: String,
    },
}

impl Change {
    /// The change as one lower-case word, as in JSON output.
    pub fn as_str(&self) -> &'static str {
        match self {
            Change::Create { .. } => "create",
            Change::Update { .. } => "update",
            Change::Start => "start",
            Change::Stop => "stop",
            Change::Record => "record",
            Change::Remove => "remove",
            Change::Unchanged => "unchanged",
            Change::Conflict { .. } => "conflict",
        }
    }
}

/// Why a component gets a new instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CreateReason {
    /// The registry does not know the component.
    New,
    /// The registry knows the component but no instance runs it.
    InstanceMissing,
}

impl CreateReason {
    /// The reason as kebab-case words, as in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            CreateReason::New => "new",
            CreateReason::InstanceMissing => "instance-missing",
        }
    }
}

/// One field that differs, with both values as short text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// The field: `runtime`, `image`, `kernel`, `initrd`, `append`, `cmd`,
    /// `env.<KEY>`, `ports`, `volumes`, `network`, `user`, `restart`,
    /// `memory`, `vcpus`, `routes`;
    /// `instance` and `state` (see [`Change::Update`]); `active` and `tier`
    /// for a service.
    pub field: String,
    /// The value before ([`UNSET`] or [`NONE`] when there is none).
    pub from: String,
    /// The value after ([`UNSET`] or [`NONE`] when there is none).
    pub to: String,
}

impl FieldChange {
    fn new(field: impl Into<String>, from: impl Into<String>, to: impl Into<String>) -> Self {
        FieldChange {
            field: field.into(),
            from: from.into(),
            to: to.into(),
        }
    }
}

/// How many components of a [`Plan`] get each kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PlanCounts {
    /// [`Change::Create`].
    pub create: usize,
    /// [`Change::Update`].
    pub update: usize,
    /// [`Change::Start`].
    pub start: usize,
    /// [`Change::Stop`].
    pub stop: usize,
    /// [`Change::Record`].
    pub record: usize,
    /// [`Change::Remove`].
    pub remove: usize,
    /// [`Change::Unchanged`], including the components of kept services.
    pub unchanged: usize,
    /// [`Change::Conflict`].
    pub conflict: usize,
}

impl Plan {
    /// Whether the sync would change nothing: every service is unchanged or
    /// kept.
    pub fn is_noop(&self) -> bool {
        self.services
            .iter()
            .all(|s| matches!(s.action, ServiceAction::Unchanged | ServiceAction::Keep))
    }

    /// The number of components per kind of change.
    pub fn counts(&self) -> PlanCounts {
        let mut counts = PlanCounts::default();
        for c in self.services.iter().flat_map(|s| &s.components) {
            let slot = match c.change {
                Change::Create { .. } => &mut counts.create,
                Change::Update { .. } => &mut counts.update,
                Change::Start => &mut counts.start,
                Change::Stop => &mut counts.stop,
                Change::Record => &mut counts.record,
                Change::Remove => &mut counts.remove,
                Change::Unchanged => &mut counts.unchanged,
                Change::Conflict { .. } => &mut counts.conflict,
            };
            *slot += 1;
        }
        counts
    }
}

/// Computes what syncing node state to `desired` would do.
///
/// `recorded` is the node's registry (each service with its components),
/// `observed` every instance the runtime lists. Services the registry has
/// but `desired` lacks are removed when `prune` is set (and listed first),
/// else kept (and listed last). The definitions' `node` is not looked at:
/// choosing the definitions meant for this node is the caller's business.
pub fn plan(
    desired: &[ServiceDef],
    recorded: &[(ServiceRecord, Vec<ComponentRecord>)],
    observed: &[InstanceInfo],
    prune: bool,
) -> Plan {
    let records: BTreeMap<&str, (&ServiceRecord, &[ComponentRecord])> = recorded
        .iter()
        .map(|(s, comps)| (s.name.as_str(), (s, comps.as_slice())))
        .collect();
    let instances: HashMap<&str, &InstanceInfo> =
        observed.iter().map(|i| (i.name.as_str(), i)).collect();
    let all: Vec<ComponentRecord> = recorded
        .iter()
        .flat_map(|(_, comps)| comps.iter().cloned())
        .collect();
    let owners = Owners::new(&all, recorded.iter().map(|(s, _)| s.name.clone()));
    let wanted: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();

    let absent: Vec<ServicePlan> = records
        .iter()
        .filter(|(name, _)| !wanted.contains(*name))
        .map(|(_, (service, comps))| absent_service(service, comps, prune))
        .collect();

    let mut sorted: Vec<&ServiceDef> = desired.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let present = sorted.into_iter().map(|def| {
        desired_service(
            def,
            records.get(def.name.as_str()).copied(),
            &instances,
            &owners,
        )
    });

    let mut services = Vec::with_capacity(desired.len() + absent.len());
    if prune {
        services.extend(absent);
        services.extend(present);
    } else {
        services.extend(present);
        services.extend(absent);
    }
    Plan { services }
}

/// The plan of a service the registry has but the desired set lacks.
fn absent_service(service: &ServiceRecord, comps: &[ComponentRecord], prune: bool) -> ServicePlan {
    let (action, change) = if prune {
        (ServiceAction::Remove, Change::Remove)
    } else {
        (ServiceAction::Keep, Change::Unchanged)
    };
    let names: BTreeSet<&str> = comps.iter().map(|c| c.name.as_str()).collect();
    ServicePlan {
        service: service.name.clone(),
        action,
        fields: Vec::new(),
        components: names
            .into_iter()
            .map(|name| ComponentPlan {
                component: name.to_string(),
                change: change.clone(),
            })
            .collect(),
    }
}

/// The plan of a service in the desired set.
fn desired_service(
    def: &ServiceDef,
    record: Option<(&ServiceRecord, &[ComponentRecord])>,
    instances: &HashMap<&str, &InstanceInfo>,
    owners: &Owners,
) -> ServicePlan {
    let recorded: BTreeMap<&str, &ComponentRecord> = record
        .map(|(_, comps)| comps.iter().map(|c| (c.name.as_str(), c)).collect())
        .unwrap_or_default();
    let mut components: Vec<ComponentPlan> = def
        .components
        .iter()
        .map(|c| ComponentPlan {
            component: c.name.clone(),
            change: component_change(
                &def.name,
                c,
                def.active,
                recorded.get(c.name.as_str()).copied(),
                instances,
                owners,
            ),
        })
        .collect();
    components.extend(
        recorded
            .keys()
            .filter(|name| def.component(name).is_none())
            .map(|name| ComponentPlan {
                component: name.to_string(),
                change: Change::Remove,
            }),
    );

    let Some((service, _)) = record else {
        return ServicePlan {
            service: def.name.clone(),
            action: ServiceAction::Create,
            fields: Vec::new(),
            components,
        };
    };
    let mut fields = Vec::new();
    if service.active != def.active {
        fields.push(FieldChange::new(
            "active",
            service.active.to_string(),
            def.active.to_string(),
        ));
    }
    if service.tier != def.tier.as_str() {
        fields.push(FieldChange::new("tier", &service.tier, def.tier.as_str()));
    }
    let changed = !fields.is_empty() || components.iter().any(|c| c.change != Change::Unchanged);
    ServicePlan {
        service: def.name.clone(),
        action: if changed {
            ServiceAction::Update
        } else {
            ServiceAction::Unchanged
        },
        fields,
        components,
    }
}

/// What deploy would do with component `def` of `service`, as `converge`
/// decides it.
fn component_change(
    service: &str,
    def: &ComponentDef,
    active: bool,
    record: Option<&ComponentRecord>,
    instances: &HashMap<&str, &InstanceInfo>,
    owners: &Owners,
) -> Change {
    let name = instance_name(service, &def.name);
    if let Some((other, component)) = owners.name_taken_by(service, &def.name) {
        return Change::Conflict {
            reason: ownership::shared_name(service, &def.name, other, component),
        };
    }
    // Deploy first resolves a leftover `<name>.mcp-new`: removed when
    // `<name>` exists, else renamed to `<name>` and used.
    let current = instances
        .get(name.as_str())
        .or_else(|| instances.get(format!("{name}{STAGED_SUFFIX}").as_str()));
    let Some(instance) = current else {
        // An inactive service gets no instances (deploy makes none).
        if !active {
            return match record {
                Some(r) if diff_components(&r.definition, def).is_empty() => Change::Unchanged,
                _ => Change::Record,
            };
        }
        let reason = match record {
            Some(_) => CreateReason::InstanceMissing,
            None => CreateReason::New,
        };
        return Change::Create { reason };
    };
    if let Some(reason) = ownership::refusal(&owners.owner(instance), service, &def.name, &name) {
        return Change::Conflict { reason };
    }
    // An adopted instance carries no labels: the registry vouches for it
    // by id, with the hash of the definition recorded at adoption.
    let adopted = !instance.is_managed();

    let desired_hash = def.spec_hash();
    let label = if adopted {
        record.map(|r| r.spec_hash.as_str())
    } else {
        instance.label(labels::SPEC_HASH)
    };
    let mut fields = record
        .map(|r| diff_components(&r.definition, def))
        .unwrap_or_default();
    let running = instance.state == InstanceState::Running;

    if label == Some(desired_hash.as_str()) {
        let state = if active && !running {
            Some((Change::Start, "running"))
        } else if !active && running {
            Some((Change::Stop, InstanceState::Exited.as_str()))
        } else {
            None
        };
        return match (fields.is_empty(), state) {
            (true, Some((change, _))) => change,
            (true, None) => Change::Unchanged,
            (false, state) => {
                if let Some((_, to)) = state {
                    fields.push(FieldChange::new("state", instance.state.as_str(), to));
                }
                Change::Update {
                    fields,
                    recreate: false,
                }
            }
        };
    }

    let recorded_hash = record.map(|r| r.definition.spec_hash());
    if fields.is_empty() || label.is_none() || label != recorded_hash.as_deref() {
        fields.push(FieldChange::new(
            "instance",
            format!("spec {}", label.map_or(UNSET, short_hash)),
            format!("spec {}", short_hash(&desired_hash)),
        ));
    }
    Change::Update {
        fields,
        recreate: true,
    }
}

fn short_hash(hash: &str) -> &str {
    hash.get(..SHORT_HASH).unwrap_or(hash)
}

/// The fields that differ from `from` to `to`, in the order `runtime`,
/// `image`, `kernel`, `initrd`, `append`, `cmd`, `env.<KEY>` (one per key,
/// by key), `ports`, `volumes`, `network`, `user`, `restart`, `memory`,
/// `vcpus`, `routes`. Names are not compared.
///
/// A variable added shows `from` [`UNSET`], one removed `to` [`UNSET`]; an
/// unset option (or no image, with a kernel) shows [`UNSET`]. Lists are shown whole as compact text
/// (`cmd` quoted, `["serve", "--config", "/srv/x.toml"]`; ports and volumes
/// in their canonical forms, comma-separated; routes as
/// `hostname:port [public]`), an empty one as [`NONE`]. Memory sizes are
/// compared in bytes (`"1G"` equals `"1024M"`) and shown as written.
pub fn diff_components(from: &ComponentDef, to: &ComponentDef) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            out.push(FieldChange::new(name, a, b));
        }
    };
    field(
        "runtime",
        from.runtime.as_str().to_string(),
        to.runtime.as_str().to_string(),
    );
    field("image", show_image(&from.image), show_image(&to.image));
    field("kernel", show_opt(&from.kernel), show_opt(&to.kernel));
    field("initrd", show_opt(&from.initrd), show_opt(&to.initrd));
    field("append", show_opt(&from.append), show_opt(&to.append));
    field("cmd", show_cmd(&from.cmd), show_cmd(&to.cmd));

    let keys: BTreeSet<&String> = from.env.keys().chain(to.env.keys()).collect();
    for key in keys {
        let value = |def: &ComponentDef| {
            def.env
                .get(key)
                .map_or_else(|| UNSET.to_string(), Clone::clone)
        };
        match (from.env.get(key), to.env.get(key)) {
            (Some(a), Some(b)) if a == b => {}
            _ => field(&format!("env.{key}"), value(from), value(to)),
        }
    }

    field(
        "ports",
        show_list(from.ports.iter().map(format_port)),
        show_list(to.ports.iter().map(format_port)),
    );
    field(
        "volumes",
        show_list(from.volumes.iter().map(format_volume)),
        show_list(to.volumes.iter().map(format_volume)),
    );
    field("network", show_opt(&from.network), show_opt(&to.network));
    field("user", show_opt(&from.user), show_opt(&to.user));
    field("restart", show_opt(&from.restart), show_opt(&to.restart));
    if from.memory.as_ref().map(Memory::bytes) != to.memory.as_ref().map(Memory::bytes) {
        field("memory", show_opt(&from.memory), show_opt(&to.memory));
    }
    field("vcpus", show_opt(&from.vcpus), show_opt(&to.vcpus));
    field(
        "routes",
        show_list(from.routes.iter().map(show_route)),
        show_list(to.routes.iter().map(show_route)),
    );
    out
}

/// An image, [`UNSET`] when empty (a kernel booted without a disk).
fn show_image(image: &str) -> String {
    if image.is_empty() {
        UNSET.to_string()
    } else {
        image.to_string()
    }
}

fn show_cmd(cmd: &[String]) -> String {
    if cmd.is_empty() {
        NONE.to_string()
    } else {
        format!("{cmd:?}")
    }
}

fn show_list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        NONE.to_string()
    } else {
        items.join(", ")
    }
}

fn show_opt<T: std::fmt::Display>(value: &Option<T>) -> String {
    value
        .as_ref()
        .map_or_else(|| UNSET.to_string(), ToString::to_string)
}

fn show_route(route: &RouteDef) -> String {
    if route.public {
        format!("{}:{} public", route.hostname, route.port)
    } else {
        format!("{}:{}", route.hostname, route.port)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use mcp_runtime::{InstanceInfo, InstanceState, RuntimeKind};

    use super::*;
    use mcp_core::servicedef::{self, ServiceDef};

    fn def(toml: &str) -> ServiceDef {
        servicedef::parse(toml, Path::new("test.toml")).expect("valid definition")
    }

    /// A two-component service `web` (api, worker); `extra` is appended to
    /// the api component's table.
    fn web(active: bool, api_extra: &str) -> ServiceDef {
        def(&format!(
            r#"
name = "web"
active = {active}

[[components]]
name = "api"
image = "registry.example/web:1.0"
cmd = ["serve", "--port", "8080"]
env = {{ RUST_LOG = "info", MODE = "prod" }}
ports = ["127.0.0.1:8080:8080"]
{api_extra}

[[components]]
name = "worker"
image = "registry.example/web:1.0"
cmd = ["work"]
"#
        ))
    }

    fn simple(name: &str, image: &str) -> ServiceDef {
        def(&format!(
            "name = \"{name}\"\n[[components]]\nname = \"app\"\nimage = \"{image}\"\n"
        ))
    }

    /// What the registry records after deploying `def`.
    fn record(def: &ServiceDef) -> (ServiceRecord, Vec<ComponentRecord>) {
        (
            ServiceRecord::from_def(def),
            def.components
                .iter()
                .map(|c| ComponentRecord {
                    container_id: Some(format!("id-{}", c.name)),
                    ..ComponentRecord::from_def(&def.name, c)
                })
                .collect(),
        )
    }

    /// The instance deploy creates for component `c` of `service`.
    fn instance(service: &str, c: &ComponentDef, running: bool) -> InstanceInfo {
        let spec = c.instance_spec(service);
        InstanceInfo {
            id: format!("id-{}", c.name),
            name: spec.name,
            image: spec.image,
            image_id: "sha256:0".to_string(),
            state: if running {
                InstanceState::Running
            } else {
                InstanceState::Exited
            },
            status: String::new(),
            exit_code: None,
            labels: spec.labels,
            ports: spec.ports,
            created_at: 0,
            started_at: 0,
            runtime: RuntimeKind::Container,
            details: None,
        }
    }

    /// Registry and runtime exactly as after a successful deploy of `defs`.
    fn deployed(
        defs: &[ServiceDef],
    ) -> (
        Vec<(ServiceRecord, Vec<ComponentRecord>)>,
        Vec<InstanceInfo>,
    ) {
        let records = defs.iter().map(record).collect();
        let instances = defs
            .iter()
            .flat_map(|d| d.components.iter().map(|c| instance(&d.name, c, d.active)))
            .collect();
        (records, instances)
    }

    fn change<'a>(plan: &'a Plan, service: &str, component: &str) -> &'a Change {
        let s = plan
            .services
            .iter()
            .find(|s| s.service == service)
            .expect("service planned");
        &s.components
            .iter()
            .find(|c| c.component == component)
            .expect("component planned")
            .change
    }

    fn fields(change: &Change) -> Vec<(&str, &str, &str)> {
        match change {
            Change::Update { fields, .. } => fields
                .iter()
                .map(|f| (f.field.as_str(), f.from.as_str(), f.to.as_str()))
                .collect(),
            other => panic!("expected an update, got {other:?}"),
        }
    }

    fn order(plan: &Plan) -> Vec<(&str, ServiceAction)> {
        plan.services
            .iter()
            .map(|s| (s.service.as_str(), s.action))
            .collect()
    }

    #[test]
    fn new_service_creates_every_component_in_definition_order() {
        let plan = plan(&[web(true, "")], &[], &[], false);
        assert_eq!(order(&plan), [("web", ServiceAction::Create)]);
        let comps: Vec<_> = plan.services[0]
            .components
            .iter()
            .map(|c| (c.component.as_str(), &c.change))
            .collect();
        let new = Change::Create {
            reason: CreateReason::New,
        };
        assert_eq!(comps, [("api", &new), ("worker", &new)]);
        assert!(plan.services[0].fields.is_empty());
    }

    #[test]
    fn deployed_service_is_unchanged() {
        let desired = [web(true, ""), simple("other", "busybox:1")];
        let (records, instances) = deployed(&desired);
        let plan = plan(&desired, &records, &instances, true);
        assert_eq!(
            order(&plan),
            [
                ("other", ServiceAction::Unchanged),
                ("web", ServiceAction::Unchanged)
            ]
        );
        assert!(
            plan.services
                .iter()
                .flat_map(|s| &s.components)
                .all(|c| c.change == Change::Unchanged)
        );
        assert!(plan.is_noop());
    }

    #[test]
    fn image_change_is_a_field_change_with_both_values() {
        let (records, instances) = deployed(&[simple("hello", "nginx:1.26")]);
        let plan = plan(
            &[simple("hello", "nginx:1.27")],
            &records,
            &instances,
            false,
        );
        assert_eq!(order(&plan), [("hello", ServiceAction::Update)]);
        let c = change(&plan, "hello", "app");
        assert_eq!(fields(c), [("image", "nginx:1.26", "nginx:1.27")]);
        assert!(matches!(c, Change::Update { recreate: true, .. }));
    }

    #[test]
    fn env_keys_added_removed_and_changed_are_listed_per_key() {
        let old = web(true, "");
        let mut new = old.clone();
        let env = &mut new.components[0].env;
        env.insert("RUST_LOG".into(), "debug".into());
        env.remove("MODE");
        env.insert("EXTRA".into(), "1".into());
        let (records, instances) = deployed(&[old]);
        let plan = plan(&[new], &records, &instances, false);
        assert_eq!(
            fields(change(&plan, "web", "api")),
            [
                ("env.EXTRA", UNSET, "1"),
                ("env.MODE", "prod", UNSET),
                ("env.RUST_LOG", "info", "debug"),
            ]
        );
        assert_eq!(change(&plan, "web", "worker"), &Change::Unchanged);
    }

    #[test]
    fn port_change_shows_canonical_ports() {
        let old = web(true, "");
        let new = def(&toml_with_ports(&["127.0.0.1:9090:8080", "53:53/udp"]));
        let (records, instances) = deployed(&[old]);
        let plan = plan(&[new], &records, &instances, false);
        assert_eq!(
            fields(change(&plan, "web", "api")),
            [(
                "ports",
                "127.0.0.1:8080:8080",
                "127.0.0.1:9090:8080, 53:53/udp"
            )]
        );
    }

    /// `web` with the api's ports replaced.
    fn toml_with_ports(ports: &[&str]) -> String {
        let list: Vec<String> = ports.iter().map(|p| format!("{p:?}")).collect();
        format!(
            r#"
name = "web"
[[components]]
name = "api"
image = "registry.example/web:1.0"
cmd = ["serve", "--port", "8080"]
env = {{ RUST_LOG = "info", MODE = "prod" }}
ports = [{}]
[[components]]
name = "worker"
image = "registry.example/web:1.0"
cmd = ["work"]
"#,
            list.join(", ")
        )
    }

    #[test]
    fn fields_come_in_the_documented_order() {
        let from = def(r#"
name = "s"
[[components]]
name = "c"
image = "a:1"
cmd = ["x"]
env = { A = "1" }
ports = ["80:80"]
volumes = ["/srv/s:/data"]
network = "n1"
restart = "always"
memory = "256M"
"#);
        // Every field changes, which no valid definition does (a VM mounts
        // no volumes): the VM's fields are set by hand.
        let mut to = def(r#"
name = "s"
[[components]]
name = "c"
image = "a:2"
cmd = ["x", "y z"]
env = { A = "2" }
ports = []
volumes = ["/srv/s:/data:ro,z"]
user = "0:0"
restart = "no"
memory = "512M"
vcpus = 2

[[components.routes]]
hostname = "s.example"
port = 80
public = true
"#);
        let c = &mut to.components[0];
        c.runtime = RuntimeKind::Unikernel;
        c.kernel = Some("vmlinuz".into());
        c.initrd = Some("initrd.img".into());
        c.append = Some("console=ttyS0".into());
        let diff = diff_components(&from.components[0], &to.components[0]);
        let got: Vec<_> = diff
            .iter()
            .map(|f| (f.field.as_str(), f.from.as_str(), f.to.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("runtime", "container", "unikernel"),
                ("image", "a:1", "a:2"),
                ("kernel", UNSET, "vmlinuz"),
                ("initrd", UNSET, "initrd.img"),
                ("append", UNSET, "console=ttyS0"),
                ("cmd", r#"["x"]"#, r#"["x", "y z"]"#),
                ("env.A", "1", "2"),
                ("ports", "80:80", NONE),
                ("volumes", "/srv/s:/data", "/srv/s:/data:ro,z"),
                ("network", "n1", UNSET),
                ("user", UNSET, "0:0"),
                ("restart", "always", "no"),
                ("memory", "256M", "512M"),
                ("vcpus", UNSET, "2"),
                ("routes", NONE, "s.example:80 public"),
            ]
        );
        assert!(diff_components(&from.components[0], &from.components[0]).is_empty());
    }

    /// A unikernel `vm` of service `vm` booting `vmlinuz` with `append`,
    /// without a disk.
    fn kernel_vm(append: &str) -> ServiceDef {
        def(&format!(
            "name = \"vm\"\n[[components]]\nname = \"app\"\nruntime = \"unikernel\"\nkernel = \"vmlinuz\"\nappend = \"{append}\"\n"
        ))
    }

    #[test]
    fn kernel_command_line_change_recreates_the_vm() {
        let (records, instances) = deployed(&[kernel_vm("console=ttyS0")]);
        let same = plan(&[kernel_vm("console=ttyS0")], &records, &instances, false);
        assert!(same.is_noop(), "{same:?}");

        let changed = plan(
            &[kernel_vm("console=ttyS0 quiet")],
            &records,
            &instances,
            false,
        );
        assert_eq!(order(&changed), [("vm", ServiceAction::Update)]);
        let c = change(&changed, "vm", "app");
        assert_eq!(
            fields(c),
            [("append", "console=ttyS0", "console=ttyS0 quiet")]
        );
        assert!(matches!(c, Change::Update { recreate: true, .. }));

        // Adding a disk shows the image going from unset.
        let with_disk = def(
            "name = \"vm\"\n[[components]]\nname = \"app\"\nruntime = \"unikernel\"\nkernel = \"vmlinuz\"\nappend = \"console=ttyS0\"\nimage = \"data.img\"\n",
        );
        let disk = plan(&[with_disk], &records, &instances, false);
        assert_eq!(
            fields(change(&disk, "vm", "app")),
            [("image", UNSET, "data.img")]
        );
    }

    #[test]
    fn equal_memory_written_differently_is_no_change() {
        let a = def("name = \"s\"\n[[components]]\nname = \"c\"\nimage = \"i\"\nmemory = \"1G\"\n");
        let b =
            def("name = \"s\"\n[[components]]\nname = \"c\"\nimage = \"i\"\nmemory = \"1024M\"\n");
        assert!(diff_components(&a.components[0], &b.components[0]).is_empty());
    }

    #[test]
    fn component_added_and_removed() {
        let old = def(r#"
name = "svc"
[[components]]
name = "api"
image = "i:1"
[[components]]
name = "legacy"
image = "i:1"
"#);
        let new = def(r#"
name = "svc"
[[components]]
name = "api"
image = "i:1"
[[components]]
name = "cache"
image = "redis:7"
"#);
        let (records, instances) = deployed(&[old]);
        let plan = plan(&[new], &records, &instances, false);
        assert_eq!(order(&plan), [("svc", ServiceAction::Update)]);
        let comps: Vec<_> = plan.services[0]
            .components
            .iter()
            .map(|c| (c.component.as_str(), c.change.as_str()))
            .collect();
        assert_eq!(
            comps,
            [
                ("api", "unchanged"),
                ("cache", "create"),
                ("legacy", "remove")
            ]
        );
        assert_eq!(
            change(&plan, "svc", "cache"),
            &Change::Create {
                reason: CreateReason::New
            }
        );
    }

    #[test]
    fn recorded_component_without_instance_is_created() {
        let desired = web(true, "");
        let (records, mut instances) = deployed(std::slice::from_ref(&desired));
        instances.retain(|i| i.name != "web-worker");
        let plan = plan(&[desired], &records, &instances, false);
        assert_eq!(
            change(&plan, "web", "worker"),
            &Change::Create {
                reason: CreateReason::InstanceMissing
            }
        );
        assert_eq!(change(&plan, "web", "api"), &Change::Unchanged);
        assert_eq!(plan.services[0].action, ServiceAction::Update);
    }

    #[test]
    fn staged_leftover_counts_as_the_instance() {
        let desired = web(true, "");
        let (records, mut instances) = deployed(std::slice::from_ref(&desired));
        for i in &mut instances {
            if i.name == "web-worker" {
                i.name = format!("web-worker{STAGED_SUFFIX}");
            }
        }
        let plan = plan(&[desired], &records, &instances, false);
        assert_eq!(change(&plan, "web", "worker"), &Change::Unchanged);
    }

    #[test]
    fn stale_spec_hash_label_is_an_instance_update() {
        let desired = simple("hello", "nginx:1.27");
        let (records, mut instances) = deployed(std::slice::from_ref(&desired));
        instances[0].labels.insert(
            labels::SPEC_HASH.to_string(),
            "0123456789abcdef0123".to_string(),
        );
        let stale = plan(std::slice::from_ref(&desired), &records, &instances, false);
        let c = change(&stale, "hello", "app");
        let hash = desired.components[0].spec_hash();
        let to = format!("spec {}", &hash[..12]);
        assert_eq!(fields(c), [("instance", "spec 0123456789ab", to.as_str())]);
        assert!(matches!(c, Change::Update { recreate: true, .. }));

        // No label at all: the same, from "(unset)".
        instances[0].labels.remove(labels::SPEC_HASH);
        let unlabelled = plan(&[desired], &records, &instances, false);
        let from = format!("spec {UNSET}");
        assert_eq!(
            fields(change(&unlabelled, "hello", "app")),
            [("instance", from.as_str(), to.as_str())]
        );
    }

    #[test]
    fn adopted_instance_is_vouched_for_by_id() {
        let desired = simple("hello", "nginx:1.27");
        let recorded = record(&desired);
        // Adopted: no labels, but the registry recorded its id.
        let mut adopted = instance("hello", &desired.components[0], true);
        adopted.labels.clear();
        let same = plan(
            std::slice::from_ref(&desired),
            std::slice::from_ref(&recorded),
            std::slice::from_ref(&adopted),
            false,
        );
        assert_eq!(change(&same, "hello", "app"), &Change::Unchanged);
        // A changed definition replaces it.
        let newer = simple("hello", "nginx:1.28");
        let update = plan(
            &[newer],
            std::slice::from_ref(&recorded),
            std::slice::from_ref(&adopted),
            false,
        );
        assert!(
            matches!(
                change(&update, "hello", "app"),
                Change::Update { recreate: true, .. }
            ),
            "{update:?}"
        );
        // Another id under that name is still a stranger.
        adopted.id = "someone-else".into();
        let conflict = plan(&[desired], &[recorded], &[adopted], false);
        assert!(matches!(
            change(&conflict, "hello", "app"),
            Change::Conflict { .. }
        ));
    }

    #[test]
    fn another_services_instance_of_the_same_name_is_a_conflict() {
        // `ux-web`/`db` runs; `ux` with `web-db` would be the same instance.
        let theirs = def("name = \"ux-web\"\n[[components]]\nname = \"db\"\nimage = \"db:1\"\n");
        let ours = def("name = \"ux\"\n[[components]]\nname = \"web-db\"\nimage = \"db:1\"\n");
        let (records, instances) = deployed(std::slice::from_ref(&theirs));
        let p = plan(&[theirs.clone(), ours.clone()], &records, &instances, false);
        assert_eq!(change(&p, "ux-web", "db"), &Change::Unchanged);
        assert!(
            matches!(change(&p, "ux", "web-db"), Change::Conflict { reason }
                if reason.contains("ux-web-db") && reason.contains("\"ux-web\"") && reason.contains("rename")),
            "{p:?}"
        );
        // The same when only the runtime holds the other's instance (its
        // labels say whose it is).
        let p = plan(std::slice::from_ref(&ours), &[], &instances, false);
        assert!(
            matches!(change(&p, "ux", "web-db"), Change::Conflict { reason }
                if reason.contains("component \"db\" of service \"ux-web\"")),
            "{p:?}"
        );
    }

    #[test]
    fn unmanaged_instance_is_a_conflict() {
        let desired = simple("hello", "nginx:1.27");
        let mut stranger = instance("hello", &desired.components[0], true);
        stranger.labels.clear();
        let plan = plan(&[desired], &[], &[stranger], false);
        let c = change(&plan, "hello", "app");
        assert!(
            matches!(c, Change::Conflict { reason } if reason.contains("hello-app") && reason.contains("does not manage")),
            "{c:?}"
        );
        assert_eq!(plan.counts().conflict, 1);
        assert!(!plan.is_noop());
    }

    #[test]
    fn active_toggled_stops_and_starts() {
        // Deployed active and running; now inactive: stop.
        let (records, instances) = deployed(&[web(true, "")]);
        let plan_stop = plan(&[web(false, "")], &records, &instances, false);
        assert_eq!(change(&plan_stop, "web", "api"), &Change::Stop);
        assert_eq!(change(&plan_stop, "web", "worker"), &Change::Stop);
        assert_eq!(
            plan_stop.services[0].fields,
            [FieldChange::new("active", "true", "false")]
        );
        assert_eq!(plan_stop.services[0].action, ServiceAction::Update);

        // Deployed inactive (stopped); now active: start.
        let (records, instances) = deployed(&[web(false, "")]);
        let plan_start = plan(&[web(true, "")], &records, &instances, false);
        assert_eq!(change(&plan_start, "web", "api"), &Change::Start);

        // Active all along but the instance stopped: start, nothing recorded changes.
        let (records, mut instances) = deployed(&[web(true, "")]);
        instances[0].state = InstanceState::Exited;
        let plan_again = plan(&[web(true, "")], &records, &instances, false);
        assert_eq!(change(&plan_again, "web", "api"), &Change::Start);
        assert_eq!(change(&plan_again, "web", "worker"), &Change::Unchanged);
        assert!(plan_again.services[0].fields.is_empty());
    }

    #[test]
    fn routes_only_change_keeps_the_instance() {
        let route = "[[components.routes]]\nhostname = \"web.example\"\nport = 8080\n";
        let (records, instances) = deployed(&[web(true, "")]);
        let plan = plan(&[web(true, route)], &records, &instances, false);
        let c = change(&plan, "web", "api");
        assert_eq!(fields(c), [("routes", NONE, "web.example:8080")]);
        assert!(matches!(
            c,
            Change::Update {
                recreate: false,
                ..
            }
        ));
    }

    #[test]
    fn prune_lists_removals_first_and_no_prune_keeps_last() {
        let desired = [simple("beta", "b:1"), simple("alpha", "a:1")];
        let (records, instances) = deployed(&[
            simple("zeta", "z:1"),
            simple("alpha", "a:1"),
            simple("aardvark", "x:1"),
        ]);

        let pruned = plan(&desired, &records, &instances, true);
        assert_eq!(
            order(&pruned),
            [
                ("aardvark", ServiceAction::Remove),
                ("zeta", ServiceAction::Remove),
                ("alpha", ServiceAction::Unchanged),
                ("beta", ServiceAction::Create),
            ]
        );
        assert_eq!(change(&pruned, "zeta", "app"), &Change::Remove);

        let kept = plan(&desired, &records, &instances, false);
        assert_eq!(
            order(&kept),
            [
                ("alpha", ServiceAction::Unchanged),
                ("beta", ServiceAction::Create),
                ("aardvark", ServiceAction::Keep),
                ("zeta", ServiceAction::Keep),
            ]
        );
        assert_eq!(change(&kept, "zeta", "app"), &Change::Unchanged);
    }

    #[test]
    fn is_noop_only_when_everything_is_unchanged_or_kept() {
        let (records, instances) = deployed(&[simple("a", "a:1"), simple("b", "b:1")]);
        assert!(plan(&[simple("a", "a:1")], &records, &instances, false).is_noop());
        assert!(!plan(&[simple("a", "a:1")], &records, &instances, true).is_noop());
        assert!(!plan(&[simple("a", "a:2")], &records, &instances, false).is_noop());
        assert!(plan(&[], &[], &[], true).is_noop());
    }

    #[test]
    fn counts_tally_components_by_change() {
        let old = def(r#"
name = "svc"
[[components]]
name = "keep"
image = "i:1"
[[components]]
name = "bump"
image = "i:1"
[[components]]
name = "gone"
image = "i:1"
[[components]]
name = "lost"
image = "i:1"
"#);
        let new = def(r#"
name = "svc"
[[components]]
name = "keep"
image = "i:1"
[[components]]
name = "bump"
image = "i:2"
[[components]]
name = "lost"
image = "i:1"
[[components]]
name = "fresh"
image = "i:1"
"#);
        let (mut records, mut instances) = deployed(&[old, simple("old", "o:1")]);
        instances.retain(|i| i.name != "svc-lost");
        let extra = simple("paused", "p:1");
        records.push(record(&extra));
        instances.push(instance("paused", &extra.components[0], false));

        let plan = plan(&[new, extra], &records, &instances, true);
        assert_eq!(
            plan.counts(),
            PlanCounts {
                create: 2,
                update: 1,
                start: 1,
                stop: 0,
                record: 0,
                remove: 2,
                unchanged: 1,
                conflict: 0,
            }
        );
    }

    #[test]
    fn json_names_the_change_beside_the_component() {
        let (records, instances) = deployed(&[simple("hello", "nginx:1.26")]);
        let plan = plan(
            &[simple("hello", "nginx:1.27")],
            &records,
            &instances,
            false,
        );
        let json = serde_json::to_value(&plan).expect("serialize");
        assert_eq!(json["services"][0]["action"], "update");
        let comp = &json["services"][0]["components"][0];
        assert_eq!(comp["component"], "app");
        assert_eq!(comp["change"], "update");
        assert_eq!(comp["recreate"], true);
        assert_eq!(comp["fields"][0]["field"], "image");
        assert_eq!(comp["fields"][0]["to"], "nginx:1.27");

        let created = serde_json::to_value(self::plan(&[simple("x", "i")], &[], &[], false))
            .expect("serialize");
        assert_eq!(created["services"][0]["components"][0]["reason"], "new");
    }
}
