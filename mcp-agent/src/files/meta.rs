//! What the operations report about a file: [`Metadata`], [`FileKind`] and
//! directory [`Entry`]s, read with `fstat`/`fstatat(AT_SYMLINK_NOFOLLOW)`.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fd::BorrowedFd;
use rustix::fs::{self as rfs, AtFlags, FileType, Stat};
use rustix::io::Errno;

use super::FilesError;
use super::error::from_errno;
use super::path::RemotePath;

/// What kind of file an entry is. Symlinks are reported as such, never
/// followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (see [`Metadata::symlink_target`]).
    Symlink,
    /// Anything else: a FIFO, a socket, a block or character device.
    Other,
}

impl FileKind {
    /// The kind's short name on the wire and in listings: `file`, `dir`,
    /// `symlink` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Other => "other",
        }
    }

    /// The kind encoded in a `st_mode`.
    fn from_mode(mode: u32) -> Self {
        match FileType::from_raw_mode(mode) {
            FileType::RegularFile => FileKind::File,
            FileType::Directory => FileKind::Dir,
            FileType::Symlink => FileKind::Symlink,
            _ => FileKind::Other,
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::File => "regular file",
            FileKind::Dir => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Other => "special file",
        })
    }
}

/// What `stat`, `list` and `walk` report about one file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metadata {
    /// The kind of file.
    pub kind: FileKind,
    /// Size in bytes (for a symlink, the length of its target).
    pub size: u64,
    /// Permission bits, `st_mode & 0o7777`.
    pub mode: u32,
    /// Last modification time.
    pub mtime: SystemTime,
    /// Hard link count. A regular file with more than one is refused by
    /// [`ServiceTree::open_read`](super::ServiceTree::open_read).
    pub links: u64,
    /// A symlink's target as stored in the link, never resolved; `None` for
    /// other kinds. It may name anything, inside the tree or not.
    pub symlink_target: Option<PathBuf>,
}

impl Metadata {
    /// The metadata in `st`; `symlink_target` is read separately.
    // The field types of `struct stat` differ between architectures (`c_long`
    // here, `i64` there); `as` is the one conversion that compiles on all.
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn from_stat(st: &Stat, symlink_target: Option<PathBuf>) -> Self {
        let secs = st.st_mtime as i64;
        let nanos = st.st_mtime_nsec as u32;
        Metadata {
            kind: FileKind::from_mode(st.st_mode as u32),
            size: st.st_size as u64,
            mode: (st.st_mode as u32) & 0o7777,
            mtime: system_time(secs, nanos),
            links: st.st_nlink as u64,
            symlink_target,
        }
    }
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// The entry's name. Always a valid [`RemotePath`] component: entries
    /// whose on-disk name is not UTF-8 or has control characters are
    /// reported as errors instead.
    pub name: String,
    /// The entry itself (a symlink is not followed).
    pub metadata: Metadata,
}

/// The identity of an inode, to tell whether two opens reached the same file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The identity in `st`.
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn of(st: &Stat) -> Self {
        FileId {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        }
    }
}

/// The kind of file `st` describes.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn kind_of(st: &Stat) -> FileKind {
    FileKind::from_mode(st.st_mode as u32)
}

/// `UNIX_EPOCH` moved by `secs` and `nanos`, saturating at the epoch for
/// times the platform cannot represent.
fn system_time(secs: i64, nanos: u32) -> SystemTime {
    let moved = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
    };
    moved.unwrap_or(UNIX_EPOCH)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`, with a symlink's target read.
/// `Ok(None)` when the entry no longer exists (it was removed since the
/// directory was read). `path` is `name`'s path, for errors.
pub(crate) fn lstat_at(
    dir: BorrowedFd<'_>,
    name: &str,
    path: &RemotePath,
) -> Result<Option<(Stat, Metadata)>, FilesError> {
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(None),
        Err(errno) => return Err(from_errno(errno, "stat", path, "")),
    };
    let target = if kind_of(&st) == FileKind::Symlink {
        match rfs::readlinkat(dir, name, Vec::new()) {
            Ok(target) => Some(PathBuf::from(OsString::from_vec(target.into_bytes()))),
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::INVAL) => None, // replaced by a non-link since the stat
            Err(errno) => return Err(from_errno(errno, "read symlink", path, "")),
        }
    } else {
        None
    };
    let metadata = Metadata::from_stat(&st, target);
    Ok(Some((st, metadata)))
}
