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
        Node::Info if ctx.session.config.master.is_some() => {
            // Each node of the fleet, asked through the master.
            let mut master = ctx.session.connect_master().await?;
            let mut infos = Vec::new();
            for n in master.nodes().await? {
                if ctx
                    .session
                    .node
                    .as_ref()
                    .is_some_and(|only| *only != n.name)
                {
                    continue;
                }
                let info = master
                    .clone()
                    .scoped(Some(&n.name))
                    .node_info()
                    .await
                    .map_err(anyhow::Error::from);
                let entry = mcp_core::config::NodeEntry {
                    name: n.name,
                    address: n.address,
                };
                infos.push((entry, info));
            }
            ctx.out.node_info(&infos)
        }
        Node::Info => {
            let mut infos = Vec::new();
            for node in ctx.session.query_nodes()? {
                let info = match ctx.session.connect(&node).await {
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
