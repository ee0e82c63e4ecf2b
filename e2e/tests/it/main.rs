//! End-to-end tests: real `mcp` and `mcp-agent` processes (and the agent's
//! library) over real gRPC, real podman and QEMU, images pulled from the
//! local registry. One binary, a module per subject.

mod cli;
mod deploys;
mod dispatch;
mod files;
mod fleet;
mod flood;
mod health;
mod history;
mod isolation;
mod man_pages;
mod monitor;
mod notify;
mod output;
mod security;
mod unikernel;
