//! Streams that end with their token: [`Recheck`] validates an RPC's token
//! again every [`RECHECK_EVERY`] (and at the moment it expires), so a call
//! that stays open (a followed log, a file stream, a health watch) ends
//! with `Unauthenticated` once its token is removed, revoked or expired,
//! rather than outliving it.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tokio::time::{Instant, Sleep};

use super::{TokenValidator, policy};

/// How often an open RPC's token is validated again. A removed or revoked
/// token ends its streams within this (an MCIAS token once its cache entry
/// lapses too); an expiring one at its expiry.
pub const RECHECK_EVERY: Duration = Duration::from_secs(10);

/// Why an RPC's token stopped being good enough, once it did; shared by
/// the request and the response of one RPC and read by its audit record.
#[derive(Debug, Clone, Default)]
pub struct Revoked(Arc<OnceLock<String>>);

impl Revoked {
    /// The reason, once the token was found wanting.
    pub fn reason(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }

    fn set(&self, reason: String) -> &str {
        let _ = self.0.set(reason);
        self.0.get().map_or("", String::as_str)
    }
}

/// What is needed to validate one RPC's token again.
#[derive(Clone)]
pub struct Credential {
    /// The validator that accepted it.
    pub validator: Arc<dyn TokenValidator>,
    /// The token (never logged).
    pub token: Arc<str>,
    /// The method, whose role the token must still grant.
    pub path: Arc<str>,
    /// When the token expires, if it does.
    pub expires_at: Option<SystemTime>,
    /// Shared with the other side of the RPC.
    pub revoked: Revoked,
}

/// When one body of an RPC checks its token next, and the validation in
/// flight. Cheap for the calls that end quickly: no timer is set until the
/// body waits (a quiet stream), and the clock is read once per frame.
pub struct Recheck {
    credential: Credential,
    /// When the next check is due.
    due: Instant,
    /// Wakes a waiting body when the check is due.
    sleep: Option<Pin<Box<Sleep>>>,
    checking: Option<BoxFuture<'static, Result<(), String>>>,
}

impl Recheck {
    /// Starts watching `credential`.
    pub fn new(credential: Credential) -> Recheck {
        let due = next_check(credential.expires_at);
        Recheck {
            credential,
            due,
            sleep: None,
            checking: None,
        }
    }

    /// `Ready` with the reason once the token no longer validates for the
    /// method (or the other side of the RPC found so). Starts a validation
    /// when one is due and drives it; sets no timer (see
    /// [`Recheck::arm`]).
    pub fn poll_revoked(&mut self, cx: &mut Context<'_>) -> Poll<String> {
        if let Some(reason) = self.credential.revoked.reason() {
            return Poll::Ready(reason.to_string());
        }
        if self.checking.is_none() && Instant::now() >= self.due {
            self.checking = Some(validate_again(self.credential.clone()));
        }
        if let Some(check) = self.checking.as_mut() {
            match check.as_mut().poll(cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => {
                    self.checking = None;
                    self.due = next_check(self.credential.expires_at);
                    self.sleep = None;
                }
                Poll::Ready(Err(reason)) => {
                    self.checking = None;
                    return Poll::Ready(self.credential.revoked.set(reason).to_string());
                }
            }
        }
        Poll::Pending
    }

    /// For a body about to wait: makes sure it is woken when the next check
    /// is due.
    pub fn arm(&mut self, cx: &mut Context<'_>) {
        if self.checking.is_some() {
            return; // the validation in flight wakes it
        }
        let due = self.due;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if sleep.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
    }
}

/// When a check made now is next due: [`RECHECK_EVERY`] from now, or the
/// token's expiry when that comes first.
fn next_check(expires_at: Option<SystemTime>) -> Instant {
    let now = Instant::now();
    let every = now + RECHECK_EVERY;
    match expires_at {
        Some(at) => {
            let left = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            every.min(now + left)
        }
        None => every,
    }
}

/// Validates the credential's token again for its method.
fn validate_again(c: Credential) -> BoxFuture<'static, Result<(), String>> {
    Box::pin(async move {
        let caller = c
            .validator
            .validate(&c.token)
            .await
            .map_err(|e| format!("the call's token is no longer valid: {e}"))?;
        let needed = policy::required_role(&c.path);
        match caller.role {
            Some(role) if role.permits(needed) => Ok(()),
            _ => Err(format!(
                "the call's token no longer grants the {needed} role"
            )),
        }
    })
}
