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
pub use spec::{
    EventStream, HealthReport, HealthSpec, InstanceDetails, InstanceInfo, InstanceSpec,
    InstanceState, KernelBoot, LogChunk, LogOptions, LogStream, LogStreamKind, PortMapping,
    RuntimeEvent, RuntimeKind, RuntimeVersion, VolumeMount,
};

use std::time::Duration;

use async_trait::async_trait;

/// Label keys MCP puts on every instance it creates.
pub mod labels {
    /// Present (value `"true"`) on every instance MCP manages.
    pub const MANAGED: &str = "mcp.managed";
    /// The service the instance belongs to.
    pub const SERVICE: &str = "mcp.service";
    /// The component of the service the instance runs.
    pub const COMPONENT: &str = "mcp.component";
    /// A digest of the component definition the instance was created from;
    /// an unchanged digest means the instance need not be recreated.
    pub const SPEC_HASH: &str = "mcp.spec-hash";
}

/// A node's VM support, as [`Runtime::vm_support`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSupport {
    /// The QEMU binary VMs run with.
    pub qemu: String,
    /// The accelerator VMs get: `kvm` or `tcg`, or `auto` while undecided.
    pub accel: String,
}

/// The instance name of a component: `<service>-<component>`.
pub fn instance_name(service: &str, component: &str) -> String {
    format!("{service}-{component}")
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
