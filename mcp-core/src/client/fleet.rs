//! The client side of the master's fleet API (`FleetService`): agents
//! registering and heartbeating, operators listing, draining and planning;
//! and a master's answers to the agent API split per node, as an agent
//! would answer them.

use mcp_proto::v1 as pb;

use super::{Client, ClientError};
use crate::servicedef::ServiceDef;

impl Client {
    /// Registers this node with the master (an agent's call, with a `node`
    /// token); returns how often to heartbeat, in milliseconds.
    pub async fn register(&mut self, request: pb::RegisterRequest) -> Result<u32, ClientError> {
        let req = self.request(request);
        let res = self
            .fleet
            .register(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner().heartbeat_interval_ms)
    }

    /// Tells the master this node is alive (an agent's call).
    pub async fn heartbeat(
        &mut self,
        request: pb::HeartbeatRequest,
    ) -> Result<pb::HeartbeatResponse, ClientError> {
        let req = self.request(request);
        let res = self
            .fleet
            .heartbeat(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Every node of the fleet, by name.
    pub async fn nodes(&mut self) -> Result<Vec<pb::NodeSummary>, ClientError> {
        let req = self.request(pb::ListNodesRequest {});
        let res = self
            .fleet
            .list_nodes(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner().nodes)
    }

    /// Drains node `name`: nothing new goes there, its movable services
    /// are placed elsewhere. The node afterwards.
    pub async fn drain(&mut self, name: &str) -> Result<pb::NodeSummary, ClientError> {
        let req = self.request(pb::NodeRequest {
            name: name.to_string(),
        });
        let res = self
            .fleet
            .drain(req)
            .await
            .map_err(|s| self.status_err(s))?;
        res.into_inner()
            .node
            .ok_or_else(|| self.missing("drain", "node"))
    }

    /// Makes node `name` eligible again. The node afterwards.
    pub async fn undrain(&mut self, name: &str) -> Result<pb::NodeSummary, ClientError> {
        let req = self.request(pb::NodeRequest {
            name: name.to_string(),
        });
        let res = self
            .fleet
            .undrain(req)
            .await
            .map_err(|s| self.status_err(s))?;
        res.into_inner()
            .node
            .ok_or_else(|| self.missing("undrain", "node"))
    }

    /// Where `services` would go; changes nothing.
    pub async fn plan(
        &mut self,
        services: &[ServiceDef],
    ) -> Result<Vec<pb::PlannedPlacement>, ClientError> {
        let req = self.request(pb::PlanRequest {
            services: services.iter().map(ServiceDef::to_proto).collect(),
        });
        let res = self.fleet.plan(req).await.map_err(|s| self.status_err(s))?;
        Ok(res.into_inner().placements)
    }

    /// The error for an answer that lacks what it must hold.
    fn missing(&self, call: &str, what: &str) -> ClientError {
        ClientError::Rpc {
            node: self.node.clone(),
            code: tonic::Code::Internal,
            message: format!("the answer to {call} holds no {what}"),
        }
    }
}

/// The rows of a master's answer grouped by the node each names (a row
/// naming none is the master's own), in node order; an agent's answer,
/// whose rows name no node, stays one group under `node`.
fn by_node<T>(node: &str, rows: Vec<T>, node_of: impl Fn(&T) -> &str) -> Vec<(String, Vec<T>)> {
    if rows.iter().all(|r| node_of(r).is_empty()) {
        return vec![(node.to_string(), rows)];
    }
    let mut groups: std::collections::BTreeMap<String, Vec<T>> = Default::default();
    for row in rows {
        let name = match node_of(&row) {
            "" => node.to_string(),
            n => n.to_string(),
        };
        groups.entry(name).or_default().push(row);
    }
    groups.into_iter().collect()
}

/// A status answer as one report per node: a master's split by the node
/// of each row, an agent's as it is.
pub fn status_by_node(answer: pb::StatusResponse) -> Vec<pb::StatusResponse> {
    if !answer.node.is_empty() {
        return vec![answer];
    }
    let mut reports: std::collections::BTreeMap<String, pb::StatusResponse> = Default::default();
    for c in answer.components {
        let r = reports.entry(c.node.clone()).or_default();
        r.node = c.node.clone();
        r.components.push(c);
    }
    for i in answer.unmanaged {
        let r = reports.entry(i.node.clone()).or_default();
        r.node = i.node.clone();
        r.unmanaged.push(i);
    }
    reports.into_values().collect()
}

/// A ps answer as one report per node (see [`status_by_node`]).
pub fn ps_by_node(answer: pb::PsResponse) -> Vec<pb::PsResponse> {
    if !answer.node.is_empty() {
        return vec![answer];
    }
    let mut reports: std::collections::BTreeMap<String, pb::PsResponse> = Default::default();
    for i in answer.instances {
        let r = reports.entry(i.node.clone()).or_default();
        r.node = i.node.clone();
        r.instances.push(i);
    }
    for c in answer.missing {
        let r = reports.entry(c.node.clone()).or_default();
        r.node = c.node.clone();
        r.missing.push(c);
    }
    reports.into_values().collect()
}

/// A list answer from `node` (an agent, or the master) per node.
pub fn list_by_node(node: &str, answer: pb::ListResponse) -> Vec<(String, pb::ListResponse)> {
    by_node(node, answer.services, |s| &s.node)
        .into_iter()
        .map(|(n, services)| (n, pb::ListResponse { services }))
        .collect()
}

/// An events answer from `node` per node; the master's own events (about
/// no node) under `node`.
pub fn events_by_node(node: &str, answer: pb::EventsResponse) -> Vec<(String, pb::EventsResponse)> {
    by_node(node, answer.events, |e| &e.node)
        .into_iter()
        .map(|(n, events)| {
            (
                n,
                pb::EventsResponse {
                    events,
                    next_page_token: String::new(),
                },
            )
        })
        .collect()
}

/// A sync answer from `node` per node: each node's plan and results.
pub fn sync_by_node(node: &str, answer: pb::SyncResponse) -> Vec<(String, pb::SyncResponse)> {
    let dry_run = answer.dry_run;
    let mut results = by_node(node, answer.results, |r| &r.node);
    by_node(node, answer.plan, |p| &p.node)
        .into_iter()
        .map(|(n, plan)| {
            let results = results
                .iter_mut()
                .find(|(r, _)| *r == n)
                .map(|(_, r)| std::mem::take(r))
                .unwrap_or_default();
            (
                n,
                pb::SyncResponse {
                    plan,
                    dry_run,
                    results,
                },
            )
        })
        .collect()
}
