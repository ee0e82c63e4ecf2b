//! Whether the agent itself is changing the node: a count of state-changing
//! RPCs in flight, kept by a tower layer around the gRPC routes, which the
//! monitor consults so that the moments in which a deploy, stop, start,
//! restart, removal or sync has a container stopped or absent are not taken
//! for drift. The same layer runs each such RPC's handler to its end in a
//! task of its own, so that a caller going away never cuts a change
//! halfway.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::watch;

use mcp_core::auth::{Role, policy};

/// The gRPC path prefix of the agent's own API.
const AGENT_API: &str = "/mcp.v1.AgentService/";

/// A shared count of operations in progress. Cheap to clone; clones share
/// the count.
#[derive(Debug, Clone)]
pub struct Activity {
    count: Arc<watch::Sender<usize>>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

/// Held while one operation runs; the count drops when it is dropped.
#[derive(Debug)]
pub struct ActivityGuard {
    count: Arc<watch::Sender<usize>>,
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.count.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Activity {
    /// A count at zero.
    pub fn new() -> Activity {
        Activity {
            count: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Counts an operation until the guard is dropped.
    pub fn begin(&self) -> ActivityGuard {
        self.count.send_modify(|n| *n += 1);
        ActivityGuard {
            count: self.count.clone(),
        }
    }

    /// How many operations are in progress.
    pub fn in_progress(&self) -> usize {
        *self.count.borrow()
    }

    /// A receiver told of every change of the count.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// Waits until no operation is in progress.
    pub async fn idle(&self) {
        let mut count = self.count.subscribe();
        // The sender lives in `self`: the wait ends only at zero.
        let _ = count.wait_for(|n| *n == 0).await;
    }

    /// A tower layer that counts the agent's state-changing RPCs (those
    /// [`policy`] reserves to admins) while their handlers run, and runs
    /// those handlers to their end in tasks of their own.
    pub fn layer(&self) -> ActivityLayer {
        ActivityLayer {
            activity: self.clone(),
        }
    }
}

/// Admin RPCs that change files under the service directories only, never
/// what the runtime runs.
const FILES_ONLY: &[&str] = &[
    "/mcp.v1.AgentService/PushFile",
    "/mcp.v1.AgentService/RemoveFile",
];

/// Whether an RPC to `path` changes what the node runs.
pub fn changes_state(path: &str) -> bool {
    path.starts_with(AGENT_API)
        && policy::required_role(path) == Role::Admin
        && !FILES_ONLY.contains(&path)
}

/// See [`Activity::layer`].
#[derive(Debug, Clone)]
pub struct ActivityLayer {
    activity: Activity,
}

impl<S> tower_layer::Layer<S> for ActivityLayer {
    type Service = ActivityService<S>;
    fn layer(&self, inner: S) -> ActivityService<S> {
        ActivityService {
            inner,
            activity: self.activity.clone(),
        }
    }
}

/// The service [`ActivityLayer`] makes.
#[derive(Debug, Clone)]
pub struct ActivityService<S> {
    inner: S,
    activity: Activity,
}

impl<S, B> tower_service::Service<http::Request<B>> for ActivityService<S>
where
    S: tower_service::Service<http::Request<B>>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if !changes_state(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        let guard = self.activity.begin();
        let fut = self.inner.call(req);
        // A caller that goes away (its RPC reset: hyper drops the future
        // this returns) stops waiting for the answer, never the change
        // halfway: the handler runs in a task of its own.
        let handler = tokio::spawn(async move {
            let out = fut.await;
            drop(guard);
            out
        });
        Box::pin(async move {
            match handler.await {
                Ok(out) => out,
                Err(err) => match err.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    // Aborted: only as the runtime shuts down.
                    Err(_) => std::future::pending().await,
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_changing_methods() {
        for m in ["Deploy", "Stop", "Start", "Restart", "Remove", "Sync"] {
            assert!(changes_state(&format!("{AGENT_API}{m}")), "{m}");
        }
        for m in ["Status", "List", "Ps", "Logs", "NodeInfo", "Events"] {
            assert!(!changes_state(&format!("{AGENT_API}{m}")), "{m}");
        }
        assert!(!changes_state("/grpc.health.v1.Health/Check"));
        assert!(!changes_state(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
    }

    #[tokio::test]
    async fn guards_count_and_notify() {
        let a = Activity::new();
        let mut rx = a.subscribe();
        assert_eq!(a.in_progress(), 0);
        let g1 = a.begin();
        let g2 = a.clone().begin();
        assert_eq!(a.in_progress(), 2);
        rx.changed().await.unwrap();
        drop(g1);
        drop(g2);
        assert_eq!(a.in_progress(), 0);
        assert_eq!(*rx.borrow_and_update(), 0);
    }

    #[tokio::test]
    async fn the_layer_counts_while_the_handler_runs() {
        use tower_layer::Layer;
        use tower_service::Service;
        let a = Activity::new();
        let seen = a.clone();
        let inner = tower::service_fn(move |_req: http::Request<()>| {
            let n = seen.in_progress();
            async move { Ok::<usize, std::convert::Infallible>(n) }
        });
        let mut svc = a.layer().layer(inner);
        let req = |path: &str| http::Request::builder().uri(path).body(()).unwrap();
        assert_eq!(svc.call(req("/mcp.v1.AgentService/Deploy")).await, Ok(1));
        assert_eq!(svc.call(req("/mcp.v1.AgentService/Status")).await, Ok(0));
        assert_eq!(a.in_progress(), 0);
    }
}
