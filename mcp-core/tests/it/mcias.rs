//! `auth::mcias::Mcias` against a small MCIAS double that speaks the
//! documented wire format over real HTTPS (a rustls server with a CA and a
//! server certificate made by rcgen); the double lives in
//! `tests/common/mcias_double.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::mcias_double::{Double, Mode, make_ca};
use mcp_core::auth::mcias::Mcias;
use mcp_core::auth::{AuthError, Role, TokenValidator};
use tokio::task::JoinSet;

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
    // The double never answers: the client's own timeout ended the wait.
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

#[tokio::test]
async fn full_slots_fail_at_once_and_local_shaped_tokens_are_never_sent() {
    let double = Double::start().await;
    double.add_user("slow", "kyle", &["admin"], None);
    double.set_delay(Duration::from_millis(1500));
    let mcias = Arc::new(double.mcias());
    // Sixteen different tokens fill every slot for 1.5 s.
    let mut tasks = JoinSet::new();
    for i in 0..16 {
        let mcias = Arc::clone(&mcias);
        tasks.spawn(async move { mcias.validate(&format!("filler-{i}")).await });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The seventeenth fails at once ("busy": no slot was free when it
    // asked) rather than waiting for one.
    let reason = unavailable_reason(mcias.validate("slow").await);
    assert!(reason.contains("busy"), "{reason}");
    while tasks.join_next().await.is_some() {}
    // A slot free again, it is asked.
    assert!(mcias.validate("slow").await.is_ok());

    // MCP's own token shape is never MCIAS's: refused without asking.
    let before = double.requests();
    let local = mcp_core::auth::local::generate_token();
    assert_eq!(mcias.validate(&local).await, Err(AuthError::Invalid));
    assert_eq!(double.requests(), before);
}
