//! A fleet: several nodes on one host, what keeps them apart, and agents
//! joining a real master.

use std::time::{Duration, Instant};

use mcp_e2e::master::{GRACE, HEARTBEAT, LOST_AFTER};
use mcp_e2e::{
    Master, Node, free_port, http_get_at, try_http_get, try_http_get_at, unique, wait_for,
};
use mcp_proto::v1::NodeSummary;

/// A web service publishing `port` with no host address, and `extra`
/// (more ports) with one; health-checked over HTTP.
fn web(service: &str, image: &str, port: u16, extra: &str) -> String {
    format!(
        r#"name = "{service}"

[[components]]
name = "web"
image = "{image}"
ports = ["{port}:8080"{extra}]

[components.health]
kind = "http"
port = 8080
path = "/"
interval = "300ms"
timeout = "300ms"
retries = 2
"#
    )
}

fn health(node: &Node, service: &str) -> String {
    let status = node.mcp_json(&["status", service]);
    status["nodes"][0]["components"][0]["health"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Two nodes on one host publish the same port, each on its own
/// `publish_address`; neither on 127.0.0.1. Their health checks (the deploy
/// gate's and the monitor's) probe the port where it is published, and a
/// port that names its host address keeps it.
#[test]
fn nodes_sharing_a_host_publish_the_same_port_on_their_own_addresses() {
    let mut a = Node::start();
    let mut b = Node::start();
    a.reconfigure(|t| t.insert_str(0, "publish_address = \"127.0.0.2\"\n"));
    b.reconfigure(|t| t.insert_str(0, "publish_address = \"127.0.0.3\"\n"));
    let (port, own) = (free_port(), free_port());
    let (sa, sb) = (unique("pub-a"), unique("pub-b"));
    let (v1, v2) = (a.env.image_v1.clone(), a.env.image_v2.clone());
    a.write_service(
        &sa,
        &web(&sa, &v1, port, &format!(", \"127.0.0.1:{own}:8080\"")),
    );
    b.write_service(&sb, &web(&sb, &v2, port, ""));
    let deployed = a.mcp(&["deploy", &sa]).success();
    assert!(
        deployed.stderr.contains("-web: ready"),
        "{}",
        deployed.stderr
    );
    b.mcp(&["deploy", &sb]).success();

    assert_eq!(http_get_at("127.0.0.2", port), "hello from v1\n");
    assert_eq!(http_get_at("127.0.0.3", port), "hello from v2\n");
    assert!(
        try_http_get(port).is_err(),
        "nothing is published on 127.0.0.1:{port}"
    );
    assert_eq!(http_get_at("127.0.0.1", own), "hello from v1\n");
    assert!(try_http_get_at("127.0.0.2", own).is_err());

    let ps = a.mcp_json(&["ps"]);
    let ports: Vec<String> = ps["nodes"][0]["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|i| i["name"] == format!("{sa}-web").as_str())
        .flat_map(|i| i["ports"].as_array().cloned().unwrap_or_default())
        .map(|p| p.as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        ports.contains(&format!("127.0.0.2:{port}:8080")),
        "{ports:?}"
    );

    // The monitor keeps probing where the port is: still healthy after
    // many check intervals (a probe of 127.0.0.1 would fail within 1 s).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(health(&a, &sa), "healthy");
    assert_eq!(health(&b, &sb), "healthy");

    // The node's own port check sees the two addresses apart: a second
    // service on node b with the same port is refused, none on node a's
    // address is taken by it.
    let sc = unique("pub-c");
    b.write_service(&sc, &web(&sc, &v1, port, ""));
    let err = b.mcp(&["deploy", &sc]).failure();
    assert!(
        err.contains(&format!(
            "host port 127.0.0.3:{port}/tcp is already published"
        )),
        "{err}"
    );
}

/// The master's view of node `name` (panics if it has none).
pub(crate) fn node_of(
    master: &Master,
    rt: &tokio::runtime::Runtime,
    name: &str,
) -> Option<NodeSummary> {
    rt.block_on(async {
        let mut client = master.client(&master.readonly_token).await;
        client.nodes().await.expect("list nodes")
    })
    .into_iter()
    .find(|n| n.name == name)
}

/// Waits until the master sees node `name` in `state`; how long it took.
pub(crate) fn wait_state(
    master: &Master,
    rt: &tokio::runtime::Runtime,
    name: &str,
    state: &str,
) -> Duration {
    let start = Instant::now();
    wait_for(Duration::from_secs(30), || {
        node_of(master, rt, name)
            .filter(|n| n.state == state)
            .map(|_| start.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "node {name} never {state}: {:?}; master log:\n{}",
            node_of(master, rt, name),
            master.log()
        )
    })
}

pub(crate) fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("signal");
}

/// Agents join a real master with what they run; a node cut off (its agent
/// stopped with SIGSTOP) goes suspect, then down, and comes back; a master
/// killed with its database deleted learns the fleet again from the
/// agents, and nothing on the nodes was stopped or restarted meanwhile.
#[test]
fn agents_join_a_master_fall_silent_come_back_and_outlive_it() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut master = Master::start();
    let mut a = Node::start();
    let mut b = Node::start();
    // Node a runs a service before it joins: the master learns it.
    let service = unique("held");
    let port = free_port();
    let image = a.env.image_v1.clone();
    a.write_service(
        &service,
        &format!(
            "name = \"{service}\"\n\n[[components]]\nname = \"web\"\nimage = \"{image}\"\nports = [\"127.0.0.1:{port}:8080\"]\nmemory = \"64M\"\n"
        ),
    );
    a.mcp(&["deploy", &service]).success();
    let container = a.mcp_json(&["status", &service])["nodes"][0]["components"][0]["instance_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!container.is_empty());

    a.join(&master, "core", "1G");
    b.join(&master, "worker", "2G");
    wait_state(&master, &rt, &a.name, "ready");
    wait_state(&master, &rt, &b.name, "ready");
    let na = node_of(&master, &rt, &a.name).expect("a");
    let nb = node_of(&master, &rt, &b.name).expect("b");
    assert_eq!((na.role.as_str(), na.services), ("core", 1), "{na:?}");
    assert_eq!(na.address, a.addr, "the master dials the listen address");
    assert_eq!(
        na.capacity.map(|c| (c.memory_bytes, c.cpus)),
        Some((1 << 30, 2))
    );
    assert_eq!(na.allocated.map(|c| c.memory_bytes), Some(64 << 20));
    assert_eq!((nb.role.as_str(), nb.services), ("worker", 0));
    // Heartbeats carry what the node uses.
    wait_for(Duration::from_secs(5), || {
        node_of(&master, &rt, &b.name)
            .and_then(|n| n.used)
            .filter(|u| u.memory_bytes > 0)
    })
    .expect("a heartbeat with the node's use");

    // The operator's view through the master: `mcp node list`, drain and
    // undrain.
    let listed = master.mcp(&["--json", "node", "list"]).success();
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).expect("json");
    crate::output::assert_shape("fleet-node-list", &listed);
    let names: Vec<&str> = listed["nodes"]
        .as_array()
        .map(|n| n.iter().filter_map(|n| n["node"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&a.name.as_str()) && names.contains(&b.name.as_str()),
        "{listed}"
    );
    let table = master.mcp(&["node", "list"]).success().stdout;
    assert!(
        table.contains("LAST HEARTBEAT") && table.contains("64 MiB / 1 GiB"),
        "{table}"
    );
    let drained = master.mcp(&["--json", "node", "drain", &b.name]).success();
    let drained: serde_json::Value = serde_json::from_str(&drained.stdout).expect("json");
    crate::output::assert_shape("fleet-node-list", &drained);
    assert_eq!(drained["nodes"][0]["state"], "draining", "{drained}");
    let undrained = master.mcp(&["node", "undrain", &b.name]).success();
    assert!(undrained.stdout.contains("ready"), "{}", undrained.stdout);
    let unknown = master.mcp(&["node", "drain", "nowhere"]);
    assert_eq!(unknown.code, 1, "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains("no node named \"nowhere\""),
        "{}",
        unknown.stderr
    );
    // A service deployed on node b behind the master's back (directly,
    // as without a master) reaches it with b's next registration, which
    // b's heartbeat asks for once what b holds has changed. Its data lives
    // on b (a volume), so it waits for b rather than moving while b is
    // down below.
    let direct = unique("direct");
    let direct_port = free_port();
    let image_b = b.env.image_v1.clone();
    let data = b.dir.path().join("direct-data");
    std::fs::create_dir_all(&data).expect("mkdir");
    b.write_service(
        &direct,
        &format!(
            "name = \"{direct}\"\n\n[[components]]\nname = \"web\"\nimage = \"{image_b}\"\nports = [\"127.0.0.1:{direct_port}:8080\"]\nmemory = \"32M\"\nvolumes = [\"{}:/data\"]\n",
            data.display()
        ),
    );
    b.mcp(&["deploy", &direct]).success();
    let learnt = wait_for(Duration::from_secs(10), || {
        node_of(&master, &rt, &b.name).filter(|n| n.services == 1)
    })
    .expect("the master learns what b holds now");
    assert_eq!(learnt.allocated.map(|a| a.memory_bytes), Some(32 << 20));

    // Without a master configured, drain says what to set.
    let alone = a.mcp(&["node", "drain", &b.name]);
    assert!(
        alone.stderr.contains("no master configured"),
        "{}",
        alone.stderr
    );

    // Node b cut off: its agent frozen.
    let pid = b.agent_pid().expect("b's agent");
    signal(pid, nix::sys::signal::Signal::SIGSTOP);
    let stopped = Instant::now();
    wait_state(&master, &rt, &b.name, "suspect");
    let suspect_after = stopped.elapsed();
    wait_state(&master, &rt, &b.name, "down");
    let down_after = stopped.elapsed();
    signal(pid, nix::sys::signal::Signal::SIGCONT);
    let back_in = wait_state(&master, &rt, &b.name, "ready");
    // Suspect once the TTL (2 heartbeats) and the grace have passed, down
    // after lost_after; back within a heartbeat or two of waking.
    eprintln!(
        "cut off: suspect after {suspect_after:?}, down after {down_after:?}; back {back_in:?} after SIGCONT"
    );
    // The last heartbeat came at most one interval (plus the call itself,
    // and the master's millisecond timestamps) before the stop.
    let since_last = HEARTBEAT + Duration::from_millis(50);
    let ttl_grace = HEARTBEAT * 2 + GRACE;
    assert!(suspect_after >= ttl_grace - since_last, "{suspect_after:?}");
    assert!(
        suspect_after < ttl_grace + Duration::from_secs(2),
        "{suspect_after:?}"
    );
    assert!(down_after >= LOST_AFTER - since_last, "{down_after:?}");
    assert!(back_in < Duration::from_secs(3), "{back_in:?}");

    // The master goes, database and all; the nodes run on and answer.
    master.kill();
    master.delete_database();
    let status = a.mcp_json(&["status", &service]);
    assert_eq!(
        status["nodes"][0]["components"][0]["observed_state"], "running",
        "{status}"
    );
    std::thread::sleep(HEARTBEAT * 3);
    master.start_process();
    let relearnt = Instant::now();
    wait_for(Duration::from_secs(30), || {
        let (na, nb) = (
            node_of(&master, &rt, &a.name)?,
            node_of(&master, &rt, &b.name)?,
        );
        (na.state == "ready" && nb.state == "ready" && na.services == 1).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the fleet was not learnt again; master log:\n{}",
            master.log()
        )
    });
    // Agents back off (0.5 s doubling) while the master is away; once it
    // answers they are registered within one more try.
    eprintln!(
        "master restarted on an empty database: fleet learnt again in {:?}",
        relearnt.elapsed()
    );
    assert!(
        relearnt.elapsed() < Duration::from_secs(10),
        "{:?}",
        relearnt.elapsed()
    );
    let after = a.mcp_json(&["status", &service]);
    assert_eq!(
        after["nodes"][0]["components"][0]["instance_id"].as_str(),
        Some(container.as_str()),
        "the same container: nothing was restarted"
    );
    let events = a.mcp_json(&["events", "--service", &service]);
    let kinds: Vec<&str> = events["nodes"][0]["events"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        !kinds
            .iter()
            .any(|k| matches!(*k, "stopped" | "restarted" | "removed" | "updated")),
        "{kinds:?}"
    );
}
