//! `mcp stop`, `mcp start`, `mcp restart`, `mcp remove`.

use mcp_core::ops;

use super::Ctx;
use crate::output::{self, answered};

/// Set `active = false` in the definition, then push it.
#[derive(Debug, clap::Args)]
pub struct Stop {
    /// Service name or definition file.
    target: String,
}

/// Set `active = true` in the definition, then push it.
#[derive(Debug, clap::Args)]
pub struct Start {
    /// Service name or definition file.
    target: String,
}

/// Restart a service's components without changing the definition.
#[derive(Debug, clap::Args)]
pub struct Restart {
    /// Service name or definition file.
    target: String,
    /// Restart only this component.
    #[arg(long)]
    component: Option<String>,
}

/// Stop and remove a service's components and forget the service.
#[derive(Debug, clap::Args)]
pub struct Remove {
    /// Service name or definition file.
    target: String,
}

/// `mcp stop` and `mcp start` ([`ops::set_active`]).
pub async fn set_active(ctx: &Ctx, target: &str, active: bool) -> anyhow::Result<()> {
    let (_, node) = ctx.session.service_and_node(target)?;
    let mut client = ctx.session.connect(&node).await?;
    let change =
        ops::set_active(&mut client, Some(&ctx.session.config), target, None, active).await?;
    ctx.out.results(
        answered(&node.name, &change.node),
        &change.service,
        &change.results,
    )?;
    output::check_results(&change.service, &change.results)
}

pub async fn stop(ctx: &Ctx, args: Stop) -> anyhow::Result<()> {
    set_active(ctx, &args.target, false).await
}

pub async fn start(ctx: &Ctx, args: Start) -> anyhow::Result<()> {
    set_active(ctx, &args.target, true).await
}

pub async fn restart(ctx: &Ctx, args: Restart) -> anyhow::Result<()> {
    let (service, node) = ctx.session.service_and_node(&args.target)?;
    let mut client = ctx.session.connect(&node).await?;
    let res = client.restart(&service, args.component.as_deref()).await?;
    ctx.out
        .results(answered(&node.name, &res.node), &res.service, &res.results)?;
    output::check_results(&res.service, &res.results)
}

pub async fn remove(ctx: &Ctx, args: Remove) -> anyhow::Result<()> {
    let (service, node) = ctx.session.service_and_node(&args.target)?;
    let mut client = ctx.session.connect(&node).await?;
    let res = client.remove(&service).await?;
    ctx.out
        .results(answered(&node.name, &res.node), &res.service, &res.results)?;
    output::check_results(&res.service, &res.results)
}
