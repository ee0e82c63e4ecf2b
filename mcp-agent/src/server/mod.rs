//! The agent: its gRPC service over a [`Reconciler`] ([`service`]) and the
//! server wiring (TLS, the auth and audit interceptor, the layer that counts
//! state-changing RPCs in flight ([`activity`]), health checking,
//! reflection, graceful shutdown). `mcp-agent` calls [`Agent::open`] and
//! [`Agent::serve`]; tests run the very same code.

pub mod activity;
pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mcp_proto::v1::agent_service_server::AgentServiceServer;
use mcp_runtime::Runtime;
use mcp_runtime::combined::Runtimes;
use mcp_runtime::podman::{Podman, PodmanConfig};
use mcp_runtime::qemu::{Accel, Qemu, QemuConfig};
use tokio::net::TcpListener;

use crate::config::AgentConfig;
use crate::files::VmFiles;
use crate::monitor::Monitor;
use crate::reconcile::Reconciler;
use crate::registry::{Registry, RegistryError};
use crate::supervise::{Supervisor, TASK_RESTARTED};
use activity::Activity;
use mcp_core::auth::audit::AuditLog;
use mcp_core::auth::guard::GuardLayer;
use mcp_core::config::ConfigError;
use mcp_core::tls;
use mcp_core::tls::admit::{ConnectionLimits, CountStreams};
use mcp_core::{daemon, serve};

/// The service name of events about the agent itself rather than one of
/// its services (such as a background task restarted): `-`, which no
/// service can be named.
pub const AGENT_EVENTS: &str = "-";

pub use service::AgentService;

/// The encoded descriptor sets of every service the agent serves: its own
/// API, health checking and reflection (`grpc.reflection.v1`, and
/// `v1alpha`, which grpcio's reflection module and older grpcurl speak).
/// Reflection serves exactly these, and
/// the auth coverage test walks them, so a service cannot be added to the
/// server without its methods being checked.
pub const SERVED_DESCRIPTORS: &[&[u8]] = &[
    mcp_proto::v1::AGENT_FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// How long read-only RPCs in flight may take to finish once the agent is
/// asked to stop and its changes in flight are done: a followed log (or
/// any stream a client keeps open) never ends by itself, and must not keep
/// the agent from stopping.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
    /// What every server sets up alike failed: its listener, TLS, tokens,
    /// audit file, reflection, or the gRPC server itself.
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
}

/// A configured agent, ready to serve.
pub struct Agent {
    config: AgentConfig,
    reconciler: Arc<Reconciler>,
    listener: TcpListener,
    /// The interceptor; `None` only when a benchmark turned it off.
    guard: Option<GuardLayer>,
    /// Where audit records go (the guard's), for `NodeInfo` to report on.
    audit: Arc<AuditLog>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// The QEMU runtime, when the configured QEMU binary is there; `None` (and
/// unikernel deploys refused) otherwise.
fn vm_runtime(config: &AgentConfig) -> Option<Arc<Qemu>> {
    let qemu = &config.unikernel.qemu;
    let Some(binary) = crate::config::on_path(qemu) else {
        tracing::info!(qemu = %qemu.display(), "QEMU not found: this node runs containers only");
        return None;
    };
    let accel = Accel::parse(&config.unikernel.accel).unwrap_or(Accel::Auto);
    tracing::info!(qemu = %binary.display(), accel = accel.as_str(), state_dir = %config.unikernel.state_dir.display(), "unikernel runtime available");
    Some(Arc::new(
        Qemu::new(QemuConfig {
            qemu: binary,
            state_dir: config.unikernel.state_dir.clone(),
            accel,
            log_max_size: config.unikernel.log_max_size,
        })
        .with_boot_files(Arc::new(vm_files(config))),
    ))
}

/// Where VMs may boot from: the service's directory and the configured
/// image directories.
fn vm_files(config: &AgentConfig) -> VmFiles {
    VmFiles {
        srv_root: config.srv_root.clone(),
        images_dirs: config.unikernel.images_dirs.clone(),
    }
}

impl Agent {
    /// Opens the registry, sets up the podman runtime (which may not be
    /// reachable yet) and binds the listen address.
    pub async fn open(config: AgentConfig) -> Result<Agent, ServeError> {
        let addr = config.bind_address()?;
        let tls = serve::server_tls(&config.tls).map_err(serve::ServeError::from)?;
        let auth = serve::validator(&config.auth, "mcp-agent token add NAME --role admin")
            .map_err(serve::ServeError::from)?;
        let audit = Arc::new(match &config.auth.audit_file {
            Some(path) => AuditLog::with_file(path).map_err(serve::ServeError::from)?,
            None => AuditLog::log_only(),
        });
        let registry = Registry::open(&config.db).map_err(|source| ServeError::Registry {
            path: config.db.clone(),
            source,
        })?;
        // The root of the service file trees; each service's own directory
        // is made by its first push.
        if let Err(e) = std::fs::create_dir_all(&config.srv_root) {
            tracing::warn!(srv_root = %config.srv_root.display(), error = %e, "cannot create srv_root; file pushes will fail until it exists");
        }
        let podman: Arc<dyn Runtime> = Arc::new(Podman::new(PodmanConfig {
            socket: config.podman.socket.clone(),
            insecure_registries: config.podman.insecure_registries.clone(),
        }));
        let runtime: Arc<dyn Runtime> = Arc::new(Runtimes::new(podman, vm_runtime(&config)));
        let reconciler = Arc::new(
            Reconciler::new(runtime, Arc::new(registry), config.podman.stop_timeout)
                .with_vm_files(vm_files(&config))
                .with_volume_roots(config.security.allowed_volume_roots.clone())
                .with_publish_address(config.publish_address)
                .with_deploy_settings(config.deploy),
        );
        let listener = serve::bind(addr).await?;
        let guard = GuardLayer::new(auth, audit.clone()).audit_required(config.auth.audit_required);
        Ok(Agent {
            config,
            reconciler,
            listener,
            guard: Some(guard),
            audit,
            tls,
        })
    }

    /// Removes the interceptor: no authentication, no authorisation, no
    /// audit. Only for the benchmark that measures what they cost per RPC;
    /// no configuration reaches this.
    pub fn disable_guard_for_benchmarks(&mut self) {
        self.guard = None;
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The reconciler behind the RPCs.
    pub fn reconciler(&self) -> &Arc<Reconciler> {
        &self.reconciler
    }

    /// Serves gRPC until `shutdown` resolves, then stops accepting, lets
    /// every change in flight (deploy, stop, sync, ...) run to its end,
    /// gives the read-only RPCs still open [`SHUTDOWN_GRACE`] more, and
    /// returns.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Agent {
            config,
            reconciler,
            listener,
            guard,
            audit,
            tls,
        } = self;
        let addr = listener.local_addr().ok();
        // The monitor holds its drift checks while a state-changing RPC runs.
        let activity = Activity::new();
        // Stopped with the server, so that an alert program in flight is killed.
        let _background = background_tasks(&reconciler, &config, &activity, addr);

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<AgentServiceServer<AgentService>>()
            .await;
        let (reflection, reflection_v1alpha) = serve::reflection(SERVED_DESCRIPTORS)?;
        let service = AgentService::new(
            config.node_name.clone(),
            reconciler,
            config.srv_root.clone(),
            config.files.clone(),
        )
        .with_activity(activity.clone())
        .with_file_streams(config.limits.max_file_streams)
        .with_audit(audit);

        // When `shutdown` fires, the server stops accepting and waits for
        // its connections; the grace bounds that wait.
        let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
        let shutdown = async move {
            shutdown.await;
            let _ = stopping_tx.send(true);
        };
        let changes = activity.clone();
        let grace = async move {
            let _ = stopping.wait_for(|s| *s).await;
            changes.idle().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        let limits = config.limits;
        let connection_limits =
            ConnectionLimits::new(limits.max_connections, limits.max_connections_per_peer)
                .with_idle_timeout(limits.idle_timeout);
        let router = serve::transport(&limits)
            .layer(CountStreams::new(connection_limits.clone()))
            .layer(tower::util::option_layer(guard))
            .layer(activity.layer())
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(AgentServiceServer::new(service));
        match tls {
            Some(tls_config) => {
                tracing::info!(addr = ?addr, node = %config.node_name, client_certificates = config.tls.client_ca.is_some(), "mcp-agent listening (TLS)");
                let incoming = tls::tls_incoming(
                    listener,
                    tls_config,
                    config.tls.handshake_timeout,
                    tls::DEFAULT_MAX_PENDING_HANDSHAKES,
                    connection_limits,
                );
                tokio::select! {
                    served = router.serve_with_incoming_shutdown(incoming, shutdown) => served.map_err(serve::ServeError::from)?,
                    () = grace => tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "stopping with RPCs still in flight (a followed log, say)"),
                }
            }
            None => {
                tracing::warn!(addr = ?addr, node = %config.node_name, "mcp-agent listening WITHOUT TLS (tls.insecure = true): tokens cross the network in plain text");
                let incoming = tls::plain_incoming(listener, connection_limits);
                tokio::select! {
                    served = router.serve_with_incoming_shutdown(incoming, shutdown) => served.map_err(serve::ServeError::from)?,
                    () = grace => tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "stopping with RPCs still in flight (a followed log, say)"),
                }
            }
        }
        // A change whose caller went away runs in a task of its own: it
        // ends before the agent does.
        if activity.in_progress() > 0 {
            tracing::info!(
                operations = activity.in_progress(),
                "waiting for changes in flight to finish"
            );
            activity.idle().await;
        }
        tracing::info!("mcp-agent stopped");
        Ok(())
    }
}

/// The agent's background tasks, each restarted should it end or panic
/// (with a log line and a `task-restarted` event), all stopped when the
/// returned supervisor is dropped.
fn background_tasks(
    reconciler: &Arc<Reconciler>,
    config: &AgentConfig,
    activity: &Activity,
    listening: Option<SocketAddr>,
) -> Supervisor {
    let registry = reconciler.registry().clone();
    let mut tasks = Supervisor::new(Arc::new(move |task: &str, how: &str| {
        if let Err(e) = registry.record_event(AGENT_EVENTS, Some(task), TASK_RESTARTED, how) {
            tracing::warn!(error = %e, "cannot record an event");
        }
    }));
    let r = reconciler.clone();
    tasks.spawn("runtime-watcher", move || watch_runtime(r.clone()));
    if let Some(interval) = daemon::watchdog_interval() {
        let registry = reconciler.registry().clone();
        tasks.spawn("watchdog", move || {
            let registry = registry.clone();
            // Alive: the registry answers a query.
            daemon::watchdog(interval, move || registry.schema_version().is_ok())
        });
    }
    let r = reconciler.clone();
    tasks.spawn("runtime-events", move || r.clone().follow_events());
    let (r, retention) = (reconciler.clone(), config.monitor.event_retention);
    tasks.spawn("event-pruner", move || prune_events(r.clone(), retention));
    let (r, node, settings, activity) = (
        reconciler.clone(),
        config.node_name.clone(),
        config.monitor.clone(),
        activity.clone(),
    );
    tasks.spawn("monitor", move || {
        Monitor::new(r.clone(), node.clone(), settings.clone())
            .with_activity(activity.clone())
            .run()
    });
    if let Some(link) = &config.master {
        match link.advertise.or(listening) {
            Some(advertise) => {
                let membership = Arc::new(crate::join::Membership {
                    link: link.clone(),
                    name: config.node_name.clone(),
                    advertise,
                    publish_address: config.publish_address,
                    boot_id: crate::join::new_boot_id(),
                });
                let registry = reconciler.registry().clone();
                tasks.spawn("master-link", move || {
                    membership.clone().run(registry.clone())
                });
            }
            None => tracing::error!(
                "[master] is set but this node has no address the master could dial: set master.advertise"
            ),
        }
    }
    tasks
}

/// Deletes event history older than `retention` at start and every hour.
async fn prune_events(reconciler: Arc<Reconciler>, retention: Duration) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        match reconciler.prune_events(retention) {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned old events"),
            Err(e) => tracing::warn!(error = %e, "cannot prune old events"),
        }
    }
}

/// First wait before leftovers of interrupted deploys that could not be
/// resolved are tried again.
pub const RECOVERY_RETRY_MIN: Duration = Duration::from_secs(5);
/// Longest wait between two tries.
pub const RECOVERY_RETRY_MAX: Duration = Duration::from_secs(300);

/// Probes the runtime every few seconds, logs when it goes away or comes
/// back, and on each return resolves leftovers of interrupted deploys. Those
/// that fail are tried again, 5 s later doubling to 5 minutes, until they
/// succeed (or the runtime goes away, whose return starts over).
async fn watch_runtime(reconciler: Arc<Reconciler>) {
    // `None` until the first probe, then whether the runtime answered.
    let mut available: Option<bool> = None;
    // Leftovers to try again, when, and the wait after that.
    let mut pending: Vec<(String, String)> = Vec::new();
    let mut retry_at = tokio::time::Instant::now();
    let mut retry_wait = RECOVERY_RETRY_MIN;
    loop {
        let ok = match reconciler.runtime().ping().await {
            Ok(v) => {
                if available != Some(true) {
                    tracing::info!(version = %v.version, "runtime available");
                    announce(available, &format!("serving; podman {}", v.version));
                    match reconciler.recover().await {
                        Ok(recovery) => {
                            if !recovery.resolved.is_empty() {
                                tracing::info!(
                                    count = recovery.resolved.len(),
                                    "resolved instances left by interrupted deploys"
                                );
                            }
                            pending = recovery.failed;
                            retry_wait = RECOVERY_RETRY_MIN;
                            retry_at = tokio::time::Instant::now() + retry_wait;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not resolve leftovers of interrupted deploys")
                        }
                    }
                } else if !pending.is_empty() && tokio::time::Instant::now() >= retry_at {
                    pending = reconciler.recover_components(&pending, true).await.failed;
                    retry_wait = (retry_wait * 2).min(RECOVERY_RETRY_MAX);
                    retry_at = tokio::time::Instant::now() + retry_wait;
                }
                true
            }
            Err(e) => {
                if available != Some(false) {
                    tracing::warn!(error = %e, "runtime unavailable; RPCs that need it answer Unavailable until it returns");
                    announce(available, "serving; podman unavailable, retrying every 2 s");
                }
                false
            }
        };
        available = Some(ok);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Tells the service manager what the runtime's probe found: with
/// `READY=1` after the first probe (`before` is `None`), as a new status
/// after a change.
fn announce(before: Option<bool>, status: &str) {
    if before.is_none() {
        daemon::notify_ready(status);
    } else {
        daemon::notify_status(status);
    }
}

/// Raises this process's soft limit on open files (see
/// [`serve::raise_open_files_limit`]).
pub use serve::raise_open_files_limit;
