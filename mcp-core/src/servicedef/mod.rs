//! Service definitions: parses, validates and edits service definition files.
//!
//! A service is one TOML file (see the format in `SPEC.md` section 3): the
//! service's `name`, whether it should run (`active`), optional `node` and
//! `tier`, and one or more `[[components]]`, each a container or unikernel
//! VM named `<service>-<component>` on the node.
//!
//! - [`parse`] / [`load`] read and validate a file. Every problem is reported
//!   with the file, line and column of the offending key or value
//!   ([`ServiceDefError`]).
//! - [`ServiceDef::from_proto`] applies the same validation to a definition
//!   received over gRPC, and [`ServiceDef::to_proto`] produces one.
//! - [`set_active`] / [`write_active`] rewrite the `active` key, and
//!   [`set_image`] / [`write_image`] one component's `image`, and nothing
//!   else, keeping the file byte-for-byte (comments, order, spacing).
//! - [`ComponentDef::instance_spec`] and [`ComponentDef::spec_hash`] give what
//!   a runtime needs to create the component, and a stable digest of it.
//! - [`ComponentDef::health`] is the component's health check, if any
//!   ([`HealthCheck`]); [`ServiceDef::start_order`] orders the components by
//!   their `depends_on`.
//!
//! ```
//! use std::path::{Path, PathBuf};
//! use mcp_core::servicedef::{self, Tier};
//!
//! let def = servicedef::parse(r#"
//! name = "metacrypt"
//! active = true
//!
//! [[components]]
//! name = "api"
//! image = "registry.example:5000/metacrypt:1.4"
//! ports = ["127.0.0.1:8443:8443"]
//! memory = "256M"
//! "#, Path::new("metacrypt.toml"))?;
//!
//! assert_eq!(def.name, "metacrypt");
//! assert_eq!(def.tier, Tier::Worker);
//! let api = &def.components[0];
//! assert_eq!(api.ports[0].host_port, 8443);
//! assert_eq!(api.memory.as_ref().map(|m| m.bytes()), Some(256 << 20));
//! assert_eq!(api.instance_spec(&def.name).name, "metacrypt-api");
//!
//! let err = servicedef::parse("name = \"Bad\"\n", Path::new("bad.toml")).unwrap_err();
//! assert_eq!(err.to_string(),
//!     "bad.toml:1:8: invalid service name \"Bad\": must start with a lower-case letter or a digit");
//! # Ok::<(), servicedef::ServiceDefError>(())
//! ```
//!
//! Validation is written once: both readers (TOML and protobuf) produce the
//! same located raw model, which one validator turns into a [`ServiceDef`].

mod edit;
mod error;
mod raw;
mod validate;
mod values;
mod write;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::instance::{
    HealthSpec, InstanceSpec, KernelBoot, PortMapping, RuntimeKind, VolumeMount, instance_name,
    labels,
};
use mcp_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use edit::{set_active, set_image, write_active, write_image};
pub use error::{REQUEST_ORIGIN, ServiceDefError};
pub use values::{
    InvalidValue, MAX_INSTANCE_NAME_LEN, MAX_NAME_LEN, Memory, VOLUME_OPTIONS, format_port,
    format_volume, parse_port, parse_volume,
};
pub use write::to_toml;

pub use values::host_ips_overlap;

use values::format_span;
pub use values::name_problem;

/// A validated service definition.
///
/// Build one with [`parse`], [`load`] or [`ServiceDef::from_proto`]; the serde
/// implementations are for storage (the registry) and do not validate.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceDef {
    /// The service's name, `[a-z0-9][a-z0-9-]*`, at most 63 characters.
    pub name: String,
    /// The desired state: whether the service's components should run.
    /// Defaults to `true` when the file has no `active` key.
    pub active: bool,
    /// The node to run on (v1: the target node; v2: a placement pin).
    pub node: Option<String>,
    /// Where the service is placed (v2).
    #[serde(default)]
    pub tier: Tier,
    /// The components, in file order; at least one, names unique.
    pub components: Vec<ComponentDef>,
}

/// Placement tier of a service (v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Runs on the master's node.
    Core,
    /// Placed on a worker with capacity (the default).
    #[default]
    Worker,
}

impl Tier {
    /// `"core"` or `"worker"`, as in definitions and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Core => "core",
            Tier::Worker => "worker",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One component of a service: a container or a unikernel VM.
///
/// Fields missing from stored JSON take their defaults, so definitions
/// recorded by older versions still load.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ComponentDef {
    /// The component's name; the instance is `<service>-<component>`.
    pub name: String,
    /// Image reference. For a unikernel, the raw disk image it boots; with
    /// [`kernel`](Self::kernel), an extra raw disk to attach, empty for none.
    pub image: String,
    /// Container (podman, the default) or unikernel (QEMU).
    pub runtime: RuntimeKind,
    /// Command and arguments; empty for the image's default.
    pub cmd: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Mounts.
    pub volumes: Vec<VolumeMount>,
    /// Network to join.
    pub network: Option<String>,
    /// User (`uid[:gid]` or a name) to run as.
    pub user: Option<String>,
    /// Restart policy: `no`, `always`, `on-failure[:N]`, `unless-stopped`.
    pub restart: Option<String>,
    /// Memory limit (container) or size (unikernel).
    pub memory: Option<Memory>,
    /// Virtual CPUs (unikernel), 1 to 64.
    pub vcpus: Option<u32>,
    /// Edge routes (v2).
    pub routes: Vec<RouteDef>,
    /// Direct kernel boot (unikernel only): the kernel QEMU boots, as
    /// written in the definition. Unset to boot `image` instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Initial ramdisk for [`kernel`](Self::kernel), as written; only with a
    /// kernel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// Kernel command line for [`kernel`](Self::kernel); only with a kernel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub append: Option<String>,
    /// How to tell whether the component is healthy (`[components.health]`);
    /// `None` for no check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// Names of other components of the same service that this one depends
    /// on, as written: they start before it (see [`ServiceDef::start_order`]).
    /// Known, distinct, not itself, and without cycles.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

/// A component's health check: how to probe it, and how often.
///
/// Stored as JSON with the probe's fields inline and spans in whole
/// milliseconds: `{"kind":"http","port":8080,"path":"/healthz",
/// "interval_ms":10000,"timeout_ms":5000,"retries":3,"start_period_ms":0}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HealthCheck {
    /// What one check does.
    #[serde(flatten)]
    pub probe: HealthProbe,
    /// Time between two checks, greater than zero (default 10s).
    #[serde(rename = "interval_ms", with = "millis")]
    pub interval: Duration,
    /// Time one check may take before it counts as failed, greater than zero
    /// and at most [`interval`](Self::interval) (default 5s, or the interval
    /// when that is shorter).
    #[serde(rename = "timeout_ms", with = "millis")]
    pub timeout: Duration,
    /// Consecutive failed checks after which the component is unhealthy, 1 to
    /// 100 (default 3).
    pub retries: u32,
    /// Time after a start during which failed checks do not count
    /// (default 0s).
    #[serde(rename = "start_period_ms", with = "millis")]
    pub start_period: Duration,
}

/// What a health check does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum HealthProbe {
    /// Runs a program inside the container; healthy when it exits 0
    /// (`kind = "command"`; containers only).
    Command {
        /// The program and its arguments, exec form (no shell); not empty.
        argv: Vec<String>,
    },
    /// Opens a TCP connection to the port (`kind = "tcp"`).
    Tcp {
        /// Container port, published by the component.
        port: u16,
    },
    /// Sends an HTTP GET request (`kind = "http"`).
    Http {
        /// Container port, published by the component.
        port: u16,
        /// Request path, starting with `/` (default `/`).
        path: String,
        /// The expected status, 100 to 599; `None` for any 2xx.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
    },
}

impl HealthProbe {
    /// `"command"`, `"tcp"` or `"http"`, as in definitions and on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            HealthProbe::Command { .. } => "command",
            HealthProbe::Tcp { .. } => "tcp",
            HealthProbe::Http { .. } => "http",
        }
    }

    /// The container port probed (tcp and http).
    pub fn port(&self) -> Option<u16> {
        match self {
            HealthProbe::Command { .. } => None,
            HealthProbe::Tcp { port } | HealthProbe::Http { port, .. } => Some(*port),
        }
    }
}

impl HealthCheck {
    /// Default [`interval`](Self::interval): 10 seconds.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    /// Default [`timeout`](Self::timeout) (unless the interval is shorter):
    /// 5 seconds.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default [`retries`](Self::retries): 3.
    pub const DEFAULT_RETRIES: u32 = 3;
    /// Default [`start_period`](Self::start_period): none.
    pub const DEFAULT_START_PERIOD: Duration = Duration::ZERO;
    /// Default HTTP request path.
    pub const DEFAULT_PATH: &str = "/";

    /// A check with `probe` and every other setting at its default.
    pub fn new(probe: HealthProbe) -> HealthCheck {
        HealthCheck {
            probe,
            interval: Self::DEFAULT_INTERVAL,
            timeout: Self::default_timeout(Self::DEFAULT_INTERVAL),
            retries: Self::DEFAULT_RETRIES,
            start_period: Self::DEFAULT_START_PERIOD,
        }
    }

    /// The timeout when none is given: [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT),
    /// or `interval` when that is shorter.
    pub fn default_timeout(interval: Duration) -> Duration {
        Self::DEFAULT_TIMEOUT.min(interval)
    }

    /// The check as sent on the wire: spans in the definition's syntax
    /// (`"10s"`, `"1m 30s"`), every field explicit.
    pub fn to_proto(&self) -> pb::HealthCheck {
        let (command, port, path, status) = match &self.probe {
            HealthProbe::Command { argv } => (argv.clone(), 0, String::new(), 0),
            HealthProbe::Tcp { port } => (Vec::new(), u32::from(*port), String::new(), 0),
            HealthProbe::Http { port, path, status } => (
                Vec::new(),
                u32::from(*port),
                path.clone(),
                status.map_or(0, u32::from),
            ),
        };
        pb::HealthCheck {
            kind: self.probe.kind().to_string(),
            command,
            port,
            path,
            status,
            interval: format_span(self.interval),
            timeout: format_span(self.timeout),
            retries: self.retries,
            start_period: format_span(self.start_period),
        }
    }

    /// The check as the runtime runs it inside the instance: only a
    /// [`HealthProbe::Command`] is; tcp and http checks are probed from the
    /// node by the agent's health gate, so they give `None`.
    pub fn runtime_spec(&self) -> Option<HealthSpec> {
        match &self.probe {
            HealthProbe::Command { argv } => Some(HealthSpec {
                command: argv.clone(),
                interval: self.interval,
                timeout: self.timeout,
                retries: self.retries,
                start_period: self.start_period,
            }),
            HealthProbe::Tcp { .. } | HealthProbe::Http { .. } => None,
        }
    }

    /// The check's element of [`ComponentDef::spec_hash`]'s encoding.
    fn canonical(&self) -> serde_json::Value {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let probe = match &self.probe {
            HealthProbe::Command { argv } => serde_json::json!(["command", argv]),
            HealthProbe::Tcp { port } => serde_json::json!(["tcp", port]),
            HealthProbe::Http { port, path, status } => {
                serde_json::json!(["http", port, path, status])
            }
        };
        serde_json::json!([
            "health",
            probe,
            ms(self.interval),
            ms(self.timeout),
            self.retries,
            ms(self.start_period),
        ])
    }
}

/// Serde for a [`Duration`] as whole milliseconds (a `u64`).
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        let ms = u64::try_from(d.as_millis())
            .map_err(|_| serde::ser::Error::custom("duration too large"))?;
        serializer.serialize_u64(ms)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

/// A route for edge routing (v2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct RouteDef {
    /// Host name served, non-empty.
    pub hostname: String,
    /// Port of the component the route leads to, 1 to 65535.
    pub port: u16,
    /// Whether an edge node publishes the route.
    #[serde(default)]
    pub public: bool,
}

/// Parses and validates a definition's TOML text; `origin` names the file in
/// errors.
pub fn parse(source: &str, origin: &Path) -> Result<ServiceDef, ServiceDefError> {
    raw::from_toml(source)
        .and_then(validate::service)
        .map_err(|issue| ServiceDefError::from_issue(origin, source, issue))
}

/// Reads, parses and validates the definition file at `path`.
pub fn load(path: &Path) -> Result<ServiceDef, ServiceDefError> {
    let source = fs::read_to_string(path)
        .map_err(|e| ServiceDefError::io(path, "cannot read service definition", e))?;
    parse(&source, path)
}

/// Reads, parses and validates the definition file at `path`, a file of the
/// services directory: its `name` must be its file name without `.toml`,
/// since a service is looked up as `<services_dir>/<name>.toml` (a file
/// named otherwise would be deployed, but every later `mcp status NAME`
/// would miss it). A mismatch is an error at the `name` value.
pub fn load_named(path: &Path) -> Result<ServiceDef, ServiceDefError> {
    let source = fs::read_to_string(path)
        .map_err(|e| ServiceDefError::io(path, "cannot read service definition", e))?;
    let def = parse(&source, path)?;
    let stem = path.file_stem().map(|s| s.to_string_lossy());
    if stem.as_deref() != Some(def.name.as_str()) {
        let file = path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        return Err(at_name(
            path,
            &source,
            None,
            format!(
                "name {:?} differs from the file name {file:?}: a service is found as <services_dir>/<name>.toml; rename the file to {}.toml or set name = {:?}",
                def.name,
                def.name,
                stem.unwrap_or_default()
            ),
        ));
    }
    Ok(def)
}

/// A node's refusal of the definition in `source` (from `origin`), when
/// its `message` begins with the field path it is about
/// (`components[1].volumes[0]: ...`, as the agent names what only it can
/// judge): the same refusal at that value's `file:line:col`. `None` when
/// the message names no field of this file.
pub fn locate_refusal(origin: &Path, source: &str, message: &str) -> Option<ServiceDefError> {
    let (field, rest) = message.split_once(": ")?;
    let (component, field) = field.strip_prefix("components[")?.split_once("].")?;
    let component: usize = component.parse().ok()?;
    let raw = raw::from_toml(source).ok()?;
    let c = raw.components.get(component)?;
    let (name, index) = match field.split_once('[') {
        Some((name, index)) => (name, Some(index.strip_suffix(']')?.parse::<usize>().ok()?)),
        None => (field, None),
    };
    let loc = match (name, index) {
        ("volumes", Some(i)) => c.volumes.get(i)?.loc.clone(),
        ("ports", Some(i)) => c.ports.get(i)?.loc.clone(),
        ("image", None) => c.image.as_ref()?.loc.clone(),
        ("kernel", None) => c.kernel.as_ref()?.loc.clone(),
        ("initrd", None) => c.initrd.as_ref()?.loc.clone(),
        ("name", None) => c.name.as_ref()?.loc.clone(),
        _ => return None,
    };
    Some(ServiceDefError::from_issue(
        origin,
        source,
        raw::Issue::new(&loc, rest.to_string()),
    ))
}

/// An error in the valid definition `source` (from `origin`) at the value
/// of its `name`, or with `component`, of that component's `name`.
fn at_name(
    origin: &Path,
    source: &str,
    component: Option<&str>,
    message: String,
) -> ServiceDefError {
    let loc = raw::from_toml(source)
        .ok()
        .and_then(|raw| match component {
            None => raw.name.map(|n| n.loc),
            Some(c) => raw
                .components
                .into_iter()
                .find_map(|rc| rc.name.filter(|n| n.value == c).map(|n| n.loc)),
        })
        .unwrap_or(raw::Loc::Span(0..0));
    ServiceDefError::from_issue(origin, source, raw::Issue::new(&loc, message))
}

/// A component of one of several definitions: the definition's index and
/// the component's name.
pub type ComponentAt<'a> = (usize, &'a str);

/// Two components of different services in `defs` whose instance names are
/// the same: service and component names may both contain `-`, so `ux`
/// with component `web-db` and `ux-web` with component `db` would both be
/// `ux-web-db`. The first such pair.
pub fn shared_instance_name<'a>(
    defs: impl IntoIterator<Item = &'a ServiceDef>,
) -> Option<(ComponentAt<'a>, ComponentAt<'a>)> {
    let mut seen: HashMap<String, ComponentAt<'a>> = HashMap::new();
    for (i, def) in defs.into_iter().enumerate() {
        for c in &def.components {
            let name = instance_name(&def.name, &c.name);
            match seen.get(&name) {
                Some(&(j, other)) if j != i => return Some(((j, other), (i, &c.name))),
                Some(_) => {}
                None => {
                    seen.insert(name, (i, &c.name));
                }
            }
        }
    }
    None
}

/// The refusal of two services whose components `a` and `b` share an
/// instance name (see [`shared_instance_name`]).
pub fn shared_instance_name_message(a: (&str, &str), b: (&str, &str)) -> String {
    format!(
        "component {:?} of service {:?} and component {:?} of service {:?} would both be the instance {}: rename one of them",
        a.1,
        a.0,
        b.1,
        b.0,
        instance_name(a.0, a.1)
    )
}

/// Loads every `*.toml` definition in `dir`, in file-name order. Any
/// invalid file, a file whose service `name` is not its file name (so no
/// two files define one service), or two services whose components would
/// share an instance name, is an error that names the file(s); nothing is
/// returned then.
pub fn load_dir(dir: &Path) -> Result<Vec<(PathBuf, ServiceDef)>, ServiceDefError> {
    let entries = fs::read_dir(dir)
        .map_err(|e| ServiceDefError::io(dir, "cannot read the services directory", e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| ServiceDefError::io(dir, "cannot read the services directory", e))?;
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "toml") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    let mut defs: Vec<(PathBuf, ServiceDef)> = Vec::with_capacity(paths.len());
    for path in paths {
        // Named as its file, so no two files define one service.
        let def = load_named(&path)?;
        defs.push((path, def));
    }
    if let Some(((i, a), (j, b))) = shared_instance_name(defs.iter().map(|(_, d)| d)) {
        let (first, second) = (&defs[i], &defs[j]);
        let message = format!(
            "{} (in {})",
            shared_instance_name_message((&second.1.name, b), (&first.1.name, a)),
            first.0.display()
        );
        let source = fs::read_to_string(&second.0)
            .map_err(|e| ServiceDefError::io(&second.0, "cannot read service definition", e))?;
        return Err(at_name(&second.0, &source, Some(b), message));
    }
    Ok(defs)
}

impl ServiceDef {
    /// The definition as sent on the wire. Ports and volumes are in their
    /// canonical text forms ([`format_port`], [`format_volume`]), memory as
    /// written; unset optional fields are empty strings (and `vcpus` 0).
    pub fn to_proto(&self) -> pb::ServiceSpec {
        pb::ServiceSpec {
            name: self.name.clone(),
            active: self.active,
            node: self.node.clone().unwrap_or_default(),
            tier: self.tier.as_str().to_string(),
            components: self.components.iter().map(ComponentDef::to_proto).collect(),
        }
    }

    /// Validates a definition received on the wire, with exactly the rules
    /// [`parse`] applies to a file. Errors are
    /// [`ServiceDefError::InvalidRequest`], naming the field path
    /// (e.g. `components[1].ports[0]`).
    pub fn from_proto(spec: &pb::ServiceSpec) -> Result<ServiceDef, ServiceDefError> {
        validate::service(raw::from_proto(spec))
            .map_err(|issue| ServiceDefError::from_issue(Path::new(REQUEST_ORIGIN), "", issue))
    }

    /// The component called `name`.
    pub fn component(&self, name: &str) -> Option<&ComponentDef> {
        self.components.iter().find(|c| c.name == name)
    }

    /// The components in the order they start, as waves: every component
    /// of a wave depends only on components of earlier waves, and is in the
    /// earliest wave it can be; within a wave, components are in file order.
    /// A definition without `depends_on` is one wave.
    ///
    /// Validated definitions have no unknown names and no cycles. For one
    /// that was not validated (e.g. built by hand), names that are not
    /// components are ignored, and the components in a cycle or waiting for
    /// one come last, as one wave in file order.
    ///
    /// ```
    /// # use std::path::Path;
    /// let def = mcp_core::servicedef::parse(r#"
    /// name = "shop"
    /// [[components]]
    /// name = "web"
    /// image = "web:1"
    /// depends_on = ["api"]
    /// [[components]]
    /// name = "api"
    /// image = "api:1"
    /// depends_on = ["db", "cache"]
    /// [[components]]
    /// name = "db"
    /// image = "postgres:16"
    /// [[components]]
    /// name = "cache"
    /// image = "valkey:8"
    /// "#, Path::new("shop.toml"))?;
    /// let waves: Vec<Vec<&str>> = def
    ///     .start_order()
    ///     .iter()
    ///     .map(|wave| wave.iter().map(|c| c.name.as_str()).collect())
    ///     .collect();
    /// assert_eq!(waves, [vec!["db", "cache"], vec!["api"], vec!["web"]]);
    /// # Ok::<(), mcp_core::servicedef::ServiceDefError>(())
    /// ```
    pub fn start_order(&self) -> Vec<Vec<&ComponentDef>> {
        let n = self.components.len();
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(n);
        for (i, c) in self.components.iter().enumerate() {
            index.entry(c.name.as_str()).or_insert(i);
        }
        // For each component, the components that wait for it, and how many
        // of its own dependencies have not started yet.
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut waiting: Vec<usize> = vec![0; n];
        for (i, c) in self.components.iter().enumerate() {
            let mut deps: Vec<usize> = c
                .depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect();
            deps.sort_unstable();
            deps.dedup();
            waiting[i] = deps.len();
            for d in deps {
                dependents[d].push(i);
            }
        }
        // Kahn's algorithm: a component's wave is one after the latest of
        // its dependencies'.
        let mut wave_of: Vec<Option<usize>> = vec![None; n];
        let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
        for &i in &ready {
            wave_of[i] = Some(0);
        }
        while let Some(i) = ready.pop() {
            let next = wave_of[i].map_or(0, |w| w + 1);
            for &j in &dependents[i] {
                wave_of[j] = Some(wave_of[j].map_or(next, |w| w.max(next)));
                waiting[j] -= 1;
                if waiting[j] == 0 {
                    ready.push(j);
                }
            }
        }
        let placed = (0..n)
            .filter(|&i| waiting[i] == 0)
            .filter_map(|i| wave_of[i])
            .max()
            .map_or(0, |w| w + 1);
        let mut waves: Vec<Vec<&ComponentDef>> = vec![Vec::new(); placed];
        // In a cycle, or waiting for one: last, together.
        let mut last: Vec<&ComponentDef> = Vec::new();
        for (i, c) in self.components.iter().enumerate() {
            match wave_of[i] {
                Some(w) if waiting[i] == 0 => waves[w].push(c),
                _ => last.push(c),
            }
        }
        if !last.is_empty() {
            waves.push(last);
        }
        waves
    }
}

/// What a caller who may not see secrets (a readonly token) is shown in
/// place of each environment value.
pub const REDACTED: &str = "<redacted>";

impl ComponentDef {
    /// This component with every environment value replaced by
    /// [`REDACTED`] (the keys stay): what a readonly caller is shown.
    pub fn redacted(mut self) -> ComponentDef {
        for value in self.env.values_mut() {
            *value = REDACTED.to_string();
        }
        self
    }

    /// The component as sent on the wire (see [`ServiceDef::to_proto`]).
    pub fn to_proto(&self) -> pb::ComponentSpec {
        pb::ComponentSpec {
            name: self.name.clone(),
            image: self.image.clone(),
            runtime: self.runtime.as_str().to_string(),
            cmd: self.cmd.clone(),
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ports: self.ports.iter().map(format_port).collect(),
            volumes: self.volumes.iter().map(format_volume).collect(),
            network: self.network.clone().unwrap_or_default(),
            user: self.user.clone().unwrap_or_default(),
            restart: self.restart.clone().unwrap_or_default(),
            memory: self
                .memory
                .as_ref()
                .map(|m| m.text().to_string())
                .unwrap_or_default(),
            vcpus: self.vcpus.unwrap_or(0),
            routes: self
                .routes
                .iter()
                .map(|r| pb::Route {
                    hostname: r.hostname.clone(),
                    port: u32::from(r.port),
                    public: r.public,
                })
                .collect(),
            kernel: self.kernel.clone().unwrap_or_default(),
            initrd: self.initrd.clone().unwrap_or_default(),
            append: self.append.clone().unwrap_or_default(),
            health: self.health.as_ref().map(HealthCheck::to_proto),
            depends_on: self.depends_on.clone(),
        }
    }

    /// What a runtime needs to create this component of `service`: named
    /// `<service>-<component>` and labelled as managed by MCP, with the
    /// service, component and [`spec_hash`](Self::spec_hash). With a
    /// [`kernel`](Self::kernel), the instance boots it directly (paths as
    /// written; `image`, possibly empty, is then an extra disk). A command
    /// health check becomes the instance's own
    /// ([`HealthCheck::runtime_spec`]); tcp and http checks do not.
    pub fn instance_spec(&self, service: &str) -> InstanceSpec {
        let labels = BTreeMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::SERVICE.to_string(), service.to_string()),
            (labels::COMPONENT.to_string(), self.name.clone()),
            (labels::SPEC_HASH.to_string(), self.spec_hash()),
        ]);
        InstanceSpec {
            name: instance_name(service, &self.name),
            runtime: self.runtime,
            image: self.image.clone(),
            cmd: self.cmd.clone(),
            env: self.env.clone(),
            ports: self.ports.clone(),
            volumes: self.volumes.clone(),
            network: self.network.clone(),
            user: self.user.clone(),
            restart: self.restart.clone(),
            memory_bytes: self.memory.as_ref().map(Memory::bytes),
            vcpus: self.vcpus,
            labels,
            kernel: self.kernel.as_ref().map(|kernel| KernelBoot {
                kernel: kernel.clone(),
                initrd: self.initrd.clone(),
                append: self.append.clone(),
            }),
            health: self.health.as_ref().and_then(HealthCheck::runtime_spec),
        }
    }

    /// A digest of everything that shapes the instance: lower-case hex
    /// SHA-256, 64 characters. Two definitions with the same digest create
    /// the same instance, so an unchanged digest means no recreate.
    ///
    /// Covered: image, runtime, cmd, env, ports, volumes, network, user,
    /// restart, memory (in bytes, so `"1G"` and `"1024M"` agree), vcpus,
    /// kernel, initrd and append, and the health check (it is part of the
    /// container's configuration, so changing it recreates the instance).
    /// Not covered: the name (it is the instance's identity), routes (the
    /// edge's business, not the instance's) and `depends_on` (it orders
    /// starts; the instance is the same).
    ///
    /// Stability: the digest is taken over an explicit canonical encoding,
    /// not over an in-memory layout or a map's iteration order: a JSON array
    /// whose first element is the encoding's version tag, then each field in
    /// the fixed order above; env as `[key, value]` pairs sorted by key;
    /// ports and volumes in their canonical text forms, in definition order;
    /// unset options as `null`. The kernel boot fields, added later, are
    /// appended only when one of them is set, as one more element
    /// `["kernel", kernel, initrd, append]`, so a component without them
    /// keeps the digest earlier versions gave it (no recreate on upgrade).
    /// The health check, added later still, is appended likewise only when
    /// set, after the kernel element: `["health", probe, interval_ms,
    /// timeout_ms, retries, start_period_ms]` with the probe as
    /// `["command", argv]`, `["tcp", port]` or `["http", port, path,
    /// status]` (status `null` for any 2xx).
    /// The same definition therefore gives the same digest in every process
    /// and every version of MCP. Changing the encoding means a new version
    /// tag (and every instance recreated once).
    pub fn spec_hash(&self) -> String {
        let mut canonical = serde_json::json!([
            "mcp-spec-hash/v1",
            self.image,
            self.runtime.as_str(),
            self.cmd,
            self.env
                .iter()
                .map(|(k, v)| [k.as_str(), v.as_str()])
                .collect::<Vec<_>>(),
            self.ports.iter().map(format_port).collect::<Vec<_>>(),
            self.volumes.iter().map(format_volume).collect::<Vec<_>>(),
            self.network,
            self.user,
            self.restart,
            self.memory.as_ref().map(Memory::bytes),
            self.vcpus,
        ]);
        let kernel_boot = self.kernel.is_some() || self.initrd.is_some() || self.append.is_some();
        if kernel_boot && let Some(fields) = canonical.as_array_mut() {
            fields.push(serde_json::json!([
                "kernel",
                self.kernel,
                self.initrd,
                self.append,
            ]));
        }
        if let Some(health) = &self.health
            && let Some(fields) = canonical.as_array_mut()
        {
            fields.push(health.canonical());
        }
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}
