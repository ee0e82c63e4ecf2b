//! `mcp deploy`.

use std::time::Duration;

use mcp_core::wire::DeployOptions;

use super::{Ctx, Pull};
use crate::output::{self, Exit};

/// Push a definition; the agent pulls images and (re)creates what changed.
#[derive(Debug, clap::Args)]
pub struct Deploy {
    /// Service name (looked up in services_dir) or definition file.
    target: String,
    /// Deploy only this component.
    #[arg(long)]
    component: Option<String>,
    /// When to pull images.
    #[arg(long, value_enum, default_value = "missing")]
    pull: Pull,
    /// How long to wait for changed components to be ready (e.g. 90s, 5m; at most 24h) [default: the agent's [deploy] timeout].
    #[arg(long, value_name = "DURATION", value_parser = parse_deploy_timeout)]
    timeout: Option<Duration>,
    /// Do not wait for changed components to be ready: done once they are started, never rolled back.
    #[arg(long, conflicts_with = "timeout")]
    no_wait: bool,
    /// Only print what would change (and, through a master, where the
    /// service would go); exits 3 when something would.
    #[arg(long, conflicts_with_all = ["component", "timeout", "no_wait"])]
    dry_run: bool,
}

pub async fn run(ctx: &Ctx, args: Deploy) -> anyhow::Result<Exit> {
    let def = ctx.session.definition(&args.target)?;
    let node = ctx.session.node_for(Some(&def))?;
    let mut client = ctx.session.connect(&node).await?;
    if args.dry_run {
        let plan = client
            .sync(std::slice::from_ref(&def), true, false, args.pull.into())
            .await
            .map_err(|e| match ctx.session.locate_refusal(&args.target, e) {
                Ok(located) => anyhow::Error::from(located),
                Err(e) => e.into(),
            })?;
        let answers = mcp_core::client::fleet::sync_by_node(&node.name, plan);
        return ctx.out.sync(&answers);
    }
    let options = DeployOptions {
        timeout: args.timeout,
        no_wait: args.no_wait,
    };
    let out = &ctx.out;
    let res = client
        .deploy_watch(
            &def,
            args.component.as_deref(),
            args.pull.into(),
            options,
            &mut |p| out.deploy_progress(&def.name, &p),
        )
        .await
        .map_err(|e| match ctx.session.locate_refusal(&args.target, e) {
            Ok(located) => anyhow::Error::from(located),
            Err(e) => e.into(),
        })?;
    out.results(
        output::answered(&node.name, &res.node),
        &res.service,
        &res.results,
    )?;
    output::check_results(&res.service, &res.results)?;
    Ok(Exit::Ok)
}

/// Parses `--timeout` of a deploy: a duration such as `90s` or `5m`, longer
/// than zero and at most the agent's longest.
fn parse_deploy_timeout(text: &str) -> Result<Duration, String> {
    let d = match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => return Err("must be longer than zero".to_string()),
        Err(e) => return Err(format!("{text:?} is not a duration such as 90s or 5m: {e}")),
    };
    let longest = mcp_core::config::DEPLOY_TIMEOUT_BOUNDS.max;
    if d.as_secs() > longest {
        return Err(format!(
            "{text:?} is longer than the longest deploy timeout, {longest} seconds (24h)"
        ));
    }
    Ok(d)
}
