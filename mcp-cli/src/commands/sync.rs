//! `mcp sync`.

use super::{Ctx, Pull};
use crate::output::{self, Exit};

/// Push every definition in services_dir; each node converges to its set.
#[derive(Debug, clap::Args)]
pub struct Sync {
    /// Only print the plan: what would be created, updated, removed.
    #[arg(long)]
    dry_run: bool,
    /// Also remove services a node runs that the set lacks.
    #[arg(long)]
    prune: bool,
    /// When to pull images.
    #[arg(long, value_enum, default_value = "missing")]
    pull: Pull,
}

/// Exits [`Exit::Found`] for a dry run with changes to make.
pub async fn run(ctx: &Ctx, args: Sync) -> anyhow::Result<Exit> {
    let mut answers = Vec::new();
    for (node, set) in &ctx.session.sync_sets()? {
        let mut client = ctx.session.connect(node).await?;
        let res = client
            .sync(set, args.dry_run, args.prune, args.pull.into())
            .await?;
        answers.extend(mcp_core::client::fleet::sync_by_node(&node.name, res));
    }
    let exit = ctx.out.sync(&answers)?;
    for (_, res) in &answers {
        for r in &res.results {
            output::check_results(&r.service, &r.results)?;
        }
    }
    Ok(exit)
}
