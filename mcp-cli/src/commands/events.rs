//! `mcp events`.

use super::Ctx;

/// The event history of the node(s): deploys, stops, removals, failures.
#[derive(Debug, clap::Args)]
pub struct Events {
    /// Only this service's events.
    #[arg(long)]
    service: Option<String>,
    /// Only events since this time (RFC 3339) or span ago (30m, 2h, 7d).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only the last N events per node.
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
}

pub async fn run(ctx: &Ctx, args: Events) -> anyhow::Result<()> {
    let since = args
        .since
        .map(|s| mcp_core::client::parse_since(&s, chrono::Utc::now()))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let mut all = Vec::new();
    for node in ctx.session.query_nodes()? {
        let events = ctx
            .session
            .connect(&node)
            .await?
            .events(args.service.as_deref(), since, args.limit)
            .await?;
        all.extend(mcp_core::client::fleet::events_by_node(&node.name, events));
    }
    ctx.out.events(&all)
}
