//! `mcp-runtime`'s integration tests: one binary, a module per backend,
//! each against the real thing (podman's API service, QEMU under TCG).

mod podman;
mod ports;
mod qemu;
