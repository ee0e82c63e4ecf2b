//! The master's side of talking to agents: its own credential (a token
//! every agent accepts as an admin token, TLS checked against the agents'
//! CA) and one connection per node, dialled when first needed and dialled
//! again when the node's address changes or the connection fails.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use mcp_core::auth::local::{generate_token, write_token_file};
use mcp_core::client::{Client, ClientError, ConnectOptions};
use mcp_core::tls::ClientTlsFiles;

use crate::config::AgentSettings;
use crate::error::MasterError;

/// How the master reaches agents, and the connections it holds.
pub struct Agents {
    options: Option<ConnectOptions>,
    /// Why agents cannot be dialled, when they cannot (no CA, no token).
    unusable: Option<String>,
    connections: Mutex<HashMap<String, Client>>,
}

/// Reads the master's agent token from `path`, making one (random, mode
/// 0600) when the file does not exist.
pub fn agent_token(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = generate_token();
            write_token_file(path, &token)?;
            tracing::info!(path = %path.display(), "made the master's token for agents: add it to every agent with `mcp-agent token add master --role admin --from-file {}`", path.display());
            Ok(token)
        }
        Err(e) => Err(e),
    }
}

impl Agents {
    /// The agents as `settings` says to reach them. A master that cannot
    /// (no CA and not insecure, an unreadable token) still runs: it keeps
    /// the fleet's membership and says why at every command it cannot
    /// dispatch.
    pub fn new(settings: &AgentSettings) -> Agents {
        let token = agent_token(&settings.token_file).map_err(|e| {
            format!(
                "the master's token for agents ([agents] token_file = {}) cannot be read or made: {e}",
                settings.token_file.display()
            )
        });
        let tls = match (&settings.ca_cert, settings.insecure) {
            (_, true) => Ok(None),
            (Some(ca), false) => Ok(Some(ClientTlsFiles {
                ca_cert: ca.clone(),
                cert: settings.client_cert.clone(),
                key: settings.client_key.clone(),
            })),
            (None, false) => Err(
                "the master has no CA for the agents' certificates: set [agents] ca_cert (or insecure = true for plaintext)"
                    .to_string(),
            ),
        };
        match (token, tls) {
            (Ok(token), Ok(tls)) => Agents {
                options: Some(ConnectOptions {
                    token: Some(token),
                    token_source: format!(
                        "the master's [agents] token_file ({}): add it on the node with `mcp-agent token add master --role admin --from-file FILE`",
                        settings.token_file.display()
                    ),
                    tls,
                }),
                unusable: None,
                connections: Mutex::new(HashMap::new()),
            },
            (Err(why), _) | (_, Err(why)) => {
                tracing::warn!("{why}; commands cannot be dispatched to agents");
                Agents {
                    options: None,
                    unusable: Some(why),
                    connections: Mutex::new(HashMap::new()),
                }
            }
        }
    }

    /// A client of `node`'s agent at `address`: the connection held, or a
    /// new one.
    pub async fn client(&self, node: &str, address: &str) -> Result<Client, MasterError> {
        if let Some(client) = self.held(node, address) {
            return Ok(client);
        }
        let Some(options) = &self.options else {
            return Err(MasterError::Unavailable(
                self.unusable.clone().unwrap_or_default(),
            ));
        };
        let client = Client::connect(node, address, options)
            .await
            .map_err(MasterError::Agent)?;
        self.lock().insert(node.to_string(), client.clone());
        Ok(client)
    }

    fn held(&self, node: &str, address: &str) -> Option<Client> {
        let held = self.lock();
        held.get(node).filter(|c| c.address() == address).cloned()
    }

    /// Forgets the connection to `node` after `err` if it was the
    /// connection that failed, so that the next command dials again.
    pub fn failed(&self, node: &str, err: &ClientError) {
        if matches!(err, ClientError::Connect { .. } | ClientError::Tls { .. }) {
            self.lock().remove(node);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Client>> {
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
