//! `mcp-agent --dev`: everything a new user needs to try MCP at once, made
//! on first start and reused afterwards.
//!
//! - a development CA and a server certificate for the agent (in the data
//!   directory's `tls/`), with the CA's certificate copied next to the CLI
//!   configuration (`dev-ca.pem`);
//! - an admin token: its hash in the agent's token file, the token itself
//!   in the CLI's `dev-token` (mode 0600);
//! - a CLI configuration pointing at the agent with that token and CA, when
//!   there is none (an existing one only gains a missing token or CA entry).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::AgentConfig;
use mcp_core::auth::Role;
use mcp_core::auth::local::{TokenStore, generate_token, write_token_file};
use mcp_core::config::{CliConfig, CliTls, ConfigError, NodeEntry};
use mcp_core::tls::{self, TlsError};

/// The name of the token `--dev` creates.
pub const DEV_TOKEN_NAME: &str = "dev";

/// Why the development set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// Certificates could not be made.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The token file or a CLI file could not be read or written.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// What [`prepare`] set up, for [`write_cli_config`] after the agent binds.
#[derive(Debug, Clone)]
pub struct DevSetup {
    /// The CLI configuration file.
    pub cli_config: PathBuf,
    /// The CLI's copy of the CA certificate; `None` when TLS is off.
    pub ca_cert: Option<PathBuf>,
    /// The CLI's token file.
    pub token_file: PathBuf,
    /// Whether a new token was made (the old one, if any, no longer works).
    pub new_token: bool,
}

/// Makes (or reuses) the development certificates and admin token and
/// points `config` at them. `cli_config` is where the CLI's configuration
/// lives; the CA copy and token go beside it.
pub fn prepare(
    config: &mut AgentConfig,
    data_dir: &Path,
    cli_config: &Path,
) -> Result<DevSetup, DevError> {
    let cli_dir = cli_config
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DevError::Io { path, source }
    };
    std::fs::create_dir_all(&cli_dir).map_err(io(&cli_dir))?;

    let mut ca_cert = None;
    if !config.tls.insecure && config.tls.cert.is_none() {
        let mut names = vec![crate::config::hostname()];
        if let Some(addr) = config.listen.address {
            names.push(addr.ip().to_string());
        }
        let pki = tls::ensure_dev_pki(&data_dir.join("tls"), &names)?;
        config.tls.cert = Some(pki.server_cert.clone());
        config.tls.key = Some(pki.server_key.clone());
        let ca = std::fs::read(&pki.ca_cert).map_err(io(&pki.ca_cert))?;
        let copy = cli_dir.join("dev-ca.pem");
        if std::fs::read(&copy).ok().as_deref() != Some(&ca[..]) {
            mcp_core::fsutil::write_private(&copy, &ca).map_err(io(&copy))?;
        }
        ca_cert = Some(copy);
    }

    let token_file = cli_dir.join("dev-token");
    let store = TokenStore::new(&config.auth.token_file);
    let existing = std::fs::read_to_string(&token_file)
        .ok()
        .map(|t| t.trim().to_string());
    let reusable = match &existing {
        Some(t) => !t.is_empty() && store.contains(t)?,
        None => false,
    };
    if !reusable {
        let token = generate_token();
        store.add_existing(DEV_TOKEN_NAME, Role::Admin, &token)?;
        write_token_file(&token_file, &token).map_err(io(&token_file))?;
    }
    Ok(DevSetup {
        cli_config: cli_config.to_path_buf(),
        ca_cert,
        token_file,
        new_token: !reusable,
    })
}

/// What [`write_cli_config`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CliConfigChange {
    /// Wrote a new configuration.
    Created,
    /// Added the token file and/or CA to an existing one.
    Completed,
    /// Left an existing, complete configuration alone.
    Unchanged,
}

/// Writes a CLI configuration for the agent at `addr` unless one exists; an
/// existing one that names no token or no CA gains the development ones,
/// every other byte kept.
pub fn write_cli_config(
    setup: &DevSetup,
    node_name: &str,
    addr: SocketAddr,
) -> Result<CliConfigChange, DevError> {
    let path = &setup.cli_config;
    let services_dir = path
        .parent()
        .map(|p| p.join("services"))
        .unwrap_or_else(|| PathBuf::from("services"));
    let config = CliConfig {
        services_dir,
        token: None,
        token_file: Some(setup.token_file.clone()),
        tls: Some(match &setup.ca_cert {
            Some(ca) => CliTls {
                ca_cert: Some(ca.clone()),
                ..CliTls::default()
            },
            None => CliTls {
                insecure: true,
                ..CliTls::default()
            },
        }),
        nodes: vec![NodeEntry {
            name: node_name.to_string(),
            address: addr.to_string(),
        }],
        master: None,
    };
    if config.write_if_absent(path)? {
        return Ok(CliConfigChange::Created);
    }
    complete_existing(path, setup)
}

fn complete_existing(path: &Path, setup: &DevSetup) -> Result<CliConfigChange, DevError> {
    let io = |source| DevError::Io {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let Ok(mut doc) = text.parse::<toml_edit::DocumentMut>() else {
        // A broken file is the user's to fix; `mcp` reports where.
        return Ok(CliConfigChange::Unchanged);
    };
    let mut changed = false;
    if !doc.contains_key("token") && !doc.contains_key("token_file") {
        doc.insert(
            "token_file",
            toml_edit::value(setup.token_file.display().to_string()),
        );
        changed = true;
    }
    let has_tls = doc
        .get("tls")
        .and_then(|t| t.as_table_like())
        .is_some_and(|t| t.contains_key("ca_cert") || t.contains_key("insecure"));
    if !has_tls {
        let tls = doc
            .entry("tls")
            .or_insert(toml_edit::table())
            .as_table_like_mut();
        if let Some(tls) = tls {
            match &setup.ca_cert {
                Some(ca) => tls.insert("ca_cert", toml_edit::value(ca.display().to_string())),
                None => tls.insert("insecure", toml_edit::value(true)),
            };
            changed = true;
        }
    }
    if !changed {
        return Ok(CliConfigChange::Unchanged);
    }
    mcp_core::fsutil::write_private(path, doc.to_string().as_bytes()).map_err(io)?;
    Ok(CliConfigChange::Completed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_setup_is_reused_and_completes_old_configs() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let cli = dir.path().join("cli/mcp.toml");
        let mut config = AgentConfig::dev_defaults(&data);
        let first = prepare(&mut config, &data, &cli).unwrap();
        assert!(first.new_token);
        assert!(config.tls.cert.is_some() && config.tls.key.is_some());
        let token = std::fs::read_to_string(&first.token_file).unwrap();
        let stored = std::fs::read_to_string(&config.auth.token_file).unwrap();
        assert!(!stored.contains(token.trim()));

        let mut again = AgentConfig::dev_defaults(&data);
        let second = prepare(&mut again, &data, &cli).unwrap();
        assert!(!second.new_token);
        assert_eq!(std::fs::read_to_string(&second.token_file).unwrap(), token);

        let addr: SocketAddr = "127.0.0.1:9444".parse().unwrap();
        assert_eq!(
            write_cli_config(&second, "local", addr).unwrap(),
            CliConfigChange::Created
        );
        let loaded = CliConfig::load(&cli).unwrap();
        assert_eq!(
            loaded.token_file.as_deref(),
            Some(second.token_file.as_path())
        );
        assert_eq!(
            loaded.tls.unwrap().ca_cert.as_deref(),
            second.ca_cert.as_deref()
        );
        assert_eq!(
            write_cli_config(&second, "local", addr).unwrap(),
            CliConfigChange::Unchanged
        );

        // A configuration from before TLS and tokens gains both, comments kept.
        std::fs::write(
            &cli,
            "# mine\n[[nodes]]\nname = \"local\"\naddress = \"127.0.0.1:9444\"\n",
        )
        .unwrap();
        assert_eq!(
            write_cli_config(&second, "local", addr).unwrap(),
            CliConfigChange::Completed
        );
        let text = std::fs::read_to_string(&cli).unwrap();
        assert!(text.contains("# mine\n[[nodes]]"), "{text}");
        let loaded = CliConfig::load(&cli).unwrap();
        assert!(loaded.token_file.is_some());
        assert!(loaded.tls.unwrap().ca_cert.is_some());
    }
}
