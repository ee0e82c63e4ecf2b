//! The output contract (README, "Output and exit codes"): the JSON of every
//! command against the shapes README documents, exit codes a script can
//! use, errors as JSON under `--json`, quiet broken pipes, tables that are
//! never cut when piped and say so when empty.

use std::collections::BTreeSet;
use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use mcp_e2e::{Node, free_port, podman_cli, unique, wait_for};
use serde_json::Value;

/// The shapes README documents, by name (`<!-- json: NAME -->` before a
/// ```json block).
fn documented() -> Vec<(String, Value)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let mut shapes = Vec::new();
    let mut rest = readme.as_str();
    while let Some(at) = rest.find("<!-- json: ") {
        rest = &rest[at + "<!-- json: ".len()..];
        let name = &rest[..rest.find(" -->").expect("marker end")];
        let body = &rest[rest.find("```json\n").expect("json block") + "```json\n".len()..];
        let body = &body[..body.find("\n```").expect("block end")];
        let value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("README shape {name} is not JSON: {e}"));
        shapes.push((name.to_string(), value));
    }
    shapes
}

pub(crate) fn shape(name: &str) -> Value {
    documented()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("README documents no JSON shape {name:?}"))
}

/// Whether `actual` has the documented shape `doc`: objects with exactly
/// the documented keys, arrays whose every element has the shape of the
/// documented first one, the same kinds of values. A documented `null`
/// stands for a value that may be absent; an absent value is `null`, never
/// `""` (unless the example shows `""`); a documented time is RFC 3339.
fn conforms(actual: &Value, doc: &Value, at: &str) -> Result<(), String> {
    match (actual, doc) {
        (Value::Null, _) | (_, Value::Null) => Ok(()),
        (Value::Object(a), Value::Object(d)) => {
            let got: BTreeSet<&String> = a.keys().collect();
            let want: BTreeSet<&String> = d.keys().collect();
            if got != want {
                return Err(format!("{at}: keys {got:?}, README documents {want:?}"));
            }
            a.iter()
                .try_for_each(|(k, v)| conforms(v, &d[k], &format!("{at}.{k}")))
        }
        (Value::Array(a), Value::Array(d)) => match d.first() {
            Some(first) => a
                .iter()
                .enumerate()
                .try_for_each(|(i, v)| conforms(v, first, &format!("{at}[{i}]"))),
            None => Ok(()),
        },
        (Value::String(a), Value::String(d)) => {
            if a.is_empty() && !d.is_empty() {
                return Err(format!("{at}: \"\" where an absent value must be null"));
            }
            let is_time = d.len() >= 20 && d.as_bytes()[4] == b'-' && d.as_bytes()[10] == b'T';
            if is_time && chrono::DateTime::parse_from_rfc3339(a).is_err() {
                return Err(format!("{at}: {a:?} is not an RFC 3339 time"));
            }
            Ok(())
        }
        (Value::Bool(_), Value::Bool(_)) | (Value::Number(_), Value::Number(_)) => Ok(()),
        _ => Err(format!("{at}: {actual} where README shows {doc}")),
    }
}

pub(crate) fn assert_shape(name: &str, actual: &Value) {
    if let Err(e) = conforms(actual, &shape(name), name) {
        panic!("{e}\nactual: {actual:#}");
    }
}

/// The first answer of an envelope.
fn answer(v: &Value) -> &Value {
    &v["nodes"][0]
}

fn non_empty(v: &Value, key: &str) {
    assert!(
        v[key].as_array().is_some_and(|a| !a.is_empty()),
        "{key} is empty, so its shape went unchecked: {v:#}"
    );
}

fn web(service: &str, image: &str, port: u16) -> String {
    format!(
        r#"name = "{service}"

[[components]]
name = "api"
image = "{image}"
ports = ["127.0.0.1:{port}:8080"]

[components.health]
kind = "http"
port = 8080
path = "/"
interval = "300ms"

[[components]]
name = "worker"
image = "{image}"
cmd = ["/bin/sh", "-c", "echo worker up; while true; do sleep 1; done"]
"#
    )
}

#[test]
fn every_command_prints_the_documented_json_and_exit_code() {
    let mut node = Node::start();
    let service = unique("shape");
    let port = free_port();
    let v1 = node.env.image_v1.clone();
    node.write_service(&service, &web(&service, &v1, port));

    // deploy, and a status with nothing to report: exit 0.
    let deployed = node.mcp_json(&["deploy", &service]);
    assert_shape("action", &deployed);
    non_empty(answer(&deployed), "results");
    let status = node.mcp(&["--json", "status", &service]).success();
    let status: Value = serde_json::from_str(&status.stdout).expect("json");
    assert_shape("status", &status);
    non_empty(answer(&status), "components");

    // The worker's instance replaced behind the agent's back by one MCP
    // does not manage: status reports it and exits 3.
    let worker = format!("{service}-worker");
    podman_cli(&["rm", "-f", "-t", "0", &worker]);
    podman_cli(&["run", "-d", "--name", &worker, &v1, "sleep", "3600"]);
    // Seen once podman's events have reached the agent.
    let found = wait_for(Duration::from_secs(20), || {
        let out = node.mcp(&["--json", "status", &service]);
        let v: Value = serde_json::from_str(&out.stdout).expect("json");
        (out.code == 3
            && answer(&v)["unmanaged"]
                .as_array()
                .is_some_and(|a| !a.is_empty()))
        .then_some(v)
    })
    .expect("status never reported the unmanaged instance with exit 3");
    assert_shape("status", &found);
    podman_cli(&["rm", "-f", "-t", "0", &worker]);

    // Now the worker is missing: ps lists it so.
    let ps = wait_for(Duration::from_secs(20), || {
        let v = node.mcp_json(&["ps"]);
        answer(&v)["missing"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
            .then_some(v)
    })
    .expect("ps never listed the missing worker");
    assert_shape("ps", &ps);
    non_empty(answer(&ps), "instances");
    node.mcp(&["status", &service]).found();
    let restarted = node.mcp_json(&["restart", &service, "--component", "worker"]);
    assert_shape("action", &restarted);
    node.mcp(&["status", &service]).success();

    let list = node.mcp_json(&["list"]);
    assert_shape("list", &list);
    non_empty(answer(&list), "services");
    let events = node.mcp_json(&["events", "--service", &service]);
    assert_shape("events", &events);
    non_empty(answer(&events), "events");

    // A change to make: sync --dry-run exits 3; the sync itself 0.
    let v2 = node.env.image_v2.clone();
    node.write_service(&service, &web(&service, &v2, port));
    let plan = node.mcp(&["--json", "sync", "--dry-run"]).found();
    let plan: Value = serde_json::from_str(&plan.stdout).expect("json");
    assert_shape("sync", &plan);
    non_empty(answer(&plan), "plan");
    let synced = node.mcp(&["--json", "sync"]).success();
    let synced: Value = serde_json::from_str(&synced.stdout).expect("json");
    assert_shape("sync", &synced);
    non_empty(answer(&synced), "results");
    node.mcp(&["sync", "--dry-run"]).success();

    let history = node.mcp_json(&["history", &service]);
    assert_shape("history", &history);
    non_empty(answer(&history), "revisions");
    assert_shape("action", &node.mcp_json(&["rollback", &service]));

    // Logs, one JSON object per line.
    let logs = node
        .mcp(&["--json", "logs", &service, "worker", "--tail", "5"])
        .success();
    let lines: Vec<&str> = logs.stdout.lines().collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in lines {
        assert_shape("logs", &serde_json::from_str(line).expect("json line"));
    }

    // Files: push, ls, pull, rm.
    let work = tempfile::tempdir().expect("tempdir");
    let local = work.path().join("index.html");
    std::fs::write(&local, "hello\n").expect("write");
    let local = local.to_str().expect("utf-8");
    let pushed = node.mcp_json(&["push", &service, local, "www/index.html", "--mode", "640"]);
    assert_shape("transfer", &pushed);
    non_empty(answer(&pushed), "files");
    let ls = node.mcp_json(&["ls", &service, "-r"]);
    assert_shape("ls", &ls);
    non_empty(answer(&ls), "entries");
    let back = work.path().join("back.html");
    let pulled = node.mcp_json(&[
        "pull",
        &service,
        "www/index.html",
        back.to_str().expect("utf-8"),
    ]);
    assert_shape("transfer", &pulled);
    assert_shape("rm", &node.mcp_json(&["rm", &service, "www/index.html"]));

    // adopt, with the definition written.
    let adopted = unique("adopted");
    node.track(&adopted);
    podman_cli(&[
        "run",
        "-d",
        "--name",
        &format!("{adopted}-api"),
        &v1,
        "sleep",
        "3600",
    ]);
    let file = work.path().join("adopted.toml");
    let adopt = node.mcp_json(&["adopt", &adopted, "--write", file.to_str().expect("utf-8")]);
    assert_shape("adopt", &adopt);
    non_empty(answer(&adopt), "adopted");

    assert_shape("node-list", &node.mcp_json(&["node", "list"]));
    assert_shape("node-info", &node.mcp_json(&["node", "info"]));
    for args in [["stop", service.as_str()], ["start", service.as_str()]] {
        assert_shape("action", &node.mcp_json(&args));
    }
    assert_shape("action", &node.mcp_json(&["remove", &adopted]));
    assert_shape("action", &node.mcp_json(&["remove", &service]));
}

#[test]
fn errors_usage_broken_pipes_and_tables_keep_the_contract() {
    let mut node = Node::start();

    // An error under --json: one object on standard error, nothing on
    // standard output, exit 1.
    let absent = unique("absent");
    let out = node.mcp(&["--json", "status", &absent]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout, "", "{out:?}");
    let err: Value = serde_json::from_str(out.stderr.trim()).expect("a JSON error");
    assert_shape("error", &err);
    assert_eq!(err["error"]["code"], "NOT_FOUND", "{err}");
    let nodes = node.mcp_json(&["node", "list"]);
    assert_eq!(err["error"]["node"], nodes["nodes"][0]["name"], "{err}");
    // Without --json, the same error once, in one line.
    let text = node.mcp(&["status", &absent]).failure();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert_eq!(text.matches("no service named").count(), 1, "{text}");

    // A wrong command line: exit 2, one line.
    for args in [vec!["deploy"], vec!["status", "--bogus"], vec!["nonsense"]] {
        let out = node.mcp(&args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        assert!(out.stderr.starts_with("mcp: usage: "), "{}", out.stderr);
    }
    let out = node.mcp(&["--json", "deploy"]);
    assert_eq!(out.code, 2, "{out:?}");
    let err: Value = serde_json::from_str(out.stderr.trim()).expect("a JSON usage error");
    assert_shape("error", &err);

    // Empty answers say so.
    let none = node.mcp(&["list"]).success().stdout;
    assert_eq!(none.trim(), "no services", "{none}");

    // A long image name is not cut when the table goes to a pipe.
    let service = unique("wide");
    let port = free_port();
    let image = node.env.image_v1.clone();
    node.write_service(&service, &web(&service, &image, port));
    node.mcp(&["deploy", &service]).success();
    let table = node.mcp(&["ps"]).success().stdout;
    let row = table
        .lines()
        .find(|l| l.contains(&format!("{service}-api")))
        .unwrap_or_else(|| panic!("no row for {service}-api:\n{table}"));
    assert!(row.contains(&image), "the row is cut: {row:?}\n{table}");

    // A reader that goes away: a quiet exit 0, JSON or table.
    for json in [true, false] {
        let mut args = vec!["ps"];
        if json {
            args.insert(0, "--json");
        }
        let mut child = node
            .mcp_command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcp");
        // Closed before mcp has connected to the agent, let alone written.
        drop(child.stdout.take());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(0), "json={json}: {stderr}");
        assert_eq!(stderr, "", "json={json}");
    }
    node.mcp(&["remove", &service]).success();
}
