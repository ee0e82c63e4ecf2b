//! Runtime backends for MCP: the async [`Runtime`] trait that the agent's
//! reconcile logic drives, and its implementations.
//!
//! - [`podman::Podman`] speaks podman's libpod REST API over its unix socket
//!   (one HTTP request per operation, never one `podman` process per call).
//! - [`qemu::Qemu`] runs unikernel VMs in `qemu-system-x86_64`, one state
//!   directory per VM, controlled through QMP.
//!
//! Every instance MCP creates carries the labels in [`labels`], so MCP can
//! tell its own containers from the others on the node.

pub mod combined;
pub mod error;
pub mod podman;
pub mod qemu;
pub mod spec;

pub use error::{RuntimeError, RuntimeResult};
pub use mcp_core::instance::{
    HealthSpec, InstanceSpec, KernelBoot, PortMapping, RuntimeKind, VolumeMount, instance_name,
    labels,
};
pub use spec::{
    EventStream, HealthReport, InstanceDetails, InstanceInfo, InstanceState, LogChunk, LogOptions,
    LogStream, LogStreamKind, RuntimeEvent, RuntimeVersion,
};

use std::time::Duration;

use async_trait::async_trait;

/// A node's VM support, as [`Runtime::vm_support`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSupport {
    /// The QEMU binary VMs run with.
    pub qemu: String,
    /// The accelerator VMs get: `kvm` or `tcg`, or `auto` while undecided.
    pub accel: String,
}

/// A backend that runs service components: containers or VMs.
///
/// Names are instance names (`<service>-<component>`); an id works wherever a
/// name does. Operations on an instance that does not exist return
/// [`RuntimeError::NotFound`], except [`Runtime::inspect`] which returns `None`.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Which kind of runtime this is.
    fn kind(&self) -> RuntimeKind;

    /// What the node can do with VMs: `None` when this runtime runs none.
    async fn vm_support(&self) -> Option<VmSupport> {
        None
    }

    /// Checks that the backend answers, and reports its version.
    async fn ping(&self) -> RuntimeResult<RuntimeVersion>;

    /// Whether `image` is present on the node.
    async fn image_exists(&self, image: &str) -> RuntimeResult<bool>;

    /// Pulls `image` onto the node.
    async fn pull(&self, image: &str) -> RuntimeResult<()>;

    /// Creates (but does not start) an instance; returns its id.
    async fn create(&self, spec: &InstanceSpec) -> RuntimeResult<String>;

    /// Starts a created or stopped instance. Starting a running one is not an error.
    async fn start(&self, name: &str) -> RuntimeResult<()>;

    /// Stops an instance, killing it after `timeout`. Stopping a stopped one is not an error.
    async fn stop(&self, name: &str, timeout: Duration) -> RuntimeResult<()>;

    /// Removes an instance; `force` stops it first if it runs.
    async fn remove(&self, name: &str, force: bool) -> RuntimeResult<()>;

    /// Renames an instance.
    async fn rename(&self, name: &str, new_name: &str) -> RuntimeResult<()>;

    /// Everything the runtime knows of one instance, or `None` if it does not exist.
    async fn inspect(&self, name: &str) -> RuntimeResult<Option<InstanceInfo>>;

    /// Every instance on the node, managed or not, running or not.
    async fn list(&self) -> RuntimeResult<Vec<InstanceInfo>>;

    /// The logs of an instance, optionally followed until it stops or the
    /// stream is dropped.
    async fn logs(&self, name: &str, options: &LogOptions) -> RuntimeResult<LogStream>;

    /// Instance events from now on, as they happen. Returns once the runtime
    /// has accepted the subscription.
    async fn events(&self) -> RuntimeResult<EventStream>;

    /// Runs the instance's own health check ([`InstanceSpec::health`]) once,
    /// now, and reports whether it passed and what it printed.
    ///
    /// A failed check is a report with `healthy: false`, not an error.
    /// Errors: [`RuntimeError::NotFound`] for a missing instance,
    /// [`RuntimeError::Invalid`] when the instance has no health check (or
    /// the runtime runs none), [`RuntimeError::Conflict`] when it is not
    /// running. The default implementation is for runtimes that run no
    /// health checks.
    async fn run_health_check(&self, name: &str) -> RuntimeResult<HealthReport> {
        Err(RuntimeError::Invalid(format!(
            "cannot run the health check of {name}: the {} runtime does not run health checks",
            self.kind()
        )))
    }
}
