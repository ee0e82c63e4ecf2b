//! Commands through a master against the same commands sent to the agents
//! directly: 20 services deployed over 3 nodes (one `mcp sync` through the
//! master against 20 `mcp deploy`s to the agents, one after another), and
//! `mcp status` of 3 nodes holding 50 containers each through the master
//! against `mcp status` of one such node directly. Every node has its own
//! podman storage and loopback address.

use std::time::{Duration, Instant};

use mcp_e2e::{Master, Node, free_port, unique, wait_for};

/// The services deployed per round.
pub const SERVICES: usize = 20;
/// The nodes.
pub const NODES: usize = 3;
/// Containers per node for the status rows.
pub const CONTAINERS_PER_NODE: usize = 50;

/// What the rows report: medians of seconds.
pub struct DispatchFigures {
    /// `mcp sync` of the 20 services through the master.
    pub deploy_through_master: f64,
    /// 20 `mcp deploy`s to the agents, one after another.
    pub deploy_direct: f64,
    /// The median of the per-round ratios.
    pub deploy_ratio: f64,
    /// The master's own CPU time during the sync (median, seconds): what
    /// it adds, the rest being the nodes' work.
    pub master_cpu: f64,
    /// The share of the host's CPU time spent busy during the sync through
    /// the master (median): near 1, the nodes' work saturates the host.
    pub host_busy_through_master: f64,
    /// The same during the direct deploys.
    pub host_busy_direct: f64,
    /// `mcp status` of the whole fleet through the master.
    pub status_through_master: f64,
    /// `mcp status` of one node directly.
    pub status_direct: f64,
}

/// A service of one web component on `port`, health-checked over HTTP.
fn web(service: &str, image: &str, port: u16, pin: Option<&str>) -> String {
    let node = pin.map(|n| format!("node = \"{n}\"\n")).unwrap_or_default();
    format!(
        "name = \"{service}\"\n{node}\n[[components]]\nname = \"web\"\nimage = \"{image}\"\nports = [\"{port}:8080\"]\nmemory = \"32M\"\n\n[components.health]\nkind = \"http\"\nport = 8080\ninterval = \"200ms\"\ntimeout = \"200ms\"\nretries = 3\nstart_period = \"5s\"\n"
    )
}

/// A service of `components` sleeping components pinned to `node`.
fn sleepers(service: &str, image: &str, components: usize, node: &str) -> String {
    let mut s = format!("name = \"{service}\"\nnode = \"{node}\"\n");
    for i in 0..components {
        s.push_str(&format!(
            "\n[[components]]\nname = \"c{i}\"\nimage = \"{image}\"\ncmd = [\"sleep\", \"3600\"]\nmemory = \"8M\"\n"
        ));
    }
    s
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn timed(run: impl FnOnce()) -> f64 {
    let start = Instant::now();
    run();
    start.elapsed().as_secs_f64()
}

/// Starts a master and three agents joined to it, measures, removes it all.
pub fn measure(rounds: usize) -> DispatchFigures {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let master = Master::start();
    let mut nodes: Vec<Node> = (0..NODES)
        .map(|i| Node::start_isolated(&format!("127.0.0.{}", 21 + i)))
        .collect();
    for n in &mut nodes {
        n.join(&master, "worker", "8G");
    }
    let ready = wait_for(Duration::from_secs(30), || {
        let listed = rt.block_on(async {
            let mut c = master.client(&master.readonly_token).await;
            c.nodes().await.unwrap_or_default()
        });
        (listed.iter().filter(|n| n.state == "ready").count() == NODES).then_some(())
    });
    assert!(ready.is_some(), "the nodes never joined: {}", master.log());
    let image = nodes[0].env.image_v1.clone();

    let (mut through, mut direct, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut master_cpu = Vec::new();
    let (mut busy_through, mut busy_direct) = (Vec::new(), Vec::new());
    let master_pid = master.pid().expect("the master runs");
    for _ in 0..rounds {
        // Through the master: the 20 definitions in its services directory,
        // one sync placing them over the nodes and deploying on each at once.
        let batch: Vec<String> = (0..SERVICES).map(|_| unique("via")).collect();
        for s in &batch {
            std::fs::write(
                master.services_dir().join(format!("{s}.toml")),
                web(s, &image, free_port(), None),
            )
            .expect("write definition");
        }
        let cpu_before = crate::cpu_seconds(master_pid);
        let (busy, m) = crate::host_busy(|| {
            timed(|| {
                master.mcp(&["sync"]).success();
            })
        });
        master_cpu.push(crate::cpu_seconds(master_pid) - cpu_before);
        busy_through.push(busy);
        for s in &batch {
            master.mcp(&["remove", s]).success();
            let _ = std::fs::remove_file(master.services_dir().join(format!("{s}.toml")));
        }
        // Directly: the same 20 deploys, each to a node, one after another.
        let batch: Vec<(usize, String)> = (0..SERVICES)
            .map(|i| (i % NODES, unique("direct")))
            .collect();
        for (i, s) in &batch {
            let text = web(s, &image, free_port(), None);
            nodes[*i].write_service(s, &text);
        }
        let (busy, d) = crate::host_busy(|| {
            timed(|| {
                for (i, s) in &batch {
                    nodes[*i].mcp(&["deploy", s]).success();
                }
            })
        });
        busy_direct.push(busy);
        for (i, s) in &batch {
            nodes[*i].mcp(&["remove", s]).success();
        }
        through.push(m);
        direct.push(d);
        ratios.push(m / d);
    }

    // Status: 50 containers on each node (10 services of 5, pinned).
    for n in &nodes {
        for _ in 0..CONTAINERS_PER_NODE / 5 {
            let s = unique("held");
            std::fs::write(
                master.services_dir().join(format!("{s}.toml")),
                sleepers(&s, &image, 5, &n.name),
            )
            .expect("write definition");
        }
    }
    master.mcp(&["sync"]).success();
    let (mut via, mut one) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(5) {
        via.push(timed(|| {
            master.mcp(&["status"]).ran();
        }));
        one.push(timed(|| {
            nodes[0].mcp(&["status"]).ran();
        }));
    }
    DispatchFigures {
        deploy_through_master: median(through),
        deploy_direct: median(direct),
        deploy_ratio: median(ratios),
        master_cpu: median(master_cpu),
        host_busy_through_master: median(busy_through),
        host_busy_direct: median(busy_direct),
        status_through_master: median(via),
        status_direct: median(one),
    }
}
