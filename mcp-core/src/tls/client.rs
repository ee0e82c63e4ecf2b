//! The client side: its rustls configuration and a connector for tonic
//! whose errors say in one sentence what went wrong.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, CertificateError, SignatureScheme};
use tokio::net::TcpStream;

use super::pem::{certified_key, load_certs, load_key, load_roots};
use super::{ALPN_H2, TlsError, provider};

/// How long [`TlsConnector`] waits, after a handshake in which the server
/// asked for a client certificate, for the server's verdict on it (see
/// [`TlsConnector::with_client_auth_wait`]).
pub const DEFAULT_CLIENT_AUTH_WAIT: Duration = Duration::from_secs(2);

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

/// The TLS server name for a normalized name.
pub(super) fn server_name_for(name: &str) -> Result<ServerName<'static>, TlsError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(name.to_string()).map_err(|e| TlsError::InvalidName {
        name: name.to_string(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::dev::{ensure_dev_pki, issue_cert};

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
        assert_eq!(crate::tls::file_mode(&client_key), 0o600);
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
