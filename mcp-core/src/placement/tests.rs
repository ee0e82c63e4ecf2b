use proptest::prelude::*;

use super::*;
use crate::servicedef;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn node(name: &str, role: NodeRole, state: NodeState, gib: u64, cpus: u32) -> Node {
    Node {
        name: name.into(),
        role,
        state,
        capacity: Resources {
            memory: gib * GIB,
            cpus,
        },
    }
}

fn worker(name: &str, gib: u64) -> Node {
    node(name, NodeRole::Worker, NodeState::Ready, gib, 4)
}

fn request(service: &str, mib: u64) -> Request {
    Request {
        service: service.into(),
        pin: None,
        tier: Tier::Worker,
        demand: Resources {
            memory: mib * MIB,
            cpus: 0,
        },
        node_bound: false,
        ports: Vec::new(),
    }
}

fn existing(service: &str, node: &str, mib: u64) -> Existing {
    Existing {
        service: service.into(),
        node: node.into(),
        demand: Resources {
            memory: mib * MIB,
            cpus: 0,
        },
        ports: Vec::new(),
    }
}

fn port(port: u16) -> HostPort {
    HostPort {
        address: String::new(),
        port,
        protocol: "tcp".into(),
    }
}

#[test]
fn two_services_publishing_one_host_port_never_share_a_node() {
    let nodes = [worker("a", 8), worker("b", 1)];
    let web = |name: &str| Request {
        ports: vec![port(8080)],
        ..request(name, 256)
    };
    // Spread would put the second on the roomy node a too; its port is
    // taken there, so it goes to b.
    let placed = Existing {
        ports: vec![port(8080)],
        ..existing("one", "a", 256)
    };
    let plan_two = plan(&nodes, std::slice::from_ref(&placed), &[web("two")]).unwrap();
    assert_eq!(nodes_of(&plan_two), [("two", "b", "new")]);
    // Placed together: one on each node.
    let both = plan(&nodes, &[], &[web("x"), web("y")]).unwrap();
    assert_ne!(both[0].node, both[1].node);
    // Another address, or another protocol, is another port.
    let elsewhere = Request {
        ports: vec![HostPort {
            address: "127.0.0.1".into(),
            ..port(8080)
        }],
        ..request("local", 256)
    };
    let clash = plan(
        &[worker("a", 8)],
        std::slice::from_ref(&placed),
        &[elsewhere],
    );
    assert!(clash.is_err(), "no address clashes with every address");
    let udp = Request {
        ports: vec![HostPort {
            protocol: "udp".into(),
            ..port(8080)
        }],
        ..request("dns", 256)
    };
    assert!(plan(&[worker("a", 8)], std::slice::from_ref(&placed), &[udp]).is_ok());
    // A service redeployed keeps its own port on its node.
    let again = plan(&nodes, std::slice::from_ref(&placed), &[web("one")]).unwrap();
    assert_eq!(nodes_of(&again), [("one", "a", "kept")]);

    // Nowhere to go: every node publishes it.
    let full = [
        placed.clone(),
        Existing {
            ports: vec![port(8080)],
            ..existing("other", "b", 256)
        },
    ];
    let err = plan(&nodes, &full, &[web("three")]).unwrap_err();
    assert_eq!(
        only_problem(err.clone()),
        Problem::PortsTaken {
            ports: vec![port(8080)]
        }
    );
    assert!(
        err.to_string().contains(
            "publishes host port 8080/tcp, and every ready node with room publishes it already"
        ),
        "{err}"
    );
    // Pinned where it is taken: said so, with who holds it.
    let pinned = Request {
        pin: Some("a".into()),
        ..web("four")
    };
    assert_eq!(
        only_problem(plan(&nodes, &full, &[pinned]).unwrap_err()),
        Problem::PortTaken {
            node: "a".into(),
            port: port(8080),
            by: "one".into(),
        }
    );
}

#[test]
fn host_ports_come_from_every_component() {
    let def = parse(
        "name = \"web\"\n[[components]]\nname = \"a\"\nimage = \"x\"\nports = [\"8080:80\", \"127.0.0.1:9090:90/udp\"]\n[[components]]\nname = \"b\"\nimage = \"x\"\nports = [\"8081:80\"]\n",
    );
    assert_eq!(
        host_ports(&def),
        [
            port(8080),
            port(8081),
            HostPort {
                address: "127.0.0.1".into(),
                port: 9090,
                protocol: "udp".into()
            },
        ]
    );
}

fn parse(text: &str) -> ServiceDef {
    servicedef::parse(text, std::path::Path::new("test.toml")).unwrap()
}

fn nodes_of(plan: &[Placement]) -> Vec<(&str, &str, &str)> {
    plan.iter()
        .map(|p| (p.service.as_str(), p.node.as_str(), p.decision.as_str()))
        .collect()
}

fn only_problem(err: PlacementError) -> Problem {
    assert_eq!(err.problems.len(), 1, "{err}");
    err.problems.into_iter().next().map(|(_, p)| p).unwrap()
}

#[test]
fn spreads_new_services_over_ready_workers() {
    let nodes = [worker("a", 4), worker("b", 4), worker("c", 4)];
    let requests: Vec<Request> = (0..6).map(|i| request(&format!("s{i}"), 512)).collect();
    let plan = plan(&nodes, &[], &requests).unwrap();
    let mut per_node = BTreeMap::new();
    for p in &plan {
        assert_eq!(p.decision, Decision::New);
        *per_node.entry(p.node.as_str()).or_insert(0) += 1;
    }
    assert_eq!(per_node, BTreeMap::from([("a", 2), ("b", 2), ("c", 2)]));
}

#[test]
fn the_largest_service_is_placed_first_so_it_finds_room() {
    // Two 2 GiB nodes; three services of 1, 1 and 2 GiB fit only if the
    // big one goes first.
    let nodes = [worker("a", 2), worker("b", 2)];
    let requests = [
        request("small1", 1024),
        request("small2", 1024),
        request("big", 2048),
    ];
    let plan = plan(&nodes, &[], &requests).unwrap();
    let big = plan.iter().find(|p| p.service == "big").unwrap();
    let smalls: Vec<&str> = plan
        .iter()
        .filter(|p| p.service != "big")
        .map(|p| p.node.as_str())
        .collect();
    assert!(smalls.iter().all(|n| *n != big.node), "{plan:?}");
}

#[test]
fn placed_services_stay_where_they_are() {
    let nodes = [worker("a", 4), worker("b", 4)];
    // "s" runs on the fuller node; spreading would pick "b", stickiness keeps "a".
    let existing = [existing("s", "a", 512), existing("other", "a", 1024)];
    let plan = plan(&nodes, &existing, &[request("s", 512)]).unwrap();
    assert_eq!(nodes_of(&plan), [("s", "a", "kept")]);
}

#[test]
fn a_suspect_node_keeps_its_services_and_takes_no_new_ones() {
    let mut b = worker("b", 64);
    b.state = NodeState::Suspect;
    let nodes = [worker("a", 1), b];
    let plan = plan(
        &nodes,
        &[existing("old", "b", 256)],
        &[request("old", 256), request("new", 256)],
    )
    .unwrap();
    assert_eq!(nodes_of(&plan), [("new", "a", "new"), ("old", "b", "kept")]);
}

#[test]
fn services_leave_a_down_or_draining_node_unless_bound_to_it() {
    let mut down = worker("down", 8);
    down.state = NodeState::Down;
    let mut draining = worker("draining", 8);
    draining.state = NodeState::Draining;
    let nodes = [down, draining, worker("w", 8)];
    let bound = |name: &str| Request {
        node_bound: true,
        ..request(name, 256)
    };
    let pinned = |name: &str, node: &str| Request {
        pin: Some(node.into()),
        ..request(name, 256)
    };
    let existing = [
        existing("free1", "down", 256),
        existing("bound1", "down", 256),
        existing("pin1", "down", 256),
        existing("free2", "draining", 256),
        existing("bound2", "draining", 256),
        existing("pin2", "draining", 256),
    ];
    let requests = [
        request("free1", 256),
        bound("bound1"),
        pinned("pin1", "down"),
        request("free2", 256),
        bound("bound2"),
        pinned("pin2", "draining"),
    ];
    let plan = plan(&nodes, &existing, &requests).unwrap();
    assert_eq!(
        nodes_of(&plan),
        [
            ("bound1", "down", "waiting"),
            ("bound2", "draining", "kept"),
            ("free1", "w", "moved"),
            ("free2", "w", "moved"),
            ("pin1", "down", "waiting"),
            ("pin2", "draining", "kept"),
        ]
    );
    let moved = plan.iter().find(|p| p.service == "free1").unwrap();
    assert_eq!(
        moved.decision,
        Decision::Moved {
            from: "down".into()
        }
    );
}

#[test]
fn pins_are_respected_and_refused_with_reasons() {
    let mut down = worker("gone", 8);
    down.state = NodeState::Down;
    let nodes = [
        worker("a", 1),
        worker("b", 8),
        node("edge", NodeRole::Edge, NodeState::Ready, 8, 4),
        down,
    ];
    let pinned = |node: &str, mib: u64| Request {
        pin: Some(node.into()),
        ..request("svc", mib)
    };
    // Pinned to the fuller node, it goes there anyway.
    let plan_a = plan(&nodes, &[existing("x", "a", 256)], &[pinned("a", 256)]).unwrap();
    assert_eq!(nodes_of(&plan_a), [("svc", "a", "new")]);

    let refusals = [
        (
            pinned("nowhere", 1),
            "pinned to node \"nowhere\", which the fleet does not have",
        ),
        (pinned("gone", 1), "pinned to node \"gone\", which is down"),
        (
            pinned("edge", 1),
            "pinned to node \"edge\", an edge node: edge nodes run no components",
        ),
        (
            pinned("a", 2048),
            "needs 2 GiB memory, 0 CPUs but node \"a\" has 1 GiB memory, 4 CPUs free",
        ),
    ];
    for (request, message) in refusals {
        let err = plan(&nodes, &[], std::slice::from_ref(&request)).unwrap_err();
        assert_eq!(err.to_string(), format!("service svc: {message}"));
    }
}

#[test]
fn core_services_go_to_a_core_node() {
    let nodes = [
        worker("a", 64),
        node("core", NodeRole::Core, NodeState::Ready, 2, 2),
    ];
    let core = Request {
        tier: Tier::Core,
        ..request("db", 256)
    };
    let plan_core = plan(&nodes, &[], std::slice::from_ref(&core)).unwrap();
    assert_eq!(nodes_of(&plan_core), [("db", "core", "new")]);
    // A core node also takes worker services.
    let only_core = [node("core", NodeRole::Core, NodeState::Ready, 2, 2)];
    assert!(plan(&only_core, &[], &[request("web", 256)]).is_ok());
    // No core node ready.
    let err = plan(&[worker("a", 64)], &[], std::slice::from_ref(&core)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service db: tier \"core\" and no core node is ready"
    );
    // Pinned to a worker.
    let err = plan(
        &nodes,
        &[],
        &[Request {
            pin: Some("a".into()),
            ..core
        }],
    )
    .unwrap_err();
    assert_eq!(only_problem(err), Problem::NotCore { node: "a".into() });
}

#[test]
fn no_room_names_the_demand_and_the_roomiest_node() {
    let nodes = [worker("a", 1), worker("b", 2)];
    let err = plan(&nodes, &[existing("x", "b", 512)], &[request("huge", 4096)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service huge: needs 4 GiB memory, 0 CPUs; no ready node has room \
         (the roomiest, \"b\", has 1.5 GiB memory, 4 CPUs free)"
    );
    let err = plan(
        &[node("e", NodeRole::Edge, NodeState::Ready, 8, 8)],
        &[],
        &[request("s", 1)],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "service s: no worker or core node is ready"
    );
}

#[test]
fn one_unplaceable_service_places_nothing_and_every_problem_is_named() {
    let nodes = [worker("a", 1)];
    let err = plan(
        &nodes,
        &[],
        &[
            request("fits", 256),
            request("too-big", 4096),
            Request {
                pin: Some("nope".into()),
                ..request("lost", 1)
            },
        ],
    )
    .unwrap_err();
    let services: Vec<&str> = err.problems.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(services, ["lost", "too-big"]);
}

#[test]
fn a_grown_service_must_fit_on_its_node_and_a_smaller_one_always_does() {
    let nodes = [worker("a", 1), worker("b", 8)];
    let placed = [existing("s", "a", 512), existing("t", "a", 512)];
    let err = plan(&nodes, &placed, &[request("s", 768)]).unwrap_err();
    assert_eq!(
        only_problem(err),
        Problem::DoesNotFit {
            node: "a".into(),
            demand: Resources {
                memory: 768 * MIB,
                cpus: 0
            },
            free: Resources {
                memory: 512 * MIB,
                cpus: 4
            },
        }
    );
    // A node over capacity (as inventories may report) keeps what it runs.
    let over = [existing("s", "a", 1024), existing("t", "a", 1024)];
    let plan_over = plan(&nodes, &over, &[request("s", 1024)]).unwrap();
    assert_eq!(nodes_of(&plan_over), [("s", "a", "kept")]);
}

#[test]
fn a_service_bound_to_its_node_is_never_moved() {
    let nodes = [worker("a", 8), worker("b", 8)];
    let bound = Request {
        node_bound: true,
        pin: Some("b".into()),
        ..request("db", 256)
    };
    let err = plan(&nodes, &[existing("db", "a", 256)], &[bound]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service db: keeps its data on node \"a\" (volumes or VM files) and cannot move to b; \
         remove it there first"
    );
}

#[test]
fn a_changed_pin_moves_a_movable_service() {
    let nodes = [worker("a", 8), worker("b", 8)];
    let pinned = Request {
        pin: Some("b".into()),
        ..request("web", 256)
    };
    let plan = plan(&nodes, &[existing("web", "a", 256)], &[pinned]).unwrap();
    assert_eq!(plan[0].decision, Decision::Moved { from: "a".into() });
    assert_eq!(plan[0].node, "b");
}

#[test]
fn a_service_whose_node_left_the_fleet_is_placed_again() {
    let nodes = [worker("a", 8)];
    let plan_free = plan(
        &nodes,
        &[existing("web", "old", 256)],
        &[request("web", 256)],
    )
    .unwrap();
    assert_eq!(
        plan_free[0].decision,
        Decision::Moved { from: "old".into() }
    );
    let bound = Request {
        node_bound: true,
        ..request("db", 256)
    };
    let plan_bound = plan(&nodes, &[existing("db", "old", 256)], &[bound]).unwrap();
    assert_eq!(nodes_of(&plan_bound), [("db", "old", "waiting")]);
}

#[test]
fn duplicates_are_refused() {
    let err = plan(&[worker("a", 8)], &[], &[request("s", 1), request("s", 1)]).unwrap_err();
    assert_eq!(only_problem(err), Problem::Duplicate);
}

#[test]
fn demand_sums_components_with_defaults() {
    let def = parse(
        r#"
name = "app"
[[components]]
name = "web"
image = "web:1"
memory = "512M"
[[components]]
name = "worker"
image = "worker:1"
[[components]]
name = "vm"
runtime = "unikernel"
image = "/srv/app/vm.raw"
vcpus = 2
memory = "1G"
"#,
    );
    assert_eq!(
        demand_of(&def, 256 * MIB),
        Resources {
            memory: (512 + 256 + 1024) * MIB,
            cpus: 2
        }
    );
    assert!(node_bound(&def), "a VM boots files on its node");
    let plain = parse("name = \"web\"\n[[components]]\nname = \"a\"\nimage = \"x:1\"\n");
    let request = Request::for_service(&plain, 128 * MIB);
    assert!(!request.node_bound);
    assert_eq!(request.demand.memory, 128 * MIB);
    let with_volume = parse(
        "name = \"db\"\n[[components]]\nname = \"a\"\nimage = \"x:1\"\nvolumes = [\"/srv/db/data:/data\"]\n",
    );
    assert!(node_bound(&with_volume));
}

#[test]
fn bytes_are_shown_in_binary_units() {
    assert_eq!(format_bytes(512), "512 B");
    assert_eq!(format_bytes(1536 * MIB), "1.5 GiB");
    assert_eq!(format_bytes(256 * MIB), "256 MiB");
}

// ---- properties ----

fn arb_node(i: usize) -> impl Strategy<Value = Node> {
    (
        prop_oneof![
            6 => Just(NodeRole::Worker),
            1 => Just(NodeRole::Core),
            1 => Just(NodeRole::Edge)
        ],
        prop_oneof![
            6 => Just(NodeState::Ready),
            1 => Just(NodeState::Suspect),
            1 => Just(NodeState::Down),
            1 => Just(NodeState::Draining)
        ],
        1u64..=16,
        0u32..=8,
    )
        .prop_map(move |(role, state, gib, cpus)| Node {
            name: format!("n{i:02}"),
            role,
            state,
            capacity: Resources {
                memory: gib * GIB,
                cpus,
            },
        })
}

fn arb_fleet() -> impl Strategy<Value = (Vec<Node>, Vec<Existing>, Vec<Request>)> {
    (1usize..8)
        .prop_flat_map(|n| (0..n).map(arb_node).collect::<Vec<_>>())
        .prop_flat_map(|nodes| {
            let count = nodes.len();
            let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
            let service = (
                (1u64..=4096, proptest::option::weighted(0.6, 0u16..2)),
                0u32..=2,
                proptest::option::weighted(0.2, 0..count + 1),
                proptest::option::weighted(0.5, 0..count),
                prop_oneof![4 => Just(Tier::Worker), 1 => Just(Tier::Core)],
                proptest::bool::weighted(0.2),
                proptest::bool::weighted(0.8),
            );
            (
                Just(nodes),
                proptest::collection::vec(service, 0..24),
                Just(names),
            )
        })
        .prop_map(|(nodes, services, names)| {
            let mut existing = Vec::new();
            let mut requests = Vec::new();
            for (i, ((mib, published), cpus, pin, placed, tier, bound, requested)) in
                services.into_iter().enumerate()
            {
                let service = format!("s{i:02}");
                // A few ports, so that clashes are common.
                let ports: Vec<HostPort> = published
                    .map(|p| HostPort {
                        address: String::new(),
                        port: 8000 + p,
                        protocol: "tcp".into(),
                    })
                    .into_iter()
                    .collect();
                let demand = Resources {
                    memory: mib * MIB,
                    cpus,
                };
                if let Some(on) = placed {
                    existing.push(Existing {
                        service: service.clone(),
                        node: names[on].clone(),
                        demand,
                        ports: ports.clone(),
                    });
                }
                if requested || placed.is_none() {
                    requests.push(Request {
                        service,
                        // One past the last node is a name the fleet lacks.
                        pin: pin.map(|p| names.get(p).cloned().unwrap_or_else(|| "ghost".into())),
                        tier,
                        demand,
                        node_bound: bound,
                        ports,
                    });
                }
            }
            (nodes, existing, requests)
        })
}

proptest! {
    #[test]
    fn placement_holds_its_rules(
        (nodes, existing, requests) in arb_fleet(),
        seed in any::<u64>(),
    ) {
        let result = plan(&nodes, &existing, &requests);

        // Deterministic: the inputs in another order give the same answer.
        let mut shuffled = (nodes.clone(), existing.clone(), requests.clone());
        let mut rng = seed;
        let mut shuffle = |len: usize| -> Vec<usize> {
            let mut order: Vec<usize> = (0..len).collect();
            for i in (1..len).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (rng >> 33) as usize % (i + 1));
            }
            order
        };
        let order = shuffle(shuffled.0.len());
        shuffled.0 = order.iter().map(|&i| nodes[i].clone()).collect();
        let order = shuffle(shuffled.1.len());
        shuffled.1 = order.iter().map(|&i| existing[i].clone()).collect();
        let order = shuffle(shuffled.2.len());
        shuffled.2 = order.iter().map(|&i| requests[i].clone()).collect();
        prop_assert_eq!(&result, &plan(&shuffled.0, &shuffled.1, &shuffled.2));

        let Ok(placements) = result else { return Ok(()); };
        prop_assert_eq!(placements.len(), requests.len());
        let by_name: BTreeMap<&str, &Node> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let was: BTreeMap<&str, &Existing> = existing.iter().map(|e| (e.service.as_str(), e)).collect();
        let asked: BTreeMap<&str, &Request> = requests.iter().map(|r| (r.service.as_str(), r)).collect();

        // What each node holds afterwards.
        let mut holds: BTreeMap<&str, Resources> = BTreeMap::new();
        for e in &existing {
            if !asked.contains_key(e.service.as_str()) {
                let h = holds.entry(&e.node).or_default();
                *h = h.saturating_add(e.demand);
            }
        }
        let mut landed: BTreeMap<&str, Resources> = BTreeMap::new();
        // The host ports each node publishes afterwards, by service.
        let mut published: BTreeMap<&str, Vec<(&str, &HostPort)>> = BTreeMap::new();
        for e in &existing {
            if !asked.contains_key(e.service.as_str()) {
                for port in &e.ports {
                    published.entry(&e.node).or_default().push((&e.service, port));
                }
            }
        }
        for p in &placements {
            let request = asked[p.service.as_str()];
            if matches!(p.decision, Decision::New | Decision::Moved { .. }) {
                // A service that lands on a node never shares a host port
                // there with another.
                for port in &request.ports {
                    let held = published.get(p.node.as_str()).cloned().unwrap_or_default();
                    prop_assert!(
                        !held.iter().any(|(_, h)| h.clashes(port)),
                        "{} landed on {} publishing {} held by {:?}", p.service, p.node, port, held
                    );
                }
            }
            for port in &request.ports {
                published.entry(&p.node).or_default().push((&p.service, port));
            }
        }
        for p in &placements {
            let request = asked[p.service.as_str()];
            let h = holds.entry(&p.node).or_default();
            *h = h.saturating_add(request.demand);
            // Pins respected.
            if let Some(pin) = &request.pin {
                prop_assert_eq!(&p.node, pin);
            }
            match &p.decision {
                Decision::New | Decision::Moved { .. } => {
                    let node = by_name[p.node.as_str()];
                    // A down, draining, suspect-for-unpinned or edge node is never chosen.
                    prop_assert!(node.role != NodeRole::Edge);
                    prop_assert!(!matches!(node.state, NodeState::Down | NodeState::Draining));
                    if request.pin.is_none() {
                        prop_assert_eq!(node.state, NodeState::Ready);
                    }
                    if request.tier == Tier::Core {
                        prop_assert_eq!(node.role, NodeRole::Core);
                    }
                    let l = landed.entry(&p.node).or_default();
                    *l = l.saturating_add(request.demand);
                    if let Decision::Moved { from } = &p.decision {
                        prop_assert!(!request.node_bound, "a bound service moved: {:?}", p);
                        prop_assert_eq!(from, &was[p.service.as_str()].node);
                    } else {
                        prop_assert!(!was.contains_key(p.service.as_str()));
                    }
                }
                Decision::Kept | Decision::Waiting => {
                    prop_assert_eq!(&p.node, &was[p.service.as_str()].node);
                }
            }
        }
        // Nothing lands where it would be over capacity: in each resource a
        // new or moved service asks for, its node is within capacity after.
        // (A node may hold more than it offers already, as inventories can
        // say; what needs none of the short resource may still go there.)
        for (node, arrived) in landed {
            let capacity = by_name[node].capacity;
            let held = holds[node];
            prop_assert!(arrived.memory == 0 || held.memory <= capacity.memory,
                "{} holds {:?} of {:?}", node, held, capacity);
            prop_assert!(arrived.cpus == 0 || held.cpus <= capacity.cpus,
                "{} holds {:?} of {:?}", node, held, capacity);
        }
    }
}
