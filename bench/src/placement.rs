//! Placement throughput: `mcp_core::placement::plan` alone, no I/O.

use std::time::Instant;

use mcp_core::placement::{
    Existing, HostPort, Node, NodeRole, NodeState, Request, Resources, plan,
};
use mcp_core::servicedef::Tier;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// What the placement rows report.
pub struct PlacementFigures {
    /// New services placed per second by one plan of 10,000 on 1,000
    /// empty nodes.
    pub per_second: f64,
    /// Milliseconds of one plan placing one new service among 10,000
    /// placed ones (a deploy through the master).
    pub one_among_many_ms: f64,
}

/// A fleet of `n` nodes of assorted sizes (16 to 64 GiB, 8 to 32 CPUs),
/// a few of them core, suspect, draining or down.
fn fleet(n: usize) -> Vec<Node> {
    (0..n)
        .map(|i| Node {
            name: format!("node-{i:04}"),
            role: if i % 50 == 0 {
                NodeRole::Core
            } else {
                NodeRole::Worker
            },
            state: match i % 97 {
                1 => NodeState::Suspect,
                2 => NodeState::Draining,
                3 => NodeState::Down,
                _ => NodeState::Ready,
            },
            capacity: Resources {
                memory: (16 + (i as u64 % 4) * 16) * GIB,
                cpus: 8 + (i as u32 % 4) * 8,
            },
        })
        .collect()
}

/// `n` services of 64 MiB to 1 GiB, one in ten a VM asking for CPUs, one
/// in a hundred core, one in two hundred pinned.
fn services(n: usize, nodes: usize) -> Vec<Request> {
    (0..n)
        .map(|i| Request {
            service: format!("svc-{i:05}"),
            pin: (i % 200 == 7).then(|| format!("node-{:04}", (i * 7919) % nodes / 50 * 50)),
            tier: if i % 100 == 3 {
                Tier::Core
            } else {
                Tier::Worker
            },
            demand: Resources {
                memory: (64 + (i as u64 * 37) % 960) * MIB,
                cpus: u32::from(i % 10 == 0),
            },
            node_bound: i % 5 == 0,
            // One published port each (every placement checks it against
            // the ports its node publishes).
            ports: vec![HostPort {
                address: String::new(),
                port: 10_000 + (i % 50_000) as u16,
                protocol: "tcp".into(),
            }],
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Measures placement over 1,000 nodes with 10,000 services, `rounds` times.
pub fn measure(rounds: usize) -> PlacementFigures {
    let nodes = fleet(1_000);
    let requests = services(10_000, nodes.len());
    let mut rates = Vec::new();
    let mut placed = Vec::new();
    for _ in 0..rounds.max(3) {
        let start = Instant::now();
        placed = plan(&nodes, &[], &requests).expect("10,000 services fit on 1,000 nodes");
        rates.push(requests.len() as f64 / start.elapsed().as_secs_f64());
    }
    let existing: Vec<Existing> = placed
        .iter()
        .zip(&requests)
        .map(|(p, r)| Existing {
            service: p.service.clone(),
            node: p.node.clone(),
            demand: r.demand,
            ports: r.ports.clone(),
        })
        .collect();
    let one = services(10_001, nodes.len())
        .pop()
        .into_iter()
        .collect::<Vec<_>>();
    let mut single = Vec::new();
    for _ in 0..rounds.max(3) * 10 {
        let start = Instant::now();
        plan(&nodes, &existing, &one).expect("one more fits");
        single.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    PlacementFigures {
        per_second: median(rates),
        one_among_many_ms: median(single),
    }
}
