//! Placement: which node of a fleet runs each service.
//!
//! A pure, deterministic function of the nodes (role, state, capacity), the
//! placements that exist and the services to place; no I/O, so the master
//! calls it for deploys, for `Plan`, after a node is lost and while a node
//! drains, and the benchmark measures it alone.
//!
//! The rules (SPEC section 10):
//! - **Sticky.** A placed service stays on its node while that node can keep
//!   it: it is moved only when its node is draining or down, and a service
//!   that keeps data on its node (volumes, or a VM's boot files) is never
//!   moved: on a down node it waits, on a draining one it stays.
//! - **Pins.** `node = "x"` puts the service on `x`, which must exist, be up,
//!   have room and not be an edge node. A pin to another node than the one a
//!   service runs on moves it, unless its data lives where it is.
//! - **Tiers.** `tier = "core"` goes to a core node; `tier = "worker"` (the
//!   default) to a ready worker or core node.
//! - **Room.** A service's demand is the sum of its components' memory (a
//!   default for components without one) and virtual CPUs (a VM without
//!   `vcpus` has one; a container asks for none). No node is given more than
//!   its capacity.
//! - **Spread.** Among the nodes that can take a service, the one whose
//!   fuller resource (memory or CPUs, as a fraction of its capacity) would
//!   be least full afterwards wins; ties go to the first name. Spreading
//!   keeps a small fleet's load even and one node's loss small; services are
//!   placed largest first, so a big one still finds a node with room.
//! - **Ports.** Two services on one node cannot publish the same host port
//!   (on the same address, or where either names none): a node that
//!   publishes a port already does not take another service publishing it.
//! - **All or nothing.** If any service cannot be placed, [`plan`] returns
//!   every problem and no placement.

mod error;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::instance::RuntimeKind;
use crate::servicedef::{ServiceDef, Tier};

pub use error::{PlacementError, Problem};

/// What a node does in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Runs components (the default).
    #[default]
    Worker,
    /// A worker that also takes `tier = "core"` services: the master's node.
    Core,
    /// Runs no components; keeps the reverse proxy.
    Edge,
}

impl NodeRole {
    /// `"worker"`, `"core"` or `"edge"`, as in configuration and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Worker => "worker",
            NodeRole::Core => "core",
            NodeRole::Edge => "edge",
        }
    }

    /// Reads [`as_str`](Self::as_str)'s form back.
    pub fn parse(text: &str) -> Option<NodeRole> {
        match text {
            "worker" => Some(NodeRole::Worker),
            "core" => Some(NodeRole::Core),
            "edge" => Some(NodeRole::Edge),
            _ => None,
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where a node stands, as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Heartbeating; takes new services.
    #[default]
    Ready,
    /// Missed its heartbeat TTL plus grace: keeps what it runs, takes
    /// nothing new.
    Suspect,
    /// Silent for longer than `lost_after`: its movable services go
    /// elsewhere, the others wait for it.
    Down,
    /// Being emptied by an operator: keeps only what cannot move.
    Draining,
}

impl NodeState {
    /// `"ready"`, `"suspect"`, `"down"` or `"draining"`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Ready => "ready",
            NodeState::Suspect => "suspect",
            NodeState::Down => "down",
            NodeState::Draining => "draining",
        }
    }

    /// Reads [`as_str`](Self::as_str)'s form back.
    pub fn parse(text: &str) -> Option<NodeState> {
        match text {
            "ready" => Some(NodeState::Ready),
            "suspect" => Some(NodeState::Suspect),
            "down" => Some(NodeState::Down),
            "draining" => Some(NodeState::Draining),
            _ => None,
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// An amount of memory and CPUs: what a node offers or a service asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Resources {
    /// Memory in bytes.
    pub memory: u64,
    /// Whole CPUs.
    pub cpus: u32,
}

impl Resources {
    fn saturating_add(self, other: Resources) -> Resources {
        Resources {
            memory: self.memory.saturating_add(other.memory),
            cpus: self.cpus.saturating_add(other.cpus),
        }
    }

    fn saturating_sub(self, other: Resources) -> Resources {
        Resources {
            memory: self.memory.saturating_sub(other.memory),
            cpus: self.cpus.saturating_sub(other.cpus),
        }
    }

    /// Whether `self` fits within `room`.
    pub fn fits_in(self, room: Resources) -> bool {
        self.memory <= room.memory && self.cpus <= room.cpus
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} memory, {} CPU{}",
            format_bytes(self.memory),
            self.cpus,
            if self.cpus == 1 { "" } else { "s" }
        )
    }
}

/// `1.5 GiB`, `256 MiB`, `512 B`: binary units, one decimal where needed.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's name, unique in the fleet.
    pub name: String,
    /// Worker, core or edge.
    pub role: NodeRole,
    /// Ready, suspect, down or draining.
    pub state: NodeState,
    /// What it offers services.
    pub capacity: Resources,
}

/// A service that is placed already, and what it holds on its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// The service's name.
    pub service: String,
    /// The node it is on.
    pub node: String,
    /// What it was given there.
    pub demand: Resources,
    /// The host ports it publishes there.
    pub ports: Vec<HostPort>,
}

/// A host port a service publishes on its node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    /// The host address it names; empty for none (the node's publish
    /// address, or every address).
    pub address: String,
    /// The port.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

impl HostPort {
    /// Whether two services publishing these could not share a node: the
    /// same port and protocol, on the same address or where either names
    /// none.
    pub fn clashes(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.address.is_empty()
                || other.address.is_empty()
                || self.address == other.address)
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.address.is_empty() {
            write!(f, "{}:", self.address)?;
        }
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// The host ports `def`'s components publish, sorted.
pub fn host_ports(def: &ServiceDef) -> Vec<HostPort> {
    let mut ports: Vec<HostPort> = def
        .components
        .iter()
        .flat_map(|c| &c.ports)
        .map(|p| HostPort {
            address: p.host_ip.clone(),
            port: p.host_port,
            protocol: p.protocol.clone(),
        })
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

/// A service to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The service's name.
    pub service: String,
    /// `node = "x"`: the node it must run on.
    pub pin: Option<String>,
    /// Core or worker.
    pub tier: Tier,
    /// What it asks for.
    pub demand: Resources,
    /// Whether its data lives on its node (volumes, or a VM's boot files),
    /// so that it never moves.
    pub node_bound: bool,
    /// The host ports it publishes.
    pub ports: Vec<HostPort>,
}

impl Request {
    /// The request for a definition: its pin, tier, demand (components
    /// without `memory` count `default_memory`) and whether it is bound to
    /// its node.
    pub fn for_service(def: &ServiceDef, default_memory: u64) -> Request {
        Request {
            service: def.name.clone(),
            pin: def.node.clone(),
            tier: def.tier,
            demand: demand_of(def, default_memory),
            node_bound: node_bound(def),
            ports: host_ports(def),
        }
    }
}

/// What a service asks of its node: its components' memory (`default_memory`
/// for those without) and virtual CPUs (one for a VM without `vcpus`).
pub fn demand_of(def: &ServiceDef, default_memory: u64) -> Resources {
    def.components
        .iter()
        .fold(Resources::default(), |total, component| {
            let memory = component
                .memory
                .as_ref()
                .map_or(default_memory, |m| m.bytes());
            let cpus = match component.runtime {
                RuntimeKind::Unikernel => component.vcpus.unwrap_or(1),
                RuntimeKind::Container => component.vcpus.unwrap_or(0),
            };
            total.saturating_add(Resources { memory, cpus })
        })
}

/// Whether a service's data lives on its node: a component mounts a volume
/// (a host path or a named volume) or boots a VM from files on the node.
pub fn node_bound(def: &ServiceDef) -> bool {
    def.components
        .iter()
        .any(|c| !c.volumes.is_empty() || c.runtime == RuntimeKind::Unikernel)
}

/// Where one service goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The service's name.
    pub service: String,
    /// The node it runs on, or waits for.
    pub node: String,
    /// How it came to be there.
    pub decision: Decision,
}

/// How a service came to its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It was there and stays.
    Kept,
    /// It was nowhere and is placed here.
    New,
    /// It moves here from another node.
    Moved {
        /// The node it leaves.
        from: String,
    },
    /// Its node is down and its data lives there: it waits for the node.
    Waiting,
}

impl Decision {
    /// `"kept"`, `"new"`, `"moved"` or `"waiting"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Kept => "kept",
            Decision::New => "new",
            Decision::Moved { .. } => "moved",
            Decision::Waiting => "waiting",
        }
    }
}

/// A node's standing while a plan is made.
struct Slot<'a> {
    node: &'a Node,
    used: Resources,
    /// The host ports published there, by port number, with the service
    /// publishing each.
    ports: HashMap<u16, Vec<(&'a str, &'a HostPort)>>,
}

impl<'a> Slot<'a> {
    /// The first of `ports` published here by a service other than
    /// `service`, with that service.
    fn port_taken(&self, service: &str, ports: &[HostPort]) -> Option<(&'a HostPort, &'a str)> {
        ports.iter().find_map(|wanted| {
            self.ports
                .get(&wanted.port)?
                .iter()
                .find(|(by, held)| *by != service && held.clashes(wanted))
                .map(|(by, held)| (*held, *by))
        })
    }

    /// Records that `service` publishes `ports` here.
    fn publish(&mut self, service: &'a str, ports: &'a [HostPort]) {
        for port in ports {
            self.ports
                .entry(port.port)
                .or_default()
                .push((service, port));
        }
    }

    /// Takes `service`'s `ports` out (it leaves, or publishes others now).
    fn release_ports(&mut self, service: &str, ports: &[HostPort]) {
        for port in ports {
            if let Some(held) = self.ports.get_mut(&port.port) {
                held.retain(|(by, _)| *by != service);
            }
        }
    }

    fn free(&self) -> Resources {
        self.node.capacity.saturating_sub(self.used)
    }

    /// How full the fuller resource would be with `demand` added, as a
    /// fraction of the capacity; resources the node does not offer and the
    /// service does not ask for do not count.
    fn fullness_with(&self, demand: Resources) -> f64 {
        let after = self.used.saturating_add(demand);
        let fraction = |used: u64, capacity: u64| {
            if capacity == 0 {
                0.0
            } else {
                used as f64 / capacity as f64
            }
        };
        fraction(after.memory, self.node.capacity.memory).max(fraction(
            u64::from(after.cpus),
            u64::from(self.node.capacity.cpus),
        ))
    }

    /// Whether new work may land here.
    fn takes_new(&self, tier: Tier) -> bool {
        self.node.state == NodeState::Ready
            && match tier {
                Tier::Core => self.node.role == NodeRole::Core,
                Tier::Worker => self.node.role != NodeRole::Edge,
            }
    }
}

/// Places `requests` on `nodes`, given the placements that exist (services
/// not among the requests keep what they hold). Returns one placement per
/// request, in the order of service names, or every problem found.
///
/// Deterministic: the same nodes, placements and requests, in any order,
/// give the same plan.
pub fn plan(
    nodes: &[Node],
    existing: &[Existing],
    requests: &[Request],
) -> Result<Vec<Placement>, PlacementError> {
    let mut sorted_nodes: Vec<&Node> = nodes.iter().collect();
    sorted_nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut slots: Vec<Slot> = sorted_nodes
        .into_iter()
        .map(|node| Slot {
            node,
            used: Resources::default(),
            ports: HashMap::new(),
        })
        .collect();
    let index: HashMap<&str, usize> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| (s.node.name.as_str(), i))
        .collect();

    let mut problems: Vec<(String, Problem)> = Vec::new();
    let mut requested: BTreeMap<&str, &Request> = BTreeMap::new();
    for request in requests {
        if requested.insert(&request.service, request).is_some() {
            problems.push((request.service.clone(), Problem::Duplicate));
        }
    }

    // Everything placed already holds its room, the services being placed
    // again included (they give it back below, or keep it).
    let mut current: BTreeMap<&str, &Existing> = BTreeMap::new();
    for placed in existing {
        current.insert(&placed.service, placed);
    }
    for placed in current.values() {
        if let Some(&i) = index.get(placed.node.as_str()) {
            slots[i].used = slots[i].used.saturating_add(placed.demand);
            slots[i].publish(&placed.service, &placed.ports);
        }
    }

    // First what stays: a service keeps its node when the node can keep it.
    let mut placements: BTreeMap<&str, Placement> = BTreeMap::new();
    let mut to_place: Vec<(&Request, Option<&str>)> = Vec::new();
    for (&service, &request) in &requested {
        let Some(placed) = current.get(service) else {
            to_place.push((request, None));
            continue;
        };
        let here = placed.node.as_str();
        let Some(&i) = index.get(here) else {
            // Its node is no longer known: like a node that is gone.
            if request.node_bound {
                placements.insert(service, waiting(request, here));
            } else {
                to_place.push((request, Some(here)));
            }
            continue;
        };
        let pin_elsewhere = request.pin.as_deref().is_some_and(|pin| pin != here);
        let slot = &slots[i];
        let tier_fits = match request.tier {
            Tier::Core => slot.node.role == NodeRole::Core,
            Tier::Worker => slot.node.role != NodeRole::Edge,
        };
        let must_leave = pin_elsewhere || !tier_fits;
        if must_leave && request.node_bound {
            let to = match &request.pin {
                Some(pin) if pin_elsewhere => pin.clone(),
                _ => format!("a {} node", request.tier),
            };
            problems.push((
                request.service.clone(),
                Problem::BoundToNode {
                    node: here.to_string(),
                    to,
                },
            ));
            continue;
        }
        // A service whose data lives here, or that is pinned here, stays
        // with its node: on a draining node it stays, on a down one it
        // waits. Any other leaves a draining or down node.
        let stays_with_node = request.node_bound || request.pin.as_deref() == Some(here);
        if must_leave
            || (!stays_with_node
                && matches!(slot.node.state, NodeState::Down | NodeState::Draining))
        {
            to_place.push((request, Some(here)));
            continue;
        }
        if slot.node.state == NodeState::Down {
            placements.insert(service, waiting(request, here));
            continue;
        }
        // It stays; a demand that grew must fit in what is free.
        let room = slot.free().saturating_add(placed.demand);
        let grown = request.demand.memory > placed.demand.memory
            || request.demand.cpus > placed.demand.cpus;
        if grown && !request.demand.fits_in(room) {
            problems.push((
                request.service.clone(),
                Problem::DoesNotFit {
                    node: here.to_string(),
                    demand: request.demand,
                    free: room,
                },
            ));
            continue;
        }
        slots[i].used = slots[i]
            .used
            .saturating_sub(placed.demand)
            .saturating_add(request.demand);
        slots[i].release_ports(service, &placed.ports);
        slots[i].publish(&request.service, &request.ports);
        placements.insert(
            service,
            Placement {
                service: request.service.clone(),
                node: here.to_string(),
                decision: Decision::Kept,
            },
        );
    }

    // Services leaving a node give its room back before anything lands.
    for (request, from) in &to_place {
        if let Some(from) = from
            && let (Some(&i), Some(placed)) =
                (index.get(from), current.get(request.service.as_str()))
        {
            slots[i].used = slots[i].used.saturating_sub(placed.demand);
            slots[i].release_ports(&request.service, &placed.ports);
        }
    }

    // Then the rest, pinned first, largest first, by name.
    to_place.sort_by(|(a, _), (b, _)| {
        b.pin
            .is_some()
            .cmp(&a.pin.is_some())
            .then(b.demand.memory.cmp(&a.demand.memory))
            .then(b.demand.cpus.cmp(&a.demand.cpus))
            .then(a.service.cmp(&b.service))
    });
    for (request, from) in to_place {
        let chosen = match &request.pin {
            Some(pin) => pinned(&slots, &index, request, pin),
            None => best(&slots, request),
        };
        match chosen {
            Ok(i) => {
                slots[i].used = slots[i].used.saturating_add(request.demand);
                slots[i].publish(&request.service, &request.ports);
                let decision = match from {
                    Some(from) if from != slots[i].node.name => Decision::Moved {
                        from: from.to_string(),
                    },
                    Some(_) => Decision::Kept,
                    None => Decision::New,
                };
                placements.insert(
                    &request.service,
                    Placement {
                        service: request.service.clone(),
                        node: slots[i].node.name.clone(),
                        decision,
                    },
                );
            }
            Err(problem) => problems.push((request.service.clone(), problem)),
        }
    }

    if problems.is_empty() {
        Ok(placements.into_values().collect())
    } else {
        problems.sort_by(|a, b| a.0.cmp(&b.0));
        Err(PlacementError { problems })
    }
}

fn waiting(request: &Request, node: &str) -> Placement {
    Placement {
        service: request.service.clone(),
        node: node.to_string(),
        decision: Decision::Waiting,
    }
}

/// The slot of the node a request is pinned to, if it can take it.
fn pinned(
    slots: &[Slot],
    index: &HashMap<&str, usize>,
    request: &Request,
    pin: &str,
) -> Result<usize, Problem> {
    let Some(&i) = index.get(pin) else {
        return Err(Problem::UnknownNode {
            node: pin.to_string(),
        });
    };
    let slot = &slots[i];
    if slot.node.role == NodeRole::Edge {
        return Err(Problem::EdgeNode {
            node: pin.to_string(),
        });
    }
    if request.tier == Tier::Core && slot.node.role != NodeRole::Core {
        return Err(Problem::NotCore {
            node: pin.to_string(),
        });
    }
    match slot.node.state {
        NodeState::Ready | NodeState::Suspect => {}
        state => {
            return Err(Problem::Unavailable {
                node: pin.to_string(),
                state,
            });
        }
    }
    if !request.demand.fits_in(slot.free()) {
        return Err(Problem::DoesNotFit {
            node: pin.to_string(),
            demand: request.demand,
            free: slot.free(),
        });
    }
    if let Some((port, by)) = slot.port_taken(&request.service, &request.ports) {
        return Err(Problem::PortTaken {
            node: pin.to_string(),
            port: port.clone(),
            by: by.to_string(),
        });
    }
    Ok(i)
}

/// The slot that takes a request best, spreading; or why none can.
fn best(slots: &[Slot], request: &Request) -> Result<usize, Problem> {
    let mut chosen: Option<(usize, f64)> = None;
    let mut roomiest: Option<&Slot> = None;
    let mut eligible = 0usize;
    let mut ports_taken = false;
    for (i, slot) in slots.iter().enumerate() {
        if !slot.takes_new(request.tier) {
            continue;
        }
        eligible += 1;
        let free = slot.free();
        if roomiest.is_none_or(|r| {
            let r = r.free();
            (free.memory, free.cpus) > (r.memory, r.cpus)
        }) {
            roomiest = Some(slot);
        }
        if !request.demand.fits_in(free) {
            continue;
        }
        let score = slot.fullness_with(request.demand);
        if chosen.is_none_or(|(_, best)| score < best) {
            // Ports are checked only where the node would win: with none
            // chosen, every node that fits is checked.
            if slot.port_taken(&request.service, &request.ports).is_some() {
                ports_taken = true;
                continue;
            }
            chosen = Some((i, score));
        }
    }
    if let Some((i, _)) = chosen {
        return Ok(i);
    }
    if eligible == 0 {
        return Err(Problem::NoNode { tier: request.tier });
    }
    if ports_taken {
        return Err(Problem::PortsTaken {
            ports: request.ports.clone(),
        });
    }
    Err(Problem::NoRoom {
        demand: request.demand,
        best: roomiest.map(|s| (s.node.name.clone(), s.free())),
    })
}
