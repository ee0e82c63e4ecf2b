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
use output::{Exit, Output};

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
    /// Write the man pages of `mcp` and its subcommands into DIR (`make
    /// man`, the packages).
    #[command(hide = true)]
    GenerateMan {
        /// The directory.
        dir: PathBuf,
    },
}

async fn run(cli: Cli, out: Output) -> anyhow::Result<Exit> {
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(*shell, &mut Cli::command(), "mcp", &mut std::io::stdout());
        return Ok(Exit::Ok);
    }
    if let Command::GenerateMan { dir } = &cli.command {
        clap_mangen::generate_to(Cli::command(), dir)
            .with_context(|| format!("writing man pages into {}", dir.display()))?;
        return Ok(Exit::Ok);
    }
    let session = Session::load(cli.config.as_deref(), cli.node, cli.token_file).context(
        "loading the CLI configuration (start `mcp-agent --dev` to create one, or pass --config)",
    )?;
    let ctx = Ctx { session, out };
    let done = |r: anyhow::Result<()>| r.map(|()| Exit::Ok);
    match cli.command {
        Command::Deploy(args) => deploy::run(&ctx, args).await,
        Command::Stop(args) => done(lifecycle::stop(&ctx, args).await),
        Command::Start(args) => done(lifecycle::start(&ctx, args).await),
        Command::Restart(args) => done(lifecycle::restart(&ctx, args).await),
        Command::Remove(args) => done(lifecycle::remove(&ctx, args).await),
        Command::Sync(args) => sync::run(&ctx, args).await,
        Command::Adopt(args) => done(adopt::run(&ctx, args).await),
        Command::History(args) => done(history::history(&ctx, args).await),
        Command::Rollback(args) => done(history::rollback(&ctx, args).await),
        Command::Status(args) => query::status(&ctx, args).await,
        Command::Ps => done(query::ps(&ctx).await),
        Command::List => done(query::list(&ctx).await),
        Command::Logs(args) => done(logs::run(&ctx, args).await),
        Command::Events(args) => done(events::run(&ctx, args).await),
        Command::Push(args) => done(files::push(&ctx, args).await),
        Command::Pull(args) => done(files::pull(&ctx, args).await),
        Command::Ls(args) => done(files::ls(&ctx, args).await),
        Command::Rm(args) => done(files::rm(&ctx, args).await),
        Command::Node { command } => done(node::run(&ctx, command).await),
        Command::Completions { .. } | Command::GenerateMan { .. } => Ok(Exit::Ok),
    }
}

/// A command line clap refused, said in one line (`mcp: usage: ...`, or a
/// JSON error under `--json`), exit 2; help and version are printed as
/// clap prints them.
fn usage_error(err: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) || err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    {
        let _ = err.print();
        std::process::exit(
            if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                Exit::Usage as i32
            } else {
                Exit::Ok as i32
            },
        );
    }
    let rendered = err.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    let message = format!("{first} (see mcp --help)");
    if std::env::args().any(|a| a == "--json") {
        eprintln!("{}", output::json::error(&message, None, None));
    } else {
        eprintln!("mcp: usage: {message}");
    }
    std::process::exit(Exit::Usage as i32);
}

fn main() {
    let cli = Cli::try_parse().unwrap_or_else(|e| usage_error(e));
    let out = Output::new(cli.json);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            out.error(&anyhow::Error::from(e));
            std::process::exit(Exit::Failure as i32);
        }
    };
    let json = out.json;
    match rt.block_on(run(cli, out)) {
        Ok(exit) => std::process::exit(exit as i32),
        Err(err) if output::is_broken_pipe(&err) => std::process::exit(Exit::Ok as i32),
        Err(err) => {
            Output::new(json).error(&err);
            std::process::exit(Exit::Failure as i32);
        }
    }
}
