//! The drift monitor end to end: a real agent with `[monitor]` settings,
//! containers changed behind its back through the node's podman, alert
//! programs run for real.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_e2e::{Node, podman_cli, unique, wait_for};
use mcp_runtime::Runtime;
use serde_json::Value;

fn def(service: &str, image: &str) -> String {
    format!(
        r#"name = "{service}"
active = true

[[components]]
name = "app"
image = "{image}"
cmd = ["/bin/sh", "-c", "while true; do sleep 1; done"]
restart = "no"
"#
    )
}

/// Restarts the node's agent with `[monitor]` keys added to its configuration.
fn configure_monitor(node: &mut Node, keys: &str) {
    node.reconfigure(|text| text.push_str(&format!("\n[monitor]\n{keys}\n")));
}

/// An alert program that appends its arguments and some of its environment
/// to `alerts.txt` beside it, one line per run.
fn recorder(dir: &Path) -> (PathBuf, PathBuf) {
    let script = dir.join("alert.sh");
    let out = dir.join("alerts.txt");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s|%s|%s|%s|%s|%s\\n' \"$1\" \"$2\" \"$3\" \"$MCP_NODE\" \"$MCP_EVENT\" \"$MCP_DETAIL\" >> '{}'\n",
            out.display()
        ),
    )
    .expect("write alert script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (script, out)
}

fn alert_lines(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `(component, kind, detail)` of the service's events, oldest first.
fn events(node: &Node, service: &str) -> Vec<(String, String, String)> {
    let v = node.mcp_json(&["events", "--service", service]);
    v["nodes"][0]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e: &Value| {
            (
                e["component"].as_str().unwrap_or("-").to_string(),
                e["kind"].as_str().unwrap_or_default().to_string(),
                e["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn count(events: &[(String, String, String)], kind: &str) -> usize {
    events.iter().filter(|e| e.1 == kind).count()
}

/// Runs one podman API call on the node's own podman service.
fn podman<T>(node: &Node, f: impl AsyncFnOnce(&mcp_runtime::podman::Podman) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = node.podman_client();
    rt.block_on(f(&client))
}

#[test]
fn drift_is_alerted_once_survives_a_restart_and_clears() {
    let mut node = Node::start();
    let (script, out) = recorder(node.dir.path());
    configure_monitor(
        &mut node,
        &format!(
            "interval = 1\nalert_command = [\"{}\", \"{{service}}\", \"{{component}}\", \"{{event}}\"]",
            script.display()
        ),
    );
    let service = unique("mon");
    node.write_service(&service, &def(&service, &node.env.image_v1));
    node.mcp(&["deploy", &service]).success();

    // The agent's own changes are not drift: a replacement (the old
    // container stopped, then removed), a stop that takes the whole stop
    // timeout (the shell ignores SIGTERM), a start.
    node.write_service(&service, &def(&service, &node.env.image_v2));
    node.mcp(&["deploy", &service]).success();
    node.mcp(&["stop", &service]).success();
    node.mcp(&["start", &service]).success();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(alert_lines(&out), Vec::<String>::new());
    let ev = events(&node, &service);
    assert!(
        !ev.iter()
            .any(|e| e.1.starts_with("drift") || e.1.starts_with("alert")),
        "{ev:?}"
    );

    // The container disappears behind the agent's back.
    let name = format!("{service}-app");
    podman(&node, async |p| p.remove(&name, true).await).expect("remove the container");
    let lines = wait_for(Duration::from_secs(10), || {
        let l = alert_lines(&out);
        (!l.is_empty()).then_some(l)
    })
    .unwrap_or_else(|| panic!("no alert; agent log:\n{}", node.agent_log()));
    let first = format!(
        "{service}|app|drift:missing|{}|drift:missing|no instance named {name}",
        node.name
    );
    assert_eq!(lines, std::slice::from_ref(&first));
    let ev = wait_for(Duration::from_secs(5), || {
        let ev = events(&node, &service);
        (count(&ev, "alert-sent") == 1).then_some(ev)
    })
    .unwrap_or_else(|| panic!("no alert-sent event: {:?}", events(&node, &service)));
    assert!(
        ev.contains(&(
            "app".into(),
            "drift:missing".into(),
            format!("no instance named {name}")
        )),
        "{ev:?}"
    );
    assert!(
        ev.contains(&(
            "app".into(),
            "alert-sent".into(),
            "drift:missing: exit status 0".into()
        )),
        "{ev:?}"
    );
    let status = node.mcp_json(&["status", &service]);
    assert_eq!(
        status["nodes"][0]["components"][0]["drift"],
        serde_json::json!(["missing"])
    );
    let ps = node.mcp_json(&["ps"]);
    let missing = ps["nodes"][0]["missing"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        missing
            .iter()
            .any(|m| m["instance_name"] == name.as_str() && m["component"] == "app"),
        "{ps}"
    );

    // Sweeps every second, and a restarted agent, do not repeat it.
    std::thread::sleep(Duration::from_secs(3));
    node.stop_agent();
    node.start_agent();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(alert_lines(&out), std::slice::from_ref(&first));
    let ev = events(&node, &service);
    assert_eq!(count(&ev, "drift:missing"), 1, "{ev:?}");
    assert_eq!(count(&ev, "alert-sent"), 1, "{ev:?}");
    assert!(
        node.agent_log()
            .contains("drift already recorded for some components"),
        "{}",
        node.agent_log()
    );

    // A deploy brings it back: cleared, and one more alert.
    node.mcp(&["deploy", &service]).success();
    let lines = wait_for(Duration::from_secs(10), || {
        let l = alert_lines(&out);
        (l.len() >= 2).then_some(l)
    })
    .unwrap_or_else(|| panic!("no second alert; agent log:\n{}", node.agent_log()));
    assert_eq!(
        lines,
        [
            first.clone(),
            format!(
                "{service}|app|drift-cleared|{}|drift-cleared|missing",
                node.name
            )
        ]
    );
    let ev = wait_for(Duration::from_secs(5), || {
        let ev = events(&node, &service);
        (count(&ev, "alert-sent") == 2).then_some(ev)
    })
    .unwrap_or_else(|| panic!("no second alert-sent: {:?}", events(&node, &service)));
    assert!(
        ev.contains(&("app".into(), "drift-cleared".into(), "missing".into())),
        "{ev:?}"
    );
    // The history reads in order: drift, its alert, the fix, the clearing.
    let kinds: Vec<&str> = ev.iter().map(|e| e.1.as_str()).collect();
    let at = |k: &str| kinds.iter().position(|x| *x == k).expect(k);
    assert!(at("drift:missing") < at("alert-sent"), "{kinds:?}");
    assert!(at("drift:missing") < at("drift-cleared"), "{kinds:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(alert_lines(&out).len(), 2);
    assert_eq!(count(&events(&node, &service), "drift-cleared"), 1);
}

#[test]
fn a_failing_alert_program_is_recorded_and_rate_limited() {
    let mut node = Node::start();
    let missing = node.dir.path().join("no-such-alert-program");
    configure_monitor(
        &mut node,
        &format!(
            "interval = 1\nalert_command = [\"{}\", \"{{event}}\"]\nalert_burst = 1\nalert_cooldown = 3600\nalert_timeout = 2",
            missing.display()
        ),
    );
    let service = unique("monfail");
    node.write_service(&service, &def(&service, &node.env.image_v1));
    node.mcp(&["deploy", &service]).success();

    let name = format!("{service}-app");
    podman(&node, async |p| p.stop(&name, Duration::ZERO).await).expect("stop the container");
    let ev = wait_for(Duration::from_secs(10), || {
        let ev = events(&node, &service);
        (count(&ev, "alert-failed") == 1).then_some(ev)
    })
    .unwrap_or_else(|| {
        panic!(
            "no alert-failed: {:?}\nagent log:\n{}",
            events(&node, &service),
            node.agent_log()
        )
    });
    assert!(
        ev.iter()
            .any(|e| e.0 == "app" && e.1 == "drift:stopped" && e.2.starts_with("exited")),
        "{ev:?}"
    );
    assert!(
        ev.contains(&(
            "app".into(),
            "alert-failed".into(),
            format!("drift:stopped: not found: {}", missing.display())
        )),
        "{ev:?}"
    );
    assert!(node.agent_log().contains("alert failed"));

    // The agent carries on.
    let status = node.mcp_json(&["status", &service]);
    assert_eq!(
        status["nodes"][0]["components"][0]["drift"],
        serde_json::json!(["stopped"])
    );

    // Fixed: the clearing is recorded, but its alert is over the limit of
    // one per hour: suppressed, and recorded as such once.
    node.mcp(&["deploy", &service]).success();
    let ev = wait_for(Duration::from_secs(10), || {
        let ev = events(&node, &service);
        (count(&ev, "alert-suppressed") == 1).then_some(ev)
    })
    .unwrap_or_else(|| panic!("no alert-suppressed: {:?}", events(&node, &service)));
    assert_eq!(count(&ev, "drift-cleared"), 1, "{ev:?}");
    assert_eq!(count(&ev, "alert-failed"), 1, "{ev:?}");
    assert!(node.agent_log().contains("alert suppressed"));
}

/// Waits for an alert line that starts with `prefix`, among those after
/// the first `after`.
fn wait_alert(node: &Node, out: &Path, after: usize, prefix: &str) -> String {
    wait_for(Duration::from_secs(10), || {
        alert_lines(out)
            .into_iter()
            .skip(after)
            .find(|l| l.starts_with(prefix))
    })
    .unwrap_or_else(|| {
        panic!(
            "no alert {prefix:?}; alerts: {:?}\nagent log:\n{}",
            alert_lines(out),
            node.agent_log()
        )
    })
}

/// The `drift` of instance `name` in `mcp ps --json`.
fn ps_drift(node: &Node, name: &str) -> Value {
    let ps = node.mcp_json(&["ps"]);
    ps["nodes"][0]["instances"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == name))
        .map(|i| i["drift"].clone())
        .unwrap_or_else(|| panic!("{name} not in ps: {ps}"))
}

#[test]
fn every_drift_kind_comes_from_podman_events_and_survives_a_podman_restart() {
    let mut node = Node::start();
    let (script, out) = recorder(node.dir.path());
    // No sweep within the test: everything below is found from podman's
    // event stream alone.
    configure_monitor(
        &mut node,
        &format!(
            "interval = 3600\nalert_burst = 100\nalert_command = [\"{}\", \"{{service}}\", \"{{component}}\", \"{{event}}\"]",
            script.display()
        ),
    );
    let service = unique("kinds");
    let text = format!(
        r#"{}
[[components]]
name = "crash"
image = "{image}"
cmd = ["/bin/sh", "-c", "while [ ! -f /tmp/crash ]; do sleep 0.1; done; sleep 1; busybox rm /tmp/crash; exit 3"]
restart = "always"
"#,
        def(&service, &node.env.image_v1),
        image = node.env.image_v1
    );
    node.write_service(&service, &text);
    node.mcp(&["deploy", &service]).success();
    let app = format!("{service}-app");
    let crash = format!("{service}-crash");

    // A crash that podman's restart policy repairs at once is not drift.
    // (The container exits a second after the file appears, so that the
    // `podman exec` creating it has collected its own exit code by then.)
    podman_cli(&["exec", &crash, "busybox", "touch", "/tmp/crash"]);
    wait_for(Duration::from_secs(10), || {
        (podman_cli(&["inspect", "-f", "{{.RestartCount}}", &crash]) != "0").then_some(())
    })
    .expect("podman did not restart the crashed container");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        podman_cli(&["inspect", "-f", "{{.State.Status}}", &crash]),
        "running"
    );
    assert_eq!(alert_lines(&out), Vec::<String>::new());
    assert_eq!(ps_drift(&node, &crash), serde_json::json!([]));

    // Wrong image: the container replaced from outside by another image,
    // keeping MCP's labels (without them it is not the component's
    // instance at all: see `a_hand_made_container_in_a_components_place`).
    podman_cli(&["rm", "-f", "-t", "0", &app]);
    podman_cli(&[
        "run",
        "-d",
        "--name",
        &app,
        "--label",
        "mcp.managed=true",
        "--label",
        &format!("mcp.service={service}"),
        "--label",
        "mcp.component=app",
        &node.env.image_v2,
        "sleep",
        "3600",
    ]);
    let line = wait_alert(&node, &out, 0, &format!("{service}|app|drift:wrong-image|"));
    assert!(
        line.ends_with(&format!(
            "|running, image {} (definition: {})",
            node.env.image_v2, node.env.image_v1
        )),
        "{line}"
    );
    assert_eq!(ps_drift(&node, &app), serde_json::json!(["wrong-image"]));
    let status = node.mcp_json(&["status", &service]);
    let comps = status["nodes"][0]["components"]
        .as_array()
        .expect("components");
    let app_status = comps.iter().find(|c| c["component"] == "app").expect("app");
    assert_eq!(app_status["drift"], serde_json::json!(["wrong-image"]));

    // Unmanaged: a container in the service's namespace MCP never made.
    let extra = format!("{service}-extra");
    podman_cli(&[
        "run",
        "-d",
        "--name",
        &extra,
        &node.env.image_v1,
        "sleep",
        "3600",
    ]);
    wait_alert(&node, &out, 0, &format!("{service}|extra|drift:unmanaged|"));
    assert_eq!(ps_drift(&node, &extra), serde_json::json!(["unmanaged"]));
    podman_cli(&["rm", "-f", "-t", "0", &extra]);
    wait_alert(&node, &out, 0, &format!("{service}|extra|drift-cleared|"));

    // Back to the definition, then stopped on purpose: no drift.
    podman_cli(&["rm", "-f", "-t", "0", &app]);
    node.mcp(&["deploy", &service]).success();
    wait_alert(&node, &out, 0, &format!("{service}|app|drift-cleared|"));
    node.mcp(&["stop", &service]).success();

    // Unexpected: started from outside although `active = false`.
    podman_cli(&["start", &app]);
    wait_alert(&node, &out, 0, &format!("{service}|app|drift:unexpected|"));
    assert_eq!(ps_drift(&node, &app), serde_json::json!(["unexpected"]));

    // podman's service restarts: nothing is drift while it is away, and the
    // monitor follows its events again once it is back.
    let before = alert_lines(&out).len();
    node.podman.as_mut().expect("podman service").kill();
    node.podman = Some(mcp_e2e::PodmanService::start(&node.socket));
    wait_for(Duration::from_secs(15), || {
        node.agent_log()
            .contains("following runtime events again")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the event stream did not come back:\n{}", node.agent_log()));
    podman_cli(&["stop", "-t", "0", &app]);
    let line = wait_alert(
        &node,
        &out,
        before,
        &format!("{service}|app|drift-cleared|"),
    );
    assert!(line.ends_with("|unexpected"), "{line}");
    let alerts = alert_lines(&out);
    assert_eq!(alerts.len(), before + 1, "{alerts:?}");

    // Every transition is in the history, once.
    let ev = events(&node, &service);
    for kind in ["drift:wrong-image", "drift:unmanaged", "drift:unexpected"] {
        assert_eq!(count(&ev, kind), 1, "{kind}: {ev:?}");
    }
    assert_eq!(count(&ev, "drift:stopped"), 0, "{ev:?}");
}

#[test]
fn a_flapping_container_costs_at_most_burst_alerts() {
    let mut node = Node::start();
    let (script, out) = recorder(node.dir.path());
    configure_monitor(
        &mut node,
        &format!(
            "interval = 3600\nalert_burst = 2\nalert_cooldown = 3600\nalert_command = [\"{}\", \"{{service}}\", \"{{component}}\", \"{{event}}\"]",
            script.display()
        ),
    );
    let service = unique("flap");
    node.write_service(&service, &def(&service, &node.env.image_v1));
    node.mcp(&["deploy", &service]).success();
    let app = format!("{service}-app");
    for round in 0..3 {
        podman_cli(&["kill", &app]);
        wait_for(Duration::from_secs(10), || {
            (count(&events(&node, &service), "drift:stopped") == round + 1).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "round {round}: no drift:stopped: {:?}",
                events(&node, &service)
            )
        });
        podman_cli(&["start", &app]);
        wait_for(Duration::from_secs(10), || {
            (count(&events(&node, &service), "drift-cleared") == round + 1).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "round {round}: no drift-cleared: {:?}",
                events(&node, &service)
            )
        });
    }
    // Six transitions, all recorded; two alerts; the suppression recorded
    // once for the window.
    std::thread::sleep(Duration::from_secs(1));
    let ev = events(&node, &service);
    assert_eq!(count(&ev, "alert-sent"), 2, "{ev:?}");
    assert_eq!(count(&ev, "alert-suppressed"), 1, "{ev:?}");
    let suppressed = ev
        .iter()
        .find(|e| e.1 == "alert-suppressed")
        .expect("suppressed");
    assert!(
        suppressed.2.starts_with(
            "drift:stopped: not alerted: the limit of 2 alerts per 3600s for this component is reached"
        ),
        "{suppressed:?}"
    );
    let lines = alert_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!(
            "{service}|app|drift:stopped|{}|drift:stopped|exited",
            node.name
        )),
        "{lines:?}"
    );
    assert_eq!(
        lines[1],
        format!(
            "{service}|app|drift-cleared|{}|drift-cleared|stopped",
            node.name
        )
    );
    assert!(node.agent_log().contains("alert suppressed"));
}

/// Health is checked after the deploy too: a web component whose page goes
/// away while it runs becomes drift `unhealthy` (recorded, alerted, shown
/// in status) after `retries` failed checks, and is cleared when the page
/// comes back.
#[test]
fn a_component_that_turns_unhealthy_after_its_deploy_is_drift_until_it_recovers() {
    let mut node = Node::start();
    let (script, out) = recorder(node.dir.path());
    configure_monitor(
        &mut node,
        &format!(
            "alert_command = [\"{}\", \"{{service}}\", \"{{component}}\", \"{{event}}\"]",
            script.display()
        ),
    );
    let service = unique("sick");
    let port = mcp_e2e::free_port();
    node.write_service(
        &service,
        &format!(
            r#"name = "{service}"

[[components]]
name = "web"
image = "{image}"
ports = ["127.0.0.1:{port}:8080"]

[components.health]
kind = "http"
port = 8080
path = "/index.html"
interval = "300ms"
timeout = "300ms"
retries = 3

[[components]]
name = "worker"
image = "{image}"

[components.health]
kind = "command"
command = ["/bin/busybox", "test", "-f", "/www/index.html"]
interval = "500ms"
retries = 2
"#,
            image = node.env.image_v1
        ),
    );
    node.mcp(&["deploy", &service]).success();
    let of = |node: &Node, component: &str| {
        let s = node.mcp_json(&["status", &service]);
        s["nodes"][0]["components"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["component"] == component).cloned())
            .unwrap_or_else(|| panic!("no {component}: {s}"))
    };
    let web = |node: &Node| of(node, "web");
    let c = web(&node);
    assert_eq!(c["health"], "healthy", "{c}");
    assert_eq!(c["drift"], serde_json::json!([]), "{c}");
    assert_eq!(of(&node, "worker")["health"], "healthy");
    let table = node.mcp(&["status", &service]).success().stdout;
    assert!(
        table.contains("HEALTH") && table.contains("healthy"),
        "{table}"
    );

    // The page goes away: 404 from then on.
    let name = format!("{service}-web");
    let exec_in = |instance: &str, args: &[&str]| {
        podman_cli(&[&["exec", instance], args].concat());
    };
    let exec = |args: &[&str]| exec_in(&name, args);
    exec(&["mv", "/www/index.html", "/www/gone.html"]);
    let line = wait_for(Duration::from_secs(15), || {
        alert_lines(&out)
            .into_iter()
            .find(|l| l.starts_with(&format!("{service}|web|drift:unhealthy|")))
    });
    assert!(
        line.is_some(),
        "no unhealthy alert: {:?}\n{}",
        alert_lines(&out),
        node.agent_log()
    );
    let c = web(&node);
    assert_eq!(c["health"], "unhealthy", "{c}");
    assert_eq!(c["drift"], serde_json::json!(["unhealthy"]), "{c}");
    assert!(
        c["health_detail"]
            .as_str()
            .is_some_and(|d| d.contains("failed checks in a row; last: HTTP 404")),
        "{c}"
    );
    let ev = events(&node, &service);
    let drift = ev
        .iter()
        .find(|e| e.0 == "web" && e.1 == "drift:unhealthy")
        .unwrap_or_else(|| panic!("{ev:?}"));
    assert!(drift.2.contains("HTTP 404"), "{drift:?}");
    assert_eq!(ps_drift(&node, &name), serde_json::json!(["unhealthy"]));

    // The command check, run through the runtime, the same way.
    let worker = format!("{service}-worker");
    exec_in(&worker, &["rm", "/www/index.html"]);
    let sick = wait_for(Duration::from_secs(15), || {
        let c = of(&node, "worker");
        (c["drift"] == serde_json::json!(["unhealthy"])).then_some(c)
    });
    assert!(sick.is_some(), "{}", of(&node, "worker"));
    // Recorded once it has lasted the monitor's settle time (a shorter
    // spell is a flap, never recorded): only then is it made well again.
    let recorded = wait_for(Duration::from_secs(15), || {
        events(&node, &service)
            .iter()
            .any(|e| e.0 == "worker" && e.1 == "drift:unhealthy")
            .then_some(())
    });
    assert!(recorded.is_some(), "{:?}", events(&node, &service));
    exec_in(&worker, &["touch", "/www/index.html"]);
    let well = wait_for(Duration::from_secs(15), || {
        let c = of(&node, "worker");
        (c["health"] == "healthy" && c["drift"] == serde_json::json!([])).then_some(c)
    });
    assert!(well.is_some(), "{}", of(&node, "worker"));

    // Back: cleared, and alerted as such.
    exec(&["mv", "/www/gone.html", "/www/index.html"]);
    let cleared = wait_for(Duration::from_secs(15), || {
        alert_lines(&out)
            .into_iter()
            .find(|l| l.starts_with(&format!("{service}|web|drift-cleared|")))
    });
    assert!(cleared.is_some(), "not cleared: {:?}", alert_lines(&out));
    let c = web(&node);
    assert_eq!(c["health"], "healthy", "{c}");
    assert_eq!(c["drift"], serde_json::json!([]), "{c}");
    let ev = events(&node, &service);
    let unhealthy: Vec<&str> = ev
        .iter()
        .filter(|e| e.1 == "drift:unhealthy")
        .map(|e| e.0.as_str())
        .collect();
    assert_eq!(unhealthy, ["web", "worker"], "{ev:?}");
}
