//! A master in this test process: its own directory, development PKI,
//! tokens of each role, short heartbeat timings, on a free loopback port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mcp_core::auth::Role;
use mcp_core::auth::local::TokenStore;
use mcp_core::client::{Client, ConnectOptions};
use mcp_core::tls::{self, ClientTlsFiles};
use mcp_master::Master;
use mcp_master::config::MasterConfig;
use mcp_proto::v1 as pb;

/// One token of each role.
pub struct Tokens {
    pub admin: String,
    pub readonly: String,
    pub node: String,
}

pub struct TestMaster {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub tokens: Tokens,
    pub audit_file: PathBuf,
    pub config: MasterConfig,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestMaster {
    /// A master with heartbeats every 100 ms, suspect after 300 ms of
    /// silence, down after 1 s.
    pub async fn start() -> TestMaster {
        TestMaster::start_with(|_| {}).await
    }

    /// The same, with the configuration changed by `adjust` first.
    pub async fn start_with(adjust: impl FnOnce(&mut MasterConfig)) -> TestMaster {
        let dir = tempfile::tempdir().unwrap();
        TestMaster::start_in(dir, None, adjust).await
    }

    /// A master over `dir` (its database and tokens), made anew or kept
    /// from a master before; `tokens` when the token file exists already.
    pub async fn start_in(
        dir: tempfile::TempDir,
        tokens: Option<Tokens>,
        adjust: impl FnOnce(&mut MasterConfig),
    ) -> TestMaster {
        let pki = tls::ensure_dev_pki(&dir.path().join("tls"), &[]).unwrap();
        let mut config = MasterConfig::dev_defaults(dir.path());
        config.listen.address = Some("127.0.0.1:0".parse().unwrap());
        config.tls.cert = Some(pki.server_cert.clone());
        config.tls.key = Some(pki.server_key.clone());
        config.fleet.heartbeat_interval = Duration::from_millis(100);
        config.fleet.heartbeat_grace = Duration::from_millis(100);
        config.fleet.lost_after = Duration::from_secs(1);
        let audit_file = dir.path().join("audit.jsonl");
        config.auth.audit_file = Some(audit_file.clone());
        let tokens = tokens.unwrap_or_else(|| {
            let store = TokenStore::new(&config.auth.token_file);
            Tokens {
                admin: store.add("ops", Role::Admin, None).unwrap(),
                readonly: store.add("grafana", Role::ReadOnly, None).unwrap(),
                node: store.add("nodes", Role::Node, None).unwrap(),
            }
        });
        adjust(&mut config);
        let master = Master::open(config.clone()).await.unwrap();
        let addr = master.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            master
                .serve(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        TestMaster {
            addr,
            ca: pki.ca_cert,
            dir,
            tokens,
            audit_file,
            config,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub async fn client(&self, token: &str) -> Client {
        let options = ConnectOptions {
            token: Some(token.to_string()),
            token_source: "the test".into(),
            tls: Some(ClientTlsFiles {
                ca_cert: self.ca.clone(),
                cert: None,
                key: None,
            }),
        };
        Client::connect("master", &self.addr.to_string(), &options)
            .await
            .unwrap()
    }

    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit_file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Stops the master and gives back its directory and tokens.
    pub async fn stop(mut self) -> (tempfile::TempDir, Tokens) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(15), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
        let dir = tempfile::Builder::new().tempdir().unwrap();
        let dir = std::mem::replace(&mut self.dir, dir);
        let tokens = std::mem::replace(
            &mut self.tokens,
            Tokens {
                admin: String::new(),
                readonly: String::new(),
                node: String::new(),
            },
        );
        (dir, tokens)
    }
}

impl Drop for TestMaster {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A registration of node `name` with `boot_id`, 4 GiB and 2 CPUs, holding
/// `inventory`.
pub fn registration(
    name: &str,
    boot_id: &str,
    inventory: Vec<pb::InventoryService>,
) -> pb::RegisterRequest {
    pb::RegisterRequest {
        name: name.into(),
        role: "worker".into(),
        advertise: "127.0.0.2:9444".into(),
        arch: "x86_64".into(),
        version: "0.1.0".into(),
        capacity: Some(pb::Resources {
            memory_bytes: 4 << 30,
            cpus: 2,
        }),
        boot_id: boot_id.into(),
        inventory,
        publish_address: "127.0.0.2".into(),
        inventory_digest: String::new(),
    }
}

pub fn heartbeat(name: &str, boot_id: &str) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        name: name.into(),
        boot_id: boot_id.into(),
        used: Some(pb::Resources {
            memory_bytes: 1 << 30,
            cpus: 1,
        }),
        services: 0,
        inventory_digest: String::new(),
    }
}
