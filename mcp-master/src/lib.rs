//! The fleet's master: what a fleet of MCP agents needs one place to know.
//!
//! - [`config`]: the master's configuration (listening, TLS, auth and
//!   limits as the agent's; heartbeats, `lost_after`, placement defaults).
//! - [`store`]: its SQLite database (nodes, placements, events), of which
//!   it is the single writer, and which it can lose without losing
//!   anything.
//! - [`liveness`]: a node's state from its heartbeats (ready, suspect,
//!   down, draining) and the recovery window after the master starts.
//! - [`fleet`]: nodes registering and heartbeating, what they hold, and
//!   `FleetService` over it; placement itself is
//!   [`mcp_core::placement`], a pure function.
//! - [`dispatch`]: `mcp.v1.AgentService` for the whole fleet: deploys and
//!   syncs placed (with a generation each) and sent to their nodes, every
//!   other call routed to its service's node, queries gathered from every
//!   node with the node on each row.
//! - [`agents`]: the master's credential for agents and a connection per
//!   node.
//! - [`mover`]: services moved off down and drained nodes one at a time,
//!   stale copies stopped (generation fencing).
//! - [`alerts`]: the alert program for nodes going suspect, down and back,
//!   and services waiting on a down node.
//! - [`server`]: the gRPC server wiring and graceful shutdown.
//! - [`error`]: the master's errors and their gRPC status codes.
//!
//! `mcp-master` is a thin binary over [`server::Master`].

pub mod agents;
pub mod alerts;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod fleet;
pub mod liveness;
pub mod mover;
pub mod server;
pub mod store;

pub use server::Master;
