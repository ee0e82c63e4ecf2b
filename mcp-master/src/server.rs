//! The master's server wiring: TLS, the guard and audit layer in front of
//! every RPC, the connection bounds, health checking, reflection, the
//! liveness sweep, graceful shutdown. `mcp-master` calls [`Master::open`]
//! and [`Master::serve`]; tests run the very same code.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mcp_core::auth::audit::AuditLog;
use mcp_core::auth::guard::GuardLayer;
use mcp_core::config::ConfigError;
use mcp_core::tls;
use mcp_core::tls::admit::{ConnectionLimits, CountStreams};
use mcp_core::{daemon, serve};
use mcp_proto::v1::agent_service_server::AgentServiceServer;
use mcp_proto::v1::fleet_service_server::FleetServiceServer;
use tokio::net::TcpListener;

use crate::agents::Agents;
use crate::alerts::Alerter;
use crate::config::MasterConfig;
use crate::dispatch::Dispatch;
use crate::fleet::{Fleet, FleetApi};
use crate::store::{Store, StoreError};

/// The encoded descriptor sets of every service the master serves: the
/// agent API for the whole fleet, the fleet API, health checking and
/// reflection. Reflection serves exactly
/// these, and the auth coverage test walks them.
pub const SERVED_DESCRIPTORS: &[&[u8]] = &[
    mcp_proto::v1::AGENT_FILE_DESCRIPTOR_SET,
    mcp_proto::v1::FLEET_FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// How long RPCs still open may take to finish once the master is asked
/// to stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the master could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// What every server sets up alike failed: its listener, TLS, tokens,
    /// audit file, reflection, or the gRPC server itself.
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
}

/// A configured master, ready to serve.
pub struct Master {
    config: MasterConfig,
    fleet: Arc<Fleet>,
    dispatch: Dispatch,
    listener: TcpListener,
    guard: GuardLayer,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Master {
    /// Opens the database, sets up auth and TLS and binds the listen
    /// address.
    pub async fn open(config: MasterConfig) -> Result<Master, ServeError> {
        let addr = config.listen.bind_address()?;
        let tls = serve::server_tls(&config.tls).map_err(serve::ServeError::from)?;
        let auth = serve::validator(&config.auth, "mcp-master token add NAME --role admin")
            .map_err(serve::ServeError::from)?;
        let audit = Arc::new(match &config.auth.audit_file {
            Some(path) => AuditLog::with_file(path).map_err(serve::ServeError::from)?,
            None => AuditLog::log_only(),
        });
        let store = Arc::new(Store::open(&config.db)?);
        let alerts = Alerter::new(config.monitor.clone(), store.clone());
        let fleet = Arc::new(Fleet::new(store, config.fleet, config.placement).with_alerts(alerts));
        let dispatch = Dispatch::new(fleet.clone(), Arc::new(Agents::new(&config.agents)));
        let listener = serve::bind(addr).await?;
        let guard = GuardLayer::new(auth, audit).audit_required(config.auth.audit_required);
        Ok(Master {
            config,
            fleet,
            dispatch,
            listener,
            guard,
            tls,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The fleet behind the RPCs.
    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// The database file.
    pub fn db(&self) -> PathBuf {
        self.config.db.clone()
    }

    /// Serves gRPC until `shutdown` resolves, then stops accepting, gives
    /// the RPCs still open [`SHUTDOWN_GRACE`] and returns.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Master {
            config,
            fleet,
            dispatch,
            listener,
            guard,
            tls,
        } = self;
        let addr = listener.local_addr().ok();
        let (stop_sweeping, sweeping) = tokio::sync::watch::channel(false);
        let sweeper = tokio::spawn(sweep_liveness(
            fleet.clone(),
            (config.fleet.heartbeat_interval / 4).max(Duration::from_millis(25)),
            sweeping.clone(),
        ));
        let mover = tokio::spawn(crate::mover::run(
            dispatch.clone(),
            (config.fleet.heartbeat_interval / 4).max(Duration::from_millis(25)),
            config.fleet.heartbeat_interval * 10,
            sweeping,
        ));

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<FleetServiceServer<FleetApi>>()
            .await;
        health_reporter
            .set_serving::<AgentServiceServer<Dispatch>>()
            .await;
        let (reflection, reflection_v1alpha) = serve::reflection(SERVED_DESCRIPTORS)?;
        // Alive: the database answers a query.
        let watchdog = daemon::watchdog_interval().map(|interval| {
            let store = fleet.store().clone();
            tokio::spawn(daemon::watchdog(interval, move || {
                store.schema_version().is_ok()
            }))
        });

        let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
        let shutdown = async move {
            shutdown.await;
            let _ = stopping_tx.send(true);
        };
        let grace = async move {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        let limits = config.limits;
        let connection_limits =
            ConnectionLimits::new(limits.max_connections, limits.max_connections_per_peer)
                .with_idle_timeout(limits.idle_timeout);
        let router = serve::transport(&limits)
            .layer(CountStreams::new(connection_limits.clone()))
            .layer(guard)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(FleetServiceServer::new(FleetApi::new(fleet)))
            .add_service(
                AgentServiceServer::new(dispatch)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            );
        // The listener is bound and the database open: connections queue
        // until the server below accepts them.
        daemon::notify_ready("serving");
        let served = match tls {
            Some(tls_config) => {
                tracing::info!(addr = ?addr, client_certificates = config.tls.client_ca.is_some(), "mcp-master listening (TLS)");
                let incoming = tls::tls_incoming(
                    listener,
                    tls_config,
                    config.tls.handshake_timeout,
                    tls::DEFAULT_MAX_PENDING_HANDSHAKES,
                    connection_limits,
                );
                tokio::select! {
                    served = router.serve_with_incoming_shutdown(incoming, shutdown) => served,
                    () = grace => Ok(()),
                }
            }
            None => {
                tracing::warn!(addr = ?addr, "mcp-master listening WITHOUT TLS (tls.insecure = true): tokens cross the network in plain text");
                let incoming = tls::plain_incoming(listener, connection_limits);
                tokio::select! {
                    served = router.serve_with_incoming_shutdown(incoming, shutdown) => served,
                    () = grace => Ok(()),
                }
            }
        };
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        // The sweep in progress ends before the master does: nothing holds
        // the database once `serve` has returned.
        let _ = stop_sweeping.send(true);
        let _ = sweeper.await;
        // A move in flight goes on on its node; the master stops waiting.
        if tokio::time::timeout(SHUTDOWN_GRACE, mover).await.is_err() {
            tracing::warn!("a move was still in flight at shutdown");
        }
        served.map_err(serve::ServeError::from)?;
        tracing::info!("mcp-master stopped");
        Ok(())
    }
}

/// Records node state transitions (and sends their alerts) every `every`,
/// a quarter of the heartbeat interval, until `stop` turns true; a
/// failed sweep is logged and the next one tries again.
async fn sweep_liveness(
    fleet: Arc<Fleet>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let f = fleet.clone();
        match tokio::task::spawn_blocking(move || f.sweep()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot record node states"),
            Err(e) => tracing::warn!(error = %e, "the liveness sweep failed"),
        }
    }
}
