//! The runtime error type.

/// Result of a runtime operation.
pub type RuntimeResult<T> = Result<T, RuntimeError>;

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The backend cannot be reached (socket missing, refused, or closed mid-request).
    #[error("runtime unavailable at {endpoint}: {reason}")]
    Unavailable {
        /// Where the backend was expected (a socket path).
        endpoint: String,
        /// What went wrong, in one line.
        reason: String,
    },
    /// No instance of that name or id exists.
    #[error("no such instance: {0}")]
    NotFound(String),
    /// The image could not be pulled (missing, registry unreachable, denied).
    #[error("pull of {image} failed: {reason}")]
    Pull {
        /// The image reference.
        image: String,
        /// The registry's or podman's explanation.
        reason: String,
    },
    /// The operation conflicts with the instance's state or another instance
    /// (name in use, port already allocated, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend refused the request or failed it.
    #[error("{operation} failed: {message} (status {status})")]
    Api {
        /// What was attempted, such as `create web-api`.
        operation: String,
        /// Status from the backend: the HTTP status for podman, the exit
        /// status of `qemu-system-x86_64` for QEMU (0 when there is none,
        /// such as a failed file operation in the VM's state directory).
        status: u16,
        /// The backend's message.
        message: String,
    },
    /// The backend answered something that could not be understood.
    #[error("unexpected answer from runtime: {0}")]
    Protocol(String),
    /// The request itself is invalid for this backend.
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl RuntimeError {
    /// Whether the error means the backend is not reachable at all.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RuntimeError::Unavailable { .. })
    }
}
