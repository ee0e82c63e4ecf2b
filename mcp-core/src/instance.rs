//! What an instance is made of: the value types service definitions are
//! built from and runtimes create instances from (runtime kind, ports,
//! volumes, health check, kernel boot), the labels that mark MCP's
//! instances, and the limits a VM definition must keep.
//!
//! They live here, below both sides, so that a front end can parse and
//! validate a definition without linking any runtime backend.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

/// The smallest memory MCP gives a VM. QEMU itself accepts far less (even
/// `-m 1K`, silently rounded up) and the guest then hangs without a word,
/// so smaller sizes are refused before anything starts.
pub const MIN_VM_MEMORY_BYTES: u64 = 32 << 20;
/// The most virtual CPUs MCP gives a VM.
pub const MAX_VCPUS: u32 = 64;

/// The instance name of a component: `<service>-<component>`.
pub fn instance_name(service: &str, component: &str) -> String {
    format!("{service}-{component}")
}

/// The kinds of runtime a component can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// A podman container (the default).
    #[default]
    Container,
    /// A unikernel VM under QEMU.
    Unikernel,
}

impl RuntimeKind {
    /// The name used in service definitions and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Container => "container",
            RuntimeKind::Unikernel => "unikernel",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A published port: `host_ip:host_port:container_port/protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host address to bind; empty for all addresses.
    pub host_ip: String,
    /// Port on the host.
    pub host_port: u16,
    /// Port inside the instance.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.host_ip.is_empty() {
            write!(f, "{}:", self.host_ip)?;
        }
        write!(f, "{}:{}", self.host_port, self.container_port)?;
        if self.protocol != "tcp" {
            write!(f, "/{}", self.protocol)?;
        }
        Ok(())
    }
}

/// A bind mount: `source:destination[:options]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VolumeMount {
    /// Absolute host path (or a named volume).
    pub source: String,
    /// Absolute path inside the instance.
    pub destination: String,
    /// Mount options such as `ro`, `rw`, `z`.
    pub options: Vec<String>,
}

/// Everything needed to create an instance.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// Instance name, `<service>-<component>`.
    pub name: String,
    /// Which runtime runs it: a container (the default) or a VM.
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// Image reference.
    pub image: String,
    /// Command and arguments; empty to use the image's default.
    pub cmd: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Bind mounts.
    pub volumes: Vec<VolumeMount>,
    /// Network to join; `None` for the runtime's default.
    pub network: Option<String>,
    /// `uid[:gid]` or a user name to run as.
    pub user: Option<String>,
    /// Restart policy (`no`, `always`, `on-failure`, `unless-stopped`).
    pub restart: Option<String>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// Virtual CPUs (unikernels).
    pub vcpus: Option<u32>,
    /// Labels to attach.
    pub labels: BTreeMap<String, String>,
    /// Direct kernel boot (VMs only): QEMU loads this kernel, initrd and
    /// command line itself. With it, `image` is an optional raw disk to
    /// attach (empty for none); without it, `image` is the raw disk image
    /// the VM boots from. Containers ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelBoot>,
    /// A health check the runtime itself runs inside the instance
    /// (containers only; VMs ignore it). Run it once with
    /// `Runtime::run_health_check` in `mcp-runtime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSpec>,
}

/// A health check run inside the instance by the runtime: a program that
/// exits 0 when the instance is healthy.
///
/// Podman keeps it as the container's own health check. On a node without
/// systemd podman never runs it on a timer by itself: MCP runs it when it
/// wants an answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HealthSpec {
    /// The program and its arguments, exec form (no shell); not empty.
    pub command: Vec<String>,
    /// Time between two checks, when the runtime schedules them.
    pub interval: Duration,
    /// Time one check may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive failures after which the runtime marks the instance unhealthy.
    pub retries: u32,
    /// Time after a start during which failures do not count.
    pub start_period: Duration,
}

/// A kernel QEMU boots directly (`-kernel`, `-initrd`, `-append`), rather
/// than a bootable disk image.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KernelBoot {
    /// Absolute path of the kernel image.
    pub kernel: String,
    /// Absolute path of the initial ramdisk, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// The kernel command line, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append: Option<String>,
}
