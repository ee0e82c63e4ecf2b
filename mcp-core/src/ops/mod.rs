//! The operations both front ends offer, `mcp` and the Python `Client`,
//! each one library function, so that the two cannot come to mean
//! different things:
//!
//! - [`Session`]: the CLI's configuration with what a caller adds to it (a
//!   node, a token file): which definition file and which node an argument
//!   means, the definitions `sync` sends to each node, and a connected
//!   client.
//! - [`set_active`]: `stop` and `start`: `active` edited in the service's
//!   definition file and the file pushed (put back as it was when the node
//!   refused the push outright); a service without a file, or one
//!   component, is stopped or started on its node alone.
//!
//! Copying trees of files is `client::transfer::push_tree` and
//! `pull_tree`, on the client's side of transfers.

mod active;
mod session;

pub use active::{ActiveChange, set_active};
pub use session::Session;

use std::path::PathBuf;

use crate::client::ClientError;
use crate::client::transfer::TransferError;
use crate::config::ConfigError;
use crate::servicedef::ServiceDefError;

/// Why an operation failed, before or while talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The CLI configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A definition file is missing or invalid.
    #[error(transparent)]
    Definition(#[from] ServiceDefError),
    /// The node refused or failed the call.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A file transfer failed.
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// The configuration does not say what an argument means (an unknown
    /// node, no nodes at all, a definition naming an unknown node).
    #[error("{message} (in {})", config.display())]
    Unresolved {
        /// What could not be resolved.
        message: String,
        /// The CLI configuration file.
        config: PathBuf,
    },
    /// A definition file could not be put back after the node refused it.
    #[error("restoring {}: {source}", path.display())]
    Restore {
        /// The definition file.
        path: PathBuf,
        /// The system error.
        source: std::io::Error,
    },
}
