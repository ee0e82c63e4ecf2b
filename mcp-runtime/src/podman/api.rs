//! The libpod JSON MCP sends and receives, and its mapping to and from the
//! backend-neutral types of [`crate::spec`].
//!
//! Only the fields MCP uses are declared; everything else podman sends is
//! ignored. Go encodes empty slices and maps as `null`, so every collection
//! field accepts `null` as empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::spec::{InstanceDetails, InstanceInfo, InstanceState};
use crate::{PortMapping, VolumeMount};
use crate::{RuntimeError, RuntimeKind, RuntimeResult};

/// Deserializes a value that Go may send as `null`, mapping `null` to the default.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

// ---------------------------------------------------------------------------
// Errors and versions
// ---------------------------------------------------------------------------

/// The body of a libpod error answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    /// The full message.
    #[serde(default)]
    pub message: String,
    /// The root cause, such as `no such container`.
    #[serde(default)]
    pub cause: String,
}

/// The message to report for an error answer: the libpod message when the
/// body is a libpod error, else the body as text.
pub fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) if !e.message.is_empty() => e.message,
        Ok(e) if !e.cause.is_empty() => e.cause,
        _ => {
            let text = String::from_utf8_lossy(body).trim().to_string();
            if text.is_empty() {
                "no message".to_string()
            } else {
                text
            }
        }
    }
}

/// One JSON object of the `POST /libpod/images/pull` progress stream.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PullReport {
    /// A progress line.
    #[serde(default)]
    pub stream: String,
    /// Set when the pull failed.
    #[serde(default)]
    pub error: String,
    /// Image ids, in the last object of a successful pull.
    #[serde(default, deserialize_with = "nullable")]
    pub images: Vec<String>,
}

/// `POST /libpod/containers/create` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateResponse {
    /// The new container's id.
    #[serde(rename = "Id")]
    pub id: String,
    /// Warnings podman had.
    #[serde(rename = "Warnings", default, deserialize_with = "nullable")]
    pub warnings: Vec<String>,
}

// ---------------------------------------------------------------------------
// Create: the SpecGenerator
// ---------------------------------------------------------------------------

/// The body of `POST /libpod/containers/create` (a subset of libpod's SpecGenerator).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SpecGenerator {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Command; absent to use the image's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Environment.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Published ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub portmappings: Vec<SpecPortMapping>,
    /// Bind mounts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<SpecMount>,
    /// Named volumes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<SpecNamedVolume>,
    /// Networks to join, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub networks: Option<BTreeMap<String, serde_json::Map<String, serde_json::Value>>>,
    /// Network namespace mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<SpecNamespace>,
    /// User to run as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Restart policy name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    /// Retries for `on-failure`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_tries: Option<u32>,
    /// Resource limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_limits: Option<SpecResourceLimits>,
    /// The container's health check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthconfig: Option<SpecHealthConfig>,
}

/// A health check in a SpecGenerator (libpod's `manifest.Schema2HealthConfig`:
/// Go field names, spans in nanoseconds).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct SpecHealthConfig {
    /// `["CMD", program, args...]`: exec form, no shell.
    pub test: Vec<String>,
    /// Nanoseconds between checks.
    pub interval: i64,
    /// Nanoseconds one check may take.
    pub timeout: i64,
    /// Nanoseconds after start during which failures do not count.
    pub start_period: i64,
    /// Consecutive failures before the container is unhealthy.
    pub retries: u32,
}

/// Nanoseconds of `d` for Go's `time.Duration` (an `i64`).
fn go_duration(what: &str, d: std::time::Duration) -> RuntimeResult<i64> {
    i64::try_from(d.as_nanos())
        .map_err(|_| RuntimeError::Invalid(format!("health check {what} {d:?} is too long")))
}

impl SpecHealthConfig {
    /// The health config for `health`; its command must not be empty.
    pub fn from_spec(name: &str, health: &crate::HealthSpec) -> RuntimeResult<SpecHealthConfig> {
        if health.command.first().is_none_or(String::is_empty) {
            return Err(RuntimeError::Invalid(format!(
                "instance {name}: the health check command is empty"
            )));
        }
        let mut test = Vec::with_capacity(health.command.len() + 1);
        test.push("CMD".to_string());
        test.extend(health.command.iter().cloned());
        Ok(SpecHealthConfig {
            test,
            interval: go_duration("interval", health.interval)?,
            timeout: go_duration("timeout", health.timeout)?,
            start_period: go_duration("start period", health.start_period)?,
            retries: health.retries,
        })
    }
}

/// A port mapping in a SpecGenerator.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpecPortMapping {
    /// Host address; absent for all addresses.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// A bind mount in a SpecGenerator (an OCI mount).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpecMount {
    /// Path inside the container.
    pub destination: String,
    /// Host path.
    pub source: String,
    /// Always `bind`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Mount options.
    pub options: Vec<String>,
}

/// A named volume in a SpecGenerator.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpecNamedVolume {
    /// Volume name (created if missing).
    #[serde(rename = "Name")]
    pub name: String,
    /// Path inside the container.
    #[serde(rename = "Dest")]
    pub dest: String,
    /// Mount options.
    #[serde(rename = "Options")]
    pub options: Vec<String>,
}

/// A namespace setting in a SpecGenerator.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpecNamespace {
    /// Mode, such as `bridge`.
    pub nsmode: String,
}

/// Resource limits in a SpecGenerator.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpecResourceLimits {
    /// Memory limits.
    pub memory: SpecMemory,
}

/// Memory limits in a SpecGenerator.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpecMemory {
    /// Limit in bytes.
    pub limit: i64,
}

/// Splits a restart policy such as `on-failure:3` into libpod's policy name and retry count.
pub fn parse_restart(restart: &str) -> RuntimeResult<(String, Option<u32>)> {
    let restart = restart.trim();
    match restart.split_once(':') {
        None => Ok((restart.to_string(), None)),
        Some(("on-failure", tries)) => {
            let tries = tries.trim().parse::<u32>().map_err(|_| {
                RuntimeError::Invalid(format!(
                    "restart policy {restart:?}: retry count must be a number"
                ))
            })?;
            Ok(("on-failure".to_string(), Some(tries)))
        }
        Some(_) => Err(RuntimeError::Invalid(format!(
            "restart policy {restart:?}: only on-failure takes a retry count"
        ))),
    }
}

impl SpecGenerator {
    /// The SpecGenerator for `spec`. `vcpus` and `kernel` do not apply to
    /// containers and are ignored; `health` becomes the container's own
    /// health check.
    pub fn from_spec(spec: &crate::InstanceSpec) -> RuntimeResult<SpecGenerator> {
        if spec.name.is_empty() {
            return Err(RuntimeError::Invalid("instance name is empty".into()));
        }
        if spec.image.is_empty() {
            return Err(RuntimeError::Invalid(format!(
                "instance {}: image is empty",
                spec.name
            )));
        }
        let mut generator = SpecGenerator {
            name: spec.name.clone(),
            image: spec.image.clone(),
            command: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
            env: spec.env.clone(),
            labels: spec.labels.clone(),
            ..SpecGenerator::default()
        };
        for port in &spec.ports {
            generator.portmappings.push(SpecPortMapping {
                host_ip: port.host_ip.clone(),
                host_port: port.host_port,
                container_port: port.container_port,
                protocol: if port.protocol.is_empty() {
                    "tcp".to_string()
                } else {
                    port.protocol.to_ascii_lowercase()
                },
            });
        }
        for volume in &spec.volumes {
            if volume.source.starts_with('/') {
                generator.mounts.push(SpecMount {
                    destination: volume.destination.clone(),
                    source: volume.source.clone(),
                    kind: "bind".to_string(),
                    options: volume.options.clone(),
                });
            } else if volume.source.is_empty() {
                return Err(RuntimeError::Invalid(format!(
                    "instance {}: volume for {} has no source",
                    spec.name, volume.destination
                )));
            } else {
                generator.volumes.push(SpecNamedVolume {
                    name: volume.source.clone(),
                    dest: volume.destination.clone(),
                    options: volume.options.clone(),
                });
            }
        }
        if let Some(network) = spec.network.as_deref().filter(|n| !n.is_empty()) {
            generator.networks = Some(BTreeMap::from([(
                network.to_string(),
                serde_json::Map::new(),
            )]));
            generator.netns = Some(SpecNamespace {
                nsmode: "bridge".to_string(),
            });
        }
        generator.user = spec.user.clone().filter(|u| !u.is_empty());
        if let Some(restart) = spec.restart.as_deref().filter(|r| !r.trim().is_empty()) {
            let (policy, tries) = parse_restart(restart)?;
            generator.restart_policy = Some(policy);
            generator.restart_tries = tries;
        }
        if let Some(health) = &spec.health {
            generator.healthconfig = Some(SpecHealthConfig::from_spec(&spec.name, health)?);
        }
        if let Some(memory) = spec.memory_bytes {
            let limit = i64::try_from(memory).map_err(|_| {
                RuntimeError::Invalid(format!("memory limit {memory} is too large"))
            })?;
            generator.resource_limits = Some(SpecResourceLimits {
                memory: SpecMemory { limit },
            });
        }
        Ok(generator)
    }
}

// ---------------------------------------------------------------------------
// Inspect
// ---------------------------------------------------------------------------

/// `GET /libpod/containers/{name}/json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerInspect {
    /// Full id.
    pub id: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Name.
    pub name: String,
    /// Image id.
    pub image: String,
    /// Image reference given at create time.
    pub image_name: String,
    /// Run state.
    pub state: InspectState,
    /// Configuration.
    pub config: InspectConfig,
    /// Host configuration.
    pub host_config: InspectHostConfig,
    /// Network settings.
    pub network_settings: InspectNetworkSettings,
    /// Mounts.
    #[serde(deserialize_with = "nullable")]
    pub mounts: Vec<InspectMount>,
}

/// `State` of [`ContainerInspect`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InspectState {
    /// State word.
    pub status: String,
    /// Whether it runs.
    pub running: bool,
    /// Exit code of the last run.
    pub exit_code: i64,
    /// Last start, RFC 3339 (year 1 when never started).
    pub started_at: String,
    /// Last exit, RFC 3339 (year 1 when never exited).
    pub finished_at: String,
    /// Health check state. (Podman 4 sends it twice, as `Health` and as
    /// `Healthcheck`; the second is ignored.)
    pub health: InspectHealth,
}

/// `State.Health` of [`ContainerInspect`]; also the answer of
/// `GET /libpod/containers/{name}/healthcheck`, which in podman 4.3 carries
/// only the status (no log).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InspectHealth {
    /// `healthy`, `unhealthy`, `starting`, or empty without a check.
    pub status: String,
    /// Consecutive failures counted so far.
    pub failing_streak: i64,
    /// The last few runs, oldest first.
    #[serde(deserialize_with = "nullable")]
    pub log: Vec<InspectHealthLog>,
}

/// One run of a health check in [`InspectHealth::log`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InspectHealthLog {
    /// Start, RFC 3339.
    pub start: String,
    /// End, RFC 3339.
    pub end: String,
    /// The command's exit code (-1 when podman gave up on it).
    pub exit_code: i64,
    /// What it printed (stdout and stderr).
    pub output: String,
}

impl InspectHealthLog {
    /// What to report of a run: its output, trimmed; for a failed run that
    /// printed nothing, says so. (Podman records every failure as exit code
    /// 1, and a run it gave up on as -1, so the code itself says little.)
    pub fn describe(&self) -> String {
        let output = self.output.trim();
        if output.is_empty() && self.exit_code != 0 {
            "the check failed and printed nothing".to_string()
        } else {
            output.to_string()
        }
    }
}

/// `Config` of [`ContainerInspect`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InspectConfig {
    /// User.
    pub user: String,
    /// Environment as `K=V`.
    #[serde(deserialize_with = "nullable")]
    pub env: Vec<String>,
    /// Command.
    #[serde(deserialize_with = "nullable")]
    pub cmd: Vec<String>,
    /// Image reference.
    pub image: String,
    /// Labels.
    #[serde(deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    /// Whether it has a terminal (then its logs are not multiplexed).
    pub tty: bool,
}

/// `HostConfig` of [`ContainerInspect`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InspectHostConfig {
    /// Restart policy.
    pub restart_policy: InspectRestartPolicy,
    /// Memory limit in bytes, 0 for none.
    pub memory: i64,
    /// Port bindings as configured.
    #[serde(deserialize_with = "nullable")]
    pub port_bindings: BTreeMap<String, Option<Vec<InspectHostPort>>>,
}

/// `HostConfig.RestartPolicy` of [`ContainerInspect`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InspectRestartPolicy {
    /// Policy name; empty for none.
    pub name: String,
    /// Retries for `on-failure`.
    pub maximum_retry_count: u32,
}

/// `NetworkSettings` of [`ContainerInspect`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InspectNetworkSettings {
    /// Published ports by `port/proto`.
    #[serde(deserialize_with = "nullable")]
    pub ports: BTreeMap<String, Option<Vec<InspectHostPort>>>,
    /// Networks joined, by name.
    #[serde(deserialize_with = "nullable")]
    pub networks: BTreeMap<String, serde_json::Value>,
}

/// One host binding of a published port.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InspectHostPort {
    /// Host address, empty for all.
    pub host_ip: String,
    /// Host port, as a string.
    pub host_port: String,
}

/// One entry of `Mounts` of [`ContainerInspect`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InspectMount {
    /// `bind` or `volume`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Volume name (named volumes).
    pub name: String,
    /// Host path.
    pub source: String,
    /// Path inside the container.
    pub destination: String,
    /// Mode options such as `z`.
    pub mode: String,
    /// Mount options.
    #[serde(deserialize_with = "nullable")]
    pub options: Vec<String>,
    /// Whether it is writable.
    #[serde(rename = "RW")]
    pub rw: bool,
}

/// Options podman adds by itself and that are not part of a definition.
const IMPLIED_MOUNT_OPTIONS: &[&str] = &["rbind", "bind", "rprivate", "private", "rw", "ro"];
/// Options podman adds by itself to named volumes.
const IMPLIED_VOLUME_OPTIONS: &[&str] = &["nosuid", "nodev"];

impl InspectMount {
    /// The mount as a [`VolumeMount`]: the volume name or host path, and the
    /// options that matter (`ro`/`rw` first).
    pub fn to_volume(&self) -> VolumeMount {
        let is_volume = self.kind == "volume";
        let source = if is_volume && !self.name.is_empty() {
            self.name.clone()
        } else {
            self.source.clone()
        };
        let mut options = vec![if self.rw { "rw" } else { "ro" }.to_string()];
        let extra = self
            .mode
            .split(',')
            .chain(self.options.iter().map(String::as_str))
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .filter(|o| !IMPLIED_MOUNT_OPTIONS.contains(o))
            .filter(|o| !(is_volume && IMPLIED_VOLUME_OPTIONS.contains(o)));
        for option in extra {
            if !options.iter().any(|o| o == option) {
                options.push(option.to_string());
            }
        }
        VolumeMount {
            source,
            destination: self.destination.clone(),
            options,
        }
    }
}

/// Parses a port map key such as `8080/tcp`.
fn parse_port_key(key: &str) -> Option<(u16, String)> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    Some((port.parse().ok()?, proto.to_string()))
}

/// Port mappings from an inspect port map, sorted.
fn ports_from_map(map: &BTreeMap<String, Option<Vec<InspectHostPort>>>) -> Vec<PortMapping> {
    let mut ports = Vec::new();
    for (key, bindings) in map {
        let Some((container_port, protocol)) = parse_port_key(key) else {
            continue;
        };
        for binding in bindings.iter().flatten() {
            let Ok(host_port) = binding.host_port.parse::<u16>() else {
                continue;
            };
            ports.push(PortMapping {
                host_ip: binding.host_ip.clone(),
                host_port,
                container_port,
                protocol: protocol.clone(),
            });
        }
    }
    sort_ports(&mut ports);
    ports
}

fn sort_ports(ports: &mut [PortMapping]) {
    ports.sort_by(|a, b| {
        (a.host_port, &a.protocol, &a.host_ip, a.container_port).cmp(&(
            b.host_port,
            &b.protocol,
            &b.host_ip,
            b.container_port,
        ))
    });
}

/// Unix seconds of an RFC 3339 time; 0 for Go's zero time, errors and anything before 1970.
pub fn rfc3339_to_unix(time: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time)
        .map(|t| t.timestamp())
        .unwrap_or(0)
        .max(0)
}

/// A human status line such as `Up 3 minutes` or `Exited (0) 2 hours ago`.
pub fn status_line(
    state: &InstanceState,
    exit_code: i64,
    started_at: i64,
    finished_at: i64,
) -> String {
    let now = chrono::Utc::now().timestamp();
    match state {
        InstanceState::Running if started_at > 0 => {
            format!("Up {}", human_duration(now - started_at))
        }
        InstanceState::Running => "Up".to_string(),
        InstanceState::Exited if finished_at > 0 => format!(
            "Exited ({exit_code}) {} ago",
            human_duration(now - finished_at)
        ),
        InstanceState::Exited => format!("Exited ({exit_code})"),
        InstanceState::Created => "Created".to_string(),
        InstanceState::Paused => "Paused".to_string(),
        InstanceState::Other(s) => {
            let mut chars = s.chars();
            chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect())
                .unwrap_or_default()
        }
    }
}

fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    match secs {
        0..60 => plural(secs, "second"),
        60..3600 => plural(secs / 60, "minute"),
        3600..86400 => plural(secs / 3600, "hour"),
        _ => plural(secs / 86400, "day"),
    }
}

/// The restart policy as MCP writes it: `on-failure:N` when there is a retry count.
fn restart_string(policy: &InspectRestartPolicy) -> String {
    if policy.name == "on-failure" && policy.maximum_retry_count > 0 {
        format!("on-failure:{}", policy.maximum_retry_count)
    } else {
        policy.name.clone()
    }
}

impl ContainerInspect {
    /// The backend-neutral description, with [`InstanceDetails`].
    pub fn into_info(self) -> InstanceInfo {
        let state = InstanceState::parse(&self.state.status);
        let exit_code = (state == InstanceState::Exited).then_some(self.state.exit_code);
        let created_at = rfc3339_to_unix(&self.created);
        let started_at = rfc3339_to_unix(&self.state.started_at);
        let finished_at = rfc3339_to_unix(&self.state.finished_at);
        let status = status_line(&state, self.state.exit_code, started_at, finished_at);
        let mut ports = ports_from_map(&self.network_settings.ports);
        if ports.is_empty() {
            ports = ports_from_map(&self.host_config.port_bindings);
        }
        let env = self
            .config
            .env
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.clone(), String::new()),
            })
            .collect();
        let details = InstanceDetails {
            cmd: self.config.cmd,
            env,
            volumes: self.mounts.iter().map(InspectMount::to_volume).collect(),
            networks: self.network_settings.networks.into_keys().collect(),
            user: self.config.user,
            restart: restart_string(&self.host_config.restart_policy),
            memory_bytes: u64::try_from(self.host_config.memory).unwrap_or(0),
        };
        let image = if self.image_name.is_empty() {
            self.config.image
        } else {
            self.image_name
        };
        InstanceInfo {
            id: self.id,
            name: self.name.trim_start_matches('/').to_string(),
            image,
            image_id: self.image,
            state,
            status,
            exit_code,
            labels: self.config.labels,
            ports,
            created_at,
            started_at,
            runtime: RuntimeKind::Container,
            details: Some(details),
        }
    }
}

// ---------------------------------------------------------------------------
// List
// ---------------------------------------------------------------------------

/// A time podman sends either as RFC 3339 text or as Unix seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Timestamp {
    /// Unix seconds.
    Unix(i64),
    /// RFC 3339.
    Text(String),
}

impl Default for Timestamp {
    fn default() -> Self {
        Timestamp::Unix(0)
    }
}

impl Timestamp {
    /// Unix seconds, 0 for Go's zero time.
    pub fn unix(&self) -> i64 {
        match self {
            Timestamp::Unix(secs) => (*secs).max(0),
            Timestamp::Text(text) => rfc3339_to_unix(text),
        }
    }
}

/// One entry of `GET /libpod/containers/json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListEntry {
    /// Full id.
    pub id: String,
    /// Names; the first is the name.
    #[serde(deserialize_with = "nullable")]
    pub names: Vec<String>,
    /// Image reference.
    pub image: String,
    /// Image id.
    #[serde(rename = "ImageID")]
    pub image_id: String,
    /// State word.
    pub state: String,
    /// Status line (often empty).
    pub status: String,
    /// Exit code.
    pub exit_code: i64,
    /// Labels.
    #[serde(deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    /// Published ports.
    #[serde(deserialize_with = "nullable")]
    pub ports: Vec<ListPort>,
    /// Creation time.
    pub created: Timestamp,
    /// Last start, Unix seconds.
    pub started_at: Timestamp,
    /// Last exit, Unix seconds.
    pub exited_at: Timestamp,
}

/// A published port range in a [`ListEntry`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ListPort {
    /// Host address, empty for all.
    pub host_ip: String,
    /// First container port.
    pub container_port: u16,
    /// First host port.
    pub host_port: u16,
    /// Number of consecutive ports.
    pub range: u16,
    /// `tcp` or `udp` (possibly comma-separated).
    pub protocol: String,
}

impl ListEntry {
    /// The backend-neutral description (without details).
    pub fn into_info(self) -> InstanceInfo {
        let state = InstanceState::parse(&self.state);
        let exit_code = (state == InstanceState::Exited).then_some(self.exit_code);
        let started_at = self.started_at.unix();
        let status = if self.status.is_empty() {
            status_line(&state, self.exit_code, started_at, self.exited_at.unix())
        } else {
            self.status
        };
        let mut ports = Vec::new();
        for port in &self.ports {
            let protocols = if port.protocol.is_empty() {
                "tcp"
            } else {
                port.protocol.as_str()
            };
            for protocol in protocols.split(',').filter(|p| !p.is_empty()) {
                for i in 0..port.range.max(1) {
                    let (Some(host_port), Some(container_port)) = (
                        port.host_port.checked_add(i),
                        port.container_port.checked_add(i),
                    ) else {
                        break;
                    };
                    ports.push(PortMapping {
                        host_ip: port.host_ip.clone(),
                        host_port,
                        container_port,
                        protocol: protocol.to_string(),
                    });
                }
            }
        }
        sort_ports(&mut ports);
        InstanceInfo {
            id: self.id,
            name: self
                .names
                .into_iter()
                .next()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            image: self.image,
            image_id: self.image_id,
            state,
            status,
            exit_code,
            labels: self.labels,
            ports,
            created_at: self.created.unix(),
            started_at,
            runtime: RuntimeKind::Container,
            details: None,
        }
    }
}

/// One line of `GET /libpod/events?stream=true`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EventMessage {
    /// What happened (`create`, `start`, `died`, `remove`, ...).
    #[serde(rename = "Action", default)]
    pub action: String,
    /// `container`, `image`, ...
    #[serde(rename = "Type", default)]
    pub kind: String,
    /// The object the event is about.
    #[serde(rename = "Actor", default)]
    pub actor: EventActor,
}

/// The object of an [`EventMessage`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EventActor {
    /// Its id.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Attributes such as `name` and `image`.
    #[serde(rename = "Attributes", default, deserialize_with = "nullable")]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

impl EventMessage {
    /// The backend-neutral event.
    pub fn into_event(self) -> crate::RuntimeEvent {
        let name = self
            .actor
            .attributes
            .get("name")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        crate::RuntimeEvent {
            // Podman's cleanup (its own `cleanup` event) follows a death.
            settling: self.action == "died",
            action: self.action,
            id: self.actor.id,
            name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InstanceSpec;
    use std::time::Duration;

    const INSPECT_RUNNING: &str = include_str!("testdata/inspect_running.json");
    const INSPECT_CREATED: &str = include_str!("testdata/inspect_created.json");
    const LIST: &str = include_str!("testdata/list.json");
    #[test]
    fn inspect_running_maps() {
        let c: ContainerInspect = serde_json::from_str(INSPECT_RUNNING).expect("parse");
        let info = c.into_info();
        assert_eq!(info.name, "web-api");
        assert_eq!(
            info.id,
            "e8cb024c681958fa51178c1d71c37eb15771effbe557291ffd01b084d8e9efec"
        );
        assert_eq!(info.image, "127.0.0.1:5000/mcp-test/busybox:1");
        assert!(info.image_id.starts_with("05953145256c"));
        assert_eq!(info.state, InstanceState::Running);
        assert!(info.status.starts_with("Up "), "{}", info.status);
        assert_eq!(info.exit_code, None);
        assert_eq!(info.label("mcp.service"), Some("web"));
        assert!(info.is_managed());
        assert_eq!(
            info.ports,
            vec![
                PortMapping {
                    host_ip: "127.0.0.1".into(),
                    host_port: 18081,
                    container_port: 8080,
                    protocol: "tcp".into()
                },
                PortMapping {
                    host_ip: "".into(),
                    host_port: 18082,
                    container_port: 9090,
                    protocol: "udp".into()
                },
            ]
        );
        assert_eq!(info.created_at, 1795468898);
        assert_eq!(info.started_at, 1795468898);
        let d = info.details.expect("details");
        assert_eq!(
            d.cmd,
            ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
        );
        assert_eq!(
            d.env.get("GREETING").map(String::as_str),
            Some("hello world")
        );
        assert_eq!(d.env.get("MODE").map(String::as_str), Some("a=b"));
        assert_eq!(d.env.get("PATH").map(String::as_str), Some("/bin"));
        assert_eq!(
            d.volumes,
            vec![
                VolumeMount {
                    source: "webcache".into(),
                    destination: "/cache".into(),
                    options: vec!["rw".into()]
                },
                VolumeMount {
                    source: "/tmp/pmx/data".into(),
                    destination: "/data".into(),
                    options: vec!["ro".into()]
                },
            ]
        );
        assert_eq!(d.networks, ["podman"]);
        assert_eq!(d.user, "1000:1000");
        assert_eq!(d.restart, "on-failure:3");
        assert_eq!(d.memory_bytes, 64 * 1024 * 1024);
    }

    #[test]
    fn inspect_created_maps() {
        let c: ContainerInspect = serde_json::from_str(INSPECT_CREATED).expect("parse");
        let info = c.into_info();
        assert_eq!(info.state, InstanceState::Created);
        assert_eq!(info.status, "Created");
        assert_eq!(info.started_at, 0);
        assert!(info.created_at > 0);
        assert_eq!(info.ports.len(), 1);
        assert_eq!(info.ports[0].host_port, 18081);
    }

    #[test]
    fn inspect_tolerates_nulls_and_missing_fields() {
        let json = r#"{"Id":"abc","Name":"/x","Created":"0001-01-01T00:00:00Z",
            "State":{"Status":"exited","ExitCode":3,"StartedAt":"2024-01-02T03:04:05Z"},
            "Config":{"Env":null,"Cmd":null,"Labels":null,"Image":"img"},
            "HostConfig":{"PortBindings":null,"RestartPolicy":{"Name":"on-failure","MaximumRetryCount":0}},
            "NetworkSettings":{"Ports":{"80/tcp":null},"Networks":null},"Mounts":null}"#;
        let c: ContainerInspect = serde_json::from_str(json).expect("parse");
        let info = c.into_info();
        assert_eq!(info.name, "x");
        assert_eq!(info.image, "img");
        assert_eq!(info.created_at, 0);
        assert_eq!(info.started_at, 1704164645);
        assert_eq!(info.exit_code, Some(3));
        assert!(info.ports.is_empty());
        let d = info.details.expect("details");
        assert_eq!(d.restart, "on-failure");
        assert!(d.env.is_empty() && d.cmd.is_empty() && d.volumes.is_empty());
    }

    #[test]
    fn list_maps() {
        let entries: Vec<ListEntry> = serde_json::from_str(LIST).expect("parse");
        assert_eq!(entries.len(), 1);
        let info = entries.into_iter().next().expect("one").into_info();
        assert_eq!(info.name, "web-api");
        assert_eq!(info.state, InstanceState::Running);
        assert_eq!(info.image, "127.0.0.1:5000/mcp-test/busybox:1");
        assert_eq!(info.label("mcp.component"), Some("api"));
        assert_eq!(info.ports.len(), 2);
        assert_eq!(info.ports[1].protocol, "udp");
        assert_eq!(info.created_at, 1795468898);
        assert_eq!(info.started_at, 1795468898);
        assert!(info.details.is_none());
    }

    #[test]
    fn list_expands_ranges_and_zero_times() {
        let json = r#"[{"Id":"a","Names":["n"],"State":"exited","ExitCode":1,
            "Created":1700000000,"StartedAt":-62135596800,"ExitedAt":-62135596800,
            "Ports":[{"host_ip":"","container_port":80,"host_port":8000,"range":3,"protocol":"tcp"}],
            "Labels":null}]"#;
        let entries: Vec<ListEntry> = serde_json::from_str(json).expect("parse");
        let info = entries.into_iter().next().expect("one").into_info();
        assert_eq!(info.created_at, 1700000000);
        assert_eq!(info.started_at, 0);
        assert_eq!(info.exit_code, Some(1));
        assert_eq!(info.status, "Exited (1)");
        let hosts: Vec<u16> = info.ports.iter().map(|p| p.host_port).collect();
        assert_eq!(hosts, [8000, 8001, 8002]);
        assert_eq!(info.ports[2].container_port, 82);
    }

    #[test]
    fn mount_options() {
        let m = InspectMount {
            kind: "bind".into(),
            source: "/src".into(),
            destination: "/dst".into(),
            mode: "z".into(),
            options: vec!["rbind".into(), "noexec".into()],
            rw: true,
            ..InspectMount::default()
        };
        assert_eq!(m.to_volume().options, ["rw", "z", "noexec"]);
    }

    #[test]
    fn spec_generator_full() {
        let spec = InstanceSpec {
            name: "svc-web".into(),
            runtime: RuntimeKind::Container,
            image: "127.0.0.1:5000/a/b:1".into(),
            cmd: vec!["sh".into(), "-c".into(), "true".into()],
            env: BTreeMap::from([("A".into(), "1".into())]),
            ports: vec![PortMapping {
                host_ip: "".into(),
                host_port: 8080,
                container_port: 80,
                protocol: "".into(),
            }],
            volumes: vec![
                VolumeMount {
                    source: "/srv".into(),
                    destination: "/data".into(),
                    options: vec!["ro".into()],
                },
                VolumeMount {
                    source: "cache".into(),
                    destination: "/cache".into(),
                    options: vec![],
                },
            ],
            network: Some("backend".into()),
            user: Some("1000".into()),
            restart: Some("on-failure:5".into()),
            memory_bytes: Some(1 << 20),
            vcpus: Some(2),
            labels: BTreeMap::from([("mcp.managed".into(), "true".into())]),
            kernel: None,
            health: Some(crate::HealthSpec {
                command: vec!["/bin/check".into(), "--quick".into()],
                interval: Duration::from_secs(10),
                timeout: Duration::from_millis(1500),
                retries: 3,
                start_period: Duration::from_secs(30),
            }),
        };
        let json =
            serde_json::to_value(SpecGenerator::from_spec(&spec).expect("spec")).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "name": "svc-web",
                "image": "127.0.0.1:5000/a/b:1",
                "command": ["sh", "-c", "true"],
                "env": {"A": "1"},
                "labels": {"mcp.managed": "true"},
                "portmappings": [{"host_port": 8080, "container_port": 80, "protocol": "tcp"}],
                "mounts": [{"destination": "/data", "source": "/srv", "type": "bind", "options": ["ro"]}],
                "volumes": [{"Name": "cache", "Dest": "/cache", "Options": []}],
                "networks": {"backend": {}},
                "netns": {"nsmode": "bridge"},
                "user": "1000",
                "restart_policy": "on-failure",
                "restart_tries": 5,
                "resource_limits": {"memory": {"limit": 1048576}},
                "healthconfig": {
                    "Test": ["CMD", "/bin/check", "--quick"],
                    "Interval": 10_000_000_000_i64,
                    "Timeout": 1_500_000_000_i64,
                    "StartPeriod": 30_000_000_000_i64,
                    "Retries": 3
                }
            })
        );
    }

    #[test]
    fn spec_generator_refuses_an_empty_health_command() {
        for command in [vec![], vec![String::new()]] {
            let spec = InstanceSpec {
                name: "a".into(),
                image: "img".into(),
                health: Some(crate::HealthSpec {
                    command,
                    ..crate::HealthSpec::default()
                }),
                ..InstanceSpec::default()
            };
            assert!(matches!(
                SpecGenerator::from_spec(&spec),
                Err(RuntimeError::Invalid(m)) if m.contains("health check command is empty")
            ));
        }
    }

    #[test]
    fn inspect_health_state() {
        // As podman 4.3.1 sends it: the state twice, under two names.
        let json = r#"{"State":{"Status":"running","Running":true,
            "Health":{"Status":"starting","FailingStreak":1,"Log":[
              {"Start":"2026-11-24T04:26:01.98Z","End":"2026-11-24T04:26:02.06Z","ExitCode":1,"Output":"broken\n"},
              {"Start":"2026-11-24T04:26:03.98Z","End":"2026-11-24T04:26:04.06Z","ExitCode":1,"Output":""}]},
            "Healthcheck":{"Status":"starting","FailingStreak":1,"Log":null}}}"#;
        let c: ContainerInspect = serde_json::from_str(json).expect("parse");
        assert_eq!(c.state.health.status, "starting");
        assert_eq!(c.state.health.failing_streak, 1);
        assert_eq!(c.state.health.log.len(), 2);
        assert_eq!(c.state.health.log[0].describe(), "broken");
        assert_eq!(
            c.state.health.log[1].describe(),
            "the check failed and printed nothing"
        );
        let none: ContainerInspect = serde_json::from_str(
            r#"{"State":{"Health":{"Status":"","FailingStreak":0,"Log":null}}}"#,
        )
        .expect("parse");
        assert!(none.state.health.log.is_empty());
        let ok = InspectHealthLog {
            exit_code: 0,
            ..InspectHealthLog::default()
        };
        assert_eq!(ok.describe(), "");
    }

    #[test]
    fn spec_generator_minimal() {
        let spec = InstanceSpec {
            name: "a".into(),
            image: "img".into(),
            ..InstanceSpec::default()
        };
        let json =
            serde_json::to_value(SpecGenerator::from_spec(&spec).expect("spec")).expect("json");
        assert_eq!(json, serde_json::json!({"name": "a", "image": "img"}));
    }

    #[test]
    fn restart_policies() {
        assert_eq!(
            parse_restart("always").expect("ok"),
            ("always".into(), None)
        );
        assert_eq!(
            parse_restart("on-failure:2").expect("ok"),
            ("on-failure".into(), Some(2))
        );
        assert!(parse_restart("on-failure:x").is_err());
        assert!(parse_restart("always:2").is_err());
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(br#"{"cause":"no such container","message":"no container with name or ID \"x\" found: no such container","response":404}"#),
            "no container with name or ID \"x\" found: no such container"
        );
        assert_eq!(error_message(b"plain text\n"), "plain text");
        assert_eq!(error_message(b""), "no message");
    }
}
