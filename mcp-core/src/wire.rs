//! What both ends of the gRPC API agree on beyond the generated messages:
//! how a deploy is asked for ([`DeployOptions`], [`PullPolicy`]), what
//! happened to a component ([`Action`]), the HTTP/2 window and frame sizes
//! both sides configure, the size of a file chunk, and how times are
//! written.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use mcp_proto::v1 as pb;
use serde::Serialize;

/// HTTP/2 flow control window per stream: file transfers keep this much in
/// flight (the bytes a peer may send ahead of what was read).
pub const STREAM_WINDOW: u32 = 4 << 20;
/// HTTP/2 flow control window per connection.
pub const CONNECTION_WINDOW: u32 = 8 << 20;
/// Largest HTTP/2 frame: a file chunk travels in a few frames, not dozens.
pub const MAX_FRAME: u32 = 256 << 10;
/// Largest total size of a request's metadata (headers) a server accepts.
/// Bigger requests are refused by the HTTP/2 layer before any handler runs.
pub const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// The mode bits a client may ask a pushed file to get: permission bits
/// only, never set-user-ID, set-group-ID or sticky.
pub const PERMISSION_BITS: u32 = 0o777;

/// Checks a requested file mode against [`PERMISSION_BITS`], the one rule
/// both ends apply; the error says what was wrong.
pub fn check_mode(mode: u32) -> Result<u32, String> {
    if mode & !PERMISSION_BITS == 0 {
        Ok(mode)
    } else {
        Err(format!(
            "mode {mode:#o}: only the permission bits 0o777 may be set (no set-user-ID, set-group-ID or sticky bit)"
        ))
    }
}

/// Bytes per file chunk on the wire, both ways.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// Formats a time as MCP writes it everywhere (registry, wire, output):
/// RFC 3339 UTC with milliseconds, e.g. `2024-05-01T12:00:00.123Z`.
pub fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// When the agent pulls an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Only when the image is not on the node.
    #[default]
    Missing,
    /// Every deploy, so a moved tag is picked up.
    Always,
}

impl PullPolicy {
    /// The policy as sent on the wire.
    pub fn to_proto(self) -> pb::PullPolicy {
        match self {
            PullPolicy::Missing => pb::PullPolicy::Missing,
            PullPolicy::Always => pb::PullPolicy::Always,
        }
    }

    /// The policy of a request's `pull` field; unknown values mean
    /// [`PullPolicy::Missing`].
    pub fn from_proto(value: i32) -> PullPolicy {
        match pb::PullPolicy::try_from(value) {
            Ok(pb::PullPolicy::Always) => PullPolicy::Always,
            _ => PullPolicy::Missing,
        }
    }
}

/// How one deploy waits for what it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeployOptions {
    /// How long to wait for changed components to be ready; `None` for the
    /// agent's `[deploy] timeout`.
    pub timeout: Option<Duration>,
    /// Do not wait at all: a component counts as deployed once its new
    /// instance is started (fire and forget; the monitor watches it from
    /// then on, and nothing is rolled back).
    pub no_wait: bool,
}

/// What happened to one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A new instance was created (and started when active).
    Created,
    /// The instance was replaced because its definition changed.
    Updated,
    /// Nothing needed doing.
    Unchanged,
    /// The instance was started.
    Started,
    /// The instance was stopped.
    Stopped,
    /// The instance was restarted.
    Restarted,
    /// The instance was removed.
    Removed,
    /// The operation failed; see the error.
    Failed,
    /// The new version did not become ready and the previous one was put
    /// back; see the error.
    RolledBack,
}

impl Action {
    /// Every action, in wire order.
    pub const ALL: [Action; 9] = [
        Action::Created,
        Action::Updated,
        Action::Unchanged,
        Action::Started,
        Action::Stopped,
        Action::Restarted,
        Action::Removed,
        Action::Failed,
        Action::RolledBack,
    ];

    /// The action's name, as events and output spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Unchanged => "unchanged",
            Action::Started => "started",
            Action::Stopped => "stopped",
            Action::Restarted => "restarted",
            Action::Removed => "removed",
            Action::Failed => "failed",
            Action::RolledBack => "rolled-back",
        }
    }

    /// The action as sent on the wire.
    pub fn to_proto(self) -> pb::ComponentAction {
        match self {
            Action::Created => pb::ComponentAction::Created,
            Action::Updated => pb::ComponentAction::Updated,
            Action::Unchanged => pb::ComponentAction::Unchanged,
            Action::Started => pb::ComponentAction::Started,
            Action::Stopped => pb::ComponentAction::Stopped,
            Action::Restarted => pb::ComponentAction::Restarted,
            Action::Removed => pb::ComponentAction::Removed,
            Action::Failed => pb::ComponentAction::Failed,
            Action::RolledBack => pb::ComponentAction::RolledBack,
        }
    }

    /// The action of a result's `action` field; `None` when it is unset or
    /// unknown to this version.
    pub fn from_proto(value: i32) -> Option<Action> {
        let wire = pb::ComponentAction::try_from(value).ok()?;
        Action::ALL.into_iter().find(|a| a.to_proto() == wire)
    }

    /// Whether the action is a failure: it failed, or its new version was
    /// rolled back.
    pub fn is_failure(self) -> bool {
        matches!(self, Action::Failed | Action::RolledBack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_the_wire() {
        for a in Action::ALL {
            assert_eq!(Action::from_proto(a.to_proto() as i32), Some(a));
        }
        assert_eq!(
            Action::from_proto(pb::ComponentAction::Unspecified as i32),
            None
        );
        assert_eq!(Action::from_proto(999), None);
    }

    #[test]
    fn action_names_match_their_json() {
        for a in Action::ALL {
            let json = serde_json::to_value(a).unwrap();
            assert_eq!(json, serde_json::Value::String(a.as_str().into()));
        }
    }

    #[test]
    fn modes_are_permission_bits_only() {
        assert_eq!(check_mode(0o640), Ok(0o640));
        assert_eq!(check_mode(0o777), Ok(0o777));
        assert_eq!(check_mode(0), Ok(0));
        for bad in [0o1777, 0o4755, 0o2755, 0o10000] {
            let err = check_mode(bad).unwrap_err();
            assert!(err.contains("only the permission bits"), "{err}");
        }
    }

    #[test]
    fn pull_policy_round_trips_the_wire() {
        for p in [PullPolicy::Missing, PullPolicy::Always] {
            assert_eq!(PullPolicy::from_proto(p.to_proto() as i32), p);
        }
        assert_eq!(PullPolicy::from_proto(999), PullPolicy::Missing);
    }
}
