//! [`Upload`]: an atomic, streamed write of one file.

use std::fmt;
use std::fs::File;
use std::io::Write;

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use super::error::{from_errno, io_error};
use super::meta::{FileId, FileKind, kind_of};
use super::path::{MAX_COMPONENT_LEN, RemotePath};
use super::resolve::NO_SYMLINK_WRITES;
use super::{FilesError, check_mode};
use mcp_core::fsutil::Writeback;

/// What an upload promises and may do. Build with [`UploadOptions::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UploadOptions {
    /// The file's permission bits (at most 0o777), set exactly at commit.
    pub mode: u32,
    /// The most bytes accepted; a chunk that would pass it fails the upload
    /// with [`FilesError::TooLarge`].
    pub max_size: u64,
    /// The length announced by the sender, if any: more bytes fail the
    /// chunk that brings them, fewer fail the commit
    /// ([`FilesError::SizeMismatch`]).
    pub expected_size: Option<u64>,
    /// The SHA-256 announced before the data, if any; checked at commit.
    pub expected_sha256: Option<[u8; 32]>,
}

impl UploadOptions {
    /// An upload of a file with permission bits `mode`, at most `max_size`
    /// bytes, with no announced size or digest.
    pub fn new(mode: u32, max_size: u64) -> Self {
        UploadOptions {
            mode,
            max_size,
            expected_size: None,
            expected_sha256: None,
        }
    }

    /// These options with the sender's announced length.
    pub fn with_expected_size(mut self, size: u64) -> Self {
        self.expected_size = Some(size);
        self
    }

    /// These options with the SHA-256 announced before the data.
    pub fn with_expected_sha256(mut self, sha256: [u8; 32]) -> Self {
        self.expected_sha256 = Some(sha256);
        self
    }
}

/// What a committed upload wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Committed {
    /// Bytes written.
    pub size: u64,
    /// SHA-256 of the bytes written.
    pub sha256: [u8; 32],
}

/// An atomic upload of one file, fed chunk by chunk.
///
/// Created by [`ServiceTree::upload`](super::ServiceTree::upload), which
/// opens the target's directory (creating it as needed, never through a
/// symlink) and holds its fd; everything after goes through that fd, so
/// replacing a directory on the path with a symlink mid-upload cannot
/// redirect the file. The data goes to a new temporary file
/// `.<name>.mcp-upload-<random>` (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode
/// 0600) in that directory; [`Upload::commit`] checks the size and SHA-256,
/// sets the mode, syncs the file, renames it over the target and syncs the
/// directory. [`Upload::abort`], a failed commit, or dropping the upload
/// removes the temporary file: an existing target is then byte-for-byte
/// unchanged.
///
/// The target must be absent or a regular file; a directory, a symlink or a
/// special file there is refused, when the upload starts and again at
/// commit. (Should a symlink appear between that last check and the rename,
/// the rename replaces the link itself; nothing is written through it.) The
/// new file belongs to the agent's user; the old file's owner and mode are
/// not carried over. If the agent dies mid-upload, the temporary file stays
/// until an upload into the same directory finds it untouched for
/// an hour and removes it.
pub struct Upload {
    path: RemotePath,
    dir: OwnedFd,
    name: String,
    /// The temporary file's name while it exists and is ours to remove.
    temp: Option<String>,
    file: File,
    hasher: Sha256,
    written: u64,
    options: UploadOptions,
    failed: bool,
    /// Writes back what was written so far while the upload goes on.
    writeback: Writeback,
}

/// The temporary file's prefix before the random part.
const TEMP_MARK: &str = ".mcp-upload-";

/// Attempts at a fresh temporary name before giving up.
const TEMP_ATTEMPTS: usize = 8;

impl Upload {
    /// Starts an upload of `path`, whose directory is open at `dir` and whose
    /// last component is `name`.
    pub(crate) fn begin(
        dir: OwnedFd,
        name: &str,
        path: RemotePath,
        options: UploadOptions,
    ) -> Result<Self, FilesError> {
        check_mode(options.mode)?;
        if let Some(expected) = options.expected_size
            && expected > options.max_size
        {
            return Err(FilesError::TooLarge {
                path: path.to_string(),
                limit: options.max_size,
            });
        }
        check_target(&dir, name, &path)?;
        remove_stale_temps(&dir);
        let (temp, file) = create_temp(&dir, name, &path)?;
        Ok(Upload {
            path,
            dir,
            name: name.to_owned(),
            temp: Some(temp),
            file,
            hasher: Sha256::new(),
            written: 0,
            options,
            failed: false,
            writeback: Writeback::default(),
        })
    }

    /// The target path.
    pub fn path(&self) -> &RemotePath {
        &self.path
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `chunk`. A chunk that would pass the size limit or the
    /// announced size is refused whole, and any failure makes the upload
    /// unusable: later calls fail with [`FilesError::UploadFailed`].
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), FilesError> {
        self.usable()?;
        let result = self.append(chunk);
        self.failed = result.is_err();
        result
    }

    /// Checks the size and SHA-256 (against [`UploadOptions::expected_sha256`]
    /// and `expected_sha256`, each when given), then puts the file in place
    /// atomically and durably. On any error the temporary file is removed and
    /// the target left as it was.
    pub fn commit(mut self, expected_sha256: Option<[u8; 32]>) -> Result<Committed, FilesError> {
        self.usable()?;
        if let Some(expected) = self.options.expected_size
            && expected != self.written
        {
            return Err(FilesError::SizeMismatch {
                path: self.path.to_string(),
                expected,
                actual: self.written,
            });
        }
        let sha256: [u8; 32] = self.hasher.clone().finalize().into();
        for expected in [self.options.expected_sha256, expected_sha256]
            .into_iter()
            .flatten()
        {
            if expected != sha256 {
                return Err(FilesError::DigestMismatch {
                    path: self.path.to_string(),
                    expected: hex::encode(expected),
                    actual: hex::encode(sha256),
                });
            }
        }
        self.finish()?;
        Ok(Committed {
            size: self.written,
            sha256,
        })
    }

    /// Abandons the upload and removes the temporary file, reporting a
    /// failure to remove it (dropping the upload does the same silently).
    pub fn abort(mut self) -> Result<(), FilesError> {
        self.remove_temp()
    }

    /// Fails if an earlier call failed.
    fn usable(&self) -> Result<(), FilesError> {
        if self.failed {
            return Err(FilesError::UploadFailed {
                path: self.path.to_string(),
            });
        }
        Ok(())
    }

    /// Checks the limits for `chunk`, then writes and hashes it.
    fn append(&mut self, chunk: &[u8]) -> Result<(), FilesError> {
        let total = u64::try_from(chunk.len())
            .ok()
            .and_then(|len| self.written.checked_add(len))
            .unwrap_or(u64::MAX);
        if total > self.options.max_size {
            return Err(FilesError::TooLarge {
                path: self.path.to_string(),
                limit: self.options.max_size,
            });
        }
        if let Some(expected) = self.options.expected_size
            && total > expected
        {
            return Err(FilesError::SizeMismatch {
                path: self.path.to_string(),
                expected,
                actual: total,
            });
        }
        self.file
            .write_all(chunk)
            .map_err(|e| self.write_error(e))?;
        self.hasher.update(chunk);
        self.writeback.wrote(&self.file, total - self.written);
        self.written = total;
        Ok(())
    }

    /// Sets the mode, syncs, renames over the target and syncs the directory.
    fn finish(&mut self) -> Result<(), FilesError> {
        let mode = check_mode(self.options.mode)?;
        let shown = self.path.to_string();
        rfs::fchmod(&self.file, mode).map_err(|e| io_error("set mode of", shown.clone(), e))?;
        // Waits for a sync in progress; the final one below covers the rest.
        self.writeback.stop();
        self.file.sync_all().map_err(|e| self.write_error(e))?;
        check_target(&self.dir, &self.name, &self.path)?;
        let Some(temp) = self.temp.as_deref() else {
            return Err(FilesError::UploadFailed { path: shown });
        };
        self.check_temp_is_ours(temp)?;
        rfs::renameat(&self.dir, temp, &self.dir, self.name.as_str())
            .map_err(|e| from_errno(e, "rename into place", &self.path, NO_SYMLINK_WRITES))?;
        // Renamed: the temporary name is gone and must not be unlinked.
        self.temp = None;
        rfs::fsync(&self.dir).map_err(|e| io_error("sync the directory of", shown, e))
    }

    /// Fails if the entry under the temporary name is no longer the file
    /// this upload wrote (someone replaced it in the directory).
    fn check_temp_is_ours(&self, temp: &str) -> Result<(), FilesError> {
        let changed = || FilesError::Changed {
            path: self.path.to_string(),
        };
        let ours = rfs::fstat(&self.file).map_err(|_| changed())?;
        let there =
            rfs::statat(&self.dir, temp, AtFlags::SYMLINK_NOFOLLOW).map_err(|_| changed())?;
        if FileId::of(&ours) != FileId::of(&there) {
            return Err(changed());
        }
        Ok(())
    }

    /// A write or sync failure as an error.
    fn write_error(&self, err: std::io::Error) -> FilesError {
        match err.raw_os_error().map(Errno::from_raw_os_error) {
            Some(errno) => from_errno(errno, "write", &self.path, NO_SYMLINK_WRITES),
            None => FilesError::Io {
                op: "write",
                path: self.path.to_string(),
                source: err,
            },
        }
    }

    /// Unlinks the temporary file, if it is still ours.
    fn remove_temp(&mut self) -> Result<(), FilesError> {
        let Some(temp) = self.temp.take() else {
            return Ok(());
        };
        match rfs::unlinkat(&self.dir, temp.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(io_error(
                "remove the temporary file of",
                self.path.to_string(),
                e,
            )),
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = self.remove_temp();
    }
}

impl fmt::Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upload")
            .field("path", &self.path)
            .field("temp", &self.temp)
            .field("written", &self.written)
            .field("options", &self.options)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// Fails unless `name` in `dir` is absent or a regular file.
fn check_target(dir: &OwnedFd, name: &str, path: &RemotePath) -> Result<(), FilesError> {
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(from_errno(e, "stat", path, NO_SYMLINK_WRITES)),
    };
    let shown = path.to_string();
    match kind_of(&st) {
        FileKind::File => Ok(()),
        FileKind::Dir => Err(FilesError::IsADirectory { path: shown }),
        FileKind::Symlink => Err(FilesError::Symlink {
            path: shown,
            reason: "an upload does not replace a symlink; remove it first",
        }),
        kind => Err(FilesError::NotAFile { path: shown, kind }),
    }
}

/// Creates a fresh temporary file next to `name` in `dir`.
fn create_temp(dir: &OwnedFd, name: &str, path: &RemotePath) -> Result<(String, File), FilesError> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    for _ in 0..TEMP_ATTEMPTS {
        let temp = temp_name(name, rand::random());
        match rfs::openat(
            dir.as_fd(),
            temp.as_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        ) {
            Ok(fd) => return Ok((temp, File::from(fd))),
            Err(Errno::EXIST) => continue,
            Err(e) => {
                return Err(from_errno(
                    e,
                    "create a temporary file for",
                    path,
                    NO_SYMLINK_WRITES,
                ));
            }
        }
    }
    Err(io_error(
        "create a temporary file for",
        path.to_string(),
        Errno::EXIST,
    ))
}

/// Temporary upload files older than this were left by an agent that died
/// mid-upload (a live upload writes to its file continuously).
pub(crate) const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes the temporary upload files in `dir` (regular files named
/// `.*.mcp-upload-*`) not written to for [`STALE_TEMP`]: each upload
/// cleans up after crashed ones in its own directory. Best effort.
fn remove_stale_temps(dir: &OwnedFd) {
    let Ok(fd) = rfs::openat(
        dir.as_fd(),
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let Ok(entries) = rfs::Dir::new(fd) else {
        return;
    };
    let now = std::time::SystemTime::now();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if !(name.starts_with('.') && name.contains(TEMP_MARK)) {
            continue;
        }
        let Ok(st) = rfs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let meta = super::Metadata::from_stat(&st, None);
        let stale = now
            .duration_since(meta.mtime)
            .is_ok_and(|age| age >= STALE_TEMP);
        if meta.kind == FileKind::File && stale {
            match rfs::unlinkat(dir.as_fd(), name, AtFlags::empty()) {
                Ok(()) => tracing::info!(
                    file = name,
                    "removed the temporary file of an interrupted upload"
                ),
                Err(e) => {
                    tracing::debug!(file = name, error = %e, "cannot remove a stale temporary file")
                }
            }
        }
    }
}

/// `.<name>.mcp-upload-<16 hex digits>`, with `name` cut (on a character
/// boundary) so the whole stays within [`MAX_COMPONENT_LEN`] bytes.
pub(crate) fn temp_name(name: &str, random: u64) -> String {
    let suffix = format!("{TEMP_MARK}{random:016x}");
    let room = MAX_COMPONENT_LEN - 1 - suffix.len();
    let mut end = name.len().min(room);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!(".{}{suffix}", &name[..end])
}
