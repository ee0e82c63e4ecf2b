//! `mcp-master`: the fleet's master daemon. Parses flags, layers the
//! configuration, sets up logging and runs [`mcp_master::Master`], or
//! manages the master's token file (`mcp-master token ...`); nothing else.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use mcp_core::auth::Role;
use mcp_core::auth::local::TokenStore;
use mcp_core::daemon::{self, LogFormat};
use mcp_master::Master;
use mcp_master::config::MasterConfig;

/// The MCP fleet master: knows the nodes, watches their heartbeats and
/// places services.
#[derive(Debug, Parser)]
#[command(name = "mcp-master", version)]
struct Args {
    /// Master configuration file (TOML); its keys override the defaults.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Listen address, overriding the configuration (such as 100.64.0.1:9445).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Development mode: listen on 127.0.0.1:9445 and keep data in the
    /// user's data directory.
    #[arg(long, global = true)]
    dev: bool,
    /// Log format (overrides the configuration).
    #[arg(long, value_enum)]
    log_format: Option<Format>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the master's token file (`[auth] token_file`).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Write the man pages of `mcp-master` and its subcommands into DIR (`make
    /// man`, the packages).
    #[command(hide = true)]
    GenerateMan {
        /// The directory.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token, print it once, and store only its hash.
    ///
    /// Example: `mcp-master token add node-a --role node` makes the join
    /// token for the agent of node-a (its `[master] token_file`).
    Add {
        /// Who or what the token is for (shown in the audit log).
        name: String,
        /// What the token may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Validity, such as `30d` or `12h`; forever when omitted.
        #[arg(long, value_name = "DURATION")]
        expires: Option<humantime::Duration>,
    },
    /// List the stored tokens (names, roles, dates; never tokens).
    List,
    /// Remove a token; it stops working within a second.
    Remove {
        /// The token's name.
        name: String,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    /// May change state.
    Admin,
    /// May only query.
    Readonly,
    /// An agent joining the fleet: may only register and heartbeat.
    Node,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

fn load_config(args: &Args) -> anyhow::Result<MasterConfig> {
    let mut config = if args.dev {
        MasterConfig::dev_defaults(&MasterConfig::dev_data_dir()?)
    } else {
        MasterConfig::defaults()
    };
    if let Some(path) = &args.config {
        config.apply_file(path)?;
    }
    if let Some(listen) = &args.listen {
        config.apply_listen_flag(listen)?;
    }
    match args.log_format {
        Some(Format::Json) => config.log_format = LogFormat::Json,
        Some(Format::Text) => config.log_format = LogFormat::Text,
        None => {}
    }
    Ok(config)
}

fn token_command(config: &MasterConfig, command: TokenCommand) -> anyhow::Result<()> {
    let store = TokenStore::new(&config.auth.token_file);
    let command = match command {
        TokenCommand::Add {
            name,
            role,
            expires,
        } => daemon::TokenCommand::Add {
            name,
            role: match role {
                RoleArg::Admin => Role::Admin,
                RoleArg::Readonly => Role::ReadOnly,
                RoleArg::Node => Role::Node,
            },
            expires: expires.map(|d| SystemTime::now() + *d),
        },
        TokenCommand::List => daemon::TokenCommand::List,
        TokenCommand::Remove { name } => daemon::TokenCommand::Remove { name },
    };
    daemon::token_command(&store, command)?;
    Ok(())
}

async fn serve(config: MasterConfig) -> anyhow::Result<()> {
    daemon::init_logging(config.log_format);
    if let Some(limit) = mcp_core::serve::raise_open_files_limit() {
        tracing::debug!(limit, "open files limit");
    }
    let master = Master::open(config).await?;
    master.serve(daemon::shutdown_signal()).await?;
    Ok(())
}

/// Threads for blocking work. The master's is short SQLite work on one
/// connection, so more threads would only wait for it: under a thousand
/// heartbeating agents an unbounded pool grew to ninety threads (and as many
/// allocator arenas), all waiting in turn.
const BLOCKING_THREADS: usize = 4;

fn main() {
    let mut args = Args::parse();
    let result = match args.command.take() {
        Some(Command::GenerateMan { dir }) => clap_mangen::generate_to(Args::command(), &dir)
            .with_context(|| format!("writing man pages into {}", dir.display())),
        Some(Command::Token { command }) => {
            load_config(&args).and_then(|config| token_command(&config, command))
        }
        None => load_config(&args).and_then(|config| {
            daemon::runtime(BLOCKING_THREADS)
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(serve(config)))
        }),
    };
    if let Err(err) = result {
        eprintln!("mcp-master: error: {err:#}");
        std::process::exit(1);
    }
}
