//! Writing a [`ServiceDef`] as a definition file: the inverse of
//! [`super::parse`], used by `mcp adopt --write`. Only what differs from the
//! defaults is written, and `parse(to_toml(def))` gives `def` back.

use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, value};

use super::values::format_span;
use super::{HealthCheck, HealthProbe, ServiceDef, Tier, format_port, format_volume};
use crate::instance::RuntimeKind;

fn strings<'a>(items: impl IntoIterator<Item = &'a str>) -> Array {
    let mut a = Array::new();
    for s in items {
        a.push(s);
    }
    a
}

/// The definition as TOML text.
pub fn to_toml(def: &ServiceDef) -> String {
    let mut doc = DocumentMut::new();
    doc["name"] = value(def.name.as_str());
    doc["active"] = value(def.active);
    if let Some(node) = &def.node {
        doc["node"] = value(node.as_str());
    }
    if def.tier != Tier::default() {
        doc["tier"] = value(def.tier.as_str());
    }
    let mut components = ArrayOfTables::new();
    for c in &def.components {
        let mut t = Table::new();
        t["name"] = value(c.name.as_str());
        // Empty only with a kernel: no extra disk, so no `image` key.
        if !c.image.is_empty() || c.kernel.is_none() {
            t["image"] = value(c.image.as_str());
        }
        if c.runtime == RuntimeKind::Unikernel {
            t["runtime"] = value("unikernel");
        }
        for (key, v) in [
            ("kernel", &c.kernel),
            ("initrd", &c.initrd),
            ("append", &c.append),
        ] {
            if let Some(v) = v {
                t[key] = value(v.as_str());
            }
        }
        if !c.cmd.is_empty() {
            t["cmd"] = value(strings(c.cmd.iter().map(String::as_str)));
        }
        if !c.env.is_empty() {
            let mut env = InlineTable::new();
            for (k, v) in &c.env {
                env.insert(k, v.as_str().into());
            }
            t["env"] = value(env);
        }
        if !c.ports.is_empty() {
            let ports: Vec<String> = c.ports.iter().map(format_port).collect();
            t["ports"] = value(strings(ports.iter().map(String::as_str)));
        }
        if !c.volumes.is_empty() {
            let volumes: Vec<String> = c.volumes.iter().map(format_volume).collect();
            t["volumes"] = value(strings(volumes.iter().map(String::as_str)));
        }
        for (key, v) in [
            ("network", &c.network),
            ("user", &c.user),
            ("restart", &c.restart),
        ] {
            if let Some(v) = v {
                t[key] = value(v.as_str());
            }
        }
        if let Some(m) = &c.memory {
            t["memory"] = value(m.to_string());
        }
        if let Some(n) = c.vcpus {
            t["vcpus"] = value(i64::from(n));
        }
        if !c.depends_on.is_empty() {
            t["depends_on"] = value(strings(c.depends_on.iter().map(String::as_str)));
        }
        if let Some(health) = &c.health {
            t["health"] = Item::Table(health_table(health));
        }
        if !c.routes.is_empty() {
            let mut routes = ArrayOfTables::new();
            for r in &c.routes {
                let mut rt = Table::new();
                rt["hostname"] = value(r.hostname.as_str());
                rt["port"] = value(i64::from(r.port));
                if r.public {
                    rt["public"] = value(true);
                }
                routes.push(rt);
            }
            t["routes"] = Item::ArrayOfTables(routes);
        }
        components.push(t);
    }
    doc["components"] = Item::ArrayOfTables(components);
    doc.to_string()
}

/// A health check as its `[components.health]` table: the kind, its keys,
/// and the settings that differ from their defaults.
fn health_table(h: &HealthCheck) -> Table {
    let mut t = Table::new();
    t["kind"] = value(h.probe.kind());
    match &h.probe {
        HealthProbe::Command { argv } => {
            t["command"] = value(strings(argv.iter().map(String::as_str)));
        }
        HealthProbe::Tcp { port } => t["port"] = value(i64::from(*port)),
        HealthProbe::Http { port, path, status } => {
            t["port"] = value(i64::from(*port));
            if path != HealthCheck::DEFAULT_PATH {
                t["path"] = value(path.as_str());
            }
            if let Some(status) = status {
                t["status"] = value(i64::from(*status));
            }
        }
    }
    if h.interval != HealthCheck::DEFAULT_INTERVAL {
        t["interval"] = value(format_span(h.interval));
    }
    if h.timeout != HealthCheck::default_timeout(h.interval) {
        t["timeout"] = value(format_span(h.timeout));
    }
    if h.retries != HealthCheck::DEFAULT_RETRIES {
        t["retries"] = value(i64::from(h.retries));
    }
    if h.start_period != HealthCheck::DEFAULT_START_PERIOD {
        t["start_period"] = value(format_span(h.start_period));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn written_definitions_parse_back_equal() {
        let text = r#"name = "metacrypt"
active = false
node = "rift"
tier = "core"

[[components]]
name = "api"
image = "registry.example:5000/metacrypt:1.4"
cmd = ["serve", "--config", "/srv/x y/\"q\".toml", "$(touch x); rm -rf /"]
env = { RUST_LOG = "info", WEIRD = "a\nb\tc \"q\" $(x)" }
ports = ["127.0.0.1:8443:8443", "[::1]:9000:9000/udp"]
volumes = ["/srv/metacrypt:/srv/metacrypt:rw"]
network = "mcnet"
user = "0:0"
restart = "on-failure:3"
memory = "256M"

[[components.routes]]
hostname = "metacrypt.example"
port = 8443
public = true

[[components]]
name = "vault"
image = "vault.img"
runtime = "unikernel"
vcpus = 2
memory = "1G"
"#;
        let def = super::super::parse(text, Path::new("a.toml")).unwrap_or_else(|e| panic!("{e}"));
        let written = to_toml(&def);
        let back = super::super::parse(&written, Path::new("b.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{written}"));
        assert_eq!(back, def, "{written}");
        for (a, b) in def.components.iter().zip(&back.components) {
            assert_eq!(a.spec_hash(), b.spec_hash());
        }
        let minimal = super::super::parse(
            "name = \"m\"\n[[components]]\nname = \"c\"\nimage = \"i\"\n",
            Path::new("m.toml"),
        )
        .unwrap();
        assert_eq!(
            to_toml(&minimal),
            "name = \"m\"\nactive = true\n\n[[components]]\nname = \"c\"\nimage = \"i\"\n"
        );
    }
}
