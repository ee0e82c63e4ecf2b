//! The one validator: turns the raw model (from a file or a request) into a
//! [`ServiceDef`], or reports the first problem.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::instance::{MAX_VCPUS, MIN_VM_MEMORY_BYTES};
use crate::instance::{PortMapping, RuntimeKind, instance_name};

use super::raw::{
    Issue, L, Loc, MemoryValue, RawComponent, RawHealth, RawRoute, RawService, earliest,
};
use super::values::{
    MAX_INSTANCE_NAME_LEN, Memory, check_restart, format_span, host_ips_overlap, is_env_key,
    name_problem, parse_port, parse_span, parse_volume,
};
use super::{ComponentDef, HealthCheck, HealthProbe, RouteDef, ServiceDef, Tier};

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
        let names = ComponentNames::new(
            raw.components
                .iter()
                .map(|c| c.name.as_ref().map(|n| n.value.clone()))
                .collect(),
        );
        let depends_on: Vec<Vec<L<String>>> = raw
            .components
            .iter()
            .map(|c| c.depends_on.clone())
            .collect();
        let mut seen_names: HashSet<String> = HashSet::new();
        let mut published: Vec<Published> = Vec::new();
        let mut components = Vec::new();
        for raw_component in raw.components {
            if let Some(n) = &raw_component.name
                && !seen_names.insert(n.value.clone())
            {
                self.issue(&n.loc, format!("duplicate component name {:?}", n.value));
            }
            components.push(self.component(&name, raw_component, &names, &mut published));
        }
        self.dependency_cycles(&names, &depends_on);

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
        names: &ComponentNames,
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
        // Limits of a VM, checked here so that the definition alone is
        // refused (they do not depend on the node).
        let vm = runtime_known && runtime == RuntimeKind::Unikernel;
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
        // Whether every port is valid: the health check's port is looked
        // up among them only then.
        let mut ports_valid = true;
        for text in raw.ports {
            match parse_port(&text.value) {
                Err(e) => {
                    self.issue(&text.loc, e.message());
                    ports_valid = false;
                }
                Ok(port) => {
                    if vm && port.host_ip.contains(':') {
                        self.issue(
                            &text.loc,
                            format!(
                                "invalid port {:?} for a unikernel component: QEMU's user network forwards IPv4 host addresses only",
                                text.value
                            ),
                        );
                    }
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

        let mut volumes: Vec<crate::instance::VolumeMount> = Vec::new();
        for text in raw.volumes {
            if vm {
                self.issue(
                    &text.loc,
                    format!(
                        "invalid volume {:?}: a unikernel component runs in a VM, which cannot mount volumes; push its files to the service's directory instead",
                        text.value
                    ),
                );
                continue;
            }
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
        let memory = raw.memory.and_then(|m| {
            let memory = match m.value {
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
            };
            if vm
                && let Some(mem) = &memory
                && mem.bytes() < MIN_VM_MEMORY_BYTES
            {
                self.issue(
                    &m.loc,
                    format!(
                        "invalid memory {:?} for a unikernel component: a VM needs at least {} MiB",
                        mem.to_string(),
                        MIN_VM_MEMORY_BYTES >> 20
                    ),
                );
            }
            memory
        });
        let vcpus = raw.vcpus.and_then(|v| match u32::try_from(v.value) {
            Ok(n) if (1..=MAX_VCPUS).contains(&n) => Some(n),
            _ => {
                self.issue(
                    &v.loc,
                    format!(
                        "invalid vcpus {}: must be between 1 and {MAX_VCPUS}",
                        v.value
                    ),
                );
                None
            }
        });
        let routes = raw.routes.into_iter().map(|r| self.route(r)).collect();
        let (kernel, initrd, append) =
            self.kernel_boot(runtime, runtime_known, raw.kernel, raw.initrd, raw.append);
        let health = raw.health.and_then(|h| {
            let runtime = runtime_known.then_some(runtime);
            self.health(h, runtime, ports_valid.then_some(ports.as_slice()))
        });
        let depends_on = self.depends_on(&name, raw.depends_on, names);

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
            health,
            depends_on,
        }
    }

    /// Checks a component's `depends_on` entries: each the name of another
    /// component of the service, listed once. Cycles are checked once every
    /// component is known ([`Self::dependency_cycles`]).
    fn depends_on(
        &mut self,
        component: &str,
        raw: Vec<L<String>>,
        names: &ComponentNames,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(raw.len());
        let mut seen: HashSet<String> = HashSet::with_capacity(raw.len());
        for d in raw {
            if !component.is_empty() && d.value == component {
                self.issue(
                    &d.loc,
                    format!(
                        "invalid depends_on {:?}: a component cannot depend on itself",
                        d.value
                    ),
                );
            } else if names.index_of(&d.value).is_none() {
                let others: Vec<&str> = names
                    .names
                    .iter()
                    .flatten()
                    .map(String::as_str)
                    .filter(|n| *n != component)
                    .collect();
                let known = if others.is_empty() {
                    String::from("the service has no other components")
                } else {
                    format!("known components: {}", others.join(", "))
                };
                self.issue(
                    &d.loc,
                    format!(
                        "invalid depends_on {:?}: no component of that name; {known}",
                        d.value
                    ),
                );
            } else if !seen.insert(d.value.clone()) {
                self.issue(&d.loc, format!("duplicate depends_on entry {:?}", d.value));
            }
            out.push(d.value);
        }
        out
    }

    /// Reports every cycle among the components' `depends_on` entries, as
    /// `a -> b -> a`, at the entry that closes it: the components are
    /// walked depth first in file order, following entries in order.
    /// Entries reported already (unknown, itself, duplicate) are left out.
    fn dependency_cycles(&mut self, names: &ComponentNames, depends_on: &[Vec<L<String>>]) {
        let edges: Vec<Vec<(usize, &Loc)>> = depends_on
            .iter()
            .enumerate()
            .map(|(i, entries)| {
                let mut out: Vec<(usize, &Loc)> = Vec::new();
                let mut seen: HashSet<usize> = HashSet::new();
                for d in entries {
                    if let Some(j) = names.index_of(&d.value)
                        && j != i
                        && seen.insert(j)
                    {
                        out.push((j, &d.loc));
                    }
                }
                out
            })
            .collect();
        for (cycle, loc) in cycles(&edges) {
            let path: Vec<&str> = cycle
                .iter()
                .map(|&i| names.names[i].as_deref().unwrap_or_default())
                .collect();
            let closing = path.last().copied().unwrap_or_default();
            self.issue(
                loc,
                format!(
                    "invalid depends_on {closing:?}: dependency cycle {}",
                    path.join(" -> ")
                ),
            );
        }
    }

    /// A health check's `kind`, checked, and every key given that belongs to
    /// another kind reported. `None` when it is missing or unknown.
    fn health_kind(
        &mut self,
        raw: &RawHealth,
        runtime: Option<RuntimeKind>,
    ) -> Option<&'static str> {
        let kinds = "expected \"command\", \"tcp\" or \"http\"";
        let Some(k) = &raw.kind else {
            self.missing(
                &raw.loc,
                format!("health check is missing required key \"kind\" ({kinds})"),
            );
            return None;
        };
        let kind = match k.value.as_str() {
            "command" => "command",
            "tcp" => "tcp",
            "http" => "http",
            other => {
                self.issue(&k.loc, format!("invalid health kind {other:?}: {kinds}"));
                return None;
            }
        };
        if kind == "command" && runtime == Some(RuntimeKind::Unikernel) {
            self.issue(
                &k.loc,
                "invalid health kind \"command\" for a unikernel component: it runs a program inside a container; use \"tcp\" or \"http\"",
            );
        }
        for (key, loc) in &raw.keys {
            let only: &[&str] = match *key {
                "command" => &["command"],
                "port" => &["tcp", "http"],
                "path" | "status" => &["http"],
                _ => continue,
            };
            if !only.contains(&kind) {
                let which = match only {
                    [one] => format!("kind {one:?}"),
                    _ => String::from("kinds \"tcp\" and \"http\""),
                };
                self.issue(
                    loc,
                    format!(
                        "{key:?} does not belong to a {kind:?} health check: it is only for {which}"
                    ),
                );
            }
        }
        Some(kind)
    }

    /// Checks a `[components.health]` table. `runtime` is `None` when the
    /// component's runtime is invalid (reported already), `ports` when one of
    /// its ports is.
    fn health(
        &mut self,
        raw: RawHealth,
        runtime: Option<RuntimeKind>,
        ports: Option<&[PortMapping]>,
    ) -> Option<HealthCheck> {
        let kind = self.health_kind(&raw, runtime);
        let command = raw.command.and_then(|c| {
            if c.value.is_empty() {
                self.issue(
                    &c.loc,
                    "invalid health command []: must not be empty; give the program and its arguments, such as [\"pg_isready\", \"-U\", \"app\"]",
                );
                None
            } else if c.value[0].trim().is_empty() {
                self.issue(
                    &c.loc,
                    format!(
                        "invalid health command {:?}: the program (the first element) must not be empty",
                        c.value
                    ),
                );
                None
            } else {
                Some(c.value)
            }
        });
        let port = raw
            .port
            .as_ref()
            .and_then(|p| match u16::try_from(p.value) {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    self.issue(
                        &p.loc,
                        format!(
                            "invalid health port {}: must be between 1 and 65535",
                            p.value
                        ),
                    );
                    None
                }
            });
        let path = raw.path.and_then(|p| {
            if !p.value.starts_with('/') {
                self.issue(
                    &p.loc,
                    format!("invalid health path {:?}: must start with \"/\"", p.value),
                );
                None
            } else if p
                .value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                self.issue(
                    &p.loc,
                    format!(
                        "invalid health path {:?}: must not contain whitespace or control characters",
                        p.value
                    ),
                );
                None
            } else {
                Some(p.value)
            }
        });
        let status = raw.status.and_then(|s| match u16::try_from(s.value) {
            Ok(n @ 100..=599) => Some(n),
            _ => {
                self.issue(
                    &s.loc,
                    format!(
                        "invalid health status {}: must be between 100 and 599",
                        s.value
                    ),
                );
                None
            }
        });
        let retries = raw.retries.map_or(
            Some(HealthCheck::DEFAULT_RETRIES),
            |r| match u32::try_from(r.value) {
                Ok(n @ 1..=100) => Some(n),
                _ => {
                    self.issue(
                        &r.loc,
                        format!(
                            "invalid health retries {}: must be between 1 and 100",
                            r.value
                        ),
                    );
                    None
                }
            },
        );
        let interval_given = raw.interval.is_some();
        let interval = self.span(
            "interval",
            raw.interval,
            false,
            HealthCheck::DEFAULT_INTERVAL,
        );
        let timeout = match raw.timeout {
            None => interval.map(HealthCheck::default_timeout),
            Some(t) => {
                let loc = t.loc.clone();
                let text = t.value.clone();
                let timeout = self.span("timeout", Some(t), false, Duration::ZERO);
                if let (Some(timeout), Some(interval)) = (timeout, interval)
                    && timeout > interval
                {
                    let default = if interval_given { "" } else { ", the default" };
                    self.issue(
                        &loc,
                        format!(
                            "invalid health timeout {text:?}: must not be longer than the interval ({}{default})",
                            format_span(interval)
                        ),
                    );
                }
                timeout
            }
        };
        let start_period = self.span(
            "start_period",
            raw.start_period,
            true,
            HealthCheck::DEFAULT_START_PERIOD,
        );

        let probe = match kind? {
            "command" => {
                if raw.keys.iter().all(|(k, _)| *k != "command") {
                    self.missing(
                        &raw.loc,
                        "health check of kind \"command\" is missing required key \"command\"",
                    );
                }
                HealthProbe::Command { argv: command? }
            }
            kind => {
                if raw.keys.iter().all(|(k, _)| *k != "port") {
                    self.missing(
                        &raw.loc,
                        format!("health check of kind {kind:?} is missing required key \"port\""),
                    );
                }
                let port = port?;
                if let (Some(ports), Some(raw_port)) = (ports, &raw.port) {
                    self.published(&raw_port.loc, port, ports);
                }
                if kind == "tcp" {
                    HealthProbe::Tcp { port }
                } else {
                    HealthProbe::Http {
                        port,
                        path: path.unwrap_or_else(|| HealthCheck::DEFAULT_PATH.to_string()),
                        status,
                    }
                }
            }
        };
        Some(HealthCheck {
            probe,
            interval: interval?,
            timeout: timeout?,
            retries: retries?,
            start_period: start_period?,
        })
    }

    /// Checks that a tcp or http health check's container `port` is
    /// published over tcp: the agent probes through the host port.
    fn published(&mut self, loc: &Loc, port: u16, ports: &[PortMapping]) {
        if ports
            .iter()
            .any(|p| p.container_port == port && p.protocol == "tcp")
        {
            return;
        }
        let udp_only = if ports.iter().any(|p| p.container_port == port) {
            " over tcp (only over udp)"
        } else {
            ""
        };
        self.issue(
            loc,
            format!(
                "health port {port} is not published{udp_only}: the agent probes it through its host port, so add it to \"ports\", e.g. \"127.0.0.1:{port}:{port}\""
            ),
        );
    }

    /// A health check span: `what` is its key. `None` when it is invalid;
    /// `default` when it is not given.
    fn span(
        &mut self,
        what: &str,
        value: Option<L<String>>,
        zero_ok: bool,
        default: Duration,
    ) -> Option<Duration> {
        let Some(value) = value else {
            return Some(default);
        };
        let why = match parse_span(&value.value) {
            Ok(span) if zero_ok || !span.is_zero() => return Some(span),
            Ok(_) => String::from("must be greater than zero"),
            Err(why) => why,
        };
        self.issue(
            &value.loc,
            format!("invalid health {what} {:?}: {why}", value.value),
        );
        None
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

/// The service's component names, for `depends_on`.
struct ComponentNames {
    /// Per component in order; `None` when it has no name.
    names: Vec<Option<String>>,
    /// Where each name first appears.
    index: HashMap<String, usize>,
}

impl ComponentNames {
    fn new(names: Vec<Option<String>>) -> ComponentNames {
        let mut index = HashMap::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            if let Some(name) = name {
                index.entry(name.clone()).or_insert(i);
            }
        }
        ComponentNames { names, index }
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visit {
    New,
    /// On the walk's path, at this depth.
    OnPath(usize),
    Done,
}

/// Every cycle of the `depends_on` graph `edges` (per component: the
/// components it depends on, with the entry's place), found by a depth-first
/// walk from each component in order, following entries in order. Each cycle
/// is the components along it, the first repeated at the end, and the entry
/// that closes it. The walk keeps its own stack: no recursion, however long
/// the chain.
fn cycles<'a>(edges: &'a [Vec<(usize, &'a Loc)>]) -> Vec<(Vec<usize>, &'a Loc)> {
    let mut state = vec![Visit::New; edges.len()];
    let mut cycles = Vec::new();
    // The path walked: each component and how many of its entries are done.
    let mut path: Vec<(usize, usize)> = Vec::new();
    for root in 0..edges.len() {
        if state[root] != Visit::New {
            continue;
        }
        state[root] = Visit::OnPath(0);
        path.push((root, 0));
        while let Some((i, next)) = path.last_mut() {
            let i = *i;
            let Some(&(j, loc)) = edges[i].get(*next) else {
                state[i] = Visit::Done;
                path.pop();
                continue;
            };
            *next += 1;
            match state[j] {
                Visit::New => {
                    state[j] = Visit::OnPath(path.len());
                    path.push((j, 0));
                }
                Visit::OnPath(depth) => {
                    let mut cycle: Vec<usize> = path[depth..].iter().map(|&(k, _)| k).collect();
                    cycle.push(j);
                    cycles.push((cycle, loc));
                }
                Visit::Done => {}
            }
        }
    }
    cycles
}
