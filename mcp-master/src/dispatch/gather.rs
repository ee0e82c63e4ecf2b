//! Queries through the master: asked of every node at once (or the one a
//! request names), each row tagged with its node; what a node that does
//! not answer holds is reported from the master's records, with why.

use mcp_core::placement::NodeState;
use mcp_core::wire::timestamp;
use mcp_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{Dispatch, QUERY_TIMEOUT, on_fleet};
use crate::error::MasterError;
use crate::store::{NodeRecord, PlacementRecord};
use mcp_core::client::Client;

impl Dispatch {
    /// The nodes a query goes to: the one `scope` names, else every node;
    /// with their states.
    pub(super) async fn targets(
        &self,
        scope: &str,
    ) -> Result<Vec<(NodeRecord, NodeState)>, MasterError> {
        let scope = scope.to_string();
        on_fleet(&self.fleet, move |f| {
            let nodes: Vec<(NodeRecord, NodeState)> = f
                .store()
                .nodes()?
                .into_iter()
                .filter(|n| scope.is_empty() || n.name == scope)
                .map(|n| {
                    let state = f.state_of(&n);
                    (n, state)
                })
                .collect();
            if nodes.is_empty() && !scope.is_empty() {
                return Err(MasterError::NotFound(format!(
                    "no node named {scope:?} in the fleet"
                )));
            }
            Ok(nodes)
        })
        .await
    }

    /// Asks every node of `targets` at once with `ask`; a down node is not
    /// asked. Each node with its answer, or why it has none.
    pub(super) async fn gather<T, F, Fut>(
        &self,
        targets: Vec<(NodeRecord, NodeState)>,
        ask: F,
    ) -> Vec<(NodeRecord, Result<T, String>)>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let asks = targets.into_iter().map(|(node, state)| {
            let ask = &ask;
            async move {
                if state == NodeState::Down {
                    let why = format!("node {} is down", node.name);
                    return (node, Err(why));
                }
                let client = match self.client(&node).await {
                    Ok(c) => c,
                    Err(e) => {
                        let why = e.to_string();
                        return (node, Err(why));
                    }
                };
                let answer = match tokio::time::timeout(QUERY_TIMEOUT, ask(client.clone())).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(status)) => Err(self.agent_error(&client, status).to_string()),
                    Err(_) => Err(format!(
                        "node {} did not answer within {} s",
                        node.name,
                        QUERY_TIMEOUT.as_secs()
                    )),
                };
                (node, answer)
            }
        });
        futures::future::join_all(asks).await
    }

    /// The placements on `node` (of `service` only, when given).
    pub(super) async fn placements_on(
        &self,
        node: &str,
        service: &str,
    ) -> Result<Vec<PlacementRecord>, MasterError> {
        let (node, service) = (node.to_string(), service.to_string());
        on_fleet(&self.fleet, move |f| {
            Ok(f.store()
                .placements()?
                .into_iter()
                .filter(|p| p.node == node && (service.is_empty() || p.service == service))
                .collect())
        })
        .await
    }

    pub(super) async fn fleet_status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let req = request.into_inner();
        let targets = if req.service.is_empty() {
            self.targets(&req.node).await?
        } else {
            let (_, node) = self.route(&req.service).await?;
            let state = self.fleet.state_of(&node);
            vec![(node, state)]
        };
        let service = req.service.clone();
        let answers = self
            .gather(targets, |client| {
                let req = pb::StatusRequest {
                    service: service.clone(),
                    node: String::new(),
                };
                async move {
                    client
                        .agent_api()
                        .status(client.wrap(req))
                        .await
                        .map(Response::into_inner)
                }
            })
            .await;
        let mut out = pb::StatusResponse::default();
        for (node, answer) in answers {
            match answer {
                Ok(report) => {
                    out.components
                        .extend(report.components.into_iter().map(|mut c| {
                            c.node = node.name.clone();
                            c
                        }));
                    out.unmanaged
                        .extend(report.unmanaged.into_iter().map(|mut i| {
                            i.node = node.name.clone();
                            i
                        }));
                }
                Err(why) => {
                    for p in self.placements_on(&node.name, &req.service).await? {
                        out.components.extend(unanswered_rows(&node.name, &p, &why));
                    }
                }
            }
        }
        Ok(Response::new(out))
    }

    pub(super) async fn fleet_list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let req = request.into_inner();
        let targets = self.targets(&req.node).await?;
        let answers = self
            .gather(targets, |client| async move {
                client
                    .agent_api()
                    .list(client.wrap(pb::ListRequest::default()))
                    .await
                    .map(Response::into_inner)
            })
            .await;
        let mut out = pb::ListResponse::default();
        for (node, answer) in answers {
            match answer {
                Ok(list) => out.services.extend(list.services.into_iter().map(|mut s| {
                    s.node = node.name.clone();
                    s
                })),
                Err(_) => {
                    for p in self.placements_on(&node.name, "").await? {
                        out.services.push(pb::ServiceSummary {
                            name: p.service.clone(),
                            active: p.definition.active,
                            components: p
                                .definition
                                .components
                                .iter()
                                .map(|c| c.name.clone())
                                .collect(),
                            updated_at: timestamp(p.updated_at),
                            node: node.name.clone(),
                        });
                    }
                }
            }
        }
        Ok(Response::new(out))
    }

    pub(super) async fn fleet_ps(
        &self,
        request: Request<pb::PsRequest>,
    ) -> Result<Response<pb::PsResponse>, Status> {
        let req = request.into_inner();
        let targets = self.targets(&req.node).await?;
        let answers = self
            .gather(targets, |client| async move {
                client
                    .agent_api()
                    .ps(client.wrap(pb::PsRequest::default()))
                    .await
                    .map(Response::into_inner)
            })
            .await;
        let mut out = pb::PsResponse::default();
        for (node, answer) in answers {
            match answer {
                Ok(ps) => {
                    out.instances.extend(ps.instances.into_iter().map(|mut i| {
                        i.node = node.name.clone();
                        i
                    }));
                    out.missing.extend(ps.missing.into_iter().map(|mut c| {
                        c.node = node.name.clone();
                        c
                    }));
                }
                Err(why) => {
                    for p in self.placements_on(&node.name, "").await? {
                        out.missing.extend(unanswered_rows(&node.name, &p, &why));
                    }
                }
            }
        }
        Ok(Response::new(out))
    }

    pub(super) async fn fleet_events(
        &self,
        request: Request<pb::EventsRequest>,
    ) -> Result<Response<pb::EventsResponse>, Status> {
        let req = request.into_inner();
        if !req.page_token.is_empty() {
            return Err(Status::invalid_argument(
                "a master answers events in one page: ask again without a page token",
            ));
        }
        let since = if req.since.is_empty() {
            None
        } else {
            Some(
                chrono::DateTime::parse_from_rfc3339(&req.since)
                    .map_err(|_| {
                        Status::invalid_argument(format!(
                            "since {:?} is not an RFC 3339 time",
                            req.since
                        ))
                    })?
                    .with_timezone(&chrono::Utc),
            )
        };
        let targets = self.targets(&req.node).await?;
        let ask = pb::EventsRequest {
            service: req.service.clone(),
            since: req.since.clone(),
            limit: req.limit,
            page_size: 0,
            page_token: String::new(),
            node: String::new(),
        };
        let answers = self
            .gather(targets, |client| {
                let ask = ask.clone();
                async move {
                    let mut all = Vec::new();
                    let mut ask = ask;
                    loop {
                        let page = client
                            .agent_api()
                            .events(client.wrap(ask.clone()))
                            .await?
                            .into_inner();
                        all.extend(page.events);
                        if page.next_page_token.is_empty() {
                            return Ok(all);
                        }
                        ask.page_token = page.next_page_token;
                    }
                }
            })
            .await;
        let mut events: Vec<pb::Event> = Vec::new();
        for (node, answer) in answers {
            if let Ok(list) = answer {
                events.extend(list.into_iter().map(|mut e| {
                    e.node = node.name.clone();
                    e
                }));
            }
        }
        let (scope, service) = (req.node.clone(), req.service.clone());
        let own = on_fleet(&self.fleet, move |f| Ok(f.store().events(0)?)).await?;
        events.extend(
            own.into_iter()
                .filter(|e| scope.is_empty() || e.node == scope)
                .filter(|e| service.is_empty() || e.service == service)
                .filter(|e| {
                    since.is_none_or(|s| {
                        chrono::DateTime::parse_from_rfc3339(&e.time)
                            .is_ok_and(|t| t.with_timezone(&chrono::Utc) >= s)
                    })
                })
                .map(master_event),
        );
        events.sort_by(|a, b| {
            (a.time.as_str(), a.node.as_str(), a.id).cmp(&(b.time.as_str(), b.node.as_str(), b.id))
        });
        if req.limit > 0 && events.len() > req.limit as usize {
            events.drain(..events.len() - req.limit as usize);
        }
        Ok(Response::new(pb::EventsResponse {
            events,
            next_page_token: String::new(),
        }))
    }
}

/// The rows of a service placed on a node that did not answer: what the
/// master knows (the definition), the state unknown, the reason.
fn unanswered_rows(node: &str, placement: &PlacementRecord, why: &str) -> Vec<pb::ComponentStatus> {
    let bound = mcp_core::placement::node_bound(&placement.definition);
    placement
        .definition
        .components
        .iter()
        .map(|c| pb::ComponentStatus {
            node: node.to_string(),
            service: placement.service.clone(),
            component: c.name.clone(),
            runtime: c.runtime.as_str().to_string(),
            desired_active: placement.definition.active,
            desired_image: c.image.clone(),
            observed_state: "unknown".into(),
            drift: vec!["unreachable".into()],
            health_detail: if bound {
                format!("{why}; the service waits for its node (its data lives there)")
            } else {
                why.to_string()
            },
            ..Default::default()
        })
        .collect()
}

/// A master event as the agent API reports events.
fn master_event(e: crate::store::FleetEvent) -> pb::Event {
    pb::Event {
        id: e.id,
        time: e.time,
        service: e.service,
        component: String::new(),
        kind: e.kind,
        detail: e.detail,
        node: e.node,
    }
}
