//! The client of the agent's gRPC API, used by `mcp`, the Python bindings
//! and the tests. One [`Client`] talks to one node; [`transfer`] is the
//! client's side of file transfers.

pub mod fleet;
pub mod raw;
pub mod transfer;

use std::time::Duration;

use futures::{Stream, StreamExt};
use mcp_proto::v1 as pb;
use mcp_proto::v1::agent_service_client::AgentServiceClient;
use mcp_proto::v1::fleet_service_client::FleetServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::servicedef::ServiceDef;
use crate::wire::{Action, DeployOptions, PullPolicy};

/// Why a call to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The agent could not be reached.
    #[error("cannot reach the agent of node {node} at {address}: {reason}")]
    Connect {
        /// Node name.
        node: String,
        /// Address dialled.
        address: String,
        /// The root cause, in one line.
        reason: String,
    },
    /// The agent answered with an error.
    #[error("{node}: {message}")]
    Rpc {
        /// Node name.
        node: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The agent's message.
        message: String,
    },
    /// The address is not usable.
    #[error("invalid agent address {address:?}: {reason}")]
    Address {
        /// The address given.
        address: String,
        /// What is wrong.
        reason: String,
    },
    /// The TLS connection to the agent failed.
    #[error("{node}: TLS with {address} failed: {reason} (CA: {ca})")]
    Tls {
        /// Node name.
        node: String,
        /// Address dialled.
        address: String,
        /// The CA file the agent was checked against.
        ca: String,
        /// What went wrong, in one sentence.
        reason: String,
    },
    /// The TLS settings could not be loaded.
    #[error("TLS settings: {0}")]
    TlsSettings(#[from] crate::tls::TlsError),
    /// The agent did not accept the token.
    #[error("{node}: not authenticated: {message} (token from {source_name})")]
    Unauthenticated {
        /// Node name.
        node: String,
        /// The agent's reason.
        message: String,
        /// Where the token came from, or "nowhere".
        source_name: String,
    },
    /// The token is valid but its role does not allow the call.
    #[error("{node}: permission denied: {message}")]
    PermissionDenied {
        /// Node name.
        node: String,
        /// The agent's reason.
        message: String,
    },
}

/// How a [`Client`] authenticates and secures its connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// The bearer token sent with every call.
    pub token: Option<String>,
    /// Where the token came from (`MCP_TOKEN`, a file), for messages.
    pub token_source: String,
    /// TLS settings; `None` talks plaintext gRPC.
    pub tls: Option<crate::tls::ClientTlsFiles>,
}

impl ClientError {
    /// The gRPC code, for errors the agent returned.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Rpc { code, .. } => Some(*code),
            ClientError::Connect { .. } | ClientError::Tls { .. } => Some(tonic::Code::Unavailable),
            ClientError::Unauthenticated { .. } => Some(tonic::Code::Unauthenticated),
            ClientError::PermissionDenied { .. } => Some(tonic::Code::PermissionDenied),
            ClientError::Address { .. } | ClientError::TlsSettings(_) => None,
        }
    }
}

/// The canonical gRPC name of a status code (`NOT_FOUND`), as the Python
/// exceptions' `code` and `mcp --json` errors give it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl ClientError {
    /// The node concerned, when the error came from talking to one.
    pub fn node(&self) -> Option<&str> {
        match self {
            ClientError::Connect { node, .. }
            | ClientError::Rpc { node, .. }
            | ClientError::Tls { node, .. }
            | ClientError::Unauthenticated { node, .. }
            | ClientError::PermissionDenied { node, .. } => Some(node),
            ClientError::Address { .. } | ClientError::TlsSettings(_) => None,
        }
    }

    /// Whether the agent certainly did nothing: it could not be reached, or
    /// it refused the caller before any handler ran.
    pub fn refused_before_acting(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::Address { .. }
                | ClientError::Tls { .. }
                | ClientError::TlsSettings(_)
                | ClientError::Unauthenticated { .. }
                | ClientError::PermissionDenied { .. }
        )
    }
}

/// Which definitions go to which node for `mcp sync`: each to its `node`,
/// or to the first configured node when it names none. Every configured
/// node gets its set (possibly empty: with prune, an empty set empties the
/// node); with `only`, just that node. A definition naming an unknown node
/// is an error.
pub fn sync_sets(
    config: &crate::config::CliConfig,
    defs: Vec<ServiceDef>,
    only: Option<&str>,
) -> Result<Vec<(crate::config::NodeEntry, Vec<ServiceDef>)>, String> {
    let default = config.node(None)?.name.clone();
    let mut sets: Vec<(crate::config::NodeEntry, Vec<ServiceDef>)> = config
        .nodes
        .iter()
        .map(|n| (n.clone(), Vec::new()))
        .collect();
    for def in defs {
        let target = def.node.clone().unwrap_or_else(|| default.clone());
        let Some((_, set)) = sets.iter_mut().find(|(n, _)| n.name == target) else {
            return Err(format!(
                "service {:?} names node {target:?}, which the CLI configuration does not list",
                def.name
            ));
        };
        set.push(def);
    }
    if let Some(name) = only {
        config.node(Some(name))?;
        sets.retain(|(n, _)| n.name == name);
    }
    Ok(sets)
}

/// Reads a `--since` value: an RFC 3339 time (`2026-11-23T18:00:00Z`) or
/// a span back from `now` (`90s`, `30m`, `2h`, `7d`, `1h 30m`).
pub fn parse_since(
    text: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let span = humantime::parse_duration(text).map_err(|_| {
        format!("--since {text:?}: expected a time such as 2026-11-23T18:00:00Z or a span such as 30m, 2h or 7d")
    })?;
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| format!("--since {text:?}: too far back"))
}

/// The word for what the agent did to a component (`created`, `updated`,
/// ..., `failed`), from a [`pb::ComponentResult`]'s `action`.
pub fn action_name(action: i32) -> &'static str {
    Action::from_proto(action).map_or("unknown", Action::as_str)
}

/// Whether a component's result is a failure: it failed, or its new
/// version did not become ready and was rolled back.
pub fn is_failure(result: &pb::ComponentResult) -> bool {
    Action::from_proto(result.action).is_some_and(Action::is_failure)
}

/// The failed components of an answer, in one sentence
/// (`2 component(s) failed: web-api: ...; web-db: ...`), or `None` when
/// none failed.
pub fn failures(service: &str, results: &[pb::ComponentResult]) -> Option<String> {
    let failed: Vec<String> = results
        .iter()
        .filter(|r| is_failure(r))
        .map(|r| format!("{service}-{}: {}", r.component, r.error))
        .collect();
    (!failed.is_empty()).then(|| {
        format!(
            "{} component(s) failed: {}",
            failed.len(),
            failed.join("; ")
        )
    })
}

/// One line of a component's output, cut from the chunks of the `Logs`
/// stream by [`LogLines`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The component that wrote it.
    pub component: String,
    /// `stdout` or `stderr` (or `console` for a VM's serial console).
    pub stream: String,
    /// The line, without its line ending.
    pub data: Vec<u8>,
}

/// Cuts the chunks of a `Logs` stream into lines. A chunk may hold several
/// lines or part of one; a partial line is kept per component and stream
/// until its end arrives, or until [`finish`](Self::finish).
#[derive(Debug, Default)]
pub struct LogLines {
    partial: Vec<((String, String), Vec<u8>)>,
}

impl LogLines {
    /// Adds a chunk; returns the lines it completes, in order.
    pub fn push(&mut self, chunk: pb::LogChunk) -> Vec<LogLine> {
        let key = (chunk.component, chunk.stream);
        let at = match self.partial.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.partial.push((key, Vec::new()));
                self.partial.len() - 1
            }
        };
        let ((component, stream), buf) = &mut self.partial[at];
        let mut lines = Vec::new();
        for piece in chunk.data.split_inclusive(|b| *b == b'\n') {
            buf.extend_from_slice(piece);
            if buf.ends_with(b"\n") {
                buf.pop();
                if buf.ends_with(b"\r") {
                    buf.pop();
                }
                lines.push(LogLine {
                    component: component.clone(),
                    stream: stream.clone(),
                    data: std::mem::take(buf),
                });
            }
        }
        lines
    }

    /// The partial lines left when the stream ends.
    pub fn finish(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.partial)
            .into_iter()
            .filter(|(_, buf)| !buf.is_empty())
            .map(|((component, stream), data)| LogLine {
                component,
                stream,
                data,
            })
            .collect()
    }
}

/// A deploy request.
fn deploy_request(
    def: &ServiceDef,
    component: Option<&str>,
    pull: PullPolicy,
    options: DeployOptions,
) -> pb::DeployRequest {
    pb::DeployRequest {
        service: Some(def.to_proto()),
        component: component.unwrap_or_default().to_string(),
        pull: pull.to_proto() as i32,
        timeout_ms: options
            .timeout
            .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        no_wait: options.no_wait,
        generation: 0,
    }
}

/// The innermost cause of an error, which is what a person needs to read.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A connection to one node's agent.
#[derive(Clone)]
pub struct Client {
    inner: AgentServiceClient<Channel>,
    /// The master's fleet API on the same connection (a master serves it;
    /// an agent answers it `Unimplemented`).
    fleet: FleetServiceClient<Channel>,
    node: String,
    address: String,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    token_source: String,
    /// Through a master: the node queries are narrowed to (empty for all).
    scope: String,
}

/// The TLS failure inside a connection error, if that is what it was.
fn tls_failure<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a crate::tls::ConnectError> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<crate::tls::ConnectError>() {
            return Some(c);
        }
        cur = e.source();
    }
    None
}

impl Client {
    /// Connects to the agent of `node` at `address` (`host:port`), over TLS
    /// unless `options.tls` is `None`, sending `options.token` as a bearer
    /// token with every call.
    pub async fn connect(
        node: &str,
        address: &str,
        options: &ConnectOptions,
    ) -> Result<Client, ClientError> {
        let bad_address = |reason: String| ClientError::Address {
            address: address.to_string(),
            reason,
        };
        let authority = address
            .split_once("://")
            .map_or(address, |(_, rest)| rest)
            .trim_end_matches('/');
        // Always `http`: TLS, when configured, is done by our own connector.
        let scheme = "http";
        let endpoint = Endpoint::from_shared(format!("{scheme}://{authority}"))
            .map_err(|e| bad_address(root_cause(&e)))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .initial_stream_window_size(crate::wire::STREAM_WINDOW)
            .initial_connection_window_size(crate::wire::CONNECTION_WINDOW)
            .max_frame_size(crate::wire::MAX_FRAME);
        let token = match &options.token {
            Some(t) => {
                let mut value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
                    format!("Bearer {t}")
                        .parse()
                        .map_err(|_| ClientError::Unauthenticated {
                            node: node.to_string(),
                            message: "the token holds characters that cannot be sent".into(),
                            source_name: options.token_source.clone(),
                        })?;
                // Never indexed by HPACK, redacted from debug output.
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let connected = match &options.tls {
            Some(files) => {
                let config = crate::tls::client_config(files)?;
                endpoint
                    .connect_with_connector(crate::tls::TlsConnector::new(config))
                    .await
                    .map_err(|e| match tls_failure(&e) {
                        Some(tls) if !matches!(tls.kind, crate::tls::ConnectErrorKind::Tcp(_)) => {
                            ClientError::Tls {
                                node: node.to_string(),
                                address: address.to_string(),
                                ca: files.ca_cert.display().to_string(),
                                reason: tls.to_string(),
                            }
                        }
                        _ => ClientError::Connect {
                            node: node.to_string(),
                            address: address.to_string(),
                            reason: root_cause(&e),
                        },
                    })?
            }
            None => endpoint.connect().await.map_err(|e| ClientError::Connect {
                node: node.to_string(),
                address: address.to_string(),
                reason: root_cause(&e),
            })?,
        };
        Ok(Client {
            fleet: FleetServiceClient::new(connected.clone()).max_decoding_message_size(64 << 20),
            inner: AgentServiceClient::new(connected).max_decoding_message_size(64 << 20),
            node: node.to_string(),
            address: address.to_string(),
            token,
            token_source: if options.token.is_some() {
                options.token_source.clone()
            } else {
                "nowhere: set MCP_TOKEN, --token-file, or token_file in the CLI config".into()
            },
            scope: String::new(),
        })
    }

    /// Narrows the queries (status, list, ps, events, node info) a master
    /// answers to `node`; an agent answers for itself whatever this says.
    pub fn scoped(mut self, node: Option<&str>) -> Client {
        self.scope = node.unwrap_or_default().to_string();
        self
    }

    /// The agent API itself, for a caller that forwards messages as they
    /// are (the master dispatching to its nodes); wrap each message with
    /// [`Client::wrap`] so it carries the token.
    pub fn agent_api(&self) -> AgentServiceClient<Channel> {
        self.inner.clone()
    }

    /// `msg` as a request carrying this client's token.
    pub fn wrap<T>(&self, msg: T) -> tonic::Request<T> {
        self.request(msg)
    }

    /// `status` as this client reports it (its node named, the token
    /// source in an authentication failure).
    pub fn error_of(&self, status: tonic::Status) -> ClientError {
        self.status_err(status)
    }

    /// The node this client talks to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The agent's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(token) = &self.token {
            req.metadata_mut().insert("authorization", token.clone());
        }
        req
    }

    fn status_err(&self, status: tonic::Status) -> ClientError {
        if status.code() == tonic::Code::Unavailable && status.message().contains("transport") {
            return ClientError::Connect {
                node: self.node.clone(),
                address: self.address.clone(),
                reason: status.message().to_string(),
            };
        }
        match status.code() {
            tonic::Code::Unauthenticated => {
                return ClientError::Unauthenticated {
                    node: self.node.clone(),
                    message: status.message().to_string(),
                    source_name: self.token_source.clone(),
                };
            }
            tonic::Code::PermissionDenied => {
                return ClientError::PermissionDenied {
                    node: self.node.clone(),
                    message: status.message().to_string(),
                };
            }
            _ => {}
        }
        ClientError::Rpc {
            node: self.node.clone(),
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// Pushes a definition; with `component`, deploys that component only.
    /// `timeout` bounds the wait for changed components to be ready
    /// (`None`: the agent's `[deploy] timeout`).
    pub async fn deploy(
        &mut self,
        def: &ServiceDef,
        component: Option<&str>,
        pull: PullPolicy,
        options: DeployOptions,
    ) -> Result<pb::DeployResponse, ClientError> {
        let req = self.request(deploy_request(def, component, pull, options));
        let res = self
            .inner
            .deploy(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// [`deploy`](Self::deploy), calling `progress` with each step the
    /// agent reports while it waits.
    pub async fn deploy_watch(
        &mut self,
        def: &ServiceDef,
        component: Option<&str>,
        pull: PullPolicy,
        options: DeployOptions,
        progress: &mut (dyn FnMut(pb::DeployProgress) + Send),
    ) -> Result<pb::DeployResponse, ClientError> {
        use pb::deploy_update::Update;
        let req = self.request(deploy_request(def, component, pull, options));
        let mut stream = self
            .inner
            .deploy_stream(req)
            .await
            .map_err(|s| self.status_err(s))?
            .into_inner();
        while let Some(update) = stream.message().await.map_err(|s| self.status_err(s))? {
            match update.update {
                Some(Update::Progress(p)) => progress(p),
                Some(Update::Done(done)) => return Ok(done),
                None => {}
            }
        }
        Err(ClientError::Rpc {
            node: self.node.clone(),
            code: tonic::Code::Unavailable,
            message: "the deploy's progress stream ended without its outcome".into(),
        })
    }

    fn service_request(
        &self,
        service: &str,
        component: Option<&str>,
    ) -> tonic::Request<pb::ServiceRequest> {
        self.request(pb::ServiceRequest {
            service: service.to_string(),
            component: component.unwrap_or_default().to_string(),
            generation: 0,
        })
    }

    /// Stops a service (or one component).
    pub async fn stop(
        &mut self,
        service: &str,
        component: Option<&str>,
    ) -> Result<pb::ServiceActionResponse, ClientError> {
        let req = self.service_request(service, component);
        let res = self.inner.stop(req).await.map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Starts a service (or one component).
    pub async fn start(
        &mut self,
        service: &str,
        component: Option<&str>,
    ) -> Result<pb::ServiceActionResponse, ClientError> {
        let req = self.service_request(service, component);
        let res = self
            .inner
            .start(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Restarts a service (or one component).
    pub async fn restart(
        &mut self,
        service: &str,
        component: Option<&str>,
    ) -> Result<pb::ServiceActionResponse, ClientError> {
        let req = self.service_request(service, component);
        let res = self
            .inner
            .restart(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Removes a service and its instances.
    pub async fn remove(
        &mut self,
        service: &str,
    ) -> Result<pb::ServiceActionResponse, ClientError> {
        let req = self.service_request(service, None);
        let res = self
            .inner
            .remove(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Desired versus observed state, of one service or all.
    pub async fn status(
        &mut self,
        service: Option<&str>,
    ) -> Result<pb::StatusResponse, ClientError> {
        let req = self.request(pb::StatusRequest {
            service: service.unwrap_or_default().to_string(),
            node: self.scope.clone(),
        });
        let res = self
            .inner
            .status(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Services the node's registry knows.
    pub async fn list(&mut self) -> Result<pb::ListResponse, ClientError> {
        let req = self.request(pb::ListRequest {
            node: self.scope.clone(),
        });
        let res = self.inner.list(req).await.map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Every instance on the node.
    pub async fn ps(&mut self) -> Result<pb::PsResponse, ClientError> {
        let req = self.request(pb::PsRequest {
            node: self.scope.clone(),
        });
        let res = self.inner.ps(req).await.map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// The node's name, version and runtime availability.
    pub async fn node_info(&mut self) -> Result<pb::NodeInfoResponse, ClientError> {
        let req = self.request(pb::NodeInfoRequest {
            node: self.scope.clone(),
        });
        let res = self
            .inner
            .node_info(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Logs of a service (or one component), as a stream of chunks.
    pub async fn logs(
        &mut self,
        service: &str,
        component: Option<&str>,
        follow: bool,
        tail: Option<u32>,
    ) -> Result<impl Stream<Item = Result<pb::LogChunk, ClientError>> + use<>, ClientError> {
        let req = self.request(pb::LogsRequest {
            service: service.to_string(),
            component: component.unwrap_or_default().to_string(),
            follow,
            tail: tail.map(|t| i32::try_from(t).unwrap_or(i32::MAX)),
        });
        let res = self.inner.logs(req).await.map_err(|s| self.status_err(s))?;
        let this = self.clone();
        Ok(res
            .into_inner()
            .map(move |item| item.map_err(|s| this.status_err(s))))
    }

    /// Sends the whole set of services this node should run; the agent
    /// converges to it (or, with `dry_run`, only plans). Services outside
    /// the set are removed only with `prune`.
    pub async fn sync(
        &mut self,
        defs: &[ServiceDef],
        dry_run: bool,
        prune: bool,
        pull: PullPolicy,
    ) -> Result<pb::SyncResponse, ClientError> {
        let req = self.request(pb::SyncRequest {
            services: defs.iter().map(ServiceDef::to_proto).collect(),
            dry_run,
            prune,
            pull: pull.to_proto() as i32,
            generations: Default::default(),
        });
        let res = self.inner.sync(req).await.map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Takes existing `<service>-*` containers into the registry without
    /// touching them; returns the resulting definition.
    pub async fn adopt(&mut self, service: &str) -> Result<pb::AdoptResponse, ClientError> {
        let req = self.request(pb::AdoptRequest {
            service: service.to_string(),
            node: self.scope.clone(),
        });
        let res = self
            .inner
            .adopt(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// The node's event history, oldest first: of one service when given,
    /// from `since` on when given, the last `limit` when given. The agent
    /// answers a page at a time; this asks for every page and returns them
    /// together (`next_page_token` empty).
    pub async fn events(
        &mut self,
        service: Option<&str>,
        since: Option<chrono::DateTime<chrono::Utc>>,
        limit: Option<u32>,
    ) -> Result<pb::EventsResponse, ClientError> {
        let mut all = pb::EventsResponse::default();
        let mut page_token = String::new();
        loop {
            let req = self.request(pb::EventsRequest {
                service: service.unwrap_or_default().to_string(),
                since: since.map(crate::wire::timestamp).unwrap_or_default(),
                limit: limit.unwrap_or(0),
                page_size: 0,
                page_token,
                node: self.scope.clone(),
            });
            let page = self
                .inner
                .events(req)
                .await
                .map_err(|s| self.status_err(s))?
                .into_inner();
            all.events.extend(page.events);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    /// The revisions of a service's components (of one when given), newest
    /// first; the newest `limit` when given.
    pub async fn history(
        &mut self,
        service: &str,
        component: Option<&str>,
        limit: Option<u32>,
    ) -> Result<pb::HistoryResponse, ClientError> {
        let req = self.request(pb::HistoryRequest {
            service: service.to_string(),
            component: component.unwrap_or_default().to_string(),
            limit: limit.unwrap_or(0),
        });
        let res = self
            .inner
            .history(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Rolls a component (or the components the service's last change
    /// touched) back to its previous revision that ran.
    pub async fn rollback(
        &mut self,
        service: &str,
        component: Option<&str>,
    ) -> Result<pb::ServiceActionResponse, ClientError> {
        let req = self.request(pb::RollbackRequest {
            service: service.to_string(),
            component: component.unwrap_or_default().to_string(),
        });
        let res = self
            .inner
            .rollback(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Uploads one file: `parts` must be the header, the content in chunks,
    /// then its SHA-256 (see [`crate::client::transfer`], which builds them from a
    /// local file).
    pub async fn push_file(
        &mut self,
        parts: impl Stream<Item = pb::PushFileRequest> + Send + 'static,
    ) -> Result<pb::PushFileResponse, ClientError> {
        let req = self.request(parts);
        let res = self
            .inner
            .push_file(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Downloads one file: its entry, the content in chunks, its SHA-256.
    pub async fn pull_file(
        &mut self,
        service: &str,
        path: &str,
    ) -> Result<
        impl Stream<Item = Result<pb::PullFileResponse, ClientError>> + Send + use<>,
        ClientError,
    > {
        let req = self.request(pb::FileRequest {
            service: service.to_string(),
            path: path.to_string(),
        });
        let res = self
            .inner
            .pull_file(req)
            .await
            .map_err(|s| self.status_err(s))?;
        let this = self.clone();
        Ok(res
            .into_inner()
            .map(move |item| item.map_err(|s| this.status_err(s))))
    }

    /// The entries under `path` in a service's directory (the whole tree
    /// when `recursive`), sorted by path; a file's own entry when `path` is a
    /// file.
    pub async fn list_files(
        &mut self,
        service: &str,
        path: &str,
        recursive: bool,
    ) -> Result<Vec<pb::FileEntry>, ClientError> {
        let req = self.request(pb::ListFilesRequest {
            service: service.to_string(),
            path: path.to_string(),
            recursive,
        });
        let mut stream = self
            .inner
            .list_files(req)
            .await
            .map_err(|s| self.status_err(s))?
            .into_inner();
        let mut entries = Vec::new();
        while let Some(batch) = stream.message().await.map_err(|s| self.status_err(s))? {
            entries.extend(batch.entries);
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    /// One entry of a service's directory.
    pub async fn stat_file(
        &mut self,
        service: &str,
        path: &str,
    ) -> Result<pb::FileEntry, ClientError> {
        let req = self.request(pb::FileRequest {
            service: service.to_string(),
            path: path.to_string(),
        });
        let res = self
            .inner
            .stat_file(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }

    /// Removes a file or symlink, or a directory (with its contents when
    /// `recursive`), from a service's directory.
    pub async fn remove_file(
        &mut self,
        service: &str,
        path: &str,
        recursive: bool,
    ) -> Result<pb::RemoveFileResponse, ClientError> {
        let req = self.request(pb::RemoveFileRequest {
            service: service.to_string(),
            path: path.to_string(),
            recursive,
        });
        let res = self
            .inner
            .remove_file(req)
            .await
            .map_err(|s| self.status_err(s))?;
        Ok(res.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_sets_follow_each_definitions_node() {
        use crate::config::{CliConfig, NodeEntry};
        let node = |n: &str| NodeEntry {
            name: n.into(),
            address: format!("{n}:9444"),
        };
        let config = CliConfig {
            services_dir: "s".into(),
            token: None,
            token_file: None,
            tls: None,
            nodes: vec![node("rift"), node("vade"), node("idle")],
            master: None,
        };
        let def =
            |text: &str| crate::servicedef::parse(text, std::path::Path::new("t.toml")).unwrap();
        let defs = vec![
            def("name = \"a\"\n[[components]]\nname = \"c\"\nimage = \"i\"\n"),
            def("name = \"b\"\nnode = \"vade\"\n[[components]]\nname = \"c\"\nimage = \"i\"\n"),
        ];
        let sets = sync_sets(&config, defs.clone(), None).unwrap();
        let names: Vec<(&str, Vec<&str>)> = sets
            .iter()
            .map(|(n, d)| (n.name.as_str(), d.iter().map(|d| d.name.as_str()).collect()))
            .collect();
        assert_eq!(
            names,
            [("rift", vec!["a"]), ("vade", vec!["b"]), ("idle", vec![])]
        );
        let only = sync_sets(&config, defs.clone(), Some("vade")).unwrap();
        assert_eq!(only.len(), 1);
        assert!(sync_sets(&config, defs.clone(), Some("nope")).is_err());
        let stray =
            def("name = \"x\"\nnode = \"gone\"\n[[components]]\nname = \"c\"\nimage = \"i\"\n");
        let err = sync_sets(&config, vec![stray], None).unwrap_err();
        assert!(err.contains("\"gone\""), "{err}");
    }

    #[test]
    fn log_lines_cut_chunks_per_component_and_stream() {
        let chunk = |c: &str, s: &str, d: &str| pb::LogChunk {
            component: c.into(),
            stream: s.into(),
            data: d.as_bytes().to_vec(),
        };
        let text = |lines: Vec<LogLine>| -> Vec<String> {
            lines
                .into_iter()
                .map(|l| {
                    format!(
                        "{}/{}:{}",
                        l.component,
                        l.stream,
                        String::from_utf8_lossy(&l.data)
                    )
                })
                .collect()
        };
        let mut lines = LogLines::default();
        assert_eq!(
            text(lines.push(chunk("a", "stdout", "one\ntw"))),
            ["a/stdout:one"]
        );
        assert!(lines.push(chunk("a", "stderr", "err ")).is_empty());
        assert_eq!(
            text(lines.push(chunk("b", "stdout", "x\r\n\ny\n"))),
            ["b/stdout:x", "b/stdout:", "b/stdout:y"]
        );
        assert_eq!(
            text(lines.push(chunk("a", "stdout", "o\nthree"))),
            ["a/stdout:two"]
        );
        assert_eq!(text(lines.finish()), ["a/stdout:three", "a/stderr:err "]);
        assert!(lines.finish().is_empty());
    }

    #[test]
    fn failures_name_each_failed_component() {
        let result = |c: &str, action: pb::ComponentAction, error: &str| pb::ComponentResult {
            component: c.into(),
            action: action as i32,
            container_id: String::new(),
            error: error.into(),
        };
        let ok = [result("api", pb::ComponentAction::Created, "")];
        assert_eq!(failures("web", &ok), None);
        let bad = [
            result("api", pb::ComponentAction::Failed, "pull failed"),
            result("db", pb::ComponentAction::Unchanged, ""),
            result("job", pb::ComponentAction::Failed, "exited 1"),
        ];
        assert_eq!(
            failures("web", &bad).as_deref(),
            Some("2 component(s) failed: web-api: pull failed; web-job: exited 1")
        );
        assert_eq!(
            action_name(pb::ComponentAction::Restarted as i32),
            "restarted"
        );
        assert_eq!(action_name(99), "unknown");
    }

    #[test]
    fn since_takes_times_and_spans() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-23T18:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let at = |s: &str| parse_since(s, now).map(crate::wire::timestamp);
        assert_eq!(
            at("2026-11-20T01:02:03Z").unwrap(),
            "2026-11-20T01:02:03.000Z"
        );
        assert_eq!(at("30m").unwrap(), "2026-11-23T17:30:00.000Z");
        assert_eq!(at("2h").unwrap(), "2026-11-23T16:00:00.000Z");
        assert_eq!(at("7d").unwrap(), "2026-11-16T18:00:00.000Z");
        assert_eq!(at("1h 30m").unwrap(), "2026-11-23T16:30:00.000Z");
        let err = at("yesterday").unwrap_err();
        assert!(
            err.contains("\"yesterday\"") && err.contains("30m"),
            "{err}"
        );
    }
}
