//! Which accepted connections a server keeps ([`ConnectionLimits`]), and
//! for how long it counts them: for the connection's whole life, not only
//! its handshake ([`Admitted`] holds the place until it is dropped). A
//! connection with no call open for the idle timeout is closed
//! ([`CountStreams`] counts the calls of each connection).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tonic::body::Body;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

/// How often a refusal is logged at warn level at most (the rest at debug).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Connections held at once, from everyone and from one IP address.
/// Cloned, it counts the same connections.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    inner: Arc<Inner>,
    idle_timeout: Option<Duration>,
}

#[derive(Debug)]
struct Inner {
    max_total: usize,
    max_per_peer: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
    last_warning: Option<Instant>,
    /// The calls of each open connection, by its peer's address and port.
    open: HashMap<SocketAddr, Arc<Calls>>,
}

/// How many calls a connection has open, and since when it has none.
#[derive(Debug)]
struct Calls {
    open: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl ConnectionLimits {
    /// At most `max_total` connections, at most `max_per_peer` of them
    /// from one IP address (each at least 1).
    pub fn new(max_total: usize, max_per_peer: usize) -> ConnectionLimits {
        ConnectionLimits {
            inner: Arc::new(Inner {
                max_total: max_total.max(1),
                max_per_peer: max_per_peer.max(1),
                state: Mutex::new(State::default()),
            }),
            idle_timeout: None,
        }
    }

    /// These limits, closing a connection that has had no call open for
    /// `timeout` (calls counted by [`CountStreams`]).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> ConnectionLimits {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Counts a call of the connection from `peer` until the returned
    /// handle is dropped; `None` for a connection these limits do not hold.
    pub fn call_started(&self, peer: SocketAddr) -> Option<OpenCall> {
        let state = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let calls = state.open.get(&peer)?.clone();
        calls.open.fetch_add(1, Ordering::SeqCst);
        Some(OpenCall(calls))
    }

    /// No limit worth the name: for tests and tools.
    pub fn unlimited() -> ConnectionLimits {
        ConnectionLimits::new(usize::MAX, usize::MAX)
    }

    /// A place for a connection from `addr`, or `None` (logged) when all
    /// places, or all of that address's, are taken.
    pub fn admit(&self, addr: SocketAddr) -> Option<Place> {
        let peer = addr.ip();
        let mut state = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let mine = state.per_peer.get(&peer).copied().unwrap_or(0);
        let refused = if state.total >= self.inner.max_total {
            Some(format!("{} connections are open", state.total))
        } else if mine >= self.inner.max_per_peer {
            Some(format!("{mine} connections from this address are open"))
        } else {
            None
        };
        if let Some(why) = refused {
            let now = Instant::now();
            if state
                .last_warning
                .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
            {
                state.last_warning = Some(now);
                tracing::warn!(peer = %peer, "connection refused: {why} ([limits]); further refusals logged at debug level for 10 s");
            } else {
                tracing::debug!(peer = %peer, "connection refused: {why}");
            }
            return None;
        }
        state.total += 1;
        *state.per_peer.entry(peer).or_insert(0) += 1;
        let calls = Arc::new(Calls {
            open: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        });
        state.open.insert(addr, calls.clone());
        Some(Place {
            limits: self.clone(),
            addr,
            calls,
        })
    }

    /// Connections held now.
    pub fn open(&self) -> usize {
        self.inner.state.lock().map(|s| s.total).unwrap_or_default()
    }
}

/// One connection's place; given back when dropped.
#[derive(Debug)]
pub struct Place {
    limits: ConnectionLimits,
    addr: SocketAddr,
    calls: Arc<Calls>,
}

/// One call counted against its connection's idleness; the connection is
/// idle again from when the last is dropped.
#[derive(Debug)]
pub struct OpenCall(Arc<Calls>);

impl Drop for OpenCall {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut state = self
            .limits
            .inner
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        state.total = state.total.saturating_sub(1);
        let peer = self.addr.ip();
        if let Some(n) = state.per_peer.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                state.per_peer.remove(&peer);
            }
        }
        state.open.remove(&self.addr);
    }
}

/// A connection and the place it holds, for as long as it is open; with
/// an idle timeout, it reads as ended once it has had no call open for
/// that long (the server then closes it).
#[derive(Debug)]
pub struct Admitted<T> {
    io: T,
    place: Place,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
}

impl<T> Admitted<T> {
    /// `io`, holding `place` until dropped.
    pub fn new(io: T, place: Place) -> Admitted<T> {
        let idle = place
            .limits
            .idle_timeout
            .map(|t| (t, Box::pin(tokio::time::sleep(t))));
        Admitted { io, place, idle }
    }

    /// Whether the connection has been idle for its timeout; otherwise
    /// sets the timer for the next moment it could be.
    fn idle_out(&mut self, cx: &mut Context<'_>) -> bool {
        let Some((timeout, sleep)) = self.idle.as_mut() else {
            return false;
        };
        while sleep.as_mut().poll(cx).is_ready() {
            let calls = &self.place.calls;
            let now = tokio::time::Instant::now();
            let next = if calls.open.load(Ordering::SeqCst) > 0 {
                now + *timeout
            } else {
                let since = *calls.idle_since.lock().unwrap_or_else(|p| p.into_inner());
                let idle_for = since.elapsed();
                if idle_for >= *timeout {
                    return true;
                }
                now + (*timeout - idle_for)
            };
            sleep.as_mut().reset(next);
        }
        false
    }

    /// The connection.
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Admitted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.idle_out(cx) {
            tracing::debug!(peer = %self.place.addr, "closing an idle connection");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no call for the idle timeout",
            )));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Admitted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The connection's own information (peer address, TLS details), as
/// tonic puts it in each request.
impl<T: Connected> Connected for Admitted<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// The peer's address of a request that came over a connection from
/// [`super::tls_incoming`] or [`super::plain_incoming`].
pub fn peer_of<B>(req: &http::Request<B>) -> Option<SocketAddr> {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

/// A tower layer counting each call against its connection's idleness
/// (see [`ConnectionLimits::with_idle_timeout`]), from its arrival to the
/// end of its response.
#[derive(Debug, Clone)]
pub struct CountStreams {
    limits: ConnectionLimits,
}

impl CountStreams {
    /// Counts calls for `limits`.
    pub fn new(limits: ConnectionLimits) -> CountStreams {
        CountStreams { limits }
    }
}

impl<S> tower_layer::Layer<S> for CountStreams {
    type Service = CountStreamsService<S>;
    fn layer(&self, inner: S) -> CountStreamsService<S> {
        CountStreamsService {
            inner,
            limits: self.limits.clone(),
        }
    }
}

/// The service [`CountStreams`] makes.
#[derive(Debug, Clone)]
pub struct CountStreamsService<S> {
    inner: S,
    limits: ConnectionLimits,
}

impl<S> tower_service::Service<http::Request<Body>> for CountStreamsService<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let open = peer_of(&req).and_then(|p| self.limits.call_started(p));
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(match open {
                // The call stays counted until its response body is dropped.
                Some(open) => response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _held = &open;
                        frame
                    }))
                }),
                None => response,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_peer_and_in_all_and_given_back() {
        let limits = ConnectionLimits::new(3, 2);
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let a1 = limits.admit(addr("10.0.0.1:1")).expect("a1");
        let a2 = limits.admit(addr("10.0.0.1:2")).expect("a2");
        assert!(limits.admit(addr("10.0.0.1:3")).is_none(), "a third from a");
        let b1 = limits.admit(addr("10.0.0.2:1")).expect("b1");
        assert!(
            limits.admit(addr("10.0.0.2:2")).is_none(),
            "a fourth in all"
        );
        assert_eq!(limits.open(), 3);
        drop(a1);
        let a3 = limits.admit(addr("10.0.0.1:4")).expect("a's place back");
        drop((a2, a3, b1));
        assert_eq!(limits.open(), 0);
        let state = limits.inner.state.lock().unwrap();
        assert!(state.per_peer.is_empty() && state.open.is_empty());
    }
}
