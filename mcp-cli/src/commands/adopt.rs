//! `mcp adopt`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use mcp_core::servicedef::{self, ServiceDef};

use super::Ctx;

/// Take existing SERVICE-* containers into the registry without touching them.
#[derive(Debug, clap::Args)]
pub struct Adopt {
    /// The service name (containers are named SERVICE-COMPONENT).
    service: String,
    /// Also write the resulting definition to FILE (which must not exist).
    #[arg(long, value_name = "FILE")]
    write: Option<PathBuf>,
}

pub async fn run(ctx: &Ctx, args: Adopt) -> anyhow::Result<()> {
    // Refused before asking the agent, so nothing is adopted for a
    // definition that cannot be written.
    if let Some(path) = &args.write
        && path.exists()
    {
        bail!("{} exists; choose another --write path", path.display());
    }
    let node = ctx.session.node_for(None)?;
    let res = ctx
        .session
        .connect(&node)
        .await?
        .adopt(&args.service)
        .await?;
    let def = res
        .definition
        .as_ref()
        .map(ServiceDef::from_proto)
        .transpose()?
        .context("the agent sent no definition")?;
    if let Some(path) = &args.write {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(servicedef::to_toml(&def).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    ctx.out.adopt(
        &node.name,
        &servicedef::to_toml(&def),
        &res,
        args.write.as_deref(),
    )
}
