//! Directory listings read through directory fds as they are iterated:
//! [`DirEntries`] for one directory, [`Walk`] for a whole subtree.

use std::ffi::CStr;

use rustix::fd::OwnedFd;
use rustix::fs::{self as rfs, Dir};
use rustix::io::Errno;

use super::FilesError;
use super::error::from_errno;
use super::meta::{Entry, FileKind, Metadata, lstat_at};
use super::path::RemotePath;
use super::resolve::{DIR_FLAGS, open_component};

/// The entries of one directory, read as they are iterated (bounded memory
/// whatever the directory's size).
///
/// An `Err` item is about one entry (a name that is not UTF-8 or has control
/// characters, so it cannot be named in a request; a failed `stat`) and the
/// iteration goes on after it, except after an error reading the directory
/// itself, which ends it. Entries removed while the directory is read are
/// skipped.
#[derive(Debug)]
pub struct DirEntries {
    dir: Dir,
    path: RemotePath,
}

impl DirEntries {
    /// The entries of the directory open at `fd`, whose path is `path`.
    pub(crate) fn new(fd: OwnedFd, path: RemotePath) -> Result<Self, FilesError> {
        let dir = Dir::new(fd).map_err(|e| from_errno(e, "read directory", &path, ""))?;
        Ok(DirEntries { dir, path })
    }
}

impl Iterator for DirEntries {
    type Item = Result<Entry, FilesError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let raw = match self.dir.next()? {
                Ok(raw) => raw,
                Err(errno) => {
                    return Some(Err(from_errno(errno, "read directory", &self.path, "")));
                }
            };
            if is_dot(raw.file_name()) {
                continue;
            }
            match describe(&self.dir, &self.path, raw.file_name()) {
                Ok(Some(found)) => {
                    return Some(Ok(Entry {
                        name: found.name,
                        metadata: found.metadata,
                    }));
                }
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// One entry found by a [`Walk`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalkEntry {
    /// The entry's path from the service directory (not from the walk's
    /// start; see [`RemotePath::strip_prefix`]).
    pub path: RemotePath,
    /// 1 for entries directly in the walk's start directory, 2 for the
    /// level below, and so on.
    pub depth: usize,
    /// The entry itself (a symlink is not followed).
    pub metadata: Metadata,
}

/// A depth-first walk of a directory's subtree, each directory reported
/// before its contents. Holds one directory fd per level being read; never
/// follows a symlink (a symlink is reported, not entered) and descends into
/// each directory with `O_NOFOLLOW` from its parent's fd.
///
/// Like [`DirEntries`], an `Err` item concerns one entry and the walk goes
/// on; a directory whose contents lie beyond the depth limit is reported,
/// followed by a [`FilesError::TooDeep`] item.
#[derive(Debug)]
pub struct Walk {
    stack: Vec<Level>,
    max_depth: usize,
    pending: Option<FilesError>,
}

/// One directory being read by a [`Walk`].
#[derive(Debug)]
struct Level {
    dir: Dir,
    path: RemotePath,
}

impl Walk {
    /// A walk of the directory open at `fd`, whose path is `path`.
    pub(crate) fn new(fd: OwnedFd, path: RemotePath, max_depth: usize) -> Result<Self, FilesError> {
        let dir = Dir::new(fd).map_err(|e| from_errno(e, "read directory", &path, ""))?;
        Ok(Walk {
            stack: vec![Level { dir, path }],
            max_depth,
            pending: None,
        })
    }

    /// Reports the entry `raw_name` of the innermost directory and, if it is
    /// a directory within the depth limit, starts reading it.
    fn visit(&mut self, raw_name: &CStr) -> Result<Option<WalkEntry>, FilesError> {
        let depth = self.stack.len();
        let Some(level) = self.stack.last() else {
            return Ok(None);
        };
        let Some(found) = describe(&level.dir, &level.path, raw_name)? else {
            return Ok(None);
        };
        if found.metadata.kind != FileKind::Dir {
            return Ok(Some(WalkEntry {
                path: found.path,
                depth,
                metadata: found.metadata,
            }));
        }
        let parent = level
            .dir
            .fd()
            .map_err(|e| from_errno(e, "read directory", &level.path, ""))?;
        let sub = match open_component(parent, &found.name, DIR_FLAGS) {
            Ok(sub) => sub,
            Err(Errno::NOENT) => return Ok(None),
            // Replaced by a symlink or a file since the stat.
            Err(Errno::LOOP | Errno::NOTDIR) => {
                return Err(FilesError::Changed {
                    path: found.path.to_string(),
                });
            }
            Err(errno) => return Err(from_errno(errno, "open", &found.path, "")),
        };
        // The directory actually opened is the one reported and entered.
        let st = rfs::fstat(&sub).map_err(|e| from_errno(e, "stat", &found.path, ""))?;
        let entry = WalkEntry {
            path: found.path.clone(),
            depth,
            metadata: Metadata::from_stat(&st, None),
        };
        if depth >= self.max_depth {
            if has_entries(sub, &found.path)? {
                self.pending = Some(FilesError::TooDeep {
                    path: found.path.to_string(),
                    limit: self.max_depth,
                });
            }
        } else {
            let dir =
                Dir::new(sub).map_err(|e| from_errno(e, "read directory", &found.path, ""))?;
            self.stack.push(Level {
                dir,
                path: found.path,
            });
        }
        Ok(Some(entry))
    }
}

impl Iterator for Walk {
    type Item = Result<WalkEntry, FilesError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(err) = self.pending.take() {
            return Some(Err(err));
        }
        loop {
            let level = self.stack.last_mut()?;
            let raw = match level.dir.next() {
                Some(Ok(raw)) => raw,
                Some(Err(errno)) => {
                    let err = from_errno(errno, "read directory", &level.path, "");
                    self.stack.pop();
                    return Some(Err(err));
                }
                None => {
                    self.stack.pop();
                    continue;
                }
            };
            if is_dot(raw.file_name()) {
                continue;
            }
            match self.visit(raw.file_name()) {
                Ok(Some(entry)) => return Some(Ok(entry)),
                Ok(None) => continue,
                Err(err) => return Some(Err(err)),
            }
        }
    }
}

/// An entry found in a directory: its name, path and metadata.
struct Found {
    name: String,
    path: RemotePath,
    metadata: Metadata,
}

/// Describes the entry `raw_name` of `dir` (whose path is `parent`), without
/// following it; `Ok(None)` if it no longer exists.
fn describe(dir: &Dir, parent: &RemotePath, raw_name: &CStr) -> Result<Option<Found>, FilesError> {
    let Ok(name) = raw_name.to_str() else {
        return Err(not_utf8(parent, raw_name));
    };
    let path = parent.join(name)?;
    let fd = dir
        .fd()
        .map_err(|e| from_errno(e, "read directory", parent, ""))?;
    Ok(lstat_at(fd, name, &path)?.map(|(_, metadata)| Found {
        name: name.to_owned(),
        path,
        metadata,
    }))
}

/// The error for an entry whose name is not UTF-8: it cannot be named in a
/// request, so it is reported (lossily) instead of listed.
fn not_utf8(parent: &RemotePath, raw_name: &CStr) -> FilesError {
    let name = raw_name.to_string_lossy();
    let path = if parent.is_root() {
        name.into_owned()
    } else {
        format!("{parent}/{name}")
    };
    FilesError::InvalidPath {
        path,
        reason: "is not valid UTF-8, so it cannot be named in a request".into(),
    }
}

/// Whether the directory open at `fd` has any entry besides `.` and `..`.
fn has_entries(fd: OwnedFd, path: &RemotePath) -> Result<bool, FilesError> {
    let read_error = |e| from_errno(e, "read directory", path, "");
    for raw in Dir::new(fd).map_err(read_error)? {
        if !is_dot(raw.map_err(read_error)?.file_name()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether `name` is `.` or `..`.
pub(crate) fn is_dot(name: &CStr) -> bool {
    name == c"." || name == c".."
}
