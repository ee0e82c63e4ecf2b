//! [`FilesError`]: why a file operation under a service directory failed.
//!
//! Each variant's documentation names the gRPC status code it is meant to map
//! to. Messages are lower-case, quote the path with `{:?}` (so control
//! characters in a name cannot forge log lines) and say what is wrong.

use std::{fmt, io};

use rustix::io::Errno;

/// Why a file operation under a service directory failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The service name is not a valid service name. gRPC: `InvalidArgument`.
    #[error("invalid service name {service:?}: {reason}")]
    InvalidService {
        /// The name as given.
        service: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The path is malformed: absolute, `..`, NUL, control characters, too
    /// long, or not a single name where one is needed. gRPC: `InvalidArgument`.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given (shortened when very long).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A requested file mode has bits other than the permission bits 0o777
    /// (set-user-ID, set-group-ID and sticky are refused). gRPC:
    /// `InvalidArgument`.
    #[error("invalid mode {mode:#o}: only the permission bits 0o777 may be set")]
    InvalidMode {
        /// The mode as given.
        mode: u32,
    },
    /// The operation needs a path beneath the service directory and was
    /// given the directory itself. gRPC: `InvalidArgument`.
    #[error("{op} needs a path beneath the service directory, not the directory itself")]
    IsRoot {
        /// The operation, e.g. `remove`.
        op: &'static str,
    },
    /// The service directory `<srv_root>/<service>` does not exist (read
    /// operations never create it). gRPC: `NotFound`.
    #[error("service directory {dir} does not exist")]
    NoServiceDir {
        /// `<srv_root>/<service>`.
        dir: String,
    },
    /// Nothing exists at the path. gRPC: `NotFound`.
    #[error("{path:?} does not exist")]
    NotFound {
        /// The path in the service directory.
        path: String,
    },
    /// Resolving the path would leave the service directory: a symlink on it
    /// is absolute or climbs above the directory. gRPC: `PermissionDenied`.
    #[error("{path:?} leads outside the service directory")]
    Escapes {
        /// The path in the service directory.
        path: String,
    },
    /// A symlink on the path is not followed by this operation: writes and
    /// removals never go through symlinks, reads refuse symlink loops, and
    /// without `openat2` every symlink is refused. gRPC: `PermissionDenied`.
    #[error("{path:?} goes through a symlink: {reason}")]
    Symlink {
        /// The path in the service directory (or the service directory itself).
        path: String,
        /// Why this symlink is refused here.
        reason: &'static str,
    },
    /// The file has more than one hard link, so it may also be a file outside
    /// the service directory; it is not read. gRPC: `PermissionDenied`.
    #[error(
        "{path:?} has {links} hard links; a file with more than one link is not read, \
         another link may be outside the service directory"
    )]
    HardLinked {
        /// The path in the service directory.
        path: String,
        /// The file's link count.
        links: u64,
    },
    /// The path names something that is not a regular file where one is
    /// needed (a directory, a device, a FIFO, a socket). gRPC:
    /// `FailedPrecondition`.
    #[error("{path:?} is a {kind}, not a regular file")]
    NotAFile {
        /// The path in the service directory.
        path: String,
        /// What it is.
        kind: super::FileKind,
    },
    /// The path, or one of its leading components, is not a directory where
    /// one is needed. gRPC: `FailedPrecondition`.
    #[error("{path:?} is not a directory (or one of its leading components is not)")]
    NotADirectory {
        /// The path in the service directory.
        path: String,
    },
    /// The path is a directory where something else is needed (an upload
    /// target). gRPC: `FailedPrecondition`.
    #[error("{path:?} is a directory")]
    IsADirectory {
        /// The path in the service directory.
        path: String,
    },
    /// A non-recursive removal of a directory that has entries. gRPC:
    /// `FailedPrecondition`.
    #[error("{path:?} is a directory that is not empty; remove it recursively")]
    DirectoryNotEmpty {
        /// The path in the service directory.
        path: String,
    },
    /// Something on the path was replaced while the operation was using it;
    /// nothing was read or written through the replacement. gRPC: `Aborted`.
    #[error("{path:?} changed while it was in use; try again")]
    Changed {
        /// The path in the service directory.
        path: String,
    },
    /// An upload is larger than its size limit. gRPC: `ResourceExhausted`.
    #[error("{path:?}: the upload is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The upload's target path.
        path: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// An upload's length differs from the length announced for it. gRPC:
    /// `InvalidArgument`.
    #[error("{path:?}: the upload announced {expected} bytes but {actual} arrived")]
    SizeMismatch {
        /// The upload's target path.
        path: String,
        /// The announced length.
        expected: u64,
        /// The length received so far (at least, when it is too long).
        actual: u64,
    },
    /// An upload's SHA-256 differs from the expected one: the data was
    /// damaged on the way. gRPC: `DataLoss`.
    #[error("{path:?}: sha256 mismatch: expected {expected}, received {actual}")]
    DigestMismatch {
        /// The upload's target path.
        path: String,
        /// The expected digest, in hex.
        expected: String,
        /// The digest of the data received, in hex.
        actual: String,
    },
    /// An upload was used after one of its writes failed. gRPC:
    /// `FailedPrecondition`.
    #[error("{path:?}: the upload already failed and cannot continue")]
    UploadFailed {
        /// The upload's target path.
        path: String,
    },
    /// A recursive walk or removal met directories nested deeper than its
    /// limit. gRPC: `ResourceExhausted`.
    #[error("{path:?}: directories nested deeper than the limit of {limit}")]
    TooDeep {
        /// The directory whose contents are beyond the limit.
        path: String,
        /// The depth limit.
        limit: usize,
    },
    /// The file system is full or the quota is reached. gRPC:
    /// `ResourceExhausted`.
    #[error("{path:?}: no space left on the file system")]
    NoSpace {
        /// The path in the service directory.
        path: String,
    },
    /// A transfer ended before it was complete: the other side went away, or
    /// the stream ended without its digest. Nothing was put in place. gRPC:
    /// `Aborted`.
    #[error("the transfer ended before it was complete; nothing was changed")]
    Interrupted,
    /// Any other input/output failure. gRPC: `Internal`.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// What was being done, e.g. `read directory`.
        op: &'static str,
        /// The path in the service directory (or on the host, for the tree
        /// root).
        path: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
}

/// Maps a system error met while `op` worked on `path` to a [`FilesError`].
/// `symlink_reason` explains an `ELOOP`, which depends on how the path was
/// resolved.
pub(crate) fn from_errno(
    errno: Errno,
    op: &'static str,
    path: impl fmt::Display,
    symlink_reason: &'static str,
) -> FilesError {
    let path = path.to_string();
    match errno {
        Errno::NOENT => FilesError::NotFound { path },
        Errno::XDEV => FilesError::Escapes { path },
        Errno::LOOP => FilesError::Symlink {
            path,
            reason: symlink_reason,
        },
        Errno::NOTDIR => FilesError::NotADirectory { path },
        Errno::ISDIR => FilesError::IsADirectory { path },
        Errno::NOTEMPTY => FilesError::DirectoryNotEmpty { path },
        Errno::NAMETOOLONG => FilesError::InvalidPath {
            path,
            reason: "is too long for the file system".into(),
        },
        Errno::NOSPC | Errno::DQUOT => FilesError::NoSpace { path },
        other => io_error(op, path, other),
    }
}

/// A [`FilesError::Io`] for `errno`.
pub(crate) fn io_error(op: &'static str, path: String, errno: Errno) -> FilesError {
    FilesError::Io {
        op,
        path,
        source: io::Error::from(errno),
    }
}
