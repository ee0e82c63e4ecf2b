//! Removing one entry, and recursively a directory's contents, through
//! directory fds with `unlinkat`, never following a symlink.

use std::ffi::{CStr, CString};

use rustix::fd::{BorrowedFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, Dir, OFlags};
use rustix::io::Errno;

use super::error::from_errno;
use super::list::is_dot;
use super::meta::{FileId, FileKind, kind_of, lstat_at};
use super::path::RemotePath;
use super::resolve::{DIR_FLAGS, NO_SYMLINK_WRITES, open_component};
use super::{FilesError, MAX_WALK_DEPTH};

/// Removes the entry `name` of `parent` (whose path is `path`): anything but
/// a directory is unlinked (a symlink itself, not its target); a directory is
/// removed if empty, or emptied first when `recursive`.
pub(crate) fn remove_entry(
    parent: BorrowedFd<'_>,
    name: &str,
    path: &RemotePath,
    recursive: bool,
) -> Result<(), FilesError> {
    let reason = NO_SYMLINK_WRITES;
    let Some((st, _)) = lstat_at(parent, name, path)? else {
        return Err(FilesError::NotFound {
            path: path.to_string(),
        });
    };
    if kind_of(&st) != FileKind::Dir {
        return rfs::unlinkat(parent, name, AtFlags::empty())
            .map_err(|e| from_errno(e, "remove", path, reason));
    }
    if recursive {
        let dir = open_component(parent, name, DIR_FLAGS).map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => changed(path),
            e => from_errno(e, "open", path, reason),
        })?;
        let opened = rfs::fstat(&dir).map_err(|e| from_errno(e, "stat", path, reason))?;
        if FileId::of(&opened) != FileId::of(&st) {
            return Err(changed(path));
        }
        empty_dir(dir, path)?;
    }
    rfs::unlinkat(parent, name, AtFlags::REMOVEDIR).map_err(|e| match e {
        Errno::NOTEMPTY | Errno::EXIST => FilesError::DirectoryNotEmpty {
            path: path.to_string(),
        },
        e => from_errno(e, "remove", path, reason),
    })
}

/// One directory being emptied.
struct Level {
    dir: Dir,
    /// Its name in the level above (empty for the top).
    name: CString,
    /// Its path, for messages (lossy where a name is not UTF-8).
    path: String,
}

/// Removes everything inside the directory open at `top`, depth first,
/// without recursion on the call stack: one fd per level, at most
/// [`MAX_WALK_DEPTH`] levels.
fn empty_dir(top: OwnedFd, top_path: &RemotePath) -> Result<(), FilesError> {
    let top = Level {
        dir: Dir::new(top).map_err(|e| from_errno(e, "read directory", top_path, ""))?,
        name: CString::default(),
        path: top_path.to_string(),
    };
    let mut stack = vec![top];
    while let Some(level) = stack.last_mut() {
        let raw = match level.dir.next() {
            Some(Ok(raw)) => raw,
            Some(Err(e)) => return Err(from_errno(e, "read directory", &level.path, "")),
            None => {
                finish_level(&mut stack)?;
                continue;
            }
        };
        let name = raw.file_name();
        if is_dot(name) {
            continue;
        }
        let path = child_display(&level.path, name);
        let fd = level
            .dir
            .fd()
            .map_err(|e| from_errno(e, "read directory", &level.path, ""))?;
        if let Some(sub) = remove_or_open(fd, name, &path)? {
            if stack.len() >= MAX_WALK_DEPTH {
                return Err(FilesError::TooDeep {
                    path,
                    limit: MAX_WALK_DEPTH,
                });
            }
            let dir = Dir::new(sub).map_err(|e| from_errno(e, "read directory", &path, ""))?;
            stack.push(Level {
                dir,
                name: name.to_owned(),
                path,
            });
        }
    }
    Ok(())
}

/// Pops the innermost (now empty) level and removes it from its parent; the
/// top level is left for the caller to remove.
fn finish_level(stack: &mut Vec<Level>) -> Result<(), FilesError> {
    let Some(done) = stack.pop() else {
        return Ok(());
    };
    let Some(parent) = stack.last() else {
        return Ok(());
    };
    let fd = parent
        .dir
        .fd()
        .map_err(|e| from_errno(e, "read directory", &parent.path, ""))?;
    match rfs::unlinkat(fd, done.name.as_c_str(), AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::NOTEMPTY | Errno::EXIST) => {
            Err(FilesError::DirectoryNotEmpty { path: done.path })
        }
        Err(e) => Err(from_errno(e, "remove", &done.path, "")),
    }
}

/// Unlinks the entry `name` of `dir` if it is not a directory (`Ok(None)`),
/// or opens it, without following a symlink, to be emptied (`Ok(Some)`).
fn remove_or_open(
    dir: BorrowedFd<'_>,
    name: &CStr,
    path: &str,
) -> Result<Option<OwnedFd>, FilesError> {
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(from_errno(e, "stat", path, "")),
    };
    if kind_of(&st) != FileKind::Dir {
        return match rfs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(None),
            Err(Errno::ISDIR) => Err(changed(path)),
            Err(e) => Err(from_errno(e, "remove", path, "")),
        };
    }
    let flags = DIR_FLAGS | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rfs::openat(dir, name, flags, rfs::Mode::empty()) {
        Ok(sub) => Ok(Some(sub)),
        Err(Errno::NOENT) => Ok(None),
        // Replaced by a symlink (ENOTDIR with O_DIRECTORY) or a file.
        Err(Errno::NOTDIR | Errno::LOOP) => Err(changed(path)),
        Err(e) => Err(from_errno(e, "open", path, "")),
    }
}

/// `parent/name` for messages.
fn child_display(parent: &str, name: &CStr) -> String {
    let name = name.to_string_lossy();
    if parent == "." {
        name.into_owned()
    } else {
        format!("{parent}/{name}")
    }
}

/// The error for an entry replaced while it was being removed.
fn changed(path: impl ToString) -> FilesError {
    FilesError::Changed {
        path: path.to_string(),
    }
}
