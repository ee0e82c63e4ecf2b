//! The fleet: nodes joining, heartbeating and falling silent, what they
//! hold, and `FleetService`, the gRPC face of it (register and heartbeat
//! for agents; list, drain, undrain and plan for operators).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SubsecRound, Utc};
use mcp_core::placement::{self, Existing, NodeRole, NodeState, Request, Resources};
use mcp_core::servicedef::{ServiceDef, name_problem};
use mcp_core::wire::timestamp;
use mcp_proto::v1 as pb;
use mcp_proto::v1::fleet_service_server::FleetService;
use tonic::{Request as RpcRequest, Response, Status};

use crate::alerts::Alerter;
use crate::config::{FleetSettings, PlacementSettings};
use crate::error::MasterError;
use crate::liveness;
use crate::store::{NodeRecord, PlacementRecord, Registration, Store};

/// The fleet as the master knows it. Cheap to share behind an `Arc`.
pub struct Fleet {
    store: Arc<Store>,
    fleet: FleetSettings,
    placement: PlacementSettings,
    started: DateTime<Utc>,
    alerts: Option<Arc<Alerter>>,
    /// Held while a placement is decided and recorded, so that two deploys
    /// at once cannot both take the same room.
    placing: Mutex<()>,
    /// Stale copies to stop: a node holds a service placed elsewhere at a
    /// newer generation.
    fences: Mutex<Vec<Fence>>,
}

/// A stale copy to stop: `node` holds `service`, which is placed elsewhere
/// at `generation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The node holding the stale copy.
    pub node: String,
    /// The service.
    pub service: String,
    /// The generation of its placement now: the stop is sent with it, so
    /// that the node, holding an older one, obeys.
    pub generation: u64,
}

/// A service placed for a deploy: where it goes, at which generation, and
/// the placement it replaced (to put back if the node refuses the deploy).
#[derive(Debug, Clone)]
pub struct Placed {
    /// The service.
    pub service: String,
    /// The node it goes to (or stays on).
    pub node: NodeRecord,
    /// Its new placement generation.
    pub generation: u64,
    /// Kept, new or moved.
    pub decision: placement::Decision,
    /// The placement before, if any.
    pub previous: Option<PlacementRecord>,
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

fn resources(r: Option<&pb::Resources>) -> Resources {
    r.map_or(Resources::default(), |r| Resources {
        memory: r.memory_bytes,
        cpus: r.cpus,
    })
}

fn to_pb(r: Resources) -> pb::Resources {
    pb::Resources {
        memory_bytes: r.memory,
        cpus: r.cpus,
    }
}

fn millis(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl Fleet {
    /// The fleet kept in `store`, watched with `fleet`'s timings, placing
    /// with `placement`'s defaults; silence is counted from now at the
    /// earliest (the recovery window).
    pub fn new(store: Arc<Store>, fleet: FleetSettings, placement: PlacementSettings) -> Fleet {
        Fleet {
            store,
            fleet,
            placement,
            started: now(),
            alerts: None,
            placing: Mutex::new(()),
            fences: Mutex::new(Vec::new()),
        }
    }

    /// Sends alerts through `alerts` (none without).
    pub fn with_alerts(mut self, alerts: Option<Arc<Alerter>>) -> Fleet {
        self.alerts = alerts;
        self
    }

    /// Alerts about a transition of `node` just recorded: suspect, down
    /// (and every service that waits for it: its data lives there), back.
    fn alert(&self, node: &str, from: NodeState, to: NodeState, detail: &str) {
        let Some(alerts) = &self.alerts else {
            return;
        };
        match to {
            NodeState::Suspect => alerts.send(node, "", "node-suspect", detail),
            NodeState::Down => {
                alerts.send(node, "", "node-down", detail);
                match self.store.placements() {
                    Ok(placements) => {
                        for p in placements
                            .iter()
                            .filter(|p| p.node == node && placement::node_bound(&p.definition))
                        {
                            alerts.send(
                                node,
                                &p.service,
                                "service-waiting",
                                &format!("its data lives on {node}, which is down"),
                            );
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list the services waiting on a down node")
                    }
                }
            }
            NodeState::Ready if matches!(from, NodeState::Suspect | NodeState::Down) => {
                alerts.send(node, "", "node-back", detail)
            }
            _ => {}
        }
    }

    /// The database behind the fleet.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The state of `node` now.
    pub fn state_of(&self, node: &NodeRecord) -> NodeState {
        liveness::state_of(
            node.last_heartbeat,
            node.draining,
            now(),
            self.started,
            &self.fleet,
        )
    }

    /// Records every node whose state changed since it was last recorded,
    /// with its transition event; returns `(node, from, to)` for each.
    pub fn sweep(&self) -> Result<Vec<(String, NodeState, NodeState)>, MasterError> {
        let mut changed = Vec::new();
        for node in self.store.nodes()? {
            if let Some((from, to)) = self.settle(&node)? {
                changed.push((node.name, from, to));
            }
        }
        Ok(changed)
    }

    /// Records `node`'s state now if it is not the one recorded, with its
    /// transition event; the transition, if there was one. Every path that
    /// changes a node (the sweep, a registration, a heartbeat) settles it
    /// first, so that the events tell every transition in order.
    fn settle(&self, node: &NodeRecord) -> Result<Option<(NodeState, NodeState)>, MasterError> {
        let to = self.state_of(node);
        let from = NodeState::parse(&node.state).unwrap_or(NodeState::Ready);
        if from == to {
            return Ok(None);
        }
        let kind = liveness::transition(from, to);
        let silent = (now() - node.last_heartbeat.max(self.started))
            .to_std()
            .unwrap_or_default();
        let detail = match to {
            NodeState::Suspect | NodeState::Down => {
                format!("no heartbeat for {:.1} s", silent.as_secs_f64())
            }
            _ => String::new(),
        };
        if !self
            .store
            .set_state(&node.name, to.as_str(), kind, &detail)?
        {
            return Ok(None);
        }
        self.alert(&node.name, from, to, &detail);
        match to {
            NodeState::Suspect | NodeState::Down => {
                tracing::warn!(node = %node.name, state = %to, %detail, "node {kind}")
            }
            _ => tracing::info!(node = %node.name, state = %to, "node {kind}"),
        }
        Ok(Some((from, to)))
    }

    /// Registers a node: refused when another agent holds the name and
    /// still heartbeats; otherwise the node is recorded, ready (or still
    /// draining), and what it holds is learnt as placements where the
    /// master has none or an older one.
    pub fn register(&self, request: &pb::RegisterRequest) -> Result<(), MasterError> {
        let registration = check_registration(request)?;
        if let Some(previous) = self.store.node(&registration.name)? {
            self.settle(&previous)?;
        }
        let previous = self.store.node(&registration.name)?;
        let kind = match &previous {
            None => "joined",
            Some(p) if p.boot_id != registration.boot_id => {
                let state = self.state_of(p);
                if matches!(state, NodeState::Ready | NodeState::Draining) {
                    return Err(MasterError::AlreadyExists(format!(
                        "node {:?} is registered by another agent (at {}), which heartbeat {:.1} s ago: two nodes cannot share a name",
                        registration.name,
                        p.address,
                        (now() - p.last_heartbeat)
                            .to_std()
                            .unwrap_or_default()
                            .as_secs_f64()
                    )));
                }
                "back"
            }
            Some(p) => match NodeState::parse(&p.state) {
                Some(NodeState::Suspect | NodeState::Down) => "back",
                _ => "registered",
            },
        };
        let draining = previous.as_ref().is_some_and(|p| p.draining);
        let state = if draining {
            NodeState::Draining
        } else {
            NodeState::Ready
        };
        let detail = format!(
            "{} {} at {}, {}",
            registration.role, registration.version, registration.address, registration.capacity
        );
        self.store
            .register(&registration, state.as_str(), kind, &detail)?;
        if kind == "back"
            && let Some(alerts) = &self.alerts
        {
            alerts.send(&registration.name, "", "node-back", &detail);
        }
        tracing::info!(node = %registration.name, address = %registration.address, services = request.inventory.len(), "node {kind}");
        self.learn_inventory(&registration.name, &request.inventory)
    }

    /// Takes in what a node reports holding: a service the master has no
    /// placement for, or an older one, is placed where the node holds it
    /// (the highest generation wins).
    fn learn_inventory(
        &self,
        node: &str,
        inventory: &[pb::InventoryService],
    ) -> Result<(), MasterError> {
        let known: BTreeMap<String, PlacementRecord> = self
            .store
            .placements()?
            .into_iter()
            .map(|p| (p.service.clone(), p))
            .collect();
        for held in inventory {
            let Some(spec) = &held.definition else {
                continue;
            };
            let definition = match ServiceDef::from_proto(spec) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(node, service = %spec.name, error = %e, "a node holds a definition this master cannot read; not learnt");
                    continue;
                }
            };
            let (kind, detail) = match known.get(&definition.name) {
                None => (
                    "learnt",
                    format!("held by {node} (generation {})", held.generation),
                ),
                // At the same generation on the same node, what the node
                // holds is the service's definition now (a service no
                // master placed, generation 0, is the node's own; a
                // rollback or a stop on the node changes it in place).
                Some(p)
                    if p.node == node
                        && held.generation == p.generation
                        && p.definition != definition =>
                {
                    (
                        "learnt",
                        format!("changed on {node} (generation {})", held.generation),
                    )
                }
                Some(p) if p.node == node && p.generation >= held.generation => continue,
                Some(p) if p.node == node => (
                    "learnt",
                    format!(
                        "held by {node} at generation {} (the master had {})",
                        held.generation, p.generation
                    ),
                ),
                Some(p) if p.generation < held.generation => (
                    "learnt",
                    format!(
                        "held by {node} at generation {}, newer than {}'s {}",
                        held.generation, p.node, p.generation
                    ),
                ),
                Some(p) => {
                    let detail = format!(
                        "{node} holds generation {} of a service placed on {} at generation {}",
                        held.generation, p.node, p.generation
                    );
                    tracing::warn!(node, service = %definition.name, "stale copy: {detail}");
                    self.store
                        .record_event(node, &definition.name, "stale-copy", &detail)?;
                    self.queue_fence(Fence {
                        node: node.to_string(),
                        service: definition.name.clone(),
                        generation: p.generation,
                    });
                    continue;
                }
            };
            let demand = placement::demand_of(&definition, self.placement.default_memory);
            self.store.place(
                &PlacementRecord {
                    service: definition.name.clone(),
                    node: node.to_string(),
                    generation: held.generation,
                    definition,
                    demand,
                    updated_at: now(),
                },
                kind,
                &detail,
            )?;
        }
        Ok(())
    }

    /// Records a heartbeat; false when the master does not know the node
    /// with that boot id, knows another inventory of it, or the node is
    /// back from silence (it must register again).
    pub fn heartbeat(&self, request: &pb::HeartbeatRequest) -> Result<bool, MasterError> {
        // The silence this heartbeat ends is recorded first.
        if let Some(node) = self.store.node(&request.name)?
            && node.boot_id == request.boot_id
        {
            self.settle(&node)?;
        }
        let known = self.store.heartbeat(
            &request.name,
            &request.boot_id,
            resources(request.used.as_ref()),
            &request.inventory_digest,
        )?;
        if known && let Some(node) = self.store.node(&request.name)? {
            // Back at once rather than at the next sweep; a node back from
            // silence registers again, so that what it holds now (a copy
            // of a service moved meanwhile, say) is seen.
            if let Some((NodeState::Suspect | NodeState::Down, NodeState::Ready)) =
                self.settle(&node)?
            {
                return Ok(false);
            }
        }
        Ok(known)
    }

    /// Every node with its state, allocation and service count, by name.
    pub fn nodes(&self) -> Result<Vec<pb::NodeSummary>, MasterError> {
        let placements = self.store.placements()?;
        let mut held: BTreeMap<&str, (Resources, u32)> = BTreeMap::new();
        for p in &placements {
            let entry = held.entry(p.node.as_str()).or_default();
            entry.0 = Resources {
                memory: entry.0.memory.saturating_add(p.demand.memory),
                cpus: entry.0.cpus.saturating_add(p.demand.cpus),
            };
            entry.1 += 1;
        }
        Ok(self
            .store
            .nodes()?
            .into_iter()
            .map(|n| {
                let (allocated, services) = held.get(n.name.as_str()).copied().unwrap_or_default();
                self.summary(&n, allocated, services)
            })
            .collect())
    }

    fn summary(&self, n: &NodeRecord, allocated: Resources, services: u32) -> pb::NodeSummary {
        pb::NodeSummary {
            name: n.name.clone(),
            role: n.role.as_str().to_string(),
            state: self.state_of(n).as_str().to_string(),
            address: n.address.clone(),
            arch: n.arch.clone(),
            version: n.version.clone(),
            last_heartbeat: timestamp(n.last_heartbeat),
            capacity: Some(to_pb(n.capacity)),
            allocated: Some(to_pb(allocated)),
            used: Some(to_pb(n.used)),
            services,
            publish_address: n.publish_address.clone(),
            state_since: timestamp(n.state_since),
        }
    }

    /// Sets or clears `name`'s draining flag and records the transition;
    /// the node afterwards.
    pub fn set_draining(&self, name: &str, draining: bool) -> Result<pb::NodeSummary, MasterError> {
        if name.is_empty() {
            return Err(MasterError::InvalidArgument("no node name given".into()));
        }
        if !self.store.set_draining(name, draining)? {
            return Err(MasterError::NotFound(format!(
                "no node named {name:?} in the fleet"
            )));
        }
        self.sweep()?;
        self.nodes()?
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| MasterError::NotFound(format!("no node named {name:?} in the fleet")))
    }

    /// Where `services` would go, given the nodes and placements now.
    pub fn plan(
        &self,
        services: &[pb::ServiceSpec],
    ) -> Result<Vec<pb::PlannedPlacement>, MasterError> {
        let defs = services
            .iter()
            .map(ServiceDef::from_proto)
            .collect::<Result<Vec<_>, _>>()?;
        let planned = self.plan_defs(&defs)?;
        Ok(planned
            .into_iter()
            .map(|p| pb::PlannedPlacement {
                service: p.service,
                node: p.node,
                decision: p.decision.as_str().to_string(),
                from: match p.decision {
                    placement::Decision::Moved { from } => from,
                    _ => String::new(),
                },
            })
            .collect())
    }

    /// Where `defs` would go, given the nodes and placements now.
    pub fn plan_defs(&self, defs: &[ServiceDef]) -> Result<Vec<placement::Placement>, MasterError> {
        let nodes: Vec<placement::Node> = self
            .store
            .nodes()?
            .iter()
            .map(|n| placement::Node {
                name: n.name.clone(),
                role: n.role,
                state: self.state_of(n),
                capacity: n.capacity,
            })
            .collect();
        let existing: Vec<Existing> = self
            .store
            .placements()?
            .into_iter()
            .map(|p| Existing {
                ports: placement::host_ports(&p.definition),
                service: p.service,
                node: p.node,
                demand: p.demand,
            })
            .collect();
        let requests: Vec<Request> = defs
            .iter()
            .map(|d| Request::for_service(d, self.placement.default_memory))
            .collect();
        Ok(placement::plan(&nodes, &existing, &requests)?)
    }

    /// Places `defs` for a deploy or a sync and records each placement at
    /// its next generation (with a `placed` or `moving` event), all or
    /// nothing: a service that waits for its down node is an error, as is
    /// one that fits nowhere.
    pub fn place(&self, defs: &[ServiceDef]) -> Result<Vec<Placed>, MasterError> {
        let _placing = self
            .placing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let planned = self.plan_defs(defs)?;
        let waiting: Vec<String> = planned
            .iter()
            .filter(|p| p.decision == placement::Decision::Waiting)
            .map(|p| {
                format!(
                    "service {:?} waits for node {}, which is down: its data lives there (volumes or VM files), so it is not moved",
                    p.service, p.node
                )
            })
            .collect();
        if !waiting.is_empty() {
            return Err(MasterError::FailedPrecondition(waiting.join("; ")));
        }
        let known: BTreeMap<String, PlacementRecord> = self
            .store
            .placements()?
            .into_iter()
            .map(|p| (p.service.clone(), p))
            .collect();
        let mut placed = Vec::with_capacity(planned.len());
        for p in planned {
            let def = defs
                .iter()
                .find(|d| d.name == p.service)
                .ok_or_else(|| MasterError::Internal(format!("no definition of {}", p.service)))?;
            let node = self.store.node(&p.node)?.ok_or_else(|| {
                MasterError::Internal(format!("placed on unknown node {}", p.node))
            })?;
            let previous = known.get(&p.service).cloned();
            let generation = previous.as_ref().map_or(0, |p| p.generation) + 1;
            let (kind, detail) = match &p.decision {
                placement::Decision::New => {
                    ("placed", format!("on {} (generation {generation})", p.node))
                }
                placement::Decision::Moved { from } => (
                    "moving",
                    format!("from {from} to {} (generation {generation})", p.node),
                ),
                _ => ("", String::new()),
            };
            self.store.place(
                &PlacementRecord {
                    service: p.service.clone(),
                    node: p.node.clone(),
                    generation,
                    definition: def.clone(),
                    demand: placement::demand_of(def, self.placement.default_memory),
                    updated_at: now(),
                },
                kind,
                &detail,
            )?;
            placed.push(Placed {
                service: p.service.clone(),
                node,
                generation,
                decision: p.decision,
                previous,
            });
        }
        Ok(placed)
    }

    /// Puts back the placement of `service` as it was before a deploy its
    /// node refused (`previous`, or none), keeping `generation` (the one
    /// the refused deploy carried) so that no older command can follow it.
    pub fn restore(
        &self,
        service: &str,
        node: &str,
        previous: Option<PlacementRecord>,
        generation: u64,
    ) -> Result<(), MasterError> {
        let _placing = self
            .placing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match previous {
            Some(mut p) => {
                p.generation = p.generation.max(generation);
                let detail = format!("back on {} (generation {})", p.node, p.generation);
                self.store.place(&p, "placement-restored", &detail)?;
            }
            None => {
                self.store.unplace(service, node, "", "")?;
            }
        }
        Ok(())
    }

    /// The placement of `service` and its node.
    pub fn placement_of(
        &self,
        service: &str,
    ) -> Result<(PlacementRecord, NodeRecord), MasterError> {
        let not_found =
            || MasterError::NotFound(format!("no node of the fleet holds service {service:?}"));
        if service.is_empty() {
            return Err(MasterError::InvalidArgument(
                "a service name is required".into(),
            ));
        }
        let placement = self.store.placement(service)?.ok_or_else(not_found)?;
        let node = self.store.node(&placement.node)?.ok_or_else(not_found)?;
        Ok((placement, node))
    }

    /// Whether the master is still in its recovery window (one
    /// `lost_after` from its start), in which it stops and moves nothing.
    pub fn in_recovery(&self) -> bool {
        let window =
            chrono::Duration::from_std(self.fleet.lost_after).unwrap_or(chrono::Duration::MAX);
        now() < self.started + window
    }

    /// The next service to move, if any: one placed on a node that is down
    /// or draining, that may move (its data does not live there), that is
    /// not in `skip`, and that has somewhere to go now.
    pub fn next_move(
        &self,
        skip: &std::collections::BTreeSet<String>,
    ) -> Result<Option<ServiceDef>, MasterError> {
        let nodes: BTreeMap<String, NodeState> = self
            .store
            .nodes()?
            .iter()
            .map(|n| (n.name.clone(), self.state_of(n)))
            .collect();
        for p in self.store.placements()? {
            let leaving = matches!(
                nodes.get(&p.node),
                Some(NodeState::Down | NodeState::Draining)
            );
            if !leaving || skip.contains(&p.service) || placement::node_bound(&p.definition) {
                continue;
            }
            let planned = match self.plan_defs(std::slice::from_ref(&p.definition)) {
                Ok(planned) => planned,
                Err(e) => {
                    tracing::debug!(service = %p.service, error = %e, "cannot move yet");
                    continue;
                }
            };
            if planned
                .iter()
                .any(|q| matches!(q.decision, placement::Decision::Moved { .. }))
            {
                return Ok(Some(p.definition));
            }
        }
        Ok(None)
    }

    /// Queues a stale copy to stop (once).
    pub fn queue_fence(&self, fence: Fence) {
        let mut fences = self
            .fences
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !fences.contains(&fence) {
            fences.push(fence);
        }
    }

    /// The stale copies queued to stop, taken off the queue.
    pub fn take_fences(&self) -> Vec<Fence> {
        std::mem::take(
            &mut *self
                .fences
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The placement settings (for demands).
    pub fn placement_settings(&self) -> &PlacementSettings {
        &self.placement
    }

    /// How often agents heartbeat.
    pub fn heartbeat_interval_ms(&self) -> u32 {
        millis(self.fleet.heartbeat_interval)
    }
}

/// A registration request checked: a name fit for `node = "..."`, a known
/// role, an address to dial, a boot id.
fn check_registration(r: &pb::RegisterRequest) -> Result<Registration, MasterError> {
    let bad = |m: String| MasterError::InvalidArgument(m);
    if let Some(problem) = name_problem(&r.name) {
        return Err(bad(format!("node name {:?} {problem}", r.name)));
    }
    let role = if r.role.is_empty() {
        NodeRole::Worker
    } else {
        NodeRole::parse(&r.role).ok_or_else(|| {
            bad(format!(
                "node {:?}: role {:?} is not \"worker\", \"core\" or \"edge\"",
                r.name, r.role
            ))
        })?
    };
    if r.advertise.parse::<SocketAddr>().is_err() {
        return Err(bad(format!(
            "node {:?}: advertise address {:?} is not host:port with an IP address",
            r.name, r.advertise
        )));
    }
    if r.boot_id.is_empty() {
        return Err(bad(format!("node {:?}: no boot id", r.name)));
    }
    if !r.publish_address.is_empty() && r.publish_address.parse::<std::net::IpAddr>().is_err() {
        return Err(bad(format!(
            "node {:?}: publish address {:?} is not an IP address",
            r.name, r.publish_address
        )));
    }
    Ok(Registration {
        name: r.name.clone(),
        role,
        address: r.advertise.clone(),
        arch: r.arch.clone(),
        version: r.version.clone(),
        capacity: resources(r.capacity.as_ref()),
        boot_id: r.boot_id.clone(),
        publish_address: r.publish_address.clone(),
        inventory_digest: r.inventory_digest.clone(),
    })
}

/// `FleetService` over a [`Fleet`]. The store's calls are short SQLite
/// statements; they run on the blocking pool.
#[derive(Clone)]
pub struct FleetApi {
    fleet: Arc<Fleet>,
}

impl FleetApi {
    /// The service over `fleet`.
    pub fn new(fleet: Arc<Fleet>) -> FleetApi {
        FleetApi { fleet }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Fleet) -> Result<T, MasterError> + Send + 'static,
    ) -> Result<T, Status> {
        let fleet = self.fleet.clone();
        tokio::task::spawn_blocking(move || f(&fleet))
            .await
            .map_err(|e| MasterError::Internal(format!("a fleet task failed: {e}")))?
            .map_err(Status::from)
    }
}

#[tonic::async_trait]
impl FleetService for FleetApi {
    async fn register(
        &self,
        request: RpcRequest<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let request = request.into_inner();
        let interval = self
            .blocking(move |f| {
                f.register(&request)?;
                Ok(f.heartbeat_interval_ms())
            })
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            heartbeat_interval_ms: interval,
        }))
    }

    async fn heartbeat(
        &self,
        request: RpcRequest<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let request = request.into_inner();
        let (known, interval) = self
            .blocking(move |f| Ok((f.heartbeat(&request)?, f.heartbeat_interval_ms())))
            .await?;
        Ok(Response::new(pb::HeartbeatResponse {
            heartbeat_interval_ms: interval,
            register_again: !known,
        }))
    }

    async fn list_nodes(
        &self,
        _request: RpcRequest<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let nodes = self.blocking(|f| f.nodes()).await?;
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn drain(
        &self,
        request: RpcRequest<pb::NodeRequest>,
    ) -> Result<Response<pb::NodeActionResponse>, Status> {
        let name = request.into_inner().name;
        let node = self.blocking(move |f| f.set_draining(&name, true)).await?;
        Ok(Response::new(pb::NodeActionResponse { node: Some(node) }))
    }

    async fn undrain(
        &self,
        request: RpcRequest<pb::NodeRequest>,
    ) -> Result<Response<pb::NodeActionResponse>, Status> {
        let name = request.into_inner().name;
        let node = self.blocking(move |f| f.set_draining(&name, false)).await?;
        Ok(Response::new(pb::NodeActionResponse { node: Some(node) }))
    }

    async fn plan(
        &self,
        request: RpcRequest<pb::PlanRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        let services = request.into_inner().services;
        let placements = self.blocking(move |f| f.plan(&services)).await?;
        Ok(Response::new(pb::PlanResponse { placements }))
    }
}
