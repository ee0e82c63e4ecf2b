//! The drift monitor end to end: a real agent with `[monitor]` settings,
//! containers changed behind its back through the node's podman, alert
//! programs run for real.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_e2e::{Node, unique, wait_for};
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
    node.stop_agent();
    let path = node.dir.path().join("agent.toml");
    let mut text = std::fs::read_to_string(&path).expect("agent.toml");
    text.push_str(&format!("\n[monitor]\n{keys}\n"));
    std::fs::write(&path, text).expect("write agent.toml");
    node.start_agent();
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
