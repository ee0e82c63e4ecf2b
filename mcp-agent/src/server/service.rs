//! The `mcp.v1.AgentService` implementation: converts between protobuf
//! messages and [`Reconciler`] calls. No lifecycle logic lives here.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use mcp_proto::v1 as pb;
use mcp_proto::v1::agent_service_server::AgentService as AgentServiceApi;
use mcp_runtime::{InstanceInfo, LogOptions};
use tonic::{Request, Response, Status};

use crate::config::FilesSettings;
use crate::error::AgentError;
use crate::files::serve::{FileWriter, ReadItem, list_entries, read_file};
use crate::files::{FilesError, Metadata, RemotePath, ServiceTree, UploadOptions};
use crate::reconcile::{ComponentOutcome, ComponentStatus, Reconciler, plan};
use crate::registry::{EventCursor, EventFilter};
use crate::server::activity::Activity;
use mcp_core::auth::audit::AuditLog;
use mcp_core::auth::guard::HandlerEnd;
use mcp_core::auth::{Caller, Role};
use mcp_core::servicedef::ServiceDef;
use mcp_core::wire::{DeployOptions, PullPolicy};

/// The agent's gRPC service.
pub struct AgentService {
    node_name: String,
    reconciler: Arc<Reconciler>,
    srv_root: PathBuf,
    files: FilesSettings,
    activity: Activity,
    /// Places for file transfers and listings in flight, and how many.
    file_streams: (Arc<tokio::sync::Semaphore>, usize),
    /// The audit log, for `NodeInfo` to report on.
    audit: Arc<AuditLog>,
}

impl AgentService {
    /// A service for node `node_name` driving `reconciler`, with the
    /// service file trees under `srv_root`.
    pub fn new(
        node_name: String,
        reconciler: Arc<Reconciler>,
        srv_root: PathBuf,
        files: FilesSettings,
    ) -> Self {
        AgentService {
            node_name,
            reconciler,
            srv_root,
            files,
            activity: Activity::new(),
            file_streams: file_streams(crate::config::LimitSettings::default().max_file_streams),
            audit: Arc::new(AuditLog::log_only()),
        }
    }

    /// Reports on `audit` (the guard's) in `NodeInfo`.
    pub fn with_audit(mut self, audit: Arc<AuditLog>) -> Self {
        self.audit = audit;
        self
    }

    /// At most `max` file transfers and listings in flight at once
    /// (`[limits] max_file_streams`).
    pub fn with_file_streams(mut self, max: usize) -> Self {
        self.file_streams = file_streams(max);
        self
    }

    /// A place for one more file transfer or listing, held until it ends;
    /// `ResourceExhausted` when all are taken.
    fn file_stream_place(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        let (places, max) = &self.file_streams;
        places.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "too many file transfers in flight on this node (at most {max}, [limits] max_file_streams); try again shortly"
            ))
        })
    }

    /// Counts work that outlives its RPC (a deploy the caller stopped
    /// watching) in `activity`, as the agent's activity layer counts the
    /// RPCs themselves, so that the monitor holds its drift checks for it.
    pub fn with_activity(mut self, activity: Activity) -> Self {
        self.activity = activity;
        self
    }

    /// The file tree of `service`, opened on a blocking thread; created
    /// first when `create`.
    async fn tree(&self, service: &str, create: bool) -> Result<Arc<ServiceTree>, Status> {
        let root = self.srv_root.clone();
        let service = service.to_string();
        let tree = tokio::task::spawn_blocking(move || {
            if create {
                ServiceTree::open_or_create(&root, &service)
            } else {
                ServiceTree::open(&root, &service)
            }
        })
        .await
        .map_err(|e| Status::internal(format!("file task failed: {e}")))?
        .map_err(AgentError::from)?;
        Ok(Arc::new(tree))
    }
}

/// `max` places for file transfers.
fn file_streams(max: usize) -> (Arc<tokio::sync::Semaphore>, usize) {
    let max = max.max(1);
    (Arc::new(tokio::sync::Semaphore::new(max)), max)
}

/// Runs a file system call of `tree` on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FilesError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("file task failed: {e}")))?
        .map_err(|e| AgentError::from(e).into())
}

fn remote_path(path: &str) -> Result<RemotePath, Status> {
    RemotePath::parse(path).map_err(|e| AgentError::from(e).into())
}

/// The wire form of the entry at `path`.
fn file_entry(path: &RemotePath, m: &Metadata) -> pb::FileEntry {
    pb::FileEntry {
        path: path.to_string(),
        kind: m.kind.as_str().to_string(),
        size: m.size,
        mode: m.mode,
        mtime: m
            .mtime
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        symlink_target: m
            .symlink_target
            .as_ref()
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// A 32-byte digest from the wire.
fn digest(bytes: &[u8]) -> Result<[u8; 32], Status> {
    bytes.try_into().map_err(|_| {
        Status::invalid_argument(format!("a SHA-256 is 32 bytes, not {}", bytes.len()))
    })
}

/// Entries per `ListFilesResponse` message.
const LIST_BATCH: usize = 512;

fn results(outcomes: Vec<ComponentOutcome>) -> Vec<pb::ComponentResult> {
    outcomes
        .into_iter()
        .map(|o| pb::ComponentResult {
            component: o.component,
            action: o.action.to_proto() as i32,
            container_id: o.container_id.unwrap_or_default(),
            error: o.error.unwrap_or_default(),
        })
        .collect()
}

fn action_response(
    service: String,
    outcomes: Vec<ComponentOutcome>,
) -> Response<pb::ServiceActionResponse> {
    Response::new(pb::ServiceActionResponse {
        service,
        results: results(outcomes),
        node: String::new(),
    })
}

/// Events per page when the request does not say
/// ([`crate::registry::MAX_EVENTS_PAGE`] at most).
pub const DEFAULT_EVENTS_PAGE: usize = 500;

/// Whether the caller of `request` may see secrets (environment values):
/// an admin. A readonly caller, or none at all (the guard turned off for a
/// benchmark), is shown them redacted.
fn sees_secrets<T>(request: &Request<T>) -> bool {
    request
        .extensions()
        .get::<Caller>()
        .is_some_and(|c| c.role == Some(Role::Admin))
}

impl AgentService {
    /// Refuses an action on `service` sent with a placement `generation`
    /// older than the one this node holds for it (generation fencing: a
    /// master that lost track, or a command overtaken by a move, cannot
    /// undo a newer placement). 0 is a direct call: nothing to check.
    fn fence(&self, service: &str, generation: u64) -> Result<(), Status> {
        if generation == 0 {
            return Ok(());
        }
        let held = self
            .reconciler
            .registry()
            .get_service(service)
            .map_err(AgentError::from)?
            .map_or(0, |s| s.generation);
        if held > generation {
            return Err(Status::failed_precondition(format!(
                "service {service:?} is held here at placement generation {held}, newer than the {generation} this command was sent with: refused"
            )));
        }
        Ok(())
    }

    /// Records the placement `generation` a master deployed `service` with
    /// (nothing for 0, a direct deploy).
    fn record_generation(&self, service: &str, generation: u64) -> Result<(), Status> {
        if generation > 0 {
            self.reconciler
                .registry()
                .set_generation(service, generation)
                .map_err(AgentError::from)?;
        }
        Ok(())
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn service_name(s: &str) -> Result<&str, Status> {
    if s.is_empty() {
        Err(Status::invalid_argument("a service name is required"))
    } else {
        Ok(s)
    }
}

/// Converts a runtime instance to its wire form.
pub(crate) fn instance(i: &InstanceInfo) -> pb::RuntimeInstance {
    pb::RuntimeInstance {
        node: String::new(),
        name: i.name.clone(),
        id: i.id.clone(),
        image: i.image.clone(),
        state: i.state.to_string(),
        status: i.status.clone(),
        runtime: i.runtime.to_string(),
        managed: i.is_managed(),
        service: i
            .label(mcp_runtime::labels::SERVICE)
            .unwrap_or_default()
            .to_string(),
        component: i
            .label(mcp_runtime::labels::COMPONENT)
            .unwrap_or_default()
            .to_string(),
        ports: i.ports.iter().map(ToString::to_string).collect(),
        created_at: i.created_at,
        drift: Vec::new(),
    }
}

fn component_status(c: ComponentStatus) -> pb::ComponentStatus {
    pb::ComponentStatus {
        node: String::new(),
        service: c.service,
        component: c.component,
        runtime: c.runtime,
        desired_active: c.desired_active,
        desired_image: c.desired_image,
        observed_state: c.observed_state,
        observed_image: c.observed_image,
        container_id: c.container_id,
        drift: c.drift,
        started_at: c.started_at,
        container_name: c.container_name,
        health: c.health,
        health_detail: c.health_detail,
    }
}

type LogsStream = Pin<Box<dyn Stream<Item = Result<pb::LogChunk, Status>> + Send>>;
type DeployStream = Pin<Box<dyn Stream<Item = Result<pb::DeployUpdate, Status>> + Send>>;

/// What a deploy request asks for: the validated definition, the one
/// component (if any), the pull policy and the wait.
fn deploy_request(
    req: pb::DeployRequest,
) -> Result<(ServiceDef, Option<String>, PullPolicy, DeployOptions), Status> {
    let spec = req
        .service
        .ok_or_else(|| Status::invalid_argument("deploy needs a service definition"))?;
    let def = ServiceDef::from_proto(&spec).map_err(AgentError::from)?;
    let longest = mcp_core::config::DEPLOY_TIMEOUT_BOUNDS.max;
    if req.timeout_ms / 1000 > longest {
        return Err(Status::invalid_argument(format!(
            "a deploy timeout of {} ms is longer than the longest allowed, {longest} seconds",
            req.timeout_ms
        )));
    }
    let options = DeployOptions {
        timeout: (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms)),
        no_wait: req.no_wait,
    };
    Ok((
        def,
        non_empty(&req.component).map(str::to_string),
        PullPolicy::from_proto(req.pull),
        options,
    ))
}
type PullFileStream = Pin<Box<dyn Stream<Item = Result<pb::PullFileResponse, Status>> + Send>>;
type ListFilesStream = Pin<Box<dyn Stream<Item = Result<pb::ListFilesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AgentServiceApi for AgentService {
    async fn deploy(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::DeployResponse>, Status> {
        let req = request.into_inner();
        let generation = req.generation;
        let (def, only, pull, options) = deploy_request(req)?;
        self.fence(&def.name, generation)?;
        let outcomes = self
            .reconciler
            .deploy_with(&def, only.as_deref(), pull, options, &|_| {})
            .await?;
        self.record_generation(&def.name, generation)?;
        Ok(Response::new(pb::DeployResponse {
            service: def.name,
            results: results(outcomes),
            node: String::new(),
            generation,
        }))
    }

    type DeployStreamStream = DeployStream;

    async fn deploy_stream(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<Self::DeployStreamStream>, Status> {
        let end = HandlerEnd::of(&request);
        let req = request.into_inner();
        let generation = req.generation;
        let (def, only, pull, options) = deploy_request(req)?;
        self.fence(&def.name, generation)?;
        let reconciler = self.reconciler.clone();
        // The deploy counts as activity until its end.
        let busy = self.activity.begin();
        Ok(Response::new(mcp_core::serve::deploy_updates(
            end,
            move |progress| async move {
                let _busy = busy;
                let report = move |p: crate::reconcile::DeployProgress| {
                    progress.send(pb::DeployProgress {
                        component: p.component,
                        phase: p.phase.to_string(),
                        detail: p.detail,
                    })
                };
                let outcomes = reconciler
                    .deploy_with(&def, only.as_deref(), pull, options, &report)
                    .await?;
                if generation > 0 {
                    reconciler
                        .registry()
                        .set_generation(&def.name, generation)
                        .map_err(AgentError::from)?;
                }
                Ok(pb::DeployResponse {
                    service: def.name.clone(),
                    results: results(outcomes),
                    node: String::new(),
                    generation,
                })
            },
        )))
    }

    async fn stop(
        &self,
        request: Request<pb::ServiceRequest>,
    ) -> Result<Response<pb::ServiceActionResponse>, Status> {
        let req = request.into_inner();
        self.fence(&req.service, req.generation)?;
        let outcomes = self
            .reconciler
            .stop(service_name(&req.service)?, non_empty(&req.component))
            .await?;
        Ok(action_response(req.service, outcomes))
    }

    async fn start(
        &self,
        request: Request<pb::ServiceRequest>,
    ) -> Result<Response<pb::ServiceActionResponse>, Status> {
        let req = request.into_inner();
        self.fence(&req.service, req.generation)?;
        let outcomes = self
            .reconciler
            .start(service_name(&req.service)?, non_empty(&req.component))
            .await?;
        Ok(action_response(req.service, outcomes))
    }

    async fn restart(
        &self,
        request: Request<pb::ServiceRequest>,
    ) -> Result<Response<pb::ServiceActionResponse>, Status> {
        let req = request.into_inner();
        self.fence(&req.service, req.generation)?;
        let outcomes = self
            .reconciler
            .restart(service_name(&req.service)?, non_empty(&req.component))
            .await?;
        Ok(action_response(req.service, outcomes))
    }

    async fn remove(
        &self,
        request: Request<pb::ServiceRequest>,
    ) -> Result<Response<pb::ServiceActionResponse>, Status> {
        let req = request.into_inner();
        if !req.component.is_empty() {
            return Err(Status::invalid_argument(
                "remove takes a whole service; drop the component from the definition and deploy instead",
            ));
        }
        self.fence(&req.service, req.generation)?;
        let outcomes = self.reconciler.remove(service_name(&req.service)?).await?;
        Ok(action_response(req.service, outcomes))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let req = request.into_inner();
        let report = self.reconciler.status(non_empty(&req.service)).await?;
        Ok(Response::new(pb::StatusResponse {
            node: self.node_name.clone(),
            components: report
                .components
                .into_iter()
                .map(component_status)
                .collect(),
            unmanaged: report
                .unmanaged
                .iter()
                .map(|u| pb::RuntimeInstance {
                    // Whom it belongs to, by the status's attribution.
                    service: u.service.clone(),
                    component: u.component.clone(),
                    ..instance(&u.instance)
                })
                .collect(),
        }))
    }

    async fn list(
        &self,
        _request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let registry = self.reconciler.registry();
        let mut services = Vec::new();
        for s in registry.list_services().map_err(AgentError::from)? {
            let components = registry
                .components(&s.name)
                .map_err(AgentError::from)?
                .into_iter()
                .map(|c| c.name)
                .collect();
            services.push(pb::ServiceSummary {
                node: String::new(),
                name: s.name,
                active: s.active,
                components,
                updated_at: s.updated_at,
            });
        }
        Ok(Response::new(pb::ListResponse { services }))
    }

    async fn ps(
        &self,
        _request: Request<pb::PsRequest>,
    ) -> Result<Response<pb::PsResponse>, Status> {
        let report = self.reconciler.ps().await?;
        Ok(Response::new(pb::PsResponse {
            node: self.node_name.clone(),
            instances: report
                .instances
                .into_iter()
                .map(|e| pb::RuntimeInstance {
                    drift: e.drift,
                    ..instance(&e.instance)
                })
                .collect(),
            missing: report.missing.into_iter().map(component_status).collect(),
        }))
    }

    type LogsStream = LogsStream;

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = request.into_inner();
        let options = LogOptions {
            follow: req.follow,
            // Unset or negative: all; 0: none.
            tail: req.tail.and_then(|t| u32::try_from(t).ok()),
        };
        let stream = self
            .reconciler
            .logs(
                service_name(&req.service)?,
                non_empty(&req.component),
                &options,
            )
            .await?;
        let out = stream.map(|(component, item)| match item {
            Ok(chunk) => Ok(pb::LogChunk {
                component,
                stream: chunk.stream.as_str().to_string(),
                data: chunk.data.to_vec(),
            }),
            Err(e) => Err(Status::from(AgentError::from(e))),
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn node_info(
        &self,
        _request: Request<pb::NodeInfoRequest>,
    ) -> Result<Response<pb::NodeInfoResponse>, Status> {
        let (available, version, error) = match self.reconciler.runtime().ping().await {
            Ok(v) => (true, v.version, String::new()),
            Err(e) => (false, String::new(), e.to_string()),
        };
        let vms = self.reconciler.runtime().vm_support().await;
        Ok(Response::new(pb::NodeInfoResponse {
            node_name: self.node_name.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            runtime_available: available,
            runtime_version: version,
            runtime_error: error,
            unikernels: vms.is_some(),
            qemu: vms.as_ref().map(|v| v.qemu.clone()).unwrap_or_default(),
            accel: vms.map(|v| v.accel).unwrap_or_default(),
            ops: crate::config::on_path("ops").is_some(),
            audit_file_failing: self.audit.is_failing(),
            audit_records_lost: self.audit.unwritten(),
            allowed_volume_roots: self
                .reconciler
                .volume_roots()
                .iter()
                .map(|r| r.display().to_string())
                .collect(),
        }))
    }

    async fn events(
        &self,
        request: Request<pb::EventsRequest>,
    ) -> Result<Response<pb::EventsResponse>, Status> {
        let req = request.into_inner();
        let since = match req.since.as_str() {
            "" => None,
            text => Some(
                chrono::DateTime::parse_from_rfc3339(text)
                    .map_err(|_| {
                        AgentError::InvalidArgument(format!(
                            "since = {text:?}: expected an RFC 3339 time such as 2026-11-23T18:00:00Z"
                        ))
                    })?
                    .with_timezone(&chrono::Utc),
            ),
        };
        let filter = EventFilter {
            service: (!req.service.is_empty()).then_some(req.service),
            since,
            limit: (req.limit > 0).then_some(req.limit as usize),
        };
        let cursor = match req.page_token.as_str() {
            "" => None,
            token => Some(EventCursor::decode(token).ok_or_else(|| {
                AgentError::InvalidArgument(format!(
                    "page_token {token:?} is not a next_page_token of Events"
                ))
            })?),
        };
        let size = match req.page_size {
            0 => DEFAULT_EVENTS_PAGE,
            n => n as usize,
        };
        let page = self.reconciler.events_page(filter, cursor, size).await?;
        let events = page
            .events
            .into_iter()
            .map(|e| pb::Event {
                id: e.id,
                time: e.ts,
                service: e.service,
                component: e.component.unwrap_or_default(),
                kind: e.kind,
                detail: e.detail,
                node: String::new(),
            })
            .collect();
        Ok(Response::new(pb::EventsResponse {
            events,
            next_page_token: page.next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn sync(
        &self,
        request: Request<pb::SyncRequest>,
    ) -> Result<Response<pb::SyncResponse>, Status> {
        let req = request.into_inner();
        let defs = req
            .services
            .iter()
            .map(ServiceDef::from_proto)
            .collect::<Result<Vec<_>, _>>()
            .map_err(AgentError::from)?;
        let pull = PullPolicy::from_proto(req.pull);
        if !req.dry_run {
            for (service, generation) in &req.generations {
                self.fence(service, *generation)?;
            }
        }
        let (plan, done) = self
            .reconciler
            .sync(&defs, req.prune, req.dry_run, pull)
            .await?;
        if !req.dry_run {
            for (service, generation) in &req.generations {
                self.record_generation(service, *generation)?;
            }
        }
        Ok(Response::new(pb::SyncResponse {
            plan: plan.services.into_iter().map(planned_service).collect(),
            dry_run: req.dry_run,
            results: done
                .into_iter()
                .map(|(service, outcomes)| pb::ServiceActionResponse {
                    service,
                    results: results(outcomes),
                    node: String::new(),
                })
                .collect(),
        }))
    }

    async fn adopt(
        &self,
        request: Request<pb::AdoptRequest>,
    ) -> Result<Response<pb::AdoptResponse>, Status> {
        let req = request.into_inner();
        let adoption = self.reconciler.adopt(service_name(&req.service)?).await?;
        Ok(Response::new(pb::AdoptResponse {
            definition: Some(adoption.definition.to_proto()),
            adopted: adoption.adopted,
            already_managed: adoption.already_managed,
        }))
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let secrets = sees_secrets(&request);
        let req = request.into_inner();
        let revisions = self
            .reconciler
            .history(
                service_name(&req.service)?,
                non_empty(&req.component),
                (req.limit > 0).then_some(req.limit as usize),
            )?
            .into_iter()
            .map(|r| pb::Revision {
                definition: Some(if secrets {
                    r.definition.to_proto()
                } else {
                    r.definition.redacted().to_proto()
                }),
                service: r.service,
                component: r.component,
                revision: r.revision,
                time: r.ts,
                image: r.image,
                outcome: r.outcome.as_str().to_string(),
                detail: r.detail,
                spec_hash: r.spec_hash,
            })
            .collect();
        Ok(Response::new(pb::HistoryResponse {
            service: req.service,
            revisions,
        }))
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::ServiceActionResponse>, Status> {
        let req = request.into_inner();
        let outcomes = self
            .reconciler
            .rollback(service_name(&req.service)?, non_empty(&req.component))
            .await?;
        Ok(action_response(req.service, outcomes))
    }

    async fn push_file(
        &self,
        request: Request<tonic::Streaming<pb::PushFileRequest>>,
    ) -> Result<Response<pb::PushFileResponse>, Status> {
        use pb::push_file_request::Part;
        let _place = self.file_stream_place()?;
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(pb::PushFileRequest {
                part: Some(Part::Header(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "a push starts with its header (service, path, mode, size)",
                ));
            }
        };
        let path = remote_path(&header.path)?;
        if header.size > self.files.max_file_size {
            return Err(AgentError::from(FilesError::TooLarge {
                path: path.to_string(),
                limit: self.files.max_file_size,
            })
            .into());
        }
        let tree = self.tree(service_name(&header.service)?, true).await?;
        let options = UploadOptions::new(header.mode, self.files.max_file_size)
            .with_expected_size(header.size);
        let mut writer = FileWriter::start(tree, path.clone(), options)
            .await
            .map_err(AgentError::from)?;
        let sha256 = loop {
            match stream.message().await? {
                Some(pb::PushFileRequest {
                    part: Some(Part::Data(chunk)),
                }) => writer.send(chunk).await.map_err(AgentError::from)?,
                Some(pb::PushFileRequest {
                    part: Some(Part::Sha256(d)),
                }) => break digest(&d)?,
                Some(_) => {
                    return Err(Status::invalid_argument(
                        "a push has one header, then data, then the SHA-256",
                    ));
                }
                // Dropping the writer abandons the upload.
                None => return Err(AgentError::from(FilesError::Interrupted).into()),
            }
        };
        let committed = writer.finish(sha256).await.map_err(AgentError::from)?;
        let tree = self.tree(&header.service, false).await?;
        let stat_path = path.clone();
        let metadata = blocking(move || tree.stat(&stat_path)).await?;
        Ok(Response::new(pb::PushFileResponse {
            entry: Some(file_entry(&path, &metadata)),
            sha256: committed.sha256.to_vec(),
        }))
    }

    type PullFileStream = PullFileStream;

    async fn pull_file(
        &self,
        request: Request<pb::FileRequest>,
    ) -> Result<Response<Self::PullFileStream>, Status> {
        use pb::pull_file_response::Part;
        let place = self.file_stream_place()?;
        let req = request.into_inner();
        let path = remote_path(&req.path)?;
        let tree = self.tree(service_name(&req.service)?, false).await?;
        let (metadata, rx) = read_file(tree, path.clone())
            .await
            .map_err(AgentError::from)?;
        let header = pb::PullFileResponse {
            part: Some(Part::Header(file_entry(&path, &metadata))),
        };
        let body = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |item| {
            // The place is given back when the stream ends.
            let _held = &place;
            item
        });
        let body = body.map(|item| match item {
            Ok(ReadItem::Data(chunk)) => Ok(pb::PullFileResponse {
                part: Some(Part::Data(chunk)),
            }),
            Ok(ReadItem::Done(sha256)) => Ok(pb::PullFileResponse {
                part: Some(Part::Sha256(sha256.to_vec())),
            }),
            Err(e) => Err(Status::from(AgentError::from(e))),
        });
        Ok(Response::new(Box::pin(
            futures::stream::once(async { Ok(header) }).chain(body),
        )))
    }

    type ListFilesStream = ListFilesStream;

    async fn list_files(
        &self,
        request: Request<pb::ListFilesRequest>,
    ) -> Result<Response<Self::ListFilesStream>, Status> {
        let place = self.file_stream_place()?;
        let req = request.into_inner();
        let path = remote_path(&req.path)?;
        let tree = self.tree(service_name(&req.service)?, false).await?;
        let batches = list_entries(tree, path, req.recursive, LIST_BATCH);
        let out = tokio_stream::wrappers::ReceiverStream::new(batches).map(move |batch| {
            let _held = &place;
            batch
                .map(|entries| pb::ListFilesResponse {
                    entries: entries.iter().map(|(p, m)| file_entry(p, m)).collect(),
                })
                .map_err(|e| Status::from(AgentError::from(e)))
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn stat_file(
        &self,
        request: Request<pb::FileRequest>,
    ) -> Result<Response<pb::FileEntry>, Status> {
        let req = request.into_inner();
        let path = remote_path(&req.path)?;
        let tree = self.tree(service_name(&req.service)?, false).await?;
        let p = path.clone();
        let metadata = blocking(move || tree.stat(&p)).await?;
        Ok(Response::new(file_entry(&path, &metadata)))
    }

    async fn remove_file(
        &self,
        request: Request<pb::RemoveFileRequest>,
    ) -> Result<Response<pb::RemoveFileResponse>, Status> {
        let req = request.into_inner();
        let path = remote_path(&req.path)?;
        let tree = self.tree(service_name(&req.service)?, false).await?;
        let p = path.clone();
        blocking(move || tree.remove(&p, req.recursive)).await?;
        Ok(Response::new(pb::RemoveFileResponse {
            path: path.to_string(),
        }))
    }
}

fn field_changes(fields: Vec<plan::FieldChange>) -> Vec<pb::FieldChange> {
    fields
        .into_iter()
        .map(|f| pb::FieldChange {
            field: f.field,
            from: f.from,
            to: f.to,
        })
        .collect()
}

fn planned_service(s: plan::ServicePlan) -> pb::PlannedService {
    pb::PlannedService {
        service: s.service,
        action: s.action.as_str().to_string(),
        node: String::new(),
        placement: String::new(),
        fields: field_changes(s.fields),
        components: s
            .components
            .into_iter()
            .map(|c| {
                let change = c.change.as_str().to_string();
                let (fields, reason, recreate) = match c.change {
                    plan::Change::Update { fields, recreate } => {
                        (field_changes(fields), String::new(), recreate)
                    }
                    plan::Change::Create { reason } => {
                        (Vec::new(), reason.as_str().to_string(), false)
                    }
                    plan::Change::Conflict { reason } => (Vec::new(), reason, false),
                    _ => (Vec::new(), String::new(), false),
                };
                pb::PlannedComponent {
                    component: c.component,
                    change,
                    fields,
                    reason,
                    recreate,
                }
            })
            .collect(),
    }
}
