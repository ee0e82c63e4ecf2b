//! The master's security envelope: every RPC it serves is authenticated
//! and authorised by the one role table, a `node` token can do nothing but
//! join and heartbeat, and every call is audited.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use mcp_core::auth::Role;
use mcp_core::auth::policy;
use mcp_core::client::raw::RawCodec;
use mcp_core::tls::{self, ClientTlsFiles, TlsConnector};
use mcp_master::server::SERVED_DESCRIPTORS;
use prost::Message;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::harness::TestMaster;

/// Every method of every service the master serves, from the descriptors.
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

async fn channel(master: &TestMaster) -> Channel {
    let config = tls::client_config(&ClientTlsFiles {
        ca_cert: master.ca.clone(),
        cert: None,
        key: None,
    })
    .unwrap();
    Endpoint::from_shared(format!("http://{}", master.addr))
        .unwrap()
        .connect_with_connector(TlsConnector::new(config))
        .await
        .unwrap()
}

/// Calls `path` with an empty message and `token` (if any): the gRPC code,
/// or `None` for a stream still open after 2 s (an accepted call).
async fn call(channel: &Channel, path: &str, token: Option<&str>) -> Option<Code> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let mut req = tonic::Request::new(Bytes::new());
    if let Some(t) = token {
        let value = tonic::metadata::MetadataValue::try_from(format!("Bearer {t}")).unwrap();
        req.metadata_mut().insert("authorization", value);
    }
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    let fut = async {
        grpc.ready().await.unwrap();
        grpc.unary(req, path, RawCodec).await
    };
    match tokio::time::timeout(Duration::from_secs(2), fut).await {
        Ok(Ok(_)) => Some(Code::Ok),
        Ok(Err(status)) => Some(status.code()),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_is_authenticated_and_a_node_token_only_joins() {
    let methods = served_methods();
    assert!(methods.contains("/mcp.v1.FleetService/Register"));
    assert!(methods.contains("/grpc.health.v1.Health/Check"));
    // The role table covers every served method; every fleet row and
    // every agent row is served (the master answers the agent API for the
    // fleet).
    for m in &methods {
        assert!(policy::is_listed(m), "{m} has no row in METHOD_ROLES");
    }
    for (p, _) in policy::METHOD_ROLES {
        if p.starts_with("/mcp.v1.FleetService/") || p.starts_with("/mcp.v1.AgentService/") {
            assert!(methods.contains(*p), "{p} is not served by the master");
        }
    }

    let master = TestMaster::start().await;
    let channel = channel(&master).await;
    let t = &master.tokens;
    let mut calls = 0;
    for m in &methods {
        let needed = policy::required_role(m);
        for token in [
            None,
            Some("mcp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ] {
            calls += 1;
            assert_eq!(
                call(&channel, m, token).await,
                Some(Code::Unauthenticated),
                "{m} with {token:?}"
            );
        }
        for (role, token) in [
            (Role::ReadOnly, &t.readonly),
            (Role::Admin, &t.admin),
            (Role::Node, &t.node),
        ] {
            calls += 1;
            let got = call(&channel, m, Some(token)).await;
            if role.permits(needed) {
                assert!(
                    !matches!(got, Some(Code::PermissionDenied | Code::Unauthenticated)),
                    "{m} with a {role} token: {got:?}"
                );
            } else {
                assert_eq!(got, Some(Code::PermissionDenied), "{m} with a {role} token");
            }
        }
    }
    // What the node token may do, spelled out.
    let node_may: Vec<&str> = methods
        .iter()
        .filter(|m| Role::Node.permits(policy::required_role(m)))
        .map(String::as_str)
        .collect();
    assert_eq!(
        node_may,
        [
            "/mcp.v1.FleetService/Heartbeat",
            "/mcp.v1.FleetService/Register"
        ]
    );

    // One audit record per call, with its true outcome, and no token.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = master.audit_lines();
        if lines.len() >= calls || tokio::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lines.len(), calls);
    let drains: Vec<_> = lines
        .iter()
        .filter(|l| l["method"] == "/mcp.v1.FleetService/Drain")
        .map(|l| {
            (
                l["caller"].as_str().unwrap_or("").to_string(),
                l["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        drains,
        [
            ("-".to_string(), "Unauthenticated".to_string()),
            ("-".to_string(), "Unauthenticated".to_string()),
            ("grafana".to_string(), "PermissionDenied".to_string()),
            // An empty name: the call went through and was refused by the handler.
            ("ops".to_string(), "InvalidArgument".to_string()),
            ("nodes".to_string(), "PermissionDenied".to_string()),
        ]
    );
    let text = std::fs::read_to_string(&master.audit_file).unwrap();
    for token in [&t.admin, &t.readonly, &t.node] {
        assert!(
            !text.contains(token.as_str()),
            "a token is in the audit file"
        );
    }
    master.stop().await;
}
