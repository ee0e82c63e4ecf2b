//! The MCP node agent as a library: everything a node does, under the thin
//! `mcp-agent` binary (which parses flags and calls [`server::Agent`]). The
//! end-to-end tests and the benchmark run this very code.
//!
//! - [`config`]: the agent's configuration, layered defaults and flags.
//! - [`registry`]: the node's SQLite registry of services, components and
//!   events.
//! - [`reconcile`]: turning a definition into running instances, and
//!   comparing what the registry wants with what the runtime has.
//! - [`health`]: the gate a deploy waits on: whether a started instance
//!   became ready (running, and passing its health check), or why not.
//! - [`monitor`]: drift detection from runtime events and sweeps, drift
//!   events, rate-limited exec-style alerts.
//! - [`files`]: file operations confined to `<srv_root>/<service>/`.
//! - [`join`]: fleet membership: registering with the master (`[master]`)
//!   with the node's inventory, and heartbeating.
//! - [`server`]: the agent's gRPC service over the reconciler
//!   ([`server::service`]) and the server wiring (TLS, the guard and audit
//!   layer, the activity layer, health checking, reflection, graceful
//!   shutdown).
//! - [`supervise`]: restarting the agent's long-running tasks.
//! - [`dev`]: `--dev` set-up (a development CA, certificate and token).
//! - [`error`]: the agent's error type and its one mapping to gRPC status
//!   codes.
//!
//! What front ends share with the agent (definitions, configuration files,
//! TLS, auth, the client) is in `mcp-core`, below this crate.

pub mod config;
pub mod dev;
pub mod error;
pub mod files;
pub mod health;
pub mod join;
pub mod monitor;
pub mod reconcile;
pub mod registry;
pub mod server;
pub mod supervise;

pub use server::Agent;
