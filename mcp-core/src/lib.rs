//! MCP's orchestration logic as libraries.
//!
//! - [`servicedef`]: service definition files: parse, validate, edit `active`.
//! - [`registry`]: the agent's SQLite registry of services, components and events.
//! - [`files`]: file operations confined to `<srv_root>/<service>/`.
//! - [`config`]: agent and CLI configuration, layered defaults, `--dev` set-up.
//! - [`health`]: the gate a deploy waits on: whether a started instance
//!   became ready (running, and passing its health check), or why not.
//! - [`reconcile`]: turning a definition into running instances, and comparing
//!   desired with observed state.
//! - [`monitor`]: drift detection from runtime events and sweeps, drift
//!   events, rate-limited exec-style alerts.
//! - [`agent`]: the agent's gRPC service and server wiring.
//! - [`client`]: the client used by `mcp`, the Python bindings and tests.
//! - [`transfer`]: pushing and pulling files between this machine and a
//!   service's directory on a node, checked end to end.
//! - [`error`]: the agent's error type and its one mapping to gRPC status codes.
//!
//! The binaries `mcp` and `mcp-agent` are thin shells over these modules.

pub mod agent;
pub mod auth;
pub mod client;
pub mod config;
pub mod error;
pub mod files;
pub(crate) mod fsutil;
pub mod health;
pub mod monitor;
pub mod reconcile;
pub mod registry;
pub mod servicedef;
pub mod tls;
pub mod transfer;

pub use mcp_proto::v1 as proto;
