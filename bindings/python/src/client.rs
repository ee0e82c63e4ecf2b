//! [`Client`]: the synchronous Python face of `mcp_core::client::Client`,
//! the same client `mcp` uses. Each call runs on the shared runtime with
//! the GIL released (see [`crate::runtime::wait`]), so several Python
//! threads can call at once, on one client or several.

use std::path::PathBuf;

use chrono::{DateTime, FixedOffset, Utc};
use futures::StreamExt;
use mcp_core::client::transfer;
use mcp_core::client::{self as core, ConnectOptions};
use mcp_core::ops::{self, Session};
use mcp_core::servicedef;
use mcp_core::wire::{DeployOptions, PullPolicy};
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::error::{Error, Failed};
use crate::logs::LogStream;
use crate::runtime::wait;
use crate::servicedef::{ServiceDef, load};
use crate::types::{
    ActionResult, AdoptResult, Config, Event, FileEntry, FleetNode, Node, NodeInfo, Placement,
    PsReport, Revision, StatusReport, SyncResult, TransferResult,
};

/// A connection to one node's agent.
///
/// Make one with `Client(address, token=..., ca_cert=...)`, or with
/// `Client.from_config()` from the CLI's configuration. Every method blocks
/// until the agent answers, with the GIL released.
#[pyclass(module = "metacircular_mcp", frozen)]
pub struct Client {
    inner: core::Client,
    /// The process that made it: a child after `fork` must make its own.
    pid: u32,
    /// The CLI configuration it came from (with its node and token file),
    /// for service names, `stop`/`start` through definition files, and
    /// `sync`.
    session: Option<Session>,
}

/// Reads a `pull` argument.
fn pull_policy(pull: &str) -> Result<PullPolicy, Error> {
    match pull {
        "missing" => Ok(PullPolicy::Missing),
        "always" => Ok(PullPolicy::Always),
        other => Err(Error::Invalid(format!(
            "pull={other:?}: expected \"missing\" or \"always\""
        ))),
    }
}

impl Client {
    /// The Rust client, for one call.
    fn client(&self) -> Result<core::Client, Error> {
        if self.pid != std::process::id() {
            return Err(Error::Invalid(
                "this Client was made in another process (before fork); make a new Client in this one"
                    .into(),
            ));
        }
        Ok(self.inner.clone())
    }

    /// The definition an argument stands for: a `ServiceDef` as is; a path
    /// (or, with a configuration, a service name) loaded from its file.
    fn definition(&self, arg: &Bound<'_, PyAny>) -> PyResult<servicedef::ServiceDef> {
        if let Ok(def) = arg.cast::<ServiceDef>() {
            return Ok(def.get().inner.clone());
        }
        if let (Some(session), Ok(text)) = (&self.session, arg.extract::<String>()) {
            return session
                .definition(&text)
                .map_err(crate::error::definition_error);
        }
        Ok(load(&arg.extract::<PathBuf>()?)?.inner)
    }

    fn connect(
        py: Python<'_>,
        node: String,
        address: String,
        options: ConnectOptions,
        session: Option<Session>,
    ) -> PyResult<Client> {
        // Through a master, the session's node narrows the queries.
        let scope = session
            .as_ref()
            .filter(|s| s.master().is_some())
            .and_then(|s| s.node.clone());
        let inner = wait(py, async move {
            Ok(core::Client::connect(&node, &address, &options)
                .await?
                .scoped(scope.as_deref()))
        })?;
        Ok(Client {
            inner,
            pid: std::process::id(),
            session,
        })
    }

    /// Stops or starts a service (or one component): [`ops::set_active`],
    /// as `mcp stop` and `mcp start` do.
    fn set_active(
        &self,
        py: Python<'_>,
        active: bool,
        service: String,
        component: Option<String>,
        check: bool,
    ) -> PyResult<ActionResult> {
        let mut c = self.client()?;
        let config = self.session.as_ref().map(|s| s.config.clone());
        self.action(py, check, async move {
            let change = ops::set_active(
                &mut c,
                config.as_ref(),
                &service,
                component.as_deref(),
                active,
            )
            .await?;
            Ok((change.service, change.results, change.node))
        })
    }

    /// Runs a call answered with a service's component results.
    fn action(
        &self,
        py: Python<'_>,
        check: bool,
        call: impl Future<
            Output = Result<(String, Vec<mcp_core::proto::ComponentResult>, String), Error>,
        > + Send,
    ) -> PyResult<ActionResult> {
        let asked = self.inner.node().to_string();
        wait(py, async move {
            let (service, results, answered) = call.await?;
            // Through a master, the node that acted; else the one asked.
            let node = if answered.is_empty() { asked } else { answered };
            let failed = core::failures(&service, &results);
            let result = ActionResult::new(&node, service, results);
            match failed {
                // `DeployError` when a component failed and `check` is set.
                Some(text) if check => Err(Error::Failed(
                    format!("{node}: {text}"),
                    Failed::Action(result),
                )),
                _ => Ok(result),
            }
        })
    }
}

#[pymethods]
impl Client {
    /// Connects to the agent at `address` (`host:port`).
    ///
    /// `token` defaults to the `MCP_TOKEN` environment variable. The agent's
    /// certificate is checked against `ca_cert`; `cert` and `key` are a
    /// client certificate for agents that ask for one. `insecure=True`
    /// talks plaintext gRPC (only to agents serving plaintext). `node`
    /// names the node in messages (default: the address).
    #[new]
    #[pyo3(signature = (address, *, token = None, ca_cert = None, cert = None, key = None, insecure = false, node = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        address: String,
        token: Option<String>,
        ca_cert: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        insecure: bool,
        node: Option<String>,
    ) -> PyResult<Client> {
        let (token, token_source) = match token {
            Some(t) => (Some(t), "the token argument".to_string()),
            None => match std::env::var("MCP_TOKEN").ok().filter(|t| !t.is_empty()) {
                Some(t) => (Some(t), "MCP_TOKEN".to_string()),
                None => (None, String::new()),
            },
        };
        if let Some(t) = &token
            && let Err(e) = mcp_core::auth::check_token_syntax(t.as_bytes())
        {
            return Err(Error::Invalid(format!("unusable token from {token_source}: {e}")).into());
        }
        let tls = match (insecure, ca_cert) {
            (true, None) if cert.is_none() && key.is_none() => None,
            (true, _) => {
                return Err(Error::Invalid(
                    "insecure=True talks plaintext: do not pass ca_cert, cert or key with it"
                        .into(),
                )
                .into());
            }
            (false, None) => {
                return Err(Error::Invalid(
                    "ca_cert is required to check the agent's certificate (or insecure=True for an agent serving plaintext)".into(),
                )
                .into());
            }
            (false, Some(ca_cert)) => Some(mcp_core::tls::ClientTlsFiles { ca_cert, cert, key }),
        };
        let options = ConnectOptions {
            token,
            token_source,
            tls,
        };
        let node = node.unwrap_or_else(|| address.clone());
        Client::connect(py, node, address, options, None)
    }

    /// Connects to a node of the CLI's configuration: `path`, else
    /// `$MCP_CONFIG`, else `$XDG_CONFIG_HOME/mcp/mcp.toml`; `node`, else the
    /// first configured node. The token comes from `token_file`, else
    /// `MCP_TOKEN`, else the configuration, as for `mcp`.
    #[classmethod]
    #[pyo3(signature = (path = None, *, node = None, token_file = None))]
    fn from_config(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        path: Option<PathBuf>,
        node: Option<String>,
        token_file: Option<PathBuf>,
    ) -> PyResult<Client> {
        let session = Session::load(path.as_deref(), node, token_file).map_err(Error::from)?;
        let entry = session.node_for(None).map_err(Error::from)?.clone();
        let options = session.connect_options().map_err(Error::from)?;
        Client::connect(py, entry.name, entry.address, options, Some(session))
    }

    /// The node's name.
    #[getter]
    fn node(&self) -> &str {
        self.inner.node()
    }

    /// The agent's address.
    #[getter]
    fn address(&self) -> &str {
        self.inner.address()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        use pyo3::IntoPyObjectExt;
        Ok(format!(
            "Client(node={}, address={})",
            self.inner.node().into_bound_py_any(py)?.repr()?,
            self.inner.address().into_bound_py_any(py)?.repr()?
        ))
    }

    /// Deploys a definition (a `ServiceDef`, a file path or, for a client
    /// made from the CLI configuration, a service name in `services_dir`);
    /// with `component`, only that component. Changed components must be
    /// ready within `timeout` (the agent's `[deploy] timeout` by default);
    /// with `wait=False` they count as deployed once started. Raises
    /// `DeployError` when a component fails, unless `check=False`.
    #[pyo3(signature = (definition, *, component = None, pull = "missing", timeout = None, wait = true, check = true))]
    #[allow(clippy::too_many_arguments)]
    fn deploy(
        &self,
        py: Python<'_>,
        definition: &Bound<'_, PyAny>,
        component: Option<String>,
        pull: &str,
        timeout: Option<&Bound<'_, PyAny>>,
        wait: bool,
        check: bool,
    ) -> PyResult<ActionResult> {
        let def = self.definition(definition)?;
        let pull = pull_policy(pull)?;
        if !wait && timeout.is_some() {
            return Err(Error::Invalid("timeout= has no meaning with wait=False".into()).into());
        }
        let options = DeployOptions {
            timeout: timeout.map(wait_limit).transpose()?,
            no_wait: !wait,
        };
        let mut c = self.client()?;
        self.action(py, check, async move {
            let r = c.deploy(&def, component.as_deref(), pull, options).await?;
            Ok((r.service, r.results, r.node))
        })
    }

    /// Stops a service, as `mcp stop` does: with a definition file (a path,
    /// or the service's file in the configuration's services directory)
    /// `active = false` is set in it and it is deployed, so file and node
    /// agree (the file is put back if the node refuses it outright);
    /// without one, or for one `component`, the node stops it and records
    /// it as stopped.
    #[pyo3(signature = (service, *, component = None, check = true))]
    fn stop(
        &self,
        py: Python<'_>,
        service: String,
        component: Option<String>,
        check: bool,
    ) -> PyResult<ActionResult> {
        self.set_active(py, false, service, component, check)
    }

    /// Starts a service, as `mcp start` does: `active = true` in its
    /// definition file, deployed; without a file, or for one `component`,
    /// the node starts it and records it as active.
    #[pyo3(signature = (service, *, component = None, check = true))]
    fn start(
        &self,
        py: Python<'_>,
        service: String,
        component: Option<String>,
        check: bool,
    ) -> PyResult<ActionResult> {
        self.set_active(py, true, service, component, check)
    }

    /// Restarts a service's components (or one) without changing them.
    #[pyo3(signature = (service, *, component = None, check = true))]
    fn restart(
        &self,
        py: Python<'_>,
        service: String,
        component: Option<String>,
        check: bool,
    ) -> PyResult<ActionResult> {
        let mut c = self.client()?;
        self.action(py, check, async move {
            let r = c.restart(&service, component.as_deref()).await?;
            Ok((r.service, r.results, r.node))
        })
    }

    /// Stops and removes a service's components and forgets the service.
    #[pyo3(signature = (service, *, check = true))]
    fn remove(&self, py: Python<'_>, service: String, check: bool) -> PyResult<ActionResult> {
        let mut c = self.client()?;
        self.action(py, check, async move {
            let r = c.remove(&service).await?;
            Ok((r.service, r.results, r.node))
        })
    }

    /// Desired versus observed state of one service's components, or all.
    #[pyo3(signature = (service = None))]
    fn status(&self, py: Python<'_>, service: Option<String>) -> PyResult<StatusReport> {
        let mut c = self.client()?;
        wait(
            py,
            async move { Ok(c.status(service.as_deref()).await?.into()) },
        )
    }

    /// Every container and VM on the node, with drift, and the components
    /// that have none.
    fn ps(&self, py: Python<'_>) -> PyResult<PsReport> {
        let mut c = self.client()?;
        wait(py, async move { Ok(c.ps().await?.into()) })
    }

    /// The services the node's registry knows.
    fn list(&self, py: Python<'_>) -> PyResult<Vec<crate::types::ServiceSummary>> {
        let mut c = self.client()?;
        wait(py, async move {
            Ok(c.list()
                .await?
                .services
                .into_iter()
                .map(Into::into)
                .collect())
        })
    }

    /// The agent's version and what the node can run.
    fn node_info(&self, py: Python<'_>) -> PyResult<NodeInfo> {
        let mut c = self.client()?;
        wait(py, async move { Ok(c.node_info().await?.into()) })
    }

    /// Every node of the fleet as the master sees it (a client of the
    /// master).
    fn nodes(&self, py: Python<'_>) -> PyResult<Vec<FleetNode>> {
        let mut c = self.client()?;
        wait(py, async move {
            Ok(c.nodes().await?.into_iter().map(FleetNode::from).collect())
        })
    }

    /// Drains node `name` through the master: nothing new goes there, its
    /// movable services are planned elsewhere. The node afterwards.
    fn drain(&self, py: Python<'_>, name: String) -> PyResult<FleetNode> {
        let mut c = self.client()?;
        wait(py, async move { Ok(c.drain(&name).await?.into()) })
    }

    /// Makes a drained node eligible again. The node afterwards.
    fn undrain(&self, py: Python<'_>, name: String) -> PyResult<FleetNode> {
        let mut c = self.client()?;
        wait(py, async move { Ok(c.undrain(&name).await?.into()) })
    }

    /// Where the master would put `definitions` (`ServiceDef`s or paths);
    /// changes nothing. Raises `ConflictError` naming every service
    /// that cannot be placed.
    fn plan(&self, py: Python<'_>, definitions: Vec<Bound<'_, PyAny>>) -> PyResult<Vec<Placement>> {
        let defs = definitions
            .iter()
            .map(|a| self.definition(a))
            .collect::<PyResult<Vec<_>>>()?;
        let mut c = self.client()?;
        wait(py, async move {
            Ok(c.plan(&defs)
                .await?
                .into_iter()
                .map(Placement::from)
                .collect())
        })
    }

    /// Sends the whole set of services this node should run; the node
    /// converges to it. `definitions` are `ServiceDef`s or paths; `None`
    /// (for a client made from the CLI configuration) means every
    /// definition in `services_dir` meant for this node, as `mcp sync`
    /// sends. With `dry_run`, only the plan is made. Services outside the
    /// set are removed only with `prune`.
    #[pyo3(signature = (definitions = None, *, dry_run = false, prune = false, pull = "missing", check = true))]
    fn sync(
        &self,
        py: Python<'_>,
        definitions: Option<Vec<Bound<'_, PyAny>>>,
        dry_run: bool,
        prune: bool,
        pull: &str,
        check: bool,
    ) -> PyResult<SyncResult> {
        let pull = pull_policy(pull)?;
        let defs = match definitions {
            Some(args) => args
                .iter()
                .map(|a| self.definition(a))
                .collect::<PyResult<Vec<_>>>()?,
            None => self.configured_set()?,
        };
        let mut c = self.client()?;
        wait(py, async move {
            let node = c.node().to_string();
            let answer = c.sync(&defs, dry_run, prune, pull).await?;
            let failed: Vec<String> = answer
                .results
                .iter()
                .filter_map(|r| core::failures(&r.service, &r.results))
                .collect();
            let result = SyncResult::new(&node, answer);
            if check && !failed.is_empty() {
                return Err(Error::Failed(
                    format!("{node}: {}", failed.join("; ")),
                    Failed::Sync(result),
                ));
            }
            Ok(result)
        })
    }

    /// Takes existing `<service>-*` containers into the registry without
    /// touching them.
    fn adopt(&self, py: Python<'_>, service: String) -> PyResult<AdoptResult> {
        let mut c = self.client()?;
        let (node, answer) = wait(py, async move {
            let answer = c.adopt(&service).await?;
            Ok((c.node().to_string(), answer))
        })?;
        let definition = answer
            .definition
            .as_ref()
            .map(servicedef::ServiceDef::from_proto)
            .transpose()
            .map_err(crate::error::definition_error)?
            .ok_or_else(|| Error::Invalid("the agent sent no definition".into()))?;
        Ok(AdoptResult {
            node,
            definition: ServiceDef::new(definition, None),
            adopted: answer.adopted,
            already_managed: answer.already_managed,
        })
    }

    /// The output of a service (or one component) as an iterator of
    /// `LogLine`; with `follow`, lines keep coming until it is closed.
    /// `tail` keeps only the last N lines of the existing output.
    #[pyo3(signature = (service, component = None, *, follow = false, tail = None))]
    fn logs(
        &self,
        py: Python<'_>,
        service: String,
        component: Option<String>,
        follow: bool,
        tail: Option<u32>,
    ) -> PyResult<LogStream> {
        let mut c = self.client()?;
        let chunks = wait(py, async move {
            Ok(c.logs(&service, component.as_deref(), follow, tail)
                .await?
                .boxed())
        })?;
        Ok(LogStream::new(chunks))
    }

    /// The node's event history, oldest first: of one service, since a
    /// time (an aware `datetime`, RFC 3339 text, or a span back from now
    /// such as `"30m"`), the last `limit`.
    #[pyo3(signature = (service = None, *, since = None, limit = None))]
    fn events(
        &self,
        py: Python<'_>,
        service: Option<String>,
        since: Option<&Bound<'_, PyAny>>,
        limit: Option<u32>,
    ) -> PyResult<Vec<Event>> {
        let since = since.map(since_time).transpose()?;
        let mut c = self.client()?;
        wait(py, async move {
            let answer = c.events(service.as_deref(), since, limit).await?;
            Ok(answer.events.into_iter().map(Into::into).collect())
        })
    }

    /// The revisions of a service's components (of one `component`),
    /// newest first; the newest `limit` when given.
    #[pyo3(signature = (service, component = None, *, limit = None))]
    fn history(
        &self,
        py: Python<'_>,
        service: String,
        component: Option<String>,
        limit: Option<u32>,
    ) -> PyResult<Vec<Revision>> {
        let mut c = self.client()?;
        wait(py, async move {
            let answer = c.history(&service, component.as_deref(), limit).await?;
            answer
                .revisions
                .into_iter()
                .map(Revision::from_proto)
                .collect()
        })
    }

    /// Deploys the previous revision that ran again: of `component`, or
    /// of the components the service's last change touched. Raises
    /// `ConflictError` when there is no earlier revision (nothing changes),
    /// and `DeployError` when a component fails, unless `check=False`.
    #[pyo3(signature = (service, *, component = None, check = true))]
    fn rollback(
        &self,
        py: Python<'_>,
        service: String,
        component: Option<String>,
        check: bool,
    ) -> PyResult<ActionResult> {
        let mut c = self.client()?;
        self.action(py, check, async move {
            let r = c.rollback(&service, component.as_deref()).await?;
            Ok((r.service, r.results, r.node))
        })
    }

    /// Copies a local file (a directory with `recursive`) into the
    /// service's directory on the node: to `remote`, by default the local
    /// name at the top; into `remote` when it ends with `/`. Each file keeps
    /// its permission bits unless `mode` is given. Checked end to end with
    /// SHA-256; a file is replaced only once it has all arrived.
    #[pyo3(signature = (service, local, remote = None, *, recursive = false, mode = None))]
    fn push(
        &self,
        py: Python<'_>,
        service: String,
        local: PathBuf,
        remote: Option<String>,
        recursive: bool,
        mode: Option<u32>,
    ) -> PyResult<TransferResult> {
        let mut c = self.client()?;
        wait(py, async move {
            let tree = transfer::push_tree(
                &mut c,
                &service,
                &local,
                remote.as_deref(),
                recursive,
                mode,
                &|_| {},
            )
            .await?;
            Ok(TransferResult::from(tree))
        })
    }

    /// Copies a file (a directory with `recursive`) from the service's
    /// directory on the node: to `local`, by default its name here; into
    /// `local` when that is a directory. Checked end to end with SHA-256;
    /// each file is written beside its target and renamed into place.
    #[pyo3(signature = (service, remote, local = None, *, recursive = false))]
    fn pull(
        &self,
        py: Python<'_>,
        service: String,
        remote: String,
        local: Option<PathBuf>,
        recursive: bool,
    ) -> PyResult<TransferResult> {
        let mut c = self.client()?;
        wait(py, async move {
            let tree = transfer::pull_tree(
                &mut c,
                &service,
                &remote,
                local.as_deref(),
                recursive,
                &|_| {},
            )
            .await?;
            Ok(TransferResult::from(tree))
        })
    }

    /// The entries under `path` in the service's directory (everything
    /// beneath it with `recursive`), sorted by path.
    #[pyo3(signature = (service, path = ".", *, recursive = false))]
    fn list_files(
        &self,
        py: Python<'_>,
        service: String,
        path: &str,
        recursive: bool,
    ) -> PyResult<Vec<FileEntry>> {
        let mut c = self.client()?;
        let path = path.to_string();
        wait(py, async move {
            let entries = c.list_files(&service, &path, recursive).await?;
            Ok(entries.into_iter().map(Into::into).collect())
        })
    }

    /// One entry of the service's directory.
    fn stat_file(&self, py: Python<'_>, service: String, path: String) -> PyResult<FileEntry> {
        let mut c = self.client()?;
        wait(
            py,
            async move { Ok(c.stat_file(&service, &path).await?.into()) },
        )
    }

    /// Removes a file or symlink, or a directory (with its contents only
    /// with `recursive`), from the service's directory. Returns the path
    /// removed.
    #[pyo3(signature = (service, path, *, recursive = false))]
    fn remove_file(
        &self,
        py: Python<'_>,
        service: String,
        path: String,
        recursive: bool,
    ) -> PyResult<String> {
        let mut c = self.client()?;
        wait(py, async move {
            Ok(c.remove_file(&service, &path, recursive).await?.path)
        })
    }
}

impl Client {
    /// The definitions `mcp sync` would send to this client's node.
    fn configured_set(&self) -> PyResult<Vec<servicedef::ServiceDef>> {
        let Some(session) = &self.session else {
            return Err(Error::Invalid(
                "sync() needs definitions: this Client was not made from a CLI configuration"
                    .into(),
            )
            .into());
        };
        // This client's node only, whatever node the session was made for.
        let session = Session {
            node: Some(self.inner.node().to_string()),
            ..session.clone()
        };
        let sets = session.sync_sets().map_err(Error::from)?;
        Ok(sets.into_iter().flat_map(|(_, defs)| defs).collect())
    }
}

/// Reads a `timeout` argument: seconds (`int` or `float`) or a
/// `timedelta`, greater than zero.
fn wait_limit(arg: &Bound<'_, PyAny>) -> PyResult<std::time::Duration> {
    let limit = match arg.extract::<std::time::Duration>() {
        Ok(d) => Some(d),
        Err(_) => arg
            .extract::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok()),
    };
    match limit {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(Error::Invalid(
            "timeout: expected seconds greater than zero, or a timedelta".into(),
        )
        .into()),
    }
}

/// Reads a `since` argument: an aware `datetime`, or text that
/// `mcp events --since` accepts.
fn since_time(arg: &Bound<'_, PyAny>) -> PyResult<DateTime<Utc>> {
    if let Ok(text) = arg.extract::<String>() {
        return core::parse_since(&text, Utc::now()).map_err(|e| Error::Invalid(e).into());
    }
    match arg.extract::<DateTime<FixedOffset>>() {
        Ok(t) => Ok(t.with_timezone(&Utc)),
        Err(_) => Err(Error::Invalid(
            "since: expected a timezone-aware datetime, or text such as \"30m\" or \"2026-11-23T18:00:00Z\""
                .into(),
        )
        .into()),
    }
}

/// Reads the CLI configuration: `path`, else `$MCP_CONFIG`, else
/// `$XDG_CONFIG_HOME/mcp/mcp.toml` (as `Client.from_config` does).
#[pyfunction]
#[pyo3(signature = (path = None))]
pub fn load_config(path: Option<PathBuf>) -> PyResult<Config> {
    let Session {
        config,
        config_path,
        ..
    } = Session::load(path.as_deref(), None, None).map_err(Error::from)?;
    Ok(Config {
        path: config_path.display().to_string(),
        services_dir: config.services_dir.display().to_string(),
        nodes: config
            .nodes
            .into_iter()
            .map(|n| Node {
                name: n.name,
                address: n.address,
            })
            .collect(),
    })
}
