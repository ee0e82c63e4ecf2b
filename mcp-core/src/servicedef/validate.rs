//! The one validator: turns the raw model (from a file or a request) into a
//! [`ServiceDef`], or reports the first problem.

use std::collections::{BTreeMap, HashSet};

use mcp_runtime::{PortMapping, RuntimeKind, instance_name};

use super::raw::{Issue, L, Loc, MemoryValue, RawComponent, RawRoute, RawService, earliest};
use super::values::{
    MAX_INSTANCE_NAME_LEN, Memory, check_restart, host_ips_overlap, is_env_key, name_problem,
    parse_port, parse_volume,
};
use super::{ComponentDef, RouteDef, ServiceDef, Tier};

/// Validates a raw definition. When there are several problems, the earliest
/// in the file (or the first in request order) is returned.
pub(crate) fn service(raw: RawService) -> Result<ServiceDef, Issue> {
    let mut v = Validator::default();
    let def = v.service(raw);
    match earliest(v.issues) {
        Some(issue) => Err(issue),
        None => Ok(def),
    }
}

#[derive(Default)]
struct Validator {
    issues: Vec<Issue>,
}

/// A published host port seen so far, for conflict checks.
struct Published {
    port: PortMapping,
    text: String,
    component: String,
}

impl Validator {
    fn issue(&mut self, loc: &Loc, message: impl Into<String>) {
        self.issues.push(Issue::new(loc, message));
    }

    fn missing(&mut self, loc: &Loc, message: impl Into<String>) {
        self.issues.push(Issue::missing(loc, message));
    }

    /// A string that must not be empty nor contain whitespace.
    fn word(&mut self, what: &str, value: Option<L<String>>) -> Option<String> {
        let value = value?;
        if value.value.is_empty() {
            self.issue(
                &value.loc,
                format!("invalid {what} \"\": must not be empty"),
            );
        } else if value.value.chars().any(char::is_whitespace) {
            self.issue(
                &value.loc,
                format!(
                    "invalid {what} {:?}: must not contain whitespace",
                    value.value
                ),
            );
        }
        Some(value.value)
    }

    fn service(&mut self, raw: RawService) -> ServiceDef {
        let name = match raw.name {
            None => {
                self.missing(&raw.loc, "missing required key \"name\"");
                String::new()
            }
            Some(name) => {
                if let Some(why) = name_problem(&name.value) {
                    self.issue(
                        &name.loc,
                        format!("invalid service name {:?}: {why}", name.value),
                    );
                }
                name.value
            }
        };
        let tier = match raw.tier {
            None => Tier::default(),
            Some(t) => match t.value.as_str() {
                "core" => Tier::Core,
                "worker" => Tier::Worker,
                other => {
                    self.issue(
                        &t.loc,
                        format!("invalid tier {other:?}: expected \"core\" or \"worker\""),
                    );
                    Tier::default()
                }
            },
        };
        let node = self.word("node", raw.node);

        if raw.components.is_empty() {
            let loc = raw.components_loc.as_ref().unwrap_or(&raw.loc);
            self.missing(
                loc,
                "no components: a service needs at least one [[components]] table",
            );
        }
        let mut seen_names: HashSet<String> = HashSet::new();
        let mut published: Vec<Published> = Vec::new();
        let mut components = Vec::new();
        for raw_component in raw.components {
            if let Some(n) = &raw_component.name
                && !seen_names.insert(n.value.clone())
            {
                self.issue(&n.loc, format!("duplicate component name {:?}", n.value));
            }
            components.push(self.component(&name, raw_component, &mut published));
        }

        ServiceDef {
            name,
            active: raw.active.is_none_or(|a| a.value),
            node,
            tier,
            components,
        }
    }

    fn component(
        &mut self,
        service: &str,
        raw: RawComponent,
        published: &mut Vec<Published>,
    ) -> ComponentDef {
        let name = match raw.name {
            None => {
                self.missing(&raw.loc, "component is missing required key \"name\"");
                String::new()
            }
            Some(n) => {
                if let Some(why) = name_problem(&n.value) {
                    self.issue(
                        &n.loc,
                        format!("invalid component name {:?}: {why}", n.value),
                    );
                } else if name_problem(service).is_none() {
                    let instance = instance_name(service, &n.value);
                    if instance.len() > MAX_INSTANCE_NAME_LEN {
                        self.issue(
                            &n.loc,
                            format!(
                                "instance name {instance:?} is longer than {MAX_INSTANCE_NAME_LEN} characters"
                            ),
                        );
                    }
                }
                n.value
            }
        };
        // Whether the runtime is known: an invalid one is reported, and the
        // default it falls back to must not raise issues of its own.
        let (runtime, runtime_known) = match &raw.runtime {
            None => (RuntimeKind::default(), true),
            Some(r) => match r.value.as_str() {
                "container" => (RuntimeKind::Container, true),
                "unikernel" => (RuntimeKind::Unikernel, true),
                other => {
                    self.issue(
                        &r.loc,
                        format!(
                            "invalid runtime {other:?}: expected \"container\" or \"unikernel\""
                        ),
                    );
                    (RuntimeKind::default(), false)
                }
            },
        };
        let kernel_boot = raw.kernel.is_some();
        let image = match raw.image {
            // With a kernel, the image is an optional extra disk.
            None if kernel_boot => String::new(),
            None => {
                let which = if name.is_empty() {
                    String::from("component")
                } else {
                    format!("component {name:?}")
                };
                let hint = if runtime == RuntimeKind::Unikernel {
                    " (or \"kernel\" to boot a kernel directly)"
                } else {
                    ""
                };
                self.missing(
                    &raw.loc,
                    format!("{which} is missing required key \"image\"{hint}"),
                );
                String::new()
            }
            Some(image) => {
                if image.value.trim().is_empty() {
                    let hint = if kernel_boot {
                        " (leave it out to boot the kernel without a disk)"
                    } else {
                        ""
                    };
                    self.issue(&image.loc, format!("image must not be empty{hint}"));
                } else if image.value.chars().any(char::is_whitespace) {
                    self.issue(
                        &image.loc,
                        format!(
                            "invalid image {:?}: must not contain whitespace",
                            image.value
                        ),
                    );
                }
                image.value
            }
        };
        let mut env = BTreeMap::new();
        for (key, value) in raw.env {
            if !is_env_key(&key.value) {
                self.issue(
                    &key.loc,
                    format!(
                        "invalid environment variable name {:?}: must match [A-Za-z_][A-Za-z0-9_]*",
                        key.value
                    ),
                );
            }
            env.insert(key.value, value);
        }

        let mut ports = Vec::new();
        for text in raw.ports {
            match parse_port(&text.value) {
                Err(e) => self.issue(&text.loc, e.message()),
                Ok(port) => {
                    if let Some(other) = published.iter().find(|p| {
                        p.port.host_port == port.host_port
                            && p.port.protocol == port.protocol
                            && host_ips_overlap(&p.port.host_ip, &port.host_ip)
                    }) {
                        self.issue(
                            &text.loc,
                            format!(
                                "port {:?} conflicts with {:?} of component {:?}: host port {}/{} is already published",
                                text.value, other.text, other.component, port.host_port, port.protocol
                            ),
                        );
                    }
                    published.push(Published {
                        port: port.clone(),
                        text: text.value,
                        component: name.clone(),
                    });
                    ports.push(port);
                }
            }
        }

        let mut volumes: Vec<mcp_runtime::VolumeMount> = Vec::new();
        for text in raw.volumes {
            match parse_volume(&text.value) {
                Err(e) => self.issue(&text.loc, e.message()),
                Ok(volume) => {
                    if volumes.iter().any(|v| v.destination == volume.destination) {
                        self.issue(
                            &text.loc,
                            format!(
                                "invalid volume {:?}: destination {:?} is already mounted",
                                text.value, volume.destination
                            ),
                        );
                    }
                    volumes.push(volume);
                }
            }
        }

        let network = self.word("network", raw.network);
        let user = self.word("user", raw.user);
        let restart = raw.restart.map(|r| {
            if let Err(e) = check_restart(&r.value) {
                self.issue(&r.loc, e.message());
            }
            r.value
        });
        let memory = raw.memory.and_then(|m| match m.value {
            MemoryValue::Text(text) => Memory::parse(&text)
                .map_err(|e| self.issue(&m.loc, e.message()))
                .ok(),
            MemoryValue::Bytes(n) => match u64::try_from(n) {
                Ok(bytes) if bytes > 0 => Some(Memory::from_bytes(bytes)),
                _ => {
                    self.issue(
                        &m.loc,
                        format!("invalid memory {n}: must be greater than zero"),
                    );
                    None
                }
            },
        });
        let vcpus = raw.vcpus.and_then(|v| match u32::try_from(v.value) {
            Ok(n @ 1..=64) => Some(n),
            _ => {
                self.issue(
                    &v.loc,
                    format!("invalid vcpus {}: must be between 1 and 64", v.value),
                );
                None
            }
        });
        let routes = raw.routes.into_iter().map(|r| self.route(r)).collect();
        let (kernel, initrd, append) =
            self.kernel_boot(runtime, runtime_known, raw.kernel, raw.initrd, raw.append);

        ComponentDef {
            name,
            image,
            runtime,
            cmd: raw.cmd,
            env,
            ports,
            volumes,
            network,
            user,
            restart,
            memory,
            vcpus,
            routes,
            kernel,
            initrd,
            append,
        }
    }

    /// Checks `kernel`, `initrd` and `append`: only for a unikernel, the
    /// latter two only with a kernel, none empty (paths without whitespace).
    fn kernel_boot(
        &mut self,
        runtime: RuntimeKind,
        runtime_known: bool,
        kernel: Option<L<String>>,
        initrd: Option<L<String>>,
        append: Option<L<String>>,
    ) -> (Option<String>, Option<String>, Option<String>) {
        let keys = [
            ("kernel", &kernel),
            ("initrd", &initrd),
            ("append", &append),
        ];
        match runtime {
            RuntimeKind::Container if runtime_known => {
                for (key, value) in keys {
                    if let Some(v) = value {
                        self.issue(
                            &v.loc,
                            format!(
                                "{key:?} is only for unikernel components (runtime \"unikernel\")"
                            ),
                        );
                    }
                }
            }
            RuntimeKind::Unikernel if kernel.is_none() => {
                for (key, value) in &keys[1..] {
                    if let Some(v) = value {
                        self.issue(
                            &v.loc,
                            format!(
                                "{key:?} needs \"kernel\": it is only used when booting a kernel directly"
                            ),
                        );
                    }
                }
            }
            _ => {}
        }
        let kernel = self.word("kernel", kernel);
        let initrd = self.word("initrd", initrd);
        let append = append.map(|a| {
            if a.value.is_empty() {
                self.issue(&a.loc, "invalid append \"\": must not be empty");
            }
            a.value
        });
        (kernel, initrd, append)
    }

    fn route(&mut self, raw: RawRoute) -> RouteDef {
        let hostname = match raw.hostname {
            None => {
                self.missing(&raw.loc, "route is missing required key \"hostname\"");
                String::new()
            }
            Some(h) => {
                if h.value.trim().is_empty() {
                    self.issue(
                        &h.loc,
                        format!("invalid route hostname {:?}: must not be empty", h.value),
                    );
                } else if h.value.chars().any(char::is_whitespace) {
                    self.issue(
                        &h.loc,
                        format!(
                            "invalid route hostname {:?}: must not contain whitespace",
                            h.value
                        ),
                    );
                }
                h.value
            }
        };
        let port = match raw.port {
            None => {
                self.missing(&raw.loc, "route is missing required key \"port\"");
                0
            }
            Some(p) => match u16::try_from(p.value) {
                Ok(n) if n > 0 => n,
                _ => {
                    self.issue(
                        &p.loc,
                        format!(
                            "invalid route port {}: must be between 1 and 65535",
                            p.value
                        ),
                    );
                    0
                }
            },
        };
        RouteDef {
            hostname,
            port,
            public: raw.public.is_some_and(|p| p.value),
        }
    }
}
