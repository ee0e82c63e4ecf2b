//! `mcp`: the operator's command-line client. Parses arguments, loads the
//! CLI configuration and definitions through `mcp-core`, calls the agent
//! through `mcp_core::client`, and prints tables or JSON. Nothing else.

mod output;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand};
use futures::StreamExt;
use mcp_core::client::transfer;
use mcp_core::client::{Client, ConnectOptions};
use mcp_core::config::{CliConfig, NodeEntry, cli_config_path};
use mcp_core::servicedef::{self, ServiceDef};
use mcp_core::wire::{DeployOptions, PullPolicy};

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

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Pull {
    /// Pull only images the node does not have.
    Missing,
    /// Always pull, picking up moved tags.
    Always,
}

impl From<Pull> for PullPolicy {
    fn from(pull: Pull) -> PullPolicy {
        match pull {
            Pull::Missing => PullPolicy::Missing,
            Pull::Always => PullPolicy::Always,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Push a definition; the agent pulls images and (re)creates what changed.
    Deploy {
        /// Service name (looked up in services_dir) or definition file.
        target: String,
        /// Deploy only this component.
        #[arg(long)]
        component: Option<String>,
        /// When to pull images.
        #[arg(long, value_enum, default_value = "missing")]
        pull: Pull,
        /// How long to wait for changed components to be ready (e.g. 90s, 5m; at most 24h) [default: the agent's [deploy] timeout].
        #[arg(long, value_name = "DURATION", value_parser = parse_deploy_timeout)]
        timeout: Option<std::time::Duration>,
        /// Do not wait for changed components to be ready: done once they are started, never rolled back.
        #[arg(long, conflicts_with = "timeout")]
        no_wait: bool,
    },
    /// Set `active = false` in the definition, then push it.
    Stop {
        /// Service name or definition file.
        target: String,
    },
    /// Set `active = true` in the definition, then push it.
    Start {
        /// Service name or definition file.
        target: String,
    },
    /// Restart a service's components without changing the definition.
    Restart {
        /// Service name or definition file.
        target: String,
        /// Restart only this component.
        #[arg(long)]
        component: Option<String>,
    },
    /// Stop and remove a service's components and forget the service.
    Remove {
        /// Service name or definition file.
        target: String,
    },
    /// Push every definition in services_dir; each node converges to its set.
    Sync {
        /// Only print the plan: what would be created, updated, removed.
        #[arg(long)]
        dry_run: bool,
        /// Also remove services a node runs that the set lacks.
        #[arg(long)]
        prune: bool,
        /// When to pull images.
        #[arg(long, value_enum, default_value = "missing")]
        pull: Pull,
    },
    /// Take existing SERVICE-* containers into the registry without touching them.
    Adopt {
        /// The service name (containers are named SERVICE-COMPONENT).
        service: String,
        /// Also write the resulting definition to FILE (which must not exist).
        #[arg(long, value_name = "FILE")]
        write: Option<PathBuf>,
    },
    /// The revisions of a service's components, newest first.
    History {
        /// Service name or definition file.
        target: String,
        /// Only this component's revisions.
        #[arg(long)]
        component: Option<String>,
        /// Only the newest N revisions.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Deploy the previous revision that ran again: of one component, or of
    /// the components the service's last change touched.
    Rollback {
        /// Service name or definition file.
        target: String,
        /// Roll back only this component.
        #[arg(long)]
        component: Option<String>,
    },
    /// Desired versus observed state per component, drift flagged.
    Status {
        /// Only this service.
        service: Option<String>,
    },
    /// Every container and VM on the node(s), managed or not.
    Ps,
    /// Services the node registries know.
    List,
    /// Component logs.
    Logs {
        /// Service name.
        service: String,
        /// Only this component.
        component: Option<String>,
        /// Keep following new output.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<u32>,
    },
    /// The event history of the node(s): deploys, stops, removals, failures.
    Events {
        /// Only this service's events.
        #[arg(long)]
        service: Option<String>,
        /// Only events since this time (RFC 3339) or span ago (30m, 2h, 7d).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only the last N events per node.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Copy a local file (a directory with -r) into the service's directory on its node.
    Push {
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
    },
    /// Copy a file (a directory with -r) from the service's directory on its node.
    Pull {
        /// Service name.
        service: String,
        /// Path in the service's directory ("." for all of it, with -r).
        remote: String,
        /// Where to write [default: REMOTE's name here; into it when it is a directory].
        local: Option<PathBuf>,
        /// Copy a directory and everything in it.
        #[arg(short, long)]
        recursive: bool,
    },
    /// List the service's directory on its node (or PATH in it).
    Ls {
        /// Service name.
        service: String,
        /// A directory or file in the service's directory [default: the top].
        path: Option<String>,
        /// Everything beneath it.
        #[arg(short, long)]
        recursive: bool,
    },
    /// Remove a file, symlink or (with -r) directory from the service's directory.
    Rm {
        /// Service name.
        service: String,
        /// Path in the service's directory.
        path: String,
        /// Remove a directory and everything in it.
        #[arg(short, long)]
        recursive: bool,
    },
    /// Nodes.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// The configured nodes.
    List,
    /// Each node's agent version and runtime availability.
    Info,
}

struct Ctx {
    config: CliConfig,
    config_path: PathBuf,
    node: Option<String>,
    token_file: Option<PathBuf>,
    out: Output,
}

impl Ctx {
    fn node_for(&self, def: Option<&ServiceDef>) -> anyhow::Result<&NodeEntry> {
        let wanted = self.node.as_deref().or(def.and_then(|d| d.node.as_deref()));
        self.config
            .node(wanted)
            .map_err(|e| anyhow::anyhow!("{e} (in {})", self.config_path.display()))
    }

    /// The nodes a query goes to: `--node`, else all configured nodes.
    fn query_nodes(&self) -> anyhow::Result<Vec<&NodeEntry>> {
        match &self.node {
            Some(n) => Ok(vec![
                self.node_for(None).with_context(|| format!("node {n}"))?,
            ]),
            None if self.config.nodes.is_empty() => {
                bail!("no nodes configured in {}", self.config_path.display())
            }
            None => Ok(self.config.nodes.iter().collect()),
        }
    }

    async fn client(&self, node: &NodeEntry) -> anyhow::Result<Client> {
        let token = self.config.resolve_token(self.token_file.as_deref())?;
        let options = ConnectOptions {
            tls: self.config.client_tls(&self.config_path)?,
            token_source: token.as_ref().map(|(_, s)| s.clone()).unwrap_or_default(),
            token: token.map(|(t, _)| t),
        };
        Ok(Client::connect(&node.name, &node.address, &options).await?)
    }

    fn load_def(&self, target: &str) -> anyhow::Result<ServiceDef> {
        Ok(self.config.load_definition(target)?)
    }

    /// The node a service's files are on: `--node`, else the node its
    /// definition names (when there is one in services_dir), else the first.
    fn node_for_service(&self, service: &str) -> anyhow::Result<&NodeEntry> {
        let path = self.config.definition_path(service);
        let def = if self.node.is_none() && path.exists() {
            Some(self.config.load_definition(service)?)
        } else {
            None
        };
        self.node_for(def.as_ref())
    }

    /// The service an argument stands for and the node it is on: a file's
    /// `name` and node (as for deploy); a name as is, on the node of its
    /// definition in services_dir when there is one.
    fn service_and_node(&self, target: &str) -> anyhow::Result<(String, &NodeEntry)> {
        if target.contains('/') || target.ends_with(".toml") {
            let def = self.load_def(target)?;
            let node = self.node_for(Some(&def))?;
            Ok((def.name, node))
        } else {
            Ok((target.to_string(), self.node_for_service(target)?))
        }
    }

    /// The service name an argument stands for: a name as is, a file by its `name`.
    fn service_name(&self, target: &str) -> anyhow::Result<String> {
        if target.contains('/') || target.ends_with(".toml") {
            Ok(self.load_def(target)?.name)
        } else {
            Ok(target.to_string())
        }
    }
}

async fn deploy(
    ctx: &Ctx,
    def: &ServiceDef,
    component: Option<&str>,
    pull: PullPolicy,
    options: DeployOptions,
) -> anyhow::Result<()> {
    let node = ctx.node_for(Some(def))?;
    let mut client = ctx.client(node).await?;
    let service = def.name.clone();
    let out = &ctx.out;
    let res = client
        .deploy_watch(def, component, pull, options, &mut |p| {
            out.deploy_progress(&service, &p)
        })
        .await?;
    ctx.out.results(&node.name, &res.service, &res.results)?;
    output::check_results(&res.service, &res.results)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(*shell, &mut Cli::command(), "mcp", &mut std::io::stdout());
        return Ok(());
    }
    let config_path = cli_config_path(cli.config.as_deref())?;
    let config = CliConfig::load(&config_path).with_context(|| {
"loading the CLI configuration (start `mcp-agent --dev` to create one, or pass --config)".to_string()
    })?;
    let ctx = Ctx {
        config,
        config_path,
        node: cli.node.clone(),
        token_file: cli.token_file.clone(),
        out: Output::new(cli.json),
    };
    match cli.command {
        Command::Deploy {
            target,
            component,
            pull,
            timeout,
            no_wait,
        } => {
            let def = ctx.load_def(&target)?;
            let options = DeployOptions { timeout, no_wait };
            deploy(&ctx, &def, component.as_deref(), pull.into(), options).await
        }
        Command::Stop { target } => set_active_and_push(&ctx, &target, false).await,
        Command::Start { target } => set_active_and_push(&ctx, &target, true).await,
        Command::Restart { target, component } => {
            let name = ctx.service_name(&target)?;
            let node = ctx.node_for(None)?;
            let res = ctx
                .client(node)
                .await?
                .restart(&name, component.as_deref())
                .await?;
            ctx.out.results(&node.name, &res.service, &res.results)?;
            output::check_results(&res.service, &res.results)
        }
        Command::Remove { target } => {
            let name = ctx.service_name(&target)?;
            let node = ctx.node_for(None)?;
            let res = ctx.client(node).await?.remove(&name).await?;
            ctx.out.results(&node.name, &res.service, &res.results)?;
            output::check_results(&res.service, &res.results)
        }
        Command::History {
            target,
            component,
            limit,
        } => {
            let (service, node) = ctx.service_and_node(&target)?;
            let res = ctx
                .client(node)
                .await?
                .history(&service, component.as_deref(), limit)
                .await?;
            ctx.out.history(&node.name, &res)
        }
        Command::Rollback { target, component } => {
            let (service, node) = ctx.service_and_node(&target)?;
            let res = ctx
                .client(node)
                .await?
                .rollback(&service, component.as_deref())
                .await?;
            ctx.out.results(&node.name, &res.service, &res.results)?;
            output::check_results(&res.service, &res.results)
        }
        Command::Status { service } => {
            let mut reports = Vec::new();
            for node in ctx.query_nodes()? {
                reports.push(ctx.client(node).await?.status(service.as_deref()).await?);
            }
            ctx.out.status(&reports)
        }
        Command::Ps => {
            let mut reports = Vec::new();
            for node in ctx.query_nodes()? {
                reports.push(ctx.client(node).await?.ps().await?);
            }
            ctx.out.ps(&reports)
        }
        Command::List => {
            let mut lists = Vec::new();
            for node in ctx.query_nodes()? {
                lists.push((node.name.clone(), ctx.client(node).await?.list().await?));
            }
            ctx.out.list(&lists)
        }
        Command::Logs {
            service,
            component,
            follow,
            tail,
        } => {
            let node = ctx.node_for(None)?;
            let mut stream = ctx
                .client(node)
                .await?
                .logs(&service, component.as_deref(), follow, tail)
                .await?;
            let multi = component.is_none();
            let stdout = std::io::stdout();
            let stderr = std::io::stderr();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                if ctx.out.json {
                    ctx.out.log_json(&chunk)?;
                    continue;
                }
                let mut w: Box<dyn Write> = if chunk.stream == "stderr" {
                    Box::new(stderr.lock())
                } else {
                    Box::new(stdout.lock())
                };
                if multi {
                    output::write_prefixed(&mut w, &chunk.component, &chunk.data)?;
                } else {
                    w.write_all(&chunk.data)?;
                }
                w.flush()?;
            }
            Ok(())
        }
        Command::Node {
            command: NodeCommand::List,
        } => ctx.out.nodes(&ctx.config.nodes),
        Command::Node {
            command: NodeCommand::Info,
        } => {
            let mut infos = Vec::new();
            for node in ctx.query_nodes()? {
                let info = match ctx.client(node).await {
                    Ok(mut c) => c.node_info().await.map_err(anyhow::Error::from),
                    Err(e) => Err(e),
                };
                infos.push((node.clone(), info));
            }
            ctx.out.node_info(&infos)
        }
        Command::Sync {
            dry_run,
            prune,
            pull,
        } => {
            let defs = servicedef::load_dir(&ctx.config.services_dir)?
                .into_iter()
                .map(|(_, d)| d)
                .collect();
            let sets = mcp_core::client::sync_sets(&ctx.config, defs, ctx.node.as_deref())
                .map_err(|e| anyhow::anyhow!("{e} (in {})", ctx.config_path.display()))?;
            let pull = PullPolicy::from(pull);
            let mut answers = Vec::new();
            for (node, set) in &sets {
                let res = ctx
                    .client(node)
                    .await?
                    .sync(set, dry_run, prune, pull)
                    .await?;
                answers.push((node.name.clone(), res));
            }
            ctx.out.sync(&answers)?;
            for (_, res) in &answers {
                for r in &res.results {
                    output::check_results(&r.service, &r.results)?;
                }
            }
            Ok(())
        }
        Command::Adopt { service, write } => {
            // Refuse before asking the agent, so nothing is adopted for a
            // definition that cannot be written.
            if let Some(path) = &write
                && path.exists()
            {
                bail!("{} exists; choose another --write path", path.display());
            }
            let node = ctx.node_for(None)?;
            let res = ctx.client(node).await?.adopt(&service).await?;
            let def = res
                .definition
                .as_ref()
                .map(ServiceDef::from_proto)
                .transpose()?
                .context("the agent sent no definition")?;
            if let Some(path) = &write {
                use std::io::Write;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .with_context(|| format!("writing {}", path.display()))?;
                file.write_all(servicedef::to_toml(&def).as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            ctx.out.adopt(&node.name, &res, write.as_deref())
        }
        Command::Events {
            service,
            since,
            limit,
        } => {
            let since = since
                .map(|s| mcp_core::client::parse_since(&s, chrono::Utc::now()))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let mut all = Vec::new();
            for node in ctx.query_nodes()? {
                let events = ctx
                    .client(node)
                    .await?
                    .events(service.as_deref(), since, limit)
                    .await?;
                all.push((node.name.clone(), events));
            }
            ctx.out.events(&all)
        }
        Command::Push {
            service,
            local,
            remote,
            recursive,
            mode,
        } => {
            let plan = transfer::plan_push(&local, remote.as_deref(), recursive, mode)?;
            let node = ctx.node_for_service(&service)?;
            let mut client = ctx.client(node).await?;
            let bar = ctx.out.progress(plan.total_bytes());
            let mut moved = Vec::new();
            for job in &plan.jobs {
                moved.push(transfer::push(&mut client, &service, job, &|n| bar.inc(n)).await?);
            }
            bar.finish_and_clear();
            ctx.out
                .moved("pushed", &node.name, &service, &moved, &plan.skipped)
        }
        Command::Pull {
            service,
            remote,
            local,
            recursive,
        } => {
            let node = ctx.node_for_service(&service)?;
            let mut client = ctx.client(node).await?;
            let plan =
                transfer::plan_pull(&mut client, &service, &remote, local.as_deref(), recursive)
                    .await?;
            let bar = ctx.out.progress(plan.total_bytes());
            let mut moved = Vec::new();
            for job in &plan.jobs {
                moved.push(transfer::pull(&mut client, &service, job, &|n| bar.inc(n)).await?);
            }
            bar.finish_and_clear();
            ctx.out
                .moved("pulled", &node.name, &service, &moved, &plan.skipped)
        }
        Command::Ls {
            service,
            path,
            recursive,
        } => {
            let node = ctx.node_for_service(&service)?;
            let entries = ctx
                .client(node)
                .await?
                .list_files(&service, path.as_deref().unwrap_or("."), recursive)
                .await?;
            ctx.out.files(&node.name, &service, &entries)
        }
        Command::Rm {
            service,
            path,
            recursive,
        } => {
            let node = ctx.node_for_service(&service)?;
            let res = ctx
                .client(node)
                .await?
                .remove_file(&service, &path, recursive)
                .await?;
            ctx.out.removed_file(&node.name, &service, &res.path)
        }
        Command::Completions { .. } => Ok(()),
    }
}

/// Parses a duration such as `90s`, `5m` or `1m 30s`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than zero".to_string()),
        Err(e) => Err(format!("{text:?} is not a duration such as 90s or 5m: {e}")),
    }
}

/// Parses `--timeout` of a deploy: a duration, at most the agent's longest.
fn parse_deploy_timeout(text: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(text)?;
    let longest = mcp_core::config::DEPLOY_TIMEOUT_BOUNDS.max;
    if d.as_secs() > longest {
        return Err(format!(
            "{text:?} is longer than the longest deploy timeout, {longest} seconds (24h)"
        ));
    }
    Ok(d)
}

/// Parses `--mode`: octal permission bits such as `640` or `0o640`.
fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            format!(
                "{text:?} is not a file mode: expected octal permission bits such as 640 or 0755"
            )
        })
}

/// `mcp stop` / `mcp start`: rewrite `active` in the file, then push it.
/// If the agent refuses the push outright (unreachable, TLS, token or role),
/// the file is put back as it was, so file and node do not disagree.
async fn set_active_and_push(ctx: &Ctx, target: &str, active: bool) -> anyhow::Result<()> {
    let path = ctx.config.definition_path(target);
    // Validate before touching the file: a broken definition is reported, not edited.
    let before = ctx.config.load_definition(target)?;
    let original = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let node = ctx.node_for(Some(&before))?;
    let mut client = ctx.client(node).await?;
    servicedef::write_active(&path, active)?;
    let def = ctx.config.load_definition(target)?;
    match client
        .deploy(&def, None, PullPolicy::Missing, DeployOptions::default())
        .await
    {
        Ok(res) => {
            ctx.out.results(&node.name, &res.service, &res.results)?;
            output::check_results(&res.service, &res.results)
        }
        Err(err) => {
            if err.refused_before_acting() {
                std::fs::write(&path, &original)
                    .with_context(|| format!("restoring {}", path.display()))?;
            }
            Err(err.into())
        }
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
