//! The agent: its gRPC service over a [`Reconciler`] and the server wiring
//! (health checking, reflection, graceful shutdown). `mcp-agent` calls
//! [`Agent::open`] and [`Agent::serve`]; tests run the very same code.

mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mcp_proto::v1::agent_service_server::AgentServiceServer;
use mcp_runtime::Runtime;
use mcp_runtime::podman::{Podman, PodmanConfig};
use tokio::net::TcpListener;

use crate::config::{AgentConfig, CliConfig, ConfigError, NodeEntry};
use crate::reconcile::Reconciler;
use crate::registry::{Registry, RegistryError};

pub use service::AgentService;

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The registry could not be opened.
    #[error("registry {path}: {source}")]
    Registry {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: RegistryError,
    },
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
}

/// A configured agent, ready to serve.
pub struct Agent {
    config: AgentConfig,
    reconciler: Arc<Reconciler>,
    listener: TcpListener,
}

impl Agent {
    /// Opens the registry, sets up the podman runtime (which may not be
    /// reachable yet) and binds the listen address.
    pub async fn open(config: AgentConfig) -> Result<Agent, ServeError> {
        let addr = config.bind_address()?;
        let registry = Registry::open(&config.db).map_err(|source| ServeError::Registry {
            path: config.db.clone(),
            source,
        })?;
        let runtime: Arc<dyn Runtime> = Arc::new(Podman::new(PodmanConfig {
            socket: config.podman.socket.clone(),
            insecure_registries: config.podman.insecure_registries.clone(),
        }));
        let reconciler = Arc::new(Reconciler::new(
            runtime,
            Arc::new(registry),
            config.podman.stop_timeout,
        ));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(Agent {
            config,
            reconciler,
            listener,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The reconciler behind the RPCs.
    pub fn reconciler(&self) -> &Arc<Reconciler> {
        &self.reconciler
    }

    /// Serves gRPC until `shutdown` resolves, then finishes in-flight RPCs.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Agent {
            config,
            reconciler,
            listener,
        } = self;
        let addr = listener.local_addr().ok();
        tokio::spawn(watch_runtime(reconciler.clone()));
        tokio::spawn(reconciler.clone().follow_events());

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<AgentServiceServer<AgentService>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(mcp_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let service = AgentService::new(config.node_name.clone(), reconciler);

        tracing::info!(addr = ?addr, node = %config.node_name, "mcp-agent listening");
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(AgentServiceServer::new(service))
            .serve_with_incoming_shutdown(incoming(listener), shutdown)
            .await?;
        tracing::info!("mcp-agent stopped");
        Ok(())
    }
}

/// Accepted connections with Nagle's algorithm off: small gRPC frames
/// otherwise wait for delayed ACKs (tens of milliseconds per call).
fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        })
    })
}

/// Probes the runtime every few seconds, logs when it goes away or comes
/// back, and on each return resolves leftovers of interrupted deploys.
async fn watch_runtime(reconciler: Arc<Reconciler>) {
    // `None` until the first probe, then whether the runtime answered.
    let mut available: Option<bool> = None;
    loop {
        let ok = match reconciler.runtime().ping().await {
            Ok(v) => {
                if available != Some(true) {
                    tracing::info!(version = %v.version, "runtime available");
                    match reconciler.recover().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            count = n,
                            "resolved instances left by interrupted deploys"
                        ),
                        Err(e) => {
                            tracing::warn!(error = %e, "could not resolve leftovers of interrupted deploys")
                        }
                    }
                }
                true
            }
            Err(e) => {
                if available != Some(false) {
                    tracing::warn!(error = %e, "runtime unavailable; RPCs that need it answer Unavailable until it returns");
                }
                false
            }
        };
        available = Some(ok);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Writes a CLI configuration pointing at this agent to `path`, unless a
/// file exists there; returns whether it wrote. Used by `mcp-agent --dev`.
pub fn write_dev_cli_config(
    path: &std::path::Path,
    node_name: &str,
    addr: SocketAddr,
) -> Result<bool, ConfigError> {
    let services_dir = path
        .parent()
        .map(|p| p.join("services"))
        .unwrap_or_else(|| PathBuf::from("services"));
    let config = CliConfig {
        services_dir,
        token: None,
        token_file: None,
        tls: None,
        nodes: vec![NodeEntry {
            name: node_name.to_string(),
            address: addr.to_string(),
        }],
    };
    config.write_if_absent(path)
}
