//! Why services could not be placed.

use std::fmt;

use super::{NodeState, Resources};
use crate::servicedef::Tier;

/// Every service of a plan that could not be placed, and why; nothing of
/// the plan was placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PlacementError {
    /// `(service, problem)`, by service name.
    pub problems: Vec<(String, Problem)>,
}

impl fmt::Display for PlacementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, (service, problem)) in self.problems.iter().enumerate() {
            if n > 0 {
                f.write_str("; ")?;
            }
            write!(f, "service {service}: {problem}")?;
        }
        Ok(())
    }
}

/// Why one service could not be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The service is named twice among the requests.
    Duplicate,
    /// Its pin names a node the fleet does not have.
    UnknownNode {
        /// The pinned name.
        node: String,
    },
    /// Its pin names an edge node, which runs no components.
    EdgeNode {
        /// The pinned node.
        node: String,
    },
    /// It is `tier = "core"` and pinned to a node that is not core.
    NotCore {
        /// The pinned node.
        node: String,
    },
    /// Its pinned node cannot take work now.
    Unavailable {
        /// The pinned node.
        node: String,
        /// Down or draining.
        state: NodeState,
    },
    /// It does not fit on the node it must run on.
    DoesNotFit {
        /// The node.
        node: String,
        /// What the service asks for.
        demand: Resources,
        /// What the node has free for it.
        free: Resources,
    },
    /// No node of its tier is ready.
    NoNode {
        /// The service's tier.
        tier: Tier,
    },
    /// No ready node has room for it.
    NoRoom {
        /// What the service asks for.
        demand: Resources,
        /// The ready node with the most room, and that room.
        best: Option<(String, Resources)>,
    },
    /// A host port it publishes is published on the node it must run on by
    /// another service.
    PortTaken {
        /// The node.
        node: String,
        /// The port.
        port: super::HostPort,
        /// The service publishing it there.
        by: String,
    },
    /// Every ready node with room publishes one of its host ports already.
    PortsTaken {
        /// Its host ports.
        ports: Vec<super::HostPort>,
    },
    /// Its data lives on its node and it was asked to run elsewhere.
    BoundToNode {
        /// The node holding its data.
        node: String,
        /// Where it was asked to go.
        to: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Duplicate => f.write_str("named more than once"),
            Problem::UnknownNode { node } => {
                write!(f, "pinned to node {node:?}, which the fleet does not have")
            }
            Problem::EdgeNode { node } => write!(
                f,
                "pinned to node {node:?}, an edge node: edge nodes run no components"
            ),
            Problem::NotCore { node } => write!(
                f,
                "tier \"core\" but pinned to node {node:?}, which is not a core node"
            ),
            Problem::Unavailable { node, state } => {
                write!(f, "pinned to node {node:?}, which is {state}")
            }
            Problem::DoesNotFit { node, demand, free } => {
                write!(f, "needs {demand} but node {node:?} has {free} free")
            }
            Problem::NoNode { tier } => match tier {
                Tier::Core => f.write_str("tier \"core\" and no core node is ready"),
                Tier::Worker => f.write_str("no worker or core node is ready"),
            },
            Problem::NoRoom { demand, best } => match best {
                Some((node, free)) => write!(
                    f,
                    "needs {demand}; no ready node has room (the roomiest, {node:?}, has {free} free)"
                ),
                None => write!(f, "needs {demand}; no ready node has room"),
            },
            Problem::PortTaken { node, port, by } => write!(
                f,
                "publishes host port {port}, which service {by:?} publishes on node {node:?} already"
            ),
            Problem::PortsTaken { ports } => {
                let ports: Vec<String> = ports.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "publishes host port {}, and every ready node with room publishes it already",
                    ports.join(", ")
                )
            }
            Problem::BoundToNode { node, to } => write!(
                f,
                "keeps its data on node {node:?} (volumes or VM files) and cannot move to {to}; \
                 remove it there first"
            ),
        }
    }
}
