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

/// The timer and the validation in flight of one body of an RPC.
pub struct Recheck {
    credential: Credential,
    sleep: Option<Pin<Box<Sleep>>>,
    checking: Option<BoxFuture<'static, Result<(), String>>>,
}

impl Recheck {
    /// Starts watching `credential`.
    pub fn new(credential: Credential) -> Recheck {
        Recheck {
            credential,
            sleep: None,
            checking: None,
        }
    }

    /// When the next check is due: [`RECHECK_EVERY`] from now, or the
    /// token's expiry when that comes first.
    fn next_check(&self) -> Instant {
        let every = Instant::now() + RECHECK_EVERY;
        match self.credential.expires_at {
            Some(at) => {
                let left = at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                every.min(Instant::now() + left)
            }
            None => every,
        }
    }

    /// `Ready` with the reason once the token no longer validates for the
    /// method (or the other side of the RPC found so); `Pending` otherwise,
    /// with a wake-up registered for the next check.
    pub fn poll_revoked(&mut self, cx: &mut Context<'_>) -> Poll<String> {
        loop {
            if let Some(reason) = self.credential.revoked.reason() {
                return Poll::Ready(reason.to_string());
            }
            if let Some(check) = self.checking.as_mut() {
                match check.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(result) => {
                        self.checking = None;
                        if let Err(reason) = result {
                            let reason = self.credential.revoked.set(reason).to_string();
                            return Poll::Ready(reason);
                        }
                        self.sleep = None;
                    }
                }
            }
            let due = self.next_check();
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let c = self.credential.clone();
            self.checking = Some(Box::pin(async move {
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
            }));
        }
    }
}
