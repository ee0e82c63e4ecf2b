//! `mcp node list` and `mcp node info`.

use super::Ctx;

/// Nodes.
#[derive(Debug, clap::Subcommand)]
pub enum Node {
    /// The configured nodes.
    List,
    /// Each node's agent version and runtime availability.
    Info,
}

pub async fn run(ctx: &Ctx, command: Node) -> anyhow::Result<()> {
    match command {
        Node::List => ctx.out.nodes(&ctx.session.config.nodes),
        Node::Info => {
            let mut infos = Vec::new();
            for node in ctx.session.query_nodes()? {
                let info = match ctx.session.connect(node).await {
                    Ok(mut c) => c.node_info().await.map_err(anyhow::Error::from),
                    Err(e) => Err(e.into()),
                };
                infos.push((node.clone(), info));
            }
            ctx.out.node_info(&infos)
        }
    }
}
