//! A small MCIAS double that speaks the wire format documented in
//! `mcp_core::auth::mcias` over real HTTPS: a rustls server on a loopback
//! port, with a CA and a server certificate (for `127.0.0.1` and
//! `localhost`) made by rcgen.
//!
//! ```ignore
//! let double = Double::start().await;
//! double.add_user("tok", "kyle", &["admin"], None);
//! let config = double.config(); // url and ca_cert point at the double
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mcp_core::auth::mcias::{Mcias, MciasConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// How the double answers.
#[allow(dead_code)] // only some test binaries change the mode
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Mode {
    /// The documented format.
    Normal = 0,
    /// 500 to everything.
    Fail500 = 1,
    /// 401 to everything.
    Unauthorized = 2,
    /// Accepts and never answers.
    Hang = 3,
    /// A 200 answer larger than 64 KiB.
    Huge = 4,
    /// A 200 answer that is not JSON.
    Garbage = 5,
}

/// A user known to the double, keyed by token in [`State::users`].
#[derive(Clone)]
pub struct User {
    /// The `username` of the answer.
    pub username: String,
    /// The `roles` of the answer.
    pub roles: Vec<String>,
    /// The `expires_at` of the answer: RFC 3339, or `None` for `null`.
    pub expires_at: Option<String>,
}

/// One request the double received.
#[allow(dead_code)] // only some test binaries look at the requests
#[derive(Clone, Debug)]
pub struct Received {
    /// The HTTP method, `POST`.
    pub method: String,
    /// The request target, `/v1/token/validate`.
    pub path_and_query: String,
    /// The `content-type` header, if any.
    pub content_type: Option<String>,
    /// The request body.
    pub body: Vec<u8>,
}

/// What the double knows and counts, shared with its connections.
#[derive(Default)]
pub struct State {
    /// Known users, by token.
    pub users: Mutex<HashMap<String, User>>,
    /// Requests received so far (whatever their answer).
    pub requests: AtomicUsize,
    /// The current [`Mode`], as its `u8`.
    pub mode: AtomicU8,
    /// Delay before answering, in ms.
    pub delay_ms: AtomicUsize,
    /// Every request received, in order.
    pub received: Mutex<Vec<Received>>,
}

/// A CA and the PEM file holding its certificate.
pub struct Ca {
    /// The CA's certificate and key, to sign server certificates with.
    pub issuer: CertifiedIssuer<'static, KeyPair>,
    /// Where the CA certificate (PEM) was written.
    pub pem_path: PathBuf,
}

/// Makes a self-signed CA and writes its certificate to `dir/file`.
pub fn make_ca(dir: &Path, file: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("test CA {file}"));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let pem_path = dir.join(file);
    std::fs::write(&pem_path, issuer.pem()).unwrap();
    Ca { issuer, pem_path }
}

/// The MCIAS double: an HTTPS server on `127.0.0.1`, stopped when dropped.
pub struct Double {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it knows and counts.
    pub state: Arc<State>,
    /// The CA that signed its certificate.
    pub ca: Ca,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Double {
    /// Starts a double on a free loopback port, with a fresh CA, no users
    /// and [`Mode::Normal`].
    pub async fn start() -> Double {
        let dir = tempfile::tempdir().unwrap();
        let ca = make_ca(dir.path(), "ca.pem");
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            // Aborting this task drops the listener and the JoinSet, which
            // aborts every connection: a complete outage.
            let mut connections = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let st = Arc::clone(&st);
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| handle(Arc::clone(&st), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Double {
            addr,
            state,
            task,
            ca,
            _dir: dir,
        }
    }

    /// Makes `token` valid for `username` with `roles`, until `expires_at`
    /// (`None`: no expiry).
    pub fn add_user(
        &self,
        token: &str,
        username: &str,
        roles: &[&str],
        expires_at: Option<SystemTime>,
    ) {
        let expires_at = expires_at.map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339());
        self.state.users.lock().unwrap().insert(
            token.to_owned(),
            User {
                username: username.to_owned(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                expires_at,
            },
        );
    }

    /// Changes how the double answers from the next request on.
    #[allow(dead_code)] // not every test binary uses it
    pub fn set_mode(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Delays every answer by `delay`.
    #[allow(dead_code)] // not every test binary uses it
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as usize, Ordering::SeqCst);
    }

    /// How many requests the double has received.
    #[allow(dead_code)] // not every test binary uses it
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Every request received so far.
    #[allow(dead_code)] // not every test binary uses it
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Stops answering at all: listener and connections are gone.
    pub async fn shut_down(&self) {
        self.task.abort();
        // Let the abort take effect before the next request.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(self.task.is_finished());
    }

    /// The double's base URL, `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// A configuration that reaches the double and trusts its CA: cache
    /// 60 s and 100 entries, timeout 5 s, roles `admin` and `mcp-admin`
    /// grant admin, `viewer` grants readonly.
    #[allow(dead_code)] // not every test binary uses it
    pub fn config(&self) -> MciasConfig {
        MciasConfig {
            url: self.url(),
            ca_cert: Some(self.ca.pem_path.clone()),
            cache_ttl: Duration::from_secs(60),
            cache_size: 100,
            timeout: Duration::from_secs(5),
            admin_roles: vec!["admin".into(), "mcp-admin".into()],
            readonly_roles: vec!["viewer".into()],
        }
    }

    /// A validator built from [`Double::config`].
    #[allow(dead_code)] // not every test binary uses it
    pub fn mcias(&self) -> Mcias {
        Mcias::new(self.config()).unwrap()
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A JSON answer with `status` and `body`.
pub fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

/// Answers one request as the current [`Mode`] says, after recording it.
pub async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let method = req.method().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes().to_vec())
        .unwrap_or_default();
    state.received.lock().unwrap().push(Received {
        method,
        path_and_query,
        content_type,
        body: body.clone(),
    });
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay as u64)).await;
    }
    let mode = state.mode.load(Ordering::SeqCst);
    let answer = if mode == Mode::Fail500 as u8 {
        reply(StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":"boom"}"#)
    } else if mode == Mode::Unauthorized as u8 {
        reply(StatusCode::UNAUTHORIZED, r#"{"error":"no"}"#)
    } else if mode == Mode::Hang as u8 {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        reply(StatusCode::OK, "{}")
    } else if mode == Mode::Huge as u8 {
        let filler = "x".repeat(100 * 1024);
        reply(
            StatusCode::OK,
            format!(r#"{{"valid": true, "username": "kyle", "filler": "{filler}"}}"#),
        )
    } else if mode == Mode::Garbage as u8 {
        reply(StatusCode::OK, "<html>oops</html>")
    } else {
        let token = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("token").and_then(|t| t.as_str()).map(str::to_owned));
        let user = token.and_then(|t| state.users.lock().unwrap().get(&t).cloned());
        match user {
            Some(u) => reply(
                StatusCode::OK,
                serde_json::json!({
                    "valid": true,
                    "username": u.username,
                    "roles": u.roles,
                    "expires_at": u.expires_at,
                })
                .to_string(),
            ),
            None => reply(StatusCode::OK, r#"{"valid": false}"#),
        }
    };
    Ok(answer)
}
