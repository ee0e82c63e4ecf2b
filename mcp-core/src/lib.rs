//! What every MCP front end and every server shares, and what other Rust
//! tools embed. It links no SQLite and no runtime backend: `mcp`, the
//! Python bindings and the agent all build on it.
//!
//! - [`servicedef`]: service definition files: parse, validate, edit.
//! - [`instance`]: the value types definitions and runtimes share (runtime
//!   kind, ports, volumes, health check, kernel boot) and MCP's labels.
//! - [`wire`]: what both ends of the gRPC API agree on beyond the messages
//!   (deploy options, actions, HTTP/2 sizes, file chunks, timestamps).
//! - [`config`]: the configuration files MCP reads and what they share.
//! - [`tls`]: certificates, server and client TLS, the development PKI.
//! - [`alert`]: running the alert program exec-style, and its rate limit.
//! - [`auth`]: token validators, roles, the guard and audit layer every
//!   server puts in front of its handlers.
//! - [`client`]: the gRPC client used by `mcp`, the Python bindings and
//!   tests, and its side of file transfers ([`client::transfer`]: pushing
//!   and pulling files between this machine and a service's directory on a
//!   node, checked end to end).
//! - [`ops`]: the operations `mcp` and the Python bindings both offer, one
//!   function each (what an argument means, stop and start through the
//!   definition file).
//! - [`serve`]: what every gRPC server sets up alike (validators, TLS, the
//!   bounded HTTP/2 transport, the deploy progress stream).
//! - [`placement`]: which node of a fleet runs each service (pure, no I/O).
//! - [`daemon`]: what the daemons share around their libraries (logs,
//!   stop signals, token-file commands).
//! - [`fsutil`]: small file-system helpers (private files, durable writes).

pub mod alert;
pub mod auth;
pub mod client;
pub mod config;
pub mod daemon;
pub mod fsutil;
pub mod instance;
pub mod ops;
pub mod placement;
pub mod serve;
pub mod servicedef;
pub mod tls;
pub mod wire;

pub use mcp_proto::v1 as proto;
