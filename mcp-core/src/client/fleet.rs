//! The client side of the master's fleet API (`FleetService`): agents
//! registering and heartbeating, operators listing, draining and planning.

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
