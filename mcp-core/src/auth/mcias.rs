//! Token validation against MCIAS, the platform's identity service, over
//! HTTPS, with a bounded cache of recent answers.
//!
//! # Wire format
//!
//! MCIAS cannot be run here, so this is the exchange MCP implements (and the
//! test double in `mcp-core/tests/it/mcias_double.rs` speaks):
//!
//! ```text
//! POST {url}/v1/token/validate          (url without trailing slash; a path prefix in url is kept)
//! Content-Type: application/json
//! Accept: application/json
//! {"token": "<bearer token>"}
//!
//! 200 OK  {"valid": true, "username": "kyle", "roles": ["admin"], "expires_at": "2026-11-23T18:00:00Z"}
//!         expires_at (RFC 3339) optional / may be null: no expiry
//! 200 OK  {"valid": false}              -> the token is unknown/revoked  => AuthError::Invalid
//!         (also 401 and 403 with any body => AuthError::Invalid)
//! anything else (other statuses, bad JSON, connection error, TLS error, timeout)
//!         => AuthError::Unavailable(reason)  (fail closed)
//! ```
//!
//! The token travels in the body, never in the URL (proxies log URLs).
//! Unknown fields in the answer are ignored; `roles` may be missing or null
//! (no roles). A `valid: true` answer without a usable `username` (empty,
//! longer than 256 bytes or holding control characters) or with an
//! unparsable `expires_at` is treated as a broken answer: `Unavailable`.
//! Answers larger than 64 KiB are refused (`Unavailable`).
//!
//! # Behaviour
//!
//! - HTTPS only, with our own rustls configuration (ring provider, safe
//!   default protocol versions). The roots are the PEM file
//!   [`MciasConfig::ca_cert`], else the system's roots. Connections are
//!   pooled (HTTP/1.1).
//! - Every request is bounded by [`MciasConfig::timeout`]. At most 16
//!   requests to MCIAS are in flight; a validation that finds every slot
//!   taken fails at once with `Unavailable` (never cached) rather than
//!   waiting into the timeout.
//! - Tokens that cannot be MCIAS tokens ([`could_be_mcias_token`]: MCP's
//!   own `mcp_` tokens) are refused (`Invalid`) without asking.
//! - Concurrent validations of the same uncached token share one request.
//! - Results are cached, keyed by [`super::token_digest`] (the plaintext
//!   token is never kept): a valid caller for [`MciasConfig::cache_ttl`],
//!   but never past the token's own `expires_at`; an invalid or expired
//!   token for `min(cache_ttl, 5s)`, so that garbage tokens cannot hammer
//!   MCIAS. `Unavailable` is never cached. While MCIAS is unreachable a
//!   cached valid token keeps working until its entry expires; uncached
//!   tokens get `Unavailable`. At most [`MciasConfig::cache_size`] entries
//!   are kept (0 disables the cache); when full, expired entries are dropped
//!   first, then those closest to expiry.
//! - Roles: [`Role::Admin`] if any MCIAS role is in
//!   [`MciasConfig::admin_roles`], else [`Role::ReadOnly`] if any is in
//!   [`MciasConfig::readonly_roles`], else no role (the caller is
//!   authenticated but may call nothing).
//! - The token is never logged nor put in an error message.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

use super::{AuthError, Caller, Role, TokenValidator};

/// Path appended to [`MciasConfig::url`] for validation requests.
const VALIDATE_PATH: &str = "/v1/token/validate";
/// Most requests to MCIAS in flight at once; one more fails at once with
/// `Unavailable`.
const MAX_IN_FLIGHT: usize = 16;

/// Whether `token` could be an MCIAS token at all: not one of MCP's own
/// local tokens (`mcp_...`, which MCIAS never issues; one the token file
/// does not hold is refused without asking).
pub fn could_be_mcias_token(token: &str) -> bool {
    !token.starts_with(super::local::TOKEN_PREFIX)
}
/// Largest answer read from MCIAS, in bytes.
const MAX_ANSWER: usize = 64 * 1024;
/// Longest time an invalid or expired token is remembered.
const NEGATIVE_TTL_CAP: Duration = Duration::from_secs(5);
/// Longest time anything is cached, whatever the configuration says (keeps
/// `Instant` arithmetic far from overflow).
const MAX_CACHE_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest user name accepted from MCIAS, in bytes.
const MAX_USERNAME_LEN: usize = 256;
/// The [`Caller::source`] of callers vouched for by MCIAS.
const SOURCE: &str = "mcias";

/// How to reach MCIAS and how long to trust its answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MciasConfig {
    /// Base URL, `https://host[:port][/prefix]`.
    pub url: String,
    /// CA certificate (PEM) that signs MCIAS's certificate; the system's
    /// roots when `None`.
    pub ca_cert: Option<PathBuf>,
    /// How long a validation result is reused.
    pub cache_ttl: Duration,
    /// Most cached results kept.
    pub cache_size: usize,
    /// Time limit of one validation request.
    pub timeout: Duration,
    /// MCIAS roles that grant [`super::Role::Admin`].
    pub admin_roles: Vec<String>,
    /// MCIAS roles that grant [`super::Role::ReadOnly`].
    pub readonly_roles: Vec<String>,
}

/// Why an [`Mcias`] validator cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum MciasError {
    /// `url` is not an `https://` URL MCP can use.
    #[error("mcias.url {url:?}: {reason}")]
    Url {
        /// The configured URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `timeout` is zero.
    #[error("mcias.timeout: must be greater than 0")]
    ZeroTimeout,
    /// The CA certificate file cannot be read.
    #[error("mcias.ca_cert {}: cannot read: {source}", path.display())]
    CaCertRead {
        /// The configured file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA certificate file is not valid PEM or holds an unusable
    /// certificate.
    #[error("mcias.ca_cert {}: {reason}", path.display())]
    CaCertInvalid {
        /// The configured file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA certificate file holds no `CERTIFICATE` section.
    #[error("mcias.ca_cert {}: no certificates in the file (expected PEM `CERTIFICATE` sections)", path.display())]
    NoCertificates {
        /// The configured file.
        path: PathBuf,
    },
    /// No `ca_cert` is configured and the system has no usable root
    /// certificates.
    #[error("mcias: no usable system root certificates ({0}); set mcias.ca_cert")]
    NoSystemRoots(String),
    /// The TLS client configuration cannot be built.
    #[error("mcias: cannot set up TLS: {0}")]
    Tls(String),
}

/// A validator that asks MCIAS.
pub struct Mcias {
    inner: Arc<Inner>,
}

/// The state shared with the request tasks.
struct Inner {
    config: MciasConfig,
    /// `{url}/v1/token/validate`.
    endpoint: Uri,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Request slots: at most [`MAX_IN_FLIGHT`] requests at once.
    slots: Semaphore,
    cache: Mutex<Cache>,
    /// Requests in flight, by token digest. Lock order: `in_flight`, then
    /// `cache`.
    in_flight: Mutex<HashMap<String, watch::Receiver<Option<Outcome>>>>,
}

/// What a validation ends with.
type Outcome = Result<Caller, AuthError>;

impl Mcias {
    /// A validator for `config`: checks the URL (`https://` only), loads the
    /// CA certificate (or the system's roots) and prepares the HTTPS client.
    /// Makes no request.
    pub fn new(config: MciasConfig) -> Result<Mcias, MciasError> {
        let endpoint = endpoint(&config.url)?;
        if config.timeout.is_zero() {
            return Err(MciasError::ZeroTimeout);
        }
        let roots = match &config.ca_cert {
            Some(path) => roots_from_file(path)?,
            None => system_roots()?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| MciasError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let cache = Cache::new(config.cache_size);
        Ok(Mcias {
            inner: Arc::new(Inner {
                config,
                endpoint,
                client,
                slots: Semaphore::new(MAX_IN_FLIGHT),
                cache: Mutex::new(cache),
                in_flight: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Number of entries in the cache (valid, invalid and expired tokens),
    /// including entries whose time is up but that have not been dropped
    /// yet. Never more than [`MciasConfig::cache_size`]. Meant for tests.
    pub fn cached_len(&self) -> usize {
        lock(&self.inner.cache).entries.len()
    }
}

#[async_trait]
impl TokenValidator for Mcias {
    async fn validate_locally(&self, _token: &str) -> Result<Caller, AuthError> {
        Err(AuthError::Invalid)
    }

    async fn validate(&self, token: &str) -> Result<Caller, AuthError> {
        if !could_be_mcias_token(token) {
            return Err(AuthError::Invalid);
        }
        let digest = super::token_digest(token);
        let mut answer = {
            let mut in_flight = lock(&self.inner.in_flight);
            // Checked under the in-flight lock: a finishing request fills
            // the cache and leaves the in-flight table under the same lock,
            // so no request is missed nor duplicated.
            if let Some(hit) =
                lock(&self.inner.cache).get(&digest, Instant::now(), SystemTime::now())
            {
                return hit;
            }
            match in_flight.get(&digest) {
                // A sender that is gone (its task died) is replaced below.
                Some(rx) if rx.has_changed().is_ok() => rx.clone(),
                _ => {
                    let (tx, rx) = watch::channel(None);
                    in_flight.insert(digest.clone(), rx.clone());
                    let inner = Arc::clone(&self.inner);
                    let token = token.to_owned();
                    tokio::spawn(async move { inner.ask_and_record(digest, token, tx).await });
                    rx
                }
            }
        };
        let outcome = match answer.wait_for(Option::is_some).await {
            Ok(value) => value.clone(),
            Err(_) => None,
        };
        outcome.unwrap_or_else(|| {
            Err(AuthError::Unavailable(
                "the validation request ended without an answer".into(),
            ))
        })
    }
}

impl Inner {
    /// Asks MCIAS about `token` (within the time limit), caches the outcome,
    /// leaves the in-flight table and hands the outcome to the waiters.
    async fn ask_and_record(
        &self,
        digest: String,
        token: String,
        tx: watch::Sender<Option<Outcome>>,
    ) {
        let timeout = self.config.timeout;
        let outcome = match tokio::time::timeout(timeout, self.ask(&token)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(AuthError::Unavailable(format!(
                "mcias did not answer within {}",
                human_duration(timeout)
            ))),
        };
        drop(token);
        let outcome = match outcome {
            Ok(caller) if is_past(caller.expires_at, SystemTime::now()) => Err(AuthError::Expired),
            other => other,
        };
        match &outcome {
            Ok(caller) => {
                tracing::debug!(user = %caller.name, role = ?caller.role, "mcias: token valid")
            }
            Err(AuthError::Unavailable(reason)) => {
                tracing::warn!(%reason, "mcias: cannot validate a token")
            }
            Err(e) => tracing::debug!(error = %e, "mcias: token refused"),
        }
        let mut in_flight = lock(&self.in_flight);
        let now = Instant::now();
        let until = cache_until(&outcome, now, SystemTime::now(), self.config.cache_ttl);
        if let Some(until) = until {
            lock(&self.cache).insert(digest.clone(), outcome.clone(), until, now);
        }
        in_flight.remove(&digest);
        tx.send_replace(Some(outcome));
    }

    /// One validation request, without the time limit.
    async fn ask(&self, token: &str) -> Outcome {
        // Full slots fail at once: queueing would only turn a flood into
        // every caller's timeout.
        let _slot = self.slots.try_acquire().map_err(|_| {
            AuthError::Unavailable(format!(
                "mcias is busy: {MAX_IN_FLIGHT} validations are in flight"
            ))
        })?;
        let body = serde_json::to_vec(&ValidateRequest { token })
            .map_err(|e| AuthError::Unavailable(format!("cannot encode the request: {e}")))?;
        let request = http::Request::post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AuthError::Unavailable(format!("cannot build the request: {e}")))?;
        let response = self.client.request(request).await.map_err(|e| {
            AuthError::Unavailable(format!(
                "cannot reach mcias at {}: {}",
                self.config.url,
                error_chain(&e)
            ))
        })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(AuthError::Invalid);
        }
        if status != StatusCode::OK {
            return Err(AuthError::Unavailable(format!("mcias answered {status}")));
        }
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    AuthError::Unavailable("answer too large".into())
                } else {
                    AuthError::Unavailable(format!(
                        "cannot read mcias's answer: {}",
                        error_chain(e.as_ref())
                    ))
                }
            })?
            .to_bytes();
        parse_answer(&body, &self.config)
    }
}

/// The request body.
#[derive(Serialize)]
struct ValidateRequest<'a> {
    token: &'a str,
}

/// The answer body of a `200 OK`.
#[derive(Deserialize)]
struct ValidateAnswer {
    valid: bool,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    expires_at: Option<String>,
}

/// Turns the body of a `200 OK` answer into an outcome. Expiry is checked
/// by the caller.
fn parse_answer(body: &[u8], config: &MciasConfig) -> Outcome {
    let answer: ValidateAnswer = serde_json::from_slice(body)
        .map_err(|e| AuthError::Unavailable(format!("mcias answered invalid JSON: {e}")))?;
    if !answer.valid {
        return Err(AuthError::Invalid);
    }
    let name = match answer.username {
        Some(name)
            if !name.is_empty()
                && name.len() <= MAX_USERNAME_LEN
                && !name.chars().any(char::is_control) =>
        {
            name
        }
        _ => {
            return Err(AuthError::Unavailable(
                "mcias answered valid without a usable username".into(),
            ));
        }
    };
    let expires_at = match answer.expires_at {
        None => None,
        Some(text) => match chrono::DateTime::parse_from_rfc3339(&text) {
            Ok(t) => Some(SystemTime::from(t)),
            Err(e) => {
                return Err(AuthError::Unavailable(format!(
                    "mcias answered an invalid expires_at (expected RFC 3339): {e}"
                )));
            }
        },
    };
    let roles = answer.roles.unwrap_or_default();
    Ok(Caller {
        name,
        role: map_role(&roles, &config.admin_roles, &config.readonly_roles),
        expires_at,
        source: SOURCE,
    })
}

/// The strongest MCP role granted by the MCIAS `roles`.
fn map_role(roles: &[String], admin_roles: &[String], readonly_roles: &[String]) -> Option<Role> {
    if roles.iter().any(|r| admin_roles.contains(r)) {
        Some(Role::Admin)
    } else if roles.iter().any(|r| readonly_roles.contains(r)) {
        Some(Role::ReadOnly)
    } else {
        None
    }
}

/// Checks the configured URL and appends [`VALIDATE_PATH`].
fn endpoint(url: &str) -> Result<Uri, MciasError> {
    let bad = |reason: &str| MciasError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed: Uri = url.parse().map_err(|e| bad(&format!("not a URL: {e}")))?;
    match parsed.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => {}
        _ => return Err(bad("must be https://")),
    }
    let authority = parsed.authority().ok_or_else(|| bad("no host"))?;
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    if authority.as_str().contains('@') {
        return Err(bad("must not hold credentials"));
    }
    if parsed.query().is_some() || url.contains('#') {
        return Err(bad("must not have a query or fragment"));
    }
    let full = format!("{}{VALIDATE_PATH}", url.trim_end_matches('/'));
    full.parse()
        .map_err(|e| bad(&format!("not a URL once {VALIDATE_PATH} is appended: {e}")))
}

/// The certificates of the PEM file `path`.
fn roots_from_file(path: &std::path::Path) -> Result<rustls::RootCertStore, MciasError> {
    let pem = std::fs::read(path).map_err(|source| MciasError::CaCertRead {
        path: path.to_owned(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| MciasError::CaCertInvalid {
            path: path.to_owned(),
            reason: format!("not valid PEM: {e}"),
        })?;
        roots.add(cert).map_err(|e| MciasError::CaCertInvalid {
            path: path.to_owned(),
            reason: format!("unusable certificate: {e}"),
        })?;
    }
    if roots.is_empty() {
        return Err(MciasError::NoCertificates {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// The system's root certificates.
fn system_roots() -> Result<rustls::RootCertStore, MciasError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = if found.errors.is_empty() {
            "none found".to_owned()
        } else {
            found
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        return Err(MciasError::NoSystemRoots(why));
    }
    Ok(roots)
}

/// Until when `outcome` may be reused, or `None` when it must not be cached.
fn cache_until(
    outcome: &Outcome,
    now: Instant,
    sys_now: SystemTime,
    ttl: Duration,
) -> Option<Instant> {
    let keep = match outcome {
        Ok(caller) => match caller.expires_at {
            None => ttl,
            Some(t) => ttl.min(t.duration_since(sys_now).unwrap_or(Duration::ZERO)),
        },
        Err(AuthError::Invalid | AuthError::Expired) => ttl.min(NEGATIVE_TTL_CAP),
        Err(_) => return None,
    };
    if keep.is_zero() {
        return None;
    }
    now.checked_add(keep.min(MAX_CACHE_TTL))
}

/// Whether `expires_at` is at or before `now`.
fn is_past(expires_at: Option<SystemTime>, now: SystemTime) -> bool {
    expires_at.is_some_and(|t| t <= now)
}

/// A bounded map from token digest to a recent outcome.
struct Cache {
    entries: HashMap<String, Entry>,
    capacity: usize,
}

/// One cached outcome (`Ok`, `Invalid` or `Expired`).
struct Entry {
    outcome: Outcome,
    until: Instant,
}

impl Cache {
    fn new(capacity: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            capacity,
        }
    }

    /// The cached outcome for `digest`, if still usable. A valid caller
    /// whose own expiry has passed is `Expired`, never served.
    fn get(&mut self, digest: &str, now: Instant, sys_now: SystemTime) -> Option<Outcome> {
        let entry = self.entries.get(digest)?;
        if let Ok(caller) = &entry.outcome
            && is_past(caller.expires_at, sys_now)
        {
            return Some(Err(AuthError::Expired));
        }
        if entry.until <= now {
            self.entries.remove(digest);
            return None;
        }
        Some(entry.outcome.clone())
    }

    /// Caches `outcome` for `digest` until `until`, making room if needed:
    /// expired entries go first, then those closest to expiry.
    fn insert(&mut self, digest: String, outcome: Outcome, until: Instant, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        if !self.entries.contains_key(&digest) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, e| e.until > now);
            while self.entries.len() >= self.capacity {
                let Some(victim) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.until)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                self.entries.remove(&victim);
            }
        }
        self.entries.insert(digest, Entry { outcome, until });
    }
}

/// Locks `m`, ignoring poisoning (the protected maps stay consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `e` and its sources, joined by `: ` (hyper's top-level errors say little).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// `2s`, `1.5s` or `500ms`.
fn human_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() > 0 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MciasConfig {
        MciasConfig {
            url: "https://mcias.example:8443".into(),
            ca_cert: None,
            cache_ttl: Duration::from_secs(60),
            cache_size: 3,
            timeout: Duration::from_secs(2),
            admin_roles: vec!["admin".into(), "ops".into()],
            readonly_roles: vec!["viewer".into()],
        }
    }

    fn caller(name: &str, expires_at: Option<SystemTime>) -> Caller {
        Caller {
            name: name.into(),
            role: Some(Role::Admin),
            expires_at,
            source: SOURCE,
        }
    }

    #[test]
    fn url_validation() {
        let ok = endpoint("https://mcias.example:8443").expect("https");
        assert_eq!(
            ok.to_string(),
            "https://mcias.example:8443/v1/token/validate"
        );
        let ok = endpoint("https://mcias.example/").expect("trailing slash");
        assert_eq!(ok.path(), "/v1/token/validate");
        let ok = endpoint("https://127.0.0.1:9/auth/mcias/").expect("prefix");
        assert_eq!(ok.path(), "/auth/mcias/v1/token/validate");
        assert_eq!(ok.host(), Some("127.0.0.1"));
        for (bad, why) in [
            ("http://mcias.example", "must be https://"),
            ("mcias.example", "must be https://"),
            ("ftp://mcias.example", "must be https://"),
            ("https://u:p@mcias.example", "credentials"),
            ("https://mcias.example/?a=b", "query"),
            ("https://mcias.example/#x", ""),
            ("https://", ""),
            ("", ""),
            ("https://mcias example", ""),
        ] {
            let err = endpoint(bad).expect_err(bad).to_string();
            assert!(err.starts_with(&format!("mcias.url {bad:?}: ")), "{err}");
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn new_refuses_http_and_bad_ca_files() {
        let mut c = config();
        c.url = "http://mcias.example".into();
        let err = Mcias::new(c).err().expect("http refused").to_string();
        assert!(err.contains("must be https://"), "{err}");

        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let mut c = config();
        c.ca_cert = Some(missing.clone());
        let err = Mcias::new(c).err().expect("missing file").to_string();
        assert!(
            err.starts_with(&format!(
                "mcias.ca_cert {}: cannot read: ",
                missing.display()
            )),
            "{err}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let mut c = config();
        c.ca_cert = Some(empty);
        let err = Mcias::new(c).err().expect("no certs").to_string();
        assert!(err.contains("no certificates in the file"), "{err}");

        let mut c = config();
        c.timeout = Duration::ZERO;
        assert!(matches!(Mcias::new(c), Err(MciasError::ZeroTimeout)));
    }

    #[test]
    fn role_mapping() {
        let c = config();
        let m = |roles: &[&str]| {
            let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
            map_role(&roles, &c.admin_roles, &c.readonly_roles)
        };
        assert_eq!(m(&["ops"]), Some(Role::Admin));
        assert_eq!(m(&["viewer", "admin"]), Some(Role::Admin));
        assert_eq!(m(&["viewer"]), Some(Role::ReadOnly));
        assert_eq!(m(&["viewer", "other"]), Some(Role::ReadOnly));
        assert_eq!(m(&["other"]), None);
        assert_eq!(m(&[]), None);
        // Role names are matched exactly.
        assert_eq!(m(&["Admin"]), None);
    }

    #[test]
    fn answer_parsing() {
        let c = config();
        let ok = parse_answer(
            br#"{"valid": true, "username": "kyle", "roles": ["admin"], "expires_at": "2026-11-23T18:00:00Z", "extra": 1}"#,
            &c,
        )
        .expect("valid");
        assert_eq!(ok.name, "kyle");
        assert_eq!(ok.role, Some(Role::Admin));
        assert_eq!(ok.source, "mcias");
        let want = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_456_800);
        assert_eq!(ok.expires_at, Some(want));

        let ok = parse_answer(
            br#"{"valid": true, "username": "v", "roles": ["viewer"], "expires_at": null}"#,
            &c,
        )
        .expect("null expiry");
        assert_eq!((ok.role, ok.expires_at), (Some(Role::ReadOnly), None));
        let ok = parse_answer(br#"{"valid": true, "username": "n"}"#, &c).expect("no roles");
        assert_eq!(ok.role, None);
        let ok = parse_answer(br#"{"valid": true, "username": "n", "roles": null}"#, &c)
            .expect("null roles");
        assert_eq!(ok.role, None);
        // Offsets are honoured.
        let ok = parse_answer(
            br#"{"valid": true, "username": "n", "expires_at": "2026-11-23T20:00:00+02:00"}"#,
            &c,
        )
        .expect("offset");
        assert_eq!(ok.expires_at, Some(want));

        assert_eq!(
            parse_answer(br#"{"valid": false}"#, &c),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            parse_answer(br#"{"valid": false, "username": "kyle"}"#, &c),
            Err(AuthError::Invalid)
        );
        for broken in [
            &b""[..],
            b"not json",
            b"{}",
            b"[]",
            br#"{"valid": "yes"}"#,
            br#"{"valid": true}"#,
            br#"{"valid": true, "username": ""}"#,
            br#"{"valid": true, "username": "a\nb"}"#,
            br#"{"valid": true, "username": "k", "roles": "admin"}"#,
            br#"{"valid": true, "username": "k", "expires_at": "tomorrow"}"#,
        ] {
            assert!(
                matches!(parse_answer(broken, &c), Err(AuthError::Unavailable(_))),
                "{}",
                String::from_utf8_lossy(broken)
            );
        }
    }

    #[test]
    fn cache_ttls() {
        let now = Instant::now();
        let sys = SystemTime::now();
        let ttl = Duration::from_secs(60);
        // Valid: the TTL, capped by the token's expiry.
        assert_eq!(
            cache_until(&Ok(caller("a", None)), now, sys, ttl),
            Some(now + ttl)
        );
        let soon = sys + Duration::from_secs(10);
        assert_eq!(
            cache_until(&Ok(caller("a", Some(soon))), now, sys, ttl),
            Some(now + Duration::from_secs(10))
        );
        assert_eq!(
            cache_until(&Ok(caller("a", Some(sys))), now, sys, ttl),
            None
        );
        // Negative: at most 5 s.
        assert_eq!(
            cache_until(&Err(AuthError::Invalid), now, sys, ttl),
            Some(now + Duration::from_secs(5))
        );
        assert_eq!(
            cache_until(&Err(AuthError::Expired), now, sys, ttl),
            Some(now + Duration::from_secs(5))
        );
        assert_eq!(
            cache_until(&Err(AuthError::Invalid), now, sys, Duration::from_secs(2)),
            Some(now + Duration::from_secs(2))
        );
        // Never cached.
        assert_eq!(
            cache_until(&Err(AuthError::Unavailable("down".into())), now, sys, ttl),
            None
        );
        // A huge TTL does not overflow.
        assert!(cache_until(&Ok(caller("a", None)), now, sys, Duration::MAX).is_some());
    }

    #[test]
    fn cache_bound_and_eviction() {
        let now = Instant::now();
        let sys = SystemTime::now();
        let s = Duration::from_secs;
        let mut cache = Cache::new(3);
        cache.insert("a".into(), Ok(caller("a", None)), now + s(30), now);
        cache.insert("b".into(), Ok(caller("b", None)), now + s(10), now);
        cache.insert("c".into(), Err(AuthError::Invalid), now + s(20), now);
        assert_eq!(cache.entries.len(), 3);
        // Full: the entry closest to expiry ("b") goes.
        cache.insert("d".into(), Ok(caller("d", None)), now + s(40), now);
        assert_eq!(cache.entries.len(), 3);
        assert!(cache.get("b", now, sys).is_none());
        assert_eq!(cache.get("a", now, sys), Some(Ok(caller("a", None))));
        assert_eq!(cache.get("c", now, sys), Some(Err(AuthError::Invalid)));
        // Replacing an existing key evicts nothing.
        cache.insert("a".into(), Ok(caller("a2", None)), now + s(50), now);
        assert_eq!(cache.entries.len(), 3);
        assert_eq!(cache.get("a", now, sys), Some(Ok(caller("a2", None))));
        assert!(cache.get("d", now, sys).is_some());
        // Expired entries go first, all of them.
        let later = now + s(45);
        cache.insert("e".into(), Ok(caller("e", None)), later + s(1), later);
        assert_eq!(cache.entries.len(), 2, "c (20s) and d (40s) expired");
        assert!(cache.get("a", later, sys).is_some());
        assert!(cache.get("e", later, sys).is_some());
        // An expired entry is a miss and is dropped.
        assert!(cache.get("e", later + s(2), sys).is_none());
        assert_eq!(cache.entries.len(), 1);

        // Many inserts never exceed the bound.
        let mut cache = Cache::new(5);
        for i in 0..100u64 {
            cache.insert(
                format!("k{i}"),
                Err(AuthError::Invalid),
                now + s(i % 7 + 1),
                now,
            );
            assert!(cache.entries.len() <= 5);
        }
        // Capacity 0: no cache.
        let mut cache = Cache::new(0);
        cache.insert("a".into(), Ok(caller("a", None)), now + s(30), now);
        assert!(cache.entries.is_empty());
    }

    #[test]
    fn cached_caller_past_its_expiry_is_expired() {
        let now = Instant::now();
        let sys = SystemTime::now();
        let mut cache = Cache::new(3);
        let exp = sys + Duration::from_secs(5);
        cache.insert(
            "a".into(),
            Ok(caller("a", Some(exp))),
            now + Duration::from_secs(60),
            now,
        );
        assert!(matches!(cache.get("a", now, sys), Some(Ok(_))));
        assert_eq!(
            cache.get("a", now, exp + Duration::from_secs(1)),
            Some(Err(AuthError::Expired))
        );
        assert_eq!(cache.get("a", now, exp), Some(Err(AuthError::Expired)));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_secs(2)), "2s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human_duration(Duration::from_millis(500)), "500ms");
    }

    #[test]
    fn request_body_is_json_with_the_token() {
        let body = serde_json::to_string(&ValidateRequest { token: "a\"b" }).expect("encode");
        assert_eq!(body, r#"{"token":"a\"b"}"#);
    }
}
