//! The agent under floods from whoever reaches its port, each from an
//! address of its own: connections that finish TLS and then idle, one
//! connection opening a thousand `PullFile` streams it never reads, and
//! HTTP/2 streams reset as fast as they open (by the client, and by the
//! server for the client's protocol errors). Meanwhile an operator's
//! `status` from 127.0.0.1 keeps answering; its latency and the agent's
//! memory are printed (`--nocapture`) for the record.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use mcp_e2e::{Node, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

/// What the operator saw while an attack ran.
struct Seen {
    latencies: Vec<Duration>,
    failures: Vec<String>,
    peak_rss_kib: u64,
}

impl Seen {
    fn report(&self, what: &str, before_kib: u64) -> String {
        let mut l = self.latencies.clone();
        l.sort();
        let at = |q: f64| l.get(((l.len() as f64 - 1.0) * q) as usize).copied();
        format!(
            "{what}: status answered {} times, median {:?}, p99 {:?}, max {:?}; agent RSS {} KiB before, peak {} KiB",
            l.len(),
            at(0.5).unwrap_or_default(),
            at(0.99).unwrap_or_default(),
            l.last().copied().unwrap_or_default(),
            before_kib,
            self.peak_rss_kib
        )
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Asks `status` every 100 ms and samples the agent's memory, on a thread
/// of its own, until `stop` is set.
fn operator(node: &Node, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Seen> {
    let (name, addr, options) = (
        node.name.clone(),
        node.addr.clone(),
        node.connect_options(Some(&node.admin_token)),
    );
    let pid = node.agent_pid().expect("the agent runs");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let mut seen = Seen {
                latencies: Vec::new(),
                failures: Vec::new(),
                peak_rss_kib: rss_kib(pid),
            };
            let mut client = mcp_core::client::Client::connect(&name, &addr, &options)
                .await
                .expect("the operator connects");
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match tokio::time::timeout(Duration::from_secs(20), client.status(None)).await {
                    Ok(Ok(_)) => seen.latencies.push(started.elapsed()),
                    Ok(Err(e)) => seen.failures.push(e.to_string()),
                    Err(_) => seen.failures.push("no answer within 20 s".into()),
                }
                seen.peak_rss_kib = seen.peak_rss_kib.max(rss_kib(pid));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        })
    })
}

/// Runs `attack` while the operator asks; returns what the operator saw,
/// having checked that every status was answered.
fn under_attack<T>(node: &Node, what: &str, attack: impl AsyncFnOnce() -> T) -> T {
    let pid = node.agent_pid().expect("the agent runs");
    let before = rss_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = operator(node, stop.clone());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let out = rt.block_on(attack());
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.join().expect("the operator's thread");
    eprintln!("{}", seen.report(what, before));
    assert!(
        seen.failures.is_empty(),
        "{what}: status failed: {:?}",
        seen.failures
    );
    assert!(!seen.latencies.is_empty(), "{what}: status never answered");
    // Bounded: whatever the attack, the agent stays within a generous
    // margin of where it started.
    assert!(
        seen.peak_rss_kib < before + 256 * 1024,
        "{what}: the agent grew from {before} KiB to {} KiB",
        seen.peak_rss_kib
    );
    out
}

/// A TLS connection to the agent from `source` (a loopback address of the
/// attacker's own).
async fn tls_from(node: &Node, source: IpAddr) -> std::io::Result<TlsStream<TcpStream>> {
    let config = mcp_core::tls::client_config(&mcp_core::tls::ClientTlsFiles {
        ca_cert: node.ca_cert.clone(),
        cert: None,
        key: None,
    })
    .expect("client TLS");
    let addr: SocketAddr = node.addr.parse().expect("address");
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(addr).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// A gRPC message frame: uncompressed, its length, the message.
fn grpc_frame(message: &impl prost::Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + body.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(body.len()).expect("small"));
    frame.put_slice(&body);
    frame.freeze()
}

#[test]
fn two_thousand_idle_tls_connections_from_one_address_hold_at_most_its_share() {
    mcp_agent::server::raise_open_files_limit();
    let node = Node::start();
    let attacker: IpAddr = "127.0.0.2".parse().expect("ip");
    let (held, refused) = under_attack(&node, "2,000 idle TLS connections", async || {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..2_000 {
            let connect = tls_from(&node, attacker);
            // Each connection is made and kept; none sends a request.
            let tls = tokio::time::timeout(Duration::from_secs(30), connect).await;
            tasks.spawn(async move {
                let Ok(Ok(mut tls)) = tls else {
                    return None;
                };
                // The server's HTTP/2 preface arrives on a connection it
                // kept; a refused one is closed.
                let mut buf = [0u8; 64];
                match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => Some(tls),
                    _ => None,
                }
            });
        }
        let mut held = Vec::new();
        let mut refused = 0;
        while let Some(r) = tasks.join_next().await {
            match r.expect("task") {
                Some(tls) => held.push(tls),
                None => refused += 1,
            }
        }
        // Idle a while, holding what was kept, as the operator asks.
        tokio::time::sleep(Duration::from_secs(3)).await;
        (held.len(), refused)
    });
    eprintln!("{held} connections kept, {refused} refused");
    assert!(held >= 1, "no connection at all was kept");
    assert!(
        held <= 64,
        "{held} connections from one address were kept, beyond [limits] max_connections_per_peer"
    );
    assert_eq!(held + refused, 2_000);
}

#[test]
fn a_thousand_unread_file_streams_on_one_connection_hold_a_bounded_share() {
    let node = Node::start();
    let service = unique("bulk");
    let file = node.dir.path().join("bulk.bin");
    std::fs::write(&file, vec![7u8; 4 << 20]).expect("write");
    node.mcp(&["push", &service, file.to_str().expect("utf-8"), "bulk.bin"])
        .success();
    let attacker: IpAddr = "127.0.0.3".parse().expect("ip");
    let (stuck, exhausted, other) =
        under_attack(&node, "1,000 zero-window PullFile streams", async || {
            let tls = tls_from(&node, attacker).await.expect("connect");
            let (mut client, connection) = h2::client::Builder::new()
                .initial_window_size(0)
                .handshake::<_, Bytes>(tls)
                .await
                .expect("h2 handshake");
            let driver = tokio::spawn(connection);
            // Until the server's SETTINGS arrive the client may open any
            // number of streams, and the server refuses those past its
            // limit (refusals it counts against the connection): wait for
            // them, as a real client's connection settles.
            let settled = tokio::time::timeout(Duration::from_secs(10), async {
                while client.current_max_send_streams() > 100 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            assert!(settled.is_ok(), "the server's SETTINGS never came");
            let request = grpc_frame(&mcp_proto::v1::FileRequest {
                service: service.clone(),
                path: "bulk.bin".into(),
            });
            let mut responses = Vec::new();
            for _ in 0..1_000 {
                client = tokio::time::timeout(Duration::from_secs(10), client.ready())
                    .await
                    .expect("a stream slot within 10 s")
                    .expect("ready");
                let req = http::Request::post(format!(
                    "http://{}/mcp.v1.AgentService/PullFile",
                    node.addr
                ))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("authorization", format!("Bearer {}", node.readonly_token))
                .body(())
                .expect("request");
                let (response, mut body) = client.send_request(req, false).expect("send");
                body.send_data(request.clone(), true)
                    .expect("send the message");
                responses.push(response);
            }
            let (mut stuck, mut exhausted, mut other) = (Vec::new(), 0, Vec::new());
            for response in responses {
                let response = tokio::time::timeout(Duration::from_secs(30), response)
                    .await
                    .expect("headers within 30 s");
                let response = match response {
                    Ok(r) => r,
                    // Past the server's stream limit, before the client
                    // knew of it.
                    Err(e) if e.reason() == Some(h2::Reason::REFUSED_STREAM) => {
                        exhausted += 1;
                        continue;
                    }
                    Err(e) => panic!("{e}"),
                };
                match response
                    .headers()
                    .get("grpc-status")
                    .map(|v| v.as_bytes().to_vec())
                {
                    None => stuck.push(response),
                    Some(code) if code == b"8" => exhausted += 1,
                    Some(code) => other.push(String::from_utf8_lossy(&code).into_owned()),
                }
            }
            // A stream answered with headers and then ended (its status in
            // the trailers) is not stuck.
            let mut held = 0;
            for response in stuck {
                let mut body = response.into_body();
                match tokio::time::timeout(Duration::from_millis(200), body.trailers()).await {
                    Err(_) => held += 1,
                    Ok(t) => other.push(format!("ended: {t:?}")),
                }
            }
            let stuck = held;
            // Hold the stuck streams open a while as the operator asks.
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(client);
            driver.abort();
            (stuck, exhausted, other)
        });
    eprintln!("{stuck} streams stuck unread, {exhausted} refused as exhausted");
    assert!(other.is_empty(), "unexpected answers: {other:?}");
    assert!(stuck >= 1, "no stream started");
    assert!(
        stuck <= 32,
        "{stuck} file streams ran at once, beyond [limits] max_file_streams"
    );
    assert_eq!(stuck + exhausted, 1_000);
}

/// An HPACK header block for a gRPC call of `path` (literal fields, no
/// Huffman coding, nothing indexed: no state on either side); without a
/// `:path` when `path` is `None`, which makes the request malformed.
fn header_block(path: Option<&str>) -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    let mut literal = |index: u8, value: &str| {
        block.push(index); // literal without indexing, indexed name
        block.push(u8::try_from(value.len()).expect("short"));
        block.extend_from_slice(value.as_bytes());
    };
    if let Some(path) = path {
        literal(0x04, path); // :path
    }
    literal(0x01, "agent"); // :authority
    block.extend_from_slice(&[0x0f, 0x10]); // content-type (index 31)
    block.push(16);
    block.extend_from_slice(b"application/grpc");
    block.extend_from_slice(&[0x00, 0x02]);
    block.extend_from_slice(b"te");
    block.push(0x08);
    block.extend_from_slice(b"trailers");
    block
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Sends the frames `stream(id)` of up to `streams` streams on one
/// connection, and reads the server's frames: returns how many streams
/// were sent and the GOAWAY error code, if the server closed the
/// connection with one.
async fn reset_flood(
    node: &Node,
    source: IpAddr,
    streams: u32,
    stream: fn(u32) -> Vec<u8>,
) -> (u32, Option<u32>) {
    let tls = tls_from(node, source).await.expect("connect");
    let (mut read, mut write) = tokio::io::split(tls);
    let reader = tokio::spawn(async move {
        let mut goaway = None;
        let mut head = [0u8; 9];
        while read.read_exact(&mut head).await.is_ok() {
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            if read.read_exact(&mut payload).await.is_err() {
                break;
            }
            if head[3] == 0x7 && payload.len() >= 8 {
                goaway = Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
        }
        goaway
    });
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    write.write_all(&preface).await.expect("preface");
    let mut sent = 0;
    for i in 0..streams {
        if write.write_all(&stream(2 * i + 1)).await.is_err() {
            break;
        }
        sent += 1;
    }
    let _ = write.shutdown().await;
    let goaway = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    (sent, goaway)
}

#[test]
fn streams_reset_as_fast_as_they_open_get_the_connection_closed() {
    let node = Node::start();
    // Requests the server answers with a reset of its own: malformed
    // ones, without a :path ("MadeYouReset").
    let (sent, goaway) = under_attack(&node, "local-error reset flood", async || {
        reset_flood(&node, "127.0.0.4".parse().expect("ip"), 20_000, |id| {
            frame(0x1, 0x5, id, &header_block(None)) // HEADERS, END_STREAM | END_HEADERS
        })
        .await
    });
    eprintln!("local-error resets: {sent} streams sent, GOAWAY {goaway:?}");
    assert_eq!(
        goaway,
        Some(0xb),
        "the connection was not closed with ENHANCE_YOUR_CALM"
    );
    assert!(sent < 20_000, "all {sent} streams went through");

    // Streams the client resets itself right after opening them ("Rapid
    // Reset"): the agent stays up and answers, whatever it does with them.
    let (sent, goaway) = under_attack(&node, "rapid reset flood", async || {
        reset_flood(&node, "127.0.0.5".parse().expect("ip"), 20_000, |id| {
            let mut out = frame(
                0x1,
                0x4,
                id,
                &header_block(Some("/mcp.v1.AgentService/Status")),
            );
            out.extend(frame(0x3, 0, id, &0x8u32.to_be_bytes())); // RST_STREAM CANCEL
            out
        })
        .await
    });
    eprintln!("rapid resets: {sent} streams sent, GOAWAY {goaway:?}");
}
