//! One service never touches another's instances, whatever their names.
//!
//! Service and component names may both contain `-`, so `<base>` with
//! component `web-db` and `<base>-web` with component `db` share the
//! instance name `<base>-web-db`. Each test runs both services on one
//! node and checks that deploys, adopt, status, ps, stop and remove go by
//! the labels MCP set (and the ids it recorded), never by a name prefix.

use std::time::Duration;

use mcp_e2e::{Node, free_port, http_get, podman_cli, unique, wait_for};
use serde_json::Value;

/// A one-component web service serving on `port`.
fn web(service: &str, component: &str, image: &str, port: u16) -> String {
    format!(
        "name = \"{service}\"\n\n[[components]]\nname = \"{component}\"\nimage = \"{image}\"\nports = [\"127.0.0.1:{port}:8080\"]\n"
    )
}

/// Id and start time of the instance named `name`.
fn instance(node: &Node, name: &str) -> Option<(String, i64)> {
    node.instances_of(name.split('-').next().unwrap_or(name))
        .into_iter()
        .find(|i| i.name == name)
        .map(|i| (i.id, i.started_at))
}

fn status(node: &Node, service: &str) -> Value {
    node.mcp_json(&["status", service])["nodes"][0].clone()
}

fn listed(node: &Node) -> Vec<String> {
    node.mcp_json(&["list"])["nodes"][0]["services"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_deploy_never_replaces_another_services_instance_of_the_same_name() {
    let mut node = Node::start();
    let base = unique("ux");
    let other = format!("{base}-web");
    let (p1, p2) = (free_port(), free_port());
    let (v1, v2) = (node.env.image_v1.clone(), node.env.image_v2.clone());
    node.write_service(&other, &web(&other, "db", &v1, p1));
    node.mcp(&["deploy", &other]).success();
    let shared = format!("{other}-db");
    let before = instance(&node, &shared).expect("the other service's instance");
    assert_eq!(http_get(p1), "hello from v1\n");

    // `<base>` with component `web-db`: the same instance name. Refused
    // before anything changes, naming the other service.
    let path = node.write_service(&base, &web(&base, "web-db", &v2, p2));
    let err = node.mcp(&["deploy", &base]).failure();
    assert!(
        err.contains(&format!("{base}/web-db"))
            && err.contains(&format!("service \"{other}\""))
            && err.contains("rename"),
        "{err}"
    );
    assert_eq!(instance(&node, &shared), Some(before.clone()));
    assert_eq!(http_get(p1), "hello from v1\n");
    assert!(
        !listed(&node).contains(&base),
        "the refused service was recorded"
    );
    let theirs = status(&node, &other);
    assert_eq!(
        theirs["components"][0]["drift"],
        serde_json::json!([]),
        "{theirs}"
    );
    assert_eq!(theirs["unmanaged"], serde_json::json!([]), "{theirs}");

    // Both in the services dir: `mcp sync` refuses the set at the file.
    let err = node.mcp(&["sync"]).failure();
    assert!(
        err.contains(&format!("{}:4:8:", path.display()))
            && err.contains(&format!("would both be the instance {shared}")),
        "{err}"
    );
    assert_eq!(instance(&node, &shared), Some(before.clone()));
    std::fs::remove_file(&path).expect("remove the definition");

    // Nor may `<base>` publish the host port the other service publishes:
    // one of the two could never start.
    node.write_service(&base, &web(&base, "api", &v2, p1));
    let err = node.mcp(&["deploy", &base]).failure();
    assert!(
        err.contains(&format!(
            "{base}/api: host port 127.0.0.1:{p1}/tcp is already published by component \"db\" of service \"{other}\""
        )),
        "{err}"
    );
    assert!(!listed(&node).contains(&base));
    assert!(node.instances_of(&base).iter().all(|i| i.name == shared));

    // `<base>` with another component runs beside it; neither service's
    // status nor ps lists the other's instance as its own or unmanaged.
    node.write_service(&base, &web(&base, "api", &v2, p2));
    node.mcp(&["deploy", &base]).success();
    let ours = status(&node, &base);
    assert_eq!(
        ours["components"].as_array().map(Vec::len),
        Some(1),
        "{ours}"
    );
    assert_eq!(ours["unmanaged"], serde_json::json!([]), "{ours}");
    let ps = node.mcp_json(&["ps"]);
    let row = ps["nodes"][0]["instances"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == shared.as_str()))
        .cloned()
        .expect("the shared name in ps");
    assert_eq!(row["service"], other.as_str(), "{row}");
    assert_eq!(row["drift"], serde_json::json!([]), "{row}");

    // A stop and a remove of `<base>` leave the other service's instance
    // alone.
    let path = node.services_dir().join(format!("{base}.toml"));
    node.mcp(&["stop", &path.display().to_string()]).success();
    node.mcp(&["remove", &base]).success();
    assert_eq!(instance(&node, &shared), Some(before));
    assert_eq!(http_get(p1), "hello from v1\n");
    let theirs = status(&node, &other);
    assert_eq!(
        theirs["components"][0]["drift"],
        serde_json::json!([]),
        "{theirs}"
    );
}

#[test]
fn adopt_never_takes_an_instance_another_service_holds() {
    let mut node = Node::start();
    let base = unique("ux");
    let hand = format!("{base}-hand");
    node.track(&base);
    node.track(&hand);
    let image = node.env.image_v1.clone();
    let run = |name: &str| {
        podman_cli(&["run", "-d", "--name", name, &image, "sleep", "3600"]);
    };
    // `<base>-hand-app`, made by hand, then adopted by `<base>-hand`.
    let app = format!("{hand}-app");
    run(&app);
    node.mcp(&["adopt", &hand]).success();
    let adopted = instance(&node, &app).expect("adopted instance");

    // `mcp adopt <base>` finds nothing of its own: the instance is
    // `<base>-hand`'s (recorded by id), never `<base>`'s component `hand-app`.
    let err = node.mcp(&["adopt", &base]).failure();
    assert!(
        err.contains(&format!("no instances named {base}-*")),
        "{err}"
    );
    assert!(!listed(&node).contains(&base));

    // With a container of its own, `<base>` adopts that one alone, and its
    // removal leaves `<base>-hand-app` running.
    let own = format!("{base}-own");
    run(&own);
    let res = node.mcp_json(&["adopt", &base]);
    assert_eq!(
        res["nodes"][0]["adopted"],
        serde_json::json!(["own"]),
        "{res}"
    );
    // An unmanaged container in `<base>`'s namespace is reported as
    // `<base>`'s, but `<base>-hand-app` never is.
    let extra = format!("{base}-extra");
    run(&extra);
    let names = |s: &Value| -> Vec<String> {
        s["unmanaged"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|i| i["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    // Once podman's event about it reached the agent.
    let ours = wait_for(Duration::from_secs(10), || {
        let s = status(&node, &base);
        (!names(&s).is_empty()).then_some(s)
    })
    .unwrap_or_else(|| panic!("{}", status(&node, &base)));
    assert_eq!(names(&ours), std::slice::from_ref(&extra), "{ours}");
    assert_eq!(ours["unmanaged"][0]["service"], base.as_str(), "{ours}");
    let theirs = status(&node, &hand);
    assert_eq!(
        theirs["components"][0]["drift"],
        serde_json::json!([]),
        "{theirs}"
    );
    assert_eq!(theirs["unmanaged"], serde_json::json!([]), "{theirs}");

    node.mcp(&["remove", &base]).success();
    assert_eq!(instance(&node, &app), Some(adopted));
    assert!(
        instance(&node, &own).is_none(),
        "its own adopted instance is removed"
    );
    // The hand-made `<base>-extra` was never MCP's: it stays.
    assert!(instance(&node, &extra).is_some());
}

#[test]
fn a_hand_made_container_in_a_components_place_is_not_its_instance() {
    let mut node = Node::start();
    let service = unique("hand");
    let port = free_port();
    let image = node.env.image_v1.clone();
    node.write_service(&service, &web(&service, "web", &image, port));
    node.mcp(&["deploy", &service]).success();
    let name = format!("{service}-web");
    podman_cli(&["rm", "-f", "-t", "0", &name]);
    podman_cli(&["run", "-d", "--name", &name, &image, "sleep", "3600"]);
    let hand = instance(&node, &name).expect("hand-made");

    // The component's instance is missing; the hand-made one is unmanaged
    // (once podman's events told the agent of both the removal and the new
    // container).
    let s = wait_for(Duration::from_secs(10), || {
        let s = status(&node, &service);
        (s["components"][0]["drift"] == serde_json::json!(["missing"])
            && s["unmanaged"][0]["name"] == name.as_str())
        .then_some(s)
    })
    .unwrap_or_else(|| panic!("{}", status(&node, &service)));
    assert_eq!(s["unmanaged"].as_array().map(Vec::len), Some(1), "{s}");
    assert_eq!(s["unmanaged"][0]["component"], "web", "{s}");
    // A deploy refuses to replace it, changing nothing.
    let err = node.mcp(&["deploy", &service]).failure();
    assert!(
        err.contains("does not manage: adopt it or remove it first"),
        "{err}"
    );
    assert_eq!(instance(&node, &name), Some(hand));
}
