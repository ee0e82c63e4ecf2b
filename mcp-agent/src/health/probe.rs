//! Probing a component's health check once: a command the runtime runs in
//! the instance, a TCP connection or an HTTP `GET` to the host side of a
//! published port ([`Target`]). The deploy's gate and the monitor's checks
//! both probe through it.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use mcp_runtime::{PortMapping, Runtime, RuntimeError};
use tokio::net::TcpStream;

use mcp_core::servicedef::{HealthCheck, HealthProbe};

/// Extra time a command probe may take beyond the check's timeout: the
/// runtime judges the timeout itself, but starting the command inside the
/// container takes time of its own.
const COMMAND_GRACE: Duration = Duration::from_secs(2);

/// A span for messages, to the millisecond: `"30s"`, `"1s 500ms"`.
pub fn span(d: Duration) -> String {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// Why a probe did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// The check failed: counts as a failed probe.
    Failed(String),
    /// The probe cannot be run at all (misconfiguration, runtime down).
    Fatal(String),
}

/// What one probe does, resolved once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The runtime runs the container's own check.
    Command,
    /// Connect to this address.
    Tcp(SocketAddr),
    /// GET `path` from this address.
    Http {
        /// The host side of the published port.
        addr: SocketAddr,
        /// The path to get.
        path: String,
        /// The status that passes; any 2xx when `None`.
        status: Option<u16>,
    },
}

impl Target {
    /// What probing `check` of an instance publishing `ports` does.
    pub fn resolve(check: &HealthCheck, ports: &[PortMapping]) -> Result<Target, String> {
        Ok(match &check.probe {
            HealthProbe::Command { .. } => Target::Command,
            HealthProbe::Tcp { port } => Target::Tcp(probe_address(ports, *port)?),
            HealthProbe::Http { port, path, status } => Target::Http {
                addr: probe_address(ports, *port)?,
                path: if path.is_empty() {
                    HealthCheck::DEFAULT_PATH.to_string()
                } else {
                    path.clone()
                },
                status: *status,
            },
        })
    }

    /// Runs one probe of `instance`, which may take `timeout`.
    pub async fn probe(
        &self,
        runtime: &dyn Runtime,
        instance: &str,
        timeout: Duration,
    ) -> Result<(), ProbeError> {
        match self {
            Target::Command => {
                let run = runtime.run_health_check(instance);
                match tokio::time::timeout(timeout + COMMAND_GRACE, run).await {
                    Ok(Ok(report)) if report.healthy => Ok(()),
                    Ok(Ok(report)) if report.output.is_empty() => {
                        Err(ProbeError::Failed("the check failed".to_string()))
                    }
                    Ok(Ok(report)) => Err(ProbeError::Failed(report.output)),
                    // Not running: the next look says how it ended.
                    Ok(Err(RuntimeError::Conflict(message))) => Err(ProbeError::Failed(message)),
                    Ok(Err(e)) => Err(ProbeError::Fatal(format!(
                        "cannot run the health check of {instance}: {e}"
                    ))),
                    Err(_) => Err(ProbeError::Failed(format!(
                        "the check did not finish within {}",
                        span(timeout + COMMAND_GRACE)
                    ))),
                }
            }
            Target::Tcp(addr) => {
                match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(ProbeError::Failed(format!("cannot connect to {addr}: {e}"))),
                    Err(_) => Err(ProbeError::Failed(format!(
                        "no connection to {addr} within {}",
                        span(timeout)
                    ))),
                }
            }
            Target::Http { addr, path, status } => {
                let url = format!("{addr}{path}");
                let answer = tokio::time::timeout(timeout, http_get(*addr, path)).await;
                match answer {
                    Ok(Ok(got)) => judge_status(got, *status, &url),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(ProbeError::Failed(format!(
                        "no answer from {url} within {}",
                        span(timeout)
                    ))),
                }
            }
        }
    }
}

/// The host address on which the container port `port` (tcp) is published:
/// its host address, with a wildcard (or none) probed on loopback.
fn probe_address(ports: &[PortMapping], port: u16) -> Result<SocketAddr, String> {
    let mapping = ports
        .iter()
        .find(|p| {
            p.container_port == port
                && (p.protocol.is_empty() || p.protocol.eq_ignore_ascii_case("tcp"))
        })
        .ok_or_else(|| {
            format!(
                "health check port {port}/tcp is not published: it is probed through its host port"
            )
        })?;
    if mapping.host_port == 0 {
        return Err(format!(
            "health check port {port}/tcp is published on no fixed host port"
        ));
    }
    let host = mapping.host_ip.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip = match host {
        "" | "0.0.0.0" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        "::" => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other.parse::<IpAddr>().map_err(|_| {
            format!("health check port {port}/tcp: host address {other:?} is not an IP address")
        })?,
    };
    Ok(SocketAddr::new(ip, mapping.host_port))
}

/// Whether an HTTP answer `got` passes: `expected`, or any 2xx.
fn judge_status(got: StatusCode, expected: Option<u16>, url: &str) -> Result<(), ProbeError> {
    let ok = match expected {
        Some(want) => got.as_u16() == want,
        None => got.is_success(),
    };
    if ok {
        return Ok(());
    }
    let mut text = format!("HTTP {} from {url}", got.as_u16());
    if let Some(want) = expected {
        let _ = write!(text, " (expected {want})");
    }
    Err(ProbeError::Failed(text))
}

/// GETs `path` from `addr` over HTTP/1.1 and returns the status (the body is
/// not read).
async fn http_get(addr: SocketAddr, path: &str) -> Result<StatusCode, ProbeError> {
    let url = format!("{addr}{path}");
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, "mcp-health-check")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ProbeError::Fatal(format!("invalid health check path {path:?}: {e}")))?;
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| ProbeError::Failed(format!("cannot connect to {addr}: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ProbeError::Failed(format!("no HTTP connection to {addr}: {e}")))?;
    // The connection is driven by a task of its own, ended with the probe
    // (also when the probe is abandoned at its timeout).
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ProbeError::Failed(format!("no HTTP answer from {url}: {e}")))?;
    Ok(response.status())
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(host_ip: &str, host_port: u16, container_port: u16, protocol: &str) -> PortMapping {
        PortMapping {
            host_ip: host_ip.into(),
            host_port,
            container_port,
            protocol: protocol.into(),
        }
    }

    #[test]
    fn probe_address_uses_the_published_host_side() {
        let ports = [
            mapping("127.0.0.1", 18080, 8080, "udp"),
            mapping("127.0.0.2", 18081, 8080, "tcp"),
            mapping("", 19090, 9090, "tcp"),
            mapping("0.0.0.0", 19091, 9091, "tcp"),
            mapping("::", 19092, 9092, "tcp"),
            mapping("::1", 19093, 9093, ""),
            mapping("[fd00::5]", 19094, 9094, "TCP"),
            mapping("not-an-ip", 19095, 9095, "tcp"),
        ];
        let addr = |port| probe_address(&ports, port);
        // The udp mapping of 8080 is skipped for the tcp one.
        assert_eq!(addr(8080), Ok("127.0.0.2:18081".parse().expect("addr")));
        assert_eq!(addr(9090), Ok("127.0.0.1:19090".parse().expect("addr")));
        assert_eq!(addr(9091), Ok("127.0.0.1:19091".parse().expect("addr")));
        assert_eq!(addr(9092), Ok("[::1]:19092".parse().expect("addr")));
        assert_eq!(addr(9093), Ok("[::1]:19093".parse().expect("addr")));
        assert_eq!(addr(9094), Ok("[fd00::5]:19094".parse().expect("addr")));
        let err = addr(9095).expect_err("bad host");
        assert!(err.contains("not-an-ip"), "{err}");
        let err = addr(7000).expect_err("unpublished");
        assert!(err.contains("7000/tcp is not published"), "{err}");
        let udp_only = [mapping("127.0.0.1", 5353, 53, "udp")];
        assert!(probe_address(&udp_only, 53).is_err());
    }

    #[test]
    fn targets() {
        let ports = [mapping("127.0.0.1", 18080, 8080, "tcp")];
        let http = HealthCheck::new(HealthProbe::Http {
            port: 8080,
            path: String::new(),
            status: Some(204),
        });
        assert_eq!(
            Target::resolve(&http, &ports),
            Ok(Target::Http {
                addr: "127.0.0.1:18080".parse().expect("addr"),
                path: "/".into(),
                status: Some(204),
            })
        );
        let command = HealthCheck::new(HealthProbe::Command {
            argv: vec!["true".into()],
        });
        assert_eq!(Target::resolve(&command, &[]), Ok(Target::Command));
        let tcp = HealthCheck::new(HealthProbe::Tcp { port: 9999 });
        assert!(Target::resolve(&tcp, &ports).is_err());
    }

    #[test]
    fn http_status_judgement() {
        let url = "127.0.0.1:8080/nope";
        assert_eq!(judge_status(StatusCode::OK, None, url), Ok(()));
        assert_eq!(judge_status(StatusCode::NO_CONTENT, None, url), Ok(()));
        assert_eq!(
            judge_status(StatusCode::NOT_FOUND, None, url),
            Err(ProbeError::Failed(
                "HTTP 404 from 127.0.0.1:8080/nope".into()
            ))
        );
        assert_eq!(
            judge_status(StatusCode::MOVED_PERMANENTLY, None, url),
            Err(ProbeError::Failed(
                "HTTP 301 from 127.0.0.1:8080/nope".into()
            ))
        );
        assert_eq!(judge_status(StatusCode::NOT_FOUND, Some(404), url), Ok(()));
        assert_eq!(
            judge_status(StatusCode::OK, Some(204), url),
            Err(ProbeError::Failed(
                "HTTP 200 from 127.0.0.1:8080/nope (expected 204)".into()
            ))
        );
    }

    /// A one-shot HTTP server on loopback: reads a request, writes `answer`
    /// and closes at once. Returns its address and the requests it read.
    async fn one_shot_server(
        answer: &'static [u8],
        connections: usize,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            for _ in 0..connections {
                let (mut socket, _) = listener.accept().await.expect("accept");
                let mut buf = vec![0u8; 4096];
                let mut read = 0;
                while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf[read..]).await.expect("read");
                    if n == 0 {
                        break;
                    }
                    read += n;
                }
                requests.push(String::from_utf8_lossy(&buf[..read]).into_owned());
                let _ = socket.write_all(answer).await;
                let _ = socket.shutdown().await;
            }
            requests
        });
        (addr, server)
    }

    #[tokio::test]
    async fn http_probe_reads_the_status_of_a_server_that_closes_at_once() {
        const ROUNDS: usize = 50;
        let (addr, server) = one_shot_server(
            b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
            ROUNDS,
        )
        .await;
        for _ in 0..ROUNDS {
            assert_eq!(
                http_get(addr, "/healthz?full=1").await,
                Ok(StatusCode::NO_CONTENT)
            );
        }
        let requests = server.await.expect("server");
        let first = &requests[0];
        assert!(
            first.starts_with("GET /healthz?full=1 HTTP/1.1\r\n"),
            "{first}"
        );
        assert!(
            first
                .to_ascii_lowercase()
                .contains(&format!("host: {addr}\r\n")),
            "{first}"
        );
    }

    #[tokio::test]
    async fn http_probe_failures_say_what_happened() {
        let (addr, server) = one_shot_server(b"", 1).await;
        match http_get(addr, "/").await {
            Err(ProbeError::Failed(text)) => {
                assert!(
                    text.starts_with(&format!("no HTTP answer from {addr}/")),
                    "{text}"
                )
            }
            other => panic!("expected a failed probe, got {other:?}"),
        }
        server.await.expect("server");
        // Nothing listens there any more.
        match http_get(addr, "/").await {
            Err(ProbeError::Failed(text)) => {
                assert!(
                    text.starts_with(&format!("cannot connect to {addr}")),
                    "{text}"
                )
            }
            other => panic!("expected a failed probe, got {other:?}"),
        }
    }
}
