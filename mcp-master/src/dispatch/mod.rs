//! `mcp.v1.AgentService` as the master serves it, for the whole fleet.
//!
//! - A deploy (or a sync) places its services first ([`Fleet::place`]:
//!   sticky, all or nothing) and records each placement at its next
//!   generation; the node is sent the definition with that generation and
//!   refuses an older one. A node that refuses the deploy outright gets
//!   its placement put back. A service that moved is stopped on the node
//!   it left once its new copy is ready (or, that node being away, when it
//!   returns: generation fencing).
//! - Every other call about a service goes to the node its placement
//!   names.
//! - Queries (status, list, ps, events) go to every node at once (or to
//!   the one the request names); each row says its node, and what a node
//!   that does not answer holds is reported from the master's records with
//!   the reason.

mod deploy;
mod gather;
mod sync;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use mcp_core::auth::guard::HandlerEnd;
use mcp_core::auth::{Caller, Role};
use mcp_core::client::{Client, ClientError};
use mcp_proto::v1 as pb;
use mcp_proto::v1::agent_service_server::AgentService;
use tonic::{Request, Response, Status};

use crate::agents::Agents;
use crate::error::MasterError;
use crate::fleet::Fleet;
use crate::store::{NodeRecord, PlacementRecord};

/// How long a node may take to answer a query before the master reports
/// it as not answering.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The fleet's agent API: places, dispatches and gathers.
#[derive(Clone)]
pub struct Dispatch {
    fleet: Arc<Fleet>,
    agents: Arc<Agents>,
}

/// Runs `f` over the fleet on the blocking pool (its store calls are short
/// SQLite statements).
pub(crate) async fn on_fleet<T: Send + 'static>(
    fleet: &Arc<Fleet>,
    f: impl FnOnce(&Fleet) -> Result<T, MasterError> + Send + 'static,
) -> Result<T, MasterError> {
    let fleet = fleet.clone();
    tokio::task::spawn_blocking(move || f(&fleet))
        .await
        .map_err(|e| MasterError::Internal(format!("a fleet task failed: {e}")))?
}

/// Whether the node certainly did nothing with a command that failed
/// with `err`: unreachable, the master's credential refused, or the
/// command refused as invalid before any change.
fn refused(err: &ClientError) -> bool {
    err.refused_before_acting()
        || matches!(
            err.code(),
            Some(
                tonic::Code::InvalidArgument
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::NotFound
                    | tonic::Code::AlreadyExists
            )
        )
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl Dispatch {
    /// Dispatch over `fleet`, reaching nodes through `agents`.
    pub fn new(fleet: Arc<Fleet>, agents: Arc<Agents>) -> Dispatch {
        Dispatch { fleet, agents }
    }

    /// The fleet behind it.
    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    async fn client(&self, node: &NodeRecord) -> Result<Client, MasterError> {
        self.agents.client(&node.name, &node.address).await
    }

    fn agent_error(&self, client: &Client, status: Status) -> MasterError {
        let err = client.error_of(status);
        self.agents.failed(client.node(), &err);
        MasterError::Agent(err)
    }

    /// The placement of `service` and its node, for a call about it.
    async fn route(&self, service: &str) -> Result<(PlacementRecord, NodeRecord), MasterError> {
        let service = service.to_string();
        on_fleet(&self.fleet, move |f| f.placement_of(&service)).await
    }

    /// The placement of `service`, its node and a client of the node.
    async fn service_node(
        &self,
        service: &str,
    ) -> Result<(PlacementRecord, NodeRecord, Client), MasterError> {
        let (placement, node) = self.route(service).await?;
        let client = self.client(&node).await?;
        Ok((placement, node, client))
    }
}

/// Whether the caller of `request` may see secrets: an admin.
fn sees_secrets<T>(request: &Request<T>) -> bool {
    request
        .extensions()
        .get::<Caller>()
        .is_some_and(|c| c.role == Some(Role::Admin))
}

#[tonic::async_trait]
impl AgentService for Dispatch {
    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.fleet_status(request).await
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        self.fleet_list(request).await
    }

    async fn ps(
        &self,
        request: Request<pb::PsRequest>,
    ) -> Result<Response<pb::PsResponse>, Status> {
        self.fleet_ps(request).await
    }

    async fn events(
        &self,
        request: Request<pb::EventsRequest>,
    ) -> Result<Response<pb::EventsResponse>, Status> {
        self.fleet_events(request).await
    }

    async fn deploy(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::DeployResponse>, Status> {
        let done = Dispatch::deploy(self, request.into_inner(), &|_| {}).await?;
        Ok(Response::new(done))
    }

    type DeployStreamStream = BoxStream<pb::DeployUpdate>;

    async fn deploy_stream(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<Self::DeployStreamStream>, Status> {
        let end = HandlerEnd::of(&request);
        let request = request.into_inner();
        let this = self.clone();
        Ok(Response::new(mcp_core::serve::deploy_updates(
            end,
            move |progress| async move {
                let report = move |p: pb::DeployProgress| progress.send(p);
                Ok(Dispatch::deploy(&this, request, &report).await?)
            },
        )))
    }

    async fn stop(
        &self,
        request: Request<pb::ServiceRequest>,
    ) -> Result<Response<pb::ServiceActionResponse>, Status> {
        self.service_action(request.into_inner(), Action::Stop)
            .await
    }

    async fn start(
        &self,
        request: Request<pb::ServiceRequest>,
    ) -> Result<Response<pb::ServiceActionResponse>, Status> {
        self.service_action(request.into_inner(), Action::Start)
            .await
    }

    async fn restart(
        &self,
        request: Request<pb::ServiceRequest>,
    ) -> Result<Response<pb::ServiceActionResponse>, Status> {
        self.service_action(request.into_inner(), Action::Restart)
            .await
    }

    async fn remove(
        &self,
        request: Request<pb::ServiceRequest>,
    ) -> Result<Response<pb::ServiceActionResponse>, Status> {
        self.service_action(request.into_inner(), Action::Remove)
            .await
    }

    type LogsStream = BoxStream<pb::LogChunk>;

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = request.into_inner();
        let (_, _, client) = self.service_node(&req.service).await?;
        let stream = client
            .agent_api()
            .logs(client.wrap(req))
            .await
            .map_err(|s| self.agent_error(&client, s))?
            .into_inner();
        Ok(Response::new(Box::pin(stream)))
    }

    async fn node_info(
        &self,
        request: Request<pb::NodeInfoRequest>,
    ) -> Result<Response<pb::NodeInfoResponse>, Status> {
        let req = request.into_inner();
        if req.node.is_empty() {
            return Ok(Response::new(pb::NodeInfoResponse {
                node_name: "master".into(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
                runtime_available: false,
                runtime_error:
                    "a master runs no components: ask about a node (--node NAME), or list them with `mcp node list`"
                        .into(),
                ..Default::default()
            }));
        }
        let targets = self.targets(&req.node).await?;
        let mut answers = self
            .gather(targets, |client| async move {
                client
                    .agent_api()
                    .node_info(client.wrap(pb::NodeInfoRequest::default()))
                    .await
                    .map(Response::into_inner)
            })
            .await;
        match answers.pop() {
            Some((_, Ok(info))) => Ok(Response::new(info)),
            Some((_, Err(why))) => Err(Status::unavailable(why)),
            None => Err(Status::not_found(format!(
                "no node named {:?} in the fleet",
                req.node
            ))),
        }
    }

    async fn sync(
        &self,
        request: Request<pb::SyncRequest>,
    ) -> Result<Response<pb::SyncResponse>, Status> {
        Ok(Response::new(self.sync_fleet(request.into_inner()).await?))
    }

    async fn adopt(
        &self,
        request: Request<pb::AdoptRequest>,
    ) -> Result<Response<pb::AdoptResponse>, Status> {
        let req = request.into_inner();
        let node = if req.node.is_empty() {
            self.route(&req.service).await.map(|(_, n)| n).map_err(|_| {
                Status::invalid_argument(format!(
                    "the fleet does not place {:?} yet: name the node whose containers to adopt (--node NAME)",
                    req.service
                ))
            })?
        } else {
            let (node, _) = self
                .targets(&req.node)
                .await?
                .pop()
                .ok_or_else(|| Status::not_found(format!("no node named {:?}", req.node)))?;
            node
        };
        let client = self.client(&node).await?;
        let answer = client
            .agent_api()
            .adopt(client.wrap(pb::AdoptRequest {
                service: req.service,
                node: String::new(),
            }))
            .await
            .map_err(|s| self.agent_error(&client, s))?;
        Ok(answer)
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let secrets = sees_secrets(&request);
        let req = request.into_inner();
        let (_, _, client) = self.service_node(&req.service).await?;
        let mut answer = client
            .agent_api()
            .history(client.wrap(req))
            .await
            .map_err(|s| self.agent_error(&client, s))?
            .into_inner();
        // The master asks with its own admin credential: a readonly
        // caller is shown what a node would show it.
        if !secrets {
            for r in &mut answer.revisions {
                if let Some(d) = &mut r.definition {
                    for v in d.env.values_mut() {
                        *v = mcp_core::servicedef::REDACTED.to_string();
                    }
                }
            }
        }
        Ok(Response::new(answer))
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::ServiceActionResponse>, Status> {
        let req = request.into_inner();
        let (_, node, client) = self.service_node(&req.service).await?;
        let mut answer = client
            .agent_api()
            .rollback(client.wrap(req))
            .await
            .map_err(|s| self.agent_error(&client, s))?
            .into_inner();
        answer.node = node.name;
        Ok(Response::new(answer))
    }

    async fn push_file(
        &self,
        request: Request<tonic::Streaming<pb::PushFileRequest>>,
    ) -> Result<Response<pb::PushFileResponse>, Status> {
        let mut incoming = request.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("a push starts with its header"))?;
        let Some(pb::push_file_request::Part::Header(header)) = &first.part else {
            return Err(Status::invalid_argument("a push starts with its header"));
        };
        let (_, _, client) = self.service_node(&header.service).await?;
        // The rest is passed on as it comes; should the caller's stream
        // fail, the node's ends without the digest and it keeps nothing.
        let rest = incoming.take_while(|m| std::future::ready(m.is_ok()));
        let outgoing = futures::stream::once(std::future::ready(first))
            .chain(rest.filter_map(|m| std::future::ready(m.ok())));
        let answer = client
            .agent_api()
            .push_file(client.wrap(outgoing))
            .await
            .map_err(|s| self.agent_error(&client, s))?;
        Ok(answer)
    }

    type PullFileStream = BoxStream<pb::PullFileResponse>;

    async fn pull_file(
        &self,
        request: Request<pb::FileRequest>,
    ) -> Result<Response<Self::PullFileStream>, Status> {
        let req = request.into_inner();
        let (_, _, client) = self.service_node(&req.service).await?;
        let stream = client
            .agent_api()
            .pull_file(client.wrap(req))
            .await
            .map_err(|s| self.agent_error(&client, s))?
            .into_inner();
        Ok(Response::new(Box::pin(stream)))
    }

    type ListFilesStream = BoxStream<pb::ListFilesResponse>;

    async fn list_files(
        &self,
        request: Request<pb::ListFilesRequest>,
    ) -> Result<Response<Self::ListFilesStream>, Status> {
        let req = request.into_inner();
        let (_, _, client) = self.service_node(&req.service).await?;
        let stream = client
            .agent_api()
            .list_files(client.wrap(req))
            .await
            .map_err(|s| self.agent_error(&client, s))?
            .into_inner();
        Ok(Response::new(Box::pin(stream)))
    }

    async fn stat_file(
        &self,
        request: Request<pb::FileRequest>,
    ) -> Result<Response<pb::FileEntry>, Status> {
        let req = request.into_inner();
        let (_, _, client) = self.service_node(&req.service).await?;
        Ok(client
            .agent_api()
            .stat_file(client.wrap(req))
            .await
            .map_err(|s| self.agent_error(&client, s))?)
    }

    async fn remove_file(
        &self,
        request: Request<pb::RemoveFileRequest>,
    ) -> Result<Response<pb::RemoveFileResponse>, Status> {
        let req = request.into_inner();
        let (_, _, client) = self.service_node(&req.service).await?;
        Ok(client
            .agent_api()
            .remove_file(client.wrap(req))
            .await
            .map_err(|s| self.agent_error(&client, s))?)
    }
}

/// A command about one service that goes to its node as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Stop,
    Start,
    Restart,
    Remove,
}

impl Dispatch {
    async fn service_action(
        &self,
        mut req: pb::ServiceRequest,
        action: Action,
    ) -> Result<Response<pb::ServiceActionResponse>, Status> {
        let (placement, node, client) = self.service_node(&req.service).await?;
        req.generation = placement.generation;
        let api = client.agent_api();
        let wrapped = client.wrap(req.clone());
        let answer = match action {
            Action::Stop => api.clone().stop(wrapped).await,
            Action::Start => api.clone().start(wrapped).await,
            Action::Restart => api.clone().restart(wrapped).await,
            Action::Remove => api.clone().remove(wrapped).await,
        }
        .map_err(|s| self.agent_error(&client, s))?;
        let mut answer = answer.into_inner();
        answer.node = node.name.clone();
        if action == Action::Remove {
            let (service, node) = (req.service.clone(), node.name.clone());
            on_fleet(&self.fleet, move |f| {
                f.store()
                    .unplace(&service, &node, "unplaced", "removed from the fleet")?;
                Ok(())
            })
            .await?;
        }
        Ok(Response::new(answer))
    }
}
