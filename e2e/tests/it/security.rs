//! End-to-end checks of the security envelope through the real binaries:
//! token sources and roles as the operator meets them, TLS errors, the
//! audit trail, and no token ever written to a log.

use std::time::Duration;

use mcp_e2e::{Node, unique};

fn one_line(err: &str) -> &str {
    err.trim()
}

#[test]
fn roles_token_sources_and_clear_errors() {
    let mut node = Node::start();
    let service = unique("sec");
    node.write_service(
        &service,
        &format!(
            "name = \"{service}\"\n[[components]]\nname = \"web\"\nimage = \"{}\"\n",
            node.env.image_v1
        ),
    );

    // The config's token file holds the admin token.
    node.mcp(&["deploy", &service]).success();

    // A readonly token from MCP_TOKEN may query but not change anything.
    let ro = [("MCP_TOKEN", node.readonly_token.as_str())];
    node.mcp_with_env(&["status", &service], &ro).success();
    node.mcp_with_env(&["list"], &ro).success();
    let err = node.mcp_with_env(&["stop", &service], &ro).failure();
    assert!(
        err.contains("permission denied") && err.contains("viewer (readonly) may not call Deploy"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = node.mcp_with_env(&["remove", &service], &ro).failure();
    assert!(err.contains("may not call Remove"), "{err}");
    // The refused stop left the definition file as it was.
    let def = std::fs::read_to_string(node.services_dir().join(format!("{service}.toml")))
        .expect("read definition");
    assert!(!def.contains("active = false"), "{def}");

    // --token-file wins over MCP_TOKEN.
    let ro_file = node.dir.path().join("ro-token");
    std::fs::write(&ro_file, format!("{}\n", node.readonly_token)).expect("write");
    let flag = ro_file.display().to_string();
    let err = node
        .mcp_with_env(
            &["--token-file", &flag, "restart", &service],
            &[("MCP_TOKEN", node.admin_token.as_str())],
        )
        .failure();
    assert!(err.contains("may not call Restart"), "{err}");

    // An unknown token says so, and where it came from.
    let err = node
        .mcp_with_env(&["list"], &[("MCP_TOKEN", "mcp_not-a-real-token")])
        .failure();
    assert!(
        err.contains("not authenticated: invalid token") && err.contains("MCP_TOKEN"),
        "{err}"
    );
    // A token with a control character never leaves the CLI.
    let err = node
        .mcp_with_env(&["list"], &[("MCP_TOKEN", "mcp_a\u{1b}b")])
        .failure();
    assert!(
        err.contains("MCP_TOKEN") && err.contains("unusable token"),
        "{err}"
    );

    // A CA that did not sign the agent's certificate: which CA, which host.
    let other =
        mcp_core::tls::ensure_dev_pki(&node.dir.path().join("other-ca"), &[]).expect("other pki");
    let cfg = std::fs::read_to_string(node.cli_config()).expect("read");
    let wrong = node.dir.path().join("wrong-ca.toml");
    std::fs::write(
        &wrong,
        cfg.replace(
            &node.ca_cert.display().to_string(),
            &other.ca_cert.display().to_string(),
        )
        .replace(
            "token_file = \"token\"",
            &format!(
                "token_file = \"{}\"",
                node.dir.path().join("token").display()
            ),
        ),
    )
    .expect("write");
    let err = node
        .mcp(&["--config", &wrong.display().to_string(), "list"])
        .failure();
    let line = one_line(&err);
    assert!(line.contains("TLS"), "{line}");
    assert!(line.contains(&node.addr), "{line}");
    assert!(
        line.contains(&other.ca_cert.display().to_string()),
        "{line}"
    );
    assert!(line.contains("not signed by"), "{line}");

    // Every RPC that reached the agent left one audit record (the token with
    // a control character and the TLS failure never did), and no token is in
    // any log.
    // File lines are appended in batches; give the writer its interval.
    let records = mcp_e2e::wait_for(std::time::Duration::from_secs(5), || {
        let r = node.audit_records();
        (r.len() >= 7).then_some(r)
    })
    .unwrap_or_else(|| node.audit_records());
    assert_eq!(records.len(), 7, "{records:?}");
    let denied: Vec<_> = records
        .iter()
        .filter(|r| r["outcome"] == "PermissionDenied")
        .collect();
    assert_eq!(denied.len(), 3, "{denied:?}");
    assert!(denied.iter().all(|r| r["caller"] == "viewer"));
    assert!(
        records
            .iter()
            .any(|r| r["outcome"] == "Unauthenticated" && r["reason"] == "invalid token")
    );
    assert!(
        records
            .iter()
            .any(|r| r["caller"] == "operator" && r["outcome"] == "Ok")
    );
    let log = node.agent_log();
    assert!(
        log.contains("mcp::audit"),
        "audit records go to the log too"
    );
    let audit = std::fs::read_to_string(node.dir.path().join("audit.jsonl")).expect("audit");
    for token in [&node.admin_token, &node.readonly_token] {
        assert!(
            !log.contains(token.as_str()),
            "a token is in the agent's log"
        );
        assert!(
            !audit.contains(token.as_str()),
            "a token is in the audit file"
        );
    }
}

#[test]
fn plaintext_only_when_asked_and_then_with_a_warning() {
    let mut node = Node::start();
    node.reconfigure(|text| text.push_str("insecure = true\n"));
    // A CLI that expects TLS fails clearly...
    let err = node.mcp(&["list"]).failure();
    assert!(err.contains("TLS"), "{err}");
    // ...one told to talk plaintext works, and still needs its token.
    let cli = std::fs::read_to_string(node.cli_config()).expect("read");
    std::fs::write(
        node.cli_config(),
        cli.replace("[tls]\n", "[tls]\ninsecure = true\n"),
    )
    .expect("write");
    node.mcp(&["list"]).success();
    let err = node
        .mcp_with_env(&["list"], &[("MCP_TOKEN", "mcp_wrong")])
        .failure();
    assert!(err.contains("not authenticated"), "{err}");
    let log = node.agent_log();
    assert!(log.contains("WITHOUT TLS"), "{log}");
}

#[test]
fn token_management_commands() {
    let node = Node::start();
    let run = |args: &[&str]| {
        std::process::Command::new(mcp_e2e::bin_dir().join("mcp-agent"))
            .arg("--config")
            .arg(node.dir.path().join("agent.toml"))
            .args(args)
            .output()
            .expect("run mcp-agent")
    };
    let list = run(&["token", "list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("operator") && text.contains("viewer"),
        "{text}"
    );
    assert!(!text.contains(&node.admin_token), "list shows a token");

    // A new token works at once on the running agent; removing it revokes it.
    let out = run(&[
        "token",
        "add",
        "ci",
        "--role",
        "readonly",
        "--expires",
        "1h",
    ]);
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    assert!(token.starts_with("mcp_"));
    let ok = mcp_e2e::wait_for(std::time::Duration::from_secs(5), || {
        (node
            .mcp_with_env(&["list"], &[("MCP_TOKEN", token.as_str())])
            .code
            == 0)
            .then_some(())
    });
    assert!(ok.is_some(), "a new token was not accepted");
    let dup = run(&["token", "add", "ci", "--role", "admin"]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("exists already"));
    assert!(run(&["token", "remove", "ci"]).status.success());
    let revoked = mcp_e2e::wait_for(std::time::Duration::from_secs(5), || {
        (node
            .mcp_with_env(&["list"], &[("MCP_TOKEN", token.as_str())])
            .code
            != 0)
            .then_some(())
    });
    assert!(revoked.is_some(), "a removed token still works");
    let bad = run(&["token", "add", "x", "--role", "root"]);
    assert!(!bad.status.success());
}

/// A streamed deploy whose caller closes the stream as soon as it has read
/// the outcome (as `mcp deploy` does) finished on the agent: its audit
/// record says `Ok`, never `Cancelled`. Run many times, since the caller's
/// close races the agent's status trailers.
#[test]
fn streamed_deploys_closed_at_their_outcome_are_audited_with_it() {
    const ROUNDS: usize = 200;
    let mut node = Node::start();
    let service = unique("audit");
    let path = node.write_service(
        &service,
        &format!(
            "name = \"{service}\"\n[[components]]\nname = \"web\"\nimage = \"{}\"\n",
            node.env.image_v1
        ),
    );
    node.mcp(&["deploy", &service]).success();
    let def = mcp_core::servicedef::load(&path).expect("definition");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut client = node.client(&node.admin_token).await;
        for round in 0..ROUNDS {
            // `deploy_watch` returns on the outcome and drops the stream.
            let done = client
                .deploy_watch(
                    &def,
                    None,
                    mcp_core::wire::PullPolicy::Missing,
                    mcp_core::wire::DeployOptions::default(),
                    &mut |_| {},
                )
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert!(
                done.results.iter().all(|r| r.error.is_empty()),
                "round {round}: {done:?}"
            );
        }
    });
    drop(rt);
    let streamed = |records: &[serde_json::Value]| -> Vec<serde_json::Value> {
        records
            .iter()
            .filter(|r| r["method"] == "/mcp.v1.AgentService/DeployStream")
            .cloned()
            .collect()
    };
    // The audit file is appended every 50 ms.
    let records = mcp_e2e::wait_for(std::time::Duration::from_secs(10), || {
        let records = streamed(&node.audit_records());
        // One more from the `mcp deploy` above.
        (records.len() > ROUNDS).then_some(records)
    })
    .unwrap_or_else(|| {
        panic!(
            "not every streamed deploy was audited: {:?}",
            streamed(&node.audit_records())
        )
    });
    let wrong: Vec<&serde_json::Value> = records.iter().filter(|r| r["outcome"] != "Ok").collect();
    assert!(
        wrong.is_empty(),
        "{} of {} finished streamed deploys audited as something else than Ok: {wrong:?}",
        wrong.len(),
        records.len()
    );
}

/// A served method as its descriptor gives it.
struct Method {
    path: String,
    input: String,
    client_streaming: bool,
    server_streaming: bool,
}

/// Every method the agent serves, and every message type by full name.
fn served() -> (
    Vec<Method>,
    std::collections::BTreeMap<String, prost_types::DescriptorProto>,
) {
    use prost::Message as _;
    let (mut methods, mut messages) = (Vec::new(), std::collections::BTreeMap::new());
    for set in mcp_agent::server::SERVED_DESCRIPTORS {
        let set = prost_types::FileDescriptorSet::decode(*set).expect("descriptor set");
        for file in set.file {
            let package = file.package().to_string();
            for message in &file.message_type {
                messages.insert(format!(".{package}.{}", message.name()), message.clone());
            }
            for service in &file.service {
                for m in &service.method {
                    methods.push(Method {
                        path: format!("/{package}.{}/{}", service.name(), m.name()),
                        input: m.input_type().to_string(),
                        client_streaming: m.client_streaming(),
                        server_streaming: m.server_streaming(),
                    });
                }
            }
        }
    }
    (methods, messages)
}

/// A request of type `message` that names `service` and `component` in
/// the string fields so called, everything else at its default.
fn request_for(message: &prost_types::DescriptorProto, service: &str, component: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    for field in &message.field {
        let value = match field.name() {
            "service" => service,
            "component" => component,
            _ => continue,
        };
        if field.r#type() == prost_types::field_descriptor_proto::Type::String {
            let tag = u32::try_from(field.number()).expect("field number");
            prost::encoding::string::encode(tag, &value.to_string(), &mut buf);
        }
    }
    buf
}

/// Calls `method` with `request` and `token`; returns every answer's bytes
/// (and error message) that arrived within a few seconds.
async fn answers(
    channel: &tonic::transport::Channel,
    method: &Method,
    request: Vec<u8>,
    token: &str,
) -> Vec<u8> {
    use futures::StreamExt as _;
    use mcp_core::client::raw::RawCodec;
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::try_from(method.path.as_str()).expect("path");
    let auth: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().expect("metadata");
    let mut out = Vec::new();
    let limit = Duration::from_secs(3);
    let request = bytes::Bytes::from(request);
    if method.client_streaming {
        let mut req = tonic::Request::new(futures::stream::iter([request]));
        req.metadata_mut().insert("authorization", auth);
        match grpc.streaming(req, path, RawCodec).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                while let Ok(Some(Ok(m))) = tokio::time::timeout(limit, stream.next()).await {
                    out.extend_from_slice(&m);
                }
            }
            Err(status) => out.extend_from_slice(status.message().as_bytes()),
        }
    } else if method.server_streaming {
        let mut req = tonic::Request::new(request);
        req.metadata_mut().insert("authorization", auth);
        match grpc.server_streaming(req, path, RawCodec).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                loop {
                    match tokio::time::timeout(limit, stream.next()).await {
                        Ok(Some(Ok(m))) => out.extend_from_slice(&m),
                        Ok(Some(Err(status))) => {
                            out.extend_from_slice(status.message().as_bytes());
                            break;
                        }
                        _ => break,
                    }
                }
            }
            Err(status) => out.extend_from_slice(status.message().as_bytes()),
        }
    } else {
        let mut req = tonic::Request::new(request);
        req.metadata_mut().insert("authorization", auth);
        match grpc.unary(req, path, RawCodec).await {
            Ok(resp) => out.extend_from_slice(&resp.into_inner()),
            Err(status) => out.extend_from_slice(status.message().as_bytes()),
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Environment values are secrets: every RPC a readonly token may call,
/// taken from the served descriptors and asked about the service that has
/// one, answers without it; an admin gets the definition whole; neither the
/// audit log nor the agent's log ever carries it.
#[test]
fn readonly_callers_never_see_environment_values() {
    let mut node = Node::start();
    let service = unique("secret");
    let secret = format!("pw-{}", unique("hunter"));
    node.write_service(
        &service,
        &format!(
            "name = \"{service}\"\n[[components]]\nname = \"web\"\nimage = \"{}\"\ncmd = [\"sleep\", \"3600\"]\nenv = {{ DB_PASSWORD = \"{secret}\", MODE = \"prod\" }}\n",
            node.env.image_v1
        ),
    );
    node.mcp(&["deploy", &service]).success();
    node.mcp(&[
        "push",
        &service,
        node.cli_config().to_str().expect("utf-8"),
        "conf/cli.toml",
    ])
    .success();

    let (methods, messages) = served();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (readonly_called, admin_history) = rt.block_on(async {
        let channel = node.channel().await;
        let mut called = Vec::new();
        for method in &methods {
            if mcp_core::auth::policy::required_role(&method.path) != mcp_core::auth::Role::ReadOnly
            {
                continue;
            }
            let input = messages
                .get(&method.input)
                .unwrap_or_else(|| panic!("no message {}", method.input));
            let request = request_for(input, &service, "web");
            let got = answers(&channel, method, request, &node.readonly_token).await;
            assert!(
                !contains(&got, &secret),
                "{} answers a readonly token with an environment value",
                method.path
            );
            called.push((method.path.clone(), got.len()));
        }
        let history = methods
            .iter()
            .find(|m| m.path == "/mcp.v1.AgentService/History")
            .expect("History is served");
        let request = request_for(&messages[&history.input], &service, "web");
        let ro = answers(&channel, history, request.clone(), &node.readonly_token).await;
        assert!(
            contains(&ro, "DB_PASSWORD") && contains(&ro, mcp_core::servicedef::REDACTED),
            "the readonly history lost the key or shows no redaction"
        );
        let admin = answers(&channel, history, request, &node.admin_token).await;
        (called, admin)
    });
    assert!(
        contains(&admin_history, &secret),
        "an admin's history lacks the value"
    );
    // History, Status, Events, Logs, ... were all asked and answered.
    for path in ["History", "Status", "Events", "Ps", "ListFiles", "NodeInfo"] {
        let (_, len) = readonly_called
            .iter()
            .find(|(p, _)| p.ends_with(&format!("/{path}")))
            .unwrap_or_else(|| panic!("{path} was not called: {readonly_called:?}"));
        assert!(*len > 0, "{path} answered nothing");
    }
    let audit = std::fs::read_to_string(node.dir.path().join("audit.jsonl")).unwrap_or_default();
    assert!(!audit.is_empty(), "no audit file");
    assert!(!audit.contains(&secret), "the audit log carries a secret");
    assert!(
        !node.agent_log().contains(&secret),
        "the agent's log carries a secret"
    );
    // The CLI shows the readonly history redacted too.
    let shown = node
        .mcp_with_env(
            &["--json", "history", &service],
            &[("MCP_TOKEN", node.readonly_token.as_str())],
        )
        .success()
        .stdout;
    assert!(!shown.contains(&secret), "{shown}");
}

/// `[security] allowed_volume_roots`: a volume whose host side is outside
/// them is refused before anything changes, at its place in the file; one
/// inside deploys; `node info` shows the policy.
#[test]
fn volumes_outside_the_allowed_roots_are_refused_at_their_place() {
    let mut node = Node::start();
    let root = node.dir.path().join("volumes");
    std::fs::create_dir_all(root.join("data")).expect("mkdir");
    let root_text = root.display().to_string();
    node.reconfigure(|text| {
        text.push_str(&format!(
            "\n[security]\nallowed_volume_roots = [\"{root_text}\"]\n"
        ));
    });
    let info = node.mcp_json(&["node", "info"]);
    assert_eq!(
        info["nodes"][0]["allowed_volume_roots"],
        serde_json::json!([root_text]),
        "{info}"
    );

    let service = unique("vols");
    let image = node.env.image_v1.clone();
    let definition = |volumes: &str| {
        format!(
            "name = \"{service}\"\n\n[[components]]\nname = \"web\"\nimage = \"{image}\"\ncmd = [\"sleep\", \"3600\"]\nvolumes = [{volumes}]\n"
        )
    };
    let path = node.write_service(
        &service,
        &definition(&format!(
            "\"{root_text}/data:/data\", \"/etc:/host-etc:ro\""
        )),
    );
    let err = node.mcp(&["deploy", &service]).failure();
    // Line 7 of the file, the second string of the array.
    let col = definition(&format!(
        "\"{root_text}/data:/data\", \"/etc:/host-etc:ro\""
    ))
    .lines()
    .nth(6)
    .and_then(|l| l.find("\"/etc"))
    .expect("the volume's column")
        + 1;
    assert!(
        err.contains(&format!(
            "{}:7:{col}: {service}/web: host path /etc is outside [security] allowed_volume_roots ({root_text})",
            path.display()
        )),
        "{err}"
    );
    assert!(
        node.instances_of(&service).is_empty(),
        "something was created"
    );
    let status = node.mcp_json(&["status"]);
    assert!(!status.to_string().contains(&service), "{status}");

    // A path that climbs out by name, or through a symlink, is outside too.
    std::os::unix::fs::symlink("/etc", root.join("etc")).expect("symlink");
    for bad in [format!("{root_text}/../x"), format!("{root_text}/etc")] {
        node.write_service(&service, &definition(&format!("\"{bad}:/x\"")));
        let err = node.mcp(&["deploy", &service]).failure();
        assert!(
            err.contains("is outside [security] allowed_volume_roots"),
            "{bad}: {err}"
        );
    }

    node.write_service(
        &service,
        &definition(&format!("\"{root_text}/data:/data\"")),
    );
    node.mcp(&["deploy", &service]).success();
    assert_eq!(node.instances_of(&service).len(), 1);
}

/// `mcp logs -f` with a token that is removed while it follows: the agent
/// ends the follow with `Unauthenticated` within 30 s, the CLI says so, and
/// the audit records it.
#[test]
fn a_followed_log_ends_when_its_token_is_removed() {
    let mut node = Node::start();
    let service = unique("follow");
    node.write_service(
        &service,
        &format!(
            "name = \"{service}\"\n[[components]]\nname = \"web\"\nimage = \"{}\"\ncmd = [\"sh\", \"-c\", \"while true; do echo tick; sleep 1; done\"]\n",
            node.env.image_v1
        ),
    );
    node.mcp(&["deploy", &service]).success();
    let store = mcp_core::auth::local::TokenStore::new(node.dir.path().join("tokens.toml"));
    let token = store
        .add("follower", mcp_core::auth::Role::ReadOnly, None)
        .expect("add a token");
    let with_token = [("MCP_TOKEN", token.as_str())];
    // The agent picks the new token up within a second.
    let accepted = mcp_e2e::wait_for(Duration::from_secs(5), || {
        (node.mcp_with_env(&["list"], &with_token).code == 0).then_some(())
    });
    assert!(accepted.is_some(), "the new token was never accepted");

    let mut follow = node
        .mcp_command(&["logs", "-f", &service, "web"])
        .env("MCP_TOKEN", &token)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mcp logs -f");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        follow.try_wait().expect("try_wait").is_none(),
        "logs -f ended by itself"
    );
    assert!(store.remove("follower").expect("remove"));
    let removed = std::time::Instant::now();
    let status = loop {
        if let Some(status) = follow.try_wait().expect("try_wait") {
            break status;
        }
        if removed.elapsed() > Duration::from_secs(30) {
            let _ = follow.kill();
            panic!("logs -f outlived its token by 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = removed.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut follow.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert_ne!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("not authenticated"), "{stderr}");
    eprintln!("logs -f ended {took:?} after its token was removed");
    let record = mcp_e2e::wait_for(Duration::from_secs(10), || {
        node.audit_records()
            .into_iter()
            .find(|r| r["method"] == "/mcp.v1.AgentService/Logs" && r["caller"] == "follower")
    })
    .expect("the follow was not audited");
    assert_eq!(record["outcome"], "Unauthenticated", "{record}");
}
