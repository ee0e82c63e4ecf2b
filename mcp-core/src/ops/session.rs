//! [`Session`]: the CLI's configuration with what a caller adds to it, and
//! what an argument means under it.

use std::path::{Path, PathBuf};

use super::OpsError;
use crate::client::{Client, ClientError, ConnectOptions, sync_sets};
use crate::config::{CliConfig, ConfigError, NodeEntry, cli_config_path};
use crate::servicedef::{self, ServiceDef, ServiceDefError};

/// The CLI's configuration (`mcp.toml`) with the node and token file a
/// caller chose (`--node`, `--token-file`, or the Python arguments of the
/// same names).
#[derive(Debug, Clone)]
pub struct Session {
    /// The configuration.
    pub config: CliConfig,
    /// Where it was read from.
    pub config_path: PathBuf,
    /// The node asked for, over what a definition names.
    pub node: Option<String>,
    /// The token file asked for, over `MCP_TOKEN` and the configuration.
    pub token_file: Option<PathBuf>,
}

/// The name a fleet's master goes by where the CLI names the node it
/// talks to.
pub const MASTER: &str = "master";

impl Session {
    /// Reads the configuration at `config` (else `$MCP_CONFIG`, else
    /// `$XDG_CONFIG_HOME/mcp/mcp.toml`).
    pub fn load(
        config: Option<&Path>,
        node: Option<String>,
        token_file: Option<PathBuf>,
    ) -> Result<Session, ConfigError> {
        let config_path = cli_config_path(config)?;
        let config = CliConfig::load(&config_path)?;
        Ok(Session {
            config,
            config_path,
            node,
            token_file,
        })
    }

    fn unresolved(&self, message: String) -> OpsError {
        OpsError::Unresolved {
            message,
            config: self.config_path.clone(),
        }
    }

    /// The definition a SERVICE or FILE argument names
    /// ([`CliConfig::load_definition`]).
    pub fn definition(&self, target: &str) -> Result<ServiceDef, ServiceDefError> {
        self.config.load_definition(target)
    }

    /// `err`, a node's refusal of the definition `target` names, at the
    /// `file:line:col` of the value it is about
    /// ([`servicedef::locate_refusal`]);
    /// `err` itself when it names none.
    pub fn locate_refusal(
        &self,
        target: &str,
        err: ClientError,
    ) -> Result<ServiceDefError, ClientError> {
        let ClientError::Rpc {
            code: tonic::Code::InvalidArgument,
            message,
            ..
        } = &err
        else {
            return Err(err);
        };
        let path = self.config.definition_path(target);
        let located = std::fs::read_to_string(&path)
            .ok()
            .and_then(|source| crate::servicedef::locate_refusal(&path, &source, message));
        located.ok_or(err)
    }

    /// The master (`master` in the configuration), when there is one:
    /// every command goes to it.
    pub fn master(&self) -> Option<NodeEntry> {
        self.config.master.as_ref().map(|address| NodeEntry {
            name: MASTER.to_string(),
            address: address.clone(),
        })
    }

    /// The node a command about `def` goes to: the master when there is
    /// one (it places the service); else the session's node, else the one
    /// the definition names, else the first configured node.
    pub fn node_for(&self, def: Option<&ServiceDef>) -> Result<NodeEntry, OpsError> {
        if let Some(master) = self.master() {
            return Ok(master);
        }
        let wanted = self.node.as_deref().or(def.and_then(|d| d.node.as_deref()));
        self.config
            .node(wanted)
            .cloned()
            .map_err(|e| self.unresolved(e))
    }

    /// The nodes a query goes to: the master when there is one (it asks
    /// every node, or the session's); else the session's node, else every
    /// configured node.
    pub fn query_nodes(&self) -> Result<Vec<NodeEntry>, OpsError> {
        if let Some(master) = self.master() {
            return Ok(vec![master]);
        }
        match &self.node {
            Some(_) => Ok(vec![self.node_for(None)?]),
            None if self.config.nodes.is_empty() => {
                Err(self.unresolved("no nodes configured".into()))
            }
            None => Ok(self.config.nodes.clone()),
        }
    }

    /// The node a service is on: the session's node, else the node its
    /// definition in the services directory names (when it has one), else
    /// the first configured node.
    pub fn node_for_service(&self, service: &str) -> Result<NodeEntry, OpsError> {
        let path = self.config.definition_path(service);
        let def = if self.node.is_none() && self.master().is_none() && path.exists() {
            Some(self.definition(service)?)
        } else {
            None
        };
        self.node_for(def.as_ref())
    }

    /// The service a SERVICE or FILE argument stands for and the node it is
    /// on: a file's `name` and node (as for deploy); a name as it is, on the
    /// node of its definition in the services directory when there is one.
    pub fn service_and_node(&self, target: &str) -> Result<(String, NodeEntry), OpsError> {
        if CliConfig::is_file_argument(target) {
            let def = self.definition(target)?;
            let node = self.node_for(Some(&def))?;
            Ok((def.name, node))
        } else {
            Ok((target.to_string(), self.node_for_service(target)?))
        }
    }

    /// How to reach the nodes: the token (the session's token file, else
    /// `MCP_TOKEN`, else the configuration's) and TLS.
    pub fn connect_options(&self) -> Result<ConnectOptions, ConfigError> {
        let token = self.config.resolve_token(self.token_file.as_deref())?;
        Ok(ConnectOptions {
            tls: self.config.client_tls(&self.config_path)?,
            token_source: token.as_ref().map(|(_, s)| s.clone()).unwrap_or_default(),
            token: token.map(|(t, _)| t),
        })
    }

    /// A client of `node`'s agent, or of the master (its queries narrowed
    /// to the session's node, if any).
    pub async fn connect(&self, node: &NodeEntry) -> Result<Client, OpsError> {
        let options = self.connect_options()?;
        let client = Client::connect(&node.name, &node.address, &options).await?;
        Ok(if self.master().is_some_and(|m| m == *node) {
            client.scoped(self.node.as_deref())
        } else {
            client
        })
    }

    /// A client of the fleet's master (`master` in the CLI config), with
    /// the session's token and TLS.
    pub async fn connect_master(&self) -> Result<Client, OpsError> {
        let Some(address) = &self.config.master else {
            return Err(self.unresolved(
                "no master configured: set master = \"host:port\" in the CLI config".into(),
            ));
        };
        let options = self.connect_options()?;
        Ok(Client::connect("master", address, &options).await?)
    }

    /// The definitions `sync` sends, per node: every file of the services
    /// directory, each to its `node` (or the first node), every configured
    /// node with its set (or only the session's node); with a master, the
    /// whole set to it.
    pub fn sync_sets(&self) -> Result<Vec<(NodeEntry, Vec<ServiceDef>)>, OpsError> {
        let defs: Vec<ServiceDef> = servicedef::load_dir(&self.config.services_dir)?
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        if let Some(master) = self.master() {
            return Ok(vec![(master, defs)]);
        }
        sync_sets(&self.config, defs, self.node.as_deref()).map_err(|e| self.unresolved(e))
    }
}
