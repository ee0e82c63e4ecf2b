//! Which accepted connections a server keeps ([`ConnectionLimits`]), and
//! for how long it counts them: for the connection's whole life, not only
//! its handshake ([`Admitted`] holds the place until it is dropped).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// How often a refusal is logged at warn level at most (the rest at debug).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Connections held at once, from everyone and from one IP address.
/// Cloned, it counts the same connections.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    inner: Arc<Inner>,
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
        }
    }

    /// No limit worth the name: for tests and tools.
    pub fn unlimited() -> ConnectionLimits {
        ConnectionLimits::new(usize::MAX, usize::MAX)
    }

    /// A place for a connection from `peer`, or `None` (logged) when all
    /// places, or all of that peer's, are taken.
    pub fn admit(&self, peer: IpAddr) -> Option<Place> {
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
        Some(Place {
            limits: self.clone(),
            peer,
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
    peer: IpAddr,
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
        if let Some(n) = state.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                state.per_peer.remove(&self.peer);
            }
        }
    }
}

/// A connection and the place it holds, for as long as it is open.
#[derive(Debug)]
pub struct Admitted<T> {
    io: T,
    _place: Place,
}

impl<T> Admitted<T> {
    /// `io`, holding `place` until dropped.
    pub fn new(io: T, place: Place) -> Admitted<T> {
        Admitted { io, _place: place }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_peer_and_in_all_and_given_back() {
        let limits = ConnectionLimits::new(3, 2);
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = limits.admit(a).expect("a1");
        let a2 = limits.admit(a).expect("a2");
        assert!(limits.admit(a).is_none(), "a third from a");
        let b1 = limits.admit(b).expect("b1");
        assert!(limits.admit(b).is_none(), "a fourth in all");
        assert_eq!(limits.open(), 3);
        drop(a1);
        let a3 = limits.admit(a).expect("a's place back");
        drop((a2, a3, b1));
        assert_eq!(limits.open(), 0);
        assert!(limits.inner.state.lock().unwrap().per_peer.is_empty());
    }
}
