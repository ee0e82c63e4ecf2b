//! Backend-neutral descriptions of instances: what to create and what exists.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::RuntimeResult;

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
    /// [`crate::Runtime::run_health_check`].
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

/// The result of running an instance's health check once
/// ([`crate::Runtime::run_health_check`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Whether the check passed.
    pub healthy: bool,
    /// What the check printed, trimmed, or why it failed (such as the
    /// runtime's reason for giving up on it).
    pub output: String,
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

/// The state of an instance as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Stopped or exited.
    Exited,
    /// Anything else the runtime says (`stopping`, `removing`, ...).
    Other(String),
}

impl InstanceState {
    /// Parses a runtime's state word.
    pub fn parse(s: &str) -> InstanceState {
        match s.to_ascii_lowercase().as_str() {
            "created" | "configured" | "initialized" => InstanceState::Created,
            "running" => InstanceState::Running,
            "paused" => InstanceState::Paused,
            "exited" | "stopped" => InstanceState::Exited,
            other => InstanceState::Other(other.to_string()),
        }
    }

    /// The state as one word.
    pub fn as_str(&self) -> &str {
        match self {
            InstanceState::Created => "created",
            InstanceState::Running => "running",
            InstanceState::Paused => "paused",
            InstanceState::Exited => "exited",
            InstanceState::Other(s) => s,
        }
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the runtime reports of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Full id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Image reference it was created from (as given at create time).
    pub image: String,
    /// Id of the image.
    pub image_id: String,
    /// State.
    pub state: InstanceState,
    /// Human status line such as `Up 3 minutes`.
    pub status: String,
    /// Exit code of the last run, when it exited.
    pub exit_code: Option<i64>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Last start time, Unix seconds, 0 when never started.
    pub started_at: i64,
    /// Which runtime runs it.
    pub runtime: RuntimeKind,
    /// Details only `inspect` fills in (empty from `list`).
    pub details: Option<InstanceDetails>,
}

impl InstanceInfo {
    /// Whether MCP created this instance (it carries the managed label).
    pub fn is_managed(&self) -> bool {
        self.labels.get(crate::labels::MANAGED).map(String::as_str) == Some("true")
    }

    /// The value of a label, if set.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// Configuration of an instance as reported by `inspect`: enough to rebuild
/// its definition.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InstanceDetails {
    /// Command and arguments.
    pub cmd: Vec<String>,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Bind mounts.
    pub volumes: Vec<VolumeMount>,
    /// Networks joined.
    pub networks: Vec<String>,
    /// User.
    pub user: String,
    /// Restart policy.
    pub restart: String,
    /// Memory limit in bytes, 0 for none.
    pub memory_bytes: u64,
}

/// The runtime's version, as reported by [`crate::Runtime::ping`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeVersion {
    /// The backend's own version string.
    pub version: String,
    /// The API version spoken.
    pub api_version: String,
}

/// Options for reading logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep the stream open and deliver new output as it comes.
    pub follow: bool,
    /// Only the last N lines; `None` for all.
    pub tail: Option<u32>,
}

/// Which output stream a log chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStreamKind {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStreamKind {
    /// `"stdout"` or `"stderr"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStreamKind::Stdout => "stdout",
            LogStreamKind::Stderr => "stderr",
        }
    }
}

/// A piece of log output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// The stream it came from.
    pub stream: LogStreamKind,
    /// The bytes (usually whole lines).
    pub data: Bytes,
}

/// A stream of log chunks.
pub type LogStream = Pin<Box<dyn Stream<Item = RuntimeResult<LogChunk>> + Send>>;

/// A change the runtime reports about one instance (created, started,
/// died, removed, renamed, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEvent {
    /// What happened, in the runtime's word (`start`, `died`, `remove`, ...).
    pub action: String,
    /// The instance's id.
    pub id: String,
    /// The instance's name.
    pub name: String,
}

/// A stream of runtime events; it ends (or yields an error) when the
/// connection to the runtime is lost.
pub type EventStream = Pin<Box<dyn Stream<Item = RuntimeResult<RuntimeEvent>> + Send>>;
