//! The agent's configuration (`mcp-agent`).
//!
//! It is layered: built-in defaults (or the `--dev` defaults), then the
//! keys a `--config` file sets, then command-line flags. Every file key is
//! optional, so a file changes only what it names; unknown keys are errors
//! that name the file, line and column.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_core::auth::mcias::MciasConfig;
use mcp_core::config::{
    Bounds, ConfigError, DAY, DEFAULT_AGENT_PORT, DEPLOY_TIMEOUT_BOUNDS, bounded, parse_toml, read,
};
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The agent's configuration, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentConfig {
    /// This node's name, reported in status and events.
    pub node_name: String,
    /// Address to listen on; `None` when `listen_interface` chooses it.
    pub listen: Option<SocketAddr>,
    /// Interface whose address to listen on (such as `wg0`).
    pub listen_interface: Option<String>,
    /// Port used with `listen_interface`.
    pub port: u16,
    /// Allow a wildcard listen address such as `0.0.0.0`.
    pub allow_wildcard: bool,
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
}

/// `[limits]`: bounds on connections and streams, enforced before a
/// caller is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LimitSettings {
    /// Connections held open at once, from everyone; more are closed as
    /// soon as they are accepted.
    pub max_connections: usize,
    /// Connections held open at once from one IP address.
    pub max_connections_per_peer: usize,
    /// Streams (RPCs) open at once on one connection (HTTP/2
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_streams_per_connection: u32,
    /// File transfers and listings (`PullFile`, `PushFile`, `ListFiles`)
    /// in flight at once; more are refused with `ResourceExhausted`.
    pub max_file_streams: usize,
    /// How long a connection may stay open without any call before it is
    /// closed (a client reconnects when it next calls).
    pub idle_timeout: Duration,
}

impl Default for LimitSettings {
    fn default() -> LimitSettings {
        LimitSettings {
            max_connections: 1024,
            max_connections_per_peer: 64,
            max_streams_per_connection: 100,
            max_file_streams: 32,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// `[limits] max_connections`.
pub const MAX_CONNECTIONS_BOUNDS: Bounds = Bounds::new(1, 1_000_000, "connections");
/// `[limits] max_connections_per_peer`.
pub const MAX_CONNECTIONS_PER_PEER_BOUNDS: Bounds = Bounds::new(1, 1_000_000, "connections");
/// `[limits] max_streams_per_connection`.
pub const MAX_STREAMS_BOUNDS: Bounds = Bounds::new(1, 10_000, "streams");
/// `[limits] max_file_streams`.
pub const MAX_FILE_STREAMS_BOUNDS: Bounds = Bounds::new(1, 10_000, "streams");
/// `[limits] idle_timeout`, seconds.
pub const IDLE_TIMEOUT_BOUNDS: Bounds = Bounds::new(1, DAY, "seconds");

/// What definitions may ask of the host (`[security]`).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct SecuritySettings {
    /// Directories the host side of a volume must lie in; empty for no
    /// restriction. Named volumes (podman's own) are not host paths and are
    /// always allowed.
    pub allowed_volume_roots: Vec<PathBuf>,
}

/// How the agent authenticates callers and where it writes the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuthSettings {
    /// The local token file (hashed tokens); a missing file holds no tokens.
    pub token_file: PathBuf,
    /// A file to append audit records to, as JSON lines, besides the log.
    pub audit_file: Option<PathBuf>,
    /// Refuse state-changing RPCs while the audit file cannot be written
    /// (rather than serving on with an error in the log).
    pub audit_required: bool,
    /// MCIAS, when tokens are also validated by the identity service.
    pub mcias: Option<MciasConfig>,
}

/// TLS on the agent's gRPC port.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsSettings {
    /// The agent's certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub key: Option<PathBuf>,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
    /// Serve plaintext gRPC. Only with this explicit setting; the agent
    /// warns at start.
    pub insecure: bool,
    /// Time a client has to complete the TLS handshake.
    pub handshake_timeout: Duration,
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
    /// Program and arguments run for each alert (exec-style, never a shell);
    /// empty: no alerts.
    pub alert_command: Vec<String>,
    /// How long an alert program may run before it is killed.
    pub alert_timeout: Duration,
    /// The window of the per-component alert rate limit.
    pub alert_cooldown: Duration,
    /// Most alerts per component within `alert_cooldown`.
    pub alert_burst: u32,
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
/// `[monitor] alert_timeout`, seconds.
pub const ALERT_TIMEOUT_BOUNDS: Bounds = Bounds::new(1, 3_600, "seconds");
/// `[monitor] alert_cooldown`, seconds.
pub const ALERT_COOLDOWN_BOUNDS: Bounds = Bounds::new(1, 7 * DAY, "seconds");
/// `[monitor] alert_burst`, alerts per cooldown.
pub const ALERT_BURST_BOUNDS: Bounds = Bounds::new(1, 1_000, "alerts");
/// `[monitor] event_retention_days`, days.
pub const EVENT_RETENTION_BOUNDS: Bounds = Bounds::new(1, 3_650, "days");
/// `[deploy] settle_ms`, milliseconds.
pub const SETTLE_BOUNDS: Bounds = Bounds::new(0, 600_000, "milliseconds");
/// `[tls] handshake_timeout`, seconds.
pub const HANDSHAKE_TIMEOUT_BOUNDS: Bounds = Bounds::new(1, 300, "seconds");
/// `[auth.mcias] cache_ttl`, seconds.
pub const MCIAS_CACHE_TTL_BOUNDS: Bounds = Bounds::new(0, DAY, "seconds");
/// `[auth.mcias] timeout`, seconds.
pub const MCIAS_TIMEOUT_BOUNDS: Bounds = Bounds::new(1, 300, "seconds");

/// Log output format of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The agent configuration file: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentConfigFile {
    node_name: Option<String>,
    listen: Option<String>,
    listen_interface: Option<String>,
    port: Option<u16>,
    allow_wildcard: Option<bool>,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    max_connections: Option<Spanned<u64>>,
    max_connections_per_peer: Option<Spanned<u64>>,
    max_streams_per_connection: Option<Spanned<u64>>,
    max_file_streams: Option<Spanned<u64>>,
    idle_timeout: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecurityFile {
    allowed_volume_roots: Option<Vec<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    token_file: Option<PathBuf>,
    audit_file: Option<PathBuf>,
    audit_required: Option<bool>,
    mcias: Option<MciasFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MciasFile {
    url: Option<String>,
    ca_cert: Option<PathBuf>,
    cache_ttl: Option<Spanned<u64>>,
    cache_size: Option<usize>,
    timeout: Option<Spanned<u64>>,
    admin_roles: Option<Vec<String>>,
    readonly_roles: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    insecure: Option<bool>,
    handshake_timeout: Option<Spanned<u64>>,
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
            listen: None,
            listen_interface: None,
            port: DEFAULT_AGENT_PORT,
            allow_wildcard: false,
            db: PathBuf::from("/var/lib/mcp/mcp.db"),
            srv_root: PathBuf::from("/srv"),
            podman: PodmanSettings {
                socket: default_podman_socket(),
                insecure_registries: Vec::new(),
                stop_timeout: Duration::from_secs(10),
            },
            monitor: MonitorSettings {
                interval: Duration::from_secs(60),
                alert_command: Vec::new(),
                alert_timeout: Duration::from_secs(10),
                alert_cooldown: Duration::from_secs(300),
                alert_burst: 3,
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
            auth: AuthSettings {
                token_file: PathBuf::from("/var/lib/mcp/tokens.toml"),
                audit_file: None,
                audit_required: false,
                mcias: None,
            },
            tls: TlsSettings {
                cert: None,
                key: None,
                client_ca: None,
                insecure: false,
                handshake_timeout: Duration::from_secs(10),
            },
            security: SecuritySettings::default(),
            limits: LimitSettings::default(),
        }
    }

    /// Defaults for `mcp-agent --dev`: listens on 127.0.0.1, keeps its data in
    /// `data_dir` (the user's data directory, `~/.local/share/mcp`).
    pub fn dev_defaults(data_dir: &Path) -> AgentConfig {
        let mut config = AgentConfig::defaults();
        config.node_name = "local".to_string();
        config.listen = Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_AGENT_PORT)));
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
        dirs::data_dir()
            .map(|d| d.join("mcp"))
            .ok_or(ConfigError::NoHome("data"))
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
        if let Some(v) = file.listen {
            self.listen = Some(parse_listen(&v, file.port.unwrap_or(self.port)).map_err(invalid)?);
            self.listen_interface = None;
        }
        if let Some(v) = file.listen_interface {
            self.listen_interface = Some(v);
            self.listen = None;
        }
        if let Some(v) = file.port {
            self.port = v;
        }
        if let Some(v) = file.allow_wildcard {
            self.allow_wildcard = v;
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
        if let Some(v) = file.monitor.alert_command {
            if v.first().is_some_and(|p| p.is_empty()) {
                return Err(invalid(
                    "monitor.alert_command: the program name is empty".into(),
                ));
            }
            self.monitor.alert_command = v;
        }
        if let Some(v) = &file.monitor.alert_timeout {
            self.monitor.alert_timeout = secs("monitor.alert_timeout", v, ALERT_TIMEOUT_BOUNDS)?;
        }
        if let Some(v) = &file.monitor.alert_cooldown {
            self.monitor.alert_cooldown = secs("monitor.alert_cooldown", v, ALERT_COOLDOWN_BOUNDS)?;
        }
        if let Some(v) = &file.monitor.alert_burst {
            // To send no alerts, leave alert_command empty.
            let n = bounded(path, text, "monitor.alert_burst", v, ALERT_BURST_BOUNDS)?;
            self.monitor.alert_burst = u32::try_from(n).unwrap_or(u32::MAX);
        }
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
        if let Some(v) = file.auth.token_file {
            self.auth.token_file = v;
        }
        if let Some(v) = file.auth.audit_required {
            self.auth.audit_required = v;
        }
        if let Some(v) = file.auth.audit_file {
            self.auth.audit_file = Some(v);
        }
        if let Some(m) = file.auth.mcias {
            let ttl = m
                .cache_ttl
                .as_ref()
                .map(|v| secs("auth.mcias.cache_ttl", v, MCIAS_CACHE_TTL_BOUNDS))
                .transpose()?;
            let timeout = m
                .timeout
                .as_ref()
                .map(|v| secs("auth.mcias.timeout", v, MCIAS_TIMEOUT_BOUNDS))
                .transpose()?;
            self.auth.mcias =
                Some(apply_mcias(self.auth.mcias.take(), m, ttl, timeout).map_err(invalid)?);
        }
        if let Some(v) = file.tls.cert {
            self.tls.cert = Some(v);
        }
        if let Some(v) = file.tls.key {
            self.tls.key = Some(v);
        }
        if let Some(v) = file.tls.client_ca {
            self.tls.client_ca = Some(v);
        }
        if let Some(v) = file.tls.insecure {
            self.tls.insecure = v;
        }
        let count = |key: &str, v: &Spanned<u64>, bounds: Bounds| {
            bounded(path, text, key, v, bounds).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        };
        let l = &file.limits;
        if let Some(v) = &l.max_connections {
            self.limits.max_connections =
                count("limits.max_connections", v, MAX_CONNECTIONS_BOUNDS)?;
        }
        if let Some(v) = &l.max_connections_per_peer {
            self.limits.max_connections_per_peer = count(
                "limits.max_connections_per_peer",
                v,
                MAX_CONNECTIONS_PER_PEER_BOUNDS,
            )?;
        }
        if let Some(v) = &l.max_streams_per_connection {
            let n = bounded(
                path,
                text,
                "limits.max_streams_per_connection",
                v,
                MAX_STREAMS_BOUNDS,
            )?;
            self.limits.max_streams_per_connection = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(v) = &l.idle_timeout {
            self.limits.idle_timeout = secs("limits.idle_timeout", v, IDLE_TIMEOUT_BOUNDS)?;
        }
        if let Some(v) = &l.max_file_streams {
            self.limits.max_file_streams =
                count("limits.max_file_streams", v, MAX_FILE_STREAMS_BOUNDS)?;
        }
        if let Some(v) = &file.tls.handshake_timeout {
            self.tls.handshake_timeout =
                secs("tls.handshake_timeout", v, HANDSHAKE_TIMEOUT_BOUNDS)?;
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(invalid(
                "tls.cert and tls.key go together: set both or neither".into(),
            ));
        }
        Ok(())
    }

    /// Applies a `--listen ADDR` flag.
    pub fn apply_listen_flag(&mut self, addr: &str) -> Result<(), ConfigError> {
        self.listen =
            Some(
                parse_listen(addr, self.port).map_err(|message| ConfigError::Invalid {
                    path: PathBuf::from("--listen"),
                    message,
                })?,
            );
        self.listen_interface = None;
        Ok(())
    }

    /// The address to bind, after the overlay-only checks: an explicit
    /// address or the address of `listen_interface`; a wildcard address is
    /// refused unless `allow_wildcard` is set.
    pub fn bind_address(&self) -> Result<SocketAddr, ConfigError> {
        let flags = || PathBuf::from("<config>");
        let addr = match (&self.listen, &self.listen_interface) {
            (Some(addr), _) => *addr,
            (None, Some(iface)) => {
                let ip = interface_address(iface).map_err(|message| ConfigError::Invalid {
                    path: flags(),
                    message,
                })?;
                SocketAddr::new(ip, self.port)
            }
            (None, None) => {
                return Err(ConfigError::Invalid {
                    path: flags(),
                    message: "no listen address: set `listen = \"ADDR:PORT\"` (an overlay address) or `listen_interface = \"wg0\"`".into(),
                });
            }
        };
        if addr.ip().is_unspecified() && !self.allow_wildcard {
            return Err(ConfigError::Invalid {
                path: flags(),
                message: format!(
                    "refusing to listen on the wildcard address {addr}: bind an overlay address, or set allow_wildcard = true"
                ),
            });
        }
        Ok(addr)
    }
}

/// Layers an `[auth.mcias]` table over what earlier layers set; its
/// `cache_ttl` and `timeout` come checked.
fn apply_mcias(
    base: Option<MciasConfig>,
    file: MciasFile,
    cache_ttl: Option<Duration>,
    timeout: Option<Duration>,
) -> Result<MciasConfig, String> {
    let url = match (file.url, base.as_ref()) {
        (Some(u), _) => u,
        (None, Some(b)) => b.url.clone(),
        (None, None) => {
            return Err("auth.mcias.url is required: the MCIAS base URL, https://host:port".into());
        }
    };
    if !url.starts_with("https://") {
        return Err(format!(
            "auth.mcias.url = {url:?}: MCIAS is only spoken to over https://"
        ));
    }
    let mut c = base.unwrap_or(MciasConfig {
        url: String::new(),
        ca_cert: None,
        cache_ttl: Duration::from_secs(30),
        cache_size: 1024,
        timeout: Duration::from_secs(5),
        admin_roles: vec!["admin".into()],
        readonly_roles: vec!["readonly".into()],
    });
    c.url = url;
    if let Some(v) = file.ca_cert {
        c.ca_cert = Some(v);
    }
    if let Some(v) = cache_ttl {
        c.cache_ttl = v;
    }
    if let Some(v) = file.cache_size {
        // 0 turns the cache off: every RPC asks MCIAS.
        c.cache_size = v;
    }
    if let Some(v) = timeout {
        c.timeout = v;
    }
    if let Some(v) = file.admin_roles {
        c.admin_roles = v;
    }
    if let Some(v) = file.readonly_roles {
        c.readonly_roles = v;
    }
    Ok(c)
}

/// Parses `ADDR:PORT`, `[V6]:PORT` or a bare address (with `default_port`).
fn parse_listen(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = s.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(format!(
        "invalid listen address {s:?}: expected an IP address with an optional port, such as 100.64.0.1:{default_port}"
    ))
}

/// The first IPv4 (else IPv6) address of a network interface.
fn interface_address(name: &str) -> Result<IpAddr, String> {
    let addrs =
        nix::ifaddrs::getifaddrs().map_err(|e| format!("cannot list network interfaces: {e}"))?;
    let mut v6 = None;
    let mut seen = false;
    for ifa in addrs.filter(|a| a.interface_name == name) {
        seen = true;
        let Some(addr) = ifa.address else { continue };
        if let Some(sin) = addr.as_sockaddr_in() {
            return Ok(IpAddr::V4(sin.ip()));
        }
        if let Some(sin6) = addr.as_sockaddr_in6() {
            let ip = sin6.ip();
            // Link-local addresses need a scope id and are no overlay address.
            if (ip.segments()[0] & 0xffc0) != 0xfe80 {
                v6.get_or_insert(IpAddr::V6(ip));
            }
        }
    }
    match (v6, seen) {
        (Some(ip), _) => Ok(ip),
        (None, true) => Err(format!("interface {name:?} has no usable IP address")),
        (None, false) => Err(format!("no network interface named {name:?}")),
    }
}

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
        assert_eq!(c.listen, Some("127.0.0.1:9444".parse().unwrap()));
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
    fn wildcard_refused_unless_allowed() {
        let mut c = AgentConfig::defaults();
        c.apply_listen_flag("0.0.0.0:9444").unwrap();
        let err = c.bind_address().unwrap_err().to_string();
        assert!(err.contains("wildcard"), "{err}");
        c.apply_listen_flag("[::]:9444").unwrap();
        assert!(c.bind_address().is_err());
        c.allow_wildcard = true;
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
        assert_eq!(c.monitor.alert_cooldown, Duration::from_secs(7 * 86_400));
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
        assert!(c.monitor.alert_command.is_empty());
        assert_eq!(c.monitor.alert_timeout, Duration::from_secs(10));
        assert_eq!(c.monitor.alert_cooldown, Duration::from_secs(300));
        assert_eq!(c.monitor.alert_burst, 3);
        c.apply_toml(
            Path::new("a.toml"),
            "[monitor]\ninterval = 5\nalert_command = [\"/usr/local/bin/page\", \"{service}\", \"{event}\"]\nalert_timeout = 2\n",
        )
        .unwrap();
        assert_eq!(c.monitor.interval, Duration::from_secs(5));
        assert_eq!(
            c.monitor.alert_command,
            ["/usr/local/bin/page", "{service}", "{event}"]
        );
        assert_eq!(c.monitor.alert_timeout, Duration::from_secs(2));
        // A second file changes only what it names.
        c.apply_toml(
            Path::new("b.toml"),
            "[monitor]\nalert_cooldown = 60\nalert_burst = 1\n",
        )
        .unwrap();
        assert_eq!(c.monitor.alert_cooldown, Duration::from_secs(60));
        assert_eq!(c.monitor.alert_burst, 1);
        assert_eq!(c.monitor.alert_timeout, Duration::from_secs(2));
        assert_eq!(c.monitor.interval, Duration::from_secs(5));
        assert_eq!(c.monitor.alert_command.len(), 3);
        // An empty command turns alerts off.
        c.apply_toml(Path::new("c.toml"), "[monitor]\nalert_command = []\n")
            .unwrap();
        assert!(c.monitor.alert_command.is_empty());

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
