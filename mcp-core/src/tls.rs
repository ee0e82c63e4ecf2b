//! TLS for the agent's gRPC port and the client.
//!
//! This module owns everything TLS in MCP:
//!
//! - loading PEM certificates and keys ([`load_certs`], [`load_key`]) with
//!   errors that name the file ([`TlsError`]);
//! - the agent's rustls configuration ([`server_config`]) and the streams of
//!   accepted connections handed to tonic ([`tls_incoming`],
//!   [`plain_incoming`]), which survive garbage, silent clients and accept
//!   errors;
//! - the client's rustls configuration ([`client_config`]) and a connector
//!   for tonic ([`TlsConnector`]) whose errors say in one sentence what went
//!   wrong ([`ConnectError`]);
//! - a small development PKI: a CA and a server certificate for
//!   `mcp-agent --dev` ([`ensure_dev_pki`]) and certificates signed by an
//!   existing CA ([`issue_cert`]).
//!
//! Every rustls configuration is built with the `ring` provider explicitly;
//! nothing depends on a process-wide default provider.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::Stream;
use hyper_util::rt::TokioIo;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, CertificateError, RootCertStore, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// How long a TLS handshake on the agent's port may take before the
/// connection is dropped.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many TLS handshakes the agent runs at once; further connections wait
/// in the kernel's accept queue until one finishes.
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 1024;

/// How long [`TlsConnector`] waits, after a handshake in which the server
/// asked for a client certificate, for the server's verdict on it (see
/// [`TlsConnector::with_client_auth_wait`]).
pub const DEFAULT_CLIENT_AUTH_WAIT: Duration = Duration::from_secs(2);

/// Pause after a failed `accept` (for example `EMFILE`) before trying again.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Validity of the development CA.
const DEV_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Validity of issued and development server certificates.
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A development server certificate expiring within this is replaced.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Certificates are valid from this long before their creation, so that a
/// peer whose clock is slightly behind accepts them.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Common name of the development CA.
const DEV_CA_NAME: &str = "MCP development CA";
/// Names always covered by the development server certificate.
const DEV_DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The ALPN protocol spoken over TLS: gRPC is HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// Why TLS material could not be loaded or made. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A directory could not be created.
    #[error("{}: cannot create directory: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file is not well-formed PEM.
    #[error("{}: invalid PEM: {detail}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A file has no `CERTIFICATE` section.
    #[error("{}: no PEM certificate found", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A file has no private key section (PKCS#8, PKCS#1 or SEC1).
    #[error("{}: no private key found", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A certificate cannot be used (not parseable, or not a trust anchor).
    #[error("{}: not a usable certificate: {detail}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A certificate chain does not belong to its private key, or the key
    /// cannot be used.
    #[error("{}: not a valid certificate chain for this key ({}): {detail}", cert.display(), key.display())]
    CertKeyMismatch {
        /// The certificate chain file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
        /// What rustls reported.
        detail: String,
    },
    /// A client certificate was configured without its key, or the reverse.
    #[error("client TLS: {} is set but the client {missing} is not; set both or neither", given.display())]
    IncompleteClientAuth {
        /// The file that is set.
        given: PathBuf,
        /// What is missing: `"key"` or `"certificate"`.
        missing: &'static str,
    },
    /// Only half of a key pair exists on disk.
    #[error("{}: exists but {} is missing; remove it to generate a new pair", present.display(), missing.display())]
    IncompletePair {
        /// The file that exists.
        present: PathBuf,
        /// The file that does not.
        missing: PathBuf,
    },
    /// A name for a certificate is neither a DNS name nor an IP address.
    #[error("invalid certificate name {name:?}: {detail}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is invalid.
        detail: String,
    },
    /// A certificate could not be generated or signed.
    #[error("cannot generate certificate: {0}")]
    Generate(String),
    /// rustls rejected the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The crypto provider used for every configuration in MCP.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a whole file; the error names it.
fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A PEM syntax error, naming the file.
fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// Reads every `CERTIFICATE` section of the PEM file at `path`, in order
/// (a chain: the end-entity certificate first). Fails when there is none.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of the PEM file at
/// `path`.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => Err(TlsError::NoKey {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(pem_error(path, e)),
    }
}

/// A root store holding every certificate of the PEM file at `path`.
fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::BadCertificate {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Checks that the first certificate of `certs` belongs to `key`.
fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let mismatch = |e: rustls::Error| TlsError::CertKeyMismatch {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        detail: e.to_string(),
    };
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(mismatch)?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified.keys_match().map_err(mismatch)?;
    Ok(certified)
}

// ---------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------

/// Server-side files: the agent's certificate chain and key, and optionally
/// a CA whose client certificates are required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// PEM certificate chain of the agent, end-entity certificate first.
    pub cert: PathBuf,
    /// PEM private key of the agent.
    pub key: PathBuf,
    /// PEM CA certificate(s); when set, every client must present a
    /// certificate signed by one of them.
    pub client_ca: Option<PathBuf>,
}

/// The agent's rustls configuration: its certificate and key, ALPN `h2`,
/// and, when `client_ca` is set, a verifier that requires a client
/// certificate signed by that CA.
pub fn server_config(files: &ServerTlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    // Checked here too so that a mismatch names both files.
    certified_key(certs.clone(), key.clone_key(), &files.cert, &files.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = load_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::BadCertificate {
                    path: ca.clone(),
                    detail: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::CertKeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
                detail: e.to_string(),
            })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Accepted TLS connections for `tonic::transport::Server::serve_with_incoming`.
///
/// A task accepts TCP connections (with `TCP_NODELAY`) and runs each TLS
/// handshake in its own task, bounded by `handshake_timeout`; the stream
/// yields only completed TLS streams. A failed or timed-out handshake
/// (garbage bytes, plaintext HTTP/2, a client that sends nothing, a missing
/// or wrong client certificate) is logged at debug level with the peer's
/// address and dropped: it never ends or stalls the stream and never delays
/// other connections. Accept errors (for example `EMFILE`) are logged at
/// warn level and retried after 100 ms; they never end the stream.
///
/// At most `max_pending` connections are between accept and being handed
/// to the stream's consumer; while that many are pending, new connections
/// wait in the kernel's accept queue. The accept task, and with it the
/// listener, ends when the stream is dropped. Must be called within a Tokio
/// runtime (it spawns the accept task).
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
    max_pending: usize,
) -> impl Stream<Item = io::Result<tokio_rustls::server::TlsStream<TcpStream>>> + Send + 'static {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let permits = Arc::new(Semaphore::new(max_pending.max(1)));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = tx.closed() => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break, // never closed
                },
            };
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => break,
                accepted = accept_one(&listener) => accepted,
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        // An error means the consumer is gone; the stream is dropped.
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer, error = %e, "TLS handshake failed; connection dropped");
                    }
                    Err(_) => {
                        tracing::debug!(peer = %peer, timeout = ?handshake_timeout, "TLS handshake timed out; connection dropped");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Accepted plaintext connections (with `TCP_NODELAY`: small gRPC frames
/// otherwise wait for delayed ACKs) for
/// `tonic::transport::Server::serve_with_incoming`. Accept errors (for
/// example `EMFILE`) are logged at warn level and retried after 100 ms;
/// they never end the stream. The accept task, and with it the listener,
/// ends when the stream is dropped. Must be called within a Tokio runtime.
pub fn plain_incoming(
    listener: TcpListener,
) -> impl Stream<Item = io::Result<TcpStream>> + Send + 'static {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, _peer) = tokio::select! {
                _ = tx.closed() => break,
                accepted = accept_one(&listener) => accepted,
            };
            if tx.send(Ok(tcp)).await.is_err() {
                break;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Accepts one connection and turns Nagle's algorithm off; retries accept
/// errors after a short pause.
async fn accept_one(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(peer = %peer, error = %e, "cannot set TCP_NODELAY");
                }
                return (tcp, peer);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection; retrying");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

/// Client-side settings: the CA that signs agents' certificates and an
/// optional client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// PEM CA certificate(s); the only roots trusted for agents.
    pub ca_cert: PathBuf,
    /// PEM client certificate chain, presented when the agent asks for one.
    pub cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key: Option<PathBuf>,
}

/// The client's rustls configuration: roots = the CA file only; ALPN `h2`;
/// a client certificate when both `cert` and `key` are set (an error when
/// only one of them is).
pub fn client_config(files: &ClientTlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = load_roots(&files.ca_cert)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&files.cert, &files.key) {
        (Some(cert_path), Some(key_path)) => {
            let certs = load_certs(cert_path)?;
            let key = load_key(key_path)?;
            certified_key(certs.clone(), key.clone_key(), cert_path, key_path)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::CertKeyMismatch {
                    cert: cert_path.clone(),
                    key: key_path.clone(),
                    detail: e.to_string(),
                })?
        }
        (Some(cert_path), None) => {
            return Err(TlsError::IncompleteClientAuth {
                given: cert_path.clone(),
                missing: "key",
            });
        }
        (None, Some(key_path)) => {
            return Err(TlsError::IncompleteClientAuth {
                given: key_path.clone(),
                missing: "certificate",
            });
        }
        (None, None) => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// What went wrong when [`TlsConnector`] connected to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectErrorKind {
    /// The URI has no host, or the host is not a valid name for TLS.
    InvalidAddress(String),
    /// The name could not be resolved or the TCP connection failed.
    Tcp(String),
    /// The agent's certificate is not signed by the configured CA.
    UnknownIssuer,
    /// The agent's certificate is not valid for the host connected to.
    NameMismatch {
        /// The names the certificate is valid for, when rustls reports them.
        presented: Vec<String>,
    },
    /// The agent's certificate has expired or is not yet valid; the text
    /// says which and when.
    Expired(String),
    /// The peer did not speak TLS (it sent something else, or closed the
    /// connection during the handshake, as a plaintext server does).
    NotTls(String),
    /// The agent demanded a client certificate we did not present
    /// (`presented` false), or rejected the one we presented.
    ClientCertRequired {
        /// Whether we presented a client certificate.
        presented: bool,
        /// How the agent refused: the alert it sent, or that it closed.
        detail: String,
    },
    /// Any other handshake failure.
    Other(String),
}

/// Why [`TlsConnector`] could not connect: what went wrong and where. Its
/// `Display` is one human sentence.
#[derive(Debug)]
pub struct ConnectError {
    /// What went wrong.
    pub kind: ConnectErrorKind,
    /// `host:port` connected to, as in the URI.
    pub host: String,
    /// The underlying error, when there is one.
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl ConnectError {
    fn new(kind: ConnectErrorKind, host: &str) -> Self {
        ConnectError {
            kind,
            host: host.to_string(),
            source: None,
        }
    }

    fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = &self.host;
        match &self.kind {
            ConnectErrorKind::InvalidAddress(detail) => {
                write!(f, "invalid agent address {host}: {detail}")
            }
            ConnectErrorKind::Tcp(detail) => write!(f, "cannot connect to {host}: {detail}"),
            ConnectErrorKind::UnknownIssuer => write!(
                f,
                "TLS: the agent's certificate at {host} is not signed by the configured CA"
            ),
            ConnectErrorKind::NameMismatch { presented } => {
                let name = host
                    .rsplit_once(':')
                    .map_or(host.as_str(), |(name, _)| name);
                write!(
                    f,
                    "TLS: the agent's certificate at {host} is not valid for {name}"
                )?;
                if !presented.is_empty() {
                    write!(f, " (it is for {})", presented.join(", "))?;
                }
                Ok(())
            }
            ConnectErrorKind::Expired(detail) => {
                write!(f, "TLS: the agent's certificate at {host} {detail}")
            }
            ConnectErrorKind::NotTls(detail) => write!(
                f,
                "TLS: {host} did not answer with TLS ({detail}); is the agent serving plaintext?"
            ),
            ConnectErrorKind::ClientCertRequired {
                presented: false,
                detail,
            } => write!(
                f,
                "TLS: the agent at {host} requires a client certificate and none is configured ({detail})"
            ),
            ConnectErrorKind::ClientCertRequired {
                presented: true,
                detail,
            } => write!(
                f,
                "TLS: the agent at {host} rejected our client certificate ({detail})"
            ),
            ConnectErrorKind::Other(detail) => {
                write!(f, "TLS handshake with {host} failed: {detail}")
            }
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A connector for `tonic::transport::Endpoint::connect_with_connector`:
/// resolves the URI's `host:port`, connects TCP with `TCP_NODELAY`, and does
/// the TLS handshake with server name = the URI's host (an IP literal is
/// checked against the certificate's IP addresses).
///
/// With TLS 1.3 a server decides about a client certificate only after the
/// client's handshake has finished; so when the server asked for one, the
/// connector waits briefly (see [`TlsConnector::with_client_auth_wait`]) for
/// the server's first message or its refusal, so that a refusal is reported
/// as [`ConnectErrorKind::ClientCertRequired`] rather than as a broken
/// HTTP/2 connection later.
///
/// The URI's scheme is not looked at; without a port, 443 is used.
#[derive(Debug, Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    client_auth_wait: Duration,
}

impl TlsConnector {
    /// A connector using `config` (see [`client_config`]).
    pub fn new(config: Arc<rustls::ClientConfig>) -> Self {
        TlsConnector {
            config,
            client_auth_wait: DEFAULT_CLIENT_AUTH_WAIT,
        }
    }

    /// How long to wait, after a handshake in which the server asked for a
    /// client certificate, for the server to accept or refuse it. A server
    /// that says nothing within this time is assumed to have accepted.
    /// Default: [`DEFAULT_CLIENT_AUTH_WAIT`].
    pub fn with_client_auth_wait(mut self, wait: Duration) -> Self {
        self.client_auth_wait = wait;
        self
    }

    /// Connects to `uri`; the body of [`tower_service::Service::call`].
    async fn connect(
        config: Arc<rustls::ClientConfig>,
        client_auth_wait: Duration,
        uri: http::Uri,
    ) -> Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, ConnectError> {
        let port = uri.port_u16().unwrap_or(443);
        let Some(raw_host) = uri.host() else {
            return Err(ConnectError::new(
                ConnectErrorKind::InvalidAddress("no host in the address".into()),
                &uri.to_string(),
            ));
        };
        let authority = format!("{raw_host}:{port}");
        let host = raw_host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(raw_host);
        let server_name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_string()).map_err(|e| {
                ConnectError::new(
                    ConnectErrorKind::InvalidAddress(format!("{host:?} is not a valid host name")),
                    &authority,
                )
                .with_source(e)
            })?,
        };

        let tcp = connect_tcp(host, port, &authority).await?;

        // A per-connection copy of the configuration whose certificate
        // resolver records whether the server asked for a certificate.
        let probe = Arc::new(ClientAuthProbe {
            inner: config.client_auth_cert_resolver.clone(),
            asked: AtomicBool::new(false),
            presented: AtomicBool::new(false),
        });
        let mut config = (*config).clone();
        config.client_auth_cert_resolver = probe.clone();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

        let mut tls = match connector.connect(server_name, tcp).await {
            Ok(tls) => tls,
            Err(e) => {
                let kind = classify_io(&e, &probe);
                return Err(ConnectError::new(kind, &authority).with_source(e));
            }
        };
        // With TLS 1.2 the server's Finished already said yes; with TLS 1.3
        // its verdict on our certificate comes after the handshake.
        let tls13 = tls.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
        if tls13 && probe.asked.load(Ordering::Relaxed) {
            await_client_auth_verdict(&mut tls, &probe, client_auth_wait, &authority).await?;
        }
        Ok(TokioIo::new(tls))
    }
}

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        Box::pin(Self::connect(
            self.config.clone(),
            self.client_auth_wait,
            uri,
        ))
    }
}

/// Resolves `host` and connects to the first address that answers.
async fn connect_tcp(host: &str, port: u16, authority: &str) -> Result<TcpStream, ConnectError> {
    let addrs = tokio::net::lookup_host((host, port)).await.map_err(|e| {
        ConnectError::new(
            ConnectErrorKind::Tcp(format!("cannot resolve {host}: {e}")),
            authority,
        )
    })?;
    let mut last_error = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(addr = %addr, error = %e, "cannot set TCP_NODELAY");
                }
                return Ok(tcp);
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(match last_error {
        Some(e) => {
            ConnectError::new(ConnectErrorKind::Tcp(e.to_string()), authority).with_source(e)
        }
        None => ConnectError::new(
            ConnectErrorKind::Tcp(format!("{host} resolves to no address")),
            authority,
        ),
    })
}

/// Wraps the configured client-certificate resolver and records whether the
/// server asked for a certificate, and whether one was offered.
#[derive(Debug)]
struct ClientAuthProbe {
    inner: Arc<dyn ResolvesClientCert>,
    asked: AtomicBool,
    presented: AtomicBool,
}

impl ResolvesClientCert for ClientAuthProbe {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.asked.store(true, Ordering::Relaxed);
        let key = self.inner.resolve(root_hint_subjects, sigschemes);
        self.presented.store(key.is_some(), Ordering::Relaxed);
        key
    }

    fn only_raw_public_keys(&self) -> bool {
        self.inner.only_raw_public_keys()
    }

    fn has_certs(&self) -> bool {
        self.inner.has_certs()
    }
}

/// Reads from a tokio socket without blocking, for `read_tls`.
struct TryRead<'a>(&'a TcpStream);

impl io::Read for TryRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// After a TLS 1.3 handshake in which the server asked for a client
/// certificate, waits up to `wait` for the server's verdict: any record it
/// sends (a session ticket, HTTP/2 settings) means accepted; an alert or a
/// closed connection means refused. Records read here stay buffered in the
/// rustls connection for the HTTP/2 layer.
async fn await_client_auth_verdict(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
    probe: &ClientAuthProbe,
    wait: Duration,
    authority: &str,
) -> Result<(), ConnectError> {
    let presented = probe.presented.load(Ordering::Relaxed);
    let refused = |detail: String| {
        ConnectError::new(
            ConnectErrorKind::ClientCertRequired { presented, detail },
            authority,
        )
    };
    let deadline = tokio::time::Instant::now() + wait;
    let (tcp, conn) = tls.get_mut();
    loop {
        match tokio::time::timeout_at(deadline, tcp.readable()).await {
            Err(_) => return Ok(()), // the server said nothing: assume accepted
            Ok(Err(e)) => {
                return Err(
                    ConnectError::new(ConnectErrorKind::Tcp(e.to_string()), authority)
                        .with_source(e),
                );
            }
            Ok(Ok(())) => {}
        }
        match conn.read_tls(&mut TryRead(tcp)) {
            Ok(0) => return Err(refused("it closed the connection".into())),
            Ok(_) => {
                return match conn.process_new_packets() {
                    Ok(state) if state.peer_has_closed() => {
                        Err(refused("it closed the connection".into()))
                    }
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let kind = match classify_rustls(&e, true, presented) {
                            kind @ ConnectErrorKind::ClientCertRequired { .. } => kind,
                            _ => ConnectErrorKind::ClientCertRequired {
                                presented,
                                detail: e.to_string(),
                            },
                        };
                        Err(ConnectError::new(kind, authority).with_source(e))
                    }
                };
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                return Err(refused("it reset the connection".into()).with_source(e));
            }
            Err(e) => {
                return Err(
                    ConnectError::new(ConnectErrorKind::Tcp(e.to_string()), authority)
                        .with_source(e),
                );
            }
        }
    }
}

/// Classifies a handshake error from tokio-rustls: a rustls error inside
/// the `io::Error`, or an I/O error of the socket.
fn classify_io(e: &io::Error, probe: &ClientAuthProbe) -> ConnectErrorKind {
    let asked = probe.asked.load(Ordering::Relaxed);
    let presented = probe.presented.load(Ordering::Relaxed);
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return classify_rustls(tls, asked, presented);
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => {
            if asked {
                ConnectErrorKind::ClientCertRequired {
                    presented,
                    detail: "it closed the connection during the handshake".into(),
                }
            } else {
                ConnectErrorKind::NotTls(
                    "the connection was closed during the TLS handshake".into(),
                )
            }
        }
        _ => ConnectErrorKind::Tcp(e.to_string()),
    }
}

/// Classifies a rustls error seen by the client. `asked`: the server asked
/// for a client certificate; `presented`: we sent one.
fn classify_rustls(e: &rustls::Error, asked: bool, presented: bool) -> ConnectErrorKind {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(cert) => match cert {
            // A bad signature: a CA with the configured CA's name but
            // another key signed it (or the certificate was altered).
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                ConnectErrorKind::UnknownIssuer
            }
            CertificateError::NotValidForName => {
                ConnectErrorKind::NameMismatch { presented: vec![] }
            }
            CertificateError::NotValidForNameContext { presented, .. } => {
                ConnectErrorKind::NameMismatch {
                    presented: presented.iter().map(|p| pretty_general_name(p)).collect(),
                }
            }
            CertificateError::Expired => ConnectErrorKind::Expired("has expired".into()),
            CertificateError::ExpiredContext { not_after, .. } => {
                ConnectErrorKind::Expired(format!("expired on {}", format_time(*not_after)))
            }
            CertificateError::NotValidYet => {
                ConnectErrorKind::Expired("is not valid yet (check the clocks)".into())
            }
            CertificateError::NotValidYetContext { not_before, .. } => {
                ConnectErrorKind::Expired(format!(
                    "is not valid before {} (check the clocks)",
                    format_time(*not_before)
                ))
            }
            other => ConnectErrorKind::Other(format!("invalid certificate: {other}")),
        },
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. }
        | E::PeerSentOversizedRecord => {
            ConnectErrorKind::NotTls("it answered with something other than TLS".into())
        }
        E::AlertReceived(AlertDescription::CertificateRequired) => {
            ConnectErrorKind::ClientCertRequired {
                presented,
                detail: "TLS alert CertificateRequired".into(),
            }
        }
        E::AlertReceived(
            alert @ (AlertDescription::HandshakeFailure
            | AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError),
        ) if asked => ConnectErrorKind::ClientCertRequired {
            presented,
            detail: format!("TLS alert {alert:?}"),
        },
        E::AlertReceived(AlertDescription::NoApplicationProtocol) | E::NoApplicationProtocol => {
            ConnectErrorKind::Other("the agent does not offer HTTP/2 (ALPN h2)".into())
        }
        other => ConnectErrorKind::Other(other.to_string()),
    }
}

/// `DnsName("a.example")` -> `a.example`, `IpAddress(10.0.0.1)` ->
/// `10.0.0.1`: webpki reports presented names in their debug form.
fn pretty_general_name(name: &str) -> String {
    let inner = name
        .strip_prefix("DnsName(")
        .or_else(|| name.strip_prefix("IpAddress("))
        .and_then(|rest| rest.strip_suffix(')'));
    match inner {
        Some(inner) => inner.trim_matches('"').to_string(),
        None => name.to_string(),
    }
}

/// A certificate time as `YYYY-MM-DD HH:MM:SS UTC`.
fn format_time(t: UnixTime) -> String {
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|s| chrono::DateTime::<chrono::Utc>::from_timestamp(s, 0))
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{} seconds after the epoch", t.as_secs()))
}

// ---------------------------------------------------------------------------
// Development PKI
// ---------------------------------------------------------------------------

/// Development PKI for `mcp-agent --dev` and tests: where the CA and the
/// server certificate are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPki {
    /// The CA certificate (PEM): give it to clients as their `ca_cert`.
    pub ca_cert: PathBuf,
    /// The CA's private key (PEM, mode 0600).
    pub ca_key: PathBuf,
    /// The agent's certificate (PEM), signed by the CA.
    pub server_cert: PathBuf,
    /// The agent's private key (PEM, mode 0600).
    pub server_key: PathBuf,
}

/// Makes sure `dir` holds a development CA and a server certificate for
/// `names`, creating what is missing.
///
/// `dir` is created with mode 0700 if missing. `ca.pem`/`ca.key` are reused
/// when present, else a self-signed CA ("MCP development CA", 10 years) is
/// generated. `server.pem`/`server.key` are kept when they belong together,
/// are signed by that CA, stay valid for the next 30 days and cover every
/// name in `names` plus `localhost`, `127.0.0.1` and `::1` (DNS names or IP
/// literals, as subject alternative names); otherwise they are generated
/// anew (valid one year). Every file is written atomically with mode 0600.
pub fn ensure_dev_pki(dir: &Path, names: &[String]) -> Result<DevPki, TlsError> {
    create_private_dir(dir)?;
    let pki = DevPki {
        ca_cert: dir.join("ca.pem"),
        ca_key: dir.join("ca.key"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    };
    let mut all_names: Vec<String> = Vec::new();
    for name in DEV_DEFAULT_NAMES
        .iter()
        .map(|s| s.to_string())
        .chain(names.iter().cloned())
    {
        let name = normalize_name(&name)?;
        if !all_names.contains(&name) {
            all_names.push(name);
        }
    }

    match (pki.ca_cert.exists(), pki.ca_key.exists()) {
        (true, true) => {}
        (false, false) => {
            generate_ca(&pki.ca_cert, &pki.ca_key)?;
            tracing::info!(path = %pki.ca_cert.display(), "generated a development CA");
        }
        (true, false) => {
            return Err(TlsError::IncompletePair {
                present: pki.ca_cert.clone(),
                missing: pki.ca_key.clone(),
            });
        }
        (false, true) => {
            return Err(TlsError::IncompletePair {
                present: pki.ca_key.clone(),
                missing: pki.ca_cert.clone(),
            });
        }
    }

    match server_cert_problem(&pki, &all_names)? {
        None => {}
        Some(why) => {
            let common_name = names
                .first()
                .cloned()
                .unwrap_or_else(|| "localhost".to_string());
            issue_cert(
                &pki.ca_cert,
                &pki.ca_key,
                &common_name,
                &all_names,
                false,
                &pki.server_cert,
                &pki.server_key,
            )?;
            tracing::info!(path = %pki.server_cert.display(), names = ?all_names, reason = %why, "generated a development server certificate");
        }
    }
    Ok(pki)
}

/// Why the development server certificate must be (re)generated, or `None`
/// when it can be kept. Errors only when the CA itself is unusable.
fn server_cert_problem(pki: &DevPki, names: &[String]) -> Result<Option<String>, TlsError> {
    let roots = load_roots(&pki.ca_cert)?;
    if !pki.server_cert.exists() || !pki.server_key.exists() {
        return Ok(Some("missing".into()));
    }
    let (certs, key) = match (load_certs(&pki.server_cert), load_key(&pki.server_key)) {
        (Ok(c), Ok(k)) => (c, k),
        (Err(e), _) | (_, Err(e)) => return Ok(Some(e.to_string())),
    };
    if let Err(e) = certified_key(certs.clone(), key, &pki.server_cert, &pki.server_key) {
        return Ok(Some(e.to_string()));
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::BadCertificate {
            path: pki.ca_cert.clone(),
            detail: e.to_string(),
        })?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let (end_entity, intermediates) = match certs.split_first() {
        Some(split) => split,
        None => return Ok(Some("no certificate".into())),
    };
    for name in names {
        let server_name = server_name_for(name)?;
        for at in [now, now + RENEW_BEFORE] {
            if let Err(e) = verifier.verify_server_cert(
                end_entity,
                intermediates,
                &server_name,
                &[],
                UnixTime::since_unix_epoch(at),
            ) {
                return Ok(Some(format!("not valid for {name} within 30 days: {e}")));
            }
        }
    }
    Ok(None)
}

/// Issues a certificate signed by the CA at (`ca_cert`, `ca_key`) for
/// `names` (DNS names or IP literals, as subject alternative names) with
/// subject common name `common_name`, valid for one year. When `client` is
/// true it is a client certificate (extended key usage ClientAuth), else a
/// server certificate (ServerAuth, at least one name required). The PEM
/// certificate and its new private key are written atomically, mode 0600,
/// to `cert_out` and `key_out`.
///
/// The CA key must be PKCS#8 PEM; the CA certificate's subject is copied
/// into the new certificate's issuer, and the new certificate is checked to
/// chain to the CA before anything is written.
pub fn issue_cert(
    ca_cert: &Path,
    ca_key: &Path,
    common_name: &str,
    names: &[String],
    client: bool,
    cert_out: &Path,
    key_out: &Path,
) -> Result<(), TlsError> {
    let ca_certs = load_certs(ca_cert)?;
    let ca_der = ca_certs[0].clone();
    // Checks that the key belongs to the certificate, naming both files.
    certified_key(vec![ca_der.clone()], load_key(ca_key)?, ca_cert, ca_key)?;
    let ca_key_pem = String::from_utf8(read_file(ca_key)?).map_err(|_| TlsError::Pem {
        path: ca_key.to_path_buf(),
        detail: "not UTF-8 text".into(),
    })?;
    let ca_key_pair = rcgen::KeyPair::from_pem(&ca_key_pem).map_err(|e| TlsError::Pem {
        path: ca_key.to_path_buf(),
        detail: format!("cannot use the CA key: {e}"),
    })?;
    // rcgen reads the CA's subject (re-encoded as the issuer field)
    // and its subject key identifier (for the authority key identifier).
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca_der, ca_key_pair).map_err(|e| {
        TlsError::BadCertificate {
            path: ca_cert.to_path_buf(),
            detail: e.to_string(),
        }
    })?;

    let mut sans = Vec::new();
    let mut normalized = Vec::new();
    for name in names {
        let name = normalize_name(name)?;
        if normalized.contains(&name) {
            continue;
        }
        sans.push(san_for(&name)?);
        normalized.push(name);
    }
    if !client && normalized.is_empty() {
        return Err(TlsError::InvalidName {
            name: common_name.to_string(),
            detail: "a server certificate needs at least one DNS name or IP address".into(),
        });
    }

    let now = SystemTime::now();
    let mut params = rcgen::CertificateParams::default();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + LEAF_VALIDITY).into();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.subject_alt_names = sans;
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| TlsError::Generate(e.to_string()))?;

    check_chains_to(ca_cert, ca_der, cert.der(), client, &normalized)?;

    write_pair(&cert, &key, cert_out, key_out)
}

/// Verifies that a freshly issued certificate chains to the CA, as a
/// client or as a server for every name: catches a CA whose subject could
/// not be reproduced exactly in the issuer field.
fn check_chains_to(
    ca_path: &Path,
    ca_der: CertificateDer<'static>,
    cert: &CertificateDer<'static>,
    client: bool,
    names: &[String],
) -> Result<(), TlsError> {
    let bad_ca = |detail: String| TlsError::BadCertificate {
        path: ca_path.to_path_buf(),
        detail,
    };
    let mut roots = RootCertStore::empty();
    roots.add(ca_der).map_err(|e| bad_ca(e.to_string()))?;
    let roots = Arc::new(roots);
    let now = UnixTime::now();
    let failed = |e: rustls::Error| {
        TlsError::Generate(format!(
            "the new certificate does not verify against the CA {}: {e}",
            ca_path.display()
        ))
    };
    if client {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| bad_ca(e.to_string()))?;
        verifier
            .verify_client_cert(cert, &[], now)
            .map_err(failed)?;
    } else {
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| bad_ca(e.to_string()))?;
        for name in names {
            verifier
                .verify_server_cert(cert, &[], &server_name_for(name)?, &[], now)
                .map_err(failed)?;
        }
    }
    Ok(())
}

/// Generates a self-signed development CA and writes it.
fn generate_ca(cert_out: &Path, key_out: &Path) -> Result<(), TlsError> {
    let now = SystemTime::now();
    let mut params = rcgen::CertificateParams::default();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + DEV_CA_VALIDITY).into();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, DEV_CA_NAME);
    // Every development CA has the same common name; a random unit keeps
    // their subjects apart, so that a certificate from another development
    // CA is reported as an unknown issuer rather than a bad signature.
    params.distinguished_name.push(
        rcgen::DnType::OrganizationalUnitName,
        format!("{:016x}", rand::random::<u64>()),
    );
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    write_pair(&cert, &key, cert_out, key_out)
}

/// Writes a certificate and its key as PEM (both 0600, each atomically),
/// the key first so a certificate never sits beside a missing key.
fn write_pair(
    cert: &rcgen::Certificate,
    key: &rcgen::KeyPair,
    cert_out: &Path,
    key_out: &Path,
) -> Result<(), TlsError> {
    for (path, pem) in [(key_out, key.serialize_pem()), (cert_out, cert.pem())] {
        crate::fsutil::write_private(path, pem.as_bytes()).map_err(|source| TlsError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Creates `dir` (and missing parents) with mode 0700 if it does not exist.
fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// A name as it goes into a certificate: IP literals in canonical form
/// (brackets stripped), DNS names lower-cased; rejects anything rustls
/// could not match.
fn normalize_name(name: &str) -> Result<String, TlsError> {
    let trimmed = name.trim();
    let unbracketed = trimmed
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(trimmed);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    let dns = trimmed.to_ascii_lowercase();
    match ServerName::try_from(dns.as_str()) {
        Ok(ServerName::DnsName(_)) => Ok(dns),
        _ => Err(TlsError::InvalidName {
            name: name.to_string(),
            detail: "not a DNS name or an IP address".into(),
        }),
    }
}

/// The TLS server name for a normalized name.
fn server_name_for(name: &str) -> Result<ServerName<'static>, TlsError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(name.to_string()).map_err(|e| TlsError::InvalidName {
        name: name.to_string(),
        detail: e.to_string(),
    })
}

/// The subject alternative name for a normalized name.
fn san_for(name: &str) -> Result<rcgen::SanType, TlsError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(rcgen::SanType::IpAddress(ip));
    }
    let dns = rcgen::string::Ia5String::try_from(name).map_err(|e| TlsError::InvalidName {
        name: name.to_string(),
        detail: e.to_string(),
    })?;
    Ok(rcgen::SanType::DnsName(dns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("agent.pem");
        let e = load_certs(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: cannot read: ", missing.display())),
            "{e}"
        );

        let pki = ensure_dev_pki(dir.path(), &[]).unwrap();
        let e = load_certs(&pki.ca_key).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{}: no PEM certificate found", pki.ca_key.display())
        );
        let e = load_key(&pki.ca_cert).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{}: no private key found", pki.ca_cert.display())
        );

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\n!!!\n").unwrap();
        let e = load_certs(&garbage).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: invalid PEM", garbage.display())),
            "{e}"
        );
    }

    #[test]
    fn server_config_rejects_a_key_of_another_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure_dev_pki(dir.path(), &[]).unwrap();
        let files = ServerTlsFiles {
            cert: pki.server_cert.clone(),
            key: pki.ca_key.clone(),
            client_ca: None,
        };
        let e = server_config(&files).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{}: not a valid certificate chain for this key ({})",
                pki.server_cert.display(),
                pki.ca_key.display()
            )),
            "{e}"
        );
        let ok = ServerTlsFiles {
            key: pki.server_key.clone(),
            client_ca: Some(pki.ca_cert.clone()),
            ..files
        };
        let config = server_config(&ok).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    }

    #[test]
    fn dev_pki_is_idempotent_and_follows_names() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("pki");
        let names = vec!["agent.example".to_string()];
        let pki = ensure_dev_pki(&dir, &names).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&pki.ca_key), 0o600);
        assert_eq!(mode(&pki.server_key), 0o600);
        let ca = std::fs::read(&pki.ca_cert).unwrap();
        let ca_key = std::fs::read(&pki.ca_key).unwrap();
        let server = std::fs::read(&pki.server_cert).unwrap();

        // Same names (defaults repeated, different case): nothing changes.
        let again = ensure_dev_pki(
            &dir,
            &["AGENT.example".to_string(), "127.0.0.1".to_string()],
        )
        .unwrap();
        assert_eq!(again, pki);
        assert_eq!(std::fs::read(&pki.ca_cert).unwrap(), ca);
        assert_eq!(std::fs::read(&pki.ca_key).unwrap(), ca_key);
        assert_eq!(std::fs::read(&pki.server_cert).unwrap(), server);

        // A new name: a new server certificate under the same CA.
        let more = vec!["agent.example".to_string(), "[fd00::7]".to_string()];
        ensure_dev_pki(&dir, &more).unwrap();
        assert_eq!(std::fs::read(&pki.ca_cert).unwrap(), ca);
        let renewed = std::fs::read(&pki.server_cert).unwrap();
        assert_ne!(renewed, server);
        assert_eq!(mode(&pki.server_key), 0o600);
        assert_eq!(
            server_cert_problem(&pki, &["fd00::7".to_string()]).unwrap(),
            None
        );
        // ... which is kept on the next call.
        ensure_dev_pki(&dir, &more).unwrap();
        assert_eq!(std::fs::read(&pki.server_cert).unwrap(), renewed);

        // A server key that does not match its certificate is replaced.
        std::fs::copy(&pki.ca_key, &pki.server_key).unwrap();
        ensure_dev_pki(&dir, &more).unwrap();
        assert_ne!(std::fs::read(&pki.server_cert).unwrap(), renewed);
        assert!(
            server_config(&ServerTlsFiles {
                cert: pki.server_cert.clone(),
                key: pki.server_key.clone(),
                client_ca: None,
            })
            .is_ok()
        );
    }

    #[test]
    fn dev_pki_refuses_half_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure_dev_pki(dir.path(), &[]).unwrap();
        std::fs::remove_file(&pki.ca_key).unwrap();
        let e = ensure_dev_pki(dir.path(), &[]).unwrap_err().to_string();
        assert!(e.contains("ca.key is missing"), "{e}");
    }

    #[test]
    fn invalid_names_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let e = ensure_dev_pki(dir.path(), &["not a name".to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"not a name\""), "{e}");
    }

    #[test]
    fn client_config_requires_cert_and_key_together() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure_dev_pki(dir.path(), &[]).unwrap();
        let client_pem = dir.path().join("client.pem");
        let e = client_config(&ClientTlsFiles {
            ca_cert: pki.ca_cert.clone(),
            cert: Some(client_pem.clone()),
            key: None,
        })
        .unwrap_err();
        assert!(matches!(
            e,
            TlsError::IncompleteClientAuth { missing: "key", .. }
        ));
        assert!(e.to_string().contains("client key"), "{e}");
        assert!(
            e.to_string().contains(&client_pem.display().to_string()),
            "{e}"
        );

        let client_key = dir.path().join("client.key");
        issue_cert(
            &pki.ca_cert,
            &pki.ca_key,
            "operator",
            &[],
            true,
            &client_pem,
            &client_key,
        )
        .unwrap();
        assert_eq!(mode(&client_key), 0o600);
        let config = client_config(&ClientTlsFiles {
            ca_cert: pki.ca_cert.clone(),
            cert: Some(client_pem),
            key: Some(client_key),
        })
        .unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    }

    #[test]
    fn issues_under_a_foreign_ca() {
        // A CA not made by us: several subject attributes, string types
        // other than UTF-8, and a key identifier rcgen would not derive.
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CountryName,
            rcgen::DnValue::PrintableString("DE".try_into().unwrap()),
        );
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme Ü GmbH");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Acme Root");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![7; 20]);
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        let ca_cert = dir.path().join("acme.pem");
        let ca_key = dir.path().join("acme.key");
        std::fs::write(&ca_cert, ca.pem()).unwrap();
        std::fs::write(&ca_key, key.serialize_pem()).unwrap();

        // issue_cert verifies the chain before writing.
        let out = dir.path().join("srv.pem");
        let out_key = dir.path().join("srv.key");
        issue_cert(
            &ca_cert,
            &ca_key,
            "srv",
            &["srv.acme.example".to_string(), "10.1.2.3".to_string()],
            false,
            &out,
            &out_key,
        )
        .unwrap();
        // The authority key identifier is the CA's, not one rcgen derived.
        let issued = load_certs(&out).unwrap();
        assert!(
            issued[0].windows(20).any(|w| w == [7; 20]),
            "the CA's key identifier is missing"
        );
        assert!(
            server_config(&ServerTlsFiles {
                cert: out,
                key: out_key,
                client_ca: Some(ca_cert),
            })
            .is_ok()
        );
    }

    #[test]
    fn server_certificates_need_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure_dev_pki(dir.path(), &[]).unwrap();
        let e = issue_cert(
            &pki.ca_cert,
            &pki.ca_key,
            "x",
            &[],
            false,
            &dir.path().join("x.pem"),
            &dir.path().join("x.key"),
        )
        .unwrap_err();
        assert!(matches!(e, TlsError::InvalidName { .. }), "{e}");
    }

    #[test]
    fn rustls_errors_are_classified() {
        use rustls::Error as E;
        let c = |e: E| classify_rustls(&e, false, false);
        assert_eq!(
            c(E::InvalidCertificate(CertificateError::UnknownIssuer)),
            ConnectErrorKind::UnknownIssuer
        );
        assert!(matches!(
            c(E::InvalidCertificate(CertificateError::NotValidForName)),
            ConnectErrorKind::NameMismatch { .. }
        ));
        let expired = c(E::InvalidCertificate(CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000)),
        }));
        assert_eq!(
            expired,
            ConnectErrorKind::Expired("expired on 2023-11-14 22:13:20 UTC".into())
        );
        assert!(matches!(
            c(E::InvalidCertificate(CertificateError::NotValidYet)),
            ConnectErrorKind::Expired(_)
        ));
        assert!(matches!(
            c(E::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType
            )),
            ConnectErrorKind::NotTls(_)
        ));
        assert!(matches!(
            c(E::AlertReceived(AlertDescription::CertificateRequired)),
            ConnectErrorKind::ClientCertRequired {
                presented: false,
                ..
            }
        ));
        // A handshake failure is about client certificates only when the
        // server asked for one.
        assert!(matches!(
            c(E::AlertReceived(AlertDescription::HandshakeFailure)),
            ConnectErrorKind::Other(_)
        ));
        assert!(matches!(
            classify_rustls(&E::AlertReceived(AlertDescription::UnknownCA), true, true),
            ConnectErrorKind::ClientCertRequired {
                presented: true,
                ..
            }
        ));
    }

    #[test]
    fn connect_errors_read_as_sentences() {
        let e = ConnectError::new(ConnectErrorKind::UnknownIssuer, "127.0.0.1:9444");
        assert_eq!(
            e.to_string(),
            "TLS: the agent's certificate at 127.0.0.1:9444 is not signed by the configured CA"
        );
        let e = ConnectError::new(
            ConnectErrorKind::NameMismatch {
                presented: vec!["other.example".into()],
            },
            "127.0.0.1:9444",
        );
        assert_eq!(
            e.to_string(),
            "TLS: the agent's certificate at 127.0.0.1:9444 is not valid for 127.0.0.1 \
             (it is for other.example)"
        );
    }
}
