//! `mcp history` and `mcp rollback`.

use super::Ctx;
use crate::output;

/// The revisions of a service's components, newest first.
#[derive(Debug, clap::Args)]
pub struct History {
    /// Service name or definition file.
    target: String,
    /// Only this component's revisions.
    #[arg(long)]
    component: Option<String>,
    /// Only the newest N revisions.
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
}

/// Deploy the previous revision that ran again: of one component, or of
/// the components the service's last change touched.
#[derive(Debug, clap::Args)]
pub struct Rollback {
    /// Service name or definition file.
    target: String,
    /// Roll back only this component.
    #[arg(long)]
    component: Option<String>,
}

pub async fn history(ctx: &Ctx, args: History) -> anyhow::Result<()> {
    let (service, node) = ctx.session.service_and_node(&args.target)?;
    let mut client = ctx.session.connect(&node).await?;
    let res = client
        .history(&service, args.component.as_deref(), args.limit)
        .await?;
    ctx.out.history(&node.name, &res)
}

pub async fn rollback(ctx: &Ctx, args: Rollback) -> anyhow::Result<()> {
    let (service, node) = ctx.session.service_and_node(&args.target)?;
    let mut client = ctx.session.connect(&node).await?;
    let res = client.rollback(&service, args.component.as_deref()).await?;
    ctx.out.results(
        crate::output::answered(&node.name, &res.node),
        &res.service,
        &res.results,
    )?;
    output::check_results(&res.service, &res.results)
}
