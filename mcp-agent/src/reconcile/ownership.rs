//! Which service an instance on the node belongs to.
//!
//! Names cannot say: services and components may both contain `-`, so
//! `ux-web-db` is component `web-db` of service `ux` as much as component
//! `db` of service `ux-web`. Every decision about belonging therefore goes,
//! in this order, by:
//!
//! 1. the labels MCP puts on every instance it creates (`mcp.service`,
//!    `mcp.component`);
//! 2. for an unlabelled instance MCP adopted, the instance id the registry
//!    recorded for a component;
//! 3. for an instance MCP does not manage, its name: the component of a
//!    registered service whose instance name it is, else the longest
//!    registered service name it starts with (followed by `-`).
//!
//! The name is the last resort and only attributes an unmanaged instance (to
//! report it, or to let `adopt` take it); it never lets one service act on an
//! instance that another service's labels or records claim.

use std::collections::HashMap;

use mcp_runtime::{InstanceInfo, instance_name, labels};

use super::STAGED_SUFFIX;
use crate::registry::ComponentRecord;

/// Who an instance belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// MCP manages it for this component: by its labels, or (adopted) by
    /// the id the registry recorded.
    Managed {
        /// The service.
        service: String,
        /// The component.
        component: String,
    },
    /// MCP does not manage it; its name attributes it to this service (and
    /// names the component it stands for).
    Unmanaged {
        /// The service its name belongs to.
        service: String,
        /// The rest of its name.
        component: String,
    },
    /// No registered service: not MCP's business.
    Foreign,
}

impl Owner {
    /// The service it belongs to, managed or not.
    pub fn service(&self) -> Option<&str> {
        match self {
            Owner::Managed { service, .. } | Owner::Unmanaged { service, .. } => Some(service),
            Owner::Foreign => None,
        }
    }

    /// Whether MCP manages it as component `component` of `service`.
    pub fn is(&self, service: &str, component: &str) -> bool {
        matches!(self, Owner::Managed { service: s, component: c } if s == service && c == component)
    }

    /// How the owner is named in a refusal: `component db of service
    /// "ux-web"`, or `service "ux-web" (by its name; MCP does not manage it)`.
    pub fn describe(&self) -> String {
        match self {
            Owner::Managed { service, component } => {
                format!("component {component:?} of service {service:?}")
            }
            Owner::Unmanaged { service, .. } => {
                format!("service {service:?} (by its name; MCP does not manage it)")
            }
            Owner::Foreign => "no service".to_string(),
        }
    }
}

/// What the registry says about every component on the node, for
/// [`Owners::owner`].
#[derive(Debug, Default)]
pub struct Owners {
    /// Recorded instance id → (service, component).
    by_id: HashMap<String, (String, String)>,
    /// Instance name → (service, component), for every registered component
    /// (more than one where a registry from before names were checked holds
    /// two components sharing one).
    by_name: HashMap<String, Vec<(String, String)>>,
    /// Every registered service.
    services: Vec<String>,
}

impl Owners {
    /// The owners `components` (every component the registry holds) and
    /// `services` (every registered service) describe.
    pub fn new(components: &[ComponentRecord], services: impl IntoIterator<Item = String>) -> Self {
        let mut owners = Owners {
            services: services.into_iter().collect(),
            ..Owners::default()
        };
        for c in components {
            let key = (c.service.clone(), c.name.clone());
            if let Some(id) = &c.container_id {
                owners.by_id.insert(id.clone(), key.clone());
            }
            owners
                .by_name
                .entry(instance_name(&c.service, &c.name))
                .or_default()
                .push(key);
            if !owners.services.contains(&c.service) {
                owners.services.push(c.service.clone());
            }
        }
        owners
    }

    /// Who `inst` belongs to (see the [module documentation](self)). A
    /// staged replacement (`<name>.mcp-new`) is judged as the instance it
    /// stands in for.
    pub fn owner(&self, inst: &InstanceInfo) -> Owner {
        if inst.is_managed()
            && let (Some(service), Some(component)) =
                (inst.label(labels::SERVICE), inst.label(labels::COMPONENT))
        {
            return Owner::Managed {
                service: service.to_string(),
                component: component.to_string(),
            };
        }
        if let Some((service, component)) = self.by_id.get(&inst.id) {
            return Owner::Managed {
                service: service.clone(),
                component: component.clone(),
            };
        }
        let name = inst.name.strip_suffix(STAGED_SUFFIX).unwrap_or(&inst.name);
        if let Some((service, component)) = self.by_name.get(name).and_then(|v| v.first()) {
            return Owner::Unmanaged {
                service: service.clone(),
                component: component.clone(),
            };
        }
        self.services
            .iter()
            .filter(|s| {
                name.strip_prefix(s.as_str())
                    .is_some_and(|rest| rest.len() > 1 && rest.starts_with('-'))
            })
            .max_by_key(|s| s.len())
            .map_or(Owner::Foreign, |service| Owner::Unmanaged {
                service: service.clone(),
                component: name[service.len() + 1..].to_string(),
            })
    }

    /// The registered component, other than `component` of `service`, whose
    /// instance name is also `service`'s component's: two components that
    /// would share one instance.
    pub fn name_taken_by(&self, service: &str, component: &str) -> Option<(&str, &str)> {
        self.by_name
            .get(&instance_name(service, component))?
            .iter()
            .find(|(s, c)| s != service || c != component)
            .map(|(s, c)| (s.as_str(), c.as_str()))
    }
}

/// Why component `component` of `service` cannot use the instance `name`
/// that belongs to `owner`; `None` when it is the component's own.
pub fn refusal(owner: &Owner, service: &str, component: &str, name: &str) -> Option<String> {
    match owner {
        o if o.is(service, component) => None,
        // Made by hand, and by its name this service's (or nobody's yet):
        // the operator decides.
        Owner::Unmanaged { service: s, .. } if s == service => Some(format!(
            "an instance named {name} exists that MCP does not manage: adopt it or remove it first"
        )),
        Owner::Foreign => Some(format!(
            "an instance named {name} exists that MCP does not manage: adopt it or remove it first"
        )),
        other => Some(format!(
            "{service}/{component}: its instance name {name} is taken by {}: rename the component or the service so that <service>-<component> differs",
            other.describe()
        )),
    }
}

/// Why component `component` of `service` cannot be deployed because
/// component `other_component` of `other_service` has the same instance
/// name.
pub fn shared_name(
    service: &str,
    component: &str,
    other_service: &str,
    other_component: &str,
) -> String {
    format!(
        "{service}/{component}: its instance name {} is also that of component {other_component:?} of service {other_service:?}: rename the component or the service so that <service>-<component> differs",
        instance_name(service, component)
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mcp_runtime::{InstanceState, RuntimeKind};

    use super::*;
    use mcp_core::servicedef::ComponentDef;

    fn instance(name: &str, id: &str, labelled: Option<(&str, &str)>) -> InstanceInfo {
        let mut l = BTreeMap::new();
        if let Some((s, c)) = labelled {
            l.insert(labels::MANAGED.to_string(), "true".to_string());
            l.insert(labels::SERVICE.to_string(), s.to_string());
            l.insert(labels::COMPONENT.to_string(), c.to_string());
        }
        InstanceInfo {
            id: id.into(),
            name: name.into(),
            image: "img:1".into(),
            image_id: String::new(),
            state: InstanceState::Running,
            status: String::new(),
            exit_code: None,
            labels: l,
            ports: Vec::new(),
            created_at: 0,
            started_at: 0,
            runtime: RuntimeKind::Container,
            details: None,
        }
    }

    fn record(service: &str, component: &str, id: Option<&str>) -> ComponentRecord {
        ComponentRecord {
            container_id: id.map(str::to_string),
            ..ComponentRecord::from_def(
                service,
                &ComponentDef {
                    name: component.into(),
                    image: "img:1".into(),
                    ..ComponentDef::default()
                },
            )
        }
    }

    fn managed(s: &str, c: &str) -> Owner {
        Owner::Managed {
            service: s.into(),
            component: c.into(),
        }
    }

    fn unmanaged(s: &str, c: &str) -> Owner {
        Owner::Unmanaged {
            service: s.into(),
            component: c.into(),
        }
    }

    #[test]
    fn labels_decide_whatever_the_name_says() {
        // ux/web-db and ux-web/db share the instance name ux-web-db.
        let owners = Owners::new(
            &[record("ux", "web-db", None), record("ux-web", "db", None)],
            ["ux".to_string(), "ux-web".to_string()],
        );
        let theirs = instance("ux-web-db", "id1", Some(("ux-web", "db")));
        assert_eq!(owners.owner(&theirs), managed("ux-web", "db"));
        assert!(!owners.owner(&theirs).is("ux", "web-db"));
        let ours = instance("ux-web-db", "id2", Some(("ux", "web-db")));
        assert!(owners.owner(&ours).is("ux", "web-db"));
        // A staged replacement belongs where its labels say.
        let staged = instance("ux-web-db.mcp-new", "id3", Some(("ux-web", "db")));
        assert_eq!(owners.owner(&staged), managed("ux-web", "db"));
        // Each registered component finds the other holding its name.
        assert_eq!(owners.name_taken_by("ux", "web-db"), Some(("ux-web", "db")));
        assert_eq!(owners.name_taken_by("ux-web", "db"), Some(("ux", "web-db")));
        assert_eq!(owners.name_taken_by("ux", "api"), None);
    }

    #[test]
    fn an_adopted_instance_belongs_by_its_recorded_id() {
        let owners = Owners::new(
            &[record("ux-hand", "app", Some("hand-id"))],
            ["ux".to_string(), "ux-hand".to_string()],
        );
        let adopted = instance("ux-hand-app", "hand-id", None);
        assert_eq!(owners.owner(&adopted), managed("ux-hand", "app"));
        // Another unlabelled instance at that name is not adopted: it is
        // unmanaged, and its name gives it to ux-hand, not ux.
        let other = instance("ux-hand-app", "other-id", None);
        assert_eq!(owners.owner(&other), unmanaged("ux-hand", "app"));
    }

    #[test]
    fn an_unmanaged_instance_goes_to_the_longest_registered_service() {
        let owners = Owners::new(&[], ["ux".to_string(), "ux-hand".to_string()]);
        assert_eq!(
            owners.owner(&instance("ux-hand-app", "1", None)),
            unmanaged("ux-hand", "app")
        );
        assert_eq!(
            owners.owner(&instance("ux-extra", "2", None)),
            unmanaged("ux", "extra")
        );
        assert_eq!(owners.owner(&instance("uxx-a", "3", None)), Owner::Foreign);
        assert_eq!(owners.owner(&instance("ux-", "4", None)), Owner::Foreign);
        assert_eq!(owners.owner(&instance("zeta", "5", None)), Owner::Foreign);
        // Labelled by a service the registry does not know: still managed
        // by it, never anyone else's.
        assert_eq!(
            owners.owner(&instance("ux-x", "6", Some(("gone", "x")))),
            managed("gone", "x")
        );
    }
}
