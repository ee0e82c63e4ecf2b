//! The CLI's configuration file (`mcp.toml`): the nodes it talks to, the
//! token, TLS, and the directory of service definitions. The Python
//! bindings read the same file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ConfigError, parse_toml, read};

/// One node the CLI can talk to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// The node's name.
    pub name: String,
    /// `host:port` of its agent.
    pub address: String,
}

/// TLS settings of the CLI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliTls {
    /// CA certificate that signs the agents' certificates.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate, when agents require one.
    pub cert: Option<PathBuf>,
    /// Key of the client certificate.
    pub key: Option<PathBuf>,
    /// Talk plaintext gRPC to agents that run with `insecure = true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// The CLI's configuration (`mcp.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    /// Directory of service definitions (`<name>.toml`).
    #[serde(default = "default_services_dir")]
    pub services_dir: PathBuf,
    /// Bearer token sent to agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// TLS settings; absent for plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<CliTls>,
    /// The nodes, in order; the first is the default.
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
    /// `host:port` of the fleet's master, with the same token and TLS:
    /// `mcp node` commands go to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
}

fn default_services_dir() -> PathBuf {
    dirs::config_dir()
        .map(|d| d.join("mcp/services"))
        .unwrap_or_else(|| PathBuf::from("services"))
}

impl CliConfig {
    /// `$XDG_CONFIG_HOME/mcp/mcp.toml`.
    pub fn default_path() -> Result<PathBuf, ConfigError> {
        dirs::config_dir()
            .map(|d| d.join("mcp/mcp.toml"))
            .ok_or(ConfigError::NoHome("config"))
    }

    /// Loads the file at `path`; relative `services_dir`, `token_file` and
    /// TLS paths are taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<CliConfig, ConfigError> {
        let text = read(path)?;
        let mut config: CliConfig = parse_toml(path, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rebase(&mut config.services_dir);
        if let Some(p) = config.token_file.as_mut() {
            rebase(p);
        }
        if let Some(tls) = config.tls.as_mut() {
            for p in [&mut tls.ca_cert, &mut tls.cert, &mut tls.key]
                .into_iter()
                .flatten()
            {
                rebase(p);
            }
        }
        let mut seen = std::collections::HashSet::new();
        for node in &config.nodes {
            if !seen.insert(node.name.as_str()) {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("node {:?} is listed twice", node.name),
                });
            }
        }
        Ok(config)
    }

    /// The node called `name`, or the first configured node when `None`.
    pub fn node(&self, name: Option<&str>) -> Result<&NodeEntry, String> {
        match name {
            Some(n) => self.nodes.iter().find(|e| e.name == n).ok_or_else(|| {
                let known: Vec<_> = self.nodes.iter().map(|e| e.name.as_str()).collect();
                format!("unknown node {n:?} (configured: {})", known.join(", "))
            }),
            None => self.nodes.first().ok_or_else(|| {
                "no nodes configured: add a [[nodes]] entry to the CLI config".to_string()
            }),
        }
    }

    /// The bearer token and where it came from: the `--token-file` flag,
    /// else `MCP_TOKEN`, else `token`, else the contents of `token_file`.
    /// A token that could never be valid (control characters, spaces) is an
    /// error naming its source, rather than a confusing refusal later.
    pub fn resolve_token(
        &self,
        token_file_flag: Option<&Path>,
    ) -> Result<Option<(String, String)>, ConfigError> {
        let from_file = |p: &Path, what: String| -> Result<(String, String), ConfigError> {
            Ok((read(p)?.trim().to_string(), what))
        };
        let found = if let Some(p) = token_file_flag {
            Some(from_file(p, format!("--token-file {}", p.display()))?)
        } else if let Some(t) = std::env::var("MCP_TOKEN").ok().filter(|t| !t.is_empty()) {
            Some((t, "MCP_TOKEN".to_string()))
        } else if let Some(t) = &self.token {
            Some((t.clone(), "`token` in the CLI config".to_string()))
        } else if let Some(p) = &self.token_file {
            Some(from_file(p, format!("token file {}", p.display()))?)
        } else {
            None
        };
        if let Some((token, source)) = &found
            && let Err(e) = crate::auth::check_token_syntax(token.as_bytes())
        {
            return Err(ConfigError::Invalid {
                path: PathBuf::from(source),
                message: format!("unusable token: {e}"),
            });
        }
        Ok(found)
    }

    /// TLS settings for connecting to agents: `None` for plaintext (only
    /// with `[tls] insecure = true`), else the CA (required) and optional
    /// client certificate. `path` is the config file, for messages.
    pub fn client_tls(
        &self,
        path: &Path,
    ) -> Result<Option<crate::tls::ClientTlsFiles>, ConfigError> {
        let tls = self.tls.clone().unwrap_or_default();
        if tls.insecure {
            return Ok(None);
        }
        let Some(ca_cert) = tls.ca_cert else {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: "no CA to verify agents with: set `ca_cert` in [tls] (or `insecure = true` there for agents serving plaintext)".into(),
            });
        };
        Ok(Some(crate::tls::ClientTlsFiles {
            ca_cert,
            cert: tls.cert,
            key: tls.key,
        }))
    }

    /// Writes the configuration to `path` unless a file exists there already;
    /// returns whether it wrote. The file is created with mode 0600.
    pub fn write_if_absent(&self, path: &Path) -> Result<bool, ConfigError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        crate::fsutil::create_parent_dir(path).map_err(io)?;
        let text = toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io(e)),
        };
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(true)
    }
}

/// Where the CLI reads its configuration: `--config`, else `MCP_CONFIG`,
/// else [`CliConfig::default_path`].
pub fn cli_config_path(flag: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    match std::env::var_os("MCP_CONFIG") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => CliConfig::default_path(),
    }
}

impl CliConfig {
    /// Whether a SERVICE|FILE argument is a FILE: it has a `/` or ends in
    /// `.toml`; anything else is a service name.
    pub fn is_file_argument(target: &str) -> bool {
        target.contains('/') || target.ends_with(".toml")
    }

    /// The definition file a CLI argument names: anything containing `/` or
    /// ending in `.toml` is a path, anything else a service name looked up
    /// as `<services_dir>/<name>.toml`.
    pub fn definition_path(&self, target: &str) -> PathBuf {
        if CliConfig::is_file_argument(target) {
            PathBuf::from(target)
        } else {
            self.services_dir.join(format!("{target}.toml"))
        }
    }

    /// Loads the definition a CLI argument names ([`definition_path`]). A
    /// file of the services directory (a name always is) must define the
    /// service of its file name ([`servicedef::load_named`]).
    ///
    /// [`definition_path`]: CliConfig::definition_path
    /// [`servicedef::load_named`]: crate::servicedef::load_named
    pub fn load_definition(
        &self,
        target: &str,
    ) -> Result<crate::servicedef::ServiceDef, crate::servicedef::ServiceDefError> {
        let path = self.definition_path(target);
        let in_services_dir = path.parent().is_some_and(|dir| {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            match (dir.canonicalize(), self.services_dir.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => dir == self.services_dir,
            }
        });
        if in_services_dir {
            crate::servicedef::load_named(&path)
        } else {
            crate::servicedef::load(&path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_config_round_trip_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcp.toml");
        let config = CliConfig {
            services_dir: PathBuf::from("services"),
            token: None,
            token_file: Some(PathBuf::from("token")),
            tls: None,
            nodes: vec![NodeEntry {
                name: "local".into(),
                address: "127.0.0.1:9444".into(),
            }],
            master: None,
        };
        assert!(config.write_if_absent(&path).unwrap());
        assert!(!config.write_if_absent(&path).unwrap());
        let loaded = CliConfig::load(&path).unwrap();
        assert_eq!(loaded.services_dir, dir.path().join("services"));
        assert_eq!(loaded.token_file, Some(dir.path().join("token")));
        assert_eq!(loaded.node(None).unwrap().name, "local");
        assert!(
            loaded
                .node(Some("rift"))
                .unwrap_err()
                .contains("unknown node \"rift\"")
        );
    }

    #[test]
    fn names_and_paths() {
        let c = CliConfig {
            services_dir: PathBuf::from("/etc/mcp/services"),
            token: None,
            token_file: None,
            tls: None,
            nodes: vec![],
            master: None,
        };
        assert_eq!(
            c.definition_path("web"),
            PathBuf::from("/etc/mcp/services/web.toml")
        );
        assert_eq!(c.definition_path("./web"), PathBuf::from("./web"));
        assert_eq!(c.definition_path("web.toml"), PathBuf::from("web.toml"));
    }
}
