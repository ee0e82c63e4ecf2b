//! [`ServiceTree`]: the held fd of `<srv_root>/<service>` and the operations
//! on it; [`ReadFile`]: a file opened for reading.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;

use super::error::{from_errno, io_error};
use super::list::{DirEntries, Walk};
use super::meta::{FileId, FileKind, Metadata, kind_of, lstat_at};
use super::path::RemotePath;
use super::remove::remove_entry;
use super::resolve::{
    DIR_FLAGS, Follow, Resolver, create_dirs, open_beneath, open_component, open_or_create_dir,
    symlink_reason,
};
use super::upload::{Upload, UploadOptions};
use super::{DEFAULT_DIR_MODE, FilesError, MAX_WALK_DEPTH, check_mode};
use mcp_core::servicedef::name_problem;

/// The directory `<srv_root>/<service>`, held open; every operation resolves
/// its path beneath this fd (see the [module documentation](super) for the
/// rules).
#[derive(Debug)]
pub struct ServiceTree {
    root: OwnedFd,
    dir: PathBuf,
    service: String,
    resolver: Resolver,
}

impl ServiceTree {
    /// Opens the existing directory of `service` under `srv_root`, for
    /// reading. A missing directory (or `srv_root`) is
    /// [`FilesError::NoServiceDir`]; a symlink in its place is refused.
    ///
    /// `srv_root` comes from the agent's configuration and is trusted: it is
    /// opened like any configured path (it may itself be a symlink, as `/srv`
    /// sometimes is). Confinement starts at `<srv_root>/<service>`.
    pub fn open(srv_root: &Path, service: &str) -> Result<Self, FilesError> {
        Self::open_with(srv_root, service, false)
    }

    /// Opens the directory of `service` under `srv_root`, creating it (mode
    /// [`DEFAULT_DIR_MODE`]) if missing, for operations that write.
    /// `srv_root` itself must exist.
    pub fn open_or_create(srv_root: &Path, service: &str) -> Result<Self, FilesError> {
        Self::open_with(srv_root, service, true)
    }

    /// This tree, resolving paths with `resolver` ([`Resolver::Auto`] by
    /// default).
    pub fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// `<srv_root>/<service>`, as it was opened (for messages only: the
    /// operations use the held fd).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What is at `path`, without following a symlink there (a symlink is
    /// reported as [`FileKind::Symlink`] with its target). Leading components
    /// may be symlinks that stay inside the tree. The root path gives the
    /// service directory itself.
    pub fn stat(&self, path: &RemotePath) -> Result<Metadata, FilesError> {
        let Some((parent, name)) = path.split_last() else {
            let st = rfs::fstat(&self.root).map_err(|e| from_errno(e, "stat", path, ""))?;
            return Ok(Metadata::from_stat(&st, None));
        };
        let dir = self.resolve(&parent, DIR_FLAGS, Follow::InTree, path)?;
        match lstat_at(dir.as_fd(), name, path)? {
            Some((_, metadata)) => Ok(metadata),
            None => Err(FilesError::NotFound {
                path: path.to_string(),
            }),
        }
    }

    /// The entries of the directory at `path` (symlinks on the way that stay
    /// inside are followed), without `.` and `..`, in directory order. Reads
    /// the directory as it is iterated; see [`DirEntries`].
    pub fn list(&self, path: &RemotePath) -> Result<DirEntries, FilesError> {
        let dir = self.resolve(path, DIR_FLAGS, Follow::InTree, path)?;
        DirEntries::new(dir, path.clone())
    }

    /// Everything beneath the directory at `path`, depth first, each
    /// directory before its contents, never following a symlink below
    /// `path`. Entries directly in `path` have depth 1; `max_depth` (at least
    /// 1, at most [`MAX_WALK_DEPTH`]) bounds the depth reported, and a
    /// non-empty directory at that depth yields [`FilesError::TooDeep`].
    pub fn walk(&self, path: &RemotePath, max_depth: usize) -> Result<Walk, FilesError> {
        let dir = self.resolve(path, DIR_FLAGS, Follow::InTree, path)?;
        Walk::new(dir, path.clone(), max_depth.clamp(1, MAX_WALK_DEPTH))
    }

    /// Opens the regular file at `path` for reading. Symlinks that stay
    /// inside the tree are followed, the last component included. Refused:
    /// anything but a regular file (checked through an `O_PATH` fd, so a
    /// device or FIFO is never opened), and a file with more than one hard
    /// link ([`FilesError::HardLinked`]).
    pub fn open_read(&self, path: &RemotePath) -> Result<ReadFile, FilesError> {
        let probe = self.resolve(path, OFlags::PATH, Follow::InTree, path)?;
        let probed = rfs::fstat(&probe).map_err(|e| from_errno(e, "stat", path, ""))?;
        self.readable(path, &probed)?;

        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = self.resolve(path, flags, Follow::InTree, path)?;
        let st = rfs::fstat(&fd).map_err(|e| from_errno(e, "stat", path, ""))?;
        let metadata = self.readable(path, &st)?;
        if FileId::of(&st) != FileId::of(&probed) {
            return Err(FilesError::Changed {
                path: path.to_string(),
            });
        }
        // O_NONBLOCK only guarded the open; reads of a regular file ignore it.
        rfs::fcntl_getfl(&fd)
            .and_then(|fl| rfs::fcntl_setfl(&fd, fl - OFlags::NONBLOCK))
            .map_err(|e| from_errno(e, "open", path, ""))?;
        Ok(ReadFile {
            file: File::from(fd),
            metadata,
        })
    }

    /// Opens the regular file at `path` as an `O_PATH` descriptor for a VM
    /// to boot from: no symlink anywhere on the path (a file a service's
    /// container can swap is opened only through real directories), never
    /// a device or FIFO, and never a file with more than one hard link. The
    /// descriptor is what QEMU is given, so nothing is resolved again later.
    pub fn open_boot_file(&self, path: &RemotePath) -> Result<OwnedFd, FilesError> {
        let fd = open_beneath(
            self.root.as_fd(),
            path,
            OFlags::PATH,
            Follow::Never,
            self.resolver,
        )
        .map_err(|errno| {
            from_errno(
                errno,
                "open",
                path,
                "a VM boots only from files reached through real directories, never through a symlink",
            )
        })?;
        let st = rfs::fstat(&fd).map_err(|e| from_errno(e, "stat", path, ""))?;
        self.readable(path, &st)?;
        Ok(fd)
    }

    /// Removes the entry at `path`: a file, a symlink (the link itself,
    /// never its target), a special file, or a directory (empty, or with
    /// everything in it when `recursive`). No symlink may lead to `path`.
    /// The service directory itself is refused ([`FilesError::IsRoot`]).
    ///
    /// A recursive removal works through directory fds, never follows a
    /// symlink and is not atomic: when it fails part way, what was removed
    /// stays removed.
    pub fn remove(&self, path: &RemotePath, recursive: bool) -> Result<(), FilesError> {
        let (parent, name) = path
            .split_last()
            .ok_or(FilesError::IsRoot { op: "remove" })?;
        let dir = self.resolve(&parent, DIR_FLAGS, Follow::Never, path)?;
        remove_entry(dir.as_fd(), name, path, recursive)
    }

    /// Creates the directory at `path` and any missing parents, each with
    /// exactly `mode` (permission bits only; the umask does not apply).
    /// Existing directories are kept as they are; no symlink may be on the
    /// path.
    pub fn mkdir_all(&self, path: &RemotePath, mode: u32) -> Result<(), FilesError> {
        let mode = check_mode(mode)?;
        create_dirs(self.root.as_fd(), path, mode).map(drop)
    }

    /// Starts an atomic upload to `path`, creating missing parent directories
    /// (mode [`DEFAULT_DIR_MODE`]; they stay if the upload fails). The target
    /// must be absent or a regular file; see [`Upload`].
    pub fn upload(&self, path: &RemotePath, options: UploadOptions) -> Result<Upload, FilesError> {
        let (parent, name) = path
            .split_last()
            .ok_or(FilesError::IsRoot { op: "upload" })?;
        let dir_mode = Mode::from_bits_truncate(DEFAULT_DIR_MODE);
        let dir = create_dirs(self.root.as_fd(), &parent, dir_mode)?;
        Upload::begin(dir, name, path.clone(), options)
    }

    /// Opens `path` beneath the root with `flags`; errors name `shown`.
    fn resolve(
        &self,
        path: &RemotePath,
        flags: OFlags,
        follow: Follow,
        shown: &RemotePath,
    ) -> Result<OwnedFd, FilesError> {
        open_beneath(self.root.as_fd(), path, flags, follow, self.resolver).map_err(|errno| {
            from_errno(errno, "open", shown, symlink_reason(follow, self.resolver))
        })
    }

    /// The metadata in `st` if it is a file `open_read` may read.
    fn readable(&self, path: &RemotePath, st: &rfs::Stat) -> Result<Metadata, FilesError> {
        let metadata = Metadata::from_stat(st, None);
        match kind_of(st) {
            FileKind::File => {}
            FileKind::Symlink => {
                return Err(FilesError::Symlink {
                    path: path.to_string(),
                    reason: symlink_reason(Follow::InTree, self.resolver),
                });
            }
            kind => {
                return Err(FilesError::NotAFile {
                    path: path.to_string(),
                    kind,
                });
            }
        }
        if metadata.links > 1 {
            return Err(FilesError::HardLinked {
                path: path.to_string(),
                links: metadata.links,
            });
        }
        Ok(metadata)
    }

    /// Validates `service` and opens (or creates) its directory.
    fn open_with(srv_root: &Path, service: &str, create: bool) -> Result<Self, FilesError> {
        if let Some(reason) = name_problem(service) {
            return Err(FilesError::InvalidService {
                service: service.to_owned(),
                reason,
            });
        }
        let dir = srv_root.join(service);
        let shown = || dir.display().to_string();
        let srv = match rfs::open(srv_root, DIR_FLAGS | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if !create => return Err(FilesError::NoServiceDir { dir: shown() }),
            Err(errno) => {
                return Err(io_error(
                    "open srv_root",
                    srv_root.display().to_string(),
                    errno,
                ));
            }
        };
        let opened = if create {
            open_or_create_dir(
                srv.as_fd(),
                service,
                Mode::from_bits_truncate(DEFAULT_DIR_MODE),
            )
        } else {
            open_component(srv.as_fd(), service, DIR_FLAGS)
        };
        let root = opened.map_err(|errno| match errno {
            Errno::NOENT => FilesError::NoServiceDir { dir: shown() },
            Errno::LOOP => FilesError::Symlink {
                path: shown(),
                reason: "the service directory must be a real directory",
            },
            errno => from_errno(errno, "open", shown(), ""),
        })?;
        Ok(ServiceTree {
            root,
            dir,
            service: service.to_owned(),
            resolver: Resolver::default(),
        })
    }
}

/// A regular file of a service tree, open for reading, with its metadata as
/// of the open. Read it in chunks with [`Read`], or take the file out with
/// [`ReadFile::into_std`] / [`ReadFile::into_tokio`]. A reader that promised
/// [`Metadata::size`] bytes should stop there: the file may still grow.
#[derive(Debug)]
pub struct ReadFile {
    file: File,
    metadata: Metadata,
}

impl ReadFile {
    /// The file's metadata, taken from the open fd.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The open file and its metadata.
    pub fn into_std(self) -> (File, Metadata) {
        (self.file, self.metadata)
    }

    /// The open file as a tokio file, and its metadata.
    pub fn into_tokio(self) -> (tokio::fs::File, Metadata) {
        (tokio::fs::File::from_std(self.file), self.metadata)
    }
}

impl Read for ReadFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}
