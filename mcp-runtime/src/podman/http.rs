//! A small HTTP/1.1 client over a unix socket, just enough for podman's REST API.
//!
//! Every request opens its own connection: there is no pool to go stale when
//! the podman service restarts, and a socket that appears later is picked up
//! by the next call. The hyper connection task of a request is aborted as soon
//! as the response (or the body stream made from it) is dropped, so an
//! abandoned stream never leaves a task behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

use crate::{RuntimeError, RuntimeResult};

/// A complete response: status and whole body.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// The client: where the socket is. Cheap to clone; holds no connection.
#[derive(Debug, Clone)]
pub struct UnixClient {
    socket: PathBuf,
}

impl UnixClient {
    /// A client for the socket at `socket` (which need not exist yet).
    pub fn new(socket: PathBuf) -> UnixClient {
        UnixClient { socket }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The error for "cannot talk to the socket", with `reason`.
    pub fn unavailable(&self, reason: impl Into<String>) -> RuntimeError {
        unavailable(&self.socket, reason)
    }

    /// Opens a new connection to the socket.
    pub async fn connect(&self) -> RuntimeResult<Connection> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.unavailable(format!("cannot connect: {e}")))?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unavailable(format!("HTTP handshake failed: {e}")))?;
        let socket = self.socket.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(socket = %socket.display(), error = %e, "podman connection ended with an error");
            }
        });
        Ok(Connection {
            sender,
            task: AbortOnDrop(task),
            socket: self.socket.clone(),
        })
    }

    /// Sends one request and reads the whole answer, giving up after `timeout`.
    ///
    /// `body`, when given, is sent as `application/json`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> RuntimeResult<Response> {
        let exchange = async {
            let response = self.connect().await?.send(method, path, body).await?;
            let status = response.status;
            let headers = response.headers.clone();
            let body = response.collect().await?;
            Ok(Response {
                status,
                headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(self.unavailable(format!(
                "no answer to {path} within {} s",
                timeout.as_secs_f64()
            ))),
        }
    }

    /// Sends one request and returns as soon as the response head arrives;
    /// the body is read through [`StreamingResponse`].
    pub async fn stream(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> RuntimeResult<StreamingResponse> {
        self.connect().await?.send(method, path, body).await
    }
}

/// One open connection, good for one request.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    task: AbortOnDrop,
    socket: PathBuf,
}

impl Connection {
    /// Sends the request and waits for the response head.
    pub async fn send(
        mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> RuntimeResult<StreamingResponse> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "d")
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| RuntimeError::Invalid(format!("cannot build request for {path}: {e}")))?;
        self.sender
            .ready()
            .await
            .map_err(|e| hyper_error(&self.socket, e))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| hyper_error(&self.socket, e))?;
        let (parts, body) = response.into_parts();
        Ok(StreamingResponse {
            status: parts.status,
            headers: parts.headers,
            body,
            task: self.task,
            socket: self.socket,
        })
    }
}

/// A response whose body has not been read yet. Dropping it closes the connection.
pub struct StreamingResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: http::HeaderMap,
    body: Incoming,
    task: AbortOnDrop,
    socket: PathBuf,
}

impl StreamingResponse {
    /// Reads the whole body.
    pub async fn collect(self) -> RuntimeResult<Bytes> {
        let StreamingResponse {
            body, task, socket, ..
        } = self;
        let collected = body.collect().await.map_err(|e| hyper_error(&socket, e));
        drop(task);
        Ok(collected?.to_bytes())
    }

    /// The body as a stream of data frames. The stream ends with the body; a
    /// connection lost on the way ends it with [`RuntimeError::Unavailable`].
    /// Dropping the stream closes the connection.
    pub fn into_stream(self) -> impl Stream<Item = RuntimeResult<Bytes>> + Send {
        let StreamingResponse {
            body, task, socket, ..
        } = self;
        futures::stream::unfold(Some((body, task, socket)), |state| async move {
            let (mut body, task, socket) = state?;
            loop {
                match body.frame().await {
                    None => return None,
                    Some(Err(e)) => return Some((Err(hyper_error(&socket, e)), None)),
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data()
                            && !data.is_empty()
                        {
                            return Some((Ok(data), Some((body, task, socket))));
                        }
                    }
                }
            }
        })
    }
}

/// Aborts the connection task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn unavailable(socket: &Path, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::Unavailable {
        endpoint: socket.display().to_string(),
        reason: reason.into(),
    }
}

/// Maps a hyper error: garbage from the server is a protocol error, anything
/// else (closed, reset, incomplete) means the service went away.
fn hyper_error(socket: &Path, e: hyper::Error) -> RuntimeError {
    if e.is_parse() || e.is_parse_status() {
        RuntimeError::Protocol(format!("bad HTTP from {}: {e}", socket.display()))
    } else {
        unavailable(socket, format!("connection lost: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    /// Serves one connection with `answer` after reading the request head.
    async fn serve_once(answer: &'static [u8], close: bool) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.expect("read");
                if n == 0 {
                    return;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            stream.write_all(answer).await.expect("write");
            if close {
                drop(stream);
            } else {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        });
        (dir, path)
    }

    #[tokio::test]
    async fn missing_socket_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = UnixClient::new(dir.path().join("none.sock"));
        let err = client
            .request(Method::GET, "/_ping", None, Duration::from_secs(5))
            .await
            .expect_err("must fail");
        assert!(err.is_unavailable(), "{err:?}");
    }

    #[tokio::test]
    async fn reads_status_and_body() {
        let (_dir, path) = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nOK",
            false,
        )
        .await;
        let client = UnixClient::new(path);
        let response = client
            .request(Method::GET, "/_ping", None, Duration::from_secs(5))
            .await
            .expect("request");
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(&response.body[..], b"OK");
    }

    #[tokio::test]
    async fn cut_stream_is_unavailable() {
        let (_dir, path) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
            true,
        )
        .await;
        let client = UnixClient::new(path);
        let response = client
            .stream(Method::GET, "/logs", None)
            .await
            .expect("head");
        let items: Vec<_> = response.into_stream().collect().await;
        assert_eq!(items.len(), 2, "{items:?}");
        assert_eq!(&items[0].as_ref().expect("data")[..], b"abc");
        assert!(items[1].as_ref().expect_err("cut").is_unavailable());
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let (_dir, path) = serve_once(b"", false).await;
        let client = UnixClient::new(path);
        let err = client
            .request(Method::GET, "/x", None, Duration::from_millis(200))
            .await
            .expect_err("timeout");
        assert!(err.is_unavailable(), "{err:?}");
    }

    #[tokio::test]
    async fn dropping_a_stream_closes_the_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let n = stream.read(&mut buf).await.expect("read head");
            assert!(n > 0);
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
                .await
                .expect("write");
            // The client never ends the request; only closing gives EOF.
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let _ = closed_tx.send(n);
        });
        let client = UnixClient::new(path);
        let response = client
            .stream(Method::GET, "/follow", None)
            .await
            .expect("head");
        let mut body = Box::pin(response.into_stream());
        let first = body.next().await.expect("a frame").expect("data");
        assert_eq!(&first[..], b"abc");
        drop(body);
        let n = tokio::time::timeout(Duration::from_secs(5), closed_rx)
            .await
            .expect("connection closed after the drop")
            .expect("server reported");
        assert_eq!(n, 0);
    }
}
