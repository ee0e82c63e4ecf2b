//! Every file operation the agent performs under `<srv_root>/<service>/`
//! (`mcp push`, `mcp pull`, `mcp ls`), confined capability-style: SPEC
//! section 5, rule 3.
//!
//! A [`ServiceTree`] holds an open fd of `<srv_root>/<service>` and does
//! everything relative to it; no operation builds a host path from client
//! input. Paths arrive as [`RemotePath`]s, parsed and normalized without
//! touching the disk.
//!
//! # Confinement rules
//!
//! - **Paths** are relative. Absolute paths, `..` components, NUL bytes and
//!   control characters are refused when parsed ([`RemotePath::parse`]).
//! - **The service directory** `<srv_root>/<service>` must be a real
//!   directory (opened `O_DIRECTORY | O_NOFOLLOW`); a symlink there is
//!   refused. Only [`ServiceTree::open_or_create`] creates it (mode 0750),
//!   for operations that write; reads on a missing tree get
//!   [`FilesError::NoServiceDir`].
//! - **Reads** ([`stat`](ServiceTree::stat), [`list`](ServiceTree::list),
//!   [`walk`](ServiceTree::walk), [`open_read`](ServiceTree::open_read))
//!   resolve with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: symlinks
//!   whose target stays inside the tree are followed; one that is absolute or
//!   climbs out fails as [`FilesError::Escapes`]. `stat`, `list` and `walk`
//!   report a symlink entry as [`FileKind::Symlink`] with its target and never
//!   follow it; `walk` never descends through one. `open_read` follows an
//!   in-tree symlink as its last component (the kernel keeps it inside).
//! - **Writes and removals** ([`upload`](ServiceTree::upload),
//!   [`mkdir_all`](ServiceTree::mkdir_all), [`remove`](ServiceTree::remove))
//!   never go through a symlink, on any component, and act on the directory
//!   entry itself: `remove` of a symlink removes the link, an upload whose
//!   target is a symlink is refused ([`FilesError::Symlink`]). Directories
//!   are created one component at a time with `O_NOFOLLOW`.
//! - **Without `openat2`** (Linux before 5.6) paths are resolved one
//!   component at a time with `openat(O_NOFOLLOW)` and every symlink is
//!   refused, reads included ([`Resolver::ComponentWalk`]).
//! - **Hard links**: a regular file with more than one link may be a link to
//!   a file outside the tree (same file system), so `open_read` refuses it
//!   ([`FilesError::HardLinked`]). Writing never modifies an existing inode
//!   (uploads rename a new file into place), so hard links are harmless there.
//! - **Special files** (devices, FIFOs, sockets) are never opened for reading:
//!   `open_read` checks the kind through an `O_PATH` fd first.
//! - **The service directory itself** cannot be removed, read as a file or
//!   be an upload target ([`FilesError::IsRoot`]).
//! - **Uploads** are atomic: data goes to a temporary file in the target's
//!   directory (held by fd from the start), which is synced and renamed into
//!   place only when the size and SHA-256 check out. A failed, aborted or
//!   dropped upload removes its temporary file and leaves an existing target
//!   byte-for-byte unchanged. See [`Upload`].
//! - **Modes** from clients are permission bits only (0o777): set-user-ID,
//!   set-group-ID and sticky bits are refused, as the agent's files belong to
//!   the agent's user.
//!
//! Mount points inside the tree are followed (`RESOLVE_NO_XDEV` is not used):
//! only the host's root can create them, so they are the operator's choice.
//! A process that can write inside the tree can still rename a directory the
//! agent is using; the held fd then follows the directory, wherever inside
//! the same file system it went.
//!
//! # Streaming and blocking
//!
//! Memory stays bounded: [`Upload::write_chunk`] takes one chunk at a time,
//! [`ReadFile`] is read in chunks, and [`DirEntries`] and [`Walk`] are
//! iterators over fd-based directory reads (a walk holds one fd per level,
//! at most [`MAX_WALK_DEPTH`]). All calls block on the file system: from
//! async code, run them in `tokio::task::spawn_blocking` (every type here is
//! `Send`, and [`ServiceTree`] is `Sync`).
//!
//! ```no_run
//! use std::io::Read;
//! use std::path::Path;
//! use mcp_agent::files::{RemotePath, ServiceTree, UploadOptions};
//!
//! let tree = ServiceTree::open_or_create(Path::new("/srv"), "metacrypt")?;
//! let path: RemotePath = "conf/metacrypt.toml".parse()?;
//! let mut upload = tree.upload(&path, UploadOptions::new(0o640, 1 << 20))?;
//! upload.write_chunk(b"listen = \"127.0.0.1:8443\"\n")?;
//! upload.commit(None)?;
//!
//! let mut contents = String::new();
//! tree.open_read(&path)?.read_to_string(&mut contents).expect("read");
//! for entry in tree.list(&"conf".parse()?)? {
//!     println!("{}", entry?.name);
//! }
//! # Ok::<(), mcp_agent::files::FilesError>(())
//! ```

mod error;
mod list;
mod meta;
mod path;
mod remove;
mod resolve;
pub mod serve;
mod tree;
mod upload;
mod vm;

#[cfg(test)]
mod tests;

pub use error::FilesError;
pub use list::{DirEntries, Walk, WalkEntry};
pub use meta::{Entry, FileKind, Metadata};
pub use path::{MAX_COMPONENT_LEN, MAX_PATH_LEN, RemotePath};
pub use resolve::Resolver;
pub use tree::{ReadFile, ServiceTree};
pub use upload::{Committed, Upload, UploadOptions};
pub use vm::VmFiles;

/// Mode of the directories created for the tree itself and for an upload's
/// missing parents.
pub const DEFAULT_DIR_MODE: u32 = 0o750;

/// Deepest nesting a recursive walk or removal descends to; each level holds
/// one open directory fd.
pub const MAX_WALK_DEPTH: usize = 128;

/// `mode` as a [`rustix::fs::Mode`], if it has only permission bits
/// ([`mcp_core::wire::check_mode`], the rule the clients apply too).
fn check_mode(mode: u32) -> Result<rustix::fs::Mode, FilesError> {
    mcp_core::wire::check_mode(mode).map_err(|_| FilesError::InvalidMode { mode })?;
    Ok(rustix::fs::Mode::from_bits_truncate(mode))
}
