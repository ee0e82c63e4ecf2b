//! The client of the agent's gRPC API, used by `mcp`, the Python bindings
//! and the tests. One [`Client`] talks to one node.

use std::time::Duration;

use futures::{Stream, StreamExt};
use mcp_proto::v1 as pb;
use mcp_proto::v1::agent_service_client::AgentServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::reconcile::PullPolicy;
use crate::servicedef::ServiceDef;

/// Why a call to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The agent could not be reached.
    #[error("cannot reach the agent of node {node} at {address}: {reason}")]
    Connect {
        /// Node name.
        node: String,
        /// Address dialled.
        address: String,
        /// The root cause, in one line.
        reason: String,
    },
    /// The agent answered with an error.
    #[error("{node}: {message}")]
    Rpc {
        /// Node name.
        node: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The agent's message.
        message: String,
    },
    /// The address is not usable.
    #[error("invalid agent address {address:?}: {reason}")]
    Address {
        /// The address given.
        address: String,
        /// What is wrong.
        reason: String,
    },
}

impl ClientError {
    /// The gRPC code, for errors the agent returned.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Rpc { code, .. } => Some(*code),
            ClientError::Connect { .. } => Some(tonic::Code::Unavailable),
            ClientError::Address { .. } => None,
        }
    }
}

/// The innermost cause of an error, which is what a person needs to read.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A connection to one node's agent.
#[derive(Clone)]
pub struct Client {
    inner: AgentServiceClient<Channel>,
    node: String,
    address: String,
    token: Option<String>,
}

impl Client {
    /// Connects to the agent of `node` at `address` (`host:port`), sending
    /// `token` as a bearer token with every call when given.
    pub async fn connect(
        node: &str,
        address: &str,
        token: Option<String>,
    ) -> Result<Client, ClientError> {
        let uri = if address.contains("://") {
            address.to_string()
        } else {
            format!("http://{address}")
        };
        let endpoint = Endpoint::from_shared(uri).map_err(|e| ClientError::Address {
            address: address.to_string(),
            reason: root_cause(&e),
        })?;
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| ClientError::Connect {
                node: node.to_string(),
                address: address.to_string(),
                reason: root_cause(&e),
            })?;
        Ok(Client {
            inner: AgentServiceClient::new(channel).max_decoding_message_size(64 << 20),
            node: node.to_string(),
            address: address.to_string(),
            token,
        })
    }

    /// The node this client talks to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The agent's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(token) = &self.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            req.metadata_mut().insert("authorization", value);
        }
        req
    }

    fn status_err(&self, status: tonic::Status) -> ClientError {
        if status.code() == tonic::Code::Unavailable && status.message().contains("transport") {
            return ClientError::Connect {
                node: self.node.clone(),
                address: self.address.clone(),
                reason: status.message().to_string(),
            };
        }
        ClientError::Rpc {
            node: self.node.clone(),
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// Pushes a definition; with `component`, deploys that component only.
    pub async fn deploy(
        &mut self,
        def: &ServiceDef,
        component: Option<&str>,
        pull: PullPolicy,
    ) -> Result<pb::DeployResponse, ClientError> {
        let req = self.request(pb::DeployRequest {
            service: Some(def.to_proto()),
            component: component.unwrap_or_default().to_string(),
            pull: match pull {
                PullPolicy::Missing => pb::PullPolicy::Missing,
                PullPolicy::Always => pb::PullPolicy::Always,
            } as i32,
        });
        let res = self
            .inner
            .deploy(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    fn service_request(
        &self,
        service: &str,
        component: Option<&str>,
    ) -> tonic::Request<pb::ServiceRequest> {
        self.request(pb::ServiceRequest {
            service: service.to_string(),
            component: component.unwrap_or_default().to_string(),
        })
    }

    /// Stops a service (or one component).
    pub async fn stop(
        &mut self,
        service: &str,
        component: Option<&str>,
    ) -> Result<pb::ServiceActionResponse, ClientError> {
        let req = self.service_request(service, component);
        let res = self.inner.stop(req).await.map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Starts a service (or one component).
    pub async fn start(
        &mut self,
        service: &str,
        component: Option<&str>,
    ) -> Result<pb::ServiceActionResponse, ClientError> {
        let req = self.service_request(service, component);
        let res = self
            .inner
            .start(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Restarts a service (or one component).
    pub async fn restart(
        &mut self,
        service: &str,
        component: Option<&str>,
    ) -> Result<pb::ServiceActionResponse, ClientError> {
        let req = self.service_request(service, component);
        let res = self
            .inner
            .restart(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Removes a service and its instances.
    pub async fn remove(
        &mut self,
        service: &str,
    ) -> Result<pb::ServiceActionResponse, ClientError> {
        let req = self.service_request(service, None);
        let res = self
            .inner
            .remove(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Desired versus observed state, of one service or all.
    pub async fn status(
        &mut self,
        service: Option<&str>,
    ) -> Result<pb::StatusResponse, ClientError> {
        let req = self.request(pb::StatusRequest {
            service: service.unwrap_or_default().to_string(),
        });
        let res = self
            .inner
            .status(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Services the node's registry knows.
    pub async fn list(&mut self) -> Result<pb::ListResponse, ClientError> {
        let req = self.request(pb::ListRequest {});
        let res = self.inner.list(req).await.map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Every instance on the node.
    pub async fn ps(&mut self) -> Result<pb::PsResponse, ClientError> {
        let req = self.request(pb::PsRequest {});
        let res = self.inner.ps(req).await.map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// The node's name, version and runtime availability.
    pub async fn node_info(&mut self) -> Result<pb::NodeInfoResponse, ClientError> {
        let req = self.request(pb::NodeInfoRequest {});
        let res = self
            .inner
            .node_info(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Logs of a service (or one component), as a stream of chunks.
    pub async fn logs(
        &mut self,
        service: &str,
        component: Option<&str>,
        follow: bool,
        tail: Option<u32>,
    ) -> Result<impl Stream<Item = Result<pb::LogChunk, ClientError>> + use<>, ClientError> {
        let req = self.request(pb::LogsRequest {
            service: service.to_string(),
            component: component.unwrap_or_default().to_string(),
            follow,
            tail: tail.and_then(|t| i32::try_from(t).ok()).unwrap_or(0),
        });
        let res = self.inner.logs(req).await.map_err(|s| self.status_err(s))?;
        let this = self.clone();
        Ok(res
            .into_inner()
            .map(move |item| item.map_err(|s| this.status_err(s))))
    }
}
