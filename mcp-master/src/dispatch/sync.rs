//! A sync through the master: the whole set placed as one (all or
//! nothing), each node sent its part with the generations; a dry run
//! answers where each service would go and changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use mcp_core::placement::Decision;
use mcp_core::servicedef::ServiceDef;
use mcp_proto::v1 as pb;

use super::{Dispatch, on_fleet};
use crate::error::MasterError;
use crate::store::NodeRecord;

/// What one node is sent: its services and their generations.
struct Part {
    node: NodeRecord,
    set: Vec<ServiceDef>,
    generations: BTreeMap<String, u64>,
}

impl Part {
    fn new(node: &NodeRecord) -> Part {
        Part {
            node: node.clone(),
            set: Vec::new(),
            generations: BTreeMap::new(),
        }
    }
}

impl Dispatch {
    /// Sends `part` to its node as a sync with `req`'s options.
    async fn sync_part(
        &self,
        part: &Part,
        req: &pb::SyncRequest,
    ) -> Result<pb::SyncResponse, MasterError> {
        let client = self.client(&part.node).await?;
        client
            .agent_api()
            .sync(
                client.wrap(pb::SyncRequest {
                    services: part.set.iter().map(ServiceDef::to_proto).collect(),
                    dry_run: req.dry_run,
                    prune: req.prune,
                    pull: req.pull,
                    generations: part
                        .generations
                        .iter()
                        .map(|(k, v)| (k.clone(), *v))
                        .collect(),
                }),
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.agent_error(&client, s))
    }

    /// A sync of the whole fleet: the set placed (all or nothing, as a
    /// deploy), each node sent its part with the generations; with prune,
    /// every node is sent its part, empty or not, so that what the set
    /// lacks goes everywhere. A dry run places nothing and records
    /// nothing: it answers each node's plan with where each service would
    /// go.
    pub async fn sync_fleet(&self, req: pb::SyncRequest) -> Result<pb::SyncResponse, MasterError> {
        let defs = req
            .services
            .iter()
            .map(ServiceDef::from_proto)
            .collect::<Result<Vec<_>, _>>()?;
        let names: BTreeSet<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        if names.len() != defs.len() {
            return Err(MasterError::InvalidArgument(
                "the set names a service more than once".into(),
            ));
        }
        // Where each service goes (and, for a dry run, how).
        let mut parts: BTreeMap<String, Part> = BTreeMap::new();
        let mut how: BTreeMap<String, (String, String)> = BTreeMap::new();
        let nodes = on_fleet(&self.fleet, |f| Ok(f.store().nodes()?)).await?;
        if req.dry_run {
            let planned = {
                let defs = defs.clone();
                on_fleet(&self.fleet, move |f| f.plan_defs(&defs)).await?
            };
            for p in planned {
                how.insert(
                    p.service.clone(),
                    (p.node.clone(), p.decision.as_str().to_string()),
                );
                if p.decision == Decision::Waiting {
                    continue;
                }
                if let (Some(node), Some(def)) = (
                    nodes.iter().find(|n| n.name == p.node),
                    defs.iter().find(|d| d.name == p.service),
                ) {
                    parts
                        .entry(node.name.clone())
                        .or_insert_with(|| Part::new(node))
                        .set
                        .push(def.clone());
                }
            }
        } else {
            let placed = {
                let defs = defs.clone();
                on_fleet(&self.fleet, move |f| f.place(&defs)).await?
            };
            for p in placed {
                let Some(def) = defs.iter().find(|d| d.name == p.service) else {
                    continue;
                };
                how.insert(
                    def.name.clone(),
                    (p.node.name.clone(), p.decision.as_str().to_string()),
                );
                let part = parts
                    .entry(p.node.name.clone())
                    .or_insert_with(|| Part::new(&p.node));
                part.set.push(def.clone());
                part.generations.insert(def.name.clone(), p.generation);
            }
        }
        if req.prune {
            for n in &nodes {
                parts.entry(n.name.clone()).or_insert_with(|| Part::new(n));
            }
        }
        let mut answer = pb::SyncResponse {
            dry_run: req.dry_run,
            ..Default::default()
        };
        // Every node's part at once: the sync takes as long as its
        // slowest node, not the sum of them.
        let sends = parts
            .into_values()
            .filter(|p| {
                !(p.set.is_empty()
                    && (p.node.role == mcp_core::placement::NodeRole::Edge
                        || self.fleet.state_of(&p.node) == mcp_core::placement::NodeState::Down))
            })
            .map(|part| {
                let req = &req;
                async move {
                    let outcome = self.sync_part(&part, req).await;
                    (part, outcome)
                }
            });
        let mut failed = Vec::new();
        for (part, outcome) in futures::future::join_all(sends).await {
            let name = part.node.name.clone();
            let done = match outcome {
                Ok(done) => done,
                Err(e) => {
                    failed.push(format!("node {name}: {e}"));
                    continue;
                }
            };
            answer.plan.extend(done.plan.into_iter().map(|mut s| {
                s.node = name.clone();
                if let Some((_, decision)) = how.get(&s.service) {
                    s.placement = decision.clone();
                }
                s
            }));
            answer.results.extend(done.results.into_iter().map(|mut r| {
                r.node = name.clone();
                r
            }));
            if req.prune && !req.dry_run {
                let keep: BTreeSet<String> = part.set.iter().map(|d| d.name.clone()).collect();
                on_fleet(&self.fleet, move |f| {
                    for p in f.store().placements()? {
                        if p.node == name && !keep.contains(&p.service) {
                            f.store()
                                .unplace(&p.service, &name, "unplaced", "pruned by a sync")?;
                        }
                    }
                    Ok(())
                })
                .await?;
            }
        }
        if !failed.is_empty() {
            return Err(MasterError::Unavailable(format!(
                "{} (the other nodes' parts were sent)",
                failed.join("; ")
            )));
        }
        for (service, (node, decision)) in &how {
            if decision == "waiting" {
                answer.plan.push(pb::PlannedService {
                    service: service.clone(),
                    action: "waiting".into(),
                    node: node.clone(),
                    placement: decision.clone(),
                    ..Default::default()
                });
            }
        }
        Ok(answer)
    }
}
