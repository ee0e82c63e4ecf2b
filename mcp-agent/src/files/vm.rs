//! Where the files a VM boots from may come from ([`VmFiles`]).

use crate::error::AgentError;

/// Where the files a unikernel component names (its disk image, kernel,
/// initrd) may be: a relative path is a regular file in the service's own
/// directory `<srv_root>/<service>/` (resolved beneath it, never through a
/// symlink); an absolute path must lie in one of `images_dirs`
/// (`[unikernel] images_dirs`), and is refused otherwise.
#[derive(Debug, Clone, Default)]
pub struct VmFiles {
    /// Root of the service directories.
    pub srv_root: std::path::PathBuf,
    /// Directories absolute paths may point into.
    pub images_dirs: Vec<std::path::PathBuf>,
}

impl VmFiles {
    /// The host path of `path`, which the definition of `service`'s
    /// `component` gives as its `what` (`image`, `kernel`, `initrd`).
    pub fn resolve(
        &self,
        service: &str,
        component: &str,
        what: &str,
        path: &str,
    ) -> Result<String, AgentError> {
        let bad = |why: String| {
            AgentError::InvalidArgument(format!("{service}/{component}: {what} {path:?}: {why}"))
        };
        let p = std::path::Path::new(path);
        if p.is_absolute() {
            let real = p
                .canonicalize()
                .map_err(|e| bad(format!("cannot be read: {e}")))?;
            let allowed = self
                .images_dirs
                .iter()
                .any(|d| d.canonicalize().is_ok_and(|d| real.starts_with(&d)));
            if !allowed {
                return Err(bad(if self.images_dirs.is_empty() {
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
                }));
            }
            if !real.is_file() {
                return Err(bad("is not a regular file".into()));
            }
            return Ok(path.to_string());
        }
        let rel = crate::files::RemotePath::parse(path).map_err(|e| bad(e.to_string()))?;
        let tree = crate::files::ServiceTree::open(&self.srv_root, service)
            .map_err(|e| bad(e.to_string()))?;
        let meta = tree.stat(&rel).map_err(|e| bad(e.to_string()))?;
        if meta.kind != crate::files::FileKind::File {
            return Err(bad(format!(
                "is a {} in the service's directory, not a regular file",
                meta.kind
            )));
        }
        Ok(self.host_path(service, path))
    }

    /// The host path the runtime is given for `path` as a definition of
    /// `service` names it (no checks: see [`VmFiles::resolve`]).
    pub fn host_path(&self, service: &str, path: &str) -> String {
        // Empty: a VM booting a kernel without a disk.
        if path.is_empty() || std::path::Path::new(path).is_absolute() {
            return path.to_string();
        }
        match crate::files::RemotePath::parse(path) {
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
        mut spec: mcp_runtime::InstanceSpec,
    ) -> Result<mcp_runtime::InstanceSpec, AgentError> {
        if spec.runtime != mcp_runtime::RuntimeKind::Unikernel {
            return Ok(spec);
        }
        if !spec.image.is_empty() {
            spec.image = self.resolve(service, component, "image", &spec.image)?;
        }
        if let Some(k) = spec.kernel.as_mut() {
            k.kernel = self.resolve(service, component, "kernel", &k.kernel)?;
            if let Some(initrd) = k.initrd.as_mut() {
                *initrd = self.resolve(service, component, "initrd", initrd)?;
            }
        }
        Ok(spec)
    }
}
