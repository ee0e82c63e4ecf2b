//! Unikernel components end to end: a real agent with the QEMU runtime
//! (TCG), the test guest's raw disk image, and containers alongside.

use std::time::Duration;

use mcp_e2e::{Node, unique, wait_for};

fn require(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run `make test`, or scripts/test-env.sh then `. .test-env/env`")
    })
}

/// Restarts the node's agent with the QEMU runtime configured (TCG).
fn enable_vms(node: &mut Node) -> std::path::PathBuf {
    let state_dir = node.dir.path().join("vms");
    node.stop_agent();
    let path = node.dir.path().join("agent.toml");
    let mut text = std::fs::read_to_string(&path).expect("agent.toml");
    text.push_str(&format!(
        "\n[unikernel]\nqemu = \"{}\"\naccel = \"tcg\"\nstate_dir = \"{}\"\n",
        require("MCP_TEST_QEMU"),
        state_dir.display()
    ));
    std::fs::write(&path, text).expect("agent.toml");
    node.start_agent();
    state_dir
}

fn component<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["nodes"][0]["components"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["component"] == name))
        .unwrap_or_else(|| panic!("no component {name}: {status}"))
}

#[test]
fn a_vm_and_a_container_are_managed_alike_across_an_agent_restart() {
    let mut node = Node::start();
    let state_dir = enable_vms(&mut node);
    let service = unique("uni");
    let disk = require("MCP_TEST_DISK");
    node.write_service(
        &service,
        &format!(
            r#"name = "{service}"

[[components]]
name = "vm"
runtime = "unikernel"
image = "{disk}"
memory = "64M"
vcpus = 1

[[components]]
name = "web"
image = "{image}"
cmd = ["sleep", "3600"]
"#,
            image = node.env.image_v1
        ),
    );
    node.mcp(&["deploy", &service]).success();

    // One status and one ps for both kinds.
    let status = node.mcp_json(&["status", &service]);
    let vm = component(&status, "vm");
    assert_eq!(vm["runtime"], "unikernel", "{status}");
    assert_eq!(vm["observed_state"], "running", "{status}");
    assert_eq!(vm["drift"], serde_json::json!([]), "{status}");
    assert_eq!(component(&status, "web")["observed_state"], "running");
    let ps = node.mcp_json(&["ps"]);
    let vm_name = format!("{service}-vm");
    let row = ps["nodes"][0]["instances"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == vm_name.as_str()))
        .unwrap_or_else(|| panic!("{vm_name} not in ps: {ps}"))
        .clone();
    assert_eq!(row["runtime"], "unikernel");
    assert_eq!(row["managed"], true);

    // Its serial console is its log.
    let logs = wait_for(Duration::from_secs(60), || {
        let out = node.mcp(&["logs", &service, "vm"]).success().stdout;
        out.contains("mcp-test-disk: up").then_some(out)
    });
    assert!(logs.is_some(), "no serial output:\n{}", node.agent_log());

    // The agent restarts; the VM runs on and is found again, not doubled.
    let pid = std::fs::read_to_string(state_dir.join(&vm_name).join("pid"))
        .expect("pidfile")
        .trim()
        .to_string();
    node.stop_agent();
    node.start_agent();
    let status = node.mcp_json(&["status", &service]);
    assert_eq!(
        component(&status, "vm")["observed_state"],
        "running",
        "{status}"
    );
    let again = std::fs::read_to_string(state_dir.join(&vm_name).join("pid")).expect("pidfile");
    assert_eq!(again.trim(), pid);
    let plan = node.mcp_json(&["deploy", &service]);
    assert!(
        plan.to_string().contains("unchanged"),
        "a redeploy replaced something: {plan}"
    );

    // QEMU dies behind the agent's back: drift, from the VM runtime's events.
    let status = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let drift = wait_for(Duration::from_secs(15), || {
        let v = node.mcp_json(&["events", "--service", &service]);
        v["nodes"][0]["events"].as_array().and_then(|a| {
            a.iter()
                .find(|e| e["component"] == "vm" && e["kind"] == "drift:stopped")
                .cloned()
        })
    });
    assert!(
        drift.is_some(),
        "no drift for the dead VM:\n{}",
        node.agent_log()
    );

    // Removal leaves no VM state behind.
    node.mcp(&["remove", &service]).success();
    assert!(!state_dir.join(&vm_name).exists());
}
