//! Test harness for MCP's end-to-end tests: real `mcp-agent` processes
//! (and `mcp-master` ones, [`master`]) over real gRPC, each with its own podman API service, registry, port and
//! temporary directory, sharing the host's podman storage and the local
//! image registry that `scripts/test-env.sh` sets up.
//!
//! Nothing here skips: a missing prerequisite panics with what to do.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mcp_runtime::Runtime;
use mcp_runtime::podman::{Podman, PodmanConfig};

pub mod master;
pub use master::Master;

/// The prerequisites the test environment provides.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// `host:port` of the local image registry.
    pub registry: String,
    /// A busybox httpd image in that registry serving "hello from v1".
    pub image_v1: String,
    /// The same serving "hello from v2".
    pub image_v2: String,
}

impl TestEnv {
    /// Reads the environment `scripts/test-env.sh` writes, or panics saying how to get it.
    pub fn require() -> TestEnv {
        let get = |k: &str| {
            std::env::var(k).unwrap_or_else(|_| {
                panic!(
                    "{k} is not set: these tests need podman and the local image registry. \
                     Run `make test`, or `scripts/test-env.sh && . .test-env/env` before `cargo test`."
                )
            })
        };
        assert!(
            std::env::var_os("CONTAINERS_CONF").is_some(),
            "CONTAINERS_CONF is not set: run `make test` or source .test-env/env"
        );
        TestEnv {
            registry: get("MCP_TEST_REGISTRY"),
            image_v1: get("MCP_TEST_IMAGE"),
            image_v2: get("MCP_TEST_IMAGE_V2"),
        }
    }
}

/// A unique lower-case name for this test process: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A TCP port on 127.0.0.1 that is free now and lies below the kernel's
/// ephemeral range.
///
/// A port is handed out here and bound later by someone else (an agent, a
/// container's published port), and it may be free for a while in between,
/// as when a component's old instance stops before the new one starts. A
/// port from the ephemeral range (what binding port 0 gives) can be taken
/// in such a gap by any outgoing connection on the host; a port below it
/// never is. Each test process walks its own stretch of the range (chosen
/// from its pid) and skips ports something already holds.
pub fn free_port() -> u16 {
    const LOWEST: u32 = 10_000;
    const STRETCH: u32 = 2_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .clamp(LOWEST + STRETCH, 65_536);
    let size = ephemeral_start - LOWEST;
    let start = (std::process::id() % (size / STRETCH)) * STRETCH;
    for _ in 0..size {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + (start + n) % size;
        let port = u16::try_from(port).expect("ports below the ephemeral range fit in u16");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {LOWEST} and {ephemeral_start}");
}

/// The directory holding the workspace's built binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Tests live in target/<profile>/deps/, binaries such as mcp-bench in
    // target/<profile>/; mcp, mcp-agent and mcp-master are in target/<profile>/.
    let mut dir = exe
        .parent()
        .expect("executable has a directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    for bin in ["mcp", "mcp-agent", "mcp-master"] {
        assert!(
            dir.join(bin).exists(),
            "{} is missing: build the binaries first (`cargo build --workspace --bins`; `make test` does)",
            dir.join(bin).display()
        );
    }
    dir
}

/// A `podman system service` on its own socket, killed on drop.
pub struct PodmanService {
    child: Option<Child>,
    socket: PathBuf,
}

impl PodmanService {
    /// Starts a service listening on `socket` and waits until it answers.
    pub fn start(socket: &Path) -> PodmanService {
        PodmanService::start_with(socket, &[])
    }

    /// Starts a service on `socket` with its own container storage under
    /// `dir` (`podman --root DIR/storage --runroot DIR/run`).
    pub fn start_isolated(socket: &Path, dir: &Path) -> PodmanService {
        PodmanService::start_with(socket, &isolated_storage_args(dir))
    }

    fn start_with(socket: &Path, global: &[String]) -> PodmanService {
        let child = Command::new("podman")
            .args(global)
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("podman is not installed: run `make test` (scripts/test-env.sh installs it)");
        let svc = PodmanService {
            child: Some(child),
            socket: socket.to_path_buf(),
        };
        svc.wait_ready();
        svc
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "podman service on {} did not come up",
            self.socket.display()
        );
    }

    /// The service's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Kills the service at once (SIGKILL) and removes its socket.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The podman global flags that give a node its own storage under `dir`:
/// images and containers (`--root`), their run state (`--runroot`), and
/// libpod's own state (`--tmpdir`: its events file and the marker by which
/// it tells a reboot, which a `podman system reset` of another storage
/// would otherwise remove, making every container of this one "created").
fn isolated_storage_args(dir: &Path) -> Vec<String> {
    vec![
        "--root".into(),
        dir.join("storage").display().to_string(),
        "--runroot".into(),
        dir.join("run").display().to_string(),
        "--tmpdir".into(),
        dir.join("tmp").display().to_string(),
    ]
}

/// Runs the `podman` command line (the test nodes share the host's
/// storage), asserts that it succeeded, and returns its trimmed standard
/// output: for changes made behind an agent's back.
pub fn podman_cli(args: &[&str]) -> String {
    podman_cli_with(&[], args)
}

/// [`podman_cli`] with podman's global flags `global` first (a node's own
/// storage).
fn podman_cli_with(global: &[String], args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(global)
        .args(args)
        .output()
        .expect("run podman");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A podman API client on `socket`, for test set-up and inspection.
pub fn podman_client(socket: &Path, env: &TestEnv) -> Podman {
    Podman::new(PodmanConfig {
        socket: socket.to_path_buf(),
        insecure_registries: vec![env.registry.clone()],
    })
}

/// One test node: a temp dir, a podman service, an agent process and a CLI
/// configuration pointing at it.
pub struct Node {
    /// The test's environment.
    pub env: TestEnv,
    /// Temporary directory holding everything of this node.
    pub dir: tempfile::TempDir,
    /// The node's podman service.
    pub podman: Option<PodmanService>,
    /// The podman socket path the agent uses.
    pub socket: PathBuf,
    /// The agent's address.
    pub addr: String,
    /// The node's name.
    pub name: String,
    /// An admin token, made with `mcp-agent token add`; the CLI config's token.
    pub admin_token: String,
    /// A readonly token.
    pub readonly_token: String,
    /// The CA certificate that signs the agent's certificate.
    pub ca_cert: PathBuf,
    /// For a node with its own podman storage: its loopback address
    /// (listen and publish address alike).
    pub isolated: Option<String>,
    /// Environment the agent is started with besides the harness's own
    /// (`NOTIFY_SOCKET`, say), from the next [`Node::start_agent`] on.
    pub agent_env: Vec<(String, String)>,
    agent: Option<Child>,
    services: Vec<String>,
}

impl Node {
    /// A node with its own podman service and a running agent.
    pub fn start() -> Node {
        let mut node = Node::prepare(true, None);
        node.start_agent();
        node
    }

    /// A node whose podman service is not started (the socket is absent).
    pub fn start_without_podman() -> Node {
        let mut node = Node::prepare(false, None);
        node.start_agent();
        node
    }

    /// A node as a fleet's nodes are on one host: its own podman storage
    /// (`--root`/`--runroot` under its directory), its agent listening on
    /// the loopback address `ip` (127.0.0.2, ...), which is also its
    /// `publish_address`. Several such nodes can hold containers of the
    /// same name publishing the same port.
    pub fn start_isolated(ip: &str) -> Node {
        let mut node = Node::prepare(true, Some(ip));
        node.start_agent();
        node
    }

    fn prepare(with_podman: bool, isolated: Option<&str>) -> Node {
        let env = TestEnv::require();
        let dir = tempfile::Builder::new()
            .prefix("mcp-e2e-")
            .tempdir()
            .expect("tempdir");
        let socket = dir.path().join("podman.sock");
        let podman = with_podman.then(|| match isolated {
            Some(_) => PodmanService::start_isolated(&socket, dir.path()),
            None => PodmanService::start(&socket),
        });
        let port = free_port();
        let name = unique("node");
        let addr = format!("{}:{port}", isolated.unwrap_or("127.0.0.1"));
        let publish = isolated
            .map(|ip| format!("publish_address = \"{ip}\"\n"))
            .unwrap_or_default();
        std::fs::create_dir_all(dir.path().join("services")).expect("mkdir");
        let names: Vec<String> = isolated.iter().map(|ip| ip.to_string()).collect();
        let pki = mcp_core::tls::ensure_dev_pki(&dir.path().join("tls"), &names).expect("dev pki");
        std::fs::write(
            dir.path().join("agent.toml"),
            format!(
                "{publish}node_name = \"{name}\"\nlisten = \"{addr}\"\ndb = \"{db}\"\nsrv_root = \"{srv}\"\n\n[podman]\nsocket = \"{sock}\"\ninsecure_registries = [\"{reg}\"]\nstop_timeout = 1\n\n[auth]\ntoken_file = \"{tokens}\"\naudit_file = \"{audit}\"\n\n[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n",
                db = dir.path().join("mcp.db").display(),
                srv = dir.path().join("srv").display(),
                sock = socket.display(),
                reg = env.registry,
                tokens = dir.path().join("tokens.toml").display(),
                audit = dir.path().join("audit.jsonl").display(),
                cert = pki.server_cert.display(),
                key = pki.server_key.display(),
            ),
        )
        .expect("write agent.toml");
        let add_token = |name: &str, role: &str| {
            let out = Command::new(bin_dir().join("mcp-agent"))
                .arg("--config")
                .arg(dir.path().join("agent.toml"))
                .args(["token", "add", name, "--role", role])
                .output()
                .expect("run mcp-agent token add");
            assert!(
                out.status.success(),
                "mcp-agent token add: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout)
                .expect("utf-8")
                .trim()
                .to_string()
        };
        let admin_token = add_token("operator", "admin");
        let readonly_token = add_token("viewer", "readonly");
        std::fs::write(dir.path().join("token"), format!("{admin_token}\n")).expect("write token");
        std::fs::write(
            dir.path().join("mcp.toml"),
            format!(
                "services_dir = \"{}\"\ntoken_file = \"token\"\n\n[tls]\nca_cert = \"{}\"\n\n[[nodes]]\nname = \"{name}\"\naddress = \"{addr}\"\n",
                dir.path().join("services").display(),
                pki.ca_cert.display(),
            ),
        )
        .expect("write mcp.toml");
        Node {
            env,
            dir,
            podman,
            socket,
            addr,
            name,
            admin_token,
            readonly_token,
            ca_cert: pki.ca_cert,
            isolated: isolated.map(str::to_string),
            agent_env: Vec::new(),
            agent: None,
            services: Vec::new(),
        }
    }

    /// Starts (or restarts) the agent process and waits until it accepts connections.
    pub fn start_agent(&mut self) {
        assert!(self.agent.is_none(), "agent already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .expect("agent log");
        let child = Command::new(bin_dir().join("mcp-agent"))
            .arg("--config")
            .arg(self.dir.path().join("agent.toml"))
            .env("RUST_LOG", "info")
            .envs(self.agent_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mcp-agent");
        self.agent = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.agent.as_mut().map(Child::try_wait) {
                panic!("mcp-agent exited with {status}; log:\n{}", self.agent_log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "mcp-agent did not listen on {}; log:\n{}",
            self.addr,
            self.agent_log()
        );
    }

    /// The agent's log so far.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Restarts the agent with its configuration (`agent.toml`) edited by
    /// `edit`.
    pub fn reconfigure(&mut self, edit: impl FnOnce(&mut String)) {
        self.stop_agent();
        let path = self.dir.path().join("agent.toml");
        let mut text = std::fs::read_to_string(&path).expect("read agent.toml");
        edit(&mut text);
        std::fs::write(&path, text).expect("write agent.toml");
        self.start_agent();
    }

    /// Stops the agent with SIGTERM and waits for it; panics (having
    /// killed it) when it has not stopped within a minute.
    pub fn stop_agent(&mut self) {
        if let Some(c) = self.agent.take() {
            terminate(c, "mcp-agent", || self.agent_log());
        }
    }

    /// Kills the agent with SIGKILL.
    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs the `podman` command line on this node's storage (its own,
    /// for an isolated node; the host's otherwise) and returns its trimmed
    /// standard output, asserting that it succeeded.
    pub fn podman(&self, args: &[&str]) -> String {
        let global = if self.isolated.is_some() {
            isolated_storage_args(self.dir.path())
        } else {
            Vec::new()
        };
        podman_cli_with(&global, args)
    }

    /// The process id of the running agent.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Path of the node's CLI configuration.
    pub fn cli_config(&self) -> PathBuf {
        self.dir.path().join("mcp.toml")
    }

    /// Path of the node's services dir.
    pub fn services_dir(&self) -> PathBuf {
        self.dir.path().join("services")
    }

    /// Writes `<services_dir>/<service>.toml` and registers the service for clean-up.
    pub fn write_service(&mut self, service: &str, text: &str) -> PathBuf {
        let path = self.services_dir().join(format!("{service}.toml"));
        std::fs::write(&path, text).expect("write definition");
        self.track(service);
        path
    }

    /// Removes the service's containers when the node is dropped.
    pub fn track(&mut self, service: &str) {
        if !self.services.iter().any(|s| s == service) {
            self.services.push(service.to_string());
        }
    }

    /// Runs `mcp ARGS` against this node.
    pub fn mcp(&self, args: &[&str]) -> CmdResult {
        self.mcp_with_env(args, &[])
    }

    /// Runs `mcp ARGS` against this node with extra environment variables.
    pub fn mcp_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> CmdResult {
        let out = self
            .mcp_command(args)
            .envs(env.iter().copied())
            .output()
            .expect("run mcp");
        CmdResult::from(out, args)
    }

    /// The command `mcp ARGS` against this node, to run as the test likes.
    pub fn mcp_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin_dir().join("mcp"));
        command
            .args(args)
            .env("MCP_CONFIG", self.cli_config())
            .env_remove("MCP_TOKEN")
            .stdin(Stdio::null());
        command
    }

    /// Starts `mcp ARGS` against this node in the background, its output
    /// discarded: for a test that kills it or the agent mid-way.
    pub fn spawn_mcp(&self, args: &[&str]) -> std::process::Child {
        self.mcp_command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mcp")
    }

    /// The audit file's records so far.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    /// Connect options for talking to this agent from a test, with `token`.
    pub fn connect_options(&self, token: Option<&str>) -> mcp_core::client::ConnectOptions {
        mcp_core::client::ConnectOptions {
            token: token.map(str::to_string),
            token_source: "the test".into(),
            tls: Some(mcp_core::tls::ClientTlsFiles {
                ca_cert: self.ca_cert.clone(),
                cert: None,
                key: None,
            }),
        }
    }

    /// MCP's client connected to this agent with `token`.
    pub async fn client(&self, token: &str) -> mcp_core::client::Client {
        mcp_core::client::Client::connect(
            &self.name,
            &self.addr,
            &self.connect_options(Some(token)),
        )
        .await
        .expect("connect")
    }

    /// A gRPC channel to this agent over TLS (for standard gRPC clients).
    pub async fn channel(&self) -> tonic::transport::Channel {
        let config = mcp_core::tls::client_config(&mcp_core::tls::ClientTlsFiles {
            ca_cert: self.ca_cert.clone(),
            cert: None,
            key: None,
        })
        .expect("client TLS config");
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect_with_connector(mcp_core::tls::TlsConnector::new(config))
            .await
            .expect("connect")
    }

    /// Runs `mcp --json ARGS`, asserts it ran fine (exit 0, or 3: it found
    /// drift or changes to make) and parses the output.
    pub fn mcp_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let r = self.mcp(&all).ran();
        serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("mcp {all:?}: bad JSON ({e}):\n{}", r.stdout))
    }

    /// A podman client on this node's socket.
    pub fn podman_client(&self) -> Podman {
        podman_client(&self.socket, &self.env)
    }

    /// Every instance on the node whose name starts with `<service>-`.
    pub fn instances_of(&self, service: &str) -> Vec<mcp_runtime::InstanceInfo> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let podman = self.podman_client();
        let prefix = format!("{service}-");
        rt.block_on(podman.list())
            .expect("list instances")
            .into_iter()
            .filter(|i| i.name.starts_with(&prefix))
            .collect()
    }
}

/// Kills (SIGKILL) every process whose command line mentions a file in the
/// directory `dir`, but this one, and waits until they are gone: what a
/// test started with its files under its own temporary directory (an
/// agent, a podman service, a QEMU VM that outlives its agent) never
/// outlives the test.
pub fn kill_processes_mentioning(dir: &Path) {
    let mut needle = dir.as_os_str().as_encoded_bytes().to_vec();
    needle.push(b'/');
    let me = std::process::id();
    let mut killed = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .windows(needle.len())
            .any(|w| w == needle.as_slice())
        {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
                killed.push(pid);
            }
        }
    }
    // Gone, or a zombie waiting for its parent: either way no longer running.
    let running = |pid: &nix::unistd::Pid| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')')
                    .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while killed.iter().any(running) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_agent();
        if self.isolated.is_some() {
            // Its own storage: everything in it goes, then the storage.
            let _ = Command::new("podman")
                .args(isolated_storage_args(self.dir.path()))
                .args(["rm", "-f", "-a", "-t", "0"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("podman")
                .args(isolated_storage_args(self.dir.path()))
                .args(["system", "reset", "-f"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // Whatever else runs from this node's directory: VMs, which
        // outlive their agent by design, and the podman service.
        kill_processes_mentioning(self.dir.path());
        // Clean up with the podman CLI, which works whether or not this
        // node's API service is still up.
        if !self.services.is_empty()
            && let Ok(out) = Command::new("podman")
                .args(["ps", "-a", "--format", "{{.Names}}"])
                .output()
        {
            let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|n| {
                    self.services
                        .iter()
                        .any(|s| n.starts_with(&format!("{s}-")))
                })
                .map(str::to_string)
                .collect();
            if !names.is_empty() {
                let _ = Command::new("podman")
                    .args(["rm", "-f", "-t", "0"])
                    .args(&names)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- agent log of {} ---\n{}", self.name, self.agent_log());
        }
    }
}

/// Stops `child` (a daemon named `what`) with SIGTERM and waits for it;
/// panics, with `log()`, having killed it when it has not stopped within a
/// minute.
pub(crate) fn terminate(mut child: Child, what: &str, log: impl FnOnce() -> String) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    if wait_for(Duration::from_secs(60), || child.try_wait().ok().flatten()).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{what} did not stop within a minute of SIGTERM; log:\n{}",
            log()
        );
    }
}

/// The outcome of a CLI run.
#[derive(Debug)]
pub struct CmdResult {
    /// Exit code (-1 when killed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    args: Vec<String>,
}

impl CmdResult {
    fn from(out: Output, args: &[&str]) -> CmdResult {
        CmdResult {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Asserts exit 0.
    pub fn success(self) -> CmdResult {
        assert_eq!(
            self.code, 0,
            "mcp {:?} failed:\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        self
    }

    /// Asserts the command ran fine: exit 0, or 3 (it found something:
    /// drift, changes to make).
    pub fn ran(self) -> CmdResult {
        assert!(
            self.code == 0 || self.code == 3,
            "mcp {:?} failed ({}):\nstdout: {}\nstderr: {}",
            self.args,
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts exit 3: it ran fine and found something.
    pub fn found(self) -> CmdResult {
        assert_eq!(
            self.code, 3,
            "mcp {:?} should have found something:\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        self
    }

    /// Asserts a non-zero exit and returns stderr.
    pub fn failure(self) -> String {
        assert_ne!(
            self.code, 0,
            "mcp {:?} should have failed:\nstdout: {}",
            self.args, self.stdout
        );
        self.stderr
    }
}

/// GETs `/` from `127.0.0.1:port`, retrying for a few seconds; returns the body.
pub fn http_get(port: u16) -> String {
    http_get_at("127.0.0.1", port)
}

/// GETs `/` from `host:port`, retrying for a few seconds; returns the body.
pub fn http_get_at(host: &str, port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while Instant::now() < deadline {
        match try_http_get_at(host, port) {
            Ok(body) => return body,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no HTTP answer on {host}:{port}: {last}");
}

/// GETs `/` from `127.0.0.1:port` once: the body, or what went wrong.
pub fn try_http_get(port: u16) -> Result<String, String> {
    try_http_get_at("127.0.0.1", port)
}

/// GETs `/` from `host:port` once: the body, or what went wrong.
pub fn try_http_get_at(host: &str, port: u16) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect((host, port)).map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut buf = String::new();
    if s.read_to_string(&mut buf).is_ok()
        && let Some((_, body)) = buf.split_once("\r\n\r\n")
    {
        return Ok(body.to_string());
    }
    Err(buf)
}

/// Polls `f` until it returns `Some`, for up to `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
