//! The files a VM boots from (disk image, kernel, initrd), handed to QEMU
//! already open.
//!
//! QEMU is never given a path it would resolve itself: at every launch the
//! backend asks its [`BootFiles`] to open each file, passes the descriptors
//! to the QEMU process as fds 3, 4 and 5, and names them
//! `/proc/self/fd/<n>`. Opening that name reopens the very file the
//! descriptor refers to, whatever has since been renamed, replaced or
//! swapped for a symlink at the original path. Where a file may come from is
//! the caller's policy (the agent confines them to the service's directory
//! or the configured image directories); [`OpenAsNamed`] is the backend's
//! own, which trusts the path.

use std::fmt;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt as _;

use command_fds::FdMapping;

use crate::{InstanceSpec, RuntimeError, RuntimeResult};

/// Which of a VM's boot files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootFile {
    /// The disk image (`image`).
    Image,
    /// The kernel of a direct kernel boot.
    Kernel,
    /// Its initial ramdisk.
    Initrd,
}

impl BootFile {
    /// The word definitions use for it.
    pub fn as_str(self) -> &'static str {
        match self {
            BootFile::Image => "image",
            BootFile::Kernel => "kernel",
            BootFile::Initrd => "initrd",
        }
    }

    /// The descriptor the QEMU process finds it at.
    fn child_fd(self) -> i32 {
        match self {
            BootFile::Image => 3,
            BootFile::Kernel => 4,
            BootFile::Initrd => 5,
        }
    }
}

impl fmt::Display for BootFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Opens the files a VM boots from. Called at every launch (first start,
/// restart, recovery), so the check and the open are one step.
pub trait BootFiles: Send + Sync + fmt::Debug {
    /// Opens `path`, which `spec` names as its `file`, returning a
    /// descriptor of a regular file (an `O_PATH` one is enough: QEMU reopens
    /// it for the access it needs). Refuses, with the reason, a file the
    /// policy does not allow.
    fn open(&self, spec: &InstanceSpec, file: BootFile, path: &str) -> RuntimeResult<OwnedFd>;
}

/// The backend's own policy: the path as it is named, symlinks followed,
/// which must end at a regular file. For a caller that checked the paths
/// itself and owns the directories they are in.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAsNamed;

impl BootFiles for OpenAsNamed {
    fn open(&self, _spec: &InstanceSpec, file: BootFile, path: &str) -> RuntimeResult<OwnedFd> {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_PATH)
            .open(path)
            .map_err(|e| RuntimeError::Invalid(format!("{file} {path}: cannot be opened: {e}")))?;
        let kind = opened
            .metadata()
            .map_err(|e| RuntimeError::Invalid(format!("{file} {path}: {e}")))?
            .file_type();
        if !kind.is_file() {
            return Err(RuntimeError::Invalid(format!(
                "{file} {path} is not a regular file"
            )));
        }
        Ok(opened.into())
    }
}

/// The boot files of one launch, open: the descriptors QEMU inherits and the
/// `/proc/self/fd` names its arguments use.
#[derive(Debug, Default)]
pub(crate) struct OpenBootFiles {
    /// The descriptors and where the child finds them.
    pub mappings: Vec<FdMapping>,
    /// `spec` with each boot file's path replaced by its descriptor's name.
    pub spec: InstanceSpec,
}

impl OpenBootFiles {
    /// Opens every boot file `spec` names through `files`.
    pub fn open(files: &dyn BootFiles, spec: &InstanceSpec) -> RuntimeResult<OpenBootFiles> {
        let mut out = OpenBootFiles {
            mappings: Vec::new(),
            spec: spec.clone(),
        };
        if !spec.image.is_empty() {
            out.spec.image = out.add(files, spec, BootFile::Image, &spec.image)?;
        }
        if let Some(boot) = &spec.kernel {
            let kernel = out.add(files, spec, BootFile::Kernel, &boot.kernel)?;
            let initrd = match &boot.initrd {
                Some(initrd) => Some(out.add(files, spec, BootFile::Initrd, initrd)?),
                None => None,
            };
            if let Some(k) = out.spec.kernel.as_mut() {
                k.kernel = kernel;
                k.initrd = initrd;
            }
        }
        Ok(out)
    }

    /// Opens one file and returns the name QEMU is given for it.
    fn add(
        &mut self,
        files: &dyn BootFiles,
        spec: &InstanceSpec,
        file: BootFile,
        path: &str,
    ) -> RuntimeResult<String> {
        let fd = files.open(spec, file, path)?;
        self.mappings.push(FdMapping {
            parent_fd: fd,
            child_fd: file.child_fd(),
        });
        Ok(format!("/proc/self/fd/{}", file.child_fd()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KernelBoot;

    #[test]
    fn every_boot_file_is_named_by_its_descriptor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, n).expect("write");
            p.display().to_string()
        };
        let spec = InstanceSpec {
            name: "vm".into(),
            image: path("disk"),
            kernel: Some(KernelBoot {
                kernel: path("k"),
                initrd: Some(path("i")),
                append: None,
            }),
            ..InstanceSpec::default()
        };
        let open = OpenBootFiles::open(&OpenAsNamed, &spec).expect("open");
        assert_eq!(open.spec.image, "/proc/self/fd/3");
        let boot = open.spec.kernel.as_ref().expect("kernel");
        assert_eq!(boot.kernel, "/proc/self/fd/4");
        assert_eq!(boot.initrd.as_deref(), Some("/proc/self/fd/5"));
        assert_eq!(open.mappings.len(), 3);
    }

    #[test]
    fn a_directory_is_not_a_boot_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = InstanceSpec {
            name: "vm".into(),
            image: dir.path().display().to_string(),
            ..InstanceSpec::default()
        };
        let err = OpenBootFiles::open(&OpenAsNamed, &spec).expect_err("a directory");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
