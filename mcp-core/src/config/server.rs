//! What every MCP server (the agent, the master) is configured with alike:
//! where it listens, TLS, who may call it and the audit, and the bounds on
//! connections; the file sections (`[tls]`, `[auth]`, `[limits]`) and how
//! each layers over what earlier layers set.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{Bounds, ConfigError, DAY, bounded};
use crate::auth::mcias::MciasConfig;

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

/// How a server authenticates callers and where it writes the audit log
/// (`[auth]`).
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

/// TLS on a server's gRPC port (`[tls]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsSettings {
    /// The server's certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub key: Option<PathBuf>,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
    /// Serve plaintext gRPC. Only with this explicit setting; the server
    /// warns at start.
    pub insecure: bool,
    /// Time a client has to complete the TLS handshake.
    pub handshake_timeout: Duration,
}

impl TlsSettings {
    /// No certificate yet, no client certificates, TLS on, 10 s handshakes.
    pub fn none() -> TlsSettings {
        TlsSettings {
            cert: None,
            key: None,
            client_ca: None,
            insecure: false,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl AuthSettings {
    /// Local tokens in `token_file`, no audit file, no MCIAS.
    pub fn local(token_file: PathBuf) -> AuthSettings {
        AuthSettings {
            token_file,
            audit_file: None,
            audit_required: false,
            mcias: None,
        }
    }
}

/// `[tls] handshake_timeout`, seconds.
pub const HANDSHAKE_TIMEOUT_BOUNDS: Bounds = Bounds::new(1, 300, "seconds");
/// `[auth.mcias] cache_ttl`, seconds.
pub const MCIAS_CACHE_TTL_BOUNDS: Bounds = Bounds::new(0, DAY, "seconds");
/// `[auth.mcias] timeout`, seconds.
pub const MCIAS_TIMEOUT_BOUNDS: Bounds = Bounds::new(1, 300, "seconds");

/// A server's `[limits]` section: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    max_connections: Option<Spanned<u64>>,
    max_connections_per_peer: Option<Spanned<u64>>,
    max_streams_per_connection: Option<Spanned<u64>>,
    max_file_streams: Option<Spanned<u64>>,
    idle_timeout: Option<Spanned<u64>>,
}

/// A server's `[auth]` section: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
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

/// A server's `[tls]` section: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    insecure: Option<bool>,
    handshake_timeout: Option<Spanned<u64>>,
}

/// Seconds of `key` in `text` (the file at `path`), checked against `bounds`.
fn secs(
    path: &Path,
    text: &str,
    key: &str,
    v: &Spanned<u64>,
    bounds: Bounds,
) -> Result<Duration, ConfigError> {
    bounded(path, text, key, v, bounds).map(Duration::from_secs)
}

fn invalid(path: &Path, message: String) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    }
}

impl LimitsFile {
    /// Sets the keys this section names over `limits`; `text` is the
    /// contents of `path`, for errors at their line and column.
    pub fn apply(
        &self,
        limits: &mut LimitSettings,
        path: &Path,
        text: &str,
    ) -> Result<(), ConfigError> {
        let count = |key: &str, v: &Spanned<u64>, bounds: Bounds| {
            bounded(path, text, key, v, bounds).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        };
        if let Some(v) = &self.max_connections {
            limits.max_connections = count("limits.max_connections", v, MAX_CONNECTIONS_BOUNDS)?;
        }
        if let Some(v) = &self.max_connections_per_peer {
            limits.max_connections_per_peer = count(
                "limits.max_connections_per_peer",
                v,
                MAX_CONNECTIONS_PER_PEER_BOUNDS,
            )?;
        }
        if let Some(v) = &self.max_streams_per_connection {
            let n = bounded(
                path,
                text,
                "limits.max_streams_per_connection",
                v,
                MAX_STREAMS_BOUNDS,
            )?;
            limits.max_streams_per_connection = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(v) = &self.idle_timeout {
            limits.idle_timeout = secs(path, text, "limits.idle_timeout", v, IDLE_TIMEOUT_BOUNDS)?;
        }
        if let Some(v) = &self.max_file_streams {
            limits.max_file_streams = count("limits.max_file_streams", v, MAX_FILE_STREAMS_BOUNDS)?;
        }
        Ok(())
    }
}

impl AuthFile {
    /// Sets the keys this section names over `auth`.
    pub fn apply(
        self,
        auth: &mut AuthSettings,
        path: &Path,
        text: &str,
    ) -> Result<(), ConfigError> {
        if let Some(v) = self.token_file {
            auth.token_file = v;
        }
        if let Some(v) = self.audit_required {
            auth.audit_required = v;
        }
        if let Some(v) = self.audit_file {
            auth.audit_file = Some(v);
        }
        if let Some(m) = self.mcias {
            let ttl = m
                .cache_ttl
                .as_ref()
                .map(|v| {
                    secs(
                        path,
                        text,
                        "auth.mcias.cache_ttl",
                        v,
                        MCIAS_CACHE_TTL_BOUNDS,
                    )
                })
                .transpose()?;
            let timeout = m
                .timeout
                .as_ref()
                .map(|v| secs(path, text, "auth.mcias.timeout", v, MCIAS_TIMEOUT_BOUNDS))
                .transpose()?;
            auth.mcias = Some(
                apply_mcias(auth.mcias.take(), m, ttl, timeout).map_err(|m| invalid(path, m))?,
            );
        }
        Ok(())
    }
}

impl TlsFile {
    /// Sets the keys this section names over `tls`; a certificate without
    /// its key (or the other way round) is an error.
    pub fn apply(self, tls: &mut TlsSettings, path: &Path, text: &str) -> Result<(), ConfigError> {
        if let Some(v) = self.cert {
            tls.cert = Some(v);
        }
        if let Some(v) = self.key {
            tls.key = Some(v);
        }
        if let Some(v) = self.client_ca {
            tls.client_ca = Some(v);
        }
        if let Some(v) = self.insecure {
            tls.insecure = v;
        }
        if let Some(v) = &self.handshake_timeout {
            tls.handshake_timeout = secs(
                path,
                text,
                "tls.handshake_timeout",
                v,
                HANDSHAKE_TIMEOUT_BOUNDS,
            )?;
        }
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(invalid(
                path,
                "tls.cert and tls.key go together: set both or neither".into(),
            ));
        }
        Ok(())
    }
}

/// Where a server listens: an address, or an interface's address with a
/// port; a wildcard address only when allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listen {
    /// Address to listen on; `None` when `interface` chooses it.
    pub address: Option<SocketAddr>,
    /// Interface whose address to listen on (such as `wg0`).
    pub interface: Option<String>,
    /// Port used with `interface` or a bare address.
    pub port: u16,
    /// Allow a wildcard address such as `0.0.0.0`.
    pub allow_wildcard: bool,
}

impl Listen {
    /// Nowhere yet, on `port`.
    pub fn nowhere(port: u16) -> Listen {
        Listen {
            address: None,
            interface: None,
            port,
            allow_wildcard: false,
        }
    }

    /// Applies the file keys `listen`, `listen_interface`, `port` and
    /// `allow_wildcard`, any of them unset.
    pub fn apply_keys(
        &mut self,
        path: &Path,
        listen: Option<&str>,
        interface: Option<String>,
        port: Option<u16>,
        allow_wildcard: Option<bool>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = listen {
            self.address =
                Some(parse_listen(v, port.unwrap_or(self.port)).map_err(|m| invalid(path, m))?);
            self.interface = None;
        }
        if let Some(v) = interface {
            self.interface = Some(v);
            self.address = None;
        }
        if let Some(v) = port {
            self.port = v;
        }
        if let Some(v) = allow_wildcard {
            self.allow_wildcard = v;
        }
        Ok(())
    }

    /// Applies a `--listen ADDR` flag.
    pub fn apply_flag(&mut self, addr: &str) -> Result<(), ConfigError> {
        self.address =
            Some(
                parse_listen(addr, self.port).map_err(|message| ConfigError::Invalid {
                    path: PathBuf::from("--listen"),
                    message,
                })?,
            );
        self.interface = None;
        Ok(())
    }

    /// The address to bind, after the overlay-only checks: an explicit
    /// address or the address of the interface; a wildcard address is
    /// refused unless `allow_wildcard` is set.
    pub fn bind_address(&self) -> Result<SocketAddr, ConfigError> {
        let flags = || PathBuf::from("<config>");
        let addr = match (&self.address, &self.interface) {
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
pub fn parse_listen(s: &str, default_port: u16) -> Result<SocketAddr, String> {
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
