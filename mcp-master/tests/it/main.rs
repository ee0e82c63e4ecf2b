//! `mcp-master`'s integration tests: the master in this process over real
//! TLS sockets and a real SQLite file, called as agents and operators call
//! it. One binary, a module per subject.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod alerts;
mod harness;
mod membership;
mod security;
