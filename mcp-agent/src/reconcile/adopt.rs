//! Adopting instances MCP did not create: reading a definition back from
//! them, and taking them into the registry without restarting them.

use std::collections::BTreeMap;

use mcp_core::servicedef::{ComponentDef, ServiceDef};
use mcp_runtime::{InstanceInfo, InstanceState};

use super::ownership::{Owner, Owners};
use super::{Reconciler, STAGED_SUFFIX};
use crate::error::AgentError;
use crate::registry::{ComponentRecord, ServiceRecord};

/// What [`Reconciler::adopt`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Adoption {
    /// The service's definition afterwards: what it ran before plus what
    /// was adopted. Deployed unchanged, it changes nothing.
    pub definition: ServiceDef,
    /// Components adopted now.
    pub adopted: Vec<String>,
    /// Components MCP managed already.
    pub already_managed: Vec<String>,
}

/// Environment variables the runtime sets itself, left out of an adopted
/// definition.
const RUNTIME_ENV: &[&str] = &["HOSTNAME", "container", "TERM", "HOME"];

/// A component definition read back from an instance (with `inspect`
/// details).
fn component_from_instance(name: &str, inst: &InstanceInfo) -> ComponentDef {
    let details = inst.details.clone().unwrap_or_default();
    let none_if_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    ComponentDef {
        name: name.to_string(),
        image: inst.image.clone(),
        runtime: inst.runtime,
        cmd: details.cmd,
        env: details
            .env
            .into_iter()
            .filter(|(k, _)| !RUNTIME_ENV.contains(&k.as_str()))
            .collect(),
        ports: inst.ports.clone(),
        volumes: details.volumes,
        network: details
            .networks
            .into_iter()
            .find(|n| !matches!(n.as_str(), "podman" | "bridge" | "host" | "none" | "")),
        user: none_if_empty(&details.user),
        restart: none_if_empty(&details.restart).filter(|r| r != "no"),
        memory: (details.memory_bytes > 0)
            .then(|| mcp_core::servicedef::Memory::from_bytes(details.memory_bytes)),
        vcpus: None,
        routes: Vec::new(),
        ..ComponentDef::default()
    }
}

impl Reconciler {
    /// Takes containers named `<service>-*` that MCP does not manage yet
    /// into the registry, as they are: nothing is stopped, restarted or
    /// relabelled. Each becomes a component whose definition is read back
    /// from the runtime (image, cmd, env, ports, volumes, network, user,
    /// restart, memory), recorded with the instance's id, so deploying the
    /// returned definition unchanged changes nothing. Components already
    /// managed are listed, not touched.
    pub async fn adopt(&self, service: &str) -> Result<Adoption, AgentError> {
        let _guard = self.locks.lock(service).await;
        self.runtime.ping().await?;
        let recorded_service = self.registry.get_service(service)?;
        let recorded: BTreeMap<String, ComponentRecord> = self
            .registry
            .components(service)?
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        let prefix = format!("{service}-");
        let mut adopted = Vec::new();
        let mut already = Vec::new();
        let mut records = Vec::new();
        let mut any_running = false;
        // Whose each instance is, counting this service as registered: an
        // instance another registered service's labels, records or name
        // claim is never taken (`ux-hand-app` is `ux-hand`'s, not `ux`'s).
        let owners = Owners::new(
            &self.registry.all_components()?,
            self.registry
                .list_services()?
                .into_iter()
                .map(|s| s.name)
                .chain([service.to_string()]),
        );
        let mut candidates: Vec<(String, bool, InstanceInfo)> = self
            .runtime
            .list()
            .await?
            .into_iter()
            .filter(|i| !i.name.ends_with(STAGED_SUFFIX))
            .filter_map(|i| match owners.owner(&i) {
                Owner::Managed {
                    service: s,
                    component,
                } if s == service => Some((component, true, i)),
                Owner::Unmanaged {
                    service: s,
                    component,
                } if s == service && i.name == mcp_runtime::instance_name(service, &component) => {
                    Some((component, false, i))
                }
                _ => None,
            })
            .collect();
        candidates.sort_by(|a, b| a.2.name.cmp(&b.2.name));
        for (component, managed, inst) in candidates {
            if managed {
                already.push(component);
                continue;
            }
            let Some(full) = self.runtime.inspect(&inst.id).await? else {
                continue; // gone meanwhile
            };
            any_running |= full.state == InstanceState::Running;
            let def = component_from_instance(&component, &full);
            records.push(ComponentRecord {
                container_id: Some(full.id.clone()),
                ..ComponentRecord::from_def(service, &def)
            });
            adopted.push(def);
        }
        let mut def = ServiceDef {
            name: service.to_string(),
            active: recorded_service.as_ref().map_or(any_running, |s| s.active),
            node: recorded_service.as_ref().and_then(|s| s.node.clone()),
            tier: Default::default(),
            components: recorded.values().map(|r| r.definition.clone()).collect(),
        };
        def.components.extend(adopted.iter().cloned());
        if adopted.is_empty() {
            if already.is_empty() {
                return Err(AgentError::NotFound(format!(
                    "no instances named {prefix}* on this node"
                )));
            }
            return Ok(Adoption {
                definition: def,
                adopted: Vec::new(),
                already_managed: already,
            });
        }
        // The same validation as a pushed definition: names, values.
        let def = ServiceDef::from_proto(&def.to_proto())?;
        let service_record = match &recorded_service {
            Some(r) => r.clone(),
            None => ServiceRecord::from_def(&def),
        };
        self.registry
            .record_deploy(&service_record, &records, &[])?;
        for c in &adopted {
            if let Err(e) = self
                .registry
                .record_event(service, Some(&c.name), "adopted", &c.image)
            {
                tracing::warn!(service, error = %e, "cannot record an event");
            }
        }
        self.record_adopted(service, &adopted);
        self.observed.invalidate();
        Ok(Adoption {
            definition: def,
            adopted: adopted.into_iter().map(|c| c.name).collect(),
            already_managed: already,
        })
    }
}
