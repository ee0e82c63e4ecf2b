//! Nodes joining, heartbeating, falling silent and coming back; two
//! agents claiming one name; drain and plan; a master that lost its
//! database learning the fleet again.

use std::path::Path;
use std::time::{Duration, Instant};

use mcp_core::client::Client;
use mcp_core::servicedef::{self, ServiceDef};
use mcp_master::store::Store;
use mcp_proto::v1 as pb;
use tonic::Code;

use crate::harness::{TestMaster, heartbeat, registration};

fn def(text: &str) -> ServiceDef {
    servicedef::parse(text, Path::new("svc.toml")).unwrap()
}

fn web(memory: &str) -> ServiceDef {
    def(&format!(
        "name = \"web\"\n[[components]]\nname = \"app\"\nimage = \"web:1\"\nmemory = \"{memory}\"\n"
    ))
}

async fn node(client: &mut Client, name: &str) -> pb::NodeSummary {
    client
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

/// Polls node `name` until its state is `state`; how long that took.
async fn wait_state(client: &mut Client, name: &str, state: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let n = node(client, name).await;
        if n.state == state {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "node {name} still {} after {within:?}",
            n.state
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn event_kinds(master: &TestMaster, node: &str) -> Vec<String> {
    Store::open(&master.config.db)
        .unwrap()
        .events(0)
        .unwrap()
        .into_iter()
        .filter(|e| e.node == node)
        .map(|e| e.kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_heartbeat_and_are_listed() {
    let master = TestMaster::start().await;
    let mut agent = master.client(&master.tokens.node).await;
    let mut ops = master.client(&master.tokens.readonly).await;
    let interval = agent
        .register(registration("a", "boot-a", vec![]))
        .await
        .unwrap();
    assert_eq!(interval, 100, "the master tells its heartbeat interval");
    let mut b = registration("b", "boot-b", vec![]);
    b.role = "core".into();
    b.advertise = "127.0.0.3:9444".into();
    agent.register(b).await.unwrap();
    let answer = agent.heartbeat(heartbeat("a", "boot-a")).await.unwrap();
    assert!(!answer.register_again);

    let nodes = ops.nodes().await.unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let a = &nodes[0];
    assert_eq!(
        (
            a.state.as_str(),
            a.role.as_str(),
            a.address.as_str(),
            a.publish_address.as_str()
        ),
        ("ready", "worker", "127.0.0.2:9444", "127.0.0.2")
    );
    assert_eq!(
        a.capacity,
        Some(pb::Resources {
            memory_bytes: 4 << 30,
            cpus: 2
        })
    );
    assert_eq!(
        a.used,
        Some(pb::Resources {
            memory_bytes: 1 << 30,
            cpus: 1
        })
    );
    assert_eq!(nodes[1].role, "core");
    assert!(a.last_heartbeat.ends_with('Z'), "{}", a.last_heartbeat);

    // A heartbeat the master cannot place: register again.
    for (name, boot) in [("zz", "boot-z"), ("a", "another-boot")] {
        let answer = agent.heartbeat(heartbeat(name, boot)).await.unwrap();
        assert!(answer.register_again, "{name} {boot}");
    }
    // Nor one from a node that holds something else now than it
    // registered with (its inventory's digest changed).
    let changed = pb::HeartbeatRequest {
        inventory_digest: "0123abcd".into(),
        ..heartbeat("a", "boot-a")
    };
    assert!(agent.heartbeat(changed).await.unwrap().register_again);
    // Bad registrations name what is wrong.
    let cases = [
        (
            pb::RegisterRequest {
                name: "Bad Name".into(),
                ..registration("x", "b", vec![])
            },
            "node name \"Bad Name\"",
        ),
        (
            pb::RegisterRequest {
                role: "boss".into(),
                ..registration("x", "b", vec![])
            },
            "role \"boss\"",
        ),
        (
            pb::RegisterRequest {
                advertise: "somewhere".into(),
                ..registration("x", "b", vec![])
            },
            "advertise address \"somewhere\"",
        ),
        (
            pb::RegisterRequest {
                boot_id: String::new(),
                ..registration("x", "b", vec![])
            },
            "no boot id",
        ),
    ];
    for (request, says) in cases {
        let err = agent.register(request).await.unwrap_err();
        assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
    assert_eq!(
        ops.nodes().await.unwrap().len(),
        2,
        "nothing recorded of them"
    );
    assert_eq!(event_kinds(&master, "a"), ["joined"]);
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_cannot_hold_one_name() {
    let master = TestMaster::start().await;
    let mut agent = master.client(&master.tokens.node).await;
    agent
        .register(registration("a", "first", vec![]))
        .await
        .unwrap();
    let err = agent
        .register(registration("a", "second", vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::AlreadyExists), "{err}");
    assert!(
        err.to_string()
            .contains("node \"a\" is registered by another agent (at 127.0.0.2:9444)"),
        "{err}"
    );
    // The first still heartbeats; the second is refused as long as it does.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(
            !agent
                .heartbeat(heartbeat("a", "first"))
                .await
                .unwrap()
                .register_again
        );
        assert!(
            agent
                .register(registration("a", "second", vec![]))
                .await
                .is_err()
        );
    }
    // The same agent registering again (its boot id) is no conflict.
    agent
        .register(registration("a", "first", vec![]))
        .await
        .unwrap();
    // Once the first has fallen silent (suspect), the name is free.
    let mut ops = master.client(&master.tokens.readonly).await;
    wait_state(&mut ops, "a", "suspect", Duration::from_secs(5)).await;
    agent
        .register(registration("a", "second", vec![]))
        .await
        .unwrap();
    assert!(
        agent
            .heartbeat(heartbeat("a", "first"))
            .await
            .unwrap()
            .register_again
    );
    assert_eq!(
        event_kinds(&master, "a"),
        ["joined", "registered", "suspect", "back"]
    );
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_suspect_then_down_and_back_with_its_next_heartbeat() {
    let master = TestMaster::start().await;
    let mut agent = master.client(&master.tokens.node).await;
    let mut ops = master.client(&master.tokens.readonly).await;
    agent
        .register(registration("a", "boot", vec![]))
        .await
        .unwrap();
    let silent_from = Instant::now();
    // TTL 200 ms + grace 100 ms; down after 1 s.
    wait_state(&mut ops, "a", "suspect", Duration::from_secs(5)).await;
    let suspect_at = silent_from.elapsed();
    wait_state(&mut ops, "a", "down", Duration::from_secs(5)).await;
    let down_at = silent_from.elapsed();
    // Not before their time. The master keeps times to the millisecond
    // (truncated) and took the registration's a moment before the clock
    // here started: a few milliseconds of slack.
    let slack = Duration::from_millis(5);
    assert!(
        suspect_at + slack >= Duration::from_millis(300),
        "{suspect_at:?}"
    );
    assert!(down_at + slack >= Duration::from_secs(1), "{down_at:?}");
    let n = node(&mut ops, "a").await;
    assert!(!n.state_since.is_empty());
    // The sweep records the transition within half an interval.
    let recorded = Instant::now();
    while !event_kinds(&master, "a").contains(&"down".to_string()) {
        assert!(recorded.elapsed() < Duration::from_secs(5), "no down event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Back at once; asked to register again, so that the master sees what
    // it holds now (a copy of a service moved meanwhile, say).
    assert!(
        agent
            .heartbeat(heartbeat("a", "boot"))
            .await
            .unwrap()
            .register_again
    );
    assert_eq!(node(&mut ops, "a").await.state, "ready", "back at once");
    let events = Store::open(&master.config.db).unwrap().events(0).unwrap();
    let of_a: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.node == "a")
        .map(|e| (e.kind.as_str(), e.detail.as_str()))
        .collect();
    assert_eq!(of_a.len(), 4, "{of_a:?}");
    assert_eq!(
        of_a.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        ["joined", "suspect", "down", "back"]
    );
    assert!(
        of_a[1].1.starts_with("no heartbeat for 0."),
        "{:?}",
        of_a[1]
    );
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_plan_and_undrain() {
    let master = TestMaster::start().await;
    let mut agent = master.client(&master.tokens.node).await;
    let mut admin = master.client(&master.tokens.admin).await;
    let held = pb::InventoryService {
        definition: Some(web("1G").to_proto()),
        generation: 2,
        instance_ids: [("app".to_string(), "c0ffee".to_string())].into(),
    };
    agent
        .register(registration("a", "boot-a", vec![held]))
        .await
        .unwrap();
    let mut b = registration("b", "boot-b", vec![]);
    b.capacity = Some(pb::Resources {
        memory_bytes: 2 << 30,
        cpus: 2,
    });
    agent.register(b).await.unwrap();
    // Keep both alive while the test runs.
    let beats = {
        let mut agent = master.client(&master.tokens.node).await;
        tokio::spawn(async move {
            loop {
                let _ = agent.heartbeat(heartbeat("a", "boot-a")).await;
                let _ = agent.heartbeat(heartbeat("b", "boot-b")).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // What "a" holds was learnt: placed there, its demand allocated.
    let a = node(&mut admin, "a").await;
    assert_eq!(
        (a.services, a.allocated.unwrap().memory_bytes),
        (1, 1 << 30)
    );
    let plan = admin.plan(&[web("1G")]).await.unwrap();
    assert_eq!(
        (plan[0].node.as_str(), plan[0].decision.as_str()),
        ("a", "kept")
    );

    let drained = admin.drain("a").await.unwrap();
    assert_eq!(drained.state, "draining");
    let plan = admin.plan(&[web("1G")]).await.unwrap();
    assert_eq!(
        (
            plan[0].node.as_str(),
            plan[0].decision.as_str(),
            plan[0].from.as_str()
        ),
        ("b", "moved", "a")
    );
    let other = def("name = \"api\"\n[[components]]\nname = \"x\"\nimage = \"x:1\"\n");
    let plan = admin.plan(std::slice::from_ref(&other)).await.unwrap();
    assert_eq!(plan[0].node, "b", "nothing new on a draining node");
    // No room anywhere: the demand and the roomiest node are named.
    let err = admin.plan(&[web("3G")]).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    assert!(
        err.to_string().contains("service web: needs 3 GiB memory, 0 CPUs; no ready node has room (the roomiest, \"b\", has 2 GiB memory, 2 CPUs free)"),
        "{err}"
    );
    let pinned =
        def("name = \"api\"\nnode = \"nowhere\"\n[[components]]\nname = \"x\"\nimage = \"x:1\"\n");
    let err = admin.plan(&[pinned]).await.unwrap_err();
    assert!(
        err.to_string().contains("which the fleet does not have"),
        "{err}"
    );

    let undrained = admin.undrain("a").await.unwrap();
    assert_eq!(undrained.state, "ready");
    let err = admin.drain("zz").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    // A readonly caller may look, not drain.
    let mut ro = master.client(&master.tokens.readonly).await;
    assert!(ro.plan(&[other]).await.is_ok());
    assert_eq!(
        ro.drain("a").await.unwrap_err().code(),
        Some(Code::PermissionDenied)
    );
    beats.abort();
    assert_eq!(
        event_kinds(&master, "a"),
        ["joined", "learnt", "draining", "undrained"]
    );
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_lost_its_database_learns_the_fleet_again() {
    let master = TestMaster::start().await;
    let held = |generation| pb::InventoryService {
        definition: Some(web("512M").to_proto()),
        generation,
        instance_ids: [("app".to_string(), "c0ffee".to_string())].into(),
    };
    {
        let mut agent = master.client(&master.tokens.node).await;
        agent
            .register(registration("a", "boot-a", vec![held(3)]))
            .await
            .unwrap();
        agent
            .register(registration("b", "boot-b", vec![]))
            .await
            .unwrap();
    }
    let (dir, tokens) = master.stop().await;
    std::fs::remove_file(dir.path().join("master.db")).unwrap();
    let _ = std::fs::remove_file(dir.path().join("master.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("master.db-shm"));

    let master = TestMaster::start_in(dir, Some(tokens), |_| {}).await;
    let mut agent = master.client(&master.tokens.node).await;
    let mut ops = master.client(&master.tokens.readonly).await;
    assert!(ops.nodes().await.unwrap().is_empty(), "a new database");
    // The agents' next heartbeats are answered "register again".
    assert!(
        agent
            .heartbeat(heartbeat("a", "boot-a"))
            .await
            .unwrap()
            .register_again
    );
    agent
        .register(registration("a", "boot-a", vec![held(3)]))
        .await
        .unwrap();
    agent
        .register(registration("b", "boot-b", vec![]))
        .await
        .unwrap();
    let a = node(&mut ops, "a").await;
    assert_eq!((a.state.as_str(), a.services), ("ready", 1));
    let plan = ops.plan(&[web("512M")]).await.unwrap();
    assert_eq!(
        (plan[0].node.as_str(), plan[0].decision.as_str()),
        ("a", "kept")
    );
    // A copy on "b" of an older generation does not take the placement...
    agent
        .register(registration("b", "boot-b", vec![held(2)]))
        .await
        .unwrap();
    assert_eq!(node(&mut ops, "b").await.services, 0);
    // ...a newer one does (the highest generation wins).
    agent
        .register(registration("b", "boot-b", vec![held(4)]))
        .await
        .unwrap();
    assert_eq!(node(&mut ops, "b").await.services, 1);
    assert_eq!(node(&mut ops, "a").await.services, 0);
    let kinds = event_kinds(&master, "b");
    assert_eq!(
        kinds,
        ["joined", "registered", "stale-copy", "registered", "learnt"]
    );

    // A service no master placed (generation 0), changed on its node by a
    // direct deploy, is learnt as it is now; unchanged, nothing happens.
    let own = |memory: &str| {
        pb::InventoryService {
        definition: Some(
            def(&format!(
                "name = \"own\"\n[[components]]\nname = \"x\"\nimage = \"x:1\"\nmemory = \"{memory}\"\n"
            ))
            .to_proto(),
        ),
        generation: 0,
        instance_ids: Default::default(),
    }
    };
    for memory in ["128M", "128M", "384M"] {
        agent
            .register(registration("c", "boot-c", vec![own(memory)]))
            .await
            .unwrap();
    }
    let c = node(&mut ops, "c").await;
    assert_eq!(c.allocated.map(|a| a.memory_bytes), Some(384 << 20));
    assert_eq!(
        event_kinds(&master, "c"),
        ["joined", "learnt", "registered", "registered", "learnt"]
    );
    master.stop().await;
}
