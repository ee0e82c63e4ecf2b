//! The server side: its rustls configuration and the streams of accepted
//! connections handed to tonic, which survive garbage, silent clients and
//! accept errors.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::admit::{Admitted, ConnectionLimits};
use super::pem::{certified_key, load_certs, load_key, load_roots};
use super::{ALPN_H2, TlsError, provider};

/// How long a TLS handshake on the agent's port may take before the
/// connection is dropped.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many TLS handshakes the agent runs at once; further connections wait
/// in the kernel's accept queue until one finishes.
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 1024;

/// Pause after a failed `accept` (for example `EMFILE`) before trying again.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

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
///
/// A connection `limits` has no place for is closed as soon as it is
/// accepted, before its handshake; an admitted one holds its place for as
/// long as it is open.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
    max_pending: usize,
    limits: ConnectionLimits,
) -> impl Stream<Item = io::Result<Admitted<tokio_rustls::server::TlsStream<TcpStream>>>> + Send + 'static
{
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
            let Some(place) = limits.admit(peer) else {
                continue;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        // An error means the consumer is gone; the stream is dropped.
                        let _ = tx.send(Ok(Admitted::new(tls, place))).await;
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
/// `limits` as for [`tls_incoming`].
pub fn plain_incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> impl Stream<Item = io::Result<Admitted<TcpStream>>> + Send + 'static {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => break,
                accepted = accept_one(&listener) => accepted,
            };
            let Some(place) = limits.admit(peer) else {
                continue;
            };
            if tx.send(Ok(Admitted::new(tcp, place))).await.is_err() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::dev::ensure_dev_pki;

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
}
