//! Deploys through the master: a service placed (at its next generation),
//! sent to its node with that generation, its placement put back when the
//! node refuses outright; a moved service's old copy stopped once the new
//! one is ready, or its move undone when the new copy is not; stale copies
//! stopped with the newer generation (generation fencing).

use futures::StreamExt;
use mcp_core::client::{ClientError, is_failure};
use mcp_core::placement::{Decision, NodeState};
use mcp_core::servicedef::ServiceDef;
use mcp_proto::v1 as pb;
use tonic::Response;

use super::{Dispatch, QUERY_TIMEOUT, on_fleet, refused};
use crate::error::MasterError;
use crate::fleet::{Fence, Placed};
use crate::store::NodeRecord;

impl Dispatch {
    /// Deploys one service: places it, sends it to its node with the new
    /// generation (reporting the node's progress through `progress`), and
    /// stops the copy it left if it moved. The outcome names the node and
    /// the generation.
    pub async fn deploy(
        &self,
        request: pb::DeployRequest,
        progress: &(dyn Fn(pb::DeployProgress) + Send + Sync),
    ) -> Result<pb::DeployResponse, MasterError> {
        let spec = request.service.as_ref().ok_or_else(|| {
            MasterError::InvalidArgument("deploy needs a service definition".into())
        })?;
        let def = ServiceDef::from_proto(spec)?;
        let defs = vec![def.clone()];
        let placed = on_fleet(&self.fleet, move |f| f.place(&defs))
            .await?
            .pop()
            .ok_or_else(|| MasterError::Internal("placement answered nothing".into()))?;
        self.deploy_placed(&def, placed, request, progress).await
    }

    /// Sends `def`, placed as `placed`, to its node; see [`Dispatch::deploy`].
    pub async fn deploy_placed(
        &self,
        def: &ServiceDef,
        placed: Placed,
        mut request: pb::DeployRequest,
        progress: &(dyn Fn(pb::DeployProgress) + Send + Sync),
    ) -> Result<pb::DeployResponse, MasterError> {
        request.generation = placed.generation;
        let outcome = self.send_deploy(&placed.node, request, progress).await;
        let mut done = match outcome {
            Ok(done) => done,
            Err((err, acted)) => {
                if !acted {
                    let (service, node, previous, generation) = (
                        def.name.clone(),
                        placed.node.name.clone(),
                        placed.previous.clone(),
                        placed.generation,
                    );
                    on_fleet(&self.fleet, move |f| {
                        f.restore(&service, &node, previous, generation)
                    })
                    .await?;
                }
                return Err(err);
            }
        };
        done.node = placed.node.name.clone();
        done.generation = placed.generation;
        if let Decision::Moved { from } = &placed.decision {
            let failed = done.results.iter().any(is_failure);
            if failed {
                self.undo_move(def, &placed, from).await?;
            } else {
                let (service, to, detail) = (
                    def.name.clone(),
                    placed.node.name.clone(),
                    format!(
                        "from {from} to {}, ready (generation {})",
                        placed.node.name, placed.generation
                    ),
                );
                on_fleet(&self.fleet, move |f| {
                    Ok(f.store().record_event(&to, &service, "moved", &detail)?)
                })
                .await?;
                self.stop_stale_copy(Fence {
                    node: from.clone(),
                    service: def.name.clone(),
                    generation: placed.generation,
                })
                .await;
            }
        }
        Ok(done)
    }

    /// The deploy on `node`, its progress passed on; on failure, the error
    /// and whether the node may have acted.
    async fn send_deploy(
        &self,
        node: &NodeRecord,
        request: pb::DeployRequest,
        progress: &(dyn Fn(pb::DeployProgress) + Send + Sync),
    ) -> Result<pb::DeployResponse, (MasterError, bool)> {
        let client = self.client(node).await.map_err(|e| (e, false))?;
        let mut stream = match client.agent_api().deploy_stream(client.wrap(request)).await {
            Ok(s) => s.into_inner(),
            Err(status) => {
                let err = client.error_of(status);
                self.agents.failed(client.node(), &err);
                let acted = !refused(&err);
                return Err((MasterError::Agent(err), acted));
            }
        };
        while let Some(item) = stream.next().await {
            match item {
                Ok(pb::DeployUpdate {
                    update: Some(pb::deploy_update::Update::Progress(p)),
                }) => progress(p),
                Ok(pb::DeployUpdate {
                    update: Some(pb::deploy_update::Update::Done(done)),
                }) => return Ok(done),
                Ok(_) => {}
                Err(status) => {
                    let err = client.error_of(status);
                    let acted = !refused(&err);
                    return Err((MasterError::Agent(err), acted));
                }
            }
        }
        Err((
            MasterError::Unavailable(format!(
                "node {} ended the deploy without its outcome",
                node.name
            )),
            true,
        ))
    }

    /// A move whose new copy did not become ready: the new copy goes, the
    /// service stays where it was (at the new generation, so that nothing
    /// older follows), and the move is an event.
    async fn undo_move(
        &self,
        def: &ServiceDef,
        placed: &Placed,
        from: &str,
    ) -> Result<(), MasterError> {
        let removed = self
            .remove_on(&placed.node, &def.name, placed.generation)
            .await;
        let (service, to, previous, generation, from) = (
            def.name.clone(),
            placed.node.name.clone(),
            placed.previous.clone(),
            placed.generation,
            from.to_string(),
        );
        let removed = removed.err().map(|e| e.to_string());
        on_fleet(&self.fleet, move |f| {
            f.restore(&service, &to, previous, generation)?;
            let detail = match removed {
                None => format!("the new copy on {to} did not become ready; it stays on {from}"),
                Some(e) => format!(
                    "the new copy on {to} did not become ready and could not be removed ({e}); it stays on {from}"
                ),
            };
            f.store().record_event(&to, &service, "move-failed", &detail)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn remove_on(
        &self,
        node: &NodeRecord,
        service: &str,
        generation: u64,
    ) -> Result<pb::ServiceActionResponse, MasterError> {
        let client = self.client(node).await?;
        let mut api = client.agent_api();
        let remove = api.remove(client.wrap(pb::ServiceRequest {
            service: service.to_string(),
            component: String::new(),
            generation,
        }));
        match tokio::time::timeout(QUERY_TIMEOUT, remove).await {
            Ok(answer) => answer
                .map(Response::into_inner)
                .map_err(|s| self.agent_error(&client, s)),
            Err(_) => Err(MasterError::Unavailable(format!(
                "node {} did not answer within {} s",
                node.name,
                QUERY_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Stops (removes) a stale copy on the node it was left on, with the
    /// generation of the placement that replaced it; recorded as a
    /// `fenced` event. A node that cannot be reached now gets it when it
    /// registers again (it reports the copy and the master queues the
    /// stop).
    pub async fn stop_stale_copy(&self, fence: Fence) {
        let node = {
            let name = fence.node.clone();
            on_fleet(&self.fleet, move |f| Ok(f.store().node(&name)?)).await
        };
        let node = match node {
            Ok(Some(n)) => n,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(node = %fence.node, service = %fence.service, error = %e, "cannot stop a stale copy");
                return;
            }
        };
        // A node away gets the stop when it registers again.
        if matches!(
            self.fleet.state_of(&node),
            NodeState::Down | NodeState::Suspect
        ) {
            return;
        }
        let outcome = self
            .remove_on(&node, &fence.service, fence.generation)
            .await;
        let (kind, detail) = match &outcome {
            Ok(answer) if answer.results.iter().any(is_failure) => {
                let why =
                    mcp_core::client::failures(&fence.service, &answer.results).unwrap_or_default();
                tracing::warn!(node = %fence.node, service = %fence.service, "stale copy not removed: {why}");
                self.fleet.queue_fence(fence.clone());
                return;
            }
            Ok(_) => (
                "fenced",
                format!(
                    "stale copy stopped and removed (the service is placed elsewhere at generation {})",
                    fence.generation
                ),
            ),
            Err(MasterError::Agent(ClientError::Rpc {
                code: tonic::Code::NotFound,
                ..
            })) => return,
            Err(e) => {
                tracing::warn!(node = %fence.node, service = %fence.service, error = %e, "stale copy not stopped yet; it will be when the node registers again");
                return;
            }
        };
        tracing::info!(node = %fence.node, service = %fence.service, "{detail}");
        let (name, service) = (fence.node.clone(), fence.service.clone());
        if let Err(e) = on_fleet(&self.fleet, move |f| {
            Ok(f.store().record_event(&name, &service, kind, &detail)?)
        })
        .await
        {
            tracing::warn!(error = %e, "recording a fenced event");
        }
    }
}
