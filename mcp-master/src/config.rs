//! The master's configuration (`mcp-master`).
//!
//! Layered like the agent's: built-in defaults (or the `--dev` defaults),
//! then the keys a `--config` file sets, then command-line flags. Every key
//! is optional; unknown keys are errors that name the file, line and
//! column. Listening, `[tls]`, `[auth]` and `[limits]` are the agent's own
//! ([`mcp_core::config::server`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use mcp_core::alert::AlertSettings;
use mcp_core::config::server::{
    AuthFile, AuthSettings, LimitSettings, LimitsFile, Listen, TlsFile, TlsSettings,
};
use mcp_core::config::{Bounds, ConfigError, DAY, bounded, parse_toml, read};
use serde::{Deserialize, Serialize};

pub use mcp_core::daemon::LogFormat;
use toml::Spanned;

/// The port the master listens on when the configuration does not say.
pub const DEFAULT_MASTER_PORT: u16 = 9445;

/// The master's configuration, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MasterConfig {
    /// Where to listen (`listen`, `listen_interface`, `port`,
    /// `allow_wildcard`).
    pub listen: Listen,
    /// The master's SQLite database.
    pub db: PathBuf,
    /// Log output format.
    pub log_format: LogFormat,
    /// Authentication and audit.
    pub auth: AuthSettings,
    /// TLS of the gRPC port.
    pub tls: TlsSettings,
    /// Bounds on connections and streams.
    pub limits: LimitSettings,
    /// How nodes are watched.
    pub fleet: FleetSettings,
    /// How services are placed.
    pub placement: PlacementSettings,
    /// Alerts about nodes and services (`[monitor]`, the agent's keys): a
    /// node going suspect, down or coming back, a service waiting on a
    /// down node; rate-limited per node and per waiting service.
    pub monitor: AlertSettings,
    /// How the master reaches agents.
    pub agents: AgentSettings,
}

/// `[agents]`: how the master dials agents for commands. It presents its
/// own token (`token_file`), which every agent accepts as an admin token
/// (`mcp-agent token add master --role admin --from-file FILE`), and
/// checks their certificates against `ca_cert`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentSettings {
    /// The master's token for agents; made (random, mode 0600) at the
    /// first start when missing.
    pub token_file: PathBuf,
    /// The CA that signs the agents' certificates; required unless
    /// `insecure`.
    pub ca_cert: Option<PathBuf>,
    /// A client certificate to present to agents that ask for one
    /// (`[tls] client_ca` on the agent), with its key.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's key.
    pub client_key: Option<PathBuf>,
    /// Dial agents with plaintext gRPC (only when set explicitly).
    pub insecure: bool,
}

/// `[fleet]`: heartbeats and how long silence may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FleetSettings {
    /// How often agents heartbeat (the master tells them at registration
    /// and in every answer).
    pub heartbeat_interval: Duration,
    /// Slack past a heartbeat's TTL (two intervals) before a silent node is
    /// `suspect`.
    pub heartbeat_grace: Duration,
    /// Silence after which a node is `down` and its movable services go
    /// elsewhere; also the recovery window after the master starts, in
    /// which no node is declared down for the master's own absence.
    pub lost_after: Duration,
}

impl FleetSettings {
    /// How long a heartbeat counts: two intervals, so one lost heartbeat
    /// is not yet a missed one.
    pub fn ttl(&self) -> Duration {
        self.heartbeat_interval * 2
    }

    /// Silence after which a node is `suspect`: the TTL plus the grace.
    pub fn suspect_after(&self) -> Duration {
        self.ttl() + self.heartbeat_grace
    }
}

impl Default for FleetSettings {
    fn default() -> FleetSettings {
        FleetSettings {
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_grace: Duration::from_secs(5),
            lost_after: Duration::from_secs(300),
        }
    }
}

/// `[placement]`: what demand a component without `memory` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PlacementSettings {
    /// Memory counted for a component without `memory`, in bytes.
    pub default_memory: u64,
}

impl Default for PlacementSettings {
    fn default() -> PlacementSettings {
        PlacementSettings {
            default_memory: 256 << 20,
        }
    }
}

/// `[fleet] heartbeat_interval_ms`.
pub const HEARTBEAT_INTERVAL_BOUNDS: Bounds = Bounds::new(50, 600_000, "milliseconds");
/// `[fleet] heartbeat_grace_ms`.
pub const HEARTBEAT_GRACE_BOUNDS: Bounds = Bounds::new(0, 3_600_000, "milliseconds");
/// `[fleet] lost_after`, seconds.
pub const LOST_AFTER_BOUNDS: Bounds = Bounds::new(1, 7 * DAY, "seconds");

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MasterConfigFile {
    listen: Option<String>,
    listen_interface: Option<String>,
    port: Option<u16>,
    allow_wildcard: Option<bool>,
    db: Option<PathBuf>,
    log_format: Option<LogFormat>,
    #[serde(default)]
    auth: AuthFile,
    #[serde(default)]
    tls: TlsFile,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    fleet: FleetFile,
    #[serde(default)]
    placement: PlacementFile,
    #[serde(default)]
    monitor: MonitorFile,
    #[serde(default)]
    agents: AgentsFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MonitorFile {
    alert_command: Option<Vec<String>>,
    alert_timeout: Option<Spanned<u64>>,
    alert_cooldown: Option<Spanned<u64>>,
    alert_burst: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsFile {
    token_file: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    insecure: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    heartbeat_interval_ms: Option<Spanned<u64>>,
    heartbeat_grace_ms: Option<Spanned<u64>>,
    lost_after: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlacementFile {
    default_memory: Option<Spanned<String>>,
}

impl MasterConfig {
    /// Built-in defaults for a production master: listens nowhere until
    /// `listen` or `listen_interface` is set, state under
    /// `/var/lib/mcp-master`.
    pub fn defaults() -> MasterConfig {
        MasterConfig {
            listen: Listen::nowhere(DEFAULT_MASTER_PORT),
            db: PathBuf::from("/var/lib/mcp-master/master.db"),
            log_format: LogFormat::Text,
            auth: AuthSettings::local(PathBuf::from("/var/lib/mcp-master/tokens.toml")),
            tls: TlsSettings::none(),
            limits: LimitSettings::default(),
            fleet: FleetSettings::default(),
            placement: PlacementSettings::default(),
            monitor: AlertSettings::default(),
            agents: AgentSettings {
                token_file: PathBuf::from("/var/lib/mcp-master/agents.token"),
                ca_cert: None,
                client_cert: None,
                client_key: None,
                insecure: false,
            },
        }
    }

    /// Defaults for `mcp-master --dev`: listens on 127.0.0.1, keeps its
    /// data in `data_dir`.
    pub fn dev_defaults(data_dir: &Path) -> MasterConfig {
        let mut config = MasterConfig::defaults();
        config.listen.address = Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_MASTER_PORT)));
        config.db = data_dir.join("master.db");
        config.auth.token_file = data_dir.join("master-tokens.toml");
        config.auth.audit_file = Some(data_dir.join("master-audit.jsonl"));
        config.agents.token_file = data_dir.join("master-agents.token");
        config.agents.ca_cert = Some(data_dir.join("tls").join("ca.pem"));
        config
    }

    /// The data directory `--dev` uses: `$XDG_DATA_HOME/mcp`, beside the
    /// development agent's.
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
        let file: MasterConfigFile = parse_toml(path, text)?;
        self.listen.apply_keys(
            path,
            file.listen.as_deref(),
            file.listen_interface,
            file.port,
            file.allow_wildcard,
        )?;
        if let Some(v) = file.db {
            self.db = v;
        }
        if let Some(v) = file.log_format {
            self.log_format = v;
        }
        file.auth.apply(&mut self.auth, path, text)?;
        file.tls.apply(&mut self.tls, path, text)?;
        file.limits.apply(&mut self.limits, path, text)?;
        let millis = |key: &str, v: &Spanned<u64>, bounds: Bounds| {
            bounded(path, text, key, v, bounds).map(Duration::from_millis)
        };
        if let Some(v) = &file.fleet.heartbeat_interval_ms {
            self.fleet.heartbeat_interval =
                millis("fleet.heartbeat_interval_ms", v, HEARTBEAT_INTERVAL_BOUNDS)?;
        }
        if let Some(v) = &file.fleet.heartbeat_grace_ms {
            self.fleet.heartbeat_grace =
                millis("fleet.heartbeat_grace_ms", v, HEARTBEAT_GRACE_BOUNDS)?;
        }
        if let Some(v) = &file.fleet.lost_after {
            self.fleet.lost_after = Duration::from_secs(bounded(
                path,
                text,
                "fleet.lost_after",
                v,
                LOST_AFTER_BOUNDS,
            )?);
        }
        if let Some(v) = &file.placement.default_memory {
            let memory = mcp_core::servicedef::Memory::parse(v.get_ref()).map_err(|_| {
                ConfigError::at(
                    path,
                    text,
                    v.span(),
                    format!(
                        "placement.default_memory = {:?}: expected a size such as \"256M\"",
                        v.get_ref()
                    ),
                )
            })?;
            self.placement.default_memory = memory.bytes();
        }
        let a = file.agents;
        if let Some(v) = a.token_file {
            self.agents.token_file = v;
        }
        if let Some(v) = a.ca_cert {
            self.agents.ca_cert = Some(v);
        }
        if let Some(v) = a.client_cert {
            self.agents.client_cert = Some(v);
        }
        if let Some(v) = a.client_key {
            self.agents.client_key = Some(v);
        }
        if let Some(v) = a.insecure {
            self.agents.insecure = v;
        }
        if self.agents.client_cert.is_some() != self.agents.client_key.is_some() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message:
                    "agents.client_cert and agents.client_key go together: set both or neither"
                        .into(),
            });
        }
        let m = file.monitor;
        self.monitor.apply_keys(
            path,
            text,
            m.alert_command,
            m.alert_timeout.as_ref(),
            m.alert_cooldown.as_ref(),
            m.alert_burst.as_ref(),
        )?;
        if self.fleet.lost_after <= self.fleet.suspect_after() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "fleet.lost_after ({} s) must be longer than the heartbeat TTL plus grace ({} ms): a node is suspect before it is down",
                    self.fleet.lost_after.as_secs(),
                    self.fleet.suspect_after().as_millis()
                ),
            });
        }
        Ok(())
    }

    /// Applies a `--listen ADDR` flag.
    pub fn apply_listen_flag(&mut self, addr: &str) -> Result<(), ConfigError> {
        self.listen.apply_flag(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_layer_over_the_defaults() {
        let mut c = MasterConfig::dev_defaults(Path::new("/tmp/m"));
        c.apply_toml(
            Path::new("m.toml"),
            "listen = \"127.0.0.9\"\n[fleet]\nheartbeat_interval_ms = 200\nheartbeat_grace_ms = 100\nlost_after = 2\n[placement]\ndefault_memory = \"128M\"\n[auth]\naudit_required = true\n[monitor]\nalert_command = [\"/bin/page\", \"{node}\"]\nalert_burst = 5\n",
        )
        .unwrap();
        assert_eq!(
            c.listen.bind_address().unwrap(),
            "127.0.0.9:9445".parse().unwrap()
        );
        assert_eq!(c.fleet.heartbeat_interval, Duration::from_millis(200));
        assert_eq!(c.fleet.suspect_after(), Duration::from_millis(500));
        assert_eq!(c.fleet.lost_after, Duration::from_secs(2));
        assert_eq!(c.placement.default_memory, 128 << 20);
        assert!(c.auth.audit_required);
        assert_eq!(c.monitor.alert_command, ["/bin/page", "{node}"]);
        assert_eq!(c.monitor.alert_burst, 5);
        assert_eq!(c.db, PathBuf::from("/tmp/m/master.db"));
    }

    #[test]
    fn bad_keys_are_errors_at_their_place() {
        let cases = [
            ("[fleet]\nheartbeat_interval_ms = 1\n", "m.toml:2:25:"),
            ("[placement]\ndefault_memory = \"lots\"\n", "m.toml:2:18:"),
            ("[fleet]\nlost_afterr = 3\n", "m.toml:2:1:"),
        ];
        for (text, at) in cases {
            let err = MasterConfig::defaults()
                .apply_toml(Path::new("m.toml"), text)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(at), "{text:?}: {err}");
        }
        let err = MasterConfig::defaults()
            .apply_toml(
                Path::new("m.toml"),
                "[fleet]\nheartbeat_interval_ms = 5000\nlost_after = 10\n",
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("must be longer than the heartbeat TTL"),
            "{err}"
        );
    }
}
