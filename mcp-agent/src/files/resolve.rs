//! Opening paths beneath a held directory fd without ever leaving it.
//!
//! Two resolvers, chosen by [`Resolver`]:
//! - `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the kernel resolves
//!   the whole path and fails with `EXDEV` the moment it would leave the
//!   directory (an absolute symlink, `..` above it); [`Follow::Never`] adds
//!   `RESOLVE_NO_SYMLINKS`, so any symlink fails with `ELOOP`.
//! - [`open_by_components`]: one `openat(O_NOFOLLOW)` per component from
//!   the held fd, refusing every symlink. Used when the kernel has no
//!   `openat2` (before Linux 5.6: `ENOSYS`) and on request.
//!
//! `RESOLVE_NO_XDEV` is not used: a mount point under `<srv_root>/<service>`
//! can only be made by the host's root, so it is the operator's choice and
//! part of the tree. Confinement is about names (`..`, symlinks).
//!
//! Directories are created only by [`create_dirs`], one component at a time
//! with `mkdirat` and `openat(O_NOFOLLOW)`, which cannot leave the tree.

use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::FilesError;
use super::error::from_errno;
use super::path::RemotePath;

/// How paths are resolved beneath a service directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Resolver {
    /// `openat2` with `RESOLVE_BENEATH`, falling back to
    /// [`Resolver::ComponentWalk`] when the kernel lacks it (`ENOSYS`,
    /// Linux before 5.6). Symlinks that stay inside the tree are followed
    /// where the operation allows it.
    #[default]
    Auto,
    /// One `openat(O_NOFOLLOW)` per component; every symlink on a path is
    /// refused. Stricter than [`Resolver::Auto`]; for kernels or seccomp
    /// profiles without `openat2`, and for tests.
    ComponentWalk,
}

/// Whether an operation may follow symlinks that stay inside the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Follow {
    /// Reads: follow symlinks on the path, the last component included, as
    /// long as they resolve inside the tree.
    InTree,
    /// Writes and removals: no symlink anywhere on the path.
    Never,
}

/// Set once `openat2` returned `ENOSYS`; later calls skip straight to the walk.
static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);

/// How often `openat2` is retried when it reports `EAGAIN` (a concurrent
/// rename or mount while it checked `..`).
const EAGAIN_RETRIES: usize = 16;

/// Opens `path` beneath `root` with `flags` (`O_CLOEXEC` is always added).
/// With [`Follow::Never`] a symlink anywhere on the path, the last component
/// included, fails with `ELOOP`.
pub(crate) fn open_beneath(
    root: BorrowedFd<'_>,
    path: &RemotePath,
    flags: OFlags,
    follow: Follow,
    resolver: Resolver,
) -> Result<OwnedFd, Errno> {
    if uses_openat2(resolver) {
        match openat2_beneath(root, path, flags, follow) {
            Err(Errno::NOSYS) => OPENAT2_MISSING.store(true, Ordering::Relaxed),
            result => return result,
        }
    }
    open_by_components(root, path, flags)
}

/// Whether `resolver` resolves with `openat2` on this kernel.
pub(crate) fn uses_openat2(resolver: Resolver) -> bool {
    resolver == Resolver::Auto && !OPENAT2_MISSING.load(Ordering::Relaxed)
}

/// Why writes and removals refuse a symlink, for error messages.
pub(crate) const NO_SYMLINK_WRITES: &str =
    "files are written and removed only through real directories";

/// Why an `ELOOP` happened, for the error message.
pub(crate) fn symlink_reason(follow: Follow, resolver: Resolver) -> &'static str {
    match (follow, uses_openat2(resolver)) {
        (Follow::Never, _) => NO_SYMLINK_WRITES,
        (Follow::InTree, true) => "too many levels of symlinks",
        (Follow::InTree, false) => "symlinks are refused when paths are resolved without openat2",
    }
}

/// `openat2(root, path, flags, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS [|
/// RESOLVE_NO_SYMLINKS])`, retried on `EAGAIN`.
///
/// `RESOLVE_NO_SYMLINKS` refuses a trailing symlink with `ELOOP` by itself;
/// adding `O_NOFOLLOW` would make the kernel open the link (with `O_PATH`)
/// or report `ENOTDIR` (with `O_DIRECTORY`) instead.
fn openat2_beneath(
    root: BorrowedFd<'_>,
    path: &RemotePath,
    flags: OFlags,
    follow: Follow,
) -> Result<OwnedFd, Errno> {
    let mut resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let flags = flags | OFlags::CLOEXEC;
    if follow == Follow::Never {
        resolve |= ResolveFlags::NO_SYMLINKS;
    }
    for _ in 0..EAGAIN_RETRIES {
        match rfs::openat2(root, path.syscall_path(), flags, Mode::empty(), resolve) {
            Err(Errno::AGAIN) => continue,
            result => return result,
        }
    }
    Err(Errno::AGAIN)
}

/// Opens `path` beneath `root` one component at a time: every leading
/// component with `O_PATH | O_DIRECTORY | O_NOFOLLOW`, the last with
/// `flags | O_NOFOLLOW`. Any symlink on the path fails with `ELOOP`, except
/// that with `O_PATH` in `flags` a symlink as the last component is opened
/// itself (the caller checks the kind). Components are plain names (never
/// `..`), so each step stays in the directory it starts from.
pub(crate) fn open_by_components(
    root: BorrowedFd<'_>,
    path: &RemotePath,
    flags: OFlags,
) -> Result<OwnedFd, Errno> {
    let mut components = path.components();
    let Some(last) = components.next_back() else {
        return rfs::openat(root, c".", flags | OFlags::CLOEXEC, Mode::empty());
    };
    let mut held: Option<OwnedFd> = None;
    for component in components {
        let dir = held.as_ref().map_or(root, AsFd::as_fd);
        held = Some(open_component(
            dir,
            component,
            OFlags::PATH | OFlags::DIRECTORY,
        )?);
    }
    open_component(held.as_ref().map_or(root, AsFd::as_fd), last, flags)
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC)`, reporting a symlink
/// as `ELOOP` (with `O_DIRECTORY` the kernel says `ENOTDIR` for one).
pub(crate) fn open_component(
    dir: BorrowedFd<'_>,
    name: &str,
    flags: OFlags,
) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rfs::openat(dir, name, flags, Mode::empty()) {
        Err(Errno::NOTDIR | Errno::LOOP) if is_symlink(dir, name) => Err(Errno::LOOP),
        result => result,
    }
}

/// Whether `name` in `dir` is a symlink (without following it).
fn is_symlink(dir: BorrowedFd<'_>, name: &str) -> bool {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
}

/// A directory fd for reading and for `*at` calls.
pub(crate) const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY);

/// Opens the directory `path` beneath `root`, creating missing components
/// with `mode` (exactly: set with `fchmod`, not filtered by the umask).
/// Never goes through a symlink: each component is opened with `O_NOFOLLOW`
/// from the fd of the one before.
pub(crate) fn create_dirs(
    root: BorrowedFd<'_>,
    path: &RemotePath,
    mode: Mode,
) -> Result<OwnedFd, FilesError> {
    let reason = NO_SYMLINK_WRITES;
    let mut held = rfs::openat(root, c".", DIR_FLAGS | OFlags::CLOEXEC, Mode::empty())
        .map_err(|errno| from_errno(errno, "open", ".", reason))?;
    let mut done = RemotePath::root();
    for component in path.components() {
        done = done.join(component)?;
        held = open_or_create_dir(held.as_fd(), component, mode)
            .map_err(|errno| from_errno(errno, "create directory", &done, reason))?;
    }
    Ok(held)
}

/// Opens the directory `name` in `dir`, creating it with `mode` if missing.
pub(crate) fn open_or_create_dir(
    dir: BorrowedFd<'_>,
    name: &str,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    // Two tries: another writer may create (or remove) it between our calls.
    for _ in 0..2 {
        match open_component(dir, name, DIR_FLAGS) {
            Err(Errno::NOENT) => {}
            result => return result,
        }
        match rfs::mkdirat(dir, name, mode) {
            Ok(()) => {
                let created = open_component(dir, name, DIR_FLAGS)?;
                rfs::fchmod(&created, mode)?;
                return Ok(created);
            }
            Err(Errno::EXIST) => continue,
            Err(errno) => return Err(errno),
        }
    }
    open_component(dir, name, DIR_FLAGS)
}
