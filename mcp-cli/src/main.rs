//! `mcp`: the operator's command-line client. Parses the arguments and
//! hands each command to its file in [`commands`], which resolves what the
//! arguments mean through `mcp_core::ops`, calls the node and prints through
//! [`output`]. Nothing else.

mod commands;
mod output;

use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use mcp_core::ops::Session;

use commands::{Ctx, adopt, deploy, events, files, history, lifecycle, logs, node, query, sync};
use output::Output;

/// Make the fleet match your service definitions.
#[derive(Debug, Parser)]
#[command(name = "mcp", version, propagate_version = true)]
struct Cli {
    /// CLI configuration file [default: $MCP_CONFIG or $XDG_CONFIG_HOME/mcp/mcp.toml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Node to talk to (default: the definition's `node`, else the first configured node).
    #[arg(long, global = true, value_name = "NAME")]
    node: Option<String>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Read the bearer token from this file (over MCP_TOKEN and the config).
    #[arg(long, global = true, value_name = "PATH")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Push a definition; the agent pulls images and (re)creates what changed.
    Deploy(deploy::Deploy),
    /// Set `active = false` in the definition, then push it.
    Stop(lifecycle::Stop),
    /// Set `active = true` in the definition, then push it.
    Start(lifecycle::Start),
    /// Restart a service's components without changing the definition.
    Restart(lifecycle::Restart),
    /// Stop and remove a service's components and forget the service.
    Remove(lifecycle::Remove),
    /// Push every definition in services_dir; each node converges to its set.
    Sync(sync::Sync),
    /// Take existing SERVICE-* containers into the registry without touching them.
    Adopt(adopt::Adopt),
    /// The revisions of a service's components, newest first.
    History(history::History),
    /// Deploy the previous revision that ran again: of one component, or of
    /// the components the service's last change touched.
    Rollback(history::Rollback),
    /// Desired versus observed state per component, drift flagged.
    Status(query::Status),
    /// Every container and VM on the node(s), managed or not.
    Ps,
    /// Services the node registries know.
    List,
    /// Component logs.
    Logs(logs::Logs),
    /// The event history of the node(s): deploys, stops, removals, failures.
    Events(events::Events),
    /// Copy a local file (a directory with -r) into the service's directory on its node.
    Push(files::Push),
    /// Copy a file (a directory with -r) from the service's directory on its node.
    Pull(files::Pull),
    /// List the service's directory on its node (or PATH in it).
    Ls(files::Ls),
    /// Remove a file, symlink or (with -r) directory from the service's directory.
    Rm(files::Rm),
    /// Nodes.
    Node {
        #[command(subcommand)]
        command: node::Node,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(*shell, &mut Cli::command(), "mcp", &mut std::io::stdout());
        return Ok(());
    }
    let session = Session::load(cli.config.as_deref(), cli.node, cli.token_file).context(
        "loading the CLI configuration (start `mcp-agent --dev` to create one, or pass --config)",
    )?;
    let ctx = Ctx {
        session,
        out: Output::new(cli.json),
    };
    match cli.command {
        Command::Deploy(args) => deploy::run(&ctx, args).await,
        Command::Stop(args) => lifecycle::stop(&ctx, args).await,
        Command::Start(args) => lifecycle::start(&ctx, args).await,
        Command::Restart(args) => lifecycle::restart(&ctx, args).await,
        Command::Remove(args) => lifecycle::remove(&ctx, args).await,
        Command::Sync(args) => sync::run(&ctx, args).await,
        Command::Adopt(args) => adopt::run(&ctx, args).await,
        Command::History(args) => history::history(&ctx, args).await,
        Command::Rollback(args) => history::rollback(&ctx, args).await,
        Command::Status(args) => query::status(&ctx, args).await,
        Command::Ps => query::ps(&ctx).await,
        Command::List => query::list(&ctx).await,
        Command::Logs(args) => logs::run(&ctx, args).await,
        Command::Events(args) => events::run(&ctx, args).await,
        Command::Push(args) => files::push(&ctx, args).await,
        Command::Pull(args) => files::pull(&ctx, args).await,
        Command::Ls(args) => files::ls(&ctx, args).await,
        Command::Rm(args) => files::rm(&ctx, args).await,
        Command::Node { command } => node::run(&ctx, command).await,
        Command::Completions { .. } => Ok(()),
    }
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcp: error: {e}");
            std::process::exit(1);
        }
    };
    if let Err(err) = rt.block_on(run(cli)) {
        if output::is_broken_pipe(&err) {
            std::process::exit(0);
        }
        eprintln!("mcp: error: {}", output::one_line(&err));
        std::process::exit(1);
    }
}
