//! The podman backend: [`Podman`] speaks podman's libpod REST API (v4) over
//! its unix socket, one HTTP request per operation.
//!
//! [`Podman::new`] does not connect: every call opens a fresh connection, so
//! a podman service that is absent at start, or restarts, is picked up by the
//! next call. A socket that cannot be reached, or a connection that closes
//! mid-request, is [`RuntimeError::Unavailable`].

pub mod api;
pub mod http;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ::http::{Method, StatusCode};
use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use futures::StreamExt;
use futures::stream;

use self::api::{
    ContainerInspect, CreateResponse, EventMessage, InspectHealth, InspectHealthLog, ListEntry,
    PullReport, SpecGenerator, error_message,
};
use self::http::{Response, UnixClient};
use crate::spec::{LogChunk, LogStreamKind};
use crate::{
    EventStream, HealthReport, InstanceInfo, InstanceSpec, LogOptions, LogStream, Runtime,
    RuntimeError, RuntimeEvent, RuntimeKind, RuntimeResult, RuntimeVersion,
};

/// The libpod API prefix MCP speaks.
pub const API_PREFIX: &str = "/v4.0.0/libpod";

/// How long an ordinary request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pull may take, all layers included.
const PULL_TIMEOUT: Duration = Duration::from_secs(3600);

/// Where to find podman and how to pull.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodmanConfig {
    /// Path of podman's API socket, such as `/run/podman/podman.sock`.
    pub socket: PathBuf,
    /// Registries (`host` or `host:port`) to pull from without TLS verification.
    pub insecure_registries: Vec<String>,
}

/// The podman backend. Cheap to clone; holds no connection.
#[derive(Debug, Clone)]
pub struct Podman {
    config: PodmanConfig,
    http: UnixClient,
}

impl Podman {
    /// A backend for the podman service at `config.socket`. Does not connect.
    pub fn new(config: PodmanConfig) -> Podman {
        let http = UnixClient::new(config.socket.clone());
        Podman { config, http }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.config.socket
    }

    /// The configuration.
    pub fn config(&self) -> &PodmanConfig {
        &self.config
    }

    /// Whether `image` comes from a registry listed as insecure.
    pub fn is_insecure(&self, image: &str) -> bool {
        registry_host(image).is_some_and(|host| {
            self.config.insecure_registries.iter().any(|r| {
                let r = r.trim();
                let r = r
                    .strip_prefix("http://")
                    .or_else(|| r.strip_prefix("https://"))
                    .unwrap_or(r);
                r.trim_end_matches('/') == host
            })
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> RuntimeResult<Response> {
        tracing::trace!(%method, path, "podman request");
        self.http.request(method, path, body, timeout).await
    }

    /// Inspects a container, `None` when it does not exist.
    async fn inspect_raw(&self, name: &str) -> RuntimeResult<Option<ContainerInspect>> {
        let response = self
            .call(
                Method::GET,
                &container_path(name, "json"),
                None,
                REQUEST_TIMEOUT,
            )
            .await?;
        match response.status {
            StatusCode::OK => parse(&response.body, "container inspect").map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            status => Err(container_error(
                &format!("inspect {name}"),
                name,
                status,
                &response.body,
            )),
        }
    }

    /// Checks that a container operation answered one of `ok`.
    fn expect_status(
        operation: &str,
        name: &str,
        response: &Response,
        ok: &[StatusCode],
    ) -> RuntimeResult<()> {
        if ok.contains(&response.status) {
            Ok(())
        } else {
            Err(container_error(
                operation,
                name,
                response.status,
                &response.body,
            ))
        }
    }

    /// One `POST .../containers/create` of `spec`, its answer mapped.
    async fn create_once(&self, spec: &InstanceSpec, body: Vec<u8>) -> RuntimeResult<String> {
        let response = self
            .call(
                Method::POST,
                &format!("{API_PREFIX}/containers/create"),
                Some(body),
                REQUEST_TIMEOUT,
            )
            .await?;
        let operation = format!("create {}", spec.name);
        match response.status {
            StatusCode::CREATED | StatusCode::OK => {
                let created: CreateResponse = parse(&response.body, "create")?;
                for warning in &created.warnings {
                    tracing::warn!(name = %spec.name, warning, "podman create");
                }
                Ok(created.id)
            }
            status => {
                let message = error_message(&response.body);
                let lower = message.to_ascii_lowercase();
                if status == StatusCode::NOT_FOUND
                    || lower.contains("image not known")
                    || lower.contains("no such image")
                {
                    Err(RuntimeError::Api {
                        operation,
                        status: status.as_u16(),
                        message: format!(
                            "image {} is not present on the node (pull it first): {message}",
                            spec.image
                        ),
                    })
                } else {
                    Err(classify(operation, status, message))
                }
            }
        }
    }
}

#[async_trait]
impl Runtime for Podman {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Container
    }

    async fn ping(&self) -> RuntimeResult<RuntimeVersion> {
        // `_ping` answers in well under a millisecond and carries the
        // versions in its headers; `/version` gathers host facts and takes
        // hundreds of milliseconds, too slow for a per-RPC check.
        let response = self
            .call(
                Method::GET,
                &format!("{API_PREFIX}/_ping"),
                None,
                PING_TIMEOUT,
            )
            .await?;
        if response.status != StatusCode::OK {
            return Err(RuntimeError::Api {
                operation: "ping".into(),
                status: response.status.as_u16(),
                message: error_message(&response.body),
            });
        }
        Ok(version_from_headers(&response.headers))
    }

    async fn image_exists(&self, image: &str) -> RuntimeResult<bool> {
        let path = format!("{API_PREFIX}/images/{}/exists", urlencoding::encode(image));
        let response = self.call(Method::GET, &path, None, REQUEST_TIMEOUT).await?;
        match response.status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            status => Err(RuntimeError::Api {
                operation: format!("image exists {image}"),
                status: status.as_u16(),
                message: error_message(&response.body),
            }),
        }
    }

    async fn pull(&self, image: &str) -> RuntimeResult<()> {
        if image.is_empty() {
            return Err(RuntimeError::Invalid("image reference is empty".into()));
        }
        let path = pull_path(image, self.is_insecure(image));
        let pull_error = |reason: String| RuntimeError::Pull {
            image: image.to_string(),
            reason,
        };
        let exchange = async {
            let response = self.http.stream(Method::POST, &path, None).await?;
            let status = response.status;
            if status != StatusCode::OK {
                let body = response.collect().await?;
                return Err(pull_error(format!(
                    "{} (status {})",
                    error_message(&body),
                    status.as_u16()
                )));
            }
            let mut body = Box::pin(response.into_stream());
            let mut buf = Vec::new();
            let mut reports = Vec::new();
            while let Some(chunk) = body.next().await {
                buf.extend_from_slice(&chunk?);
                drain_json(&mut buf, &mut reports)?;
            }
            drain_json(&mut buf, &mut reports)?;
            if !buf.iter().all(u8::is_ascii_whitespace) {
                return Err(RuntimeError::Protocol(format!(
                    "pull of {image}: truncated progress object"
                )));
            }
            let mut failure = None;
            for report in reports {
                if !report.stream.is_empty() {
                    tracing::debug!(image, progress = report.stream.trim_end(), "pull");
                }
                if !report.error.is_empty() {
                    failure = Some(report.error);
                }
            }
            match failure {
                Some(reason) => Err(pull_error(reason)),
                None => Ok(()),
            }
        };
        match tokio::time::timeout(PULL_TIMEOUT, exchange).await {
            Ok(result) => result,
            Err(_) => Err(pull_error(format!(
                "not done within {} s",
                PULL_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn create(&self, spec: &InstanceSpec) -> RuntimeResult<String> {
        let generator = SpecGenerator::from_spec(spec)?;
        let body = serde_json::to_vec(&generator)
            .map_err(|e| RuntimeError::Invalid(format!("cannot encode spec: {e}")))?;
        match self.create_once(spec, body.clone()).await {
            Err(RuntimeError::Conflict(message)) => {
                // A create interrupted mid-way (its client killed) can leave
                // the name held by a container that exists only in podman's
                // storage: no inspect, list or event shows it. Such a
                // leftover is freed and the create tried once more; a name
                // held by a real container stays a conflict.
                let Some(holder) = storage_name_holder(&message) else {
                    return Err(RuntimeError::Conflict(message));
                };
                if self.inspect(&spec.name).await?.is_some()
                    || self.inspect(holder).await?.is_some()
                {
                    return Err(RuntimeError::Conflict(message));
                }
                tracing::info!(name = %spec.name, holder, "freeing a name held in podman's storage by an interrupted create");
                match self.remove(holder, true).await {
                    Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                    Err(err) => return Err(err),
                }
                self.create_once(spec, body).await
            }
            other => other,
        }
    }

    async fn start(&self, name: &str) -> RuntimeResult<()> {
        let response = self
            .call(
                Method::POST,
                &container_path(name, "start"),
                None,
                REQUEST_TIMEOUT,
            )
            .await?;
        Self::expect_status(
            &format!("start {name}"),
            name,
            &response,
            &[
                StatusCode::NO_CONTENT,
                StatusCode::NOT_MODIFIED,
                StatusCode::OK,
            ],
        )
    }

    async fn stop(&self, name: &str, timeout: Duration) -> RuntimeResult<()> {
        let secs = ceil_secs(timeout);
        let path = format!("{}?timeout={secs}", container_path(name, "stop"));
        let response = self
            .call(
                Method::POST,
                &path,
                None,
                REQUEST_TIMEOUT + Duration::from_secs(secs),
            )
            .await?;
        Self::expect_status(
            &format!("stop {name}"),
            name,
            &response,
            &[
                StatusCode::NO_CONTENT,
                StatusCode::NOT_MODIFIED,
                StatusCode::OK,
            ],
        )
    }

    async fn remove(&self, name: &str, force: bool) -> RuntimeResult<()> {
        let response = self
            .call(
                Method::DELETE,
                &remove_path(name, force),
                None,
                REQUEST_TIMEOUT,
            )
            .await?;
        Self::expect_status(
            &format!("remove {name}"),
            name,
            &response,
            &[StatusCode::OK, StatusCode::NO_CONTENT],
        )
    }

    async fn rename(&self, name: &str, new_name: &str) -> RuntimeResult<()> {
        if new_name.is_empty() {
            return Err(RuntimeError::Invalid(format!(
                "rename {name}: new name is empty"
            )));
        }
        let path = format!(
            "{}?name={}",
            container_path(name, "rename"),
            urlencoding::encode(new_name)
        );
        let response = self
            .call(Method::POST, &path, None, REQUEST_TIMEOUT)
            .await?;
        Self::expect_status(
            &format!("rename {name} to {new_name}"),
            name,
            &response,
            &[StatusCode::NO_CONTENT, StatusCode::OK],
        )
    }

    async fn inspect(&self, name: &str) -> RuntimeResult<Option<InstanceInfo>> {
        Ok(self
            .inspect_raw(name)
            .await?
            .map(ContainerInspect::into_info))
    }

    async fn list(&self) -> RuntimeResult<Vec<InstanceInfo>> {
        let response = self
            .call(
                Method::GET,
                &format!("{API_PREFIX}/containers/json?all=true"),
                None,
                REQUEST_TIMEOUT,
            )
            .await?;
        if response.status != StatusCode::OK {
            return Err(classify(
                "list containers".into(),
                response.status,
                error_message(&response.body),
            ));
        }
        let entries: Option<Vec<ListEntry>> = parse(&response.body, "container list")?;
        Ok(entries
            .unwrap_or_default()
            .into_iter()
            .map(ListEntry::into_info)
            .collect())
    }

    async fn logs(&self, name: &str, options: &LogOptions) -> RuntimeResult<LogStream> {
        // Inspect first: it reports a missing container at once (podman sends
        // no response head for a followed log until there is output), and
        // tells whether the output is multiplexed (no terminal) or raw.
        let container = self
            .inspect_raw(name)
            .await?
            .ok_or_else(|| RuntimeError::NotFound(name.to_string()))?;
        let tty = container.config.tty;
        let path = logs_path(name, options);
        let connection = self.http.connect().await?;
        let name = name.to_string();
        let body = stream::once(async move {
            match connection.send(Method::GET, &path, None).await {
                Ok(response) if response.status == StatusCode::OK => response.into_stream().boxed(),
                Ok(response) => {
                    let status = response.status;
                    let error = match response.collect().await {
                        Ok(body) => container_error(&format!("logs {name}"), &name, status, &body),
                        Err(e) => e,
                    };
                    stream::iter([Err(error)]).boxed()
                }
                Err(e) => stream::iter([Err(e)]).boxed(),
            }
        })
        .flatten();
        let mut demux = LogDemux::new(tty);
        let chunks = body.flat_map(move |item| {
            stream::iter(match item {
                Ok(data) => demux.push(&data),
                Err(e) => vec![Err(e)],
            })
        });
        Ok(Box::pin(chunks))
    }

    async fn run_health_check(&self, name: &str) -> RuntimeResult<HealthReport> {
        // Podman runs the check in the container and waits for it, even past
        // the check's own timeout (it judges the time once the command ends).
        let response = self
            .call(
                Method::GET,
                &container_path(name, "healthcheck"),
                None,
                REQUEST_TIMEOUT,
            )
            .await?;
        let healthy = match response.status {
            StatusCode::OK => {
                let result: InspectHealth = parse(&response.body, "health check")?;
                result.status == "healthy"
            }
            status => {
                return health_check_error(name, status, &response.body);
            }
        };
        // Podman 4.3 answers only the status; the run's output is the last
        // entry of the log that inspect shows.
        let container = self
            .inspect_raw(name)
            .await?
            .ok_or_else(|| RuntimeError::NotFound(name.to_string()))?;
        let output = container
            .state
            .health
            .log
            .last()
            .map(InspectHealthLog::describe)
            .unwrap_or_default();
        Ok(HealthReport { healthy, output })
    }

    async fn events(&self) -> RuntimeResult<EventStream> {
        let filters = urlencoding::encode(r#"{"type":["container"]}"#);
        let path = format!("{API_PREFIX}/events?stream=true&filters={filters}");
        let response = self.http.stream(Method::GET, &path, None).await?;
        if response.status != StatusCode::OK {
            let status = response.status;
            let body = response.collect().await?;
            return Err(classify("events".into(), status, error_message(&body)));
        }
        let mut lines = EventLines::default();
        let events = response.into_stream().flat_map(move |item| {
            stream::iter(match item {
                Ok(data) => lines.push(&data),
                Err(e) => vec![Err(e)],
            })
        });
        Ok(Box::pin(events))
    }
}

/// Splits the event stream's body into JSON lines, across chunk boundaries.
#[derive(Default)]
struct EventLines {
    buf: Vec<u8>,
}

impl EventLines {
    fn push(&mut self, data: &[u8]) -> Vec<RuntimeResult<RuntimeEvent>> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<EventMessage>(line) {
                Ok(msg) if msg.kind.is_empty() || msg.kind == "container" => {
                    out.push(Ok(msg.into_event()))
                }
                Ok(_) => {}
                Err(e) => out.push(Err(RuntimeError::Protocol(format!("bad event line: {e}")))),
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Paths, errors, helpers
// ---------------------------------------------------------------------------

/// Podman's version (from `Server: Libpod/4.3.1 (linux)`) and its libpod
/// API version (`Libpod-Api-Version`), as `_ping` reports them.
fn version_from_headers(headers: &::http::HeaderMap) -> RuntimeVersion {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let api_version = header("libpod-api-version");
    let server = header("server");
    let version = server
        .strip_prefix("Libpod/")
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .unwrap_or_else(|| api_version.clone());
    RuntimeVersion {
        version,
        api_version,
    }
}

/// The registry host of an image reference: the part before the first `/`
/// when it looks like a host (has a `.` or `:`, or is `localhost`).
pub fn registry_host(image: &str) -> Option<&str> {
    let (first, _) = image.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

/// `/v4.0.0/libpod/containers/{name}/{action}`.
fn container_path(name: &str, action: &str) -> String {
    format!(
        "{API_PREFIX}/containers/{}/{action}",
        urlencoding::encode(name)
    )
}

/// The pull request path.
fn pull_path(image: &str, insecure: bool) -> String {
    let mut path = format!(
        "{API_PREFIX}/images/pull?reference={}&quiet=false",
        urlencoding::encode(image)
    );
    if insecure {
        path.push_str("&tlsVerify=false");
    }
    path
}

/// The remove request path. A forced removal kills at once (no grace period),
/// like `docker rm -f`; stop the instance first for a graceful end.
fn remove_path(name: &str, force: bool) -> String {
    let mut path = format!(
        "{API_PREFIX}/containers/{}?force={force}&v=false",
        urlencoding::encode(name)
    );
    if force {
        path.push_str("&timeout=0");
    }
    path
}

/// The logs request path.
fn logs_path(name: &str, options: &LogOptions) -> String {
    let tail = options
        .tail
        .map_or_else(|| "all".to_string(), |n| n.to_string());
    format!(
        "{}?stdout=true&stderr=true&follow={}&tail={tail}",
        container_path(name, "logs"),
        options.follow
    )
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> RuntimeResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        RuntimeError::Protocol(format!(
            "cannot parse {what} answer: {e}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))
    })
}

/// Whether a podman message means a conflict with another instance or the
/// instance's state.
fn is_conflict(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "address already in use",
        "port is already allocated",
        "already in use",
        "already exists",
        "container state improper",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// The id of the container that holds a name, from podman's answer to a
/// create whose name is taken ("creating container storage: the container
/// name \"x\" is already in use by <id>. ..."), or `None` for any other
/// message.
fn storage_name_holder(message: &str) -> Option<&str> {
    let rest = message.split_once("is already in use by ")?.1;
    let id = rest
        .split(|c: char| !c.is_ascii_hexdigit())
        .next()
        .filter(|id| id.len() == 64)?;
    Some(id)
}

/// Maps a failed answer that is not about a missing instance.
fn classify(operation: String, status: StatusCode, message: String) -> RuntimeError {
    if status == StatusCode::CONFLICT || is_conflict(&message) {
        RuntimeError::Conflict(message)
    } else {
        RuntimeError::Api {
            operation,
            status: status.as_u16(),
            message,
        }
    }
}

/// Maps a failed answer of `GET .../healthcheck`. Podman answers 409 when
/// the container has no health check or is not running, and 500 when the
/// check itself could not be completed (such as a command that outlived its
/// timeout): that is a failed check, with podman's reason as its output.
fn health_check_error(name: &str, status: StatusCode, body: &[u8]) -> RuntimeResult<HealthReport> {
    let message = error_message(body);
    let lower = message.to_ascii_lowercase();
    match status {
        StatusCode::NOT_FOUND => Err(RuntimeError::NotFound(name.to_string())),
        StatusCode::CONFLICT if lower.contains("no defined healthcheck") => {
            Err(RuntimeError::Invalid(format!(
                "container {name} has no health check configured, so there is none to run"
            )))
        }
        StatusCode::CONFLICT if lower.contains("not running") => Err(RuntimeError::Conflict(
            format!("container {name} is not running, so its health check cannot run"),
        )),
        StatusCode::INTERNAL_SERVER_ERROR => Ok(HealthReport {
            healthy: false,
            output: message,
        }),
        status => Err(classify(format!("health check of {name}"), status, message)),
    }
}

/// Maps a failed answer of an operation on the container `name`.
fn container_error(operation: &str, name: &str, status: StatusCode, body: &[u8]) -> RuntimeError {
    if status == StatusCode::NOT_FOUND {
        return RuntimeError::NotFound(name.to_string());
    }
    classify(operation.to_string(), status, error_message(body))
}

/// Moves every complete JSON value at the front of `buf` into `out`, leaving
/// an incomplete one in `buf`.
fn drain_json(buf: &mut Vec<u8>, out: &mut Vec<PullReport>) -> RuntimeResult<()> {
    let mut consumed = 0;
    let mut values = serde_json::Deserializer::from_slice(buf).into_iter::<PullReport>();
    loop {
        match values.next() {
            Some(Ok(report)) => {
                out.push(report);
                consumed = values.byte_offset();
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(e)) => {
                return Err(RuntimeError::Protocol(format!(
                    "bad pull progress object: {e}"
                )));
            }
            None => {
                consumed = values.byte_offset();
                break;
            }
        }
    }
    buf.drain(..consumed);
    Ok(())
}

// ---------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------

/// Takes every complete frame of the multiplexed log format off the front of
/// `buf`, leaving a partial frame for the next call.
///
/// A frame is an 8-byte header (stream type: 0 stdin, 1 stdout, 2 stderr;
/// three zero bytes; big-endian u32 payload length) and the payload.
pub fn demux_frames(buf: &mut BytesMut) -> RuntimeResult<Vec<LogChunk>> {
    let mut chunks = Vec::new();
    while buf.len() >= 8 {
        let stream = match buf[0] {
            0 | 1 => LogStreamKind::Stdout,
            2 => LogStreamKind::Stderr,
            other => {
                return Err(RuntimeError::Protocol(format!(
                    "bad log frame: stream type {other}"
                )));
            }
        };
        if buf[1..4] != [0, 0, 0] {
            return Err(RuntimeError::Protocol(
                "bad log frame: header padding not zero".into(),
            ));
        }
        let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + len {
            break;
        }
        buf.advance(8);
        let data = buf.split_to(len).freeze();
        if !data.is_empty() {
            chunks.push(LogChunk { stream, data });
        }
    }
    Ok(chunks)
}

/// Turns body frames of a log response into log chunks.
struct LogDemux {
    /// Raw output (terminal): everything is stdout, no frames.
    raw: bool,
    buf: BytesMut,
    failed: bool,
}

impl LogDemux {
    fn new(raw: bool) -> LogDemux {
        LogDemux {
            raw,
            buf: BytesMut::new(),
            failed: false,
        }
    }

    fn push(&mut self, data: &[u8]) -> Vec<RuntimeResult<LogChunk>> {
        if self.failed {
            return Vec::new();
        }
        if self.raw {
            return vec![Ok(LogChunk {
                stream: LogStreamKind::Stdout,
                data: bytes::Bytes::copy_from_slice(data),
            })];
        }
        self.buf.extend_from_slice(data);
        match demux_frames(&mut self.buf) {
            Ok(chunks) => chunks.into_iter().map(Ok).collect(),
            Err(e) => {
                self.failed = true;
                vec![Err(e)]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_of_a_taken_name() {
        let id = "b38089322dd1ca1148ac71b2be5be4a1b275eb23181f3313dcbbd1fec5ca66e7";
        let message = format!(
            "creating container storage: the container name \"web.mcp-new\" is already in use by {id}. You have to remove that container to be able to reuse that name: that name is already in use"
        );
        assert_eq!(storage_name_holder(&message), Some(id));
        assert_eq!(storage_name_holder("that name is already in use"), None);
        assert_eq!(storage_name_holder("is already in use by abc. x"), None);
        assert_eq!(
            storage_name_holder("address already in use by 0.0.0.0:8080"),
            None
        );
    }

    #[test]
    fn event_lines_split_across_chunks() {
        let line = br#"{"status":"start","Type":"container","Action":"start","Actor":{"ID":"abc","Attributes":{"name":"web-api","image":"x"}}}"#;
        let mut lines = EventLines::default();
        let mut all = Vec::new();
        for chunk in line.chunks(7) {
            all.extend(lines.push(chunk));
        }
        assert!(all.is_empty(), "no event before the newline");
        all.extend(lines.push(b"\n"));
        all.extend(lines.push(b"{\"Type\":\"image\",\"Action\":\"pull\"}\nnot json\n"));
        assert_eq!(all.len(), 2);
        let event = all[0].as_ref().unwrap();
        assert_eq!(
            (
                event.action.as_str(),
                event.id.as_str(),
                event.name.as_str()
            ),
            ("start", "abc", "web-api")
        );
        assert!(!event.settling);
        assert!(matches!(all[1], Err(RuntimeError::Protocol(_))));
        // A death is followed by podman's cleanup.
        let died = lines.push(
            br#"{"Type":"container","Action":"died","Actor":{"ID":"abc","Attributes":{"name":"web-api"}}}
{"Type":"container","Action":"cleanup","Actor":{"ID":"abc","Attributes":{"name":"web-api"}}}
"#,
        );
        let settling: Vec<(String, bool)> = died
            .into_iter()
            .map(|e| e.map(|e| (e.action, e.settling)).unwrap())
            .collect();
        assert_eq!(
            settling,
            [("died".to_string(), true), ("cleanup".to_string(), false)]
        );
    }

    #[test]
    fn version_comes_from_ping_headers() {
        let mut h = ::http::HeaderMap::new();
        h.insert("server", "Libpod/4.3.1 (linux)".parse().unwrap());
        h.insert("libpod-api-version", "4.3.1".parse().unwrap());
        let v = version_from_headers(&h);
        assert_eq!(v.version, "4.3.1");
        assert_eq!(v.api_version, "4.3.1");
        let v = version_from_headers(&::http::HeaderMap::new());
        assert_eq!(v.version, "");
    }

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![kind, 0, 0, 0];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn podman(insecure: &[&str]) -> Podman {
        Podman::new(PodmanConfig {
            socket: "/nonexistent/podman.sock".into(),
            insecure_registries: insecure.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn registry_hosts() {
        assert_eq!(
            registry_host("127.0.0.1:5000/a/b:1"),
            Some("127.0.0.1:5000")
        );
        assert_eq!(
            registry_host("registry.example.com/a"),
            Some("registry.example.com")
        );
        assert_eq!(registry_host("localhost/a:1"), Some("localhost"));
        assert_eq!(registry_host("reg:5000/a"), Some("reg:5000"));
        assert_eq!(registry_host("library/busybox"), None);
        assert_eq!(registry_host("busybox:1"), None);
        assert_eq!(registry_host("busybox"), None);
    }

    #[test]
    fn insecure_detection() {
        let p = podman(&["127.0.0.1:5000", "http://reg.local/"]);
        assert!(p.is_insecure("127.0.0.1:5000/mcp-test/busybox:1"));
        assert!(p.is_insecure("reg.local/x"));
        assert!(!p.is_insecure("127.0.0.1:5001/mcp-test/busybox:1"));
        assert!(!p.is_insecure("127.0.0.1/x"));
        assert!(!p.is_insecure("busybox"));
        assert!(!podman(&[]).is_insecure("127.0.0.1:5000/x"));
    }

    #[test]
    fn paths() {
        assert_eq!(
            pull_path("127.0.0.1:5000/a/b:1", true),
            "/v4.0.0/libpod/images/pull?reference=127.0.0.1%3A5000%2Fa%2Fb%3A1&quiet=false&tlsVerify=false"
        );
        assert_eq!(
            pull_path("docker.io/library/busybox", false),
            "/v4.0.0/libpod/images/pull?reference=docker.io%2Flibrary%2Fbusybox&quiet=false"
        );
        assert_eq!(
            container_path("web-api", "start"),
            "/v4.0.0/libpod/containers/web-api/start"
        );
        assert_eq!(
            container_path("a b", "json"),
            "/v4.0.0/libpod/containers/a%20b/json"
        );
        assert_eq!(
            remove_path("x", false),
            "/v4.0.0/libpod/containers/x?force=false&v=false"
        );
        assert_eq!(
            remove_path("x", true),
            "/v4.0.0/libpod/containers/x?force=true&v=false&timeout=0"
        );
        assert_eq!(
            logs_path("x", &LogOptions::default()),
            "/v4.0.0/libpod/containers/x/logs?stdout=true&stderr=true&follow=false&tail=all"
        );
        assert_eq!(
            logs_path(
                "x",
                &LogOptions {
                    follow: true,
                    tail: Some(5)
                }
            ),
            "/v4.0.0/libpod/containers/x/logs?stdout=true&stderr=true&follow=true&tail=5"
        );
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::from_secs(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
    }

    #[test]
    fn error_classification() {
        let body = br#"{"cause":"address already in use","message":"cannot listen on the TCP port: listen tcp4 127.0.0.1:18081: bind: address already in use","response":500}"#;
        assert!(matches!(
            container_error("start x", "x", StatusCode::INTERNAL_SERVER_ERROR, body),
            RuntimeError::Conflict(m) if m.contains("18081")
        ));
        let body = br#"{"cause":"no such container","message":"no container with name or ID \"x\" found: no such container","response":404}"#;
        assert!(matches!(
            container_error("start x", "x", StatusCode::NOT_FOUND, body),
            RuntimeError::NotFound(n) if n == "x"
        ));
        let body = br#"{"cause":"that name is already in use","message":"creating container storage: the container name \"x\" is already in use","response":500}"#;
        assert!(matches!(
            classify(
                "create x".into(),
                StatusCode::INTERNAL_SERVER_ERROR,
                error_message(body)
            ),
            RuntimeError::Conflict(_)
        ));
        assert!(matches!(
            classify(
                "create x".into(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "boom".into()
            ),
            RuntimeError::Api { status: 500, .. }
        ));
    }

    #[test]
    fn health_check_errors() {
        let no_check = br#"{"cause":"container abc has no defined healthcheck","message":"container abc has no defined healthcheck","response":409}"#;
        assert!(matches!(
            health_check_error("x", StatusCode::CONFLICT, no_check),
            Err(RuntimeError::Invalid(m)) if m.contains("x has no health check configured")
        ));
        let stopped = br#"{"cause":"container abc is not running","message":"container abc is not running","response":409}"#;
        assert!(matches!(
            health_check_error("x", StatusCode::CONFLICT, stopped),
            Err(RuntimeError::Conflict(m)) if m.contains("x is not running")
        ));
        let missing = br#"{"cause":"no such container","message":"unable to look up x to perform a health check: no container with name or ID \"x\" found: no such container","response":404}"#;
        assert!(matches!(
            health_check_error("x", StatusCode::NOT_FOUND, missing),
            Err(RuntimeError::NotFound(n)) if n == "x"
        ));
        let slow = br#"{"cause":"healthcheck command exceeded timeout of 1s","message":"healthcheck command exceeded timeout of 1s","response":500}"#;
        assert_eq!(
            health_check_error("x", StatusCode::INTERNAL_SERVER_ERROR, slow).expect("report"),
            HealthReport {
                healthy: false,
                output: "healthcheck command exceeded timeout of 1s".into()
            }
        );
        assert!(matches!(
            health_check_error("x", StatusCode::BAD_REQUEST, b"nope"),
            Err(RuntimeError::Api { status: 400, .. })
        ));
    }

    #[test]
    fn pull_progress_split_anywhere() {
        let text = b"{\"stream\":\"Trying to pull x...\\n\"}\n{\"error\":\"manifest unknown\"}\n";
        for cut in 0..text.len() {
            let mut buf = Vec::new();
            let mut out = Vec::new();
            buf.extend_from_slice(&text[..cut]);
            drain_json(&mut buf, &mut out).expect("first half");
            buf.extend_from_slice(&text[cut..]);
            drain_json(&mut buf, &mut out).expect("second half");
            assert_eq!(out.len(), 2, "cut at {cut}");
            assert_eq!(out[1].error, "manifest unknown");
            assert!(buf.iter().all(u8::is_ascii_whitespace));
        }
        let mut buf = b"{\"stream\":1}".to_vec();
        assert!(drain_json(&mut buf, &mut Vec::new()).is_err());
    }

    #[test]
    fn demux_multiple_frames_per_chunk() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(1, b"out\n"));
        buf.extend_from_slice(&frame(2, b"err\n"));
        buf.extend_from_slice(&frame(1, b"more\n"));
        let chunks = demux_frames(&mut buf).expect("demux");
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].stream, LogStreamKind::Stdout);
        assert_eq!(&chunks[0].data[..], b"out\n");
        assert_eq!(chunks[1].stream, LogStreamKind::Stderr);
        assert_eq!(&chunks[1].data[..], b"err\n");
        assert_eq!(&chunks[2].data[..], b"more\n");
        assert!(buf.is_empty());
    }

    #[test]
    fn demux_split_frames() {
        let mut all = frame(2, b"hello stderr\n");
        all.extend_from_slice(&frame(1, b"x"));
        // Feed one byte at a time: nothing is lost or duplicated.
        let mut demux = LogDemux::new(false);
        let mut chunks = Vec::new();
        for byte in &all {
            chunks.extend(demux.push(std::slice::from_ref(byte)));
        }
        let chunks: Vec<LogChunk> = chunks.into_iter().map(|c| c.expect("chunk")).collect();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].stream, LogStreamKind::Stderr);
        assert_eq!(&chunks[0].data[..], b"hello stderr\n");
        assert_eq!(chunks[1].stream, LogStreamKind::Stdout);
        assert_eq!(&chunks[1].data[..], b"x");
        // A header split from its payload.
        let mut buf = BytesMut::from(&frame(1, b"abc")[..6]);
        assert!(demux_frames(&mut buf).expect("partial").is_empty());
        assert_eq!(buf.len(), 6);
    }

    #[test]
    fn demux_rejects_garbage_once() {
        let mut demux = LogDemux::new(false);
        let out = demux.push(b"hello world, not a frame");
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0], Err(RuntimeError::Protocol(_))));
        assert!(demux.push(&frame(1, b"x")).is_empty());
    }

    #[test]
    fn demux_raw_for_tty() {
        let mut demux = LogDemux::new(true);
        let out = demux.push(b"plain\n");
        assert_eq!(out.len(), 1);
        let chunk = out.into_iter().next().expect("one").expect("ok");
        assert_eq!(chunk.stream, LogStreamKind::Stdout);
        assert_eq!(&chunk.data[..], b"plain\n");
    }

    #[tokio::test]
    async fn missing_socket_is_unavailable() {
        let err = podman(&[]).ping().await.expect_err("no socket");
        match err {
            RuntimeError::Unavailable { endpoint, .. } => {
                assert_eq!(endpoint, "/nonexistent/podman.sock")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}
