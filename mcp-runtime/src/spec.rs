//! Backend-neutral descriptions of instances: what to create and what exists.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::{PortMapping, RuntimeKind, RuntimeResult, VolumeMount};

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
    /// Whether the runtime still works on the instance after this event and
    /// reports another when done, so that its state seen now is on the way
    /// to another: a podman container that `died` is cleaned up next, and
    /// its restart policy or a removal already under way acts only then.
    pub settling: bool,
}

/// A stream of runtime events; it ends (or yields an error) when the
/// connection to the runtime is lost.
pub type EventStream = Pin<Box<dyn Stream<Item = RuntimeResult<RuntimeEvent>> + Send>>;
