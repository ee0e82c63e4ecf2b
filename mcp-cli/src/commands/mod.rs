//! One file per command (or family of commands), each a few lines: resolve
//! the arguments through `mcp_core::ops`, call the node, print.

pub mod adopt;
pub mod deploy;
pub mod events;
pub mod files;
pub mod history;
pub mod lifecycle;
pub mod logs;
pub mod node;
pub mod query;
pub mod sync;

use mcp_core::ops::Session;
use mcp_core::wire::PullPolicy;

use crate::output::Output;

/// What every command runs with: the session (configuration, `--node`,
/// `--token-file`) and where it prints.
pub struct Ctx {
    /// The configuration and what the command line adds to it.
    pub session: Session,
    /// Tables or JSON.
    pub out: Output,
}

/// `--pull`: when the agent pulls images.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Pull {
    /// Pull only images the node does not have.
    Missing,
    /// Always pull, picking up moved tags.
    Always,
}

impl From<Pull> for PullPolicy {
    fn from(pull: Pull) -> PullPolicy {
        match pull {
            Pull::Missing => PullPolicy::Missing,
            Pull::Always => PullPolicy::Always,
        }
    }
}
