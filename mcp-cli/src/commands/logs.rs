//! `mcp logs`.

use futures::StreamExt;
use mcp_core::client::LogLines;

use super::Ctx;

/// Component logs.
#[derive(Debug, clap::Args)]
pub struct Logs {
    /// Service name.
    service: String,
    /// Only this component.
    component: Option<String>,
    /// Keep following new output.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    tail: Option<u32>,
}

pub async fn run(ctx: &Ctx, args: Logs) -> anyhow::Result<()> {
    let node = ctx.session.node_for_service(&args.service)?;
    let mut stream = ctx
        .session
        .connect(&node)
        .await?
        .logs(
            &args.service,
            args.component.as_deref(),
            args.follow,
            args.tail,
        )
        .await?;
    let prefixed = args.component.is_none();
    let mut lines = LogLines::default();
    while let Some(chunk) = stream.next().await {
        let done = lines.push(chunk?);
        ctx.out
            .log_lines(&node.name, &args.service, &done, prefixed)?;
    }
    ctx.out
        .log_lines(&node.name, &args.service, &lines.finish(), prefixed)
}
