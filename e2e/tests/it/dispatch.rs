//! Commands through a master: deploys placed and dispatched with their
//! generation, queries gathered from every node, services moved off a node
//! that is down or drained, stale copies stopped when their node returns,
//! services whose data lives on a down node waiting for it. Every node has
//! its own loopback address and podman storage.

use std::time::Duration;

use mcp_e2e::{Master, Node, free_port, http_get_at, try_http_get_at, unique, wait_for};
use serde_json::Value;

use crate::fleet::{signal, wait_state};

/// A web service publishing `port` with no host address (so on its node's
/// publish address), health-checked over HTTP; failures in its first
/// seconds do not count (a node's first container, in a storage just made,
/// takes a moment to answer).
fn web(service: &str, image: &str, port: u16) -> String {
    format!(
        r#"name = "{service}"

[[components]]
name = "web"
image = "{image}"
ports = ["{port}:8080"]
memory = "64M"
env = {{ GREETING = "a secret" }}

[components.health]
kind = "http"
port = 8080
interval = "300ms"
timeout = "300ms"
retries = 2
start_period = "5s"
"#
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Every component row of `mcp status` through the master, with the node
/// of its report.
fn status_rows(master: &Master, service: &str) -> Vec<(String, Value)> {
    let status = master.mcp_json(&["status", service]);
    status["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .flat_map(|report| {
            let node = report["node"].as_str().unwrap_or_default().to_string();
            report["components"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |c| (node.clone(), c))
        })
        .collect()
}

/// The node `service` runs on (its one component running), per the master.
fn running_on(master: &Master, service: &str) -> Option<(String, String)> {
    let rows = status_rows(master, service);
    match rows.as_slice() {
        [(node, c)] if c["observed_state"] == "running" => Some((
            node.clone(),
            c["instance_id"].as_str().unwrap_or_default().to_string(),
        )),
        _ => None,
    }
}

/// The master's `mcp events` as (node, service, kind) in order.
fn events(master: &Master, service: &str) -> Vec<(String, String, String)> {
    let all = master.mcp_json(&["events", "--service", service]);
    let mut out: Vec<(String, String, String, String)> = Vec::new();
    for group in all["nodes"].as_array().cloned().unwrap_or_default() {
        let node = group["node"].as_str().unwrap_or_default().to_string();
        for e in group["events"].as_array().cloned().unwrap_or_default() {
            out.push((
                e["time"].as_str().unwrap_or_default().to_string(),
                node.clone(),
                e["service"].as_str().unwrap_or_default().to_string(),
                e["kind"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out.sort();
    out.into_iter().map(|(_, n, s, k)| (n, s, k)).collect()
}

fn names_in(node: &Node) -> String {
    node.podman(&["ps", "-a", "--format", "{{.Names}}"])
}

/// A deploy through the master lands on a node, answers with it, and
/// `mcp status` through the master says where; the node falls silent (its
/// agent stopped), goes down, and the service is deployed on the other
/// node (generation 2) while a service whose data lives on the down node
/// waits for it, as `status` says; when the node returns, its stale copy is
/// stopped on the master's word, the new copy and the waiting service stay
/// untouched.
#[test]
fn services_move_off_a_down_node_and_stale_copies_are_fenced_on_return() {
    let rt = runtime();
    let master = Master::start();
    let mut a = Node::start_isolated("127.0.0.2");
    let mut b = Node::start_isolated("127.0.0.3");
    a.join(&master, "worker", "1G");
    b.join(&master, "worker", "1G");
    wait_state(&master, &rt, &a.name, "ready");
    wait_state(&master, &rt, &b.name, "ready");

    let service = unique("moving");
    let port = free_port();
    let image = a.env.image_v1.clone();
    let file = master.dir.path().join(format!("{service}.toml"));
    std::fs::write(&file, web(&service, &image, port)).expect("write definition");
    let deployed = master
        .mcp(&["--json", "deploy", file.to_str().expect("utf-8 path")])
        .success();
    let answer: Value = serde_json::from_str(&deployed.stdout).expect("JSON");
    assert_eq!(
        answer["nodes"][0]["results"][0]["action"], "created",
        "{answer:#}"
    );
    let (first, first_id) = running_on(&master, &service).expect("running after the deploy");
    let (down, other) = if first == a.name { (&a, &b) } else { (&b, &a) };
    assert_eq!(
        answer["nodes"][0]["node"],
        first.as_str(),
        "the answer names the node: {answer:#}"
    );
    let (down_ip, other_ip) = (
        down.isolated.clone().expect("isolated"),
        other.isolated.clone().expect("isolated"),
    );
    assert_eq!(http_get_at(&down_ip, port), "hello from v1\n");
    assert!(try_http_get_at(&other_ip, port).is_err());

    // A service with a volume, pinned to the same node: its data lives there.
    let keep = unique("keep");
    let keep_file = master.dir.path().join(format!("{keep}.toml"));
    std::fs::write(
        &keep_file,
        format!(
            "name = \"{keep}\"\nnode = \"{first}\"\n\n[[components]]\nname = \"db\"\nimage = \"{image}\"\nvolumes = [\"{keep}-data:/data\"]\n"
        ),
    )
    .expect("write definition");
    master
        .mcp(&["deploy", keep_file.to_str().expect("utf-8 path")])
        .success();
    let (_, keep_id) = running_on(&master, &keep).expect("keep runs");
    for (s, kind) in [(&service, "placed"), (&keep, "placed")] {
        assert!(
            events(&master, s).contains(&(first.clone(), s.to_string(), kind.into())),
            "{:?}",
            events(&master, s)
        );
    }

    // The node falls silent: down after lost_after, then the service moves.
    let pid = down.agent_pid().expect("agent runs");
    signal(pid, nix::sys::signal::Signal::SIGSTOP);
    wait_state(&master, &rt, &first, "down");
    let (moved_to, moved_id) = wait_for(Duration::from_secs(60), || {
        running_on(&master, &service).filter(|(n, _)| *n != first)
    })
    .unwrap_or_else(|| {
        panic!(
            "{service} never ran elsewhere: {:?}\nmaster log:\n{}",
            status_rows(&master, &service),
            master.log()
        )
    });
    assert_eq!(moved_to, other.name);
    assert_ne!(moved_id, first_id);
    assert_eq!(http_get_at(&other_ip, port), "hello from v1\n");
    assert!(
        events(&master, &service).contains(&(other.name.clone(), service.clone(), "moved".into())),
        "{:?}",
        events(&master, &service)
    );
    // The bound service waits, and says so.
    let rows = status_rows(&master, &keep);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, first);
    assert_eq!(rows[0].1["drift"][0], "unreachable", "{rows:?}");
    let why = rows[0].1["health_detail"].as_str().unwrap_or_default();
    assert!(why.contains("waits for its node"), "{why}");
    let refused = master
        .mcp(&["deploy", keep_file.to_str().expect("utf-8 path")])
        .failure();
    assert!(refused.contains("waits for node"), "{refused}");

    // The node returns: its stale copy goes, on the master's word; the
    // new copy and the waiting service stay as they were.
    signal(pid, nix::sys::signal::Signal::SIGCONT);
    wait_state(&master, &rt, &first, "ready");
    let stale = format!("{service}-web");
    wait_for(Duration::from_secs(30), || {
        (!names_in(down).lines().any(|n| n == stale)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the stale copy stayed on {first}: {}\nmaster log:\n{}",
            names_in(down),
            master.log()
        )
    });
    assert!(
        events(&master, &service).contains(&(first.clone(), service.clone(), "fenced".into())),
        "{:?}",
        events(&master, &service)
    );
    assert_eq!(
        running_on(&master, &service),
        Some((other.name.clone(), moved_id))
    );
    assert_eq!(
        running_on(&master, &keep),
        Some((first.clone(), keep_id)),
        "{:?}",
        status_rows(&master, &keep)
    );
    assert!(try_http_get_at(&down_ip, port).is_err());
    assert_eq!(http_get_at(&other_ip, port), "hello from v1\n");
}

/// `mcp node drain` moves a node's movable services away one at a time,
/// each new copy ready before the old one is removed; `list`, `ps` and the
/// deploy's answer through the master name each row's node; `--dry-run`
/// shows where a service would go and changes nothing.
#[test]
fn drain_moves_services_one_at_a_time_each_ready_before_the_old_stops() {
    let rt = runtime();
    let master = Master::start();
    let mut a = Node::start_isolated("127.0.0.4");
    a.join(&master, "worker", "1G");
    wait_state(&master, &rt, &a.name, "ready");
    let image = a.env.image_v1.clone();
    let services: Vec<(String, u16)> = (0..2).map(|_| (unique("drained"), free_port())).collect();
    for (service, port) in &services {
        let file = master.dir.path().join(format!("{service}.toml"));
        std::fs::write(&file, web(service, &image, *port)).expect("write definition");
        let path = file.to_str().expect("utf-8 path");
        // A dry run places nothing and deploys nothing.
        let plan = master.mcp_json(&["deploy", "--dry-run", path]);
        let planned = &plan["nodes"][0];
        assert_eq!(planned["node"], a.name.as_str(), "{plan:#}");
        assert_eq!(planned["plan"][0]["placement"], "new", "{plan:#}");
        assert_eq!(planned["plan"][0]["action"], "create", "{plan:#}");
        let unplaced = master.mcp(&["status", service]).failure();
        assert!(
            unplaced.contains("no node of the fleet holds"),
            "{unplaced}"
        );
        master.mcp(&["deploy", path]).success();
    }
    let mut b = Node::start_isolated("127.0.0.5");
    b.join(&master, "worker", "1G");
    wait_state(&master, &rt, &b.name, "ready");

    let list = master.mcp_json(&["list"]);
    let listed: Vec<(String, String)> = list["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .flat_map(|n| {
            let node = n["node"].as_str().unwrap_or_default().to_string();
            n["services"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |s| {
                    (
                        node.clone(),
                        s["name"].as_str().unwrap_or_default().to_string(),
                    )
                })
        })
        .collect();
    for (service, _) in &services {
        assert!(
            listed.contains(&(a.name.clone(), service.clone())),
            "{listed:?}"
        );
    }

    master.mcp(&["node", "drain", &a.name]).success();
    for (service, port) in &services {
        wait_for(Duration::from_secs(60), || {
            running_on(&master, service).filter(|(n, _)| *n == b.name)
        })
        .unwrap_or_else(|| panic!("{service} never moved: {}", master.log()));
        assert_eq!(http_get_at("127.0.0.5", *port), "hello from v1\n");
    }
    wait_for(Duration::from_secs(30), || {
        let names = names_in(&a);
        services
            .iter()
            .all(|(s, _)| !names.contains(s.as_str()))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("copies stayed on the drained node: {}", names_in(&a)));

    // One at a time: the first service's old copy was fenced before the
    // second one moved; each new copy was deployed (ready) before its old
    // copy was removed.
    let mut all = Vec::new();
    for (service, _) in &services {
        all.extend(events(&master, service));
    }
    let at = |node: &str, service: &str, kind: &str| {
        let mut e: Vec<(String, String, String, String)> = Vec::new();
        for (s, _) in &services {
            let all = master.mcp_json(&["events", "--service", s]);
            for g in all["nodes"].as_array().cloned().unwrap_or_default() {
                for ev in g["events"].as_array().cloned().unwrap_or_default() {
                    e.push((
                        ev["time"].as_str().unwrap_or_default().to_string(),
                        g["node"].as_str().unwrap_or_default().to_string(),
                        ev["service"].as_str().unwrap_or_default().to_string(),
                        ev["kind"].as_str().unwrap_or_default().to_string(),
                    ));
                }
            }
        }
        e.into_iter()
            .filter(|(_, n, s, k)| n == node && s == service && k == kind)
            .map(|(t, ..)| t)
            .next_back()
            .unwrap_or_else(|| panic!("no {kind} event of {service} on {node}: {all:?}"))
    };
    let (s1, s2) = (&services[0].0, &services[1].0);
    assert!(at(&b.name, s1, "deployed") <= at(&a.name, s1, "removed"));
    assert!(at(&b.name, s2, "deployed") <= at(&a.name, s2, "removed"));
    let first_fenced = at(&a.name, s1, "fenced").min(at(&a.name, s2, "fenced"));
    let second_moved = at(&b.name, s1, "moved").max(at(&b.name, s2, "moved"));
    assert!(first_fenced <= second_moved, "one at a time: {all:?}");

    // ps through the master names each instance's node.
    let ps = master.mcp_json(&["ps"]);
    let on_b = ps["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .find(|n| n["node"] == b.name.as_str())
        .unwrap_or_else(|| panic!("no ps report of {}: {ps:#}", b.name));
    for (service, _) in &services {
        assert!(
            on_b["instances"].as_array().is_some_and(|i| i
                .iter()
                .any(|i| i["name"] == format!("{service}-web").as_str())),
            "{on_b:#}"
        );
    }
    // Files reach the service's node through the master, whole and
    // checked: push, ls, pull and rm.
    let (s1, _) = &services[0];
    let local = master.dir.path().join("payload.bin");
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &payload).expect("write payload");
    master
        .mcp(&[
            "push",
            s1,
            local.to_str().expect("utf-8"),
            "conf/payload.bin",
        ])
        .success();
    let on_node = b.dir.path().join("srv").join(s1).join("conf/payload.bin");
    assert_eq!(std::fs::read(&on_node).expect("pushed to node b"), payload);
    let listed = master.mcp(&["ls", "-r", s1]).success().stdout;
    assert!(listed.contains("payload.bin"), "{listed}");
    let back = master.dir.path().join("back.bin");
    master
        .mcp(&[
            "pull",
            s1,
            "conf/payload.bin",
            back.to_str().expect("utf-8"),
        ])
        .success();
    assert_eq!(std::fs::read(&back).expect("pulled"), payload);
    master.mcp(&["rm", s1, "conf/payload.bin"]).success();
    assert!(!on_node.exists());

    // History through the master: an admin sees the environment, a
    // readonly caller sees it redacted, as on a node (the master asks
    // the node as admin).
    rt.block_on(async {
        let env_of = |h: mcp_proto::v1::HistoryResponse| {
            h.revisions[0]
                .definition
                .as_ref()
                .and_then(|d| d.env.get("GREETING").cloned())
                .unwrap_or_default()
        };
        let mut admin = master.client(&master.admin_token).await;
        let seen = env_of(admin.history(s1, None, None).await.expect("history"));
        assert_eq!(seen, "a secret");
        let mut viewer = master.client(&master.readonly_token).await;
        let seen = env_of(viewer.history(s1, None, None).await.expect("history"));
        assert_eq!(seen, mcp_core::servicedef::REDACTED);
    });

    // --node narrows a query through the master to one node.
    let narrowed = master.mcp_json(&["--node", &a.name, "ps"]);
    let reports = narrowed["nodes"].as_array().cloned().unwrap_or_default();
    assert!(
        reports.iter().all(|r| r["node"] == a.name.as_str()),
        "{narrowed:#}"
    );
    master.mcp(&["node", "undrain", &a.name]).success();
    wait_state(&master, &rt, &a.name, "ready");
}

/// Generation fencing on the node itself: a deploy or a stop sent with a
/// placement generation older than the one the node holds is refused and
/// changes nothing; a newer one is obeyed and recorded; a direct call
/// (generation 0) is v1's, unchecked.
#[test]
fn a_node_refuses_commands_of_an_older_generation() {
    let rt = runtime();
    let mut node = Node::start();
    let service = unique("fenced");
    let port = free_port();
    let image = node.env.image_v1.clone();
    let path = node.write_service(
        &service,
        &format!(
            "name = \"{service}\"\n\n[[components]]\nname = \"web\"\nimage = \"{image}\"\nports = [\"127.0.0.1:{port}:8080\"]\n"
        ),
    );
    let def = mcp_core::servicedef::parse(
        &std::fs::read_to_string(&path).expect("read definition"),
        &path,
    )
    .expect("definition");
    let code = |r: Result<tonic::Response<mcp_proto::v1::ServiceActionResponse>, tonic::Status>| {
        r.map(|_| tonic::Code::Ok).unwrap_or_else(|s| s.code())
    };
    rt.block_on(async {
        let client = node.client(&node.admin_token).await;
        let mut api = client.agent_api();
        let deploy = |generation: u64| mcp_proto::v1::DeployRequest {
            service: Some(def.to_proto()),
            generation,
            ..Default::default()
        };
        let done = api
            .deploy(client.wrap(deploy(3)))
            .await
            .expect("deploy at generation 3")
            .into_inner();
        assert_eq!(done.generation, 3);
        let refused = api
            .deploy(client.wrap(deploy(2)))
            .await
            .expect_err("generation 2 is older");
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(
            refused.message().contains("generation 3"),
            "{}",
            refused.message()
        );
        let stop = |generation: u64| mcp_proto::v1::ServiceRequest {
            service: service.clone(),
            component: String::new(),
            generation,
        };
        assert_eq!(
            code(api.stop(client.wrap(stop(1))).await),
            tonic::Code::FailedPrecondition
        );
        // Still running: nothing was done.
        let status = client.clone().status(Some(&service)).await.expect("status");
        assert_eq!(status.components[0].observed_state, "running");
        // A direct deploy (generation 0) is not fenced and keeps the
        // generation; a newer one is obeyed.
        api.deploy(client.wrap(deploy(0)))
            .await
            .expect("direct deploy");
        assert_eq!(
            code(api.stop(client.wrap(stop(2))).await),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(code(api.stop(client.wrap(stop(4))).await), tonic::Code::Ok);
        let status = client.clone().status(Some(&service)).await.expect("status");
        assert_ne!(status.components[0].observed_state, "running");
    });
    assert!(try_http_get_at("127.0.0.1", port).is_err());
}

/// The names of the containers on `node`, sorted.
fn containers(node: &Node) -> Vec<String> {
    let mut names: Vec<String> = names_in(node).lines().map(str::to_string).collect();
    names.sort();
    names
}

/// The containers on `node` as "name id", sorted.
fn instances(node: &Node) -> Vec<String> {
    let mut all: Vec<String> = node
        .podman(&["ps", "-a", "--format", "{{.Names}} {{.ID}}"])
        .lines()
        .map(str::to_string)
        .collect();
    all.sort();
    all
}

/// A master killed (SIGKILL) in the middle of a 10-service sync, its
/// database deleted, started again: what the nodes ran meanwhile is as it
/// was (same containers), no service is on two nodes and none is left half
/// made; the same sync again converges, every service running once.
#[test]
fn a_master_killed_mid_sync_leaves_no_service_twice_and_the_next_sync_converges() {
    let rt = runtime();
    let mut master = Master::start();
    let mut a = Node::start_isolated("127.0.0.6");
    let mut b = Node::start_isolated("127.0.0.7");
    a.join(&master, "worker", "1G");
    b.join(&master, "worker", "1G");
    wait_state(&master, &rt, &a.name, "ready");
    wait_state(&master, &rt, &b.name, "ready");
    let image = a.env.image_v1.clone();
    let services: Vec<(String, u16)> = (0..10).map(|_| (unique("batch"), free_port())).collect();
    for (service, port) in &services {
        std::fs::write(
            master.services_dir().join(format!("{service}.toml")),
            web(service, &image, *port),
        )
        .expect("write definition");
    }

    let mut sync = master.spawn_mcp(&["sync"]);
    let started = wait_for(Duration::from_secs(60), || {
        let made = containers(&a).len() + containers(&b).len();
        (made >= 1).then_some(made)
    })
    .expect("the sync never got under way");
    master.kill();
    let _ = sync.wait();
    assert!(started < services.len(), "killed too late: {started}");
    // What the nodes hold once their part of the sync has ended.
    std::thread::sleep(Duration::from_secs(2));
    let (held_a, held_b) = (instances(&a), instances(&b));

    master.delete_database();
    master.start_process();
    wait_state(&master, &rt, &a.name, "ready");
    wait_state(&master, &rt, &b.name, "ready");
    // Nothing was stopped, restarted or moved in the recovery.
    assert_eq!(instances(&a), held_a);
    assert_eq!(instances(&b), held_b);
    for name in held_a.iter().chain(&held_b) {
        assert!(!name.ends_with(".mcp-new"), "a half-made instance: {name}");
    }

    master.mcp(&["sync"]).success();
    let (on_a, on_b) = (containers(&a), containers(&b));
    for (service, port) in &services {
        let name = format!("{service}-web");
        let held: Vec<&Node> = [(&a, &on_a), (&b, &on_b)]
            .into_iter()
            .filter(|(_, names)| names.contains(&name))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            held.len(),
            1,
            "{service} on {} nodes: {on_a:?} {on_b:?}",
            held.len()
        );
        let ip = held[0].isolated.clone().expect("isolated");
        assert_eq!(http_get_at(&ip, *port), "hello from v1\n");
    }
    assert_eq!(on_a.len() + on_b.len(), services.len(), "{on_a:?} {on_b:?}");
    // Every one running, where the master says.
    let status = master.mcp_json(&["status"]);
    let running = status["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .flat_map(|n| n["components"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["observed_state"] == "running" && c["drift"] == serde_json::json!([]))
        .count();
    assert_eq!(running, services.len(), "{status:#}");
    // Those that ran before the kill still run the same instance.
    let now: Vec<String> = instances(&a).into_iter().chain(instances(&b)).collect();
    for held in held_a.iter().chain(&held_b) {
        assert!(now.contains(held), "{held} went: {now:?}");
    }
}
