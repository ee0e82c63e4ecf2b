//! [`RemotePath`]: a path inside a service directory, as a client sends it.
//!
//! Parsing is pure (no file system access). A parsed path is relative,
//! normalized (`./a//b/` becomes `a/b`) and every one of its components is a
//! plain name: never `..`, never empty, no NUL, no control character, at most
//! [`MAX_COMPONENT_LEN`] bytes; the whole path is at most [`MAX_PATH_LEN`]
//! bytes. The empty path (`""`, `"."`, `"./"`) is the service directory itself.

use std::fmt;
use std::str::FromStr;

use super::FilesError;

/// Longest accepted path, in bytes: the kernel's `PATH_MAX` (4096) less the
/// terminating NUL, so every parsed path can be handed to a system call.
pub const MAX_PATH_LEN: usize = 4095;

/// Longest accepted path component, in bytes (the kernel's `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;

/// How much of a rejected path an error message quotes.
const QUOTED_LEN: usize = 96;

/// A normalized path relative to a service directory.
///
/// Build one with [`RemotePath::parse`] (or [`str::parse`]); every
/// [`ServiceTree`](super::ServiceTree) operation takes one, so a path that
/// reaches the file system has always been checked. Displayed as `.` for the
/// service directory itself, else as the normalized path.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemotePath(String);

impl RemotePath {
    /// The service directory itself.
    pub fn root() -> Self {
        Self(String::new())
    }

    /// Parses and normalizes a client-supplied path.
    ///
    /// `""`, `"."` and `"./"` mean the service directory itself; empty and `.`
    /// components are dropped and a trailing `/` is ignored. Rejected, with an
    /// [`FilesError::InvalidPath`] naming the path and the problem: absolute
    /// paths, any `..` component, NUL bytes, control characters (Unicode
    /// category Cc: they would forge audit log lines and drive the
    /// operator's terminal), components longer than [`MAX_COMPONENT_LEN`]
    /// bytes and paths longer than [`MAX_PATH_LEN`] bytes.
    pub fn parse(raw: &str) -> Result<Self, FilesError> {
        let invalid = |reason: String| FilesError::InvalidPath {
            path: quote(raw),
            reason,
        };
        if raw.len() > MAX_PATH_LEN {
            return Err(invalid(format!(
                "is {} bytes long, the limit is {MAX_PATH_LEN}",
                raw.len()
            )));
        }
        if raw.starts_with('/') {
            return Err(invalid(
                "is absolute; paths are relative to the service directory".into(),
            ));
        }
        let mut normalized = String::with_capacity(raw.len());
        for component in raw.split('/').filter(|c| !c.is_empty() && *c != ".") {
            if let Some(why) = component_problem(component) {
                return Err(invalid(why));
            }
            if !normalized.is_empty() {
                normalized.push('/');
            }
            normalized.push_str(component);
        }
        Ok(Self(normalized))
    }

    /// Whether this is the service directory itself.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The normalized path; empty for the service directory itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, outermost first; none for the service directory.
    pub fn components(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// How many components the path has (0 for the service directory).
    pub fn depth(&self) -> usize {
        self.components().count()
    }

    /// The last component; `None` for the service directory.
    pub fn file_name(&self) -> Option<&str> {
        self.split_last().map(|(_, name)| name)
    }

    /// The path of the containing directory; `None` for the service directory.
    pub fn parent(&self) -> Option<RemotePath> {
        self.split_last().map(|(parent, _)| parent)
    }

    /// The containing directory and the last component; `None` for the
    /// service directory.
    pub fn split_last(&self) -> Option<(RemotePath, &str)> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rsplit_once('/') {
            Some((parent, name)) => (RemotePath(parent.to_owned()), name),
            None => (RemotePath::root(), self.0.as_str()),
        })
    }

    /// This path with one more component, checked like a parsed component:
    /// `name` must be a plain name (no `/`, not `.` or `..`).
    pub fn join(&self, name: &str) -> Result<RemotePath, FilesError> {
        let joined = if self.is_root() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.0)
        };
        let invalid = |reason: String| FilesError::InvalidPath {
            path: quote(&joined),
            reason,
        };
        if name.is_empty() || name == "." || name.contains('/') {
            return Err(invalid(format!("{name:?} is not a single file name")));
        }
        if let Some(why) = component_problem(name) {
            return Err(invalid(why));
        }
        if joined.len() > MAX_PATH_LEN {
            return Err(invalid(format!(
                "is {} bytes long, the limit is {MAX_PATH_LEN}",
                joined.len()
            )));
        }
        Ok(RemotePath(joined))
    }

    /// This path relative to `base`, if it is `base` or lies beneath it.
    pub fn strip_prefix(&self, base: &RemotePath) -> Option<RemotePath> {
        if base.is_root() {
            return Some(self.clone());
        }
        if self == base {
            return Some(RemotePath::root());
        }
        self.0
            .strip_prefix(base.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .map(|rest| RemotePath(rest.to_owned()))
    }

    /// The path as handed to a system call relative to the service
    /// directory: `.` for the directory itself.
    pub(crate) fn syscall_path(&self) -> &str {
        if self.is_root() { "." } else { &self.0 }
    }
}

/// Why `component` (one name between slashes, already known not to be empty
/// or `.`) is refused, if it is.
///
/// Control characters (Unicode category Cc: U+0000 to U+001F, U+007F and
/// U+0080 to U+009F) are refused although Linux allows them in names: paths
/// end up in audit log lines and in the operator's terminal, where a newline
/// forges a log line and an escape sequence rewrites the screen. Everything
/// else printable, including look-alikes such as `．．` (U+FF0E) or `%2e%2e`,
/// is an ordinary name.
pub(crate) fn component_problem(component: &str) -> Option<String> {
    if component == ".." {
        return Some(
            "contains a \"..\" component; paths must stay inside the service directory".into(),
        );
    }
    if component.contains('\0') {
        return Some("contains a NUL byte".into());
    }
    if let Some(c) = component.chars().find(|c| c.is_control()) {
        return Some(format!("contains the control character {c:?}"));
    }
    if component.len() > MAX_COMPONENT_LEN {
        return Some(format!(
            "has a component of {} bytes, the limit is {MAX_COMPONENT_LEN}",
            component.len()
        ));
    }
    None
}

/// `raw` for an error message: cut to [`QUOTED_LEN`] bytes (on a character
/// boundary) with its length noted, so a 4 KiB path does not flood the log.
/// The message quotes it with `{:?}`, which escapes control characters.
pub(crate) fn quote(raw: &str) -> String {
    if raw.len() <= QUOTED_LEN {
        return raw.to_owned();
    }
    let mut end = QUOTED_LEN;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &raw[..end], raw.len())
}

impl FromStr for RemotePath {
    type Err = FilesError;

    fn from_str(raw: &str) -> Result<Self, FilesError> {
        RemotePath::parse(raw)
    }
}

impl fmt::Display for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.syscall_path())
    }
}

impl fmt::Debug for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemotePath({:?})", self.syscall_path())
    }
}
