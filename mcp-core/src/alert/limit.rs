//! Alert rate limiting per key (a component, a node), with the clock
//! passed in.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What to do with one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run the alert program.
    Send,
    /// Do not: the key used up its burst within the window.
    Suppress {
        /// Whether this is the first suppression in the current window (the
        /// one to record as an `alert-suppressed` event).
        first_in_window: bool,
        /// When the next alert for this key would be sent.
        until: Instant,
    },
}

#[derive(Debug, Default)]
struct KeyState {
    /// Times alerts were sent, oldest first, within the window.
    sent: VecDeque<Instant>,
    /// The end of the window in which a suppression was already noted.
    noted_until: Option<Instant>,
}

/// At most `burst` alerts per `window` per key (a sliding window).
///
/// Alerts beyond that are suppressed; [`Decision::Suppress`] says whether
/// the suppression is the first since the window filled up, so it can be
/// recorded once and not once per suppressed alert.
#[derive(Debug)]
pub struct RateLimiter<K> {
    burst: usize,
    window: Duration,
    keys: HashMap<K, KeyState>,
}

/// The longest window a [`RateLimiter`] keeps (the configuration allows at
/// most a week): a longer one is cut to it, so that adding it to a time can
/// never overflow the clock.
pub const MAX_WINDOW: Duration = Duration::from_secs(365 * 86_400);

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// At most `burst` (at least 1) alerts per `window` (at most
    /// [`MAX_WINDOW`]) per key.
    pub fn new(burst: u32, window: Duration) -> RateLimiter<K> {
        RateLimiter {
            burst: usize::try_from(burst).unwrap_or(usize::MAX).max(1),
            window: window.min(MAX_WINDOW),
            keys: HashMap::new(),
        }
    }

    /// The most alerts per window per key.
    pub fn burst(&self) -> usize {
        self.burst
    }

    /// Decides on an alert for `key` at `now` (and counts it when sent).
    pub fn check(&mut self, key: &K, now: Instant) -> Decision {
        if self.keys.len() > 1024 {
            self.forget_idle(now);
        }
        let window = self.window;
        let state = self.keys.entry(key.clone()).or_default();
        while state
            .sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            state.sent.pop_front();
        }
        if state.sent.len() < self.burst {
            state.sent.push_back(now);
            return Decision::Send;
        }
        let until = state.sent.front().map_or(now, |t| *t + window);
        let first_in_window = state.noted_until.is_none_or(|u| now >= u);
        if first_in_window {
            state.noted_until = Some(until);
        }
        Decision::Suppress {
            first_in_window,
            until,
        }
    }

    /// Drops the state of keys with nothing in their window.
    fn forget_idle(&mut self, now: Instant) {
        let window = self.window;
        self.keys.retain(|_, s| {
            s.sent
                .back()
                .is_some_and(|t| now.saturating_duration_since(*t) < window)
                || s.noted_until.is_some_and(|u| now < u)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component's key, as the agent's monitor uses them.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    struct ComponentKey(String, String);

    impl ComponentKey {
        fn new(service: impl Into<String>, component: impl Into<String>) -> ComponentKey {
            ComponentKey(service.into(), component.into())
        }
    }

    const W: Duration = Duration::from_secs(300);

    #[test]
    fn burst_then_suppressed_then_free_again() {
        let mut r = RateLimiter::new(3, W);
        let k = ComponentKey::new("a", "web");
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(r.check(&k, t0 + Duration::from_secs(i)), Decision::Send);
        }
        // The fourth within the window is suppressed, noted once.
        assert_eq!(
            r.check(&k, t0 + Duration::from_secs(10)),
            Decision::Suppress {
                first_in_window: true,
                until: t0 + W
            }
        );
        assert_eq!(
            r.check(&k, t0 + Duration::from_secs(20)),
            Decision::Suppress {
                first_in_window: false,
                until: t0 + W
            }
        );
        // The first send leaves the window: one more may go.
        assert_eq!(r.check(&k, t0 + W), Decision::Send);
        // Full again; a new window, so the suppression is noted again.
        assert_eq!(
            r.check(&k, t0 + W + Duration::from_secs(0)),
            Decision::Suppress {
                first_in_window: true,
                until: t0 + W + Duration::from_secs(1)
            }
        );
        // Long after, everything is free.
        let later = t0 + W * 3;
        for _ in 0..3 {
            assert_eq!(r.check(&k, later), Decision::Send);
        }
    }

    #[test]
    fn components_have_separate_budgets() {
        let mut r = RateLimiter::new(1, W);
        let now = Instant::now();
        let a = ComponentKey::new("a", "web");
        let b = ComponentKey::new("a", "db");
        assert_eq!(r.check(&a, now), Decision::Send);
        assert_eq!(r.check(&b, now), Decision::Send);
        assert!(matches!(r.check(&a, now), Decision::Suppress { .. }));
        assert!(matches!(r.check(&b, now), Decision::Suppress { .. }));
        assert_eq!(r.check(&ComponentKey::new("b", "web"), now), Decision::Send);
    }

    #[test]
    fn a_window_too_long_for_the_clock_is_cut_not_a_panic() {
        let mut r = RateLimiter::new(1, Duration::from_secs(u64::MAX));
        let k = ComponentKey::new("a", "web");
        let now = Instant::now();
        assert_eq!(r.check(&k, now), Decision::Send);
        assert_eq!(
            r.check(&k, now),
            Decision::Suppress {
                first_in_window: true,
                until: now + MAX_WINDOW
            }
        );
    }

    #[test]
    fn idle_components_are_forgotten() {
        let mut r = RateLimiter::new(1, W);
        let t0 = Instant::now();
        for i in 0..1100 {
            r.check(&ComponentKey::new("s", format!("c{i}")), t0);
        }
        let later = t0 + W;
        r.check(&ComponentKey::new("s", "new"), later);
        assert!(r.keys.len() <= 2, "{}", r.keys.len());
    }
}
