//! `mcp push`, `mcp pull`, `mcp ls`, `mcp rm`: files under
//! `<srv_root>/<service>/` on the service's node.

use std::path::PathBuf;

use mcp_core::client::transfer;

use super::Ctx;

/// Copy a local file (a directory with -r) into the service's directory on its node.
#[derive(Debug, clap::Args)]
pub struct Push {
    /// Service name: the files go under <srv_root>/SERVICE/ on its node.
    service: String,
    /// The local file or directory.
    local: PathBuf,
    /// Path in the service's directory [default: LOCAL's name; into it when it ends with /].
    remote: Option<String>,
    /// Copy a directory and everything in it.
    #[arg(short, long)]
    recursive: bool,
    /// Permission bits of the copies, in octal (e.g. 640) [default: each file's own].
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    mode: Option<u32>,
}

/// Copy a file (a directory with -r) from the service's directory on its node.
#[derive(Debug, clap::Args)]
pub struct Pull {
    /// Service name.
    service: String,
    /// Path in the service's directory ("." for all of it, with -r).
    remote: String,
    /// Where to write [default: REMOTE's name here; into it when it is a directory].
    local: Option<PathBuf>,
    /// Copy a directory and everything in it.
    #[arg(short, long)]
    recursive: bool,
}

/// List the service's directory on its node (or PATH in it).
#[derive(Debug, clap::Args)]
pub struct Ls {
    /// Service name.
    service: String,
    /// A directory or file in the service's directory [default: the top].
    path: Option<String>,
    /// Everything beneath it.
    #[arg(short, long)]
    recursive: bool,
}

/// Remove a file, symlink or (with -r) directory from the service's directory.
#[derive(Debug, clap::Args)]
pub struct Rm {
    /// Service name.
    service: String,
    /// Path in the service's directory.
    path: String,
    /// Remove a directory and everything in it.
    #[arg(short, long)]
    recursive: bool,
}

pub async fn push(ctx: &Ctx, args: Push) -> anyhow::Result<()> {
    let node = ctx.session.node_for_service(&args.service)?;
    let mut client = ctx.session.connect(&node).await?;
    let bar = ctx.out.progress();
    let moved = transfer::push_tree(
        &mut client,
        &args.service,
        &args.local,
        args.remote.as_deref(),
        args.recursive,
        args.mode,
        &|p| bar.show(p),
    )
    .await?;
    bar.finish();
    ctx.out.moved("pushed", &moved)
}

pub async fn pull(ctx: &Ctx, args: Pull) -> anyhow::Result<()> {
    let node = ctx.session.node_for_service(&args.service)?;
    let mut client = ctx.session.connect(&node).await?;
    let bar = ctx.out.progress();
    let moved = transfer::pull_tree(
        &mut client,
        &args.service,
        &args.remote,
        args.local.as_deref(),
        args.recursive,
        &|p| bar.show(p),
    )
    .await?;
    bar.finish();
    ctx.out.moved("pulled", &moved)
}

pub async fn ls(ctx: &Ctx, args: Ls) -> anyhow::Result<()> {
    let node = ctx.session.node_for_service(&args.service)?;
    let entries = ctx
        .session
        .connect(&node)
        .await?
        .list_files(
            &args.service,
            args.path.as_deref().unwrap_or("."),
            args.recursive,
        )
        .await?;
    ctx.out.files(&node.name, &args.service, &entries)
}

pub async fn rm(ctx: &Ctx, args: Rm) -> anyhow::Result<()> {
    let node = ctx.session.node_for_service(&args.service)?;
    let res = ctx
        .session
        .connect(&node)
        .await?
        .remove_file(&args.service, &args.path, args.recursive)
        .await?;
    ctx.out.removed_file(&node.name, &args.service, &res.path)
}

/// Parses `--mode`: octal permission bits such as `640` or `0o640`.
fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim_start_matches("0o");
    let mode = u32::from_str_radix(digits, 8).map_err(|_| {
        format!("{text:?} is not a file mode: expected octal permission bits such as 640 or 0755")
    })?;
    mcp_core::wire::check_mode(mode).map_err(|e| format!("{text:?} is not a file mode: {e}"))
}
