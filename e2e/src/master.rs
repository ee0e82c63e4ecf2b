//! A test master: an `mcp-master` process on a free loopback port, with
//! its own directory (database, tokens, development PKI), short heartbeat
//! timings, and a token of each role; killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mcp_core::client::{Client, ConnectOptions};
use mcp_core::tls::ClientTlsFiles;

use crate::{CmdResult, Node, bin_dir, free_port, kill_processes_mentioning};

/// Heartbeat interval of test masters.
pub const HEARTBEAT: Duration = Duration::from_millis(200);
/// Grace past the TTL (two intervals) before a silent node is suspect.
pub const GRACE: Duration = Duration::from_millis(200);
/// Silence after which a node is down.
pub const LOST_AFTER: Duration = Duration::from_secs(3);

/// One `mcp-master` process and what it takes to talk to it.
pub struct Master {
    /// Its directory.
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:port`.
    pub addr: String,
    /// The CA of its certificate.
    pub ca_cert: PathBuf,
    /// Tokens it issued.
    pub admin_token: String,
    /// A readonly token.
    pub readonly_token: String,
    /// The join token agents use.
    pub node_token: String,
    /// Environment the process is started with besides the harness's own
    /// (`NOTIFY_SOCKET`, say), from the next [`Master::start_process`] on.
    pub env: Vec<(String, String)>,
    process: Option<Child>,
}

impl Master {
    /// A master ready for connections.
    pub fn start() -> Master {
        Master::start_with(|_| {})
    }

    /// A master whose configuration file (`master.toml`) is edited by
    /// `edit` before it starts.
    pub fn start_with(edit: impl FnOnce(&mut String)) -> Master {
        let dir = tempfile::Builder::new()
            .prefix("mcp-e2e-master-")
            .tempdir()
            .expect("tempdir");
        let pki = mcp_core::tls::ensure_dev_pki(&dir.path().join("tls"), &[]).expect("dev pki");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut config = format!(
            "listen = \"{addr}\"\ndb = \"{db}\"\n\n[auth]\ntoken_file = \"{tokens}\"\naudit_file = \"{audit}\"\n\n[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\n[fleet]\nheartbeat_interval_ms = {hb}\nheartbeat_grace_ms = {grace}\nlost_after = {lost}\n\n[agents]\ntoken_file = \"{agents_token}\"\nca_cert = \"{agents_ca}\"\n",
            agents_token = dir.path().join("agents.token").display(),
            agents_ca = dir.path().join("agents-ca.pem").display(),
            db = dir.path().join("master.db").display(),
            tokens = dir.path().join("tokens.toml").display(),
            audit = dir.path().join("audit.jsonl").display(),
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
            hb = HEARTBEAT.as_millis(),
            grace = GRACE.as_millis(),
            lost = LOST_AFTER.as_secs(),
        );
        edit(&mut config);
        std::fs::write(dir.path().join("master.toml"), config).expect("write master.toml");
        let token = |name: &str, role: &str| {
            let out = Command::new(bin_dir().join("mcp-master"))
                .arg("--config")
                .arg(dir.path().join("master.toml"))
                .args(["token", "add", name, "--role", role])
                .output()
                .expect("run mcp-master token add");
            assert!(
                out.status.success(),
                "mcp-master token add: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let admin_token = token("operator", "admin");
        let readonly_token = token("viewer", "readonly");
        let node_token = token("nodes", "node");
        std::fs::create_dir_all(dir.path().join("services")).expect("mkdir services");
        std::fs::write(dir.path().join("join-token"), format!("{node_token}\n"))
            .expect("write join token");
        std::fs::write(dir.path().join("admin-token"), format!("{admin_token}\n"))
            .expect("write admin token");
        std::fs::write(
            dir.path().join("mcp.toml"),
            format!(
                "master = \"{addr}\"\ntoken_file = \"admin-token\"\nservices_dir = \"{}\"\n\n[tls]\nca_cert = \"{}\"\n",
                dir.path().join("services").display(),
                pki.ca_cert.display()
            ),
        )
        .expect("write mcp.toml");
        let mut master = Master {
            dir,
            addr,
            ca_cert: pki.ca_cert,
            admin_token,
            readonly_token,
            node_token,
            env: Vec::new(),
            process: None,
        };
        master.start_process();
        master
    }

    /// Starts (or restarts) the process and waits until it listens.
    pub fn start_process(&mut self) {
        assert!(self.process.is_none(), "master already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("master.log"))
            .expect("master log");
        let child = Command::new(bin_dir().join("mcp-master"))
            .arg("--config")
            .arg(self.dir.path().join("master.toml"))
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mcp-master");
        self.process = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.process.as_mut().map(Child::try_wait) {
                panic!("mcp-master exited with {status}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "mcp-master did not listen on {}; log:\n{}",
            self.addr,
            self.log()
        );
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }

    /// Stops the process with SIGTERM and waits for it (killed if it has
    /// not stopped within a minute).
    pub fn stop(&mut self) {
        if let Some(c) = self.process.take() {
            crate::terminate(c, "mcp-master", || self.log());
        }
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.process.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Deletes the database (the master must not be running).
    pub fn delete_database(&self) {
        assert!(self.process.is_none(), "the master still runs");
        for name in ["master.db", "master.db-wal", "master.db-shm"] {
            let _ = std::fs::remove_file(self.dir.path().join(name));
        }
    }

    /// The master's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("master.log")).unwrap_or_default()
    }

    /// A client of the master with `token`.
    pub async fn client(&self, token: &str) -> Client {
        let options = ConnectOptions {
            token: Some(token.to_string()),
            token_source: "the test".into(),
            tls: Some(ClientTlsFiles {
                ca_cert: self.ca_cert.clone(),
                cert: None,
                key: None,
            }),
        };
        Client::connect("master", &self.addr, &options)
            .await
            .expect("connect to the master")
    }

    /// Runs `mcp ARGS` with a CLI configuration that names this master
    /// (and no node), with its admin token.
    pub fn mcp(&self, args: &[&str]) -> CmdResult {
        let out = Command::new(bin_dir().join("mcp"))
            .args(args)
            .env("MCP_CONFIG", self.dir.path().join("mcp.toml"))
            .env_remove("MCP_TOKEN")
            .stdin(Stdio::null())
            .output()
            .expect("run mcp");
        CmdResult::from(out, args)
    }

    /// The services directory of its CLI configuration.
    pub fn services_dir(&self) -> PathBuf {
        self.dir.path().join("services")
    }

    /// Starts `mcp ARGS` through this master in the background, its
    /// output discarded: for a test that kills the master mid-way.
    pub fn spawn_mcp(&self, args: &[&str]) -> Child {
        Command::new(bin_dir().join("mcp"))
            .args(args)
            .env("MCP_CONFIG", self.dir.path().join("mcp.toml"))
            .env_remove("MCP_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mcp")
    }

    /// Runs `mcp --json ARGS` through this master and parses its output
    /// (whatever the exit code).
    pub fn mcp_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let r = self.mcp(&all).ran();
        serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("mcp {all:?}: bad JSON ({e}):\n{}{}", r.stdout, r.stderr))
    }

    /// The `[master]` section that makes an agent join this master, as
    /// `role`, offering `memory` (such as `"4G"`).
    pub fn join_section(&self, role: &str, memory: &str) -> String {
        format!(
            "\n[master]\naddress = \"{}\"\nca_cert = \"{}\"\ntoken_file = \"{}\"\nrole = \"{role}\"\nmemory = \"{memory}\"\ncpus = 2\n",
            self.addr,
            self.ca_cert.display(),
            self.dir.path().join("join-token").display(),
        )
    }
}

impl Node {
    /// Restarts this node's agent joined to `master`, which may dial it: the
    /// master's token for agents is added to the node's tokens (`mcp-agent
    /// token add master --role admin --from-file`, as an operator does) and
    /// the node's CA to the master's `[agents] ca_cert` bundle.
    pub fn join(&mut self, master: &Master, role: &str, memory: &str) {
        let out = Command::new(bin_dir().join("mcp-agent"))
            .arg("--config")
            .arg(self.dir.path().join("agent.toml"))
            .args(["token", "add", "master", "--role", "admin", "--from-file"])
            .arg(master.dir.path().join("agents.token"))
            .output()
            .expect("run mcp-agent token add --from-file");
        assert!(
            out.status.success(),
            "mcp-agent token add --from-file: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ca = std::fs::read_to_string(&self.ca_cert).expect("read the node's CA");
        let bundle = master.dir.path().join("agents-ca.pem");
        let mut cas = std::fs::read_to_string(&bundle).unwrap_or_default();
        if !cas.contains(&ca) {
            cas.push_str(&ca);
            std::fs::write(&bundle, cas).expect("write the master's agents CA bundle");
        }
        let section = master.join_section(role, memory);
        self.reconfigure(|t| t.push_str(&section));
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.kill();
        kill_processes_mentioning(self.dir.path());
    }
}
