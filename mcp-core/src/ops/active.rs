//! `stop` and `start`: the desired state kept in the definition file.

use std::path::PathBuf;

use mcp_proto::v1 as pb;

use super::OpsError;
use crate::client::Client;
use crate::config::CliConfig;
use crate::servicedef;
use crate::wire::{DeployOptions, PullPolicy};

/// What [`set_active`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveChange {
    /// The service.
    pub service: String,
    /// What happened to each component.
    pub results: Vec<pb::ComponentResult>,
    /// The node that acted, when a master says (empty from an agent).
    pub node: String,
    /// The definition file whose `active` was set, or `None` when the
    /// service was stopped or started on its node alone.
    pub file: Option<PathBuf>,
}

/// The definition file a SERVICE or FILE argument has: a FILE as it is; a
/// SERVICE's file in the services directory, when it exists.
fn definition_file(config: Option<&CliConfig>, target: &str) -> Option<PathBuf> {
    match config {
        Some(config) => {
            let path = config.definition_path(target);
            (CliConfig::is_file_argument(target) || path.exists()).then_some(path)
        }
        None => CliConfig::is_file_argument(target).then(|| PathBuf::from(target)),
    }
}

/// `mcp stop`/`mcp start` and the Python `Client.stop`/`start`: sets the
/// service's desired state to `active`.
///
/// When the service has a definition file (`target` is one, or names one
/// in `config`'s services directory) and no `component` is given, `active`
/// is set in the file (only that value's bytes change) and the file is
/// deployed to `client`'s node, so file and node agree; if the node refuses
/// the deploy outright (unreachable, TLS, token or role) the file is put
/// back as it was. A broken definition is reported, never edited.
/// Otherwise the node stops or starts the recorded service (or the one
/// component) itself: the file, if any, says nothing per component.
pub async fn set_active(
    client: &mut Client,
    config: Option<&CliConfig>,
    target: &str,
    component: Option<&str>,
    active: bool,
) -> Result<ActiveChange, OpsError> {
    let file = definition_file(config, target);
    let load = |path: &PathBuf| match config {
        Some(config) => config.load_definition(target),
        None => servicedef::load(path),
    };
    if let (Some(path), None) = (&file, component) {
        // Validate before touching the file.
        load(path)?;
        let original = std::fs::read(path).map_err(|source| OpsError::Restore {
            path: path.clone(),
            source,
        })?;
        servicedef::write_active(path, active)?;
        let answer = match load(path) {
            Ok(def) => client
                .deploy(&def, None, PullPolicy::Missing, DeployOptions::default())
                .await
                .map_err(OpsError::from),
            Err(e) => Err(e.into()),
        };
        return match answer {
            Ok(res) => Ok(ActiveChange {
                service: res.service,
                results: res.results,
                node: res.node,
                file,
            }),
            Err(err) => {
                let refused = match &err {
                    OpsError::Client(e) => e.refused_before_acting(),
                    _ => true,
                };
                if refused {
                    std::fs::write(path, &original).map_err(|source| OpsError::Restore {
                        path: path.clone(),
                        source,
                    })?;
                }
                Err(err)
            }
        };
    }
    let service = match &file {
        Some(path) => load(path)?.name,
        None => target.to_string(),
    };
    let res = if active {
        client.start(&service, component).await?
    } else {
        client.stop(&service, component).await?
    };
    Ok(ActiveChange {
        service: res.service,
        results: res.results,
        node: res.node,
        file: None,
    })
}
