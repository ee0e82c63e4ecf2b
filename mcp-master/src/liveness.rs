//! Node liveness: the state of a node from its last heartbeat, its
//! draining flag and when the master started, and the names of the
//! transitions between states.
//!
//! A node is `ready` while it heartbeats, `suspect` once it has been silent
//! for the heartbeat TTL plus the grace, `down` once silent for
//! `lost_after`; `draining` while an operator drains it and it is not down.
//! Silence is counted from the later of its last heartbeat and the master's
//! start, so a master that was away (or lost its database) declares no node
//! down before one `lost_after` has passed: the recovery window.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mcp_core::placement::NodeState;

use crate::config::FleetSettings;

/// The state of a node that heartbeat last at `last_heartbeat`, with the
/// draining flag `draining`, at `now`, for a master started at `started`.
pub fn state_of(
    last_heartbeat: DateTime<Utc>,
    draining: bool,
    now: DateTime<Utc>,
    started: DateTime<Utc>,
    fleet: &FleetSettings,
) -> NodeState {
    let since = last_heartbeat.max(started);
    let silent = (now - since).to_std().unwrap_or(Duration::ZERO);
    if silent >= fleet.lost_after {
        NodeState::Down
    } else if draining {
        NodeState::Draining
    } else if silent >= fleet.suspect_after() {
        NodeState::Suspect
    } else {
        NodeState::Ready
    }
}

/// The event kind of a node's move from `from` to `to`: `suspect`, `down`,
/// `draining`, `back` (to ready from suspect or down) or `undrained`.
pub fn transition(from: NodeState, to: NodeState) -> &'static str {
    match (from, to) {
        (_, NodeState::Suspect) => "suspect",
        (_, NodeState::Down) => "down",
        (_, NodeState::Draining) => "draining",
        (NodeState::Draining, NodeState::Ready) => "undrained",
        (_, NodeState::Ready) => "back",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> FleetSettings {
        FleetSettings {
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_grace: Duration::from_secs(5),
            lost_after: Duration::from_secs(300),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn silence_makes_a_node_suspect_then_down() {
        let f = fleet();
        let started = at(0);
        let state = |last: i64, now: i64, draining: bool| {
            state_of(at(last), draining, at(now), started, &f)
        };
        assert_eq!(state(10, 24, false), NodeState::Ready);
        assert_eq!(
            state(10, 25, false),
            NodeState::Suspect,
            "TTL 10 s + grace 5 s"
        );
        assert_eq!(state(10, 309, false), NodeState::Suspect);
        assert_eq!(state(10, 310, false), NodeState::Down);
        assert_eq!(state(10, 11, true), NodeState::Draining);
        assert_eq!(
            state(10, 30, true),
            NodeState::Draining,
            "draining wins over suspect"
        );
        assert_eq!(
            state(10, 400, true),
            NodeState::Down,
            "down wins over draining"
        );
        // A heartbeat from the future (clock skew) is no silence.
        assert_eq!(state(50, 20, false), NodeState::Ready);
    }

    #[test]
    fn the_masters_own_absence_is_not_a_nodes_silence() {
        let f = fleet();
        // Last heard of an hour before the master (re)started.
        let last = at(-3600);
        let started = at(0);
        assert_eq!(state_of(last, false, at(1), started, &f), NodeState::Ready);
        assert_eq!(
            state_of(last, false, at(20), started, &f),
            NodeState::Suspect
        );
        assert_eq!(
            state_of(last, false, at(299), started, &f),
            NodeState::Suspect
        );
        assert_eq!(state_of(last, false, at(300), started, &f), NodeState::Down);
    }

    #[test]
    fn transitions_are_named() {
        use NodeState::*;
        assert_eq!(transition(Ready, Suspect), "suspect");
        assert_eq!(transition(Suspect, Down), "down");
        assert_eq!(transition(Down, Ready), "back");
        assert_eq!(transition(Suspect, Ready), "back");
        assert_eq!(transition(Ready, Draining), "draining");
        assert_eq!(transition(Draining, Ready), "undrained");
    }
}
