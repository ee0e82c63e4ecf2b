//! The master's error type and its mapping to gRPC status codes: the one
//! place where the master's errors become `tonic::Status`.

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
            MasterError::Placement(_) => Code::FailedPrecondition,
            MasterError::Store(_) | MasterError::Internal(_) => Code::Internal,
        };
        tonic::Status::new(code, err.to_string())
    }
}
