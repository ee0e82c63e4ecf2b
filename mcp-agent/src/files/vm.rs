//! Where the files a VM boots from may come from ([`VmFiles`]), and opening
//! them for QEMU (its [`BootFiles`] policy).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use mcp_runtime::qemu::boot::{BootFile, BootFiles};
use mcp_runtime::{InstanceSpec, RuntimeError, RuntimeResult};
use rustix::fs::{self as rfs, Mode, OFlags};

use super::resolve::{Follow, Resolver, open_beneath};
use super::{RemotePath, ServiceTree};
use crate::error::AgentError;

/// Where the files a unikernel component names (its disk image, kernel,
/// initrd) may be: a relative path is a regular file in the service's own
/// directory `<srv_root>/<service>/`; an absolute path must lie in one of
/// `images_dirs` (`[unikernel] images_dirs`), and is refused otherwise. In
/// both, no symlink is followed below the directory, and the file is opened
/// by the agent and handed to QEMU open ([`BootFiles`]) at every launch, so
/// a container of the service cannot swap the file between check and use.
#[derive(Debug, Clone, Default)]
pub struct VmFiles {
    /// Root of the service directories.
    pub srv_root: PathBuf,
    /// Directories absolute paths may point into.
    pub images_dirs: Vec<PathBuf>,
}

impl VmFiles {
    /// The host path of `path`, which the definition of `service`'s
    /// `component` gives as its `file`, once it opened as a VM may boot
    /// from it (see [`VmFiles::open_host`]).
    pub fn resolve(
        &self,
        service: &str,
        component: &str,
        file: BootFile,
        path: &str,
    ) -> Result<String, AgentError> {
        let bad = |why: String| {
            AgentError::InvalidArgument(format!("{service}/{component}: {file} {path:?}: {why}"))
        };
        if !Path::new(path).is_absolute() {
            RemotePath::parse(path).map_err(|e| bad(e.to_string()))?;
        }
        let host = self.host_path(service, path);
        self.open_host(service, &host).map_err(bad)?;
        Ok(host)
    }

    /// Opens the file at `host` (a host path as [`VmFiles::host_path`]
    /// gives it) for a VM of `service`, as an `O_PATH` descriptor, or says
    /// why it may not boot from it.
    pub fn open_host(&self, service: &str, host: &str) -> Result<OwnedFd, String> {
        let path = Path::new(host);
        let tree_dir = self.srv_root.join(service);
        if let Ok(rel) = path.strip_prefix(&tree_dir) {
            let rel = rel
                .to_str()
                .ok_or_else(|| "is not UTF-8".to_string())
                .and_then(|r| RemotePath::parse(r).map_err(|e| e.to_string()))?;
            let tree = ServiceTree::open(&self.srv_root, service).map_err(|e| e.to_string())?;
            return tree.open_boot_file(&rel).map_err(|e| e.to_string());
        }
        if !path.is_absolute() {
            return Err("is neither in the service's directory nor an absolute path".into());
        }
        for dir in &self.images_dirs {
            let Some(rel) = beneath(path, dir) else {
                continue;
            };
            return open_in_images_dir(dir, &rel);
        }
        Err(if self.images_dirs.is_empty() {
            "an absolute path must be in one of [unikernel] images_dirs, and none is configured; or push the file to the service's directory and name it relatively".into()
        } else {
            format!(
                "not in one of [unikernel] images_dirs ({})",
                self.images_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    /// The host path the runtime is given for `path` as a definition of
    /// `service` names it (no checks: see [`VmFiles::resolve`]).
    pub fn host_path(&self, service: &str, path: &str) -> String {
        // Empty: a VM booting a kernel without a disk.
        if path.is_empty() || Path::new(path).is_absolute() {
            return path.to_string();
        }
        match RemotePath::parse(path) {
            Ok(rel) => self
                .srv_root
                .join(service)
                .join(rel.as_str())
                .display()
                .to_string(),
            Err(_) => path.to_string(),
        }
    }

    /// `spec` with the files of a VM resolved (a container's is returned as
    /// it is).
    pub fn resolve_spec(
        &self,
        service: &str,
        component: &str,
        mut spec: InstanceSpec,
    ) -> Result<InstanceSpec, AgentError> {
        if spec.runtime != mcp_runtime::RuntimeKind::Unikernel {
            return Ok(spec);
        }
        if !spec.image.is_empty() {
            spec.image = self.resolve(service, component, BootFile::Image, &spec.image)?;
        }
        if let Some(k) = spec.kernel.as_mut() {
            k.kernel = self.resolve(service, component, BootFile::Kernel, &k.kernel)?;
            if let Some(initrd) = k.initrd.as_mut() {
                *initrd = self.resolve(service, component, BootFile::Initrd, initrd)?;
            }
        }
        Ok(spec)
    }
}

/// QEMU opens nothing by name: every launch (deploy, restart, recovery)
/// opens the files here, under the rules of [`VmFiles`], for the service the
/// VM's labels name.
impl BootFiles for VmFiles {
    fn open(&self, spec: &InstanceSpec, file: BootFile, path: &str) -> RuntimeResult<OwnedFd> {
        let Some(service) = spec.labels.get(mcp_runtime::labels::SERVICE) else {
            return Err(RuntimeError::Invalid(format!(
                "VM {}: no service label, so no directory its {file} may come from",
                spec.name
            )));
        };
        self.open_host(service, path).map_err(|why| {
            RuntimeError::Invalid(format!("VM {}: {file} {path:?}: {why}", spec.name))
        })
    }
}

/// `path` relative to the images directory `dir`, as configured or as it
/// resolves (an operator's `/srv` may be a symlink); `None` when outside.
fn beneath(path: &Path, dir: &Path) -> Option<RemotePath> {
    let rel = match path.strip_prefix(dir) {
        Ok(rel) => rel.to_path_buf(),
        Err(_) => path
            .strip_prefix(dir.canonicalize().ok()?)
            .ok()?
            .to_path_buf(),
    };
    RemotePath::parse(rel.to_str()?)
        .ok()
        .filter(|r| !r.is_root())
}

/// Opens `rel` beneath the images directory `dir` (which the operator
/// configured and may itself be reached through a symlink) with no symlink
/// followed below it, as an `O_PATH` descriptor of a regular file.
fn open_in_images_dir(dir: &Path, rel: &RemotePath) -> Result<OwnedFd, String> {
    let root = rfs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("images directory {}: {e}", dir.display()))?;
    let fd = open_beneath(
        rustix::fd::AsFd::as_fd(&root),
        rel,
        OFlags::PATH,
        Follow::Never,
        Resolver::Auto,
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => {
            "goes through a symlink below the images directory; a VM boots only from files reached through real directories".to_string()
        }
        rustix::io::Errno::NOENT => "does not exist".to_string(),
        e => format!("cannot be opened: {e}"),
    })?;
    let st = rfs::fstat(&fd).map_err(|e| format!("cannot be read: {e}"))?;
    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
        return Err("is not a regular file".into());
    }
    Ok(fd)
}
