//! A component's health: how its check is probed ([`probe`]), and what the
//! checks found ([`HealthBoard`]), as the deploy's gate
//! (`reconcile::gate`) and then the monitor's checks (`monitor::checks`)
//! report it. Status shows it, and drift `unhealthy` comes from it.

pub mod probe;

pub use probe::{ProbeError, Target};

/// A component's health as its checks after the deploy find it (see
/// [`crate::monitor`]'s health checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// Not judged yet: no check has counted since the instance started.
    Starting,
    /// The last check passed.
    Healthy,
    /// `retries` checks in a row failed.
    Unhealthy,
}

impl HealthState {
    /// `starting`, `healthy` or `unhealthy`, as status shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Starting => "starting",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

/// One component's health, for one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentHealth {
    /// The instance checked (its id): the health of another is not its.
    pub instance: String,
    /// What the checks found.
    pub state: HealthState,
    /// Failed checks in a row.
    pub failures: u32,
    /// What the last failed check said, while the failures last.
    pub last_failure: Option<String>,
}

/// The health of every component with a check, per (service, component):
/// written by the deploy gate (a passed gate is healthy) and the monitor's
/// checks, read by status.
#[derive(Debug, Default)]
pub struct HealthBoard {
    entries: std::sync::Mutex<std::collections::HashMap<(String, String), ComponentHealth>>,
}

impl HealthBoard {
    fn entries(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String), ComponentHealth>>
    {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The health of `component` of `service` for the instance `id`; `None`
    /// when none is known for that instance.
    pub fn get(&self, service: &str, component: &str, id: &str) -> Option<ComponentHealth> {
        self.entries()
            .get(&(service.to_string(), component.to_string()))
            .filter(|h| h.instance == id)
            .cloned()
    }

    /// Records the health of `component` of `service`.
    pub fn set(&self, service: &str, component: &str, health: ComponentHealth) {
        self.entries()
            .insert((service.to_string(), component.to_string()), health);
    }

    /// Forgets the health of `component` of `service`.
    pub fn forget(&self, service: &str, component: &str) {
        self.entries()
            .remove(&(service.to_string(), component.to_string()));
    }
}
