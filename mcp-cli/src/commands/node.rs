//! `mcp node list`, `mcp node info`, `mcp node drain` and `mcp node undrain`.

use super::Ctx;

/// Nodes.
#[derive(Debug, clap::Subcommand)]
pub enum Node {
    /// With a master: every node of the fleet, its state, capacity and
    /// allocation; without: the configured nodes.
    List,
    /// Each node's agent version and runtime availability.
    Info,
    /// Place nothing new on a node and plan its movable services elsewhere
    /// (through the master).
    ///
    /// Example: `mcp node drain rift`
    Drain {
        /// The node.
        name: String,
    },
    /// Make a drained node eligible again (through the master).
    ///
    /// Example: `mcp node undrain rift`
    Undrain {
        /// The node.
        name: String,
    },
}

pub async fn run(ctx: &Ctx, command: Node) -> anyhow::Result<()> {
    match command {
        Node::List if ctx.session.config.master.is_some() => {
            let mut master = ctx.session.connect_master().await?;
            ctx.out.fleet_nodes(&master.nodes().await?)
        }
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
        Node::Drain { name } => {
            let mut master = ctx.session.connect_master().await?;
            ctx.out.fleet_nodes(&[master.drain(&name).await?])
        }
        Node::Undrain { name } => {
            let mut master = ctx.session.connect_master().await?;
            ctx.out.fleet_nodes(&[master.undrain(&name).await?])
        }
    }
}
