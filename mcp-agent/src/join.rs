//! Fleet membership: a node with a `[master]` registers with its master,
//! with everything it holds, and then heartbeats.
//!
//! The master is never needed for the node to work: while it cannot be
//! reached the node runs its services, its monitor and its API as before,
//! and tries again with a backoff (0.5 s doubling to 30 s). A master that
//! no longer knows the node (restarted on an empty database, say) asks it
//! to register again, and learns its inventory anew.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mcp_core::client::{Client, ConnectOptions};
use mcp_core::placement::Resources;
use mcp_core::servicedef::{ServiceDef, Tier};
use mcp_core::tls::ClientTlsFiles;
use mcp_proto::v1 as pb;

use crate::config::MasterLink;
use crate::error::AgentError;
use crate::registry::Registry;

/// Shortest wait after a failed call to the master.
pub const RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest wait between tries.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// Who this node is to its master.
#[derive(Debug, Clone)]
pub struct Membership {
    /// The master and how to reach it.
    pub link: MasterLink,
    /// This node's name.
    pub name: String,
    /// The address the master dials.
    pub advertise: SocketAddr,
    /// Where ports without a host address are published; `None` for
    /// everywhere.
    pub publish_address: Option<std::net::IpAddr>,
    /// Changes at every start of the agent.
    pub boot_id: String,
}

/// A fresh boot id: 16 random bytes in hex.
pub fn new_boot_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What this machine offers unless `[master]` says less: its memory
/// (`MemTotal`) and its CPUs.
pub fn machine_capacity() -> Resources {
    let memory = meminfo("MemTotal:").unwrap_or(0);
    let cpus = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1);
    Resources { memory, cpus }
}

/// What this machine uses now: memory in use (`MemTotal - MemAvailable`)
/// and the CPUs the last minute's load keeps busy (rounded up).
pub fn machine_use() -> Resources {
    let memory = match (meminfo("MemTotal:"), meminfo("MemAvailable:")) {
        (Some(total), Some(available)) => total.saturating_sub(available),
        _ => 0,
    };
    let cpus = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |load| load.ceil().clamp(0.0, f64::from(u32::MAX)) as u32);
    Resources { memory, cpus }
}

/// A `/proc/meminfo` value in bytes.
fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// Every service this node holds, with its definition and instance ids,
/// and a digest of it all: SHA-256 over each service's definition (as
/// canonical JSON), generation and instance ids, in name order.
pub fn inventory(registry: &Registry) -> Result<(Vec<pb::InventoryService>, String), AgentError> {
    use sha2::{Digest, Sha256};
    let mut held = Vec::new();
    let mut digest = Sha256::new();
    for service in registry.list_services()? {
        let components = registry.components(&service.name)?;
        if components.is_empty() {
            continue;
        }
        let definition = ServiceDef {
            name: service.name.clone(),
            active: service.active,
            node: service.node.clone(),
            tier: if service.tier == Tier::Core.as_str() {
                Tier::Core
            } else {
                Tier::Worker
            },
            components: components.iter().map(|c| c.definition.clone()).collect(),
        };
        let instance_ids: std::collections::BTreeMap<String, String> = components
            .iter()
            .filter_map(|c| Some((c.name.clone(), c.container_id.clone()?)))
            .collect();
        let generation = service.generation;
        let canonical = serde_json::to_vec(&(&definition, generation, &instance_ids))
            .map_err(|e| AgentError::Internal(format!("inventory of {}: {e}", service.name)))?;
        digest.update((canonical.len() as u64).to_be_bytes());
        digest.update(&canonical);
        held.push(pb::InventoryService {
            definition: Some(definition.to_proto()),
            generation,
            instance_ids: instance_ids.into_iter().collect(),
        });
    }
    Ok((held, hex::encode(digest.finalize())))
}

impl Membership {
    /// What the node offers: the machine's, or less where `[master]` says.
    fn capacity(&self) -> Resources {
        let machine = machine_capacity();
        Resources {
            memory: self.link.memory.unwrap_or(machine.memory),
            cpus: self.link.cpus.unwrap_or(machine.cpus),
        }
    }

    async fn connect(&self) -> Result<Client, String> {
        let token = std::fs::read_to_string(&self.link.token_file)
            .map_err(|e| format!("join token {}: {e}", self.link.token_file.display()))?
            .trim()
            .to_string();
        let options = ConnectOptions {
            token: Some(token),
            token_source: self.link.token_file.display().to_string(),
            tls: if self.link.insecure {
                None
            } else {
                self.link.ca_cert.clone().map(|ca_cert| ClientTlsFiles {
                    ca_cert,
                    cert: None,
                    key: None,
                })
            },
        };
        Client::connect("master", &self.link.address, &options)
            .await
            .map_err(|e| e.to_string())
    }

    async fn register(&self, client: &mut Client, registry: &Registry) -> Result<Duration, String> {
        let (inventory, inventory_digest) = inventory(registry).map_err(|e| e.to_string())?;
        let services = inventory.len();
        let capacity = self.capacity();
        let interval = client
            .register(pb::RegisterRequest {
                name: self.name.clone(),
                role: self.link.role.as_str().to_string(),
                advertise: self.advertise.to_string(),
                arch: std::env::consts::ARCH.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                capacity: Some(pb::Resources {
                    memory_bytes: capacity.memory,
                    cpus: capacity.cpus,
                }),
                boot_id: self.boot_id.clone(),
                inventory,
                publish_address: self
                    .publish_address
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                inventory_digest,
            })
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(master = %self.link.address, services, interval_ms = interval, "registered with the master");
        Ok(Duration::from_millis(u64::from(interval.max(50))))
    }

    /// Registers and heartbeats for as long as the agent runs.
    pub async fn run(self: Arc<Self>, registry: Arc<Registry>) {
        let mut wait = RETRY_MIN;
        let mut failing = false;
        loop {
            match self.session(&registry).await {
                Ok(()) => wait = RETRY_MIN,
                Err(e) => {
                    if !failing {
                        tracing::warn!(master = %self.link.address, error = %e, "cannot reach the master; the node runs on and tries again");
                    } else {
                        tracing::debug!(master = %self.link.address, error = %e, "master still unreachable");
                    }
                    failing = true;
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_MAX);
                    continue;
                }
            }
            failing = false;
        }
    }

    /// One registration and its heartbeats, until a call fails (an error)
    /// or the master asks for a new registration (`Ok`).
    async fn session(&self, registry: &Arc<Registry>) -> Result<(), String> {
        let mut client = self.connect().await?;
        let mut interval = self.register(&mut client, registry).await?;
        loop {
            tokio::time::sleep(interval).await;
            // A changed inventory (a deploy, a removal) makes the master
            // ask for a new registration, which carries it.
            let (held, inventory_digest) = inventory(registry).map_err(|e| e.to_string())?;
            let services = u32::try_from(held.len()).unwrap_or(u32::MAX);
            let used = machine_use();
            let answer = client
                .heartbeat(pb::HeartbeatRequest {
                    name: self.name.clone(),
                    boot_id: self.boot_id.clone(),
                    used: Some(pb::Resources {
                        memory_bytes: used.memory,
                        cpus: used.cpus,
                    }),
                    services,
                    inventory_digest,
                })
                .await
                .map_err(|e| e.to_string())?;
            if answer.register_again {
                tracing::info!(master = %self.link.address, "the master asks this node to register again (it does not know the node, or not what it holds now)");
                return Ok(());
            }
            interval = Duration::from_millis(u64::from(answer.heartbeat_interval_ms.max(50)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{ComponentRecord, ServiceRecord};

    fn record(registry: &Registry, text: &str) {
        let def = mcp_core::servicedef::parse(text, std::path::Path::new("svc.toml")).unwrap();
        let components: Vec<ComponentRecord> = def
            .components
            .iter()
            .map(|c| ComponentRecord::from_def(&def.name, c))
            .collect();
        registry
            .record_deploy(&ServiceRecord::from_def(&def), &components, &[])
            .unwrap();
    }

    #[test]
    fn the_inventory_digest_changes_with_what_the_node_holds_and_only_then() {
        let registry = Registry::open_in_memory().unwrap();
        let web = "name = \"web\"\n[[components]]\nname = \"a\"\nimage = \"x:1\"\nenv = { B = \"2\", A = \"1\", C = \"3\" }\n";
        record(&registry, web);
        let (held, first) = inventory(&registry).unwrap();
        assert_eq!(held.len(), 1);
        // Maps (env) inside do not make it vary between calls.
        for _ in 0..20 {
            assert_eq!(inventory(&registry).unwrap().1, first);
        }
        record(&registry, &web.replace("x:1", "x:2"));
        let (_, changed) = inventory(&registry).unwrap();
        assert_ne!(changed, first, "a changed definition");
        record(
            &registry,
            "name = \"db\"\n[[components]]\nname = \"a\"\nimage = \"y:1\"\n",
        );
        let (held, more) = inventory(&registry).unwrap();
        assert_eq!(held.len(), 2);
        assert_ne!(more, changed, "one more service");
    }

    #[test]
    fn the_machine_is_measured() {
        let capacity = machine_capacity();
        assert!(capacity.memory > 0 && capacity.cpus > 0, "{capacity:?}");
        let used = machine_use();
        assert!(
            used.memory > 0 && used.memory <= capacity.memory,
            "{used:?}"
        );
        let (a, b) = (new_boot_id(), new_boot_id());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
