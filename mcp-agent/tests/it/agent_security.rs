//! The agent's security envelope over real sockets: TLS, the auth
//! interceptor on every RPC, roles, the audit log, and hostile input.
//!
//! Agents run in-process with a podman socket that does not exist: every
//! check here happens before a handler would need the runtime.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::mcias_double::Double;
use bytes::Bytes;
use mcp_agent::config::AgentConfig;
use mcp_agent::server::{Agent, SERVED_DESCRIPTORS, raise_open_files_limit};
use mcp_core::auth::Role;
use mcp_core::auth::local::TokenStore;
use mcp_core::auth::mcias::MciasConfig;
use mcp_core::auth::policy;
use mcp_core::client::raw::RawCodec;
use mcp_core::client::{Client, ClientError, ConnectOptions};
use mcp_core::tls::{self, ClientTlsFiles, TlsConnector};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

struct Tokens {
    admin: String,
    readonly: String,
    expired: String,
    /// A master's join token, which is worth nothing on an agent.
    node: String,
}

struct TestAgent {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    ca: PathBuf,
    tokens: Tokens,
    audit_file: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestAgent {
    async fn start() -> TestAgent {
        TestAgent::start_with(|_, _| {}).await
    }

    /// Starts an agent on a free loopback port with TLS from a fresh
    /// development CA and three tokens; `adjust` may change the config.
    async fn start_with(adjust: impl FnOnce(&mut AgentConfig, &std::path::Path)) -> TestAgent {
        let dir = tempfile::tempdir().unwrap();
        let pki = tls::ensure_dev_pki(&dir.path().join("tls"), &[]).unwrap();
        let mut config = AgentConfig::dev_defaults(dir.path());
        config.listen.address = Some("127.0.0.1:0".parse().unwrap());
        config.podman.socket = dir.path().join("no-podman.sock");
        config.tls.cert = Some(pki.server_cert.clone());
        config.tls.key = Some(pki.server_key.clone());
        let audit_file = dir.path().join("audit.jsonl");
        config.auth.audit_file = Some(audit_file.clone());
        let store = TokenStore::new(&config.auth.token_file);
        let tokens = Tokens {
            admin: store.add("ops", Role::Admin, None).unwrap(),
            readonly: store.add("grafana", Role::ReadOnly, None).unwrap(),
            expired: store
                .add(
                    "old",
                    Role::Admin,
                    Some(SystemTime::now() - Duration::from_secs(5)),
                )
                .unwrap(),
            node: store.add("joiner", Role::Node, None).unwrap(),
        };
        adjust(&mut config, dir.path());
        let agent = Agent::open(config).await.unwrap();
        let addr = agent.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            agent
                .serve(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        TestAgent {
            addr,
            ca: pki.ca_cert,
            dir,
            tokens,
            audit_file,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    fn tls_files(&self) -> ClientTlsFiles {
        ClientTlsFiles {
            ca_cert: self.ca.clone(),
            cert: None,
            key: None,
        }
    }

    async fn channel(&self) -> Channel {
        let config = tls::client_config(&self.tls_files()).unwrap();
        Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_with_connector(TlsConnector::new(config))
            .await
            .unwrap()
    }

    async fn client(&self, token: Option<&str>) -> Result<Client, ClientError> {
        let options = ConnectOptions {
            token: token.map(str::to_string),
            token_source: "the test".into(),
            tls: Some(self.tls_files()),
        };
        Client::connect("test", &self.addr.to_string(), &options).await
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit_file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

/// What a call came to: a gRPC code, or no answer within the time limit
/// (a stream that stays open, which only an accepted call does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Code(Code),
    StillRunning,
}

/// Calls `path` with an empty message and `authorization` set to `auth`
/// (raw bytes, so malformed values can be sent).
async fn call(channel: &Channel, path: &str, auth: Option<&[u8]>) -> Outcome {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let mut req = tonic::Request::new(Bytes::new());
    if let Some(a) = auth {
        let value = tonic::metadata::MetadataValue::try_from(a).unwrap();
        req.metadata_mut().insert("authorization", value);
    }
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    let fut = async {
        grpc.ready().await.unwrap();
        grpc.unary(req, path, RawCodec).await
    };
    match tokio::time::timeout(Duration::from_secs(2), fut).await {
        Ok(Ok(_)) => Outcome::Code(Code::Ok),
        Ok(Err(status)) => Outcome::Code(status.code()),
        Err(_) => Outcome::StillRunning,
    }
}

/// Every method of every served service, from the descriptors themselves.
fn served_methods() -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for set in SERVED_DESCRIPTORS {
        let set = prost_types::FileDescriptorSet::decode(*set).unwrap();
        for file in set.file {
            let package = file.package.clone().unwrap_or_default();
            for service in &file.service {
                for method in &service.method {
                    paths.insert(format!("/{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
    }
    paths
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_is_authenticated_and_authorised() {
    let methods = served_methods();
    // The agent's own API is all there, with health and reflection.
    assert!(methods.contains("/mcp.v1.AgentService/Deploy"));
    assert!(methods.contains("/grpc.health.v1.Health/Check"));
    assert!(methods.len() >= 13, "{methods:?}");
    // The role table covers every served method, and names nothing else
    // (but the master's fleet API, which the master's test walks).
    for m in &methods {
        assert!(
            policy::is_listed(m),
            "{m} has no row in auth::policy::METHOD_ROLES"
        );
    }
    for (p, _) in policy::METHOD_ROLES {
        assert!(
            methods.contains(*p) || p.starts_with("/mcp.v1.FleetService/"),
            "METHOD_ROLES names {p}, which is not served"
        );
        assert!(
            !methods.contains(*p) || !p.starts_with("/mcp.v1.FleetService/"),
            "the agent serves the master's {p}"
        );
    }

    let agent = TestAgent::start().await;
    let channel = agent.channel().await;
    let t = &agent.tokens;
    let mut calls = 0;
    for m in &methods {
        let needed = policy::required_role(m);
        let refused: [(&str, Option<Vec<u8>>); 6] = [
            ("no token", None),
            (
                "unknown token",
                Some(bearer("mcp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")),
            ),
            (
                "malformed scheme",
                Some(format!("Basic {}", t.admin).into_bytes()),
            ),
            ("empty bearer", Some(b"Bearer ".to_vec())),
            (
                "control characters",
                Some(format!("Bearer {}\t", t.admin).into_bytes()),
            ),
            ("expired token", Some(bearer(&t.expired))),
        ];
        for (what, auth) in refused {
            let got = call(&channel, m, auth.as_deref()).await;
            calls += 1;
            assert_eq!(got, Outcome::Code(Code::Unauthenticated), "{m} with {what}");
        }
        let ro = call(&channel, m, Some(&bearer(&t.readonly))).await;
        calls += 1;
        if needed == Role::Admin {
            assert_eq!(
                ro,
                Outcome::Code(Code::PermissionDenied),
                "{m} with a readonly token"
            );
        } else {
            assert!(
                !matches!(
                    ro,
                    Outcome::Code(Code::PermissionDenied | Code::Unauthenticated)
                ),
                "{m} with a readonly token: {ro:?}"
            );
        }
        // A node token (a master's) may do nothing on an agent.
        let node = call(&channel, m, Some(&bearer(&t.node))).await;
        calls += 1;
        assert_eq!(
            node,
            Outcome::Code(Code::PermissionDenied),
            "{m} with a node token"
        );
        let admin = call(&channel, m, Some(&bearer(&t.admin))).await;
        calls += 1;
        assert!(
            !matches!(
                admin,
                Outcome::Code(Code::PermissionDenied | Code::Unauthenticated)
            ),
            "{m} with an admin token: {admin:?}"
        );
    }

    // One audit record per call, accepted or not, once each has ended.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = agent.audit_lines();
        if lines.len() >= calls || tokio::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lines.len(), calls);
    let deploys: Vec<_> = lines
        .iter()
        .filter(|l| l["method"] == "/mcp.v1.AgentService/Deploy")
        .collect();
    assert_eq!(deploys.len(), 9);
    assert_eq!(deploys[0]["outcome"], "Unauthenticated");
    assert_eq!(deploys[0]["caller"], "-");
    assert_eq!(deploys[5]["reason"], "token expired");
    assert_eq!(deploys[6]["outcome"], "PermissionDenied");
    assert_eq!(deploys[6]["caller"], "grafana");
    assert_eq!(deploys[7]["outcome"], "PermissionDenied");
    assert_eq!(deploys[7]["caller"], "joiner");
    assert_eq!(deploys[8]["caller"], "ops");
    assert_eq!(deploys[8]["auth"], "local");
    for l in &lines {
        assert!(l["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{l}");
        assert!(l["duration_ms"].as_f64().unwrap() >= 0.0);
        assert!(l["time"].as_str().unwrap().ends_with('Z'));
    }
    let text = std::fs::read_to_string(&agent.audit_file).unwrap();
    for token in [&t.admin, &t.readonly, &t.expired, &t.node] {
        assert!(
            !text.contains(token.as_str()),
            "a token is in the audit file"
        );
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcias_callers_are_authenticated_through_the_agent() {
    const NODE_INFO: &str = "/mcp.v1.AgentService/NodeInfo";
    const LIST: &str = "/mcp.v1.AgentService/List";
    const DEPLOY: &str = "/mcp.v1.AgentService/Deploy";
    // Long enough that a token validated just before the outage is still
    // cached when it is tried again, short enough to wait out.
    const TTL: Duration = Duration::from_secs(2);

    let double = Double::start().await;
    let (admin, ro, norole, expired, cached, late) = (
        "mcias-tok-admin-0123456789",
        "mcias-tok-readonly-0123456789",
        "mcias-tok-norole-0123456789",
        "mcias-tok-expired-0123456789",
        "mcias-tok-cached-0123456789",
        "mcias-tok-late-0123456789",
    );
    double.add_user(admin, "alice", &["admin", "other"], None);
    double.add_user(ro, "bob", &["readonly"], None);
    double.add_user(norole, "carol", &["other"], None);
    double.add_user(
        expired,
        "dave",
        &["admin"],
        Some(SystemTime::now() - Duration::from_secs(60)),
    );
    double.add_user(cached, "erin", &["admin"], None);
    double.add_user(late, "frank", &["admin"], None);
    let mcias = MciasConfig {
        url: double.url(),
        ca_cert: Some(double.ca.pem_path.clone()),
        cache_ttl: TTL,
        cache_size: 64,
        timeout: Duration::from_secs(1),
        admin_roles: vec!["admin".into()],
        readonly_roles: vec!["readonly".into()],
    };
    let agent = TestAgent::start_with(move |config, _| {
        config.auth.mcias = Some(mcias);
    })
    .await;
    let channel = agent.channel().await;
    let code = |c: Code| Outcome::Code(c);
    let refused = |o: Outcome| {
        matches!(
            o,
            Outcome::Code(Code::PermissionDenied | Code::Unauthenticated)
        )
    };

    // Roles come from MCIAS.
    assert_eq!(
        call(&channel, NODE_INFO, Some(&bearer(admin))).await,
        code(Code::Ok)
    );
    let list = call(&channel, LIST, Some(&bearer(admin))).await;
    assert!(!refused(list), "List with an MCIAS admin: {list:?}");
    assert_eq!(
        call(&channel, DEPLOY, Some(&bearer(ro))).await,
        code(Code::PermissionDenied)
    );
    assert_eq!(
        call(&channel, NODE_INFO, Some(&bearer(ro))).await,
        code(Code::Ok)
    );
    assert_eq!(
        call(&channel, NODE_INFO, Some(&bearer(norole))).await,
        code(Code::PermissionDenied),
        "an MCIAS user without a mapped role may call nothing"
    );
    assert_eq!(
        call(&channel, NODE_INFO, Some(&bearer("mcias-tok-unknown"))).await,
        code(Code::Unauthenticated)
    );
    assert_eq!(
        call(&channel, NODE_INFO, Some(&bearer(expired))).await,
        code(Code::Unauthenticated)
    );
    // Local tokens still work alongside MCIAS.
    assert_eq!(
        call(&channel, NODE_INFO, Some(&bearer(&agent.tokens.admin))).await,
        code(Code::Ok)
    );
    // And through the client library.
    let mut client = agent.client(Some(ro)).await.unwrap();
    assert!(!client.node_info().await.unwrap().runtime_available);

    // An outage: a token validated just before keeps working for the cache
    // TTL, a token never seen fails closed, local tokens are unaffected.
    assert_eq!(
        call(&channel, NODE_INFO, Some(&bearer(cached))).await,
        code(Code::Ok)
    );
    double.shut_down().await;
    assert_eq!(
        call(&channel, NODE_INFO, Some(&bearer(cached))).await,
        code(Code::Ok),
        "a cached MCIAS token must survive an outage within its TTL"
    );
    assert_eq!(
        call(&channel, NODE_INFO, Some(&bearer(late))).await,
        code(Code::Unavailable),
        "an uncached token must fail closed while MCIAS is down"
    );
    assert_eq!(
        call(&channel, NODE_INFO, Some(&bearer(&agent.tokens.admin))).await,
        code(Code::Ok)
    );
    tokio::time::sleep(TTL + Duration::from_millis(500)).await;
    assert_eq!(
        call(&channel, NODE_INFO, Some(&bearer(cached))).await,
        code(Code::Unavailable),
        "past its TTL a cached token must be validated again, and fail closed"
    );

    // The audit log names MCIAS callers and never holds a token. Records
    // are written as calls end: wait until the expected ones are there.
    let expected = [
        (NODE_INFO, "alice", "mcias", "Ok"),
        (DEPLOY, "bob", "mcias", "PermissionDenied"),
        (NODE_INFO, "bob", "mcias", "Ok"),
        (NODE_INFO, "carol", "mcias", "PermissionDenied"),
        (NODE_INFO, "erin", "mcias", "Ok"),
        (NODE_INFO, "ops", "local", "Ok"),
        (NODE_INFO, "-", "-", "Unauthenticated"),
        (NODE_INFO, "-", "-", "Unavailable"),
    ];
    let missing = |lines: &[serde_json::Value]| {
        expected
            .iter()
            .filter(|(method, caller, auth, outcome)| {
                !lines.iter().any(|l| {
                    l["method"] == *method
                        && l["caller"] == *caller
                        && l["auth"] == *auth
                        && l["outcome"] == *outcome
                })
            })
            .copied()
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = agent.audit_lines();
        if missing(&lines).is_empty() || tokio::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(missing(&lines), [], "{lines:#?}");
    let text = std::fs::read_to_string(&agent.audit_file).unwrap();
    for token in [
        admin,
        ro,
        norole,
        expired,
        cached,
        late,
        "mcias-tok-unknown",
    ] {
        assert!(!text.contains(token), "{token} is in the audit file");
    }
    assert!(!text.contains(agent.tokens.admin.as_str()));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reports_auth_failures_clearly() {
    let agent = TestAgent::start().await;
    let mut anon = agent.client(None).await.unwrap();
    let err = anon.node_info().await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthenticated { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("no bearer token") && msg.contains("MCP_TOKEN"),
        "{msg}"
    );

    let mut ro = agent.client(Some(&agent.tokens.readonly)).await.unwrap();
    let info = ro.node_info().await.unwrap();
    assert!(!info.runtime_available);
    let err = ro.remove("web").await.unwrap_err();
    assert!(matches!(err, ClientError::PermissionDenied { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("grafana (readonly) may not call Remove: it needs the admin role"),
        "{err}"
    );

    let mut expired = agent.client(Some(&agent.tokens.expired)).await.unwrap();
    let err = expired.list().await.unwrap_err().to_string();
    assert!(
        err.contains("token expired") && err.contains("the test"),
        "{err}"
    );

    // A token that cannot travel in a header is refused before dialling.
    let err = agent.client(Some("mcp_a\nb")).await.err().unwrap();
    assert!(matches!(err, ClientError::Unauthenticated { .. }), "{err}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_name_the_ca_and_host() {
    let agent = TestAgent::start().await;
    // A CA that did not sign the agent's certificate.
    let other = tls::ensure_dev_pki(&agent.dir.path().join("other"), &[]).unwrap();
    let options = ConnectOptions {
        token: Some(agent.tokens.admin.clone()),
        token_source: "the test".into(),
        tls: Some(ClientTlsFiles {
            ca_cert: other.ca_cert.clone(),
            cert: None,
            key: None,
        }),
    };
    let err = Client::connect("test", &agent.addr.to_string(), &options)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&other.ca_cert.display().to_string()), "{msg}");
    assert!(msg.contains(&agent.addr.to_string()), "{msg}");
    assert!(msg.contains("not signed by"), "{msg}");

    // Plaintext against a TLS port.
    let plain = ConnectOptions {
        tls: None,
        ..options.clone()
    };
    let mut c = Client::connect("test", &agent.addr.to_string(), &plain)
        .await
        .unwrap();
    assert!(c.node_info().await.is_err());

    // A missing CA file is named.
    let missing = ConnectOptions {
        tls: Some(ClientTlsFiles {
            ca_cert: agent.dir.path().join("nope.pem"),
            cert: None,
            key: None,
        }),
        ..options
    };
    let err = Client::connect("test", &agent.addr.to_string(), &missing)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("nope.pem"), "{err}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_can_be_required() {
    let agent = TestAgent::start_with(|config, dir| {
        let pki = tls::ensure_dev_pki(&dir.join("tls"), &[]).unwrap();
        config.tls.client_ca = Some(pki.ca_cert);
    })
    .await;
    let err = agent
        .client(Some(&agent.tokens.admin))
        .await
        .err()
        .expect("a client without a certificate must be refused");
    assert!(
        matches!(err, ClientError::Tls { .. } | ClientError::Connect { .. }),
        "{err}"
    );
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    let pki_dir = agent.dir.path().join("tls");
    let (cert, key) = (
        agent.dir.path().join("me.pem"),
        agent.dir.path().join("me.key"),
    );
    tls::issue_cert(
        &pki_dir.join("ca.pem"),
        &pki_dir.join("ca.key"),
        "operator",
        &[],
        true,
        &cert,
        &key,
    )
    .unwrap();
    let options = ConnectOptions {
        token: Some(agent.tokens.admin.clone()),
        token_source: "the test".into(),
        tls: Some(ClientTlsFiles {
            ca_cert: agent.ca.clone(),
            cert: Some(cert),
            key: Some(key),
        }),
    };
    let mut c = Client::connect("test", &agent.addr.to_string(), &options)
        .await
        .unwrap();
    assert_eq!(c.node_info().await.unwrap().node_name, "local");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_metadata_is_refused_and_the_agent_keeps_serving() {
    let agent = TestAgent::start().await;
    let channel = agent.channel().await;
    let admin = bearer(&agent.tokens.admin);
    // A token over 4096 bytes: refused by the interceptor.
    let long = bearer(&"a".repeat(5000));
    assert_eq!(
        call(&channel, "/mcp.v1.AgentService/List", Some(&long)).await,
        Outcome::Code(Code::Unauthenticated)
    );
    // Metadata over the agent's header limit: refused by HTTP/2 itself.
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let mut req = tonic::Request::new(Bytes::new());
    req.metadata_mut().insert(
        "authorization",
        tonic::metadata::MetadataValue::try_from(&admin[..]).unwrap(),
    );
    req.metadata_mut()
        .insert("x-padding", "p".repeat(64 * 1024).parse().unwrap());
    grpc.ready().await.unwrap();
    let res = grpc
        .unary(
            req,
            http::uri::PathAndQuery::from_static("/mcp.v1.AgentService/List"),
            RawCodec,
        )
        .await;
    assert!(res.is_err(), "64 KiB of metadata was accepted");
    // The agent still answers, on a fresh connection and on the old one.
    let fresh = agent.channel().await;
    assert_eq!(
        call(&fresh, "/mcp.v1.AgentService/NodeInfo", Some(&admin)).await,
        Outcome::Code(Code::Ok)
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_with_control_or_non_ascii_bytes_are_refused() {
    let agent = TestAgent::start().await;
    let channel = agent.channel().await;
    let valid = &agent.tokens.admin;
    for bad in [
        format!("Bearer {valid}\t").into_bytes(),
        format!("Bearer \t{valid}").into_bytes(),
        [b"Bearer ".as_slice(), valid.as_bytes(), b"\xff\xfe"].concat(),
        [b"Bearer mcp_".as_slice(), "é".as_bytes()].concat(),
        format!("Bearer {valid} {valid}").into_bytes(),
    ] {
        assert_eq!(
            call(&channel, "/mcp.v1.AgentService/NodeInfo", Some(&bad)).await,
            Outcome::Code(Code::Unauthenticated),
            "{bad:?}"
        );
    }
    assert_eq!(
        call(
            &channel,
            "/mcp.v1.AgentService/NodeInfo",
            Some(&bearer(valid))
        )
        .await,
        Outcome::Code(Code::Ok)
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_handshakes_are_dropped() {
    let agent = TestAgent::start_with(|config, _| {
        config.tls.handshake_timeout = Duration::from_secs(1);
    })
    .await;
    let admin = bearer(&agent.tokens.admin);
    // Random bytes, a plaintext HTTP/2 preface, and a silent client.
    let mut garbage = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5])
        .await
        .unwrap();
    let mut preface = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut silent = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    // While they hang around, an authenticated client is served.
    let channel = agent.channel().await;
    assert_eq!(
        call(&channel, "/mcp.v1.AgentService/NodeInfo", Some(&admin)).await,
        Outcome::Code(Code::Ok)
    );
    // Each is closed by the agent: garbage at once, silence at the timeout.
    for (what, conn) in [
        ("garbage", &mut garbage),
        ("plaintext", &mut preface),
        ("silent", &mut silent),
    ] {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "{what}: the agent kept the connection open");
    }
    assert_eq!(
        call(&channel, "/mcp.v1.AgentService/NodeInfo", Some(&admin)).await,
        Outcome::Code(Code::Ok)
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_unauthenticated_connections_do_not_starve_real_clients() {
    raise_open_files_limit();
    // All from one address here: the per-peer limit is the subject of
    // another test.
    let agent = TestAgent::start_with(|c, _| c.limits.max_connections_per_peer = 4096).await;
    let config = tls::client_config(&agent.tls_files()).unwrap();
    let uri = format!("http://{}", agent.addr);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let config = config.clone();
        let uri = uri.clone();
        tasks.spawn(async move {
            let channel = match Endpoint::from_shared(uri)
                .unwrap()
                .connect_with_connector(TlsConnector::new(config))
                .await
            {
                Ok(c) => c,
                Err(_) => return None,
            };
            let got = call(&channel, "/mcp.v1.AgentService/Status", None).await;
            // Hold the connection until all have been made.
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some(got)
        });
    }
    // Meanwhile, the operator's client keeps working.
    let mut operator = agent.client(Some(&agent.tokens.admin)).await.unwrap();
    for _ in 0..20 {
        assert_eq!(operator.node_info().await.unwrap().node_name, "local");
    }
    let mut answered = 0;
    let mut dropped = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Some(Outcome::Code(Code::Unauthenticated)) => answered += 1,
            // Refused, dropped, or (on a loaded host) not answered within
            // the call's 2 s: none of these let the caller in.
            Some(Outcome::Code(Code::Unavailable) | Outcome::StillRunning) | None => dropped += 1,
            other => panic!("an unauthenticated call got {other:?}"),
        }
    }
    assert_eq!(answered + dropped, 1000);
    assert!(answered >= 900, "only {answered} of 1000 were answered");
    assert_eq!(operator.node_info().await.unwrap().node_name, "local");
    agent.stop().await;
}

#[tokio::test]
async fn listen_rules_hold_for_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls::ensure_dev_pki(&dir.path().join("tls"), &[]).unwrap();
    let base = || {
        let mut c = AgentConfig::dev_defaults(dir.path());
        c.podman.socket = dir.path().join("no-podman.sock");
        c.tls.cert = Some(pki.server_cert.clone());
        c.tls.key = Some(pki.server_key.clone());
        c
    };
    // An explicit address.
    let mut c = base();
    c.apply_listen_flag("127.0.0.1:0").unwrap();
    let agent = Agent::open(c).await.unwrap();
    assert_eq!(agent.local_addr().unwrap().ip().to_string(), "127.0.0.1");
    drop(agent);
    // An interface's address.
    let mut c = base();
    c.apply_toml(
        std::path::Path::new("a.toml"),
        "listen_interface = \"lo\"\nport = 0\n",
    )
    .unwrap();
    let agent = Agent::open(c).await.unwrap();
    assert_eq!(agent.local_addr().unwrap().ip().to_string(), "127.0.0.1");
    drop(agent);
    // A wildcard, refused, then allowed explicitly.
    let mut c = base();
    c.apply_listen_flag("0.0.0.0:0").unwrap();
    let err = Agent::open(c.clone()).await.err().unwrap().to_string();
    assert!(err.contains("wildcard"), "{err}");
    c.listen.allow_wildcard = true;
    let agent = Agent::open(c).await.unwrap();
    assert!(agent.local_addr().unwrap().ip().is_unspecified());
    drop(agent);
    // No TLS material and no explicit insecure: refused.
    let mut c = base();
    c.apply_listen_flag("127.0.0.1:0").unwrap();
    c.tls.cert = None;
    c.tls.key = None;
    let err = Agent::open(c.clone()).await.err().unwrap().to_string();
    assert!(
        err.contains("no TLS certificate") && err.contains("insecure"),
        "{err}"
    );
    c.tls.insecure = true;
    assert!(Agent::open(c).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_agents_speak_plaintext_with_auth_still_on() {
    let agent = TestAgent::start_with(|config, _| {
        config.tls.insecure = true;
    })
    .await;
    let options = |token: Option<&str>| ConnectOptions {
        token: token.map(str::to_string),
        token_source: "the test".into(),
        tls: None,
    };
    let mut c = Client::connect("test", &agent.addr.to_string(), &options(None))
        .await
        .unwrap();
    let err = c.list().await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthenticated { .. }), "{err}");
    let mut c = Client::connect(
        "test",
        &agent.addr.to_string(),
        &options(Some(&agent.tokens.admin)),
    )
    .await
    .unwrap();
    assert_eq!(c.node_info().await.unwrap().node_name, "local");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_others_may_write_keeps_the_agent_from_starting() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let pki = tls::ensure_dev_pki(&dir.path().join("tls"), &[]).unwrap();
    let mut config = AgentConfig::dev_defaults(dir.path());
    config.listen.address = Some("127.0.0.1:0".parse().unwrap());
    config.podman.socket = dir.path().join("no-podman.sock");
    config.tls.cert = Some(pki.server_cert.clone());
    config.tls.key = Some(pki.server_key.clone());
    TokenStore::new(&config.auth.token_file)
        .add("ops", Role::Admin, None)
        .unwrap();
    let path = config.auth.token_file.clone();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = Agent::open(config).await.err().expect("refused");
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()) && text.contains("writable by everyone"),
        "{text}"
    );
}

/// A gRPC health-checking client of `agent` that sends `token`.
async fn health_client(
    agent: &TestAgent,
    token: &str,
) -> tonic_health::pb::health_client::HealthClient<
    tonic::service::interceptor::InterceptedService<
        Channel,
        impl tonic::service::Interceptor + use<>,
    >,
> {
    let value: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    tonic_health::pb::health_client::HealthClient::with_interceptor(
        agent.channel().await,
        move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", value.clone());
            Ok(r)
        },
    )
}

/// A call that stays open ends with its token: the token is removed from
/// the file while a health watch runs, and the watch ends with
/// `Unauthenticated` within the recheck period, audited so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_ends_when_its_token_is_removed() {
    use tonic_health::pb::HealthCheckRequest;
    let agent = TestAgent::start().await;
    let store = TokenStore::new(AgentConfig::dev_defaults(agent.dir.path()).auth.token_file);
    let token = store.add("watcher", Role::ReadOnly, None).unwrap();
    let mut health = health_client(&agent, &token).await;
    // The agent picks the new token up within a second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new token was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    // The first answer comes at once; the watch then stays open.
    watch.message().await.unwrap().unwrap();
    let quiet = tokio::time::timeout(Duration::from_secs(2), watch.message()).await;
    assert!(quiet.is_err(), "the watch ended by itself: {quiet:?}");

    assert!(store.remove("watcher").unwrap());
    let removed = tokio::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(30), watch.message())
        .await
        .expect("the watch outlived its token by 30 s");
    let status = ended.expect_err("the watch ended without an error");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("no longer valid"), "{status:?}");
    let took = removed.elapsed();
    assert!(took <= Duration::from_secs(30), "{took:?}");
    eprintln!("the watch ended {took:?} after its token was removed");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let record = loop {
        let found = agent
            .audit_lines()
            .into_iter()
            .find(|l| l["method"] == "/grpc.health.v1.Health/Watch" && l["caller"] == "watcher");
        if found.is_some() || tokio::time::Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let record = record.expect("the watch was not audited");
    assert_eq!(record["outcome"], "Unauthenticated", "{record}");
    assert!(
        record["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no longer valid"),
        "{record}"
    );
    agent.stop().await;
}

/// `Events` answers a bounded page with a cursor; MCP's client (the CLI's
/// and Python's) pages through to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_answered_in_pages_and_the_client_reads_them_all() {
    let agent = TestAgent::start_with(|config, _| {
        let registry = mcp_agent::registry::Registry::open(&config.db).unwrap();
        for i in 0..1_200 {
            registry
                .record_event("app", Some("web"), "e", &i.to_string())
                .unwrap();
        }
    })
    .await;
    let mut client = agent.client(Some(&agent.tokens.readonly)).await.unwrap();
    let all = client.events(Some("app"), None, None).await.unwrap();
    let details: Vec<String> = all.events.iter().map(|e| e.detail.clone()).collect();
    assert_eq!(
        details,
        (0..1_200).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    let last = client.events(None, None, Some(700)).await.unwrap();
    assert_eq!(last.events.len(), 700);
    assert_eq!(last.events[0].detail, "500");

    // One call answers one page.
    let channel = agent.channel().await;
    let mut raw = mcp_proto::v1::agent_service_client::AgentServiceClient::new(channel);
    let request = |page_token: &str, page_size: u32| {
        let mut r = tonic::Request::new(mcp_proto::v1::EventsRequest {
            page_token: page_token.to_string(),
            page_size,
            ..Default::default()
        });
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", agent.tokens.readonly).parse().unwrap(),
        );
        r
    };
    let first = raw.events(request("", 0)).await.unwrap().into_inner();
    assert_eq!(first.events.len(), 500);
    assert!(!first.next_page_token.is_empty());
    let big = raw.events(request("", 100_000)).await.unwrap().into_inner();
    assert_eq!(big.events.len(), 1_000);
    let second = raw
        .events(request(&first.next_page_token, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.events[0].detail, "500");
    let bad = raw.events(request("nonsense", 0)).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("page_token"), "{bad:?}");
    agent.stop().await;
}

/// A flood of made-up tokens from one address: MCP-shaped ones are refused
/// without asking MCIAS, the others reach it only while the address has
/// failure budget left; meanwhile a valid MCIAS token nobody used yet,
/// from another address, validates at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_tokens_spares_mcias_and_real_callers() {
    use mcp_core::auth::budget::{BURST, PER_SECOND};
    const NODE_INFO: &str = "/mcp.v1.AgentService/NodeInfo";
    let double = Double::start().await;
    let real = "mcias-real-user-token-0123456789";
    double.add_user(real, "alice", &["admin"], None);
    let mcias = MciasConfig {
        url: double.url(),
        ca_cert: Some(double.ca.pem_path.clone()),
        cache_ttl: Duration::from_secs(60),
        cache_size: 1024,
        timeout: Duration::from_secs(5),
        admin_roles: vec!["admin".into()],
        readonly_roles: vec!["readonly".into()],
    };
    let agent = TestAgent::start_with(move |config, _| config.auth.mcias = Some(mcias)).await;
    // The attacker's connection comes from an address of its own.
    let config = tls::client_config(&agent.tls_files()).unwrap();
    let addr = agent.addr;
    let from_elsewhere = tower::service_fn(move |_: http::Uri| {
        let config = config.clone();
        async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind("127.0.0.6:0".parse().unwrap())?;
            let tcp = socket.connect(addr).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let attacker = Endpoint::from_shared(format!("http://{}", agent.addr))
        .unwrap()
        .connect_with_connector(from_elsewhere)
        .await
        .unwrap();

    let started = tokio::time::Instant::now();
    let flood = {
        let attacker = attacker.clone();
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for worker in 0..50 {
                let channel = attacker.clone();
                tasks.spawn(async move {
                    let (mut refused, mut busy) = (0, 0);
                    for i in 0..200 {
                        let token = if i % 2 == 0 {
                            mcp_core::auth::local::generate_token()
                        } else {
                            format!(
                                "made-up-{worker}-{i}-{}",
                                mcp_core::auth::local::generate_token()
                            )
                        };
                        match call(&channel, NODE_INFO, Some(&bearer(&token))).await {
                            Outcome::Code(Code::Unauthenticated) => refused += 1,
                            // Every MCIAS slot taken: refused at once.
                            Outcome::Code(Code::Unavailable) => busy += 1,
                            other => panic!("a made-up token got {other:?}"),
                        }
                    }
                    (refused, busy)
                });
            }
            let (mut refused, mut busy) = (0, 0);
            while let Some(n) = tasks.join_next().await {
                let (r, b) = n.unwrap();
                refused += r;
                busy += b;
            }
            (refused, busy)
        })
    };
    // In the middle of it, the operator's first call with a real token.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = tokio::time::Instant::now();
    let mut operator = agent.client(Some(real)).await.unwrap();
    let info = operator.node_info().await;
    let took = asked.elapsed();
    assert!(info.is_ok(), "the real token was refused: {info:?}");
    let (refused, busy) = flood.await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(refused + busy, 10_000);
    let asked_mcias = double.requests();
    eprintln!(
        "10,000 made-up tokens in {elapsed:?}: {refused} refused, {busy} refused at once as MCIAS was busy; MCIAS asked {asked_mcias} times; a real uncached MCIAS token validated in {took:?} during the flood"
    );
    // What the budget allows over the flood's time, and the real token.
    let allowed = BURST + PER_SECOND * elapsed.as_secs_f64() + 1.0;
    assert!(
        (asked_mcias as f64) <= allowed,
        "MCIAS was asked {asked_mcias} times; the failure budget allows {allowed:.0}"
    );
    agent.stop().await;
}

/// A small tmpfs, unmounted when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &std::path::Path) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs (this test needs root)"
        );
        SmallFs(dir.to_path_buf())
    }

    /// Fills the file system up; returns the filler.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.write_all(&[0u8; 1]);
        filler
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The audit file on a full disk: no half line is ever left in it; with
/// `audit_required`, changes are refused until it takes records again
/// (queries are served); without, everything is served and the failure
/// shows in `NodeInfo`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_audit_file() {
    const DEPLOY: &str = "/mcp.v1.AgentService/Deploy";
    for required in [true, false] {
        let root = tempfile::tempdir().unwrap();
        let fs = SmallFs::mount(&root.path().join("audit"));
        let audit_file = fs.0.join("audit.jsonl");
        let file = audit_file.clone();
        let agent = TestAgent::start_with(move |config, _| {
            config.auth.audit_file = Some(file);
            config.auth.audit_required = required;
        })
        .await;
        let channel = agent.channel().await;
        let mut client = agent.client(Some(&agent.tokens.admin)).await.unwrap();
        assert!(!client.node_info().await.unwrap().audit_file_failing);

        let filler = fs.fill();
        // Records keep coming; the writer finds the disk full.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let info = client.node_info().await.unwrap();
            if info.audit_file_failing {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the failure never showed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let refused = call(&channel, DEPLOY, Some(&bearer(&agent.tokens.admin))).await;
        if required {
            assert_eq!(
                refused,
                Outcome::Code(Code::Unavailable),
                "a change while the audit fails"
            );
        } else {
            assert_eq!(refused, Outcome::Code(Code::InvalidArgument), "served on");
        }
        // A query is served either way.
        assert!(client.node_info().await.is_ok());
        let text = std::fs::read_to_string(&audit_file).unwrap();
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("a half-written line {line:?}: {e}"));
        }
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "the file ends in half a line"
        );

        // Room again: the kept records are written, changes pass again.
        std::fs::remove_file(filler).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while client.node_info().await.unwrap().audit_file_failing {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the audit file never recovered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            call(&channel, DEPLOY, Some(&bearer(&agent.tokens.admin))).await,
            Outcome::Code(Code::InvalidArgument)
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let deploys = loop {
            let deploys: Vec<String> = std::fs::read_to_string(&audit_file)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|l| l["method"] == DEPLOY)
                .map(|l| l["outcome"].as_str().unwrap_or_default().to_string())
                .collect();
            if deploys.len() == 2 || tokio::time::Instant::now() > deadline {
                break deploys;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let first = if required {
            "Unavailable"
        } else {
            "InvalidArgument"
        };
        assert_eq!(deploys, [first, "InvalidArgument"], "required = {required}");
        assert_eq!(client.node_info().await.unwrap().audit_records_lost, 0);
        agent.stop().await;
        drop(fs);
    }
}

/// `[limits] idle_timeout`: a connection that opens no call is closed once
/// the timeout passes; one with a call open (a health watch) is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_busy_ones_kept() {
    use tonic_health::pb::HealthCheckRequest;
    let agent = TestAgent::start_with(|c, _| c.limits.idle_timeout = Duration::from_secs(2)).await;

    // An HTTP/2 connection that never calls.
    let config = tls::client_config(&agent.tls_files()).unwrap();
    let tcp = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(agent.addr.ip().into());
    let mut idle = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS
    idle.write_all(&preface).await.unwrap();
    let opened = tokio::time::Instant::now();

    // Meanwhile a watch stays open past the timeout on another connection.
    let mut health = health_client(&agent, &agent.tokens.readonly).await;
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().unwrap();

    // The idle one is closed: its reads end.
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 1024];
        while matches!(idle.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "the idle connection was still open after 30 s"
    );
    let lasted = opened.elapsed();
    assert!(
        lasted >= Duration::from_secs(2),
        "closed after {lasted:?}, before its timeout"
    );
    eprintln!("an idle connection was closed after {lasted:?}");

    // The watch is still there, past the timeout too.
    let quiet = tokio::time::timeout(Duration::from_secs(2), watch.message()).await;
    assert!(quiet.is_err(), "the open watch ended: {quiet:?}");
    drop((watch, health));
    agent.stop().await;
}
