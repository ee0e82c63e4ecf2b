//! `mcp-agent`: the per-node daemon. Parses flags, layers the configuration,
//! sets up logging and runs [`mcp_core::agent::Agent`]; nothing else.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use mcp_core::agent::{Agent, write_dev_cli_config};
use mcp_core::config::{AgentConfig, LogFormat, cli_config_path};

/// The MCP node agent: runs service components and answers the CLI over gRPC.
#[derive(Debug, Parser)]
#[command(name = "mcp-agent", version)]
struct Args {
    /// Agent configuration file (TOML); its keys override the defaults.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Listen address, overriding the configuration (such as 100.64.0.1:9444).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Development mode: listen on 127.0.0.1, keep data in the user's data
    /// directory, and write a ready CLI configuration if there is none.
    #[arg(long)]
    dev: bool,
    /// Log format (overrides the configuration).
    #[arg(long, value_enum)]
    log_format: Option<Format>,
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, run until killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    init_logging(config.log_format);
    if args.dev {
        std::fs::create_dir_all(&config.srv_root)
            .with_context(|| format!("creating {}", config.srv_root.display()))?;
    }
    let node_name = config.node_name.clone();
    let agent = Agent::open(config).await?;
    if args.dev {
        let addr = agent.local_addr().context("no local address")?;
        let path = cli_config_path(None)?;
        if write_dev_cli_config(&path, &node_name, addr)? {
            tracing::info!(path = %path.display(), "wrote CLI configuration for this agent");
        } else {
            tracing::info!(path = %path.display(), "CLI configuration exists; left as it is");
        }
    }
    agent.serve(shutdown_signal()).await?;
    Ok(())
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = runtime
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args)));
    if let Err(err) = result {
        eprintln!("mcp-agent: error: {err:#}");
        std::process::exit(1);
    }
}
