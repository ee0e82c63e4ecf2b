//! How many failed authentications a peer may cause ([`FailureBudget`]):
//! a token bucket per IP address. A peer that spent its budget has its
//! tokens checked only locally (the token file) until the budget refills,
//! so a flood of made-up tokens costs a hash lookup each and never reaches
//! MCIAS.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Failed authentications a peer may cause at once.
pub const BURST: f64 = 50.0;
/// Failed authentications a peer may cause per second, over time.
pub const PER_SECOND: f64 = 5.0;
/// Peers tracked at most; past it, those whose budget is whole again are
/// forgotten.
const MAX_PEERS: usize = 10_000;

/// The failure budgets of every peer.
#[derive(Debug, Default)]
pub struct FailureBudget {
    peers: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    left: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> Bucket {
        let gained = now.duration_since(self.at).as_secs_f64() * PER_SECOND;
        Bucket {
            left: (self.left + gained).min(BURST),
            at: now,
        }
    }
}

impl FailureBudget {
    /// Whether `peer` may still have its tokens checked everywhere (its
    /// budget is not spent).
    pub fn allows(&self, peer: IpAddr) -> bool {
        let now = Instant::now();
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.get(&peer).is_none_or(|b| b.refilled(now).left >= 1.0)
    }

    /// Records a failed authentication of `peer`.
    pub fn spend(&self, peer: IpAddr) {
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, b| b.refilled(now).left < BURST);
        }
        let bucket = peers.entry(peer).or_insert(Bucket {
            left: BURST,
            at: now,
        });
        let mut b = bucket.refilled(now);
        b.left = (b.left - 1.0).max(0.0);
        *bucket = b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_spends_its_own_budget_only() {
        let budget = FailureBudget::default();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..(BURST as usize) {
            assert!(budget.allows(a));
            budget.spend(a);
        }
        assert!(!budget.allows(a), "a spent its budget");
        assert!(budget.allows(b), "b did not");
        std::thread::sleep(std::time::Duration::from_millis(
            (1000.0 / PER_SECOND) as u64 + 50,
        ));
        assert!(budget.allows(a), "a's budget refills");
    }
}
