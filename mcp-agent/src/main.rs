//! `mcp-agent`: the per-node daemon. Parses flags, layers the configuration,
//! sets up logging and runs [`mcp_agent::Agent`], or manages the local
//! token file (`mcp-agent token ...`); nothing else.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use mcp_agent::config::AgentConfig;
use mcp_agent::{Agent, dev};
use mcp_core::auth::Role;
use mcp_core::auth::local::TokenStore;
use mcp_core::config::cli_config_path;
use mcp_core::daemon::{self, LogFormat};

/// The MCP node agent: runs service components and answers the CLI over gRPC.
#[derive(Debug, Parser)]
#[command(name = "mcp-agent", version)]
struct Args {
    /// Agent configuration file (TOML); its keys override the defaults.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Listen address, overriding the configuration (such as 100.64.0.1:9444).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Development mode: listen on 127.0.0.1, keep data in the user's data
    /// directory, make a development CA, certificate and admin token, and
    /// write a ready CLI configuration if there is none.
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
    /// Manage the local token file (`[auth] token_file`).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Write the man pages of `mcp-agent` and its subcommands into DIR (`make
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
    Add {
        /// Who or what the token is for (shown in the audit log).
        name: String,
        /// What the token may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Validity, such as `30d` or `12h`; forever when omitted.
        #[arg(long, value_name = "DURATION", conflicts_with = "from_file")]
        expires: Option<humantime::Duration>,
        /// Store a token made elsewhere instead of a new one, read from
        /// this file: the master's token for agents (its `[agents]
        /// token_file`), with `--role admin`.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
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
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

fn load_config(args: &Args) -> anyhow::Result<AgentConfig> {
    let mut config = if args.dev {
        AgentConfig::dev_defaults(&AgentConfig::dev_data_dir()?)
    } else {
        AgentConfig::defaults()
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

fn token_command(config: &AgentConfig, command: TokenCommand) -> anyhow::Result<()> {
    let store = TokenStore::new(&config.auth.token_file);
    let command = match command {
        TokenCommand::Add {
            name,
            role,
            expires,
            from_file,
        } => {
            let role = match role {
                RoleArg::Admin => Role::Admin,
                RoleArg::Readonly => Role::ReadOnly,
            };
            match from_file {
                Some(file) => daemon::TokenCommand::Import { name, role, file },
                None => daemon::TokenCommand::Add {
                    name,
                    role,
                    expires: expires.map(|d| SystemTime::now() + *d),
                },
            }
        }
        TokenCommand::List => daemon::TokenCommand::List,
        TokenCommand::Remove { name } => daemon::TokenCommand::Remove { name },
    };
    daemon::token_command(&store, command)?;
    Ok(())
}

async fn serve(args: &Args, mut config: AgentConfig) -> anyhow::Result<()> {
    daemon::init_logging(config.log_format);
    if let Some(limit) = mcp_agent::server::raise_open_files_limit() {
        tracing::debug!(limit, "open files limit");
    }
    let setup = if args.dev {
        std::fs::create_dir_all(&config.srv_root)
            .with_context(|| format!("creating {}", config.srv_root.display()))?;
        let data_dir = AgentConfig::dev_data_dir()?;
        let setup = dev::prepare(&mut config, &data_dir, &cli_config_path(None)?)?;
        if setup.new_token {
            tracing::info!(path = %setup.token_file.display(), "made a development admin token for the CLI");
        }
        Some(setup)
    } else {
        None
    };
    let node_name = config.node_name.clone();
    let agent = Agent::open(config).await?;
    if let Some(setup) = setup {
        let addr = agent.local_addr().context("no local address")?;
        let path = setup.cli_config.display().to_string();
        match dev::write_cli_config(&setup, &node_name, addr)? {
            dev::CliConfigChange::Created => {
                tracing::info!(path, "wrote CLI configuration for this agent")
            }
            dev::CliConfigChange::Completed => {
                tracing::info!(
                    path,
                    "added the development token and CA to the CLI configuration"
                )
            }
            dev::CliConfigChange::Unchanged => {
                tracing::info!(path, "CLI configuration exists; left as it is")
            }
        }
    }
    agent.serve(daemon::shutdown_signal()).await?;
    Ok(())
}

/// Threads for blocking work: tokio's default, as file transfers each hold
/// one for as long as they run.
const BLOCKING_THREADS: usize = 512;

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
                .and_then(|rt| rt.block_on(serve(&args, config)))
        }),
    };
    if let Err(err) = result {
        eprintln!("mcp-agent: error: {err:#}");
        std::process::exit(1);
    }
}
