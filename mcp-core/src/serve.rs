//! What every MCP gRPC server (the agent, the master) sets up alike before
//! its own services: the token validators its `[auth]` names, its TLS, its
//! listener, the HTTP/2 transport with the bounds that hold before any
//! caller is authenticated, reflection over exactly what it serves, and
//! the errors of all that ([`ServeError`]); and the answer both give to
//! `DeployStream` ([`deploy_updates`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mcp_proto::v1 as pb;

use crate::auth::audit::AuditFileError;
use crate::auth::local::LocalTokens;
use crate::auth::mcias::Mcias;
use crate::auth::{ChainValidator, TokenValidator};
use crate::config::ConfigError;
use crate::config::server::{AuthSettings, LimitSettings, TlsSettings};
use crate::tls::{self, TlsError};
use crate::wire::{CONNECTION_WINDOW, MAX_FRAME, MAX_HEADER_LIST_SIZE, STREAM_WINDOW};

/// Streams one connection may see the server reset for its protocol
/// errors before the connection is closed (tonic leaves it unbounded
/// unless set).
pub const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Streams one connection may open and reset before the server accepted
/// them, at once, before the connection is closed.
pub const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// How often an idle connection is pinged (HTTP/2 PING, and TCP
/// keepalive); a peer that does not answer within [`KEEPALIVE_TIMEOUT`] is
/// dropped, and its place with it.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a server's security set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The local token file is unreadable or malformed.
    #[error("local tokens: {0}")]
    Tokens(ConfigError),
    /// MCIAS is misconfigured.
    #[error("auth.mcias: {0}")]
    Mcias(String),
    /// The TLS certificate or key cannot be used.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// Neither TLS material nor an explicit `insecure = true`.
    #[error(
        "no TLS certificate: set [tls] cert and key (an overlay CA's certificate for this host), or `insecure = true` in [tls] to serve plaintext gRPC"
    )]
    NoTls,
}

/// Why a server could not start or stopped with an error, in what every
/// server sets up alike (each daemon adds its own causes: its
/// configuration, its database).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// Tokens, MCIAS or TLS could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The audit file cannot be opened.
    #[error(transparent)]
    Audit(#[from] AuditFileError),
}

/// Binds the server's listener.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// The reflection services, `grpc.reflection.v1` and `v1alpha` (which
/// grpcio's reflection module and older grpcurl speak), over exactly
/// `descriptors`: the encoded descriptor sets of what the server serves.
#[allow(clippy::type_complexity)]
pub fn reflection(
    descriptors: &[&[u8]],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    ServeError,
> {
    let builder = || {
        descriptors.iter().fold(
            tonic_reflection::server::Builder::configure().include_reflection_service(false),
            |b, set| b.register_encoded_file_descriptor_set(set),
        )
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// The validator `auth` describes: local tokens first, then MCIAS when
/// configured. `token_add` is the command that makes a first token (for
/// the warning when there is none).
pub fn validator(
    auth: &AuthSettings,
    token_add: &str,
) -> Result<Arc<dyn TokenValidator>, SetupError> {
    let local = LocalTokens::open(&auth.token_file).map_err(SetupError::Tokens)?;
    let local_count = local.len();
    let mut chain: Vec<Box<dyn TokenValidator>> = vec![Box::new(local)];
    if let Some(m) = &auth.mcias {
        let mcias = Mcias::new(m.clone()).map_err(|e| SetupError::Mcias(e.to_string()))?;
        chain.push(Box::new(mcias));
        tracing::info!(url = %m.url, local_tokens = local_count, "validating tokens locally, then with MCIAS");
    } else if local_count == 0 {
        tracing::warn!(
            path = %auth.token_file.display(),
            "no tokens yet: every RPC is refused until `{token_add}` creates one"
        );
    } else {
        tracing::info!(path = %auth.token_file.display(), tokens = local_count, "validating local tokens");
    }
    Ok(Arc::new(ChainValidator::new(chain)))
}

/// The TLS configuration `settings` describes, or `None` for an explicitly
/// insecure server.
pub fn server_tls(settings: &TlsSettings) -> Result<Option<Arc<rustls::ServerConfig>>, SetupError> {
    if settings.insecure {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&settings.cert, &settings.key) else {
        return Err(SetupError::NoTls);
    };
    Ok(Some(tls::server_config(&tls::ServerTlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: settings.client_ca.clone(),
    })?))
}

/// The gRPC transport with `limits` and the fixed HTTP/2 bounds: streams
/// per connection, the reset limits that close a connection whose peer
/// makes the server reset streams ("MadeYouReset") or opens and resets
/// them at once ("Rapid Reset"), keepalive, header list, window and frame
/// sizes. Layers and services go on top.
pub fn transport(limits: &LimitSettings) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_streams_per_connection)
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_keepalive(Some(KEEPALIVE_INTERVAL))
        .http2_max_header_list_size(MAX_HEADER_LIST_SIZE)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
}

/// Raises this process's soft limit on open files to its hard limit, so
/// that many concurrent connections do not run out of descriptors; returns
/// the new soft limit.
pub fn raise_open_files_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).ok()?;
    }
    Some(hard.max(soft))
}

/// The answer to `DeployStream`: progress updates, then the outcome.
pub type DeployUpdates =
    Pin<Box<dyn futures::Stream<Item = Result<pb::DeployUpdate, tonic::Status>> + Send>>;

/// Sends a deploy's progress to the caller of `DeployStream` (nothing, once
/// the caller has gone).
#[derive(Clone)]
pub struct ProgressSender(
    tokio::sync::mpsc::UnboundedSender<Result<pb::DeployUpdate, tonic::Status>>,
);

impl ProgressSender {
    /// Sends one progress update.
    pub fn send(&self, progress: pb::DeployProgress) {
        let _ = self.0.send(Ok(pb::DeployUpdate {
            update: Some(pb::deploy_update::Update::Progress(progress)),
        }));
    }
}

/// The `DeployStream` answer of a deploy that `run` makes (given where to
/// send its progress): the deploy runs to its end in its own task, whether
/// or not the caller stays to watch; its outcome is the last message, and
/// is recorded in `end` (for the audit) before it leaves, so that a caller
/// that closes the stream once it has read it left after the end.
pub fn deploy_updates<F, Fut>(end: Option<crate::auth::guard::HandlerEnd>, run: F) -> DeployUpdates
where
    F: FnOnce(ProgressSender) -> Fut,
    Fut: Future<Output = Result<pb::DeployResponse, tonic::Status>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let deploy = run(ProgressSender(tx.clone()));
    tokio::spawn(async move {
        let last = deploy.await.map(|done| pb::DeployUpdate {
            update: Some(pb::deploy_update::Update::Done(done)),
        });
        if let Some(end) = end {
            end.finish(
                last.as_ref()
                    .map_or_else(tonic::Status::code, |_| tonic::Code::Ok),
            );
        }
        let _ = tx.send(last);
    });
    Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
}
