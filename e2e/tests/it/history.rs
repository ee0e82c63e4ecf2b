//! End-to-end tests of deploy history and rollback: real `mcp` and
//! `mcp-agent` binaries, real podman, pages served by the deployed images.

use mcp_e2e::{Node, free_port, http_get, unique};
use serde_json::Value;

fn web_def(service: &str, image: &str, port: u16) -> String {
    format!(
        "name = \"{service}\"\n\n[[components]]\nname = \"web\"\nimage = \"{image}\"\nports = [\"127.0.0.1:{port}:8080\"]\n"
    )
}

fn two_def(service: &str, web_image: &str, worker_image: &str, port: u16) -> String {
    format!(
        "{}\n[[components]]\nname = \"worker\"\nimage = \"{worker_image}\"\ncmd = [\"/bin/sh\", \"-c\", \"while true; do sleep 1; done\"]\n",
        web_def(service, web_image, port)
    )
}

/// `(revision, component, image, outcome, detail)` of `mcp history`, newest first.
fn history(node: &Node, args: &[&str]) -> Vec<(u64, String, String, String, String)> {
    let mut all = vec!["history"];
    all.extend_from_slice(args);
    let v = node.mcp_json(&all);
    v["nodes"][0]["revisions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (
                r["revision"].as_u64().unwrap_or_default(),
                s("component"),
                s("image"),
                s("outcome"),
                s("detail"),
            )
        })
        .collect()
}

/// `(component, action)` of a deploy's or rollback's JSON answer.
fn actions(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v["nodes"][0]["results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["component"].as_str().unwrap_or_default().to_string(),
                r["action"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn pair(c: &str, a: &str) -> (String, String) {
    (c.to_string(), a.to_string())
}

/// The image the registry records for `component` (`desired_image`).
fn desired_image(node: &Node, service: &str, component: &str) -> String {
    let v = node.mcp_json(&["status", service]);
    v["nodes"][0]["components"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .find(|c| c["component"] == component)
        .and_then(|c| c["desired_image"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn history_records_deploys_and_rollback_goes_back_and_forth() {
    let mut node = Node::start();
    let service = unique("hist");
    let port = free_port();
    let (v1, v2) = (node.env.image_v1.clone(), node.env.image_v2.clone());
    let path = node.write_service(&service, &web_def(&service, &v1, port));
    node.mcp(&["deploy", &service]).success();
    assert_eq!(http_get(port).trim(), "hello from v1");
    std::fs::write(&path, web_def(&service, &v2, port)).expect("write");
    node.mcp(&["deploy", &service]).success();
    assert_eq!(http_get(port).trim(), "hello from v2");
    // An unchanged deploy is no revision.
    node.mcp(&["deploy", &service]).success();

    let h = history(&node, &[&service]);
    assert_eq!(
        h.iter()
            .map(|r| (r.0, r.1.as_str(), r.2.as_str(), r.3.as_str()))
            .collect::<Vec<_>>(),
        [
            (2, "web", v2.as_str(), "deployed"),
            (1, "web", v1.as_str(), "deployed"),
        ],
        "newest first"
    );
    let table = node.mcp(&["history", &service]).success().stdout;
    for word in [
        "REV",
        "COMPONENT",
        "TIME",
        "IMAGE",
        "OUTCOME",
        "DETAIL",
        "deployed",
    ] {
        assert!(table.contains(word), "{word} missing from:\n{table}");
    }
    assert!(table.contains(&v1) && table.contains(&v2), "{table}");

    // Rollback: v1 serves again, recorded as a rollback of revision 1.
    let back = node.mcp_json(&["rollback", &service]);
    assert_eq!(actions(&back), [pair("web", "updated")]);
    assert_eq!(http_get(port).trim(), "hello from v1");
    assert_eq!(desired_image(&node, &service, "web"), v1);
    let h = history(&node, &[&service]);
    assert_eq!(
        (h[0].0, h[0].2.as_str(), h[0].3.as_str(), h[0].4.as_str()),
        (3, v1.as_str(), "rollback", "revision 1")
    );
    let events = node.mcp_json(&["events", "--service", &service]);
    let rollbacks: Vec<&Value> = events["nodes"][0]["events"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["kind"] == "rollback").collect())
        .unwrap_or_default();
    assert_eq!(rollbacks.len(), 1, "{events}");
    assert_eq!(rollbacks[0]["component"], "web");
    assert!(
        rollbacks[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("revision 1") && d.contains(&v1)),
        "{}",
        rollbacks[0]
    );

    // Again: the newest revision that ran and differs from what runs now
    // is v2.
    let human = node.mcp(&["rollback", &service]).success().stdout;
    assert!(human.contains("updated"), "{human}");
    assert_eq!(http_get(port).trim(), "hello from v2");
    let h = history(&node, &[&service]);
    assert_eq!(
        (h[0].0, h[0].2.as_str(), h[0].3.as_str(), h[0].4.as_str()),
        (4, v2.as_str(), "rollback", "revision 2")
    );

    // A deploy that fails is recorded as failed, and a rollback skips it.
    let missing = format!("{}/mcp-test/does-not-exist:404", node.env.registry);
    std::fs::write(&path, web_def(&service, &missing, port)).expect("write");
    node.mcp(&["deploy", &service]).failure();
    assert_eq!(http_get(port).trim(), "hello from v2", "v2 keeps running");
    let h = history(&node, &[&service]);
    assert_eq!(
        (h[0].0, h[0].2.as_str(), h[0].3.as_str()),
        (5, missing.as_str(), "failed")
    );
    assert!(h[0].4.contains("does-not-exist"), "{:?}", h[0]);
    node.mcp(&["rollback", &service]).success();
    assert_eq!(http_get(port).trim(), "hello from v1");
    let h = history(&node, &["--limit", "2", &service]);
    assert_eq!(h.len(), 2);
    assert_eq!(
        (h[0].0, h[0].2.as_str(), h[0].3.as_str(), h[0].4.as_str()),
        (6, v1.as_str(), "rollback", "revision 3"),
        "back to v1 by way of its newest revision, not the failed one"
    );

    // A readonly token may read the history, not roll back.
    let ro = [("MCP_TOKEN", node.readonly_token.as_str())];
    let out = node
        .mcp_with_env(&["history", &service, "--limit", "1"], &ro)
        .success();
    assert!(out.stdout.contains("rollback"), "{}", out.stdout);
    let err = node.mcp_with_env(&["rollback", &service], &ro).failure();
    assert!(
        err.contains("permission denied") && err.contains("may not call Rollback"),
        "{err}"
    );
    assert_eq!(http_get(port).trim(), "hello from v1", "nothing changed");
    assert_eq!(history(&node, &[&service]).len(), 6);
}

#[test]
fn rollback_of_one_component_and_of_nothing_to_roll_back_to() {
    let mut node = Node::start();
    let service = unique("hist2");
    let port = free_port();
    let (v1, v2) = (node.env.image_v1.clone(), node.env.image_v2.clone());
    let path = node.write_service(&service, &two_def(&service, &v1, &v1, port));

    // One revision each: nothing to roll back to, and nothing changes.
    node.mcp(&["deploy", &service]).success();
    let ids = |node: &Node| {
        let mut v: Vec<(String, String)> = node
            .instances_of(&service)
            .into_iter()
            .map(|i| (i.name, i.id))
            .collect();
        v.sort();
        v
    };
    let before = ids(&node);
    let err = node
        .mcp(&["rollback", &service, "--component", "web"])
        .failure();
    assert!(
        err.contains(&format!(
            "service \"{service}\" component \"web\" has no earlier revision to roll back to"
        )),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = node.mcp(&["rollback", &service]).failure();
    assert!(err.contains("has no earlier revision"), "{err}");
    let err = node
        .mcp(&["rollback", &service, "--component", "nope"])
        .failure();
    assert!(err.contains("has no component \"nope\""), "{err}");
    let err = node.mcp(&["history", "no-such-service"]).failure();
    assert!(err.contains("no service named"), "{err}");
    assert_eq!(ids(&node), before, "nothing changed");
    assert_eq!(history(&node, &[&service]).len(), 2);

    // Both to v2, then only web back.
    std::fs::write(&path, two_def(&service, &v2, &v2, port)).expect("write");
    node.mcp(&["deploy", &service]).success();
    assert_eq!(http_get(port).trim(), "hello from v2");
    let back = node.mcp_json(&["rollback", &service, "--component", "web"]);
    assert_eq!(actions(&back), [pair("web", "updated")], "only web");
    assert_eq!(http_get(port).trim(), "hello from v1");
    assert_eq!(desired_image(&node, &service, "web"), v1);
    assert_eq!(desired_image(&node, &service, "worker"), v2);
    let worker = history(&node, &[&service, "--component", "worker"]);
    assert_eq!(
        worker
            .iter()
            .map(|r| (r.0, r.2.as_str(), r.3.as_str()))
            .collect::<Vec<_>>(),
        [(2, v2.as_str(), "deployed"), (1, v1.as_str(), "deployed")]
    );

    // The whole service: what its last change (web's rollback) touched.
    let again = node.mcp_json(&["rollback", &service]);
    assert_eq!(
        actions(&again),
        [pair("web", "updated"), pair("worker", "unchanged")]
    );
    assert_eq!(http_get(port).trim(), "hello from v2");
    assert_eq!(desired_image(&node, &service, "worker"), v2);
    let h = history(&node, &[&service]);
    assert_eq!(
        (h[0].0, h[0].1.as_str(), h[0].3.as_str(), h[0].4.as_str()),
        (4, "web", "rollback", "revision 2")
    );
    assert_eq!(h.len(), 6);
}
