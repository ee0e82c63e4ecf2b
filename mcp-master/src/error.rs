//! The master's error type and its mapping to gRPC status codes: the one
//! place where the master's errors become `tonic::Status`.

use mcp_core::client::ClientError;
use mcp_core::placement::PlacementError;
use mcp_core::servicedef::ServiceDefError;

use crate::store::StoreError;

/// Why a master operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// A definition sent is invalid.
    #[error("invalid service definition: {0}")]
    Definition(#[from] ServiceDefError),
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request names something the master does not know.
    #[error("{0}")]
    NotFound(String),
    /// Another node holds the name.
    #[error("{0}")]
    AlreadyExists(String),
    /// The services cannot be placed.
    #[error("cannot place: {0}")]
    Placement(#[from] PlacementError),
    /// The master's database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A node cannot be reached, or agents cannot be dialled at all.
    #[error("{0}")]
    Unavailable(String),
    /// The command's state does not allow it (a service waiting on a down
    /// node, an older generation).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A node's agent answered with an error, or could not be reached.
    #[error("{0}")]
    Agent(#[from] ClientError),
    /// A task of the master's own failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<MasterError> for tonic::Status {
    fn from(err: MasterError) -> tonic::Status {
        use tonic::Code;
        let code = match &err {
            MasterError::Definition(_) | MasterError::InvalidArgument(_) => Code::InvalidArgument,
            MasterError::NotFound(_) => Code::NotFound,
            MasterError::AlreadyExists(_) => Code::AlreadyExists,
            MasterError::Placement(_) | MasterError::FailedPrecondition(_) => {
                Code::FailedPrecondition
            }
            MasterError::Unavailable(_) => Code::Unavailable,
            MasterError::Store(_) | MasterError::Internal(_) => Code::Internal,
            // The agent's own answer passes through as it is (its message
            // may name a definition's value for the caller to locate).
            MasterError::Agent(ClientError::Rpc { code, message, .. }) => {
                return tonic::Status::new(*code, message.clone());
            }
            MasterError::Agent(e) => match e {
                ClientError::Unauthenticated { node, message, .. }
                | ClientError::PermissionDenied { node, message } => {
                    return tonic::Status::unavailable(format!(
                        "node {node} refused the master's credential ({message}): add the master's agent token there with `mcp-agent token add master --role admin --from-file FILE`"
                    ));
                }
                _ => Code::Unavailable,
            },
        };
        tonic::Status::new(code, err.to_string())
    }
}
