//! What definitions may ask of the host: where volumes may lie
//! (`[security]`, [`VolumeRoots`]) and on which address ports are
//! published ([`PublishAddress`]).

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use mcp_core::servicedef::{ComponentDef, ServiceDef};
use mcp_runtime::PortMapping;

use crate::error::AgentError;

/// The address ports that name no host address are published on
/// (`publish_address`); none to publish them on every address.
///
/// Several nodes on one host, or a node whose public interface must stay
/// closed, publish only where intended. A port that names its host address
/// keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishAddress(pub Option<IpAddr>);

impl PublishAddress {
    /// `ports` as this node publishes them.
    pub fn ports(&self, ports: &[PortMapping]) -> Vec<PortMapping> {
        let mut ports = ports.to_vec();
        if let Some(address) = self.0 {
            for port in ports.iter_mut().filter(|p| p.host_ip.is_empty()) {
                port.host_ip = address.to_string();
            }
        }
        ports
    }
}

/// The directories the host side of a volume must lie in
/// (`[security] allowed_volume_roots`); none for no restriction.
#[derive(Debug, Clone, Default)]
pub struct VolumeRoots {
    roots: Vec<PathBuf>,
}

impl VolumeRoots {
    /// The policy of `roots` (absolute paths; empty allows every host path).
    pub fn new(roots: Vec<PathBuf>) -> VolumeRoots {
        VolumeRoots { roots }
    }

    /// The directories, as configured.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Refuses the first volume of `targets` (components of `def`) whose
    /// host side lies outside every root. The error starts with the field
    /// path (`components[1].volumes[0]: `), which a client that has the
    /// definition's file turns into its `file:line:col`. Named volumes are
    /// podman's, not host paths, and pass.
    pub fn check(&self, def: &ServiceDef, targets: &[&ComponentDef]) -> Result<(), AgentError> {
        if self.roots.is_empty() {
            return Ok(());
        }
        for c in targets {
            let index = def
                .components
                .iter()
                .position(|d| d.name == c.name)
                .unwrap_or(0);
            for (j, volume) in c.volumes.iter().enumerate() {
                if !volume.source.starts_with('/') || self.allows(Path::new(&volume.source)) {
                    continue;
                }
                return Err(AgentError::InvalidArgument(format!(
                    "components[{index}].volumes[{j}]: {}/{}: host path {} is outside [security] allowed_volume_roots ({}) of this node",
                    def.name,
                    c.name,
                    volume.source,
                    self.roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Whether `host` lies in a root: `..` resolved by name first, then,
    /// for a path that exists, where its symlinks lead (a link in a root
    /// to `/etc` is `/etc`).
    fn allows(&self, host: &Path) -> bool {
        let Some(lexical) = normalize(host) else {
            return false;
        };
        let real = host.canonicalize().ok();
        self.roots.iter().any(|root| {
            let real_root = root.canonicalize().unwrap_or_else(|_| root.clone());
            let inside = |p: &Path| p.starts_with(root) || p.starts_with(&real_root);
            inside(&lexical) && real.as_deref().is_none_or(inside)
        })
    }
}

/// `path` with `.` and `..` resolved by name; `None` if `..` climbs above `/`.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(name) => out.push(name),
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(volumes: &[&str]) -> ServiceDef {
        let vols = volumes
            .iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        mcp_core::servicedef::parse(
            &format!(
                "name = \"app\"\n[[components]]\nname = \"db\"\nimage = \"x\"\n[[components]]\nname = \"web\"\nimage = \"x\"\nvolumes = [{vols}]\n"
            ),
            Path::new("app.toml"),
        )
        .expect("definition")
    }

    fn check(roots: &VolumeRoots, volumes: &[&str]) -> Result<(), String> {
        let d = def(volumes);
        let targets: Vec<&ComponentDef> = d.components.iter().collect();
        roots.check(&d, &targets).map_err(|e| e.to_string())
    }

    #[test]
    fn ports_without_a_host_address_go_to_the_publish_address() {
        let ports: Vec<PortMapping> = ["8080:80", "127.0.0.1:9090:90", "53:53/udp"]
            .iter()
            .map(|p| mcp_core::servicedef::parse_port(p).expect("port"))
            .collect();
        let shown = |ports: Vec<PortMapping>| -> Vec<String> {
            ports
                .iter()
                .map(mcp_core::servicedef::format_port)
                .collect()
        };
        assert_eq!(
            shown(PublishAddress(Some("10.0.0.5".parse().expect("ip"))).ports(&ports)),
            [
                "10.0.0.5:8080:80",
                "127.0.0.1:9090:90",
                "10.0.0.5:53:53/udp"
            ]
        );
        assert_eq!(
            shown(PublishAddress(Some("fd00::5".parse().expect("ip"))).ports(&ports[..1])),
            ["[fd00::5]:8080:80"]
        );
        assert_eq!(shown(PublishAddress(None).ports(&ports)), shown(ports));
    }

    #[test]
    fn host_paths_outside_the_roots_are_refused_with_their_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("srv");
        std::fs::create_dir_all(root.join("app")).expect("mkdir");
        std::os::unix::fs::symlink("/etc", root.join("app/etc")).expect("symlink");
        let roots = VolumeRoots::new(vec![root.clone()]);
        let r = root.display();
        assert!(check(&roots, &[&format!("{r}/app:/data")]).is_ok());
        assert!(check(&roots, &["named-volume:/data"]).is_ok());
        assert!(check(&roots, &[&format!("{r}/app/new:/data")]).is_ok());
        let err = check(&roots, &[&format!("{r}/app:/data"), "/etc:/etc:ro"]).unwrap_err();
        assert!(err.contains("components[1].volumes[1]: app/web: host path /etc is outside [security] allowed_volume_roots"), "{err}");
        for bad in [
            format!("{r}/../etc:/x"),
            format!("{r}/app/etc:/x"),
            format!("{r}x/y:/x"),
        ] {
            assert!(check(&roots, &[&bad]).is_err(), "{bad}");
        }
        assert!(check(&VolumeRoots::default(), &["/etc:/etc"]).is_ok());
    }
}
