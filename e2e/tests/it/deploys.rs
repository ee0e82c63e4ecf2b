//! Safe deploys end to end: health gates, automatic rollback, the two
//! replacement strategies and dependency order, with real containers.

use std::time::{Duration, Instant};

use mcp_e2e::{Node, free_port, http_get, try_http_get, unique, wait_for};
use serde_json::Value;

/// A one-component web service on `port` with an HTTP health check on
/// `path`; `extra` goes into the component before its health table.
fn web(service: &str, image: &str, port: u16, path: &str, extra: &str, health: &str) -> String {
    format!(
        r#"name = "{service}"

[[components]]
name = "web"
image = "{image}"
ports = ["127.0.0.1:{port}:8080"]
{extra}

[components.health]
kind = "http"
port = 8080
path = "{path}"
interval = "250ms"
timeout = "250ms"
retries = 2
{health}
"#
    )
}

fn status_of(node: &Node, service: &str) -> Value {
    let status = node.mcp_json(&["status", service]);
    status["nodes"][0]["components"][0].clone()
}

fn event_kinds(node: &Node, service: &str) -> Vec<String> {
    let events = node.mcp_json(&["events", "--service", service]);
    events["nodes"][0]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_new_version_that_exits_at_once_is_rolled_back_and_the_old_one_serves() {
    let mut node = Node::start();
    let service = unique("exits");
    let port = free_port();
    let (v1, v2) = (node.env.image_v1.clone(), node.env.image_v2.clone());
    node.write_service(&service, &web(&service, &v1, port, "/", "", ""));
    let first = node.mcp(&["deploy", &service]).success();
    assert!(first.stderr.contains("-web: ready"), "{}", first.stderr);
    assert_eq!(http_get(port), "hello from v1\n");

    let crash = r#"cmd = ["/bin/sh", "-c", "echo boom; exit 3"]"#;
    node.write_service(&service, &web(&service, &v2, port, "/", crash, ""));
    let err = node.mcp(&["deploy", &service]).failure();
    assert!(err.contains("rolled back"), "{err}");
    // The exit is the reason, seen at once, not the deploy timeout.
    assert!(err.contains("code 3") && err.contains("boom"), "{err}");
    assert_eq!(
        http_get(port),
        "hello from v1\n",
        "the old version serves again"
    );
    let c = status_of(&node, &service);
    assert_eq!(
        c["desired_image"],
        v1.as_str(),
        "the registry keeps v1: {c}"
    );
    assert_eq!(c["observed_state"], "running", "{c}");
    assert!(event_kinds(&node, &service).contains(&"rolled-back".to_string()));
    let names: Vec<String> = node
        .instances_of(&service)
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, [format!("{service}-web")], "no staged instance left");
}

/// A one-component web service on `port` without a health check; `extra`
/// goes into the component.
fn plain_web(service: &str, image: &str, port: u16, extra: &str) -> String {
    format!(
        "name = \"{service}\"\n\n[[components]]\nname = \"web\"\nimage = \"{image}\"\nports = [\"127.0.0.1:{port}:8080\"]\n{extra}\n"
    )
}

/// Without a health check, with the agent's default configuration, a new
/// version whose process dies at once never counts as deployed: the
/// observation window catches it every time, and the old version serves
/// again. `--no-wait` is the explicit way to skip the window.
#[test]
fn a_crash_on_start_without_a_check_is_rolled_back_every_time() {
    const ROUNDS: usize = 20;
    let mut node = Node::start();
    let service = unique("crash");
    let port = free_port();
    let v1 = node.env.image_v1.clone();
    node.write_service(&service, &plain_web(&service, &v1, port, ""));
    let first = node.mcp(&["deploy", &service]).success();
    assert!(
        first.stderr.contains("-web: ready (after 5."),
        "{}",
        first.stderr
    );
    assert_eq!(http_get(port), "hello from v1\n");

    let crash = r#"cmd = ["/bin/sh", "-c", "exit 3"]"#;
    for round in 0..ROUNDS {
        node.write_service(&service, &plain_web(&service, &v1, port, crash));
        let out = node.mcp(&["--json", "deploy", &service]);
        assert_ne!(out.code, 0, "round {round}: a crash was deployed");
        let answer: Value = serde_json::from_str(&out.stdout).expect("json");
        let result = &answer["nodes"][0]["results"][0];
        assert_eq!(result["action"], "rolled-back", "round {round}: {answer}");
        assert!(
            result["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("not ready: exited with code 3")),
            "round {round}: {answer}"
        );
        assert_eq!(http_get(port), "hello from v1\n", "round {round}");
    }
    let rolled_back = event_kinds(&node, &service)
        .iter()
        .filter(|k| *k == "rolled-back")
        .count();
    assert_eq!(rolled_back, ROUNDS);
    let c = status_of(&node, &service);
    assert_eq!(c["drift"], serde_json::json!([]), "{c}");
    let names: Vec<String> = node
        .instances_of(&service)
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, [format!("{service}-web")], "no staged instance left");

    // Fire and forget: reported as deployed once started; the monitor
    // then finds it stopped.
    let out = node.mcp(&["deploy", &service, "--no-wait"]).success();
    assert!(out.stderr.contains("-web: started"), "{}", out.stderr);
    let drift = wait_for(Duration::from_secs(20), || {
        let c = status_of(&node, &service);
        (c["drift"] == serde_json::json!(["stopped"])).then_some(c)
    });
    assert!(drift.is_some(), "{}", status_of(&node, &service));
    let err = node
        .mcp(&["deploy", &service, "--no-wait", "--timeout", "10s"])
        .failure();
    assert!(err.contains("cannot be used with"), "{err}");
    let err = node
        .mcp(&["deploy", &service, "--timeout", "25h"])
        .failure();
    assert!(
        err.contains("longer than the longest deploy timeout, 86400 seconds"),
        "{err}"
    );
}

#[test]
fn a_new_version_that_never_becomes_healthy_is_rolled_back() {
    let mut node = Node::start();
    let service = unique("sick");
    let port = free_port();
    let (v1, v2) = (node.env.image_v1.clone(), node.env.image_v2.clone());
    node.write_service(&service, &web(&service, &v1, port, "/", "", ""));
    node.mcp(&["deploy", &service]).success();

    node.write_service(&service, &web(&service, &v2, port, "/nope", "", ""));
    let out = node.mcp(&["deploy", &service, "--json"]);
    assert_ne!(out.code, 0);
    let answer: Value = serde_json::from_str(&out.stdout).expect("json");
    let result = &answer["nodes"][0]["results"][0];
    assert_eq!(result["action"], "rolled-back", "{answer}");
    let error = result["error"].as_str().unwrap_or_default();
    assert!(error.contains("unhealthy after 2 failed checks"), "{error}");
    assert!(error.contains("404"), "{error}");
    assert_eq!(http_get(port), "hello from v1\n");
    assert_eq!(status_of(&node, &service)["desired_image"], v1.as_str());
}

#[test]
fn a_version_healthy_late_within_its_start_period_is_waited_for() {
    let mut node = Node::start();
    let service = unique("late");
    let port = free_port();
    let (v1, v2) = (node.env.image_v1.clone(), node.env.image_v2.clone());
    node.write_service(&service, &web(&service, &v1, port, "/", "", ""));
    node.mcp(&["deploy", &service]).success();

    let slow = r#"cmd = ["/bin/sh", "-c", "sleep 3; exec /bin/busybox httpd -f -p 8080 -h /www"]"#;
    node.write_service(
        &service,
        &web(&service, &v2, port, "/", slow, "start_period = \"30s\""),
    );
    let started = Instant::now();
    let out = node.mcp(&["deploy", &service]).success();
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the deploy returned before the new version could answer"
    );
    assert!(out.stderr.contains("-web: waiting"), "{}", out.stderr);
    assert!(out.stdout.contains("updated"), "{}", out.stdout);
    assert_eq!(http_get(port), "hello from v2\n");
}

#[test]
fn the_deploy_timeout_bounds_the_wait() {
    let mut node = Node::start();
    let service = unique("slow");
    let port = free_port();
    let v1 = node.env.image_v1.clone();
    node.write_service(&service, &web(&service, &v1, port, "/", "", ""));
    node.mcp(&["deploy", &service]).success();
    node.write_service(
        &service,
        &web(
            &service,
            &v1,
            port,
            "/nope",
            "env = { V = \"2\" }",
            "start_period = \"1h\"",
        ),
    );
    let started = Instant::now();
    let err = node.mcp(&["deploy", &service, "--timeout", "2s"]).failure();
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(err.contains("rolled back"), "{err}");
    // The timeout ended it (the check's hour-long start period would not).
    assert!(err.contains("not ready within 2s"), "{err}");
    assert_eq!(http_get(port), "hello from v1\n");
}

/// A component without host ports whose command check passes once
/// `/tmp/ready` exists (which `ready_after` writes), failures not counting
/// for `start_period`.
fn job(service: &str, image: &str, version: u32, ready_after: &str, start_period: &str) -> String {
    format!(
        r#"name = "{service}"

[[components]]
name = "job"
image = "{image}"
env = {{ VERSION = "{version}" }}
cmd = ["/bin/sh", "-c", "{ready_after}exec sleep 3600"]

[components.health]
kind = "command"
command = ["/bin/sh", "-c", "test -f /tmp/ready"]
interval = "250ms"
retries = 2
start_period = "{start_period}"
"#
    )
}

#[test]
fn without_host_ports_the_old_instance_runs_until_the_new_one_is_ready() {
    let mut node = Node::start();
    let service = unique("job");
    let image = node.env.image_v1.clone();
    node.write_service(
        &service,
        &job(&service, &image, 1, "sleep 1; touch /tmp/ready; ", "20s"),
    );
    node.mcp(&["deploy", &service]).success();
    let name = format!("{service}-job");
    let old = node
        .instances_of(&service)
        .into_iter()
        .find(|i| i.name == name)
        .expect("v1 instance");

    node.write_service(
        &service,
        &job(&service, &image, 2, "sleep 2; touch /tmp/ready; ", "20s"),
    );
    let watcher = node.podman_client();
    let deploy = {
        let config = node.cli_config();
        std::thread::spawn(move || {
            std::process::Command::new(mcp_e2e::bin_dir().join("mcp"))
                .args(["deploy", &service_of(&config)])
                .env("MCP_CONFIG", &config)
                .output()
                .expect("run mcp")
        })
    };
    // While the new instance waits for its check, both run.
    let both = wait_for(Duration::from_secs(20), || {
        let rt = tokio::runtime::Runtime::new().ok()?;
        let list = rt.block_on(mcp_runtime::Runtime::list(&watcher)).ok()?;
        let running = |n: &str| {
            list.iter()
                .any(|i| i.name == n && i.state == mcp_runtime::InstanceState::Running)
        };
        (running(&name) && running(&format!("{name}.mcp-new"))).then_some(())
    });
    let out = deploy.join().expect("deploy thread");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        both.is_some(),
        "the old and the new instance never ran side by side"
    );
    let after: Vec<_> = node.instances_of(&service);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].name, name);
    assert_ne!(after[0].id, old.id, "replaced");

    // A version that never gets ready: the old one is never stopped.
    let current = after[0].clone();
    node.write_service(&service, &job(&service, &image, 3, "", "0s"));
    let err = node.mcp(&["deploy", &service]).failure();
    assert!(
        err.contains("rolled back") && err.contains("unhealthy"),
        "{err}"
    );
    let now = node
        .instances_of(&service)
        .into_iter()
        .find(|i| i.name == name)
        .expect("instance");
    assert_eq!(now.id, current.id);
    assert_eq!(now.state, mcp_runtime::InstanceState::Running);
    assert_eq!(now.started_at, current.started_at, "it was never restarted");
}

/// The service name of the single definition in the config's services dir
/// (the deploy thread cannot borrow the node).
fn service_of(config: &std::path::Path) -> String {
    let dir = config.parent().expect("dir").join("services");
    let entry = std::fs::read_dir(dir)
        .expect("services dir")
        .filter_map(Result::ok)
        .find(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .expect("a definition");
    entry
        .path()
        .file_stem()
        .expect("stem")
        .to_string_lossy()
        .into_owned()
}

fn ordered(service: &str, image: &str, db_cmd: &str, api_env: &str) -> String {
    format!(
        r#"name = "{service}"

[[components]]
name = "api"
image = "{image}"
depends_on = ["db"]
env = {{ V = "{api_env}" }}
cmd = ["/bin/sh", "-c", "exec sleep 3600"]

[[components]]
name = "db"
image = "{image}"
cmd = ["/bin/sh", "-c", "{db_cmd}"]

[components.health]
kind = "command"
command = ["/bin/sh", "-c", "test -f /tmp/ready"]
interval = "250ms"
retries = 2
start_period = "20s"
"#
    )
}

#[test]
fn components_start_in_dependency_order_and_a_failed_dependency_stops_its_dependents() {
    let mut node = Node::start();
    let service = unique("order");
    let image = node.env.image_v1.clone();
    node.write_service(
        &service,
        &ordered(
            &service,
            &image,
            "sleep 1; touch /tmp/ready; exec sleep 3600",
            "1",
        ),
    );
    let out = node.mcp(&["deploy", &service]).success();
    let lines: Vec<&str> = out.stderr.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {lines:?}"))
    };
    assert!(
        at(&format!("{service}-db: ready")) < at(&format!("{service}-api: creating")),
        "api was created before db was ready: {lines:?}"
    );

    // db's new version dies: api's change waits for a later deploy.
    node.write_service(
        &service,
        &ordered(&service, &image, "echo db down; exit 1", "2"),
    );
    let out = node.mcp(&["deploy", &service, "--json"]);
    assert_ne!(out.code, 0);
    let answer: Value = serde_json::from_str(&out.stdout).expect("json");
    let result = |c: &str| {
        answer["nodes"][0]["results"]
            .as_array()
            .expect("results")
            .iter()
            .find(|r| r["component"] == c)
            .cloned()
            .unwrap_or_else(|| panic!("no {c} in {answer}"))
    };
    assert_eq!(result("db")["action"], "rolled-back", "{answer}");
    assert_eq!(result("api")["action"], "failed", "{answer}");
    assert!(
        result("api")["error"]
            .as_str()
            .unwrap_or_default()
            .contains("depends on db"),
        "{answer}"
    );
    let status = node.mcp_json(&["status", &service]);
    for c in status["nodes"][0]["components"]
        .as_array()
        .expect("components")
    {
        assert_eq!(c["observed_state"], "running", "{c}");
        assert!(c["drift"].as_array().is_none_or(|d| d.is_empty()), "{c}");
    }
}

#[test]
fn a_health_check_of_an_unknown_kind_is_refused_before_anything_happens() {
    let mut node = Node::start();
    let service = unique("badkind");
    let port = free_port();
    let v1 = node.env.image_v1.clone();
    let text = web(&service, &v1, port, "/", "", "").replace("kind = \"http\"", "kind = \"grpc\"");
    let path = node.write_service(&service, &text);
    let err = node.mcp(&["deploy", &service]).failure();
    let line = text
        .lines()
        .position(|l| l.starts_with("kind = "))
        .expect("kind line")
        + 1;
    assert!(
        err.contains(&format!("{}:{line}:8:", path.display())),
        "{err}"
    );
    assert!(err.contains("\"grpc\""), "{err}");
    let list = node.mcp_json(&["list"]);
    assert!(
        !list.to_string().contains(&service),
        "nothing registered: {list}"
    );
    assert!(node.instances_of(&service).is_empty());
}

/// A caller that goes away mid-deploy (its RPC cancelled, as by Ctrl-C in
/// a script using the unary `Deploy`, or a killed `mcp deploy` on the
/// progress stream) does not stop the deploy halfway: it runs to its end on
/// the node, and the component ends up on the new version, registry and all.
#[test]
fn a_deploy_whose_caller_goes_away_runs_to_its_end() {
    let mut node = Node::start();
    let service = unique("gone");
    let port = free_port();
    let (v1, v2) = (node.env.image_v1.clone(), node.env.image_v2.clone());
    node.write_service(&service, &web(&service, &v1, port, "/", "", ""));
    node.mcp(&["deploy", &service]).success();

    // Ready about 3 s after its start; the caller leaves once the new
    // instance exists, while the old one (publishing the port) is stopped.
    let slow = r#"cmd = ["/bin/sh", "-c", "sleep 3; exec /bin/busybox httpd -f -p 8080 -h /www"]"#;
    let path = node.write_service(
        &service,
        &web(&service, &v2, port, "/", slow, "start_period = \"30s\""),
    );
    let def = mcp_core::servicedef::load(&path).expect("definition");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut client = node.client(&node.admin_token).await;
        let call = client.deploy(
            &def,
            None,
            mcp_core::wire::PullPolicy::Missing,
            mcp_core::wire::DeployOptions::default(),
        );
        tokio::pin!(call);
        use mcp_runtime::Runtime;
        let podman = node.podman_client();
        let staged = format!("{service}-web.mcp-new");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            tokio::select! {
                answer = &mut call => panic!("the deploy answered before the caller left: {answer:?}"),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            if podman.inspect(&staged).await.is_ok_and(|i| i.is_some()) {
                break;
            }
            assert!(Instant::now() < deadline, "the deploy never got under way");
        }
        // Leaving the block drops the call: the RPC is cancelled.
    });
    drop(rt);

    let serving_v2 = wait_for(Duration::from_secs(30), || {
        try_http_get(port)
            .is_ok_and(|body| body == "hello from v2\n")
            .then_some(())
    });
    assert!(
        serving_v2.is_some(),
        "the deploy did not finish on the node"
    );
    let done = wait_for(Duration::from_secs(10), || {
        let c = status_of(&node, &service);
        (c["desired_image"] == v2.as_str() && c["observed_image"] == v2.as_str()).then_some(c)
    });
    let c = done.expect("the registry records v2 once the deploy finished");
    assert_eq!(c["observed_state"], "running", "{c}");
    assert_eq!(c["drift"], serde_json::json!([]), "{c}");
    let names: Vec<String> = node
        .instances_of(&service)
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, [format!("{service}-web")], "no staged instance left");
    assert!(event_kinds(&node, &service).contains(&"updated".to_string()));
    // The cancelled call is in the audit trail all the same.
    let audited = wait_for(Duration::from_secs(5), || {
        node.audit_records()
            .into_iter()
            .find(|r| r["method"] == "/mcp.v1.AgentService/Deploy" && r["outcome"] == "Cancelled")
    });
    assert!(audited.is_some(), "{:?}", node.audit_records());

    // The same with `mcp deploy` on the progress stream, killed mid-wait.
    node.write_service(
        &service,
        &web(&service, &v1, port, "/", slow, "start_period = \"30s\""),
    );
    let mut cli = node.spawn_mcp(&["deploy", &service]);
    let staged = wait_for(Duration::from_secs(30), || {
        node.instances_of(&service)
            .into_iter()
            .find(|i| i.name.ends_with(".mcp-new"))
    });
    assert!(staged.is_some(), "the streamed deploy never got under way");
    assert!(
        cli.try_wait().expect("try_wait").is_none(),
        "mcp deploy should still be waiting"
    );
    cli.kill().expect("kill mcp");
    let _ = cli.wait();
    // It left before the end: that stream is audited as cancelled.
    let audited = wait_for(Duration::from_secs(5), || {
        node.audit_records().into_iter().find(|r| {
            r["method"] == "/mcp.v1.AgentService/DeployStream" && r["outcome"] == "Cancelled"
        })
    });
    assert!(audited.is_some(), "{:?}", node.audit_records());
    let serving_v1 = wait_for(Duration::from_secs(30), || {
        try_http_get(port)
            .is_ok_and(|body| body == "hello from v1\n")
            .then_some(())
    });
    assert!(serving_v1.is_some(), "the streamed deploy did not finish");
    let done = wait_for(Duration::from_secs(10), || {
        let c = status_of(&node, &service);
        (c["desired_image"] == v1.as_str() && c["observed_image"] == v1.as_str()).then_some(c)
    });
    assert!(done.is_some(), "the registry records v1 again");
}
