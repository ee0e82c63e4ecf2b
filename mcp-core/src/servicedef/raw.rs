//! The definition as read, before validation: every value carries where it
//! came from ([`Loc`]): a byte span in a TOML file, or a field path in a
//! protobuf request. Both readers produce this model, and one validator
//! ([`super::validate`]) turns it into a [`super::ServiceDef`], so a file and
//! a request are held to exactly the same rules.

use std::collections::BTreeMap;
use std::ops::Range;

use mcp_proto::v1 as pb;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Loc {
    /// Byte range in the TOML source.
    Span(Range<usize>),
    /// Field path in a request, e.g. `components[1].ports[0]`.
    Field(String),
}

impl Loc {
    /// Orders issues: earliest in the file first; request issues keep the
    /// order they were found in.
    pub(crate) fn sort_key(&self) -> usize {
        match self {
            Loc::Span(span) => span.start,
            Loc::Field(_) => 0,
        }
    }
}

/// One problem found in a definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    pub loc: Loc,
    pub message: String,
    /// Something required is absent (as opposed to present and wrong).
    pub missing: bool,
}

impl Issue {
    /// A key or value that is present and wrong.
    pub(crate) fn new(loc: &Loc, message: impl Into<String>) -> Issue {
        Issue {
            loc: loc.clone(),
            message: message.into(),
            missing: false,
        }
    }

    /// Something required that is absent; `loc` is its container.
    pub(crate) fn missing(loc: &Loc, message: impl Into<String>) -> Issue {
        Issue {
            missing: true,
            ..Issue::new(loc, message)
        }
    }
}

/// The issue to report: a wrong value before an absent one (which can only
/// point at its container), then the earliest in the file (or the first in
/// request order).
pub(crate) fn earliest(issues: Vec<Issue>) -> Option<Issue> {
    issues
        .into_iter()
        .min_by_key(|i| (i.missing, i.loc.sort_key()))
}

/// A value and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct L<T> {
    pub value: T,
    pub loc: Loc,
}

/// A memory size as written: text, or (in TOML) a plain integer.
#[derive(Debug, Clone)]
pub(crate) enum MemoryValue {
    Text(String),
    Bytes(i64),
}

#[derive(Debug, Clone)]
pub(crate) struct RawService {
    /// The whole document or request, for "missing" issues.
    pub loc: Loc,
    pub name: Option<L<String>>,
    pub active: Option<L<bool>>,
    pub node: Option<L<String>>,
    pub tier: Option<L<String>>,
    /// Where `components` is, when given.
    pub components_loc: Option<Loc>,
    pub components: Vec<RawComponent>,
}

#[derive(Debug, Clone)]
pub(crate) struct RawComponent {
    /// The component's table (its `[[components]]` header).
    pub loc: Loc,
    pub name: Option<L<String>>,
    pub image: Option<L<String>>,
    pub runtime: Option<L<String>>,
    pub cmd: Vec<String>,
    /// Keys (with their locations) and values.
    pub env: Vec<(L<String>, String)>,
    pub ports: Vec<L<String>>,
    pub volumes: Vec<L<String>>,
    pub network: Option<L<String>>,
    pub user: Option<L<String>>,
    pub restart: Option<L<String>>,
    pub memory: Option<L<MemoryValue>>,
    pub vcpus: Option<L<i64>>,
    pub routes: Vec<RawRoute>,
    pub kernel: Option<L<String>>,
    pub initrd: Option<L<String>>,
    pub append: Option<L<String>>,
    pub health: Option<RawHealth>,
    pub depends_on: Vec<L<String>>,
}

/// A `[components.health]` table (or a request's `health` message).
#[derive(Debug, Clone)]
pub(crate) struct RawHealth {
    /// The table (its `[components.health]` header).
    pub loc: Loc,
    /// The keys given, each with where the key itself is: a key that does
    /// not belong to the kind is reported there.
    pub keys: Vec<(&'static str, Loc)>,
    pub kind: Option<L<String>>,
    pub command: Option<L<Vec<String>>>,
    pub port: Option<L<i64>>,
    pub path: Option<L<String>>,
    pub status: Option<L<i64>>,
    /// Spans, as written (parsed by the validator).
    pub interval: Option<L<String>>,
    pub timeout: Option<L<String>>,
    pub retries: Option<L<i64>>,
    pub start_period: Option<L<String>>,
}

#[derive(Debug, Clone)]
pub(crate) struct RawRoute {
    pub loc: Loc,
    pub hostname: Option<L<String>>,
    pub port: Option<L<i64>>,
    pub public: Option<L<bool>>,
}

const SERVICE_KEYS: &[&str] = &["name", "active", "node", "tier", "components"];
const COMPONENT_KEYS: &[&str] = &[
    "name",
    "image",
    "runtime",
    "cmd",
    "env",
    "ports",
    "volumes",
    "network",
    "user",
    "restart",
    "memory",
    "vcpus",
    "routes",
    "kernel",
    "initrd",
    "append",
    "health",
    "depends_on",
];
const ROUTE_KEYS: &[&str] = &["hostname", "port", "public"];
pub(crate) const HEALTH_KEYS: &[&str] = &[
    "kind",
    "command",
    "port",
    "path",
    "status",
    "interval",
    "timeout",
    "retries",
    "start_period",
];
/// What a span's type error expects.
const A_SPAN: &str = "a span such as \"10s\"";

/// Reads a TOML document into the raw model. Syntax errors, unknown keys and
/// values of the wrong type are reported here; the earliest one wins.
pub(crate) fn from_toml(source: &str) -> Result<RawService, Issue> {
    let doc = DeTable::parse(source).map_err(|e| {
        Issue::new(
            &Loc::Span(e.span().unwrap_or(0..0)),
            format!("syntax error: {}", e.message()),
        )
    })?;
    let mut reader = TomlReader::default();
    let service = reader.service(doc.get_ref(), doc.span());
    match earliest(reader.issues) {
        Some(issue) => Err(issue),
        None => Ok(service),
    }
}

#[derive(Default)]
struct TomlReader {
    issues: Vec<Issue>,
}

type Entry<'a, 'i> = (
    &'a Spanned<std::borrow::Cow<'i, str>>,
    &'a Spanned<DeValue<'i>>,
);

fn span_loc<T>(s: &Spanned<T>) -> Loc {
    Loc::Span(s.span())
}

/// `"a string"`, `"an integer"`, ... for type errors.
fn a_type(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl TomlReader {
    fn type_error(&mut self, key: &str, expected: &str, value: &Spanned<DeValue<'_>>) {
        self.issues.push(Issue::new(
            &span_loc(value),
            format!(
                "invalid type for {key:?}: expected {expected}, found {}",
                a_type(value.get_ref())
            ),
        ));
    }

    fn unknown_key(&mut self, (key, _): Entry<'_, '_>, context: &str, allowed: &[&str]) {
        self.issues.push(Issue::new(
            &span_loc(key),
            format!(
                "unknown key {:?} in {context}; expected one of: {}",
                key.get_ref(),
                allowed.join(", ")
            ),
        ));
    }

    fn string(&mut self, key: &str, value: &Spanned<DeValue<'_>>) -> Option<L<String>> {
        match value.get_ref() {
            DeValue::String(s) => Some(L {
                value: s.to_string(),
                loc: span_loc(value),
            }),
            _ => {
                self.type_error(key, "a string", value);
                None
            }
        }
    }

    fn boolean(&mut self, key: &str, value: &Spanned<DeValue<'_>>) -> Option<L<bool>> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(L {
                value: *b,
                loc: span_loc(value),
            }),
            _ => {
                self.type_error(key, "a boolean", value);
                None
            }
        }
    }

    fn integer(&mut self, key: &str, value: &Spanned<DeValue<'_>>) -> Option<L<i64>> {
        match value.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(L {
                    value: n,
                    loc: span_loc(value),
                }),
                Err(_) => {
                    self.issues.push(Issue::new(
                        &span_loc(value),
                        format!("invalid {key:?}: {i} does not fit in 64 bits"),
                    ));
                    None
                }
            },
            _ => {
                self.type_error(key, "an integer", value);
                None
            }
        }
    }

    fn strings(&mut self, key: &str, value: &Spanned<DeValue<'_>>) -> Vec<L<String>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.type_error(key, "an array of strings", value);
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.string(&format!("{key}[{i}]"), item))
            .collect()
    }

    /// The tables of an array of tables (`[[key]]` or `[{...}, ...]`).
    fn tables<'a, 'i>(
        &mut self,
        key: &str,
        value: &'a Spanned<DeValue<'i>>,
    ) -> Vec<(Loc, &'a DeTable<'i>)> {
        let DeValue::Array(items) = value.get_ref() else {
            self.type_error(key, &format!("an array of tables ([[{key}]])"), value);
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::Table(t) => out.push((span_loc(item), t)),
                _ => self.type_error(&format!("{key}[{i}]"), "a table", item),
            }
        }
        out
    }

    fn service(&mut self, root: &DeTable<'_>, span: Range<usize>) -> RawService {
        let mut svc = RawService {
            loc: Loc::Span(span.start..span.start),
            name: None,
            active: None,
            node: None,
            tier: None,
            components_loc: None,
            components: Vec::new(),
        };
        for entry @ (key, value) in root.iter() {
            match key.get_ref().as_ref() {
                "name" => svc.name = self.string("name", value),
                "active" => svc.active = self.boolean("active", value),
                "node" => svc.node = self.string("node", value),
                "tier" => svc.tier = self.string("tier", value),
                "components" => {
                    svc.components_loc = Some(span_loc(value));
                    for (loc, table) in self.tables("components", value) {
                        let component = self.component(loc, table);
                        svc.components.push(component);
                    }
                }
                _ => self.unknown_key(entry, "the service", SERVICE_KEYS),
            }
        }
        // Array-of-tables entries come in file order already; keep that.
        svc
    }

    fn component(&mut self, loc: Loc, table: &DeTable<'_>) -> RawComponent {
        let mut c = RawComponent {
            loc,
            name: None,
            image: None,
            runtime: None,
            cmd: Vec::new(),
            env: Vec::new(),
            ports: Vec::new(),
            volumes: Vec::new(),
            network: None,
            user: None,
            restart: None,
            memory: None,
            vcpus: None,
            routes: Vec::new(),
            kernel: None,
            initrd: None,
            append: None,
            health: None,
            depends_on: Vec::new(),
        };
        for entry @ (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "name" => c.name = self.string("name", value),
                "image" => c.image = self.string("image", value),
                "runtime" => c.runtime = self.string("runtime", value),
                "cmd" => {
                    c.cmd = self
                        .strings("cmd", value)
                        .into_iter()
                        .map(|s| s.value)
                        .collect();
                }
                "env" => c.env = self.env(value),
                "ports" => c.ports = self.strings("ports", value),
                "volumes" => c.volumes = self.strings("volumes", value),
                "network" => c.network = self.string("network", value),
                "user" => c.user = self.string("user", value),
                "restart" => c.restart = self.string("restart", value),
                "memory" => {
                    c.memory = match value.get_ref() {
                        DeValue::Integer(_) => self.integer("memory", value).map(|n| L {
                            value: MemoryValue::Bytes(n.value),
                            loc: n.loc,
                        }),
                        DeValue::String(_) => self.string("memory", value).map(|s| L {
                            value: MemoryValue::Text(s.value),
                            loc: s.loc,
                        }),
                        _ => {
                            self.type_error("memory", "a string such as \"256M\"", value);
                            None
                        }
                    }
                }
                "vcpus" => c.vcpus = self.integer("vcpus", value),
                "kernel" => c.kernel = self.string("kernel", value),
                "initrd" => c.initrd = self.string("initrd", value),
                "append" => c.append = self.string("append", value),
                "health" => c.health = self.health(value),
                "depends_on" => c.depends_on = self.strings("depends_on", value),
                "routes" => {
                    for (loc, table) in self.tables("routes", value) {
                        let route = self.route(loc, table);
                        c.routes.push(route);
                    }
                }
                _ => self.unknown_key(entry, "a component", COMPONENT_KEYS),
            }
        }
        c
    }

    fn env(&mut self, value: &Spanned<DeValue<'_>>) -> Vec<(L<String>, String)> {
        let DeValue::Table(table) = value.get_ref() else {
            self.type_error("env", "a table of strings", value);
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, value) in table.iter() {
            let name = key.get_ref().to_string();
            if let Some(v) = self.string(&format!("env.{name}"), value) {
                out.push((
                    L {
                        value: name,
                        loc: span_loc(key),
                    },
                    v.value,
                ));
            }
        }
        out
    }

    fn span(&mut self, key: &str, value: &Spanned<DeValue<'_>>) -> Option<L<String>> {
        match value.get_ref() {
            DeValue::String(_) => self.string(key, value),
            _ => {
                self.type_error(key, A_SPAN, value);
                None
            }
        }
    }

    fn health(&mut self, value: &Spanned<DeValue<'_>>) -> Option<RawHealth> {
        let DeValue::Table(table) = value.get_ref() else {
            self.type_error("health", "a table ([components.health])", value);
            return None;
        };
        let mut h = RawHealth {
            loc: span_loc(value),
            keys: Vec::new(),
            kind: None,
            command: None,
            port: None,
            path: None,
            status: None,
            interval: None,
            timeout: None,
            retries: None,
            start_period: None,
        };
        for entry @ (key, value) in table.iter() {
            let Some(&name) = HEALTH_KEYS.iter().find(|k| **k == key.get_ref().as_ref()) else {
                self.unknown_key(entry, "a health check", HEALTH_KEYS);
                continue;
            };
            h.keys.push((name, span_loc(key)));
            match name {
                "kind" => h.kind = self.string("health.kind", value),
                "command" => {
                    h.command = match value.get_ref() {
                        DeValue::Array(_) => {
                            let argv = self.strings("health.command", value);
                            Some(L {
                                value: argv.into_iter().map(|s| s.value).collect(),
                                loc: span_loc(value),
                            })
                        }
                        _ => {
                            self.type_error(
                                "health.command",
                                "an array of strings (the program and its arguments; no shell)",
                                value,
                            );
                            None
                        }
                    }
                }
                "port" => h.port = self.integer("health.port", value),
                "path" => h.path = self.string("health.path", value),
                "status" => h.status = self.integer("health.status", value),
                "interval" => h.interval = self.span("health.interval", value),
                "timeout" => h.timeout = self.span("health.timeout", value),
                "retries" => h.retries = self.integer("health.retries", value),
                "start_period" => h.start_period = self.span("health.start_period", value),
                _ => {}
            }
        }
        Some(h)
    }

    fn route(&mut self, loc: Loc, table: &DeTable<'_>) -> RawRoute {
        let mut r = RawRoute {
            loc,
            hostname: None,
            port: None,
            public: None,
        };
        for entry @ (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "hostname" => r.hostname = self.string("hostname", value),
                "port" => r.port = self.integer("port", value),
                "public" => r.public = self.boolean("public", value),
                _ => self.unknown_key(entry, "a route", ROUTE_KEYS),
            }
        }
        r
    }
}

/// Reads a request's `ServiceSpec` into the raw model. Empty strings (and a
/// zero `vcpus`) are proto3's "not set"; `image` is required, so an empty one
/// is kept (and rejected) unless `kernel` is set, which makes it optional.
pub(crate) fn from_proto(spec: &pb::ServiceSpec) -> RawService {
    let at = |path: String| Loc::Field(path);
    let some = |value: &str, path: String| L {
        value: value.to_string(),
        loc: at(path),
    };
    let optional = |value: &str, path: String| (!value.is_empty()).then(|| some(value, path));

    let components = spec
        .components
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let p = |field: &str| format!("components[{i}].{field}");
            // Sorted, so issues come in the same order every time.
            let env: BTreeMap<&String, &String> = c.env.iter().collect();
            RawComponent {
                loc: at(format!("components[{i}]")),
                name: Some(some(&c.name, p("name"))),
                image: if c.kernel.is_empty() {
                    Some(some(&c.image, p("image")))
                } else {
                    optional(&c.image, p("image"))
                },
                runtime: optional(&c.runtime, p("runtime")),
                cmd: c.cmd.clone(),
                env: env
                    .into_iter()
                    .map(|(k, v)| (some(k, p(&format!("env[{k:?}]"))), v.clone()))
                    .collect(),
                ports: c
                    .ports
                    .iter()
                    .enumerate()
                    .map(|(j, s)| some(s, p(&format!("ports[{j}]"))))
                    .collect(),
                volumes: c
                    .volumes
                    .iter()
                    .enumerate()
                    .map(|(j, s)| some(s, p(&format!("volumes[{j}]"))))
                    .collect(),
                network: optional(&c.network, p("network")),
                user: optional(&c.user, p("user")),
                restart: optional(&c.restart, p("restart")),
                memory: (!c.memory.is_empty()).then(|| L {
                    value: MemoryValue::Text(c.memory.clone()),
                    loc: at(p("memory")),
                }),
                vcpus: (c.vcpus != 0).then(|| L {
                    value: i64::from(c.vcpus),
                    loc: at(p("vcpus")),
                }),
                routes: c
                    .routes
                    .iter()
                    .enumerate()
                    .map(|(j, r)| {
                        let rp = |field: &str| p(&format!("routes[{j}].{field}"));
                        RawRoute {
                            loc: at(p(&format!("routes[{j}]"))),
                            hostname: Some(some(&r.hostname, rp("hostname"))),
                            port: Some(L {
                                value: i64::from(r.port),
                                loc: at(rp("port")),
                            }),
                            public: Some(L {
                                value: r.public,
                                loc: at(rp("public")),
                            }),
                        }
                    })
                    .collect(),
                kernel: optional(&c.kernel, p("kernel")),
                initrd: optional(&c.initrd, p("initrd")),
                append: optional(&c.append, p("append")),
                health: c
                    .health
                    .as_ref()
                    .map(|h| health_from_proto(h, &p("health"))),
                depends_on: c
                    .depends_on
                    .iter()
                    .enumerate()
                    .map(|(j, s)| some(s, p(&format!("depends_on[{j}]"))))
                    .collect(),
            }
        })
        .collect();

    RawService {
        loc: at("service".into()),
        name: Some(some(&spec.name, "name".into())),
        active: Some(L {
            value: spec.active,
            loc: at("active".into()),
        }),
        node: optional(&spec.node, "node".into()),
        tier: optional(&spec.tier, "tier".into()),
        components_loc: Some(at("components".into())),
        components,
    }
}

/// Reads a request's `HealthCheck` (at field path `at`) into the raw
/// model. Empty strings, an empty `command` and zero numbers are "not set".
fn health_from_proto(h: &pb::HealthCheck, at: &str) -> RawHealth {
    let mut keys: Vec<(&'static str, Loc)> = Vec::new();
    let mut field = |key: &'static str, set: bool| {
        set.then(|| {
            let loc = Loc::Field(format!("{at}.{key}"));
            keys.push((key, loc.clone()));
            loc
        })
    };
    let text = |value: &str, loc: Option<Loc>| {
        loc.map(|loc| L {
            value: value.to_string(),
            loc,
        })
    };
    let number = |value: u32, loc: Option<Loc>| {
        loc.map(|loc| L {
            value: i64::from(value),
            loc,
        })
    };
    let kind = text(&h.kind, field("kind", !h.kind.is_empty()));
    let command = field("command", !h.command.is_empty()).map(|loc| L {
        value: h.command.clone(),
        loc,
    });
    let port = number(h.port, field("port", h.port != 0));
    let path = text(&h.path, field("path", !h.path.is_empty()));
    let status = number(h.status, field("status", h.status != 0));
    let interval = text(&h.interval, field("interval", !h.interval.is_empty()));
    let timeout = text(&h.timeout, field("timeout", !h.timeout.is_empty()));
    let retries = number(h.retries, field("retries", h.retries != 0));
    let start_period = text(
        &h.start_period,
        field("start_period", !h.start_period.is_empty()),
    );
    RawHealth {
        loc: Loc::Field(at.to_string()),
        keys,
        kind,
        command,
        port,
        path,
        status,
        interval,
        timeout,
        retries,
        start_period,
    }
}
