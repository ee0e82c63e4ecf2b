//! `make bench`: side-by-side measurements of MCP against what an operator
//! would run instead, in one process on one host, medians of N rounds with
//! the two sides interleaved. Prints a table and, with `--write FILE`,
//! rewrites the results section of BENCHMARKS.md.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mcp_e2e::{Node, PodmanService, unique};

mod dispatch;
mod fleet;
mod placement;

struct Row {
    name: &'static str,
    mcp: f64,
    other: f64,
    other_name: &'static str,
    unit: &'static str,
    target: &'static str,
    /// The median of per-round ratios, where rounds are paired; else the
    /// ratio of the medians.
    paired_ratio: Option<f64>,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.paired_ratio.unwrap_or(self.mcp / self.other)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn time(cmd: &mut Command) -> f64 {
    let start = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    let elapsed = start.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

fn mcp(node: &Node, args: &[&str]) -> Command {
    let mut c = Command::new(mcp_e2e::bin_dir().join("mcp"));
    c.args(args).env("MCP_CONFIG", node.cli_config());
    c
}

fn podman(args: &[&str]) -> Command {
    let mut c = Command::new("podman");
    c.args(args);
    c
}

fn def(service: &str, image: &str, components: usize) -> String {
    let mut s = format!("name = \"{service}\"\n");
    for i in 0..components {
        s.push_str(&format!(
            "\n[[components]]\nname = \"c{i}\"\nimage = \"{image}\"\ncmd = [\"sleep\", \"3600\"]\n"
        ));
    }
    s
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn podman_rm(names: &[String]) {
    let mut args = vec!["rm", "-f", "-t", "0"];
    args.extend(names.iter().map(String::as_str));
    let _ = podman(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `mcp deploy --no-wait` of a service of `components` components
/// without a health check (done once they are started), against as many
/// `podman run -d` (done once each is started). Medians of seconds.
fn deploy_vs_run(node: &mut Node, components: usize, rounds: usize) -> (f64, f64) {
    let image = node.env.image_v1.clone();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let service = unique("bench");
        node.write_service(&service, &def(&service, &image, components));
        ours.push(time(&mut mcp(node, &["deploy", &service, "--no-wait"])));
        let _ = mcp(node, &["remove", &service])
            .stdout(Stdio::null())
            .status();

        let names: Vec<String> = (0..components)
            .map(|i| format!("{}-c{i}", unique("podman")))
            .collect();
        let start = Instant::now();
        for n in &names {
            let out = podman(&["run", "-d", "--name", n, &image, "sleep", "3600"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .expect("podman run");
            assert!(
                out.status.success(),
                "podman run: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        theirs.push(start.elapsed().as_secs_f64());
        podman_rm(&names);
    }
    (median(ours), median(theirs))
}

/// `mcp deploy` of a one-component service without a health check, with
/// the agent's default observation window (5 s: ready once it kept
/// running that long), against what one would do by hand to the same end:
/// `podman run -d`, wait 5 s, and check that it still runs. Medians of
/// seconds, rounds interleaved.
fn deploy_window_vs_sleep(node: &mut Node, rounds: usize) -> (f64, f64) {
    let image = node.env.image_v1.clone();
    let window = mcp_agent::config::DEFAULT_SETTLE.as_secs_f64();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let service = unique("window");
        node.write_service(&service, &def(&service, &image, 1));
        ours.push(time(&mut mcp(node, &["deploy", &service])));
        let _ = mcp(node, &["remove", &service])
            .stdout(Stdio::null())
            .status();

        let name = unique("sleep");
        let script = format!(
            "podman run -d --name {name} {image} sleep 3600 >/dev/null && sleep {window} && \
             test \"$(podman inspect -f '{{{{.State.Running}}}}' {name})\" = true"
        );
        theirs.push(time(Command::new("sh").args(["-c", &script])));
        podman_rm(&[name]);
    }
    (median(ours), median(theirs))
}

/// A one-component web service with an HTTP health check probed every
/// 500 ms, deployed until healthy (`mcp deploy` returns then), against
/// what one would write by hand: `podman run -d` and `curl` polling the
/// page at the same interval. Medians of seconds, rounds interleaved.
fn deploy_healthy_vs_loop(node: &mut Node, rounds: usize) -> (f64, f64) {
    let image = node.env.image_v1.clone();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let service = unique("healthy");
        let port = mcp_e2e::free_port();
        node.write_service(
            &service,
            &format!(
                "name = \"{service}\"\n\n[[components]]\nname = \"web\"\nimage = \"{image}\"\nports = [\"127.0.0.1:{port}:8080\"]\n\n[components.health]\nkind = \"http\"\nport = 8080\npath = \"/\"\ninterval = \"500ms\"\n"
            ),
        );
        ours.push(time(&mut mcp(node, &["deploy", &service])));
        let _ = mcp(node, &["remove", &service])
            .stdout(Stdio::null())
            .status();

        let name = unique("loop");
        let port = mcp_e2e::free_port();
        let script = format!(
            "podman run -d --name {name} -p 127.0.0.1:{port}:8080 {image} >/dev/null && \
             until curl -fsS -o /dev/null http://127.0.0.1:{port}/; do sleep 0.5; done"
        );
        theirs.push(time(Command::new("sh").args(["-c", &script])));
        podman_rm(&[name]);
    }
    (median(ours), median(theirs))
}

/// Per-RPC cost of the security envelope: the same `status` RPC, over TLS,
/// to two in-process agents on the node's podman and registry, one with the
/// interceptor (local token, authorisation, audit record to the log and to
/// a file) and one without. Returns the medians of seconds per RPC (with,
/// without) and the median of the per-round ratios: each round's pair ran
/// back to back, so a ratio compares like with like when the host's load
/// drifts between rounds.
fn auth_overhead(node: &Node, rounds: usize) -> (f64, f64, f64) {
    use mcp_agent::config::AgentConfig;
    use mcp_agent::server::Agent;
    use mcp_core::auth::Role;
    use mcp_core::auth::local::TokenStore;
    use mcp_core::client::{Client, ConnectOptions};
    use mcp_core::tls::{ClientTlsFiles, ensure_dev_pki};

    // Audit records are formatted as they would be for the journal.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = ensure_dev_pki(&dir.path().join("tls"), &[]).expect("pki");
        let config = |with_guard: bool| {
            let mut c = AgentConfig::dev_defaults(dir.path());
            c.listen.address = Some("127.0.0.1:0".parse().expect("addr"));
            c.db = node.dir.path().join("mcp.db");
            c.podman.socket = node.socket.clone();
            c.tls.cert = Some(pki.server_cert.clone());
            c.tls.key = Some(pki.server_key.clone());
            c.auth.audit_file = with_guard.then(|| dir.path().join("audit.jsonl"));
            c
        };
        let token = TokenStore::new(config(true).auth.token_file)
            .add("bench", Role::Admin, None)
            .expect("token");
        let mut clients = Vec::new();
        for with_guard in [true, false] {
            let mut agent = Agent::open(config(with_guard)).await.expect("agent");
            if !with_guard {
                agent.disable_guard_for_benchmarks();
            }
            let addr = agent.local_addr().expect("addr");
            tokio::spawn(agent.serve(std::future::pending()));
            let options = ConnectOptions {
                token: Some(token.clone()),
                token_source: "the benchmark".into(),
                tls: Some(ClientTlsFiles {
                    ca_cert: pki.ca_cert.clone(),
                    cert: None,
                    key: None,
                }),
            };
            let mut client = Client::connect("bench", &addr.to_string(), &options)
                .await
                .expect("connect");
            // Warm: connection, caches, the token.
            for _ in 0..50 {
                client.status(None).await.expect("status");
            }
            clients.push(client);
        }
        const CALLS: usize = 500;
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for round in 0..rounds.max(30) {
            // Alternate which goes first, so neither always runs warmer.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let client = &mut clients[i];
                let start = Instant::now();
                for _ in 0..CALLS {
                    client.status(None).await.expect("status");
                }
                let per_call = start.elapsed().as_secs_f64() / CALLS as f64;
                if i == 0 {
                    with.push(per_call)
                } else {
                    without.push(per_call)
                }
            }
        }
        let ratios = with.iter().zip(&without).map(|(a, b)| a / b).collect();
        (median(with), median(without), median(ratios))
    })
}

/// CPU seconds of process `pid` (user + system, its threads that ended
/// too), from `/proc/<pid>/stat` in clock ticks.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) in parentheses.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (1-based), 12 and 13 here.
    let per_second = rustix::param::clock_ticks_per_second() as f64;
    (ticks(11) + ticks(12)) / per_second
}

/// The host's CPU time so far, in clock ticks summed over its CPUs: busy
/// (everything but idle and iowait) and in all (the `cpu` line of
/// `/proc/stat`).
fn host_cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The share of the host's CPU time (all CPUs) spent busy while `run` ran,
/// and what `run` returned.
fn host_busy<T>(run: impl FnOnce() -> T) -> (f64, T) {
    let (busy0, total0) = host_cpu_ticks();
    let out = run();
    let (busy1, total1) = host_cpu_ticks();
    let total = total1.saturating_sub(total0);
    let share = if total == 0 {
        0.0
    } else {
        busy1.saturating_sub(busy0) as f64 / total as f64
    };
    (share, out)
}

/// CPU time of `podman ps -a --format json`, the poll a hand-rolled
/// monitor would run per sweep: children's user + system time.
fn podman_ps_cpu() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let cpu = || {
        getrusage(UsageWho::RUSAGE_CHILDREN)
            .map(|u| {
                let t =
                    |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
                t(u.user_time()) + t(u.system_time())
            })
            .unwrap_or(0.0)
    };
    let before = cpu();
    let _ = time(&mut podman(&["ps", "-a", "--format", "json"]));
    cpu() - before
}

/// Restarts the node's agent with a monitor that sweeps every second and
/// runs `script` for every alert (no rate limit in the way of the trials).
fn enable_monitor(node: &mut Node, script: &std::path::Path) {
    node.reconfigure(|text| {
        text.push_str(&format!(
            "\n[monitor]\ninterval = 1\nalert_command = [\"{}\"]\nalert_cooldown = 1\nalert_burst = 1000\n",
            script.display()
        ))
    });
}

/// Seconds from `podman kill` of a managed container until the alert
/// program has run for it, per trial; the component is brought back
/// (and its `drift-cleared` alert awaited) between trials.
fn drift_to_alert(node: &Node, service: &str, log: &std::path::Path, trials: usize) -> Vec<f64> {
    let lines = || std::fs::read_to_string(log).unwrap_or_default();
    let wait_line = |pred: &dyn Fn(&str) -> bool, after: usize| -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(l) = lines().lines().skip(after).find(|l| pred(l)) {
                return Some(l.to_string());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    };
    let name = format!("{service}-c0");
    let mut out = Vec::new();
    for _ in 0..trials {
        let seen = lines().lines().count();
        let t0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let _ = time(&mut podman(&["kill", &name]));
        let line = wait_line(&|l: &str| l.contains("drift:") && l.contains(" c0"), seen)
            .expect("no alert within 15 s of the kill");
        let at: f64 = line
            .split_whitespace()
            .next()
            .and_then(|t| t.parse().ok())
            .expect("alert timestamp");
        out.push(at - t0);
        let seen = lines().lines().count();
        let ok = mcp(node, &["start", service]).output().expect("start");
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        wait_line(
            &|l: &str| l.contains("drift-cleared") && l.contains(" c0"),
            seen,
        )
        .expect("no drift-cleared alert");
    }
    out
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// What the monitor measurements found.
struct MonitorFigures {
    per_sweep_cpu: f64,
    agent_cpu: f64,
    ps_cpu: f64,
    p50: f64,
    p95: f64,
    rss_kb: u64,
}

impl MonitorFigures {
    fn sweep_row(&self) -> Row {
        Row {
            name: "monitor sweep CPU (agent + podman service), 100 containers",
            mcp: self.per_sweep_cpu * 1000.0,
            other: self.ps_cpu * 1000.0,
            other_name: "podman ps -a --format json (CPU)",
            unit: "ms",
            target: "<= 1x",
            paired_ratio: None,
        }
    }
}

/// Brings the node to 100 managed containers (20 services of 5, counting
/// those in `services`), turns the monitor on with a sweep a second, and
/// measures a sweep's CPU, drift-to-alert latency over 20 trials and the
/// agent's RSS.
fn measure_monitor(node: &mut Node, services: &mut Vec<String>) -> MonitorFigures {
    let script = node.dir.path().join("alert.sh");
    let alerts = node.dir.path().join("alerts.log");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$(date +%s.%N) $MCP_EVENT $MCP_COMPONENT\" >> {}\n",
            alerts.display()
        ),
    )
    .expect("alert script");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    while services.len() < 20 {
        let service = unique("fleet");
        node.write_service(&service, &def(&service, &node.env.image_v1.clone(), 5));
        let out = mcp(node, &["deploy", &service]).output().expect("deploy");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        services.push(service);
    }
    enable_monitor(node, &script);
    std::thread::sleep(Duration::from_secs(3));
    let pid = node.agent_pid().expect("agent pid");
    let podman_pid = node
        .podman
        .as_ref()
        .and_then(PodmanService::pid)
        .expect("podman service pid");
    // A sweep a second: the CPU of the agent and of the podman service that
    // answers it (the monitor's whole cost), per second.
    let window = 20.0;
    let (agent0, podman0) = (cpu_seconds(pid), cpu_seconds(podman_pid));
    std::thread::sleep(Duration::from_secs_f64(window));
    let agent_cpu = (cpu_seconds(pid) - agent0) / window;
    let per_sweep = agent_cpu + (cpu_seconds(podman_pid) - podman0) / window;
    let ps_cpu = median((0..5).map(|_| podman_ps_cpu()).collect());
    let latencies = drift_to_alert(node, &services[0], &alerts, 20);
    let p50 = percentile(latencies.clone(), 0.5);
    let p95 = percentile(latencies, 0.95);
    let monitor_rss = rss_kb(pid);
    MonitorFigures {
        per_sweep_cpu: per_sweep,
        agent_cpu,
        ps_cpu,
        p50,
        p95,
        rss_kb: monitor_rss,
    }
}

/// A private `sshd` on 127.0.0.1 for the scp comparison, killed on drop.
struct Sshd {
    child: std::process::Child,
    port: u16,
    key: PathBuf,
}

impl Sshd {
    /// Starts one with its own host key and a client key allowed in.
    fn start(dir: &std::path::Path) -> Sshd {
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("sshd is not installed: `make bench` installs openssh-server (scripts/bench-env.sh)");
        std::fs::create_dir_all(dir).expect("mkdir");
        let _ = std::fs::create_dir_all("/run/sshd");
        let keygen = |path: &std::path::Path| {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(path)
                .status()
                .expect("ssh-keygen");
            assert!(st.success(), "ssh-keygen failed");
        };
        let host_key = dir.join("host_key");
        let key = dir.join("client_key");
        keygen(&host_key);
        keygen(&key);
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).expect("copy");
        let port = mcp_e2e::free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin yes\nPidFile {}\nSubsystem sftp {}\n",
                host_key.display(),
                dir.join("authorized_keys").display(),
                dir.join("sshd.pid").display(),
                // Debian's default: scp speaks SFTP to this server.
                ["/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server"]
                    .into_iter()
                    .find(|p| std::path::Path::new(p).exists())
                    .unwrap_or("internal-sftp")
            ),
        )
        .expect("sshd_config");
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sshd");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Sshd { child, port, key }
    }

    /// `scp` with this server's settings and otherwise the defaults.
    fn scp(&self, from: &str, to: &str) -> Command {
        let mut c = Command::new("scp");
        c.arg("-q")
            .arg("-i")
            .arg(&self.key)
            .args(["-P", &self.port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
            ])
            .args([from, to]);
        c
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the file transfer measurements found, in seconds and kB.
struct FilesFigures {
    push: f64,
    scp_push: f64,
    pull: f64,
    scp_pull: f64,
    size: u64,
    rss_growth_kb: u64,
}

/// Runs `cmd` while sampling the agent's RSS; returns the time and the
/// highest RSS seen.
fn time_sampling_rss(cmd: &mut Command, pid: u32) -> (f64, u64) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kb(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let t = time(cmd);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    (t, sampler.join().expect("sampler"))
}

/// Push and pull of one `size`-byte file through `mcp` (TLS, a release
/// agent) against scp to a local sshd, interleaved over `rounds`.
fn measure_files(node: &Node, size: u64, rounds: usize) -> FilesFigures {
    let work = tempfile::tempdir_in(node.dir.path()).expect("tempdir");
    let src = work.path().join("blob.bin");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&src).expect("create");
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..size / (1 << 20) {
            for chunk in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            f.write_all(&buf).expect("write");
        }
    }
    let sshd = Sshd::start(&work.path().join("sshd"));
    let service = unique("bench-files");
    let srv_file = node.dir.path().join("srv").join(&service).join("blob.bin");
    let scp_dst = work.path().join("scp-dst.bin");
    let pulled = work.path().join("pulled.bin");
    let scp_pulled = work.path().join("scp-pulled.bin");
    let pid = node.agent_pid().expect("agent pid");
    let src_s = src.display().to_string();
    let (mut push, mut scp_push, mut pull, mut scp_pull) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut growth = 0;
    for round in 0..rounds {
        // Ours first in even rounds, theirs first in odd ones.
        let mut pair = |ours: &mut Command, theirs: &mut Command| {
            let before = rss_kb(pid);
            let ((t, peak), s) = if round % 2 == 0 {
                let a = time_sampling_rss(ours, pid);
                (a, time(theirs))
            } else {
                let s = time(theirs);
                (time_sampling_rss(ours, pid), s)
            };
            growth = growth.max(peak.saturating_sub(before));
            (t, s)
        };
        let (t, s) = pair(
            &mut mcp(node, &["push", &service, &src_s, "blob.bin"]),
            &mut sshd.scp(&src_s, &format!("root@127.0.0.1:{}", scp_dst.display())),
        );
        push.push(t);
        scp_push.push(s);
        let (t, s) = pair(
            &mut mcp(
                node,
                &["pull", &service, "blob.bin", &pulled.display().to_string()],
            ),
            &mut sshd.scp(
                &format!("root@127.0.0.1:{}", srv_file.display()),
                &scp_pulled.display().to_string(),
            ),
        );
        pull.push(t);
        scp_pull.push(s);
        for f in [&scp_dst, &pulled, &scp_pulled] {
            let _ = std::fs::remove_file(f);
        }
    }
    let _ = mcp(node, &["rm", &service, "blob.bin"]).output();
    FilesFigures {
        push: median(push),
        scp_push: median(scp_push),
        pull: median(pull),
        scp_pull: median(scp_pull),
        size,
        rss_growth_kb: growth,
    }
}

impl FilesFigures {
    fn throughput(&self, secs: f64) -> f64 {
        self.size as f64 / secs / (1 << 20) as f64
    }

    fn rows(&self) -> [Row; 2] {
        [
            Row {
                name: "push 1 GiB over TLS (throughput)",
                mcp: self.throughput(self.push),
                other: self.throughput(self.scp_push),
                other_name: "scp to sshd on 127.0.0.1",
                unit: "MiB/s",
                target: ">= 1x",
                paired_ratio: None,
            },
            Row {
                name: "pull 1 GiB over TLS (throughput)",
                mcp: self.throughput(self.pull),
                other: self.throughput(self.scp_pull),
                other_name: "scp from sshd on 127.0.0.1",
                unit: "MiB/s",
                target: ">= 1x",
                paired_ratio: None,
            },
        ]
    }
}

/// What the VM measurements found.
struct VmFigures {
    deploy_to_serial: f64,
    by_hand: f64,
    rss_per_vm_kb: u64,
}

/// Seconds until `path` holds a complete first line (or `timeout`).
fn first_serial_line(path: &std::path::Path, start: Instant, timeout: Duration) -> f64 {
    loop {
        if std::fs::read(path).is_ok_and(|b| b.contains(&b'\n')) {
            return start.elapsed().as_secs_f64();
        }
        assert!(
            start.elapsed() < timeout,
            "no serial output in {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Deploy-to-first-serial-line of the test guest through the agent (TCG)
/// against the same QEMU command line started by hand, over `rounds`; then
/// the agent's RSS per running VM.
fn measure_vms(node: &mut Node, rounds: usize) -> VmFigures {
    let env =
        |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: run make bench"));
    let (qemu, kernel, initrd) = (
        env("MCP_TEST_QEMU"),
        env("MCP_TEST_KERNEL"),
        env("MCP_TEST_INITRD"),
    );
    let state_dir = node.dir.path().join("vms");
    let images = std::path::Path::new(&kernel)
        .parent()
        .expect("images dir")
        .to_path_buf();
    node.reconfigure(|text| {
        text.push_str(&format!(
            "\n[unikernel]\nqemu = \"{qemu}\"\naccel = \"tcg\"\nstate_dir = \"{}\"\nimages_dirs = [\"{}\"]\n",
            state_dir.display(),
            images.display()
        ))
    });
    let def = |service: &str| {
        format!(
            "name = \"{service}\"\n\n[[components]]\nname = \"vm\"\nruntime = \"unikernel\"\nkernel = \"{kernel}\"\ninitrd = \"{initrd}\"\nappend = \"console=ttyS0 panic=-1\"\nmemory = \"256M\"\n"
        )
    };
    let hand_dir = tempfile::tempdir_in(node.dir.path()).expect("tempdir");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let run_ours = |node: &mut Node| {
            let service = unique("bench-vm");
            node.write_service(&service, &def(&service));
            let vm_dir = state_dir.join(format!("{service}-vm"));
            // Timed to the first serial line, whatever the deploy then
            // waits for (its observation window).
            let start = Instant::now();
            let deploy = mcp(node, &["deploy", &service])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("deploy");
            let t = first_serial_line(&vm_dir.join("serial.log"), start, Duration::from_secs(60));
            let out = deploy.wait_with_output().expect("deploy");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The same command line, for the hand-run side.
            let pid = std::fs::read_to_string(vm_dir.join("pid")).expect("pidfile");
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).expect("cmdline");
            let _ = mcp(node, &["remove", &service]).output();
            (t, cmdline, vm_dir)
        };
        let run_theirs = |cmdline: &[u8], vm_dir: &std::path::Path| {
            // QEMU's own argv with the VM's state paths moved to a fresh dir.
            let _ = std::fs::remove_dir_all(hand_dir.path());
            std::fs::create_dir_all(hand_dir.path()).expect("mkdir");
            let from = vm_dir.display().to_string();
            let to = hand_dir.path().display().to_string();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .skip(1)
                .map(|a| String::from_utf8_lossy(a).replace(&from, &to))
                .collect();
            let start = Instant::now();
            let st = Command::new(&qemu).args(&args).status().expect("qemu");
            assert!(st.success(), "qemu by hand failed");
            let t = first_serial_line(
                &hand_dir.path().join("serial.log"),
                start,
                Duration::from_secs(60),
            );
            if let Ok(pid) = std::fs::read_to_string(hand_dir.path().join("pid")) {
                let _ = Command::new("kill").args(["-9", pid.trim()]).status();
            }
            t
        };
        // Alternate which goes first.
        let (t, h) = if round % 2 == 0 {
            let (t, cmdline, vm_dir) = run_ours(node);
            (t, run_theirs(&cmdline, &vm_dir))
        } else {
            // The hand run needs an argv: take it from a deploy first, then
            // time the hand run before the measured deploy.
            let (_, cmdline, vm_dir) = run_ours(node);
            let h = run_theirs(&cmdline, &vm_dir);
            let (t, _, _) = run_ours(node);
            (t, h)
        };
        ours.push(t);
        theirs.push(h);
    }
    // Memory: the agent with three VMs running against none.
    let pid = node.agent_pid().expect("agent pid");
    let before = rss_kb(pid);
    let mut services = Vec::new();
    for _ in 0..3 {
        let service = unique("bench-vm");
        node.write_service(&service, &def(&service));
        let out = mcp(node, &["deploy", &service]).output().expect("deploy");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        services.push(service);
    }
    for _ in 0..5 {
        let _ = mcp(node, &["status"]).output();
    }
    let after = rss_kb(pid);
    for s in &services {
        let _ = mcp(node, &["remove", s]).output();
    }
    VmFigures {
        deploy_to_serial: median(ours),
        by_hand: median(theirs),
        rss_per_vm_kb: after.saturating_sub(before) / 3,
    }
}

/// `client.status()` from Python (one process, connected once) against
/// `mcp status` (a process per call), rounds interleaved: the medians, in
/// seconds. Python is the test environment's venv (`MCP_PYTHON`), where
/// `make bench` installs a release build of the bindings.
fn python_status(node: &Node, rounds: usize) -> (f64, f64) {
    use std::io::{BufRead, BufReader, Write};
    let python = std::env::var("MCP_PYTHON")
        .expect("MCP_PYTHON is not set: run `make bench`, which installs the Python bindings");
    let script = "import sys, time, metacircular_mcp as mcp\n\
        c = mcp.Client.from_config(sys.argv[1])\n\
        for _ in range(5):\n    c.status()\n\
        print('ready', flush=True)\n\
        for _ in sys.stdin:\n    t = time.perf_counter()\n    c.status()\n    print(time.perf_counter() - t, flush=True)\n";
    let mut child = Command::new(python)
        .args(["-c", script])
        .arg(node.cli_config())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().expect("python answered").expect("read");
    assert_eq!(next(), "ready", "the bindings did not start");
    // Warm the CLI's side the same way.
    for _ in 0..3 {
        time(&mut mcp(node, &["status"]));
    }
    let (mut ours, mut cli) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(20) {
        cli.push(time(&mut mcp(node, &["status"])));
        writeln!(stdin, "go").expect("write");
        ours.push(next().parse::<f64>().expect("a time"));
    }
    drop(stdin);
    let _ = child.wait();
    (median(ours), median(cli))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let write = args
        .iter()
        .position(|a| a == "--write")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);

    if args.iter().any(|a| a == "--placement-only") {
        let p = placement::measure(rounds);
        println!(
            "placement: {:.0} placements/s (10,000 services on 1,000 nodes); one among 10,000 placed: {:.3} ms",
            p.per_second, p.one_among_many_ms
        );
        return;
    }
    if args.iter().any(|a| a == "--dispatch-only") {
        let d = dispatch::measure(rounds);
        println!(
            "master CPU during the sync: {:.3} s; the host's CPUs busy {:.0}% during the sync through the master, {:.0}% during the direct deploys",
            d.master_cpu,
            d.host_busy_through_master * 100.0,
            d.host_busy_direct * 100.0
        );
        for r in dispatch_rows(&d) {
            println!(
                "{}: {:.3} vs {:.3} {}: {:.2}x",
                r.name,
                r.mcp,
                r.other,
                r.unit,
                r.ratio()
            );
        }
        return;
    }
    if args.iter().any(|a| a == "--fleet-only") {
        let f = fleet::measure();
        println!(
            "master with {} simulated agents: {:.0} heartbeats/s, {:.1} us CPU per heartbeat, RSS {:.1} MB, heartbeat p50 {:.2} ms p99 {:.2} ms; registered in {:.1} s",
            fleet::AGENTS,
            f.heartbeats_per_second,
            f.cpu_per_heartbeat_us,
            f.rss_mb,
            f.latency_p50_ms,
            f.latency_p99_ms,
            f.register_s
        );
        return;
    }
    let mut node = Node::start();
    if args.iter().any(|a| a == "--auth-only") {
        // Quick look at the interceptor's cost alone, over an empty node.
        for _ in 0..3 {
            let (a, b, r) = auth_overhead(&node, rounds);
            println!(
                "auth + audit: {:.1} us vs {:.1} us: {r:.3}x",
                a * 1e6,
                b * 1e6
            );
        }
        return;
    }
    if args.iter().any(|a| a == "--vm-only") {
        let v = measure_vms(&mut node, 5);
        println!(
            "deploy to first serial line: {:.3} s vs qemu by hand {:.3} s: {:.2}x; agent RSS per VM {:.0} kB",
            v.deploy_to_serial,
            v.by_hand,
            v.deploy_to_serial / v.by_hand,
            v.rss_per_vm_kb
        );
        return;
    }
    if args.iter().any(|a| a == "--deploy-only") {
        let (a, b) = deploy_vs_run(&mut node, 1, rounds);
        println!(
            "deploy --no-wait {:.3} s vs podman run -d {:.3} s: {:.2}x",
            a,
            b,
            a / b
        );
        let (a, b) = deploy_window_vs_sleep(&mut node, rounds);
        println!(
            "deploy until ready (5 s window) {:.3} s vs podman run + sleep 5 + inspect {:.3} s: {:.2}x",
            a,
            b,
            a / b
        );
        let (a, b) = deploy_healthy_vs_loop(&mut node, rounds);
        println!(
            "deploy until healthy {:.3} s vs podman run + curl loop {:.3} s: {:.2}x",
            a,
            b,
            a / b
        );
        return;
    }
    if args.iter().any(|a| a == "--python-only") {
        // The same 50 containers as the status row: 10 services of 5.
        let mut services = Vec::new();
        for _ in 0..10 {
            let service = unique("py");
            node.write_service(&service, &def(&service, &node.env.image_v1.clone(), 5));
            let _ = mcp(&node, &["deploy", &service]).output();
            services.push(service);
        }
        let (a, b) = python_status(&node, rounds);
        println!(
            "status from Python {:.2} ms vs mcp status {:.2} ms: {:.3}x",
            a * 1000.0,
            b * 1000.0,
            a / b
        );
        for s in &services {
            let _ = mcp(&node, &["remove", s]).output();
        }
        return;
    }
    if args.iter().any(|a| a == "--files-only") {
        let f = measure_files(&node, 1 << 30, 3);
        for r in f.rows() {
            println!(
                "{}: {:.0} vs {:.0} {}: {:.2}x",
                r.name,
                r.mcp,
                r.other,
                r.unit,
                r.ratio()
            );
        }
        println!(
            "agent RSS growth during transfers: {:.1} MB",
            f.rss_growth_kb as f64 / 1024.0
        );
        return;
    }
    if args.iter().any(|a| a == "--monitor-only") {
        // Quick look at the monitor alone: 100 containers, sweep CPU and
        // drift-to-alert latency.
        let mut services = Vec::new();
        let m = measure_monitor(&mut node, &mut services);
        let r = m.sweep_row();
        println!(
            "sweep CPU: {:.2} ms (agent {:.2} ms) vs podman ps {:.2} ms: {:.2}x; drift-to-alert p50 {:.3} s, p95 {:.3} s; RSS {:.1} MB",
            r.mcp,
            m.agent_cpu * 1000.0,
            r.other,
            r.ratio(),
            m.p50,
            m.p95,
            m.rss_kb as f64 / 1024.0
        );
        for s in &services {
            let _ = mcp(&node, &["remove", s]).output();
        }
        return;
    }
    // Warm up: the image on the node, podman's caches.
    let warm = unique("warm");
    node.write_service(&warm, &def(&warm, &node.env.image_v1.clone(), 1));
    let _ = mcp(&node, &["deploy", &warm]).output();
    let _ = mcp(&node, &["remove", &warm]).output();
    std::thread::sleep(Duration::from_millis(500));
    let pid = node.agent_pid().expect("agent pid");
    let idle_rss = rss_kb(pid);

    let mut rows = Vec::new();
    let (a, b) = deploy_vs_run(&mut node, 1, rounds);
    rows.push(Row {
        name: "deploy --no-wait, 1 component",
        mcp: a,
        other: b,
        other_name: "podman run -d",
        unit: "s",
        target: "<= 1.15x",
        paired_ratio: None,
    });
    let (a, b) = deploy_vs_run(&mut node, 5, rounds);
    rows.push(Row {
        name: "deploy --no-wait, 5 components",
        mcp: a,
        other: b,
        other_name: "5 x podman run -d",
        unit: "s",
        target: "<= 0.6x",
        paired_ratio: None,
    });
    let (a, b) = deploy_window_vs_sleep(&mut node, rounds);
    rows.push(Row {
        name: "deploy until ready, no check (5 s observation window)",
        mcp: a,
        other: b,
        other_name: "podman run -d + sleep 5 + podman inspect",
        unit: "s",
        target: "<= 1.05x",
        paired_ratio: None,
    });

    let (a, b) = deploy_healthy_vs_loop(&mut node, rounds);
    rows.push(Row {
        name: "deploy until healthy, HTTP check every 500 ms",
        mcp: a,
        other: b,
        other_name: "podman run -d + curl every 0.5 s",
        unit: "s",
        target: "<= 1.1x",
        paired_ratio: None,
    });

    // 50 managed containers: 10 services of 5 components.
    let mut services = Vec::new();
    for _ in 0..10 {
        let service = unique("fleet");
        node.write_service(&service, &def(&service, &node.env.image_v1.clone(), 5));
        let out = mcp(&node, &["deploy", &service]).output().expect("deploy");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        services.push(service);
    }
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(10) {
        ours.push(time(&mut mcp(&node, &["status"])));
        theirs.push(time(&mut podman(&["ps", "-a", "--format", "json"])));
    }
    rows.push(Row {
        name: "status, 50 containers",
        mcp: median(ours),
        other: median(theirs),
        other_name: "podman ps -a --format json",
        unit: "s",
        target: "<= 0.5x",
        paired_ratio: None,
    });
    let (a, b) = python_status(&node, rounds);
    rows.push(Row {
        name: "status, 50 containers, from Python",
        mcp: a,
        other: b,
        other_name: "mcp status (a CLI invocation)",
        unit: "s",
        target: "<= 0.3x",
        paired_ratio: None,
    });
    let busy_rss = rss_kb(pid);
    let (a, b, r) = auth_overhead(&node, rounds);
    rows.push(Row {
        name: "status RPC, auth + audit on vs off",
        mcp: a * 1000.0,
        other: b * 1000.0,
        other_name: "same agent, no interceptor",
        unit: "ms",
        target: "<= 1.05x",
        paired_ratio: Some(r),
    });
    let files = measure_files(&node, 1 << 30, rounds.clamp(3, 5));
    rows.extend(files.rows());
    let monitor = measure_monitor(&mut node, &mut services);
    rows.push(monitor.sweep_row());
    let vms = measure_vms(&mut node, 5);
    rows.push(Row {
        name: "deploy a VM to its first serial line (TCG)",
        mcp: vms.deploy_to_serial,
        other: vms.by_hand,
        other_name: "the same qemu command by hand",
        unit: "s",
        target: "<= 1.1x",
        paired_ratio: None,
    });
    for s in &services {
        let _ = mcp(&node, &["remove", s]).output();
    }
    let placed = placement::measure(rounds);
    let fleet = fleet::measure();
    let dispatched = dispatch::measure(rounds.min(3));
    rows.extend(dispatch_rows(&dispatched));

    let mut table = String::new();
    table.push_str("| measurement | mcp | alternative | alternative time | ratio | target |\n|---|---|---|---|---|---|\n");
    for r in &rows {
        table.push_str(&format!(
            "| {} | {:.3} {} | {} | {:.3} {} | {:.2}x | {} |\n",
            r.name,
            r.mcp,
            r.unit,
            r.other_name,
            r.other,
            r.unit,
            r.ratio(),
            r.target
        ));
    }
    table.push_str(&format!(
        "| agent RSS growth during the 1 GiB transfers | {:.1} MB | | | | <= 32 MB |\n",
        files.rss_growth_kb as f64 / 1024.0
    ));
    table.push_str(&format!(
        "| agent RSS per running VM | {:.0} kB | | | | |\n",
        vms.rss_per_vm_kb
    ));
    table.push_str(&format!(
        "| monitor sweep CPU, the agent's part | {:.3} ms | | | | |\n",
        monitor.agent_cpu * 1000.0
    ));
    table.push_str(&format!(
        "| drift-to-alert latency (podman kill to alert run), 20 trials | p50 {:.3} s, p95 {:.3} s | | | | p95 <= 1 s |\n",
        monitor.p50, monitor.p95
    ));
    table.push_str(&format!(
        "| agent RSS, idle | {:.1} MB | | | | <= 20 MB |\n| agent RSS, 50 containers managed | {:.1} MB | | | | <= 30 MB |\n| agent RSS, 100 containers, monitor on | {:.1} MB | | | | <= 30 MB |\n",
        idle_rss as f64 / 1024.0,
        busy_rss as f64 / 1024.0,
        monitor.rss_kb as f64 / 1024.0
    ));
    table.push_str(&format!(
        "| placement, 10,000 services on 1,000 nodes (one plan, one core) | {:.0} placements/s | | | | >= 50,000/s |\n| placement of one service among 10,000 placed on 1,000 nodes | {:.3} ms | | | | |\n",
        placed.per_second, placed.one_among_many_ms
    ));
    table.push_str(&format!(
        "| master, 1,000 simulated agents heartbeating every second: CPU per heartbeat | {:.1} us | | | | |\n| master RSS with 1,000 agents | {:.1} MB | | | | <= 40 MB |\n| heartbeat round trip through the master, p50 / p99 | {:.2} / {:.2} ms | | | | |\n",
        fleet.cpu_per_heartbeat_us, fleet.rss_mb, fleet.latency_p50_ms, fleet.latency_p99_ms
    ));
    table.push_str(&format!(
        "| the master's own CPU time in the 20-service sync through it | {:.3} s | | | | |\n| the host's CPUs busy during that sync / during the direct deploys | {:.0}% / {:.0}% | | | | |\n",
        dispatched.master_cpu,
        dispatched.host_busy_through_master * 100.0,
        dispatched.host_busy_direct * 100.0
    ));
    println!("{table}");
    if let Some(path) = write {
        let existing = std::fs::read_to_string(&path).unwrap_or_default();
        let begin = "<!-- bench:begin -->";
        let end = "<!-- bench:end -->";
        let block = format!(
            "{begin}\nMeasured {} on this host ({} rounds, medians; `make bench`):\n\n{table}{end}",
            chrono_like_now(),
            rounds
        );
        let updated = match (existing.find(begin), existing.find(end)) {
            (Some(b), Some(e)) if e > b => {
                format!("{}{}{}", &existing[..b], block, &existing[e + end.len()..])
            }
            _ => format!("{existing}\n{block}\n"),
        };
        std::fs::write(&path, updated).expect("write results");
        println!("results written to {}", path.display());
    }
}

/// The rows of commands through a master against the same sent directly.
fn dispatch_rows(d: &dispatch::DispatchFigures) -> Vec<Row> {
    vec![
        Row {
            name: "deploy 20 services over 3 nodes through the master (one sync)",
            mcp: d.deploy_through_master,
            other: d.deploy_direct,
            other_name: "20 mcp deploy to the agents, one after another",
            unit: "s",
            target: "<= 0.5x",
            paired_ratio: Some(d.deploy_ratio),
        },
        Row {
            name: "status of 3 nodes with 50 containers each, through the master",
            mcp: d.status_through_master,
            other: d.status_direct,
            other_name: "mcp status of one node directly",
            unit: "s",
            target: "<= 2x",
            paired_ratio: None,
        },
    ]
}

fn chrono_like_now() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%d"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
