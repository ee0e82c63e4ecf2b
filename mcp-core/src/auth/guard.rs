//! The interceptor every RPC passes: authenticates the bearer token, checks
//! the caller's role against [`crate::auth::policy`], and writes one audit
//! record per RPC, accepted or rejected, once its outcome is known.
//!
//! It is a tower layer around all of the server's routes, so the agent's own
//! API, health checking and reflection are covered alike, and nothing reaches
//! a handler unauthenticated. The authenticated [`Caller`] is put in the
//! request's extensions for handlers that want it, and so is a
//! [`HandlerEnd`], through which a streaming handler records that it
//! finished.
//!
//! A peer whose tokens keep failing (unknown, expired) spends its failure
//! budget ([`super::budget`]); until it refills, its tokens are checked
//! only locally, so a flood of made-up tokens never reaches MCIAS.
//!
//! A call that stays open has its token validated again as it runs
//! ([`super::recheck`]): once the token is removed, revoked or expired, its
//! response ends with `Unauthenticated` (and its request stream fails so),
//! and the audit record says why.
//!
//! An RPC's outcome is the gRPC status its response ends with. A caller that
//! goes away before that is recorded as `Cancelled`, except when the handler
//! had already finished: a caller may close a stream as soon as it has read
//! the final message (a deploy's outcome), before the trailers are sent, and
//! that RPC did what it was asked.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use http_body::Frame;
use tonic::body::Body;

use super::audit::{AuditLog, AuditRecord};
use super::budget::FailureBudget;
use super::recheck::{Credential, Recheck, Revoked};
use crate::auth::{AuthError, Caller, TokenValidator, bearer_token, policy};

/// The layer: wraps the server's routes in a [`GuardService`].
#[derive(Clone)]
pub struct GuardLayer {
    auth: Arc<dyn TokenValidator>,
    audit: Arc<AuditLog>,
    budget: Arc<FailureBudget>,
    audit_required: bool,
}

impl GuardLayer {
    /// A layer authenticating with `auth` and recording to `audit`.
    pub fn new(auth: Arc<dyn TokenValidator>, audit: Arc<AuditLog>) -> GuardLayer {
        GuardLayer {
            auth,
            audit,
            budget: Arc::default(),
            audit_required: false,
        }
    }

    /// With `required`, state-changing RPCs (those needing the admin role)
    /// are refused with `Unavailable` while the audit file cannot be
    /// written (`[auth] audit_required`); queries are served either way.
    pub fn audit_required(mut self, required: bool) -> GuardLayer {
        self.audit_required = required;
        self
    }
}

impl<S> tower_layer::Layer<S> for GuardLayer {
    type Service = GuardService<S>;
    fn layer(&self, inner: S) -> GuardService<S> {
        GuardService {
            inner,
            auth: self.auth.clone(),
            audit: self.audit.clone(),
            budget: self.budget.clone(),
            audit_required: self.audit_required,
        }
    }
}

/// The service [`GuardLayer`] makes.
#[derive(Clone)]
pub struct GuardService<S> {
    inner: S,
    auth: Arc<dyn TokenValidator>,
    audit: Arc<AuditLog>,
    /// Failed validations per peer ([`super::budget`]).
    budget: Arc<FailureBudget>,
    /// Refuse changes while the audit file cannot be written.
    audit_required: bool,
}

/// Where a handler records that it finished and how, before it sends its
/// last message; found in every request's extensions. Should the caller
/// close the stream after that message but before the status trailers, the
/// audit record says what the handler recorded rather than `Cancelled`.
#[derive(Debug, Clone, Default)]
pub struct HandlerEnd(Arc<OnceLock<tonic::Code>>);

impl HandlerEnd {
    /// The handle of `request`, when it passed the guard.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<HandlerEnd> {
        request.extensions().get::<HandlerEnd>().cloned()
    }

    /// Records that the handler finished with `code` (the first call counts).
    pub fn finish(&self, code: tonic::Code) {
        let _ = self.0.set(code);
    }

    fn code(&self) -> Option<tonic::Code> {
        self.0.get().copied()
    }
}

/// A refused request: the status to answer and, when the token was valid
/// but the role too weak, who was refused.
struct Rejection {
    status: tonic::Status,
    caller: Option<Caller>,
    /// Whether a token was checked and found wanting (unknown, expired):
    /// what spends a peer's failure budget.
    failed_validation: bool,
}

impl From<AuthError> for Rejection {
    fn from(e: AuthError) -> Rejection {
        Rejection {
            status: tonic::Status::new(e.code(), e.to_string()),
            caller: None,
            failed_validation: matches!(e, AuthError::Invalid | AuthError::Expired),
        }
    }
}

/// Authenticates and authorises one request for `path`: the caller and the
/// token it presented. With `locally`, the token is checked only against
/// local validators (the peer spent its failure budget).
async fn authorize(
    validator: &Arc<dyn TokenValidator>,
    path: &str,
    headers: &http::HeaderMap,
    locally: bool,
) -> Result<(Caller, Arc<str>), Rejection> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let first = values.next();
    let token = if values.next().is_some() {
        Err(AuthError::Malformed("more than one authorization header"))
    } else {
        bearer_token(first.map(|v| v.as_bytes()))
    };
    let token = token?;
    let caller = if locally {
        validator.validate_locally(token).await.map_err(|e| {
            let mut r = Rejection::from(e);
            r.status = tonic::Status::new(
                r.status.code(),
                format!(
                    "{} (too many failed authentications from this address: only this node's own tokens are checked for a while)",
                    r.status.message()
                ),
            );
            r
        })?
    } else {
        validator.validate(token).await?
    };
    let needed = policy::required_role(path);
    let message = match caller.role {
        Some(role) if role.permits(needed) => return Ok((caller, Arc::from(token))),
        Some(role) => format!(
            "{} ({role}) may not call {}: it needs the {needed} role",
            caller.name,
            policy::method_name(path)
        ),
        None => format!("{} holds no MCP role (admin or readonly)", caller.name),
    };
    Err(Rejection {
        status: tonic::Status::permission_denied(message),
        caller: Some(caller),
        failed_validation: false,
    })
}

impl<S> tower_service::Service<http::Request<Body>> for GuardService<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    // Refusals are gRPC answers, not errors: only the inner service's
    // errors pass through.
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<http::Response<Body>, S::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The clone is not ready; keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        let audit = self.audit.clone();
        let budget = self.budget.clone();
        let audit_required = self.audit_required;
        Box::pin(async move {
            let started = Instant::now();
            let path = req.uri().path().to_string();
            let mut record = AuditRecord::new(&path, SystemTime::now());
            record.peer = crate::tls::admit::peer_of(&req);
            let from = record.peer.map(|p| p.ip());
            let locally = from.is_some_and(|ip| !budget.allows(ip));
            let authorized = authorize(&auth, &path, req.headers(), locally)
                .await
                .and_then(|ok| {
                    if audit_required
                        && audit.is_failing()
                        && policy::required_role(&path) == super::Role::Admin
                    {
                        Err(Rejection {
                            status: tonic::Status::unavailable(
                                "the audit file cannot be written, and [auth] audit_required refuses changes until it can",
                            ),
                            caller: Some(ok.0),
                            failed_validation: false,
                        })
                    } else {
                        Ok(ok)
                    }
                });
            match authorized {
                Err(Rejection {
                    status,
                    caller,
                    failed_validation,
                }) => {
                    if failed_validation && let Some(ip) = from {
                        budget.spend(ip);
                    }
                    if let Some(caller) = caller {
                        record.caller = caller.name;
                        record.auth = caller.source;
                    }
                    record.reason = Some(status.message().to_string());
                    record.finish(status.code(), started.elapsed());
                    audit.record(record);
                    drain(req.into_body()).await;
                    Ok(status.into_http())
                }
                Ok((caller, token)) => {
                    record.caller = caller.name.clone();
                    record.auth = caller.source;
                    let revoked = Revoked::default();
                    let credential = Credential {
                        validator: auth,
                        token,
                        path: Arc::from(path.as_str()),
                        expires_at: caller.expires_at,
                        revoked: revoked.clone(),
                    };
                    let recheck = Recheck::new(credential.clone());
                    let mut req = req.map(|inner| Body::new(RecheckedRequest { inner, recheck }));
                    req.extensions_mut().insert(caller);
                    let end = HandlerEnd::default();
                    req.extensions_mut().insert(end.clone());
                    // Written as cancelled should the caller go away before
                    // the handler answers (the handler is dropped then) or
                    // before a streaming handler finished.
                    let pending = Unwritten {
                        pending: Some(Pending {
                            record,
                            started,
                            audit,
                        }),
                        end,
                        revoked,
                    };
                    let response = inner.call(req).await?;
                    Ok(audit_response(response, pending, Recheck::new(credential)))
                }
            }
        })
    }
}

/// Most of a refused request's body read before the refusal is sent.
const DRAIN_LIMIT: usize = 64 * 1024;
/// Longest wait for a refused request's body.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_millis(200);

/// Reads what a refused request is still sending, within [`DRAIN_LIMIT`]
/// and [`DRAIN_TIME`]. A request answered before its body arrived makes
/// HTTP/2 reset the stream when the body comes, and the server counts such
/// resets against the connection (the "MadeYouReset" limit): a client whose
/// calls are refused must not lose its connection for it.
async fn drain(mut body: Body) {
    use http_body_util::BodyExt as _;
    let read = async {
        let mut seen = 0;
        while seen < DRAIN_LIMIT {
            match body.frame().await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, bytes::Bytes::len),
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}

fn status_of(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
}

/// Records at once for a trailers-only response (the status is in the
/// headers); otherwise wraps the body so the record is written when the
/// trailers pass, the stream fails, or the client goes away.
fn audit_response(
    response: http::Response<Body>,
    mut pending: Unwritten,
    recheck: Recheck,
) -> http::Response<Body> {
    if let Some(code) = status_of(response.headers()) {
        pending.finish(code);
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = AuditBody {
        inner: Some(body),
        pending,
        recheck,
    };
    http::Response::from_parts(parts, Body::new(body))
}

struct Pending {
    record: AuditRecord,
    started: Instant,
    audit: Arc<AuditLog>,
}

impl Pending {
    fn finish(mut self, code: tonic::Code, revoked: &Revoked) {
        if let Some(reason) = revoked.reason() {
            self.record.reason = Some(reason.to_string());
        }
        self.record.finish(code, self.started.elapsed());
        self.audit.record(self.record);
    }
}

/// An audit record not yet written: written once, with the outcome given
/// to `finish`; when dropped unwritten (the client went away before the
/// response ended), with the outcome the handler recorded in its
/// [`HandlerEnd`], or as `Cancelled` when it had not finished.
struct Unwritten {
    pending: Option<Pending>,
    end: HandlerEnd,
    /// Why the call's token stopped being good enough, if it did.
    revoked: Revoked,
}

impl Unwritten {
    fn finish(&mut self, code: tonic::Code) {
        if let Some(p) = self.pending.take() {
            p.finish(code, &self.revoked);
        }
    }
}

impl Drop for Unwritten {
    fn drop(&mut self) {
        let code = self.end.code().unwrap_or(tonic::Code::Cancelled);
        self.finish(code);
    }
}

/// A response body that writes the audit record when the RPC ends, and
/// ends the RPC with `Unauthenticated` once its token no longer validates
/// (the handler's stream, dropped, ends with it).
struct AuditBody {
    /// `None` once the RPC was ended for its token.
    inner: Option<Body>,
    pending: Unwritten,
    recheck: Recheck,
}

/// The trailers that end an RPC whose token stopped validating.
fn revoked_trailers(reason: &str) -> http::HeaderMap {
    let status = tonic::Status::unauthenticated(reason.to_string());
    let mut trailers = http::HeaderMap::new();
    // Only the status's own headers (grpc-status, grpc-message), which
    // cannot fail for an ASCII message.
    let _ = status.add_header(&mut trailers);
    trailers
}

/// A request body that fails with `Unauthenticated` once the call's token
/// no longer validates (a long upload ends with its token).
struct RecheckedRequest {
    inner: Body,
    recheck: Recheck,
}

impl http_body::Body for RecheckedRequest {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, tonic::Status>>> {
        let this = &mut *self;
        if let Poll::Ready(reason) = this.recheck.poll_revoked(cx) {
            return Poll::Ready(Some(Err(tonic::Status::unauthenticated(reason))));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_pending() {
            this.recheck.arm(cx);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl http_body::Body for AuditBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, tonic::Status>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(reason) = this.recheck.poll_revoked(cx) {
            this.inner = None;
            this.pending.finish(tonic::Code::Unauthenticated);
            return Poll::Ready(Some(Ok(Frame::trailers(revoked_trailers(&reason)))));
        }
        let polled = Pin::new(inner).poll_frame(cx);
        if polled.is_pending() {
            this.recheck.arm(cx);
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.pending
                        .finish(status_of(trailers).unwrap_or(tonic::Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(status))) => this.pending.finish(status.code()),
            Poll::Ready(None) => this.pending.finish(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.as_ref().map_or_else(
            || http_body::SizeHint::with_exact(0),
            http_body::Body::size_hint,
        )
    }
}
