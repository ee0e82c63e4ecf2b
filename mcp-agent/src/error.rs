//! The agent's error type and its mapping to gRPC status codes. This is the
//! one place where library errors become `tonic::Status`.

use mcp_runtime::RuntimeError;

use crate::files::FilesError;
use crate::registry::RegistryError;
use mcp_core::servicedef::ServiceDefError;

/// Why an agent operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The definition sent is invalid.
    #[error("invalid service definition: {0}")]
    Definition(#[from] ServiceDefError),
    /// The request names something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request conflicts with what is on the node.
    #[error("{0}")]
    Conflict(String),
    /// The runtime failed or cannot be reached.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A file operation under a service directory failed.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// A new or replaced instance did not become ready (running, and
    /// healthy when it has a health check) during a deploy.
    #[error("{}", not_ready_text(.reason, *.rolled_back))]
    NotReady {
        /// Why.
        reason: crate::reconcile::gate::NotReady,
        /// Whether the previous instance was put back.
        rolled_back: bool,
    },
    /// A task of the agent's own failed (a blocking query panicked).
    #[error("internal error: {0}")]
    Internal(String),
}

fn not_ready_text(reason: &crate::reconcile::gate::NotReady, rolled_back: bool) -> String {
    if rolled_back {
        format!("not ready: {reason}; rolled back: the previous version runs again")
    } else {
        format!("not ready: {reason}")
    }
}

impl From<AgentError> for tonic::Status {
    fn from(err: AgentError) -> tonic::Status {
        use tonic::Code;
        let code = match &err {
            AgentError::Definition(_) | AgentError::InvalidArgument(_) => Code::InvalidArgument,
            AgentError::NotFound(_) => Code::NotFound,
            AgentError::Conflict(_) => Code::FailedPrecondition,
            AgentError::Runtime(e) => match e {
                RuntimeError::Unavailable { .. } => Code::Unavailable,
                RuntimeError::NotFound(_) => Code::NotFound,
                RuntimeError::Pull { .. } => Code::FailedPrecondition,
                RuntimeError::Conflict(_) => Code::FailedPrecondition,
                RuntimeError::Invalid(_) => Code::InvalidArgument,
                RuntimeError::Api { .. } | RuntimeError::Protocol(_) => Code::Internal,
            },
            AgentError::Registry(_) | AgentError::Internal(_) => Code::Internal,
            AgentError::Files(e) => files_code(e),
            AgentError::NotReady { .. } => Code::FailedPrecondition,
        };
        tonic::Status::new(code, err.to_string())
    }
}

/// The gRPC code of a file operation's failure.
fn files_code(err: &FilesError) -> tonic::Code {
    use tonic::Code;
    match err {
        FilesError::InvalidService { .. }
        | FilesError::InvalidPath { .. }
        | FilesError::InvalidMode { .. }
        | FilesError::IsRoot { .. }
        | FilesError::SizeMismatch { .. } => Code::InvalidArgument,
        FilesError::NoServiceDir { .. } | FilesError::NotFound { .. } => Code::NotFound,
        FilesError::Escapes { .. } | FilesError::Symlink { .. } | FilesError::HardLinked { .. } => {
            Code::PermissionDenied
        }
        FilesError::NotAFile { .. }
        | FilesError::NotADirectory { .. }
        | FilesError::IsADirectory { .. }
        | FilesError::DirectoryNotEmpty { .. }
        | FilesError::UploadFailed { .. } => Code::FailedPrecondition,
        FilesError::Changed { .. } | FilesError::Interrupted => Code::Aborted,
        FilesError::TooLarge { .. } | FilesError::TooDeep { .. } | FilesError::NoSpace { .. } => {
            Code::ResourceExhausted
        }
        FilesError::DigestMismatch { .. } => Code::DataLoss,
        FilesError::Io { .. } => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_unavailable_maps_to_unavailable() {
        let err = AgentError::Runtime(RuntimeError::Unavailable {
            endpoint: "/run/podman/podman.sock".into(),
            reason: "no such file".into(),
        });
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("/run/podman/podman.sock"));
    }

    #[test]
    fn not_found_maps_to_not_found() {
        let status = tonic::Status::from(AgentError::NotFound("no service \"x\"".into()));
        assert_eq!(status.code(), tonic::Code::NotFound);
    }
}
