//! `mcp logs`.

use std::io::Write;

use futures::StreamExt;

use super::Ctx;
use crate::output;

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
        .connect(node)
        .await?
        .logs(
            &args.service,
            args.component.as_deref(),
            args.follow,
            args.tail,
        )
        .await?;
    let multi = args.component.is_none();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if ctx.out.json {
            ctx.out.log_json(&chunk)?;
            continue;
        }
        let mut w: Box<dyn Write> = if chunk.stream == "stderr" {
            Box::new(std::io::stderr().lock())
        } else {
            Box::new(std::io::stdout().lock())
        };
        if multi {
            output::write_prefixed(&mut w, &chunk.component, &chunk.data)?;
        } else {
            w.write_all(&chunk.data)?;
        }
        w.flush()?;
    }
    Ok(())
}
