//! TLS over real sockets: `tls_incoming` with the agent's server
//! configuration on one side, `TlsConnector` with the client configuration
//! on the other, and what each kind of failure looks like to the client.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hyper_util::rt::TokioIo;
use mcp_core::tls::admit::ConnectionLimits;
use mcp_core::tls::{
    ClientTlsFiles, ConnectError, ConnectErrorKind, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_PENDING_HANDSHAKES, ServerTlsFiles, TlsConnector, client_config, ensure_dev_pki,
    issue_cert, plain_incoming, server_config, tls_incoming,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

type ClientIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

/// An echo server behind `tls_incoming`; counts the TLS streams it yields.
struct EchoServer {
    addr: SocketAddr,
    yielded: Arc<AtomicUsize>,
}

async fn echo_server(
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
    max_pending: usize,
) -> EchoServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let yielded = Arc::new(AtomicUsize::new(0));
    let count = yielded.clone();
    let mut incoming = Box::pin(tls_incoming(
        listener,
        config,
        handshake_timeout,
        max_pending,
        ConnectionLimits::unlimited(),
    ));
    tokio::spawn(async move {
        while let Some(conn) = incoming.next().await {
            let mut tls = conn.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    EchoServer { addr, yielded }
}

async fn connect(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> Result<ClientIo, ConnectError> {
    let uri: http::Uri = format!("https://{addr}").parse().unwrap();
    TlsConnector::new(config).oneshot(uri).await
}

/// A wait for the server's verdict on a client certificate far longer than
/// it takes: a connection done sooner was ended by the verdict, not by the
/// wait running out.
const LONG_VERDICT_WAIT: Duration = Duration::from_secs(60);

/// [`connect`] with [`LONG_VERDICT_WAIT`].
async fn connect_awaiting_verdict(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> Result<ClientIo, ConnectError> {
    let uri: http::Uri = format!("https://{addr}").parse().unwrap();
    TlsConnector::new(config)
        .with_client_auth_wait(LONG_VERDICT_WAIT)
        .oneshot(uri)
        .await
}

async fn round_trip(io: ClientIo) {
    let mut tls = io.into_inner();
    tls.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");
}

fn server_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Arc<rustls::ServerConfig> {
    server_config(&ServerTlsFiles {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        client_ca: client_ca.map(Path::to_path_buf),
    })
    .unwrap()
}

fn client_files(ca: &Path, cert_key: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    client_config(&ClientTlsFiles {
        ca_cert: ca.to_path_buf(),
        cert: cert_key.map(|(c, _)| c.to_path_buf()),
        key: cert_key.map(|(_, k)| k.to_path_buf()),
    })
    .unwrap()
}

#[tokio::test]
async fn handshake_round_trip_and_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ensure_dev_pki(dir.path(), &[]).unwrap();
    let server = echo_server(
        server_files(&pki.server_cert, &pki.server_key, None),
        DEFAULT_HANDSHAKE_TIMEOUT,
        DEFAULT_MAX_PENDING_HANDSHAKES,
    )
    .await;
    let io = connect(client_files(&pki.ca_cert, None), server.addr)
        .await
        .unwrap();
    let (tcp, conn) = io.inner().get_ref();
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    assert!(tcp.nodelay().unwrap());
    round_trip(io).await;

    // By name too ("localhost" is always in the development certificate).
    let uri: http::Uri = format!("https://localhost:{}", server.addr.port())
        .parse()
        .unwrap();
    let io = TlsConnector::new(client_files(&pki.ca_cert, None))
        .oneshot(uri)
        .await
        .unwrap();
    round_trip(io).await;
    assert_eq!(server.yielded.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_client_trusting_another_ca_gets_unknown_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ensure_dev_pki(&dir.path().join("a"), &[]).unwrap();
    let other = ensure_dev_pki(&dir.path().join("b"), &[]).unwrap();
    let server = echo_server(
        server_files(&pki.server_cert, &pki.server_key, None),
        DEFAULT_HANDSHAKE_TIMEOUT,
        DEFAULT_MAX_PENDING_HANDSHAKES,
    )
    .await;
    let e = connect(client_files(&other.ca_cert, None), server.addr)
        .await
        .unwrap_err();
    eprintln!("{e}");
    assert_eq!(e.kind, ConnectErrorKind::UnknownIssuer);
    assert!(
        std::error::Error::source(&e)
            .unwrap()
            .to_string()
            .contains("UnknownIssuer"),
        "{e:?}"
    );
    assert_eq!(e.host, server.addr.to_string());
    assert_eq!(
        e.to_string(),
        format!(
            "TLS: the agent's certificate at {} is not signed by the configured CA",
            server.addr
        )
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_name_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ensure_dev_pki(dir.path(), &[]).unwrap();
    let cert = dir.path().join("other.pem");
    let key = dir.path().join("other.key");
    issue_cert(
        &pki.ca_cert,
        &pki.ca_key,
        "other.example",
        &["other.example".to_string()],
        false,
        &cert,
        &key,
    )
    .unwrap();
    let server = echo_server(
        server_files(&cert, &key, None),
        DEFAULT_HANDSHAKE_TIMEOUT,
        DEFAULT_MAX_PENDING_HANDSHAKES,
    )
    .await;
    let e = connect(client_files(&pki.ca_cert, None), server.addr)
        .await
        .unwrap_err();
    eprintln!("{e}");
    assert_eq!(
        e.kind,
        ConnectErrorKind::NameMismatch {
            presented: vec!["other.example".to_string()]
        }
    );
    assert!(e.to_string().contains("(it is for other.example)"), "{e}");
}

#[tokio::test]
async fn a_plaintext_server_is_not_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ensure_dev_pki(dir.path(), &[]).unwrap();
    let client = client_files(&pki.ca_cert, None);

    // A server that answers the ClientHello with HTTP/1.1 and closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let e = connect(client.clone(), http_addr).await.unwrap_err();
    eprintln!("{e}");
    assert!(matches!(e.kind, ConnectErrorKind::NotTls(_)), "{e:?}");

    // An HTTP/2 server without TLS: it sends its SETTINGS frame first.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let h2_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let _ = tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
            let mut buf = [0u8; 512];
            let _ = tcp.read(&mut buf).await;
        }
    });
    let e = connect(client.clone(), h2_addr).await.unwrap_err();
    eprintln!("{e}");
    assert!(matches!(e.kind, ConnectErrorKind::NotTls(_)), "{e:?}");

    // A server that closes at once.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closing_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            drop(tcp);
        }
    });
    let e = connect(client.clone(), closing_addr).await.unwrap_err();
    eprintln!("{e}");
    assert!(matches!(e.kind, ConnectErrorKind::NotTls(_)), "{e:?}");

    // Nobody listening.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let e = connect(client, SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap_err();
    eprintln!("{e}");
    assert!(matches!(e.kind, ConnectErrorKind::Tcp(_)), "{e:?}");
}

#[tokio::test]
async fn client_certificates_are_required_when_a_client_ca_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ensure_dev_pki(&dir.path().join("pki"), &[]).unwrap();
    let server = echo_server(
        server_files(&pki.server_cert, &pki.server_key, Some(&pki.ca_cert)),
        DEFAULT_HANDSHAKE_TIMEOUT,
        DEFAULT_MAX_PENDING_HANDSHAKES,
    )
    .await;

    // No certificate.
    let started = Instant::now();
    let e = connect_awaiting_verdict(client_files(&pki.ca_cert, None), server.addr)
        .await
        .unwrap_err();
    eprintln!("{e}");
    assert!(
        matches!(
            e.kind,
            ConnectErrorKind::ClientCertRequired {
                presented: false,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        started.elapsed() < LONG_VERDICT_WAIT,
        "{:?}",
        started.elapsed()
    );

    // A certificate from the right CA.
    let cert = dir.path().join("client.pem");
    let key = dir.path().join("client.key");
    issue_cert(
        &pki.ca_cert,
        &pki.ca_key,
        "operator",
        &[],
        true,
        &cert,
        &key,
    )
    .unwrap();
    let started = Instant::now();
    let io = connect_awaiting_verdict(client_files(&pki.ca_cert, Some((&cert, &key))), server.addr)
        .await
        .unwrap();
    // The server's verdict (a session ticket) ends the wait, not its limit.
    assert!(
        started.elapsed() < LONG_VERDICT_WAIT,
        "{:?}",
        started.elapsed()
    );
    round_trip(io).await;

    // A certificate from another CA.
    let other = ensure_dev_pki(&dir.path().join("other"), &[]).unwrap();
    let bad_cert = dir.path().join("bad.pem");
    let bad_key = dir.path().join("bad.key");
    issue_cert(
        &other.ca_cert,
        &other.ca_key,
        "intruder",
        &[],
        true,
        &bad_cert,
        &bad_key,
    )
    .unwrap();
    let e = connect(
        client_files(&pki.ca_cert, Some((&bad_cert, &bad_key))),
        server.addr,
    )
    .await
    .unwrap_err();
    eprintln!("{e}");
    assert!(
        matches!(
            e.kind,
            ConnectErrorKind::ClientCertRequired {
                presented: true,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(server.yielded.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_and_silent_clients_do_not_stall_the_stream() {
    mcp_agent::server::raise_open_files_limit();
    let dir = tempfile::tempdir().unwrap();
    let pki = ensure_dev_pki(dir.path(), &[]).unwrap();
    let handshake_timeout = Duration::from_secs(10);
    let server = echo_server(
        server_files(&pki.server_cert, &pki.server_key, None),
        handshake_timeout,
        DEFAULT_MAX_PENDING_HANDSHAKES,
    )
    .await;
    let client = client_files(&pki.ca_cert, None);

    let mut garbage = Vec::new();
    for i in 0..200 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let bytes: &[u8] = if i % 2 == 0 {
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" // plaintext HTTP/2
        } else {
            b"\x16\x03\x01\xff\xffgarbage garbage garbage"
        };
        tcp.write_all(bytes).await.unwrap();
        garbage.push(tcp);
    }
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }

    let started = Instant::now();
    let io = connect(client.clone(), server.addr).await.unwrap();
    let elapsed = started.elapsed();
    eprintln!("handshake among 400 bad connections: {elapsed:?}");
    // Served while the silent ones still held their handshakes, which end
    // only at the timeout.
    assert!(elapsed < handshake_timeout, "{elapsed:?}");
    round_trip(io).await;

    // Every bad connection is closed by the server: the garbage ones at
    // once, the silent ones after the handshake timeout.
    let deadline = Instant::now() + handshake_timeout + Duration::from_secs(4);
    for mut tcp in garbage.into_iter().chain(silent) {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(left, async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {} // an alert
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a bad connection was not closed");
    }

    // The stream still yields.
    let io = connect(client, server.addr).await.unwrap();
    round_trip(io).await;
    assert_eq!(server.yielded.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn pending_handshakes_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ensure_dev_pki(dir.path(), &[]).unwrap();
    let handshake_timeout = Duration::from_millis(600);
    let server = echo_server(
        server_files(&pki.server_cert, &pki.server_key, None),
        handshake_timeout,
        1,
    )
    .await;
    // A silent client takes the only slot ...
    let _silent = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ... so a real one waits until its handshake times out.
    let started = Instant::now();
    let io = connect(client_files(&pki.ca_cert, None), server.addr)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    round_trip(io).await;
}

#[tokio::test]
async fn plain_incoming_sets_nodelay_and_ends_with_its_consumer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut incoming = Box::pin(plain_incoming(listener, ConnectionLimits::unlimited()));
    let _client = TcpStream::connect(addr).await.unwrap();
    let accepted = incoming.next().await.unwrap().unwrap();
    assert!(accepted.get_ref().nodelay().unwrap());
    drop(incoming);
    // The accept task notices and drops the listener.
    let mut refused = false;
    for _ in 0..50 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the listener is still open");
}

#[tokio::test]
async fn tonic_over_tls_incoming_and_tls_connector() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    let dir = tempfile::tempdir().unwrap();
    let pki = ensure_dev_pki(&dir.path().join("pki"), &[]).unwrap();
    let cert = dir.path().join("client.pem");
    let key = dir.path().join("client.key");
    issue_cert(
        &pki.ca_cert,
        &pki.ca_key,
        "operator",
        &[],
        true,
        &cert,
        &key,
    )
    .unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = tls_incoming(
        listener,
        server_files(&pki.server_cert, &pki.server_key, Some(&pki.ca_cert)),
        DEFAULT_HANDSHAKE_TIMEOUT,
        DEFAULT_MAX_PENDING_HANDSHAKES,
        ConnectionLimits::unlimited(),
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming),
    );

    // `http://`: the connector does TLS whatever the scheme, and with
    // tonic's own TLS features enabled an `https://` URI makes tonic demand
    // its own TLS configuration (HttpsUriWithoutTlsSupport).
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let started = Instant::now();
    let channel = endpoint
        .connect_with_connector(
            TlsConnector::new(client_files(&pki.ca_cert, Some((&cert, &key))))
                .with_client_auth_wait(LONG_VERDICT_WAIT),
        )
        .await
        .unwrap();
    // The server's verdict ended the wait, not its limit.
    assert!(
        started.elapsed() < LONG_VERDICT_WAIT,
        "{:?}",
        started.elapsed()
    );
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().status, ServingStatus::Serving as i32);

    // Without a client certificate, the ConnectError is in tonic's error chain.
    let e = endpoint
        .connect_with_connector(TlsConnector::new(client_files(&pki.ca_cert, None)))
        .await
        .unwrap_err();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let mut found = None;
    while let Some(err) = source {
        if let Some(c) = err.downcast_ref::<ConnectError>() {
            found = Some(c);
            break;
        }
        source = err.source();
    }
    let found = found.expect("ConnectError in the chain");
    eprintln!("tonic: {e}; ours: {found}");
    assert!(matches!(
        found.kind,
        ConnectErrorKind::ClientCertRequired {
            presented: false,
            ..
        }
    ));
}
