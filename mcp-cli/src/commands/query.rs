//! `mcp status`, `mcp ps`, `mcp list`: asked of every node (or `--node`),
//! directly or through the master.

use mcp_core::client::fleet::{list_by_node, ps_by_node, status_by_node};

use super::Ctx;
use crate::output::Exit;

/// Desired versus observed state per component, drift flagged.
#[derive(Debug, clap::Args)]
pub struct Status {
    /// Only this service.
    service: Option<String>,
}

/// Exits [`Exit::Found`] when something drifted.
pub async fn status(ctx: &Ctx, args: Status) -> anyhow::Result<Exit> {
    let mut reports = Vec::new();
    for node in ctx.session.query_nodes()? {
        let mut client = ctx.session.connect(&node).await?;
        reports.extend(status_by_node(
            client.status(args.service.as_deref()).await?,
        ));
    }
    ctx.out.status(&reports)
}

pub async fn ps(ctx: &Ctx) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for node in ctx.session.query_nodes()? {
        reports.extend(ps_by_node(ctx.session.connect(&node).await?.ps().await?));
    }
    ctx.out.ps(&reports)
}

pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let mut lists = Vec::new();
    for node in ctx.session.query_nodes()? {
        let list = ctx.session.connect(&node).await?.list().await?;
        lists.extend(list_by_node(&node.name, list));
    }
    ctx.out.list(&lists)
}
