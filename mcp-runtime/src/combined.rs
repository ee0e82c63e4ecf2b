//! [`Runtimes`]: the node's container runtime and its VM runtime behind one
//! [`Runtime`], so the reconciler, status, ps and the monitor see one list.
//!
//! Routing:
//! - `create` goes by the spec's [`RuntimeKind`];
//! - operations on an instance go to the VM runtime when it has a VM of that
//!   name or id (a record in its state directory), else to the containers;
//! - an image that is an absolute path is a VM image file, anything else a
//!   container image reference;
//! - `run_health_check` goes to the holder like any instance operation (VMs
//!   run no health checks: the trait's default error);
//! - `list` is both lists, `events` both streams merged; `ping` and
//!   [`Runtime::kind`] are the container runtime's.
//!
//! Without a VM runtime (QEMU not configured), a unikernel spec is refused
//! with a clear error before anything is created.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use crate::qemu::Qemu;
use crate::{
    EventStream, HealthReport, InstanceInfo, InstanceSpec, LogOptions, LogStream, Runtime,
    RuntimeError, RuntimeKind, RuntimeResult, RuntimeVersion, VmSupport,
};

/// Containers and, when configured, VMs, as one [`Runtime`].
pub struct Runtimes {
    containers: Arc<dyn Runtime>,
    vms: Option<Arc<Qemu>>,
}

impl Runtimes {
    /// `containers` alone, or with `vms`.
    pub fn new(containers: Arc<dyn Runtime>, vms: Option<Arc<Qemu>>) -> Runtimes {
        Runtimes { containers, vms }
    }

    /// The VM runtime, if configured.
    pub fn vms(&self) -> Option<&Arc<Qemu>> {
        self.vms.as_ref()
    }

    /// The runtime holding the instance `name` (or id).
    fn holder(&self, name: &str) -> &dyn Runtime {
        match &self.vms {
            Some(q) if q.has(name) => q.as_ref(),
            _ => self.containers.as_ref(),
        }
    }

    /// The runtime for `image`: a VM image is a file named by absolute path.
    fn for_image(&self, image: &str) -> RuntimeResult<&dyn Runtime> {
        if !image.starts_with('/') {
            return Ok(self.containers.as_ref());
        }
        self.vm_runtime().map(|q| q as &dyn Runtime)
    }

    fn vm_runtime(&self) -> RuntimeResult<&Qemu> {
        self.vms.as_deref().ok_or_else(|| {
            RuntimeError::Invalid(
                "this node runs no unikernels: the agent has no QEMU runtime configured".into(),
            )
        })
    }
}

#[async_trait]
impl Runtime for Runtimes {
    fn kind(&self) -> RuntimeKind {
        self.containers.kind()
    }

    async fn vm_support(&self) -> Option<VmSupport> {
        match &self.vms {
            Some(q) => q.vm_support().await,
            None => None,
        }
    }

    async fn ping(&self) -> RuntimeResult<RuntimeVersion> {
        self.containers.ping().await
    }

    async fn image_exists(&self, image: &str) -> RuntimeResult<bool> {
        self.for_image(image)?.image_exists(image).await
    }

    async fn pull(&self, image: &str) -> RuntimeResult<()> {
        self.for_image(image)?.pull(image).await
    }

    async fn create(&self, spec: &InstanceSpec) -> RuntimeResult<String> {
        match spec.runtime {
            RuntimeKind::Container => self.containers.create(spec).await,
            RuntimeKind::Unikernel => self.vm_runtime()?.create(spec).await,
        }
    }

    async fn start(&self, name: &str) -> RuntimeResult<()> {
        self.holder(name).start(name).await
    }

    async fn stop(&self, name: &str, timeout: Duration) -> RuntimeResult<()> {
        self.holder(name).stop(name, timeout).await
    }

    async fn remove(&self, name: &str, force: bool) -> RuntimeResult<()> {
        self.holder(name).remove(name, force).await
    }

    async fn rename(&self, name: &str, new_name: &str) -> RuntimeResult<()> {
        self.holder(name).rename(name, new_name).await
    }

    async fn inspect(&self, name: &str) -> RuntimeResult<Option<InstanceInfo>> {
        self.holder(name).inspect(name).await
    }

    async fn list(&self) -> RuntimeResult<Vec<InstanceInfo>> {
        let mut all = self.containers.list().await?;
        if let Some(q) = &self.vms {
            all.extend(q.list().await?);
        }
        Ok(all)
    }

    async fn logs(&self, name: &str, options: &LogOptions) -> RuntimeResult<LogStream> {
        self.holder(name).logs(name, options).await
    }

    async fn run_health_check(&self, name: &str) -> RuntimeResult<HealthReport> {
        self.holder(name).run_health_check(name).await
    }

    async fn events(&self) -> RuntimeResult<EventStream> {
        let containers = self.containers.events().await?;
        match &self.vms {
            None => Ok(containers),
            Some(q) => {
                let vms = q.events().await?;
                // The merged stream ends when either ends, so a lost podman
                // stream is noticed (and both are reconnected) as before.
                let merged = futures::stream::select(
                    containers
                        .map(Some)
                        .chain(futures::stream::once(async { None })),
                    vms.map(Some).chain(futures::stream::once(async { None })),
                )
                .take_while(|item| std::future::ready(item.is_some()))
                .filter_map(std::future::ready);
                Ok(Box::pin(merged))
            }
        }
    }
}
