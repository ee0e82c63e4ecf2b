//! The agent's configuration (`mcp-agent`).
//!
//! It is layered: built-in defaults (or the `--dev` defaults), then the
//! keys a `--config` file sets, then command-line flags. Every file key is
//! optional, so a file changes only what it names; unknown keys are errors
//! that name the file, line and column.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_core::config::server::{AuthFile, LimitsFile, Listen, TlsFile};
pub use mcp_core::config::server::{AuthSettings, LimitSettings, TlsSettings};
use mcp_core::config::{
    Bounds, ConfigError, DAY, DEFAULT_AGENT_PORT, DEPLOY_TIMEOUT_BOUNDS, bounded, parse_toml, read,
};
use mcp_core::placement::NodeRole;
use serde::{Deserialize, Serialize};

pub use mcp_core::daemon::LogFormat;
use toml::Spanned;

/// The agent's configuration, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentConfig {
    /// This node's name, reported in status and events.
    pub node_name: String,
    /// Where to listen (`listen`, `listen_interface`, `port`,
    /// `allow_wildcard`).
    pub listen: Listen,
    /// The address ports that name no host address are published on;
    /// `None` publishes them on every address.
    pub publish_address: Option<IpAddr>,
    /// The SQLite registry file.
    pub db: PathBuf,
    /// Root of the per-service file trees (`<srv_root>/<service>/`).
    pub srv_root: PathBuf,
    /// Podman settings.
    pub podman: PodmanSettings,
    /// Monitor settings.
    pub monitor: MonitorSettings,
    /// How deploys wait for what they change.
    pub deploy: DeploySettings,
    /// File transfer settings.
    pub files: FilesSettings,
    /// Unikernel (QEMU) settings.
    pub unikernel: UnikernelSettings,
    /// Log output format.
    pub log_format: LogFormat,
    /// Authentication and audit settings.
    pub auth: AuthSettings,
    /// TLS settings of the gRPC port.
    pub tls: TlsSettings,
    /// What definitions may ask of the host.
    pub security: SecuritySettings,
    /// How much of the agent one connection, one peer and all of them may
    /// hold, before any authentication.
    pub limits: LimitSettings,
    /// The fleet's master this node joins (`[master]`); `None` for a node
    /// on its own.
    pub master: Option<MasterLink>,
}

/// `[master]`: the master this node registers and heartbeats with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MasterLink {
    /// `host:port` of the master.
    pub address: String,
    /// The CA that signs the master's certificate; `None` only with
    /// `insecure`.
    pub ca_cert: Option<PathBuf>,
    /// Talk plaintext gRPC to the master (only when set explicitly).
    pub insecure: bool,
    /// The join token the master issued (`mcp-master token add NAME --role
    /// node`), read at every registration.
    pub token_file: PathBuf,
    /// What this node does in the fleet.
    pub role: NodeRole,
    /// The address the master dials for commands; `None` for the listen
    /// address.
    pub advertise: Option<SocketAddr>,
    /// Memory offered to services, in bytes; `None` for the machine's.
    pub memory: Option<u64>,
    /// CPUs offered to services; `None` for the machine's.
    pub cpus: Option<u32>,
}

/// What definitions may ask of the host (`[security]`).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct SecuritySettings {
    /// Directories the host side of a volume must lie in; empty for no
    /// restriction. Named volumes (podman's own) are not host paths and are
    /// always allowed.
    pub allowed_volume_roots: Vec<PathBuf>,
}

/// How the agent reaches podman.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodmanSettings {
    /// Path of podman's API socket.
    pub socket: PathBuf,
    /// Registries (`host[:port]`) to pull from without TLS verification.
    pub insecure_registries: Vec<String>,
    /// Grace period before a stopped container is killed.
    pub stop_timeout: Duration,
}

/// File transfer settings (`mcp push`, `mcp pull`, ...).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FilesSettings {
    /// Largest file a push may write, in bytes.
    pub max_file_size: u64,
}

/// Default [`FilesSettings::max_file_size`]: 8 GiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 8 << 30;

/// Deploy settings (`[deploy]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeploySettings {
    /// Longest a deploy waits for a changed component to be ready (running,
    /// and healthy when it has a health check) before it gives up and puts
    /// the previous version back.
    pub timeout: Duration,
    /// The observation window: how long a component without a health check
    /// must keep running after its start to count as ready.
    pub settle: Duration,
}

/// The default observation window ([`DeploySettings::settle`]): 5 s, as
/// Docker swarm's update monitor (Kamal waits 7 s, Nomad 10 s with its
/// checks). Without a health check, staying up is the only evidence a new
/// version works; a process that fails on a bad flag, a missing file or a
/// taken port, even an interpreter that loads slowly first, dies well
/// within it. Components that take longer to fail or to be usable should
/// have a health check, which replaces the window.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(5);

impl Default for DeploySettings {
    fn default() -> Self {
        DeploySettings {
            timeout: Duration::from_secs(300),
            settle: DEFAULT_SETTLE,
        }
    }
}

/// Monitor settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonitorSettings {
    /// Interval of the full sweep.
    pub interval: Duration,
    /// The alert program and its per-component rate limit.
    #[serde(flatten)]
    pub alerts: AlertSettings,
    /// How long event history is kept.
    pub event_retention: Duration,
}

/// Unikernel (QEMU) settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnikernelSettings {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// `auto`, `kvm` or `tcg`.
    pub accel: String,
    /// Where each VM's state (record, QMP socket, pidfile, serial log) is kept.
    pub state_dir: PathBuf,
    /// Directories VM images, kernels and initrds may be named in by
    /// absolute path; relative paths are in the service's own directory.
    pub images_dirs: Vec<PathBuf>,
    /// The most bytes of a VM's `serial.log` before it is rotated to
    /// `serial.log.1`.
    pub log_max_size: u64,
}

/// `[podman] stop_timeout`, seconds.
pub const STOP_TIMEOUT_BOUNDS: Bounds = Bounds::new(0, 3_600, "seconds");
/// `[monitor] interval`, seconds.
pub const MONITOR_INTERVAL_BOUNDS: Bounds = Bounds::new(1, DAY, "seconds");
pub use mcp_core::alert::{
    ALERT_BURST_BOUNDS, ALERT_COOLDOWN_BOUNDS, ALERT_TIMEOUT_BOUNDS, AlertSettings,
};
/// `[monitor] event_retention_days`, days.
pub const EVENT_RETENTION_BOUNDS: Bounds = Bounds::new(1, 3_650, "days");
/// `[deploy] settle_ms`, milliseconds.
pub const SETTLE_BOUNDS: Bounds = Bounds::new(0, 600_000, "milliseconds");

/// The agent configuration file: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentConfigFile {
    node_name: Option<String>,
    listen: Option<String>,
    listen_interface: Option<String>,
    port: Option<u16>,
    allow_wildcard: Option<bool>,
    publish_address: Option<Spanned<String>>,
    db: Option<PathBuf>,
    srv_root: Option<PathBuf>,
    log_format: Option<LogFormat>,
    #[serde(default)]
    podman: PodmanFile,
    #[serde(default)]
    monitor: MonitorFile,
    #[serde(default)]
    deploy: DeployFile,
    #[serde(default)]
    files: FilesFile,
    #[serde(default)]
    unikernel: UnikernelFile,
    #[serde(default)]
    auth: AuthFile,
    #[serde(default)]
    tls: TlsFile,
    #[serde(default)]
    security: SecurityFile,
    #[serde(default)]
    limits: LimitsFile,
    master: Option<MasterFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MasterFile {
    address: Option<String>,
    ca_cert: Option<PathBuf>,
    insecure: Option<bool>,
    token_file: Option<PathBuf>,
    role: Option<Spanned<String>>,
    advertise: Option<Spanned<String>>,
    memory: Option<SizeValue>,
    cpus: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecurityFile {
    allowed_volume_roots: Option<Vec<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PodmanFile {
    socket: Option<PathBuf>,
    insecure_registries: Option<Vec<String>>,
    stop_timeout: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MonitorFile {
    interval: Option<Spanned<u64>>,
    alert_command: Option<Vec<String>>,
    alert_timeout: Option<Spanned<u64>>,
    alert_cooldown: Option<Spanned<u64>>,
    alert_burst: Option<Spanned<u64>>,
    event_retention_days: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployFile {
    timeout: Option<Spanned<u64>>,
    settle_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesFile {
    max_file_size: Option<SizeValue>,
}

/// A size in a configuration file: bytes, or text such as `"4G"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnikernelFile {
    qemu: Option<PathBuf>,
    accel: Option<String>,
    state_dir: Option<PathBuf>,
    images_dirs: Option<Vec<PathBuf>>,
    log_max_size: Option<SizeValue>,
}

fn default_podman_socket() -> PathBuf {
    let is_root = std::env::var("USER").is_ok_and(|u| u == "root")
        || std::fs::metadata("/proc/self").is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid() == 0
        });
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !is_root => PathBuf::from(dir).join("podman/podman.sock"),
        _ => PathBuf::from("/run/podman/podman.sock"),
    }
}

/// This machine's host name, or `localhost`.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl AgentConfig {
    /// Built-in defaults for a production node: listens nowhere until
    /// `listen` or `listen_interface` is set, registry under `/var/lib/mcp`.
    pub fn defaults() -> AgentConfig {
        AgentConfig {
            node_name: hostname(),
            listen: Listen::nowhere(DEFAULT_AGENT_PORT),
            publish_address: None,
            db: PathBuf::from("/var/lib/mcp/mcp.db"),
            srv_root: PathBuf::from("/srv"),
            podman: PodmanSettings {
                socket: default_podman_socket(),
                insecure_registries: Vec::new(),
                stop_timeout: Duration::from_secs(10),
            },
            monitor: MonitorSettings {
                interval: Duration::from_secs(60),
                alerts: AlertSettings::default(),
                event_retention: Duration::from_secs(30 * 86_400),
            },
            deploy: DeploySettings::default(),
            files: FilesSettings {
                max_file_size: DEFAULT_MAX_FILE_SIZE,
            },
            unikernel: UnikernelSettings {
                qemu: PathBuf::from("qemu-system-x86_64"),
                accel: "auto".to_string(),
                state_dir: PathBuf::from("/var/lib/mcp/vms"),
                images_dirs: Vec::new(),
                log_max_size: mcp_runtime::qemu::serial::DEFAULT_MAX_SIZE,
            },
            log_format: LogFormat::Text,
            auth: AuthSettings::local(PathBuf::from("/var/lib/mcp/tokens.toml")),
            tls: TlsSettings::none(),
            security: SecuritySettings::default(),
            limits: LimitSettings::default(),
            master: None,
        }
    }

    /// Defaults for `mcp-agent --dev`: listens on 127.0.0.1, keeps its data in
    /// `data_dir` (the user's data directory, `~/.local/share/mcp`).
    pub fn dev_defaults(data_dir: &Path) -> AgentConfig {
        let mut config = AgentConfig::defaults();
        config.node_name = "local".to_string();
        config.listen.address = Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_AGENT_PORT)));
        config.db = data_dir.join("mcp.db");
        config.srv_root = data_dir.join("srv");
        config.unikernel.state_dir = data_dir.join("vms");
        config.podman.stop_timeout = Duration::from_secs(5);
        config.auth.token_file = data_dir.join("tokens.toml");
        config.auth.audit_file = Some(data_dir.join("audit.jsonl"));
        config
    }

    /// The data directory `--dev` uses: `$XDG_DATA_HOME/mcp`.
    pub fn dev_data_dir() -> Result<PathBuf, ConfigError> {
        mcp_core::daemon::dev_data_dir()
    }

    /// Applies the keys set in the TOML file at `path` over `self`.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = read(path)?;
        self.apply_toml(path, &text)
    }

    /// Applies the keys set in `text` (the contents of `path`) over `self`.
    pub fn apply_toml(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let file: AgentConfigFile = parse_toml(path, text)?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if let Some(v) = file.node_name {
            self.node_name = v;
        }
        self.listen.apply_keys(
            path,
            file.listen.as_deref(),
            file.listen_interface,
            file.port,
            file.allow_wildcard,
        )?;
        if let Some(v) = &file.publish_address {
            let address = v.get_ref().trim().parse::<IpAddr>().map_err(|_| {
                ConfigError::at(
                    path,
                    text,
                    v.span(),
                    format!(
                        "publish_address = {:?}: expected an IP address such as \"10.0.0.5\"",
                        v.get_ref()
                    ),
                )
            })?;
            self.publish_address = Some(address);
        }
        if let Some(v) = file.db {
            self.db = v;
        }
        if let Some(v) = file.srv_root {
            self.srv_root = v;
        }
        if let Some(v) = file.log_format {
            self.log_format = v;
        }
        if let Some(v) = file.podman.socket {
            self.podman.socket = v;
        }
        if let Some(v) = file.podman.insecure_registries {
            self.podman.insecure_registries = v;
        }
        let secs = |key: &str, v: &Spanned<u64>, bounds: Bounds| {
            bounded(path, text, key, v, bounds).map(Duration::from_secs)
        };
        if let Some(v) = &file.podman.stop_timeout {
            self.podman.stop_timeout = secs("podman.stop_timeout", v, STOP_TIMEOUT_BOUNDS)?;
        }
        if let Some(v) = &file.monitor.interval {
            self.monitor.interval = secs("monitor.interval", v, MONITOR_INTERVAL_BOUNDS)?;
        }
        self.monitor.alerts.apply_keys(
            path,
            text,
            file.monitor.alert_command,
            file.monitor.alert_timeout.as_ref(),
            file.monitor.alert_cooldown.as_ref(),
            file.monitor.alert_burst.as_ref(),
        )?;
        if let Some(v) = &file.deploy.timeout {
            self.deploy.timeout = secs("deploy.timeout", v, DEPLOY_TIMEOUT_BOUNDS)?;
        }
        if let Some(v) = &file.deploy.settle_ms {
            self.deploy.settle =
                Duration::from_millis(bounded(path, text, "deploy.settle_ms", v, SETTLE_BOUNDS)?);
        }
        if let Some(v) = &file.monitor.event_retention_days {
            let days = bounded(
                path,
                text,
                "monitor.event_retention_days",
                v,
                EVENT_RETENTION_BOUNDS,
            )?;
            self.monitor.event_retention = Duration::from_secs(days * DAY);
        }
        let size = |key: &str, v: SizeValue, min: u64| {
            let bytes = match v {
                SizeValue::Bytes(b) => b,
                SizeValue::Text(text) => mcp_core::servicedef::Memory::parse(&text)
                    .map(|m| m.bytes())
                    .map_err(|_| {
                        invalid(format!(
                            "{key} = {text:?}: expected a number of bytes or a size such as \"512M\" or \"4G\""
                        ))
                    })?,
            };
            if bytes < min {
                return Err(invalid(format!("{key} must be at least {min} bytes")));
            }
            Ok(bytes)
        };
        if let Some(v) = file.unikernel.log_max_size {
            self.unikernel.log_max_size = size(
                "unikernel.log_max_size",
                v,
                mcp_runtime::qemu::serial::MIN_MAX_SIZE,
            )?;
        }
        if let Some(v) = file.files.max_file_size {
            self.files.max_file_size = size("files.max_file_size", v, 1)?;
        }
        if let Some(v) = file.unikernel.state_dir {
            self.unikernel.state_dir = v;
        }
        if let Some(v) = file.security.allowed_volume_roots {
            if let Some(bad) = v.iter().find(|d| !d.is_absolute()) {
                return Err(invalid(format!(
                    "security.allowed_volume_roots: {} is not an absolute path",
                    bad.display()
                )));
            }
            self.security.allowed_volume_roots = v;
        }
        if let Some(v) = file.unikernel.images_dirs {
            if let Some(bad) = v.iter().find(|d| !d.is_absolute()) {
                return Err(invalid(format!(
                    "unikernel.images_dirs: {} is not an absolute path",
                    bad.display()
                )));
            }
            self.unikernel.images_dirs = v;
        }
        if let Some(v) = file.unikernel.qemu {
            self.unikernel.qemu = v;
        }
        if let Some(v) = file.unikernel.accel {
            if !matches!(v.as_str(), "auto" | "kvm" | "tcg") {
                return Err(invalid(format!(
                    "unikernel.accel = {v:?}: expected \"auto\", \"kvm\" or \"tcg\""
                )));
            }
            self.unikernel.accel = v;
        }
        file.auth.apply(&mut self.auth, path, text)?;
        file.limits.apply(&mut self.limits, path, text)?;
        file.tls.apply(&mut self.tls, path, text)?;
        if let Some(mut m) = file.master {
            let memory = m
                .memory
                .take()
                .map(|v| size("master.memory", v, 1))
                .transpose()?;
            self.master = Some(apply_master(self.master.take(), m, memory, path, text)?);
        }
        Ok(())
    }

    /// Applies a `--listen ADDR` flag.
    pub fn apply_listen_flag(&mut self, addr: &str) -> Result<(), ConfigError> {
        self.listen.apply_flag(addr)
    }

    /// The address to bind (see [`Listen::bind_address`]).
    pub fn bind_address(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.bind_address()
    }
}

/// Layers a `[master]` table over what earlier layers set; `memory` comes
/// checked.
fn apply_master(
    base: Option<MasterLink>,
    file: MasterFile,
    memory: Option<u64>,
    path: &Path,
    text: &str,
) -> Result<MasterLink, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let address = match (file.address, base.as_ref()) {
        (Some(a), _) => a,
        (None, Some(b)) => b.address.clone(),
        (None, None) => {
            return Err(invalid(
                "master.address is required: the master's host:port".into(),
            ));
        }
    };
    let token_file = match (file.token_file, base.as_ref()) {
        (Some(t), _) => t,
        (None, Some(b)) => b.token_file.clone(),
        (None, None) => {
            return Err(invalid(
                "master.token_file is required: the join token `mcp-master token add NAME --role node` printed".into(),
            ));
        }
    };
    let mut link = base.unwrap_or(MasterLink {
        address: String::new(),
        ca_cert: None,
        insecure: false,
        token_file: PathBuf::new(),
        role: NodeRole::Worker,
        advertise: None,
        memory: None,
        cpus: None,
    });
    link.address = address;
    link.token_file = token_file;
    if let Some(v) = file.ca_cert {
        link.ca_cert = Some(v);
    }
    if let Some(v) = file.insecure {
        link.insecure = v;
    }
    if let Some(v) = &file.role {
        link.role = NodeRole::parse(v.get_ref()).ok_or_else(|| {
            ConfigError::at(
                path,
                text,
                v.span(),
                format!(
                    "master.role = {:?}: expected \"worker\", \"core\" or \"edge\"",
                    v.get_ref()
                ),
            )
        })?;
    }
    if let Some(v) = &file.advertise {
        link.advertise = Some(v.get_ref().parse().map_err(|_| {
            ConfigError::at(
                path,
                text,
                v.span(),
                format!(
                    "master.advertise = {:?}: expected IP:port, the address the master dials",
                    v.get_ref()
                ),
            )
        })?);
    }
    if let Some(v) = memory {
        link.memory = Some(v);
    }
    if let Some(v) = &file.cpus {
        let n = bounded(path, text, "master.cpus", v, MASTER_CPUS_BOUNDS)?;
        link.cpus = Some(u32::try_from(n).unwrap_or(u32::MAX));
    }
    if link.ca_cert.is_none() && !link.insecure {
        return Err(invalid(
            "master.ca_cert is required (the CA of the master's certificate), or `insecure = true` in [master] to talk plaintext gRPC".into(),
        ));
    }
    Ok(link)
}

/// `[master] cpus`.
pub const MASTER_CPUS_BOUNDS: Bounds = Bounds::new(0, 4096, "CPUs");

/// Where `program` is: itself when it names a path (has a `/`) and is a
/// file, else the first directory of `PATH` that holds it.
pub fn on_path(program: impl AsRef<Path>) -> Option<PathBuf> {
    let program = program.as_ref();
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_only_what_it_sets() {
        let mut c = AgentConfig::dev_defaults(Path::new("/tmp/d"));
        c.apply_toml(
            Path::new("x.toml"),
            "node_name = \"rift\"\n[podman]\nstop_timeout = 2\n",
        )
        .unwrap();
        assert_eq!(c.node_name, "rift");
        assert_eq!(c.podman.stop_timeout, Duration::from_secs(2));
        assert_eq!(c.db, PathBuf::from("/tmp/d/mcp.db"));
        assert_eq!(c.listen.address, Some("127.0.0.1:9444".parse().unwrap()));
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let mut c = AgentConfig::defaults();
        let err = c
            .apply_toml(
                Path::new("agent.toml"),
                "node_name = \"a\"\n[podman]\nsockt = \"/x\"\n",
            )
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("agent.toml:3:1:"), "{err}");
        assert!(err.contains("sockt"), "{err}");
    }

    #[test]
    fn publish_address_is_an_ip_address() {
        let mut c = AgentConfig::defaults();
        assert_eq!(c.publish_address, None);
        c.apply_toml(Path::new("a.toml"), "publish_address = \"127.0.0.3\"\n")
            .unwrap();
        assert_eq!(c.publish_address, Some("127.0.0.3".parse().unwrap()));
        let err = c
            .apply_toml(Path::new("a.toml"), "\npublish_address = \"wg0\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "a.toml:2:19: publish_address = \"wg0\": expected an IP address such as \"10.0.0.5\""
        );
        assert_eq!(c.publish_address, Some("127.0.0.3".parse().unwrap()));
    }

    #[test]
    fn master_section_joins_a_fleet() {
        let mut c = AgentConfig::defaults();
        assert_eq!(c.master, None);
        c.apply_toml(
            Path::new("a.toml"),
            "[master]\naddress = \"10.0.0.1:9445\"\nca_cert = \"/etc/mcp/ca.pem\"\ntoken_file = \"/etc/mcp/join\"\nrole = \"core\"\nadvertise = \"10.0.0.5:9444\"\nmemory = \"4G\"\ncpus = 2\n",
        )
        .unwrap();
        let link = c.master.clone().unwrap();
        assert_eq!(link.address, "10.0.0.1:9445");
        assert_eq!(link.role, NodeRole::Core);
        assert_eq!(link.advertise, Some("10.0.0.5:9444".parse().unwrap()));
        assert_eq!((link.memory, link.cpus), (Some(4 << 30), Some(2)));
        // A later layer changes only what it names.
        c.apply_toml(Path::new("b.toml"), "[master]\nrole = \"worker\"\n")
            .unwrap();
        let link = c.master.clone().unwrap();
        assert_eq!(
            (link.role, link.address.as_str()),
            (NodeRole::Worker, "10.0.0.1:9445")
        );

        let err = |text: &str| {
            AgentConfig::defaults()
                .apply_toml(Path::new("a.toml"), text)
                .unwrap_err()
                .to_string()
        };
        let base = "[master]\naddress = \"m:9445\"\ntoken_file = \"/t\"\nca_cert = \"/ca\"\n";
        assert!(err("[master]\ntoken_file = \"/t\"\n").contains("master.address is required"));
        assert!(err("[master]\naddress = \"m:1\"\n").contains("master.token_file is required"));
        assert!(
            err("[master]\naddress = \"m:1\"\ntoken_file = \"/t\"\n")
                .contains("master.ca_cert is required")
        );
        assert!(
            err(&format!("{base}role = \"boss\"\n"))
                .starts_with("a.toml:5:8: master.role = \"boss\"")
        );
        assert!(
            err(&format!("{base}advertise = \"wg0\"\n"))
                .starts_with("a.toml:5:13: master.advertise")
        );
        assert!(err(&format!("{base}cpus = 99999\n")).starts_with("a.toml:5:8:"));
        let mut plain = AgentConfig::defaults();
        plain
            .apply_toml(
                Path::new("a.toml"),
                "[master]\naddress = \"m:1\"\ntoken_file = \"/t\"\ninsecure = true\n",
            )
            .unwrap();
        assert!(plain.master.unwrap().insecure);
    }

    #[test]
    fn wildcard_refused_unless_allowed() {
        let mut c = AgentConfig::defaults();
        c.apply_listen_flag("0.0.0.0:9444").unwrap();
        let err = c.bind_address().unwrap_err().to_string();
        assert!(err.contains("wildcard"), "{err}");
        c.apply_listen_flag("[::]:9444").unwrap();
        assert!(c.bind_address().is_err());
        c.listen.allow_wildcard = true;
        assert_eq!(c.bind_address().unwrap(), "[::]:9444".parse().unwrap());
    }

    #[test]
    fn listen_without_port_uses_default_port() {
        let mut c = AgentConfig::defaults();
        c.apply_toml(Path::new("a.toml"), "listen = \"100.64.0.7\"\n")
            .unwrap();
        assert_eq!(
            c.bind_address().unwrap(),
            "100.64.0.7:9444".parse().unwrap()
        );
        let err = c
            .apply_toml(Path::new("a.toml"), "listen = \"nope\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("invalid listen address \"nope\""));
    }

    #[test]
    fn listen_interface_resolves_loopback() {
        let mut c = AgentConfig::defaults();
        c.apply_toml(
            Path::new("a.toml"),
            "listen_interface = \"lo\"\nport = 7000\n",
        )
        .unwrap();
        assert_eq!(c.bind_address().unwrap(), "127.0.0.1:7000".parse().unwrap());
        c.apply_toml(Path::new("a.toml"), "listen_interface = \"nosuch0\"\n")
            .unwrap();
        let err = c.bind_address().unwrap_err().to_string();
        assert!(
            err.contains("no network interface named \"nosuch0\""),
            "{err}"
        );
    }

    #[test]
    fn event_retention_in_days() {
        let mut c = AgentConfig::defaults();
        assert_eq!(c.monitor.event_retention, Duration::from_secs(30 * 86_400));
        c.apply_toml(Path::new("a.toml"), "[monitor]\nevent_retention_days = 7\n")
            .unwrap();
        assert_eq!(c.monitor.event_retention, Duration::from_secs(7 * 86_400));
        let err = c
            .apply_toml(Path::new("a.toml"), "[monitor]\nevent_retention_days = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("event_retention_days"), "{err}");
    }

    #[test]
    fn files_max_file_size_takes_bytes_or_units() {
        let mut c = AgentConfig::defaults();
        assert_eq!(c.files.max_file_size, DEFAULT_MAX_FILE_SIZE);
        c.apply_toml(Path::new("a.toml"), "[files]\nmax_file_size = \"512M\"\n")
            .unwrap();
        assert_eq!(c.files.max_file_size, 512 << 20);
        c.apply_toml(Path::new("a.toml"), "[files]\nmax_file_size = 1000\n")
            .unwrap();
        assert_eq!(c.files.max_file_size, 1000);
        for bad in ["\"4X\"", "0", "\"\""] {
            let err = c
                .apply_toml(
                    Path::new("a.toml"),
                    &format!("[files]\nmax_file_size = {bad}\n"),
                )
                .unwrap_err()
                .to_string();
            assert!(err.contains("files.max_file_size"), "{bad}: {err}");
        }
        assert_eq!(c.files.max_file_size, 1000);
    }

    #[test]
    fn numbers_out_of_their_range_are_errors_at_their_place() {
        let cases = [
            (
                "[podman]\nstop_timeout = 3601\n",
                "podman.stop_timeout = 3601: must be between 0 and 3600 seconds",
                2,
                16,
            ),
            (
                "[monitor]\ninterval = 0\n",
                "monitor.interval = 0: must be between 1 and 86400 seconds",
                2,
                12,
            ),
            (
                "[monitor]\nalert_timeout = 0\n",
                "monitor.alert_timeout = 0",
                2,
                17,
            ),
            // Far too long for the clock: a panic in the monitor before.
            (
                "[monitor]\nalert_cooldown = 18446744073709551615\n",
                "monitor.alert_cooldown = 18446744073709551615: must be between 1 and 604800 seconds",
                2,
                18,
            ),
            (
                "[monitor]\nalert_burst = 0\n",
                "monitor.alert_burst = 0: must be between 1 and 1000 alerts",
                2,
                15,
            ),
            (
                "[monitor]\nevent_retention_days = 0\n",
                "monitor.event_retention_days = 0",
                2,
                24,
            ),
            (
                "[monitor]\nevent_retention_days = 213503982334601\n",
                "must be between 1 and 3650 days",
                2,
                24,
            ),
            (
                "[deploy]\ntimeout = 0\n",
                "deploy.timeout = 0: must be between 1 and 86400 seconds",
                2,
                11,
            ),
            (
                "[deploy]\nsettle_ms = 600001\n",
                "deploy.settle_ms = 600001: must be between 0 and 600000 milliseconds",
                2,
                13,
            ),
            (
                "[tls]\nhandshake_timeout = 0\n",
                "tls.handshake_timeout = 0",
                2,
                21,
            ),
            (
                "[auth.mcias]\nurl = \"https://m\"\ncache_ttl = 99999999\n",
                "auth.mcias.cache_ttl = 99999999",
                3,
                13,
            ),
            (
                "[auth.mcias]\nurl = \"https://m\"\ntimeout = 0\n",
                "auth.mcias.timeout = 0",
                3,
                11,
            ),
        ];
        for (text, message, line, col) in cases {
            let mut c = AgentConfig::defaults();
            let before = c.clone();
            let err = c
                .apply_toml(Path::new("agent.toml"), text)
                .expect_err(text)
                .to_string();
            assert!(
                err.starts_with(&format!("agent.toml:{line}:{col}: ")) && err.contains(message),
                "{text:?}: {err}"
            );
            assert_eq!(
                c, before,
                "{text:?}: a refused file changed the configuration"
            );
        }
        // The ends of each range are accepted.
        let mut c = AgentConfig::defaults();
        c.apply_toml(
            Path::new("agent.toml"),
            "[podman]\nstop_timeout = 0\n[monitor]\ninterval = 86400\nalert_cooldown = 604800\nalert_burst = 1000\nevent_retention_days = 3650\n[deploy]\ntimeout = 86400\nsettle_ms = 0\n",
        )
        .expect("ends of the ranges");
        assert_eq!(
            c.monitor.alerts.alert_cooldown,
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            c.monitor.event_retention,
            Duration::from_secs(3650 * 86_400)
        );
    }

    #[test]
    fn deploy_keys() {
        let mut c = AgentConfig::defaults();
        assert_eq!(c.deploy.timeout, Duration::from_secs(300));
        assert_eq!(c.deploy.settle, Duration::from_secs(5));
        c.apply_toml(
            Path::new("a.toml"),
            "[deploy]\ntimeout = 60\nsettle_ms = 1500\n",
        )
        .expect("deploy keys");
        assert_eq!(c.deploy.timeout, Duration::from_secs(60));
        assert_eq!(c.deploy.settle, Duration::from_millis(1500));
        let err = c
            .apply_toml(Path::new("a.toml"), "[deploy]\ntimeout = 0\n")
            .expect_err("zero timeout");
        assert!(err.to_string().contains("deploy.timeout"), "{err}");
        assert!(
            c.apply_toml(Path::new("a.toml"), "[deploy]\nwait = 1\n")
                .is_err()
        );
    }

    #[test]
    fn monitor_keys_layer_and_validate() {
        let mut c = AgentConfig::defaults();
        assert_eq!(c.monitor.interval, Duration::from_secs(60));
        assert!(c.monitor.alerts.alert_command.is_empty());
        assert_eq!(c.monitor.alerts.alert_timeout, Duration::from_secs(10));
        assert_eq!(c.monitor.alerts.alert_cooldown, Duration::from_secs(300));
        assert_eq!(c.monitor.alerts.alert_burst, 3);
        c.apply_toml(
            Path::new("a.toml"),
            "[monitor]\ninterval = 5\nalert_command = [\"/usr/local/bin/page\", \"{service}\", \"{event}\"]\nalert_timeout = 2\n",
        )
        .unwrap();
        assert_eq!(c.monitor.interval, Duration::from_secs(5));
        assert_eq!(
            c.monitor.alerts.alert_command,
            ["/usr/local/bin/page", "{service}", "{event}"]
        );
        assert_eq!(c.monitor.alerts.alert_timeout, Duration::from_secs(2));
        // A second file changes only what it names.
        c.apply_toml(
            Path::new("b.toml"),
            "[monitor]\nalert_cooldown = 60\nalert_burst = 1\n",
        )
        .unwrap();
        assert_eq!(c.monitor.alerts.alert_cooldown, Duration::from_secs(60));
        assert_eq!(c.monitor.alerts.alert_burst, 1);
        assert_eq!(c.monitor.alerts.alert_timeout, Duration::from_secs(2));
        assert_eq!(c.monitor.interval, Duration::from_secs(5));
        assert_eq!(c.monitor.alerts.alert_command.len(), 3);
        // An empty command turns alerts off.
        c.apply_toml(Path::new("c.toml"), "[monitor]\nalert_command = []\n")
            .unwrap();
        assert!(c.monitor.alerts.alert_command.is_empty());

        for (text, needle) in [
            ("interval = 0", "monitor.interval"),
            ("alert_timeout = 0", "monitor.alert_timeout"),
            ("alert_cooldown = 0", "monitor.alert_cooldown"),
            ("alert_burst = 0", "monitor.alert_burst"),
            ("alert_command = [\"\", \"x\"]", "program name is empty"),
        ] {
            let err = AgentConfig::defaults()
                .apply_toml(Path::new("a.toml"), &format!("[monitor]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        for text in [
            "alert_timeout = -1",
            "alert_burst = \"3\"",
            "alert_command = \"/bin/page {service}\"",
        ] {
            let err = AgentConfig::defaults()
                .apply_toml(Path::new("a.toml"), &format!("[monitor]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("a.toml:2:"), "{text}: {err}");
        }
        let err = AgentConfig::defaults()
            .apply_toml(
                Path::new("a.toml"),
                "[monitor]\ninterval = 5\nalert_cooldwon = 60\n",
            )
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("a.toml:3:1:"), "{err}");
        assert!(err.contains("alert_cooldwon"), "{err}");
    }

    #[test]
    fn no_listen_address_is_an_error() {
        let err = AgentConfig::defaults()
            .bind_address()
            .unwrap_err()
            .to_string();
        assert!(err.contains("no listen address"), "{err}");
    }
}
