//! `mcp-agent`'s integration tests: one binary, a module per subject,
//! against real podman, SQLite files and TLS where they need them.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod agent_security;
mod alerts;
mod files_confinement;
#[path = "../../../mcp-core/tests/it/mcias_double.rs"]
mod mcias_double;
mod registry_migrations;
mod tls;
