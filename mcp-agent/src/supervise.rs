//! Supervision of the agent's long-running background tasks (the monitor,
//! the runtime event follower, the runtime watcher, the event pruner).
//!
//! Each is meant to run for the agent's whole life. Should one end or
//! panic, the [`Supervisor`] notices at once: it logs an error, reports the
//! restart (the agent records it as an event), and starts the task again
//! after a backoff (1 s, doubling to a minute; back to 1 s once a run lasted
//! a minute), so that a task that fails at once does not spin. Dropping the
//! supervisor stops every task.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

/// First wait before a task that ended is started again.
pub const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait before a restart.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Event kind recorded when a background task is restarted.
pub const TASK_RESTARTED: &str = "task-restarted";

/// Hears of each restart: the task's name and how it ended (`panicked:
/// ...`, `ended`).
pub type RestartHook = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs background tasks, restarting any that ends; stops them all when
/// dropped.
pub struct Supervisor {
    on_restart: RestartHook,
    tasks: Vec<AbortOnDrop>,
    backoff_min: Duration,
}

impl Supervisor {
    /// A supervisor telling `on_restart` of every restart.
    pub fn new(on_restart: RestartHook) -> Supervisor {
        Supervisor {
            on_restart,
            tasks: Vec::new(),
            backoff_min: RESTART_BACKOFF_MIN,
        }
    }

    /// The same with a first backoff of `min` (tests).
    #[cfg(test)]
    fn with_backoff(mut self, min: Duration) -> Supervisor {
        self.backoff_min = min;
        self
    }

    /// Runs the task `make` builds, named `name` in logs and events, and a
    /// new one each time it ends, for as long as the supervisor lives.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, make: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let hook = self.on_restart.clone();
        let backoff_min = self.backoff_min;
        let watcher = tokio::spawn(async move {
            let mut backoff = backoff_min;
            loop {
                let started = Instant::now();
                // Aborted with the watcher, when the supervisor is dropped.
                let mut run = AbortOnDrop(tokio::spawn(make()));
                let how = match (&mut run.0).await {
                    Ok(()) => "ended".to_string(),
                    Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e)),
                    // Cancelled: only by the runtime shutting down.
                    Err(_) => return,
                };
                if started.elapsed() >= RESTART_BACKOFF_MAX {
                    backoff = backoff_min;
                }
                tracing::error!(
                    task = name,
                    restart_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                    "background task {how}; restarting it"
                );
                hook(name, &how);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
            }
        });
        self.tasks.push(AbortOnDrop(watcher));
    }
}

/// What a panicking task said.
fn panic_message(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-text panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// What a hook heard: (task, how it ended) per restart.
    type Heard = Arc<Mutex<Vec<(String, String)>>>;

    /// A hook collecting what it hears.
    fn recorder() -> (RestartHook, Heard) {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let sink = heard.clone();
        let hook: RestartHook = Arc::new(move |name: &str, how: &str| {
            sink.lock()
                .expect("lock")
                .push((name.to_string(), how.to_string()));
        });
        (hook, heard)
    }

    #[tokio::test]
    async fn a_task_that_panics_or_ends_is_restarted_and_reported() {
        let (hook, heard) = recorder();
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let mut sup = Supervisor::new(hook).with_backoff(Duration::from_millis(10));
        sup.spawn("flaky", move || {
            let runs = counted.clone();
            async move {
                match runs.fetch_add(1, Ordering::SeqCst) {
                    0 => panic!("the clock overflowed"),
                    1 => {}
                    // The third run lives on.
                    _ => std::future::pending::<()>().await,
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while runs.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "not restarted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let heard = heard.lock().expect("lock").clone();
        assert_eq!(
            heard,
            [
                (
                    "flaky".to_string(),
                    "panicked: the clock overflowed".to_string()
                ),
                ("flaky".to_string(), "ended".to_string()),
            ]
        );
    }

    #[tokio::test]
    async fn dropping_the_supervisor_stops_its_tasks() {
        let (hook, heard) = recorder();
        let alive = Arc::new(AtomicU32::new(0));
        struct Alive(Arc<AtomicU32>);
        impl Drop for Alive {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let mut sup = Supervisor::new(hook);
        let counter = alive.clone();
        sup.spawn("forever", move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let _alive = Alive(counter);
                std::future::pending::<()>().await
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(sup);
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive.load(Ordering::SeqCst) != 0 {
            assert!(Instant::now() < deadline, "still running");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            heard.lock().expect("lock").is_empty(),
            "an abort is no restart"
        );
    }
}
