//! `auth::mcias::Mcias` against a small MCIAS double that speaks the
//! documented wire format over real HTTPS (a rustls server with a CA and a
//! server certificate made by rcgen).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mcp_core::auth::mcias::{Mcias, MciasConfig};
use mcp_core::auth::{AuthError, Role, TokenValidator};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// How the double answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Mode {
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

/// A user known to the double.
#[derive(Clone)]
struct User {
    username: String,
    roles: Vec<String>,
    /// RFC 3339, or `None` for `null`.
    expires_at: Option<String>,
}

/// What the double received.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    path_and_query: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

#[derive(Default)]
struct State {
    users: Mutex<HashMap<String, User>>,
    requests: AtomicUsize,
    mode: AtomicU8,
    /// Delay before answering, in ms.
    delay_ms: AtomicUsize,
    received: Mutex<Vec<Received>>,
}

/// A CA and the PEM file holding its certificate.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem_path: PathBuf,
}

fn make_ca(dir: &Path, file: &str) -> Ca {
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

/// The MCIAS double.
struct Double {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
    ca: Ca,
    _dir: tempfile::TempDir,
}

impl Double {
    async fn start() -> Double {
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

    fn add_user(
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

    fn set_mode(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as usize, Ordering::SeqCst);
    }

    fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Stops answering at all: listener and connections are gone.
    async fn shut_down(&self) {
        self.task.abort();
        // Let the abort take effect before the next request.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(self.task.is_finished());
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn config(&self) -> MciasConfig {
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

    fn mcias(&self) -> Mcias {
        Mcias::new(self.config()).unwrap()
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

async fn handle(
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

fn in_an_hour() -> Option<SystemTime> {
    Some(SystemTime::now() + Duration::from_secs(3600))
}

fn unavailable_reason(r: Result<mcp_core::auth::Caller, AuthError>) -> String {
    match r {
        Err(AuthError::Unavailable(reason)) => reason,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn valid_tokens_map_roles() {
    let double = Double::start().await;
    let exp = SystemTime::UNIX_EPOCH + Duration::from_secs(4_000_000_000);
    double.add_user("tok-admin", "kyle", &["viewer", "mcp-admin"], Some(exp));
    double.add_user("tok-ro", "ro", &["viewer", "other"], None);
    double.add_user("tok-none", "nobody", &["other"], in_an_hour());
    let mcias = double.mcias();

    let admin = mcias.validate("tok-admin").await.unwrap();
    assert_eq!(admin.name, "kyle");
    assert_eq!(admin.role, Some(Role::Admin));
    assert_eq!(admin.source, "mcias");
    assert_eq!(admin.expires_at, Some(exp));

    let ro = mcias.validate("tok-ro").await.unwrap();
    assert_eq!(
        (ro.name.as_str(), ro.role, ro.expires_at),
        ("ro", Some(Role::ReadOnly), None)
    );

    let none = mcias.validate("tok-none").await.unwrap();
    assert_eq!((none.name.as_str(), none.role), ("nobody", None));
    assert_eq!(double.requests(), 3);
}

#[tokio::test]
async fn unknown_and_refused_tokens_are_invalid() {
    let double = Double::start().await;
    double.add_user("known", "kyle", &["admin"], None);
    let mcias = double.mcias();
    assert_eq!(mcias.validate("unknown").await, Err(AuthError::Invalid));
    // Negatively cached: no second request.
    assert_eq!(mcias.validate("unknown").await, Err(AuthError::Invalid));
    assert_eq!(double.requests(), 1);

    double.set_mode(Mode::Unauthorized);
    assert_eq!(mcias.validate("known").await, Err(AuthError::Invalid));
    assert_eq!(double.requests(), 2);
}

#[tokio::test]
async fn negative_cache_follows_a_shorter_ttl() {
    let double = Double::start().await;
    let mut config = double.config();
    config.cache_ttl = Duration::from_millis(300);
    let mcias = Mcias::new(config).unwrap();
    assert_eq!(mcias.validate("garbage").await, Err(AuthError::Invalid));
    assert_eq!(mcias.validate("garbage").await, Err(AuthError::Invalid));
    assert_eq!(double.requests(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mcias.validate("garbage").await, Err(AuthError::Invalid));
    assert_eq!(
        double.requests(),
        2,
        "the negative entry follows cache_ttl when shorter than 5 s"
    );
}

#[tokio::test]
async fn expired_tokens_are_expired() {
    let double = Double::start().await;
    double.add_user(
        "old",
        "kyle",
        &["admin"],
        Some(SystemTime::now() - Duration::from_secs(60)),
    );
    let mcias = double.mcias();
    assert_eq!(mcias.validate("old").await, Err(AuthError::Expired));
    assert_eq!(mcias.validate("old").await, Err(AuthError::Expired));
    assert_eq!(double.requests(), 1);
}

#[tokio::test]
async fn cached_caller_expires_with_its_token() {
    let double = Double::start().await;
    double.add_user(
        "short",
        "kyle",
        &["admin"],
        Some(SystemTime::now() + Duration::from_millis(1500)),
    );
    let mcias = double.mcias(); // cache_ttl 60 s
    assert!(mcias.validate("short").await.is_ok());
    assert!(mcias.validate("short").await.is_ok());
    assert_eq!(double.requests(), 1);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(mcias.validate("short").await, Err(AuthError::Expired));
}

#[tokio::test]
async fn cache_reuses_answers_within_ttl() {
    let double = Double::start().await;
    double.add_user("tok", "kyle", &["admin"], None);
    let mut config = double.config();
    config.cache_ttl = Duration::from_millis(500);
    let mcias = Mcias::new(config).unwrap();
    assert!(mcias.validate("tok").await.is_ok());
    assert!(mcias.validate("tok").await.is_ok());
    assert_eq!(double.requests(), 1);
    assert_eq!(mcias.cached_len(), 1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(mcias.validate("tok").await.is_ok());
    assert_eq!(double.requests(), 2);
}

#[tokio::test]
async fn cache_size_bounds_the_cache() {
    let double = Double::start().await;
    let mut config = double.config();
    config.cache_size = 3;
    let mcias = Mcias::new(config).unwrap();
    for i in 0..10 {
        double.add_user(&format!("t{i}"), &format!("u{i}"), &["admin"], None);
        assert!(mcias.validate(&format!("t{i}")).await.is_ok());
        assert!(mcias.cached_len() <= 3);
    }
    assert_eq!(mcias.cached_len(), 3);
    // The most recent ones are kept, the first was evicted.
    assert!(mcias.validate("t9").await.is_ok());
    assert_eq!(double.requests(), 10);
    assert!(mcias.validate("t0").await.is_ok());
    assert_eq!(double.requests(), 11);
}

#[tokio::test]
async fn fails_closed_on_500() {
    let double = Double::start().await;
    double.add_user("tok", "kyle", &["admin"], None);
    double.set_mode(Mode::Fail500);
    let mcias = double.mcias();
    let reason = unavailable_reason(mcias.validate("tok").await);
    assert!(reason.contains("500"), "{reason}");
    // Not cached: the next attempt asks again and succeeds once MCIAS is back.
    double.set_mode(Mode::Normal);
    assert!(mcias.validate("tok").await.is_ok());
    assert_eq!(double.requests(), 2);
}

#[tokio::test]
async fn fails_closed_on_broken_answers() {
    let double = Double::start().await;
    let mcias = double.mcias();
    double.set_mode(Mode::Garbage);
    let reason = unavailable_reason(mcias.validate("tok").await);
    assert!(reason.contains("JSON"), "{reason}");
    double.set_mode(Mode::Huge);
    let reason = unavailable_reason(mcias.validate("tok").await);
    assert_eq!(reason, "answer too large");
    assert_eq!(mcias.cached_len(), 0);
}

#[tokio::test]
async fn outage_keeps_cached_tokens_until_their_ttl() {
    let double = Double::start().await;
    double.add_user("before", "kyle", &["admin"], None);
    double.add_user("after", "other", &["admin"], None);
    let mut config = double.config();
    config.cache_ttl = Duration::from_millis(1500);
    let mcias = Mcias::new(config).unwrap();
    assert_eq!(mcias.validate("before").await.unwrap().name, "kyle");

    double.shut_down().await;
    let reason = unavailable_reason(mcias.validate("after").await);
    assert!(reason.contains("cannot reach mcias"), "{reason}");
    assert_eq!(mcias.validate("before").await.unwrap().name, "kyle");

    tokio::time::sleep(Duration::from_millis(1700)).await;
    unavailable_reason(mcias.validate("before").await);
    assert_eq!(double.requests(), 1);
}

#[tokio::test]
async fn times_out() {
    let double = Double::start().await;
    double.set_mode(Mode::Hang);
    let mut config = double.config();
    config.timeout = Duration::from_millis(500);
    let mcias = Mcias::new(config).unwrap();
    let start = Instant::now();
    let reason = unavailable_reason(mcias.validate("tok").await);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert_eq!(reason, "mcias did not answer within 500ms");
}

#[tokio::test]
async fn wrong_ca_is_refused() {
    let double = Double::start().await;
    double.add_user("tok", "kyle", &["admin"], None);
    let dir = tempfile::tempdir().unwrap();
    let other = make_ca(dir.path(), "other.pem");
    let mut config = double.config();
    config.ca_cert = Some(other.pem_path.clone());
    let mcias = Mcias::new(config).unwrap();
    let reason = unavailable_reason(mcias.validate("tok").await);
    assert!(reason.contains("certificate"), "{reason}");
    assert!(!reason.contains("tok\""), "{reason}");
    assert_eq!(double.requests(), 0);
}

#[tokio::test]
async fn concurrent_validations_share_one_request() {
    let double = Double::start().await;
    double.add_user("shared", "kyle", &["admin"], None);
    double.set_delay(Duration::from_millis(200));
    let mcias = Arc::new(double.mcias());
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let mcias = Arc::clone(&mcias);
        tasks.spawn(async move { mcias.validate("shared").await });
    }
    let mut answers = 0;
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap().unwrap().name, "kyle");
        answers += 1;
    }
    assert_eq!(answers, 20);
    assert_eq!(double.requests(), 1);
}

#[tokio::test]
async fn concurrent_failures_share_one_request_and_are_not_cached() {
    let double = Double::start().await;
    double.set_mode(Mode::Fail500);
    double.set_delay(Duration::from_millis(200));
    let mcias = Arc::new(double.mcias());
    let all = futures::future::join_all((0..10).map(|_| mcias.validate("x"))).await;
    assert!(
        all.iter()
            .all(|r| matches!(r, Err(AuthError::Unavailable(_))))
    );
    assert_eq!(double.requests(), 1);
    assert!(mcias.validate("x").await.is_err());
    assert_eq!(double.requests(), 2);
}

#[tokio::test]
async fn request_format() {
    let double = Double::start().await;
    double.add_user("s3cr3t-t0ken", "kyle", &["admin"], None);
    let mcias = double.mcias();
    assert!(mcias.validate("s3cr3t-t0ken").await.is_ok());
    let received = double.received();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path_and_query, "/v1/token/validate");
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body, serde_json::json!({"token": "s3cr3t-t0ken"}));
}

#[tokio::test]
async fn url_prefix_is_kept() {
    let double = Double::start().await;
    double.add_user("tok", "kyle", &["admin"], None);
    let mut config = double.config();
    config.url = format!("{}/mcias/", double.url());
    let mcias = Mcias::new(config).unwrap();
    assert!(mcias.validate("tok").await.is_ok());
    let received = double.received();
    assert_eq!(received[0].path_and_query, "/mcias/v1/token/validate");
}

#[tokio::test]
async fn plain_http_is_refused() {
    let double = Double::start().await;
    let mut config = double.config();
    config.url = format!("http://127.0.0.1:{}", double.addr.port());
    let err = Mcias::new(config).err().unwrap().to_string();
    assert!(err.contains("must be https://"), "{err}");
}
