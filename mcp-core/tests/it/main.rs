//! `mcp-core`'s integration tests: one binary, a module per subject.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod mcias;
mod mcias_double;
mod servicedef_api;
