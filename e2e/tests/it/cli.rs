//! End-to-end tests: real `mcp` and `mcp-agent` binaries, real gRPC, real
//! podman, images pulled from the real local registry.

use std::time::Duration;

use mcp_e2e::{Node, free_port, http_get, podman_cli, unique, wait_for};
use serde_json::Value;

fn two_component_def(service: &str, image: &str, port: u16) -> String {
    format!(
        r#"# test service
name = "{service}"
active = true   # desired state

[[components]]
name = "web"
image = "{image}"
ports = ["127.0.0.1:{port}:8080"]
restart = "unless-stopped"
memory = "64M"

[[components]]
name = "worker"
image = "{image}"
cmd = ["/bin/sh", "-c", "echo worker up; while true; do sleep 1; done"]
env = {{ GREETING = "hi" }}
"#
    )
}

fn components(status: &Value) -> Vec<Value> {
    status["nodes"][0]["components"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn component<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|c| c["component"] == name)
        .unwrap_or_else(|| panic!("no component {name} in {list:?}"))
}

fn actions(deploy: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = deploy["nodes"][0]["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["component"].as_str().unwrap_or_default().to_string(),
                r["action"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn pair(c: &str, a: &str) -> (String, String) {
    (c.to_string(), a.to_string())
}

#[test]
fn deploy_update_stop_start_two_components() {
    let mut node = Node::start();
    let service = unique("hello");
    let port = free_port();
    let image = node.env.image_v1.clone();
    let path = node.write_service(&service, &two_component_def(&service, &image, port));

    // First deploy creates both, pulling from the registry.
    let first = node.mcp_json(&["deploy", &service]);
    assert_eq!(
        actions(&first),
        vec![pair("web", "created"), pair("worker", "created")]
    );
    assert_eq!(http_get(port).trim(), "hello from v1");

    let status = node.mcp_json(&["status", &service]);
    let comps = components(&status);
    assert_eq!(comps.len(), 2);
    for c in &comps {
        assert_eq!(c["observed_state"], "running", "{c}");
        assert_eq!(c["drift"].as_array().map(Vec::len), Some(0), "{c}");
    }
    let web_id = component(&comps, "web")["instance_id"].clone();

    // Unchanged definition: nothing is touched.
    let again = node.mcp_json(&["deploy", path.to_str().expect("utf8")]);
    assert_eq!(
        actions(&again),
        vec![pair("web", "unchanged"), pair("worker", "unchanged")]
    );
    let comps = components(&node.mcp_json(&["status", &service]));
    assert_eq!(component(&comps, "web")["instance_id"], web_id);

    // Changing one component's image replaces that one only.
    let text = std::fs::read_to_string(&path).expect("read");
    let v2 = text.replacen(
        &format!("image = \"{image}\"\nports"),
        &format!("image = \"{}\"\nports", node.env.image_v2),
        1,
    );
    assert_ne!(text, v2);
    std::fs::write(&path, &v2).expect("write");
    let update = node.mcp_json(&["deploy", &service]);
    assert_eq!(
        actions(&update),
        vec![pair("web", "updated"), pair("worker", "unchanged")]
    );
    assert_eq!(http_get(port).trim(), "hello from v2");
    let comps = components(&node.mcp_json(&["status", &service]));
    assert_ne!(component(&comps, "web")["instance_id"], web_id);
    assert_eq!(
        component(&comps, "web")["desired_image"],
        node.env.image_v2.as_str()
    );
    // No staged (`.mcp-new`) instance is left behind.
    let names: Vec<String> = node
        .instances_of(&service)
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // stop rewrites `active` only, then pushes.
    node.mcp(&["stop", &service]).success();
    let stopped_text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(
        stopped_text,
        v2.replace(
            "active = true   # desired state",
            "active = false   # desired state"
        )
    );
    let comps = components(&node.mcp_json(&["status", &service]));
    for c in &comps {
        assert_eq!(c["desired_active"], false);
        assert_ne!(c["observed_state"], "running", "{c}");
        assert_eq!(c["drift"].as_array().map(Vec::len), Some(0), "{c}");
    }
    let list = node.mcp_json(&["list"]);
    let svc = list["nodes"][0]["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["name"] == service.as_str())
        .cloned()
        .expect("service listed");
    assert_eq!(svc["active"], false);

    node.mcp(&["start", &service]).success();
    assert_eq!(std::fs::read_to_string(&path).expect("read"), v2);
    assert_eq!(http_get(port).trim(), "hello from v2");

    // restart keeps the definition and the containers' identity.
    let before = components(&node.mcp_json(&["status", &service]));
    let restarted = node.mcp_json(&["restart", &service, "--component", "worker"]);
    assert_eq!(actions(&restarted), vec![pair("worker", "restarted")]);
    let after = components(&node.mcp_json(&["status", &service]));
    assert_eq!(
        component(&before, "worker")["instance_id"],
        component(&after, "worker")["instance_id"]
    );
    assert!(
        component(&after, "worker")["started_at"].as_str()
            >= component(&before, "worker")["started_at"].as_str()
    );

    // logs of one component.
    let logs = wait_for(Duration::from_secs(10), || {
        let out = node.mcp(&["logs", &service, "worker"]).success().stdout;
        out.contains("worker up").then_some(out)
    });
    assert!(logs.is_some(), "worker log line not seen");
    // Human output is a table naming the service.
    let table = node.mcp(&["status"]).success().stdout;
    assert!(
        table.contains(&service) && table.contains("worker"),
        "{table}"
    );

    // remove forgets it and removes the containers.
    node.mcp(&["remove", &service]).success();
    assert!(node.instances_of(&service).is_empty());
    let list = node.mcp_json(&["list"]);
    assert!(
        !list["nodes"][0]["services"]
            .as_array()
            .expect("services")
            .iter()
            .any(|s| s["name"] == service.as_str())
    );
}

#[test]
fn ps_shows_unmanaged_and_status_flags_drift() {
    let mut node = Node::start();
    let service = unique("drift");
    let port = free_port();
    let image = node.env.image_v1.clone();
    node.write_service(&service, &two_component_def(&service, &image, port));
    node.mcp(&["deploy", &service]).success();

    // A container in the service's namespace that MCP did not create.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let podman = node.podman_client();
    let stray = format!("{service}-stray");
    rt.block_on(async {
        use mcp_runtime::Runtime;
        podman
            .create(&mcp_runtime::InstanceSpec {
                name: stray.clone(),
                image: image.clone(),
                cmd: vec!["sleep".into(), "300".into()],
                ..Default::default()
            })
            .await
            .expect("create stray");
        // And stop a managed one behind MCP's back.
        podman
            .stop(&format!("{service}-worker"), Duration::from_secs(1))
            .await
            .expect("stop worker");
    });

    let ps = node.mcp_json(&["ps"]);
    let instances = ps["nodes"][0]["instances"]
        .as_array()
        .expect("instances")
        .clone();
    let find = |n: &str| instances.iter().find(|i| i["name"] == n).cloned();
    assert_eq!(find(&stray).expect("stray in ps")["managed"], false);
    assert_eq!(
        find(&format!("{service}-web")).expect("web in ps")["managed"],
        true
    );

    // A change made behind the agent's back shows once podman's event
    // stream reports it (podman's exit clean-up sends the event a moment
    // after the stop returned).
    let status = wait_for(Duration::from_secs(10), || {
        let status = node.mcp_json(&["status", &service]);
        (component(&components(&status), "worker")["drift"] == serde_json::json!(["stopped"]))
            .then_some(status)
    })
    .expect("status shows the stopped worker");
    let comps = components(&status);
    assert_eq!(component(&comps, "web")["drift"], serde_json::json!([]));
    let unmanaged = status["nodes"][0]["unmanaged"]
        .as_array()
        .expect("unmanaged");
    assert!(
        unmanaged.iter().any(|u| u["name"] == stray.as_str()),
        "{unmanaged:?}"
    );

    // A deploy converges the stopped component.
    let fixed = node.mcp_json(&["deploy", &service]);
    assert_eq!(
        actions(&fixed),
        vec![pair("web", "unchanged"), pair("worker", "started")]
    );

    // The agent reuses its last listing only until the runtime reports a
    // change: a container stopped from outside shows up as drift promptly.
    let clean = components(&node.mcp_json(&["status", &service]));
    assert_eq!(component(&clean, "web")["drift"], serde_json::json!([]));
    let _ = node.mcp_json(&["status", &service]);
    rt.block_on(async {
        use mcp_runtime::Runtime;
        podman
            .stop(&format!("{service}-web"), Duration::from_secs(1))
            .await
            .expect("stop web");
    });
    let seen = wait_for(Duration::from_secs(5), || {
        let comps = components(&node.mcp_json(&["status", &service]));
        (component(&comps, "web")["drift"] == serde_json::json!(["stopped"])).then_some(())
    });
    assert!(
        seen.is_some(),
        "external stop not reflected in status within 5 s"
    );
}

#[test]
fn missing_image_keeps_previous_container_running() {
    let mut node = Node::start();
    let service = unique("noimg");
    let port = free_port();
    let image = node.env.image_v1.clone();
    let path = node.write_service(&service, &two_component_def(&service, &image, port));
    node.mcp(&["deploy", &service]).success();
    let before = components(&node.mcp_json(&["status", &service]));

    let missing = format!("{}/mcp-test/does-not-exist:404", node.env.registry);
    let text = std::fs::read_to_string(&path)
        .expect("read")
        .replacen(&image, &missing, 1);
    std::fs::write(&path, text).expect("write");
    let err = node.mcp(&["deploy", &service]).failure();
    assert!(
        err.contains("does-not-exist") && err.contains("web"),
        "{err}"
    );
    // Progress lines, then the error in one line of its own.
    let lines: Vec<&str> = err.lines().collect();
    let (last, progress) = lines.split_last().expect("some output");
    assert!(last.starts_with("mcp: error: "), "{err}");
    assert!(
        progress
            .iter()
            .all(|l| l.starts_with(&format!("{service}-")) && !l.contains("error")),
        "only progress before the error: {err}"
    );
    assert!(
        progress.iter().any(|l| l.contains("-web: pulling (")),
        "{err}"
    );

    let after = components(&node.mcp_json(&["status", &service]));
    let web = component(&after, "web");
    assert_eq!(web["instance_id"], component(&before, "web")["instance_id"]);
    assert_eq!(web["observed_state"], "running");
    assert_eq!(
        web["desired_image"],
        image.as_str(),
        "registry keeps the deployed definition"
    );
    assert_eq!(http_get(port).trim(), "hello from v1");
}

#[test]
fn port_taken_fails_cleanly_and_keeps_old_instance() {
    let mut node = Node::start();
    let service = unique("port");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("addr").port();

    // A new service whose port is taken: clear error, nothing left behind.
    node.write_service(
        &service,
        &two_component_def(&service, &node.env.image_v1.clone(), taken_port),
    );
    let err = node.mcp(&["deploy", &service]).failure();
    assert!(
        err.contains("address already in use") || err.contains("already"),
        "{err}"
    );
    let left: Vec<String> = node
        .instances_of(&service)
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(
        left,
        vec![format!("{service}-worker")],
        "only the worker may exist"
    );

    // An update that moves to a taken port: the old instance comes back.
    let good = free_port();
    node.write_service(
        &service,
        &two_component_def(&service, &node.env.image_v1.clone(), good),
    );
    node.mcp(&["deploy", &service]).success();
    assert_eq!(http_get(good).trim(), "hello from v1");
    let before = components(&node.mcp_json(&["status", &service]));
    node.write_service(
        &service,
        &two_component_def(&service, &node.env.image_v1.clone(), taken_port),
    );
    node.mcp(&["deploy", &service]).failure();
    let after = components(&node.mcp_json(&["status", &service]));
    assert_eq!(
        component(&after, "web")["instance_id"],
        component(&before, "web")["instance_id"]
    );
    assert_eq!(component(&after, "web")["observed_state"], "running");
    assert_eq!(http_get(good).trim(), "hello from v1");
    drop(taken);
}

/// Leftovers of interrupted deploys are resolved one by one at the agent's
/// start: one that cannot start (its port taken meanwhile) is recorded as
/// an event and tried again later, and does not keep the others down.
#[test]
fn recovery_goes_on_past_a_leftover_that_fails_and_retries_it() {
    let mut node = Node::start();
    let (a, b) = (unique("reca"), unique("recb"));
    let (pa, pb) = (free_port(), free_port());
    let one = |service: &str, port: u16| {
        format!(
            "name = \"{service}\"\n\n[[components]]\nname = \"web\"\nimage = \"{}\"\nports = [\"127.0.0.1:{port}:8080\"]\n",
            node.env.image_v1
        )
    };
    let (def_a, def_b) = (one(&a, pa), one(&b, pb));
    node.write_service(&a, &def_a);
    node.write_service(&b, &def_b);
    node.mcp(&["deploy", &a]).success();
    node.mcp(&["deploy", &b]).success();

    // Both as a replace interrupted between the old instance's removal
    // and the new one's rename: only a stopped `<name>.mcp-new` is left.
    node.stop_agent();
    for service in [&a, &b] {
        let name = format!("{service}-web");
        podman_cli(&["stop", "-t", "0", &name]);
        podman_cli(&["rename", &name, &format!("{name}.mcp-new")]);
    }
    // Meanwhile something else took b's port.
    let taken = std::net::TcpListener::bind(("127.0.0.1", pb)).expect("bind b's port");
    node.start_agent();

    // a is back although b failed first or after it.
    assert_eq!(http_get(pa), "hello from v1\n");
    let kinds = |service: &str| -> Vec<(String, String)> {
        let v = node.mcp_json(&["events", "--service", service]);
        v["nodes"][0]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap_or_default().to_string(),
                    e["detail"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let failed = wait_for(Duration::from_secs(10), || {
        kinds(&b).into_iter().find(|(k, _)| k == "recovery-failed")
    })
    .unwrap_or_else(|| {
        panic!(
            "no recovery-failed event: {:?}\n{}",
            kinds(&b),
            node.agent_log()
        )
    });
    assert!(
        failed.1.contains("address already in use") && failed.1.contains("trying again later"),
        "{failed:?}"
    );
    assert!(kinds(&a).iter().all(|(k, _)| k != "recovery-failed"));
    let names: Vec<String> = node.instances_of(&b).into_iter().map(|i| i.name).collect();
    assert_eq!(names, [format!("{b}-web")], "b's leftover took its name");

    // Once the port is free again, the next try starts b.
    drop(taken);
    let recovered = wait_for(Duration::from_secs(30), || {
        kinds(&b).into_iter().find(|(k, _)| k == "recovered")
    });
    assert!(
        recovered.is_some(),
        "b was not tried again: {:?}\n{}",
        kinds(&b),
        node.agent_log()
    );
    assert_eq!(http_get(pb), "hello from v1\n");
}

#[test]
fn bad_definitions_are_refused_before_anything_is_sent() {
    let mut node = Node::start();
    let service = unique("bad");
    let cases = [
        (
            "name = \"x\"\nbogus = 1\n[[components]]\nname = \"a\"\nimage = \"i\"\n",
            ":2:1:",
            "bogus",
        ),
        (
            "name = \"x\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nports = [\"80:abc\"]\n",
            ":5:",
            "80:abc",
        ),
        (
            "name = \"x\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n",
            ":6:",
            "duplicate",
        ),
        ("name = \"x\"\n[[components]]\nname = \"a\"\n", ":", "image"),
    ];
    for (text, pos, word) in cases {
        let path = node.write_service(&service, text);
        let err = node.mcp(&["deploy", &service]).failure();
        let file = path.display().to_string();
        assert!(err.contains(&file), "error names the file: {err}");
        assert!(err.contains(pos), "error has position {pos}: {err}");
        assert!(
            err.to_lowercase().contains(word),
            "error mentions {word}: {err}"
        );
    }
    let list = node.mcp_json(&["list"]);
    assert_eq!(
        list["nodes"][0]["services"].as_array().map(Vec::len),
        Some(0)
    );
}

#[test]
fn stop_of_a_service_never_deployed_creates_nothing() {
    let mut node = Node::start();
    let service = unique("never");
    let port = free_port();
    node.write_service(
        &service,
        &two_component_def(&service, &node.env.image_v1, port),
    );
    let out = node.mcp_json(&["stop", &service]);
    assert_eq!(
        actions(&out),
        [pair("web", "unchanged"), pair("worker", "unchanged")],
        "{out}"
    );
    assert!(
        node.instances_of(&service).is_empty(),
        "instances were created"
    );
    // The node knows the stopped service; its start makes the instances.
    let status = node.mcp_json(&["status", &service]);
    for c in components(&status) {
        assert_eq!(c["observed_state"], "missing", "{status}");
        assert_eq!(c["drift"], serde_json::json!([]), "{status}");
    }
    let plan = node.mcp_json(&["sync", "--dry-run"]);
    assert!(plan.to_string().contains("\"unchanged\""), "{plan}");
    node.mcp(&["start", &service]).success();
    assert_eq!(http_get(port), "hello from v1\n");
    assert_eq!(node.instances_of(&service).len(), 2);
}

#[test]
fn stop_and_start_of_a_service_without_a_file_go_to_the_node_alone() {
    let mut node = Node::start();
    let service = unique("nofile");
    let port = free_port();
    // Deployed from a file outside services_dir: no file for its name.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("elsewhere.toml");
    std::fs::write(&path, two_component_def(&service, &node.env.image_v1, port)).expect("write");
    node.track(&service);
    node.mcp(&["deploy", path.to_str().expect("utf-8")])
        .success();
    let before = std::fs::read(&path).expect("read");

    // `mcp stop NAME` stops the recorded service on its node (as the
    // Python client's stop does); the file elsewhere is not touched.
    let out = node.mcp_json(&["stop", &service]);
    assert_eq!(
        actions(&out),
        [pair("web", "stopped"), pair("worker", "stopped")],
        "{out}"
    );
    let status = node.mcp_json(&["status", &service]);
    for c in components(&status) {
        assert_eq!(c["desired_active"], false, "{status}");
        assert_ne!(c["observed_state"], "running", "{status}");
    }
    node.mcp(&["start", &service]).success();
    assert_eq!(http_get(port), "hello from v1\n");
    assert_eq!(std::fs::read(&path).expect("read"), before);

    // An unknown service is the node's NotFound, said once.
    let err = node.mcp(&["stop", &unique("absent")]).failure();
    assert!(err.contains("no service named"), "{err}");
}

#[test]
fn a_definition_named_unlike_its_file_is_refused() {
    let mut node = Node::start();
    let service = unique("named");
    let other = unique("other");
    let path = node.write_service(
        &service,
        &format!(
            "name = \"{other}\"\n[[components]]\nname = \"web\"\nimage = \"{}\"\n",
            node.env.image_v1
        ),
    );
    node.track(&other);
    for args in [vec!["deploy", service.as_str()], vec!["sync"]] {
        let err = node.mcp(&args).failure();
        assert!(
            err.contains(&format!(
                "{}:1:8: name \"{other}\" differs from the file name \"{service}.toml\"",
                path.display()
            )) && err.contains(&format!(
                "rename the file to {other}.toml or set name = \"{service}\""
            )),
            "{args:?}: {err}"
        );
    }
    assert!(node.instances_of(&other).is_empty());
    let list = node.mcp_json(&["list"]);
    assert_eq!(
        list["nodes"][0]["services"],
        serde_json::json!([]),
        "{list}"
    );
}

#[test]
fn agent_restart_keeps_track_of_everything() {
    let mut node = Node::start();
    let service = unique("restart");
    let port = free_port();
    node.write_service(
        &service,
        &two_component_def(&service, &node.env.image_v1.clone(), port),
    );
    node.mcp(&["deploy", &service]).success();
    let before = components(&node.mcp_json(&["status", &service]));

    node.stop_agent();
    node.start_agent();
    let after = components(&node.mcp_json(&["status", &service]));
    assert_eq!(before, after);
    let again = node.mcp_json(&["deploy", &service]);
    assert_eq!(
        actions(&again),
        vec![pair("web", "unchanged"), pair("worker", "unchanged")]
    );
}

#[test]
fn sigkill_during_deploy_then_converges() {
    let mut node = Node::start();
    let service = unique("kill");
    let image_v1 = node.env.image_v1.clone();
    let image_v2 = node.env.image_v2.clone();
    let def = |image: &str| {
        let mut s = format!("name = \"{service}\"\n");
        for i in 0..6 {
            s.push_str(&format!(
                "\n[[components]]\nname = \"c{i}\"\nimage = \"{image}\"\ncmd = [\"sleep\", \"600\"]\n"
            ));
        }
        s
    };
    node.write_service(&service, &def(&image_v1));
    node.mcp(&["deploy", &service]).success();

    // Kill the agent at several points of an update to v2 and back.
    for (round, delay_ms) in [40u64, 150, 400].into_iter().enumerate() {
        let image = if round % 2 == 0 { &image_v2 } else { &image_v1 };
        node.write_service(&service, &def(image));
        let cli = node.spawn_mcp(&["deploy", &service]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        node.kill_agent();
        let mut cli = cli;
        let _ = cli.wait();
        node.start_agent();

        // The registry is intact and answers.
        let list = node.mcp_json(&["list"]);
        assert!(
            list["nodes"][0]["services"]
                .as_array()
                .expect("services")
                .iter()
                .any(|s| s["name"] == service.as_str()),
            "round {round}: service lost from the registry"
        );
        // The next deploy converges: one instance per component, all on the image asked for.
        node.mcp(&["deploy", &service]).success();
        let mut names: Vec<String> = node
            .instances_of(&service)
            .into_iter()
            .map(|i| i.name)
            .collect();
        names.sort();
        let expected: Vec<String> = (0..6).map(|i| format!("{service}-c{i}")).collect();
        assert_eq!(
            names, expected,
            "round {round}: duplicate or orphan instances"
        );
        let comps = components(&node.mcp_json(&["status", &service]));
        assert_eq!(comps.len(), 6);
        for c in &comps {
            assert_eq!(c["observed_state"], "running", "round {round}: {c}");
            assert_eq!(c["observed_image"], image.as_str(), "round {round}: {c}");
            assert_eq!(c["drift"], serde_json::json!([]), "round {round}: {c}");
        }
    }
}

#[test]
fn podman_absent_at_start_then_recovers() {
    let mut node = Node::start_without_podman();
    let service = unique("late");
    let port = free_port();
    node.write_service(
        &service,
        &two_component_def(&service, &node.env.image_v1.clone(), port),
    );

    let info = node.mcp_json(&["node", "info"]);
    assert_eq!(info["nodes"][0]["runtime_available"], false, "{info}");
    let err = node.mcp(&["status"]).failure();
    assert!(err.contains("unavailable"), "{err}");
    let err = node.mcp(&["deploy", &service]).failure();
    assert!(
        err.contains("unavailable") && err.contains("podman.sock"),
        "{err}"
    );
    // Registry-only queries keep working.
    node.mcp(&["list"]).success();

    node.podman = Some(mcp_e2e::PodmanService::start(&node.socket.clone()));
    let info = node.mcp_json(&["node", "info"]);
    assert_eq!(info["nodes"][0]["runtime_available"], true, "{info}");
    node.mcp(&["deploy", &service]).success();
    assert_eq!(http_get(port).trim(), "hello from v1");

    // Killed mid-way: answers Unavailable, then recovers when it returns.
    if let Some(p) = node.podman.as_mut() {
        p.kill();
    }
    let err = node.mcp(&["status", &service]).failure();
    assert!(err.contains("unavailable"), "{err}");
    node.podman = Some(mcp_e2e::PodmanService::start(&node.socket.clone()));
    let comps = components(&node.mcp_json(&["status", &service]));
    assert_eq!(comps.len(), 2);
}

#[test]
fn podman_killed_while_following_logs_ends_the_stream() {
    let mut node = Node::start();
    let service = unique("logs");
    let port = free_port();
    node.write_service(
        &service,
        &two_component_def(&service, &node.env.image_v1.clone(), port),
    );
    node.mcp(&["deploy", &service]).success();
    let mut follower = node
        .mcp_command(&["logs", &service, "worker", "-f"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn logs -f");
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        follower.try_wait().expect("wait").is_none(),
        "logs -f should keep running"
    );
    if let Some(p) = node.podman.as_mut() {
        p.kill();
    }
    let ended = wait_for(Duration::from_secs(15), || {
        follower.try_wait().ok().flatten()
    });
    if ended.is_none() {
        let _ = follower.kill();
        panic!("logs -f did not end when podman went away");
    }
    node.podman = Some(mcp_e2e::PodmanService::start(&node.socket.clone()));
}

/// A client that keeps a stream open (a followed log never ends by itself)
/// does not keep the agent from stopping: SIGTERM stops it after a grace.
#[test]
fn a_followed_log_does_not_keep_the_agent_from_stopping() {
    use std::io::BufRead;
    let mut node = Node::start();
    let service = unique("grace");
    node.write_service(
        &service,
        &format!(
            "name = \"{service}\"\n[[components]]\nname = \"q\"\nimage = \"{}\"\ncmd = [\"/bin/sh\", \"-c\", \"echo up; exec sleep 3600\"]\n",
            node.env.image_v1
        ),
    );
    node.mcp(&["deploy", &service]).success();
    let mut follow = node
        .mcp_command(&["logs", &service, "q", "-f"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn mcp logs -f");
    // The follow is open once its first line arrived.
    let mut first = String::new();
    std::io::BufReader::new(follow.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read the follow");
    assert_eq!(first, "up\n");
    assert!(
        follow.try_wait().expect("try_wait").is_none(),
        "the follow ended"
    );
    // Panics when the agent does not stop within a minute.
    node.stop_agent();
    assert!(
        node.agent_log()
            .contains("stopping with RPCs still in flight"),
        "{}",
        node.agent_log()
    );
    let _ = follow.kill();
    let _ = follow.wait();
}

#[test]
fn wildcard_listen_is_refused() {
    let out = std::process::Command::new(mcp_e2e::bin_dir().join("mcp-agent"))
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .expect("run agent");
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wildcard") && err.contains("allow_wildcard"),
        "{err}"
    );
}

#[test]
fn dev_mode_writes_a_ready_cli_config() {
    let env = mcp_e2e::TestEnv::require();
    let home = tempfile::tempdir().expect("tempdir");
    let socket = home.path().join("podman.sock");
    let _podman = mcp_e2e::PodmanService::start(&socket);
    let extra = home.path().join("extra.toml");
    std::fs::write(
        &extra,
        format!(
            "[podman]\nsocket = \"{}\"\ninsecure_registries = [\"{}\"]\n",
            socket.display(),
            env.registry
        ),
    )
    .expect("write");
    let port = free_port();
    let log = home.path().join("agent.log");
    let mut agent = std::process::Command::new(mcp_e2e::bin_dir().join("mcp-agent"))
        .args(["--dev", "--config"])
        .arg(&extra)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env_remove("MCP_CONFIG")
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn agent");
    let config = home.path().join("config/mcp/mcp.toml");
    let written = wait_for(Duration::from_secs(15), || config.exists().then_some(()));
    let status = std::process::Command::new(mcp_e2e::bin_dir().join("mcp"))
        .args(["--json", "node", "info"])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env_remove("MCP_CONFIG")
        .output()
        .expect("run mcp");
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(
        written.is_some(),
        "dev mode did not write {}",
        config.display()
    );
    let text = std::fs::read_to_string(&config).expect("read config");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(
        home.path().join("data/mcp/mcp.db").exists(),
        "registry in the data dir"
    );
    let out = String::from_utf8_lossy(&status.stdout);
    assert_eq!(
        status.status.code(),
        Some(0),
        "{out} {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["nodes"][0]["node"], "local");
    assert_eq!(v["nodes"][0]["runtime_available"], true);

    // The CLI talks TLS against the development CA, with a token kept
    // beside its configuration (0600); the agent keeps only its hash.
    assert!(
        text.contains("dev-ca.pem") && text.contains("dev-token"),
        "{text}"
    );
    let token_path = home.path().join("config/mcp/dev-token");
    let token = std::fs::read_to_string(&token_path).expect("dev token");
    let token = token.trim();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_path)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let stored = std::fs::read_to_string(home.path().join("data/mcp/tokens.toml")).expect("tokens");
    assert!(
        stored.contains("name = \"dev\"") && !stored.contains(token),
        "{stored}"
    );
    let agent_log = std::fs::read_to_string(&log).expect("log");
    assert!(
        !agent_log.contains(token),
        "the token is in the agent's log"
    );
    assert!(agent_log.contains("TLS"), "{agent_log}");
}

#[test]
fn grpc_health_and_reflection_are_served() {
    let node = Node::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let channel = node.channel().await;
        // Standard services are authenticated like everything else.
        let mut anonymous = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let refused = anonymous
            .check(tonic_health::pb::HealthCheckRequest {
                service: "mcp.v1.AgentService".into(),
            })
            .await
            .expect_err("health without a token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let token: tonic::metadata::MetadataValue<_> = format!("Bearer {}", node.readonly_token)
            .parse()
            .expect("token header");
        let with_token = move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", token.clone());
            Ok(req)
        };
        let mut health = tonic_health::pb::health_client::HealthClient::with_interceptor(
            channel.clone(),
            with_token.clone(),
        );
        let res = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "mcp.v1.AgentService".into(),
            })
            .await
            .expect("health check");
        assert_eq!(
            res.into_inner().status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );

        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut refl = ServerReflectionClient::with_interceptor(channel.clone(), with_token.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = refl
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .expect("reflection")
            .into_inner();
        let msg = stream.message().await.expect("message").expect("some");
        let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
            panic!("unexpected reflection answer");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.contains(&"mcp.v1.AgentService".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"grpc.health.v1.Health".to_string()),
            "{names:?}"
        );

        // The same over v1alpha, which grpcio's reflection module and
        // older grpcurl speak.
        use tonic_reflection::pb::v1alpha as alpha;
        let mut refl = alpha::server_reflection_client::ServerReflectionClient::with_interceptor(
            channel, with_token,
        );
        let req = alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "mcp.v1.AgentService".into(),
            )),
        };
        let mut stream = refl
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .expect("v1alpha reflection")
            .into_inner();
        let msg = stream.message().await.expect("message").expect("some");
        let Some(alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
            msg.message_response
        else {
            panic!("unexpected v1alpha reflection answer: {msg:?}");
        };
        let agent_proto = files
            .file_descriptor_proto
            .iter()
            .any(|f| String::from_utf8_lossy(f).contains("DeployStream"));
        assert!(agent_proto, "no descriptor of the agent's API over v1alpha");
    });
}

#[test]
fn cli_completions_and_config_errors() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(mcp_e2e::bin_dir().join("mcp"))
            .args(["completions", shell])
            .output()
            .expect("run mcp");
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("deploy") && text.contains("status"),
            "{shell}: {text}"
        );
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.toml");
    let out = std::process::Command::new(mcp_e2e::bin_dir().join("mcp"))
        .args(["--config"])
        .arg(&missing)
        .arg("status")
        .output()
        .expect("run mcp");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&missing.display().to_string()) && err.lines().count() == 1,
        "{err}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "services_dir = \"x\"\n[[nodes]]\nname = \"a\"\nadress = \"b\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(mcp_e2e::bin_dir().join("mcp"))
        .arg("--config")
        .arg(&bad)
        .arg("list")
        .output()
        .expect("run mcp");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("bad.toml:4:1") && err.contains("adress"),
        "{err}"
    );

    // No CA and no explicit plaintext: refused before dialling, naming the file.
    let port = free_port();
    let cfg = dir.path().join("mcp.toml");
    let ps_with = |tls: &str| {
        std::fs::write(
            &cfg,
            format!("{tls}\n[[nodes]]\nname = \"ghost\"\naddress = \"127.0.0.1:{port}\"\n"),
        )
        .expect("write");
        let out = std::process::Command::new(mcp_e2e::bin_dir().join("mcp"))
            .arg("--config")
            .arg(&cfg)
            .arg("ps")
            .output()
            .expect("run mcp");
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = ps_with("");
    assert!(
        err.contains("mcp.toml") && err.contains("no CA to verify agents with"),
        "{err}"
    );
    // A CA file that is not there is named.
    let err = ps_with("[tls]\nca_cert = \"/nonexistent/ca.pem\"\n");
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    // An agent that is not there: one clear line naming node and address.
    let err = ps_with("[tls]\ninsecure = true\n");
    assert!(
        err.contains("cannot reach the agent of node ghost") && err.contains(&port.to_string()),
        "{err}"
    );
}

#[test]
fn logs_of_all_components_are_prefixed() {
    let mut node = Node::start();
    let service = unique("multi");
    let port = free_port();
    node.write_service(
        &service,
        &two_component_def(&service, &node.env.image_v1.clone(), port),
    );
    node.mcp(&["deploy", &service]).success();
    let out = wait_for(Duration::from_secs(10), || {
        let out = node
            .mcp(&["logs", &service, "--tail", "5"])
            .success()
            .stdout;
        out.contains("worker | worker up").then_some(out)
    });
    assert!(out.is_some(), "prefixed worker line not seen");
    let json = node
        .mcp(&["--json", "logs", &service, "worker"])
        .success()
        .stdout;
    let first: Value =
        serde_json::from_str(json.lines().next().expect("a line")).expect("json line");
    assert_eq!(first["component"], "worker");
    assert_eq!(first["stream"], "stdout");
}

#[test]
fn events_record_every_transition() {
    let mut node = Node::start();
    let service = unique("ev");
    let port = free_port();
    node.write_service(
        &service,
        &two_component_def(&service, &node.env.image_v1, port),
    );
    node.mcp(&["deploy", &service]).success();
    node.mcp(&["stop", &service]).success();
    node.mcp(&["start", &service]).success();
    node.mcp(&["restart", &service, "--component", "web"])
        .success();

    let v = node.mcp_json(&["events", "--service", &service]);
    let events = v["nodes"][0]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let kinds: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["component"].as_str().unwrap_or("-").to_string(),
                e["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for want in [
        ("web", "created"),
        ("worker", "created"),
        ("-", "deployed"),
        // `mcp stop`/`start` push the definition with `active` flipped.
        ("web", "stopped"),
        ("worker", "stopped"),
        ("web", "started"),
        ("web", "restarted"),
        ("-", "restarted"),
    ] {
        assert!(
            kinds.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} missing from {kinds:?}"
        );
    }
    // Oldest first, ids increasing.
    let ids: Vec<i64> = events.iter().filter_map(|e| e["id"].as_i64()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let details: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "deployed")
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert_eq!(details, ["2 created", "2 stopped", "2 started"]);

    // --since and --limit narrow it; a readonly token may read it.
    let last = events.last().expect("events");
    let since = last["time"].as_str().expect("time");
    let v = node.mcp_json(&["events", "--service", &service, "--since", since]);
    let narrowed = v["nodes"][0]["events"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert!(narrowed >= 1 && narrowed < events.len(), "{narrowed}");
    let v = node.mcp_json(&["events", "--limit", "1"]);
    assert_eq!(v["nodes"][0]["events"].as_array().map(Vec::len), Some(1));
    let ro = node
        .mcp_with_env(
            &["events", "--since", "1h"],
            &[("MCP_TOKEN", &node.readonly_token)],
        )
        .success();
    assert!(ro.stdout.contains(&service), "{}", ro.stdout);
    let err = node.mcp(&["events", "--since", "yesterday"]).failure();
    assert!(err.contains("--since \"yesterday\""), "{err}");

    // Removing is recorded too, and the history outlives the service.
    node.mcp(&["remove", &service]).success();
    let v = node.mcp_json(&["events", "--service", &service, "--limit", "3"]);
    let kinds: Vec<&str> = v["nodes"][0]["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert!(kinds.contains(&"removed"), "{kinds:?}");
}

#[test]
fn sync_plans_converges_and_prunes_only_when_asked() {
    let mut node = Node::start();
    let (a, b, c) = (unique("sa"), unique("sb"), unique("sc"));
    let one = |name: &str, image: &str, env: &str| {
        format!(
            "name = \"{name}\"\n[[components]]\nname = \"app\"\nimage = \"{image}\"\ncmd = [\"sleep\", \"3600\"]\nenv = {{ MODE = \"{env}\" }}\n"
        )
    };
    let v1 = node.env.image_v1.clone();
    let v2 = node.env.image_v2.clone();
    node.write_service(&a, &one(&a, &v1, "x"));
    node.write_service(&b, &one(&b, &v1, "x"));

    // A dry run plans two creations and changes nothing.
    let plan = node.mcp_json(&["sync", "--dry-run"]);
    let services = plan["nodes"][0]["plan"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let actions: Vec<(&str, &str)> = services
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap_or(""),
                s["action"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(actions.contains(&(a.as_str(), "create")), "{actions:?}");
    assert!(actions.contains(&(b.as_str(), "create")), "{actions:?}");
    assert_eq!(
        plan["nodes"][0]["results"].as_array().map(Vec::len),
        Some(0)
    );
    assert!(
        node.instances_of(&a).is_empty(),
        "a dry run created something"
    );

    // The real sync creates both; a second one is a no-op.
    node.mcp(&["sync"]).success();
    assert_eq!(node.instances_of(&a).len(), 1);
    assert_eq!(node.instances_of(&b).len(), 1);
    let again = node.mcp_json(&["sync", "--dry-run"]);
    for s in again["nodes"][0]["plan"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        if s["service"] == a.as_str() || s["service"] == b.as_str() {
            assert_eq!(s["action"], "unchanged", "{s}");
        }
    }

    // Change a's image and env, drop b from the set, add c.
    node.write_service(&a, &one(&a, &v2, "y"));
    std::fs::remove_file(node.services_dir().join(format!("{b}.toml"))).expect("rm");
    node.write_service(&c, &one(&c, &v1, "x"));
    let plan = node.mcp_json(&["sync", "--dry-run", "--prune"]);
    let services = plan["nodes"][0]["plan"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // Removals come first with --prune.
    assert_eq!(services[0]["service"], b.as_str(), "{services:?}");
    assert_eq!(services[0]["action"], "remove");
    let a_plan = services
        .iter()
        .find(|s| s["service"] == a.as_str())
        .expect("a");
    let comp = &a_plan["components"][0];
    assert_eq!(comp["change"], "update");
    let fields: Vec<&str> = comp["fields"]
        .as_array()
        .map(|f| f.iter().filter_map(|x| x["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["image", "env.MODE"]);
    assert_eq!(comp["fields"][0]["after"], v2.as_str());

    // Without --prune, b is kept and left running.
    let out = node.mcp(&["sync"]).success();
    assert!(out.stdout.contains("keep"), "{}", out.stdout);
    assert_eq!(node.instances_of(&b).len(), 1, "b removed without --prune");
    assert_eq!(node.instances_of(&c).len(), 1);
    let a_inst = node.instances_of(&a);
    assert_eq!(a_inst.len(), 1);
    assert_eq!(a_inst[0].image, v2);
    // With --prune, b goes.
    node.mcp(&["sync", "--prune"]).success();
    assert!(
        node.instances_of(&b).is_empty(),
        "b still there after --prune"
    );
    let list = node.mcp_json(&["list"]);
    let names: Vec<&str> = list["nodes"][0]["services"]
        .as_array()
        .map(|s| s.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        !names.contains(&b.as_str()) && names.contains(&c.as_str()),
        "{names:?}"
    );

    // A readonly token may not sync, even a dry run; a broken file stops it all.
    let err = node
        .mcp_with_env(
            &["sync", "--dry-run"],
            &[("MCP_TOKEN", &node.readonly_token)],
        )
        .failure();
    assert!(err.contains("may not call Sync"), "{err}");
    node.write_service(&unique("bad"), "name = \"x\"\nbogus = 1\n");
    let err = node.mcp(&["sync", "--dry-run"]).failure();
    assert!(err.contains(":2:1:"), "{err}");
}

#[test]
fn adopt_takes_running_containers_without_touching_them() {
    let mut node = Node::start();
    let service = unique("adopt");
    let port = free_port();
    let image = node.env.image_v1.clone();
    node.track(&service);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let podman = node.podman_client();
    // Two containers started by hand, as an operator had them before MCP.
    let ids: Vec<String> = rt.block_on(async {
        use mcp_runtime::Runtime;
        let web = podman
            .create(&mcp_runtime::InstanceSpec {
                name: format!("{service}-web"),
                image: image.clone(),
                env: [("GREETING".to_string(), "a b $(touch x) \"q\"".to_string())].into(),
                ports: vec![mcp_runtime::PortMapping {
                    host_ip: "127.0.0.1".into(),
                    host_port: port,
                    container_port: 8080,
                    protocol: "tcp".into(),
                }],
                restart: Some("unless-stopped".into()),
                ..Default::default()
            })
            .await
            .expect("create web");
        let worker = podman
            .create(&mcp_runtime::InstanceSpec {
                name: format!("{service}-worker"),
                image: image.clone(),
                cmd: vec!["sleep".into(), "3600".into()],
                memory_bytes: Some(64 << 20),
                ..Default::default()
            })
            .await
            .expect("create worker");
        for id in [&web, &worker] {
            podman.start(id).await.expect("start");
        }
        vec![web, worker]
    });
    let started = |node: &Node| -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = node
            .instances_of(&service)
            .into_iter()
            .map(|i| (i.id, i.started_at))
            .collect();
        v.sort();
        v
    };
    let before = started(&node);
    assert_eq!(before.len(), 2);
    assert!(http_get(port).contains("hello from v1"));

    // Adopt, writing the definition into the services dir.
    let file = node.services_dir().join(format!("{service}.toml"));
    let file_arg = file.display().to_string();
    let out = node.mcp_json(&["adopt", &service, "--write", &file_arg]);
    let mut adopted: Vec<&str> = out["nodes"][0]["adopted"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    adopted.sort_unstable();
    assert_eq!(adopted, ["web", "worker"]);
    // Nothing was stopped, restarted or replaced.
    assert_eq!(started(&node), before);
    let written = std::fs::read_to_string(&file).expect("definition written");
    assert!(written.contains("127.0.0.1:"), "{written}");
    assert!(written.contains("unless-stopped"), "{written}");
    assert!(written.contains("$(touch x)"), "{written}");

    // The registry knows them; no drift; the written file deploys as a no-op.
    let status = node.mcp_json(&["status", &service]);
    for c in components(&status) {
        assert_eq!(c["drift"], serde_json::json!([]), "{c}");
    }
    let deploy = node.mcp_json(&["deploy", &service]);
    for (_, action) in actions(&deploy) {
        assert_eq!(action, "unchanged", "{deploy}");
    }
    let plan = node.mcp_json(&["sync", "--dry-run"]);
    let mine = plan["nodes"][0]["plan"]
        .as_array()
        .and_then(|p| p.iter().find(|s| s["service"] == service.as_str()).cloned())
        .expect("planned");
    assert_eq!(mine["action"], "unchanged", "{mine}");
    assert_eq!(started(&node), before);

    // Adopting again is a clear no-op; --write refuses to overwrite.
    let again = node.mcp_json(&["adopt", &service]);
    assert_eq!(again["nodes"][0]["adopted"], serde_json::json!([]));
    assert_eq!(
        again["nodes"][0]["already_managed"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let err = node
        .mcp(&["adopt", &service, "--write", &file_arg])
        .failure();
    assert!(err.contains("exists"), "{err}");
    let err = node.mcp(&["adopt", &unique("nothing")]).failure();
    assert!(err.contains("no instances named"), "{err}");

    // A changed definition replaces the adopted instance with a managed one.
    std::fs::write(&file, written.replace("a b $(touch x)", "changed")).expect("edit");
    let deploy = node.mcp_json(&["deploy", &service]);
    assert!(
        actions(&deploy).contains(&pair("web", "updated")),
        "{deploy}"
    );
    let web = node
        .instances_of(&service)
        .into_iter()
        .find(|i| i.name == format!("{service}-web"))
        .expect("web");
    assert!(web.is_managed());
    assert!(!ids.contains(&web.id));
    assert!(http_get(port).contains("hello from v1"));
    let events = node.mcp_json(&["events", "--service", &service]);
    let kinds: Vec<&str> = events["nodes"][0]["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        kinds.iter().filter(|k| **k == "adopted").count(),
        2,
        "{kinds:?}"
    );

    // The adopted definition is web's first revision, so that change can
    // be rolled back.
    let history = node.mcp_json(&["history", &service, "--component", "web"]);
    let revisions: Vec<(u64, &str, &str)> = history["nodes"][0]["revisions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["revision"].as_u64().unwrap_or_default(),
                        r["outcome"].as_str().unwrap_or_default(),
                        r["detail"].as_str().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        revisions,
        [(2, "deployed", ""), (1, "deployed", "adopted")],
        "{history}"
    );
    let back = node.mcp_json(&["rollback", &service, "--component", "web"]);
    assert_eq!(actions(&back), [pair("web", "updated")], "{back}");
    assert!(http_get(port).contains("hello from v1"));
}

#[test]
fn sigkill_during_sync_of_ten_components_then_converges() {
    let mut node = Node::start();
    let services: Vec<String> = (0..5).map(|_| unique("ks")).collect();
    let image_v1 = node.env.image_v1.clone();
    let image_v2 = node.env.image_v2.clone();
    let write_all = |node: &mut Node, image: &str| {
        for s in &services {
            node.write_service(
                s,
                &format!(
                    "name = \"{s}\"\n[[components]]\nname = \"a\"\nimage = \"{image}\"\ncmd = [\"sleep\", \"600\"]\n\n[[components]]\nname = \"b\"\nimage = \"{image}\"\ncmd = [\"sleep\", \"600\"]\n"
                ),
            );
        }
    };
    write_all(&mut node, &image_v1);
    node.mcp(&["sync"]).success();

    for (round, delay_ms) in [60u64, 200, 500].into_iter().enumerate() {
        let image = if round % 2 == 0 { &image_v2 } else { &image_v1 };
        write_all(&mut node, image);
        let mut cli = node.spawn_mcp(&["sync"]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        node.kill_agent();
        let _ = cli.wait();
        // Podman finishes the requests the dead agent had in flight (a stop
        // waits out its timeout); MCP cannot cancel them. Start again once
        // the node's instances have held still for a second, so what is
        // tested is the agent's own crash safety.
        let snapshot = |node: &Node| {
            let mut v: Vec<(String, String, String)> = services
                .iter()
                .flat_map(|s| node.instances_of(s))
                .map(|i| (i.name, i.id, format!("{:?}", i.state)))
                .collect();
            v.sort();
            v
        };
        let mut last = snapshot(&node);
        let settled = wait_for(Duration::from_secs(20), || {
            std::thread::sleep(Duration::from_secs(1));
            let now = snapshot(&node);
            let same = now == last;
            last = now;
            same.then_some(())
        });
        assert!(settled.is_some(), "round {round}: podman never settled");
        node.start_agent();

        // The registry is intact: every service is still known.
        let list = node.mcp_json(&["list"]);
        let known: Vec<&str> = list["nodes"][0]["services"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["name"].as_str()).collect())
            .unwrap_or_default();
        for s in &services {
            assert!(known.contains(&s.as_str()), "round {round}: {s} lost");
        }
        // The next sync converges: one instance per component, nothing
        // staged, nothing unmanaged, all on the image asked for.
        node.mcp(&["sync"]).success();
        for s in &services {
            let mut names: Vec<String> = node.instances_of(s).into_iter().map(|i| i.name).collect();
            names.sort();
            assert_eq!(
                names,
                [format!("{s}-a"), format!("{s}-b")],
                "round {round}: duplicate or orphan instances"
            );
            let status = node.mcp_json(&["status", s]);
            assert_eq!(
                status["nodes"][0]["unmanaged"],
                serde_json::json!([]),
                "round {round}"
            );
            for c in components(&status) {
                assert_eq!(c["observed_state"], "running", "round {round}: {c}");
                assert_eq!(c["observed_image"], image.as_str(), "round {round}: {c}");
                assert_eq!(c["drift"], serde_json::json!([]), "round {round}: {c}");
            }
        }
        let plan = node.mcp_json(&["sync", "--dry-run"]);
        for p in plan["nodes"][0]["plan"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            assert_eq!(p["action"], "unchanged", "round {round}: {p}");
        }
    }
    // The watch resumed with the restarted agent: a container killed behind
    // its back is drift at once (from podman's events; the backstop sweep is
    // a minute away).
    let victim = format!("{}-a", services[0]);
    podman_cli(&["kill", &victim]);
    let drift = wait_for(Duration::from_secs(10), || {
        let v = node.mcp_json(&["events", "--service", &services[0]]);
        v["nodes"][0]["events"].as_array().and_then(|a| {
            a.iter()
                .find(|e| e["kind"] == "drift:stopped" && e["component"] == "a")
                .cloned()
        })
    });
    assert!(
        drift.is_some(),
        "no drift:stopped after the restart:\n{}",
        node.agent_log()
    );
}
