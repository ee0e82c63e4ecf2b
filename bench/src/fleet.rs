//! A master under a fleet: 1,000 simulated agents, each its own TLS
//! connection, registering and heartbeating over real gRPC against a
//! release `mcp-master` process.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_e2e::Master;
use mcp_proto::v1 as pb;

/// The simulated fleet's size.
pub const AGENTS: usize = 1_000;
/// Their heartbeat interval (the master's `heartbeat_interval_ms`).
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How long heartbeats are measured.
pub const WINDOW: Duration = Duration::from_secs(20);

/// What the fleet rows report.
pub struct FleetFigures {
    /// Heartbeats answered per second during the window.
    pub heartbeats_per_second: f64,
    /// The master's CPU time per heartbeat, microseconds.
    pub cpu_per_heartbeat_us: f64,
    /// The master's highest resident memory during the window, MB.
    pub rss_mb: f64,
    /// Heartbeat round trips, as the agents saw them: median and p99, ms.
    pub latency_p50_ms: f64,
    /// The 99th percentile.
    pub latency_p99_ms: f64,
    /// How long the 1,000 registrations took, s.
    pub register_s: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Starts a master (heartbeats every second; room for a thousand
/// connections from one address) and a thousand agents, measures WINDOW
/// of heartbeats after a warm-up, and stops them all.
pub fn measure() -> FleetFigures {
    let master = Master::start_with(|toml| {
        *toml = toml.replace(
            "heartbeat_interval_ms = 200",
            &format!("heartbeat_interval_ms = {}", INTERVAL.as_millis()),
        );
        toml.push_str("\n[limits]\nmax_connections = 4096\nmax_connections_per_peer = 4096\n");
    });
    let pid = master.pid().expect("master pid");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let master = Arc::new(master);
    let registered = Arc::new(AtomicUsize::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let connecting = Arc::new(tokio::sync::Semaphore::new(32));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..AGENTS {
        let (master, registered, measuring, stop, latencies, connecting) = (
            master.clone(),
            registered.clone(),
            measuring.clone(),
            stop.clone(),
            latencies.clone(),
            connecting.clone(),
        );
        tasks.push(rt.spawn(async move {
            let name = format!("sim-{i:04}");
            let boot = format!("boot-{i}");
            let mut client = {
                let _permit = connecting.acquire().await.expect("semaphore");
                let mut client = master.client(&master.node_token).await;
                client
                    .register(pb::RegisterRequest {
                        name: name.clone(),
                        role: "worker".into(),
                        advertise: format!("127.0.0.1:{}", 20_000 + i),
                        arch: "x86_64".into(),
                        version: "bench".into(),
                        capacity: Some(pb::Resources {
                            memory_bytes: 16 << 30,
                            cpus: 8,
                        }),
                        boot_id: boot.clone(),
                        inventory: Vec::new(),
                        publish_address: String::new(),
                        inventory_digest: String::new(),
                    })
                    .await
                    .expect("register");
                client
            };
            registered.fetch_add(1, Ordering::Relaxed);
            // Spread the heartbeats over the interval.
            tokio::time::sleep(INTERVAL.mul_f64(i as f64 / AGENTS as f64)).await;
            let mut ticks = tokio::time::interval(INTERVAL);
            while !stop.load(Ordering::Relaxed) {
                ticks.tick().await;
                let sent = Instant::now();
                let answer = client
                    .heartbeat(pb::HeartbeatRequest {
                        name: name.clone(),
                        boot_id: boot.clone(),
                        used: Some(pb::Resources {
                            memory_bytes: 4 << 30,
                            cpus: 2,
                        }),
                        services: 0,
                        inventory_digest: String::new(),
                    })
                    .await
                    .expect("heartbeat");
                assert!(!answer.register_again, "{name} is unknown to the master");
                if measuring.load(Ordering::Relaxed) {
                    let ms = sent.elapsed().as_secs_f64() * 1000.0;
                    latencies.lock().expect("latencies").push(ms);
                }
            }
        }));
    }
    while registered.load(Ordering::Relaxed) < AGENTS {
        std::thread::sleep(Duration::from_millis(50));
    }
    let register_s = started.elapsed().as_secs_f64();
    std::thread::sleep(INTERVAL * 3);
    let cpu_before = crate::cpu_seconds(pid);
    measuring.store(true, Ordering::Relaxed);
    let window_start = Instant::now();
    let mut rss_kb = 0u64;
    while window_start.elapsed() < WINDOW {
        rss_kb = rss_kb.max(crate::rss_kb(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    measuring.store(false, Ordering::Relaxed);
    let cpu = crate::cpu_seconds(pid) - cpu_before;
    let window = window_start.elapsed().as_secs_f64();
    let ready = rt.block_on(async {
        let mut client = master.client(&master.readonly_token).await;
        let nodes = client.nodes().await.expect("list nodes");
        nodes.iter().filter(|n| n.state == "ready").count()
    });
    assert_eq!(ready, AGENTS, "every simulated agent is ready");
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(INTERVAL * 3, t).await;
        }
    });
    let mut sorted = std::mem::take(&mut *latencies.lock().expect("latencies"));
    sorted.sort_by(f64::total_cmp);
    let beats = sorted.len() as f64;
    FleetFigures {
        heartbeats_per_second: beats / window,
        cpu_per_heartbeat_us: cpu / beats * 1e6,
        rss_mb: rss_kb as f64 / 1024.0,
        latency_p50_ms: percentile(&sorted, 0.5),
        latency_p99_ms: percentile(&sorted, 0.99),
        register_s,
    }
}
