//! The service definition API as other crates see it: parse a full
//! definition, round-trip it through the wire form, and edit `active` in
//! place.

use std::fs;
use std::path::Path;

use mcp_core::instance::{PortMapping, RuntimeKind, VolumeMount};
use mcp_core::servicedef::{self, Memory, RouteDef, ServiceDef, ServiceDefError, Tier};

/// SPEC section 3's example, with a second component.
const METACRYPT: &str = r#"name   = "metacrypt"        # [a-z0-9][a-z0-9-]*, max 63
active = true               # desired state; `mcp stop`/`mcp start` rewrite this line only
node   = "rift"             # optional: pin to a node (v2) / pick the target node (v1)
tier   = "worker"           # v2: "core" (master's node) | "worker" (default, auto-placed)

[[components]]
name    = "api"             # container name is <service>-<component>: metacrypt-api
image   = "registry.example:5000/metacrypt:1.4"
runtime = "container"       # "container" (default, podman) | "unikernel" (QEMU)
cmd     = ["serve", "--config", "/srv/metacrypt/metacrypt.toml"]
env     = { RUST_LOG = "info" }
ports   = ["127.0.0.1:8443:8443"]        # host-ip:host-port:container-port[/proto]
volumes = ["/srv/metacrypt:/srv/metacrypt:rw"]
network = "mcnet"           # optional
user    = "0:0"             # optional
restart = "unless-stopped"  # podman restart policy
memory  = "256M"            # unikernel (and container limit when set)
vcpus   = 1                 # unikernel

[[components.routes]]       # v2 edge routing
hostname = "metacrypt.example"
port     = 8443
public   = true

[[components]]
name    = "vault"
image   = "registry.example:5000/metacrypt-vault.img"
runtime = "unikernel"
ports   = ["127.0.0.2:9000:9000/udp"]
memory  = "1GiB"
vcpus   = 2
"#;

fn parse_full() -> ServiceDef {
    servicedef::parse(METACRYPT, Path::new("metacrypt.toml")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn parses_every_field() {
    let def = parse_full();
    assert_eq!(def.name, "metacrypt");
    assert!(def.active);
    assert_eq!(def.node.as_deref(), Some("rift"));
    assert_eq!(def.tier, Tier::Worker);
    assert_eq!(def.components.len(), 2);

    let api = &def.components[0];
    assert_eq!(api.name, "api");
    assert_eq!(api.image, "registry.example:5000/metacrypt:1.4");
    assert_eq!(api.runtime, RuntimeKind::Container);
    assert_eq!(
        api.cmd,
        ["serve", "--config", "/srv/metacrypt/metacrypt.toml"]
    );
    assert_eq!(api.env.get("RUST_LOG").map(String::as_str), Some("info"));
    assert_eq!(
        api.ports,
        [PortMapping {
            host_ip: "127.0.0.1".into(),
            host_port: 8443,
            container_port: 8443,
            protocol: "tcp".into(),
        }]
    );
    assert_eq!(
        api.volumes,
        [VolumeMount {
            source: "/srv/metacrypt".into(),
            destination: "/srv/metacrypt".into(),
            options: vec!["rw".into()],
        }]
    );
    assert_eq!(api.network.as_deref(), Some("mcnet"));
    assert_eq!(api.user.as_deref(), Some("0:0"));
    assert_eq!(api.restart.as_deref(), Some("unless-stopped"));
    assert_eq!(api.memory, Some(Memory::parse("256M").expect("memory")));
    assert_eq!(api.memory.as_ref().map(Memory::bytes), Some(268_435_456));
    assert_eq!(api.vcpus, Some(1));
    assert_eq!(
        api.routes,
        [RouteDef {
            hostname: "metacrypt.example".into(),
            port: 8443,
            public: true,
        }]
    );

    let vault = def.component("vault").expect("vault");
    assert_eq!(vault.runtime, RuntimeKind::Unikernel);
    assert_eq!(vault.ports[0].host_ip, "127.0.0.2");
    assert_eq!(vault.ports[0].protocol, "udp");
    assert_eq!(vault.memory.as_ref().map(Memory::bytes), Some(1 << 30));
    assert!(vault.routes.is_empty());

    let spec = vault.instance_spec(&def.name);
    assert_eq!(spec.name, "metacrypt-vault");
    assert_eq!(spec.memory_bytes, Some(1 << 30));
    assert_eq!(
        spec.labels.get(mcp_core::instance::labels::SPEC_HASH),
        Some(&vault.spec_hash())
    );
}

#[test]
fn proto_round_trip_is_lossless() {
    let def = parse_full();
    let spec = def.to_proto();
    assert_eq!(spec.name, "metacrypt");
    assert_eq!(spec.node, "rift");
    assert_eq!(spec.components[0].ports, ["127.0.0.1:8443:8443"]);
    assert_eq!(
        spec.components[0].volumes,
        ["/srv/metacrypt:/srv/metacrypt:rw"]
    );
    assert_eq!(spec.components[1].ports, ["127.0.0.2:9000:9000/udp"]);
    assert_eq!(spec.components[1].memory, "1GiB");
    assert_eq!(spec.components[1].runtime, "unikernel");
    let back = ServiceDef::from_proto(&spec).expect("valid on the wire");
    assert_eq!(back, def);
    assert_eq!(back.to_proto(), spec);
}

#[test]
fn invalid_request_names_the_field() {
    let mut spec = parse_full().to_proto();
    spec.components[1].ports = vec!["9000:9000".into(), "8080:abc".into()];
    let err = ServiceDef::from_proto(&spec).expect_err("bad port");
    assert_eq!(err.file(), "<request>");
    assert_eq!(err.line(), None);
    assert_eq!(
        err.to_string(),
        "<request>: components[1].ports[1]: invalid port \"8080:abc\": container port \"abc\" is not a number"
    );
}

#[test]
fn errors_point_into_the_file() {
    let src = METACRYPT.replace(
        r#"ports   = ["127.0.0.1:8443:8443"]"#,
        r#"ports   = ["8080:abc"]"#,
    );
    let err = servicedef::parse(&src, Path::new("services/metacrypt.toml")).expect_err("bad port");
    assert_eq!(err.file(), "services/metacrypt.toml");
    assert_eq!((err.line(), err.col()), (Some(12), Some(12)));
    assert_eq!(
        err.to_string(),
        "services/metacrypt.toml:12:12: invalid port \"8080:abc\": container port \"abc\" is not a number"
    );
    assert!(matches!(err, ServiceDefError::Invalid { .. }));
}

#[test]
fn set_active_changes_only_the_value() {
    let stopped = servicedef::set_active(METACRYPT, false).expect("set_active");
    assert_eq!(
        stopped,
        METACRYPT.replacen("active = true", "active = false", 1)
    );
    assert!(
        !servicedef::parse(&stopped, Path::new("m.toml"))
            .expect("still valid")
            .active
    );
    assert_eq!(
        servicedef::set_active(&stopped, true).expect("back"),
        METACRYPT
    );
}

#[test]
fn write_active_rewrites_the_file_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metacrypt.toml");
    fs::write(&path, METACRYPT).expect("write");

    servicedef::write_active(&path, false).expect("stop");
    let def = servicedef::load(&path).expect("load");
    assert!(!def.active);
    let text = fs::read_to_string(&path).expect("read");
    assert_eq!(
        text,
        METACRYPT.replacen("active = true", "active = false", 1)
    );

    servicedef::write_active(&path, true).expect("start");
    assert_eq!(fs::read_to_string(&path).expect("read"), METACRYPT);
}

#[test]
fn load_names_a_missing_file() {
    let err = servicedef::load(Path::new("/nonexistent/dir/svc.toml")).expect_err("missing");
    assert!(err.is_io());
    assert_eq!(err.file(), "/nonexistent/dir/svc.toml");
    assert!(
        err.to_string()
            .starts_with("/nonexistent/dir/svc.toml: cannot read"),
        "{err}"
    );
}

#[test]
fn load_dir_reads_every_definition_and_refuses_misnamed_files() {
    let dir = tempfile::tempdir().unwrap();
    let def =
        |name: &str| format!("name = \"{name}\"\n[[components]]\nname = \"c\"\nimage = \"i\"\n");
    std::fs::write(dir.path().join("b.toml"), def("b")).unwrap();
    std::fs::write(dir.path().join("a.toml"), def("a")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a definition").unwrap();
    let defs = mcp_core::servicedef::load_dir(dir.path()).unwrap();
    let names: Vec<&str> = defs.iter().map(|(_, d)| d.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    // A second definition of `a`, in a file of another name: refused at its
    // name, with both names, since `mcp status a` looks for a.toml.
    let c = dir.path().join("c.toml");
    std::fs::write(&c, def("a")).unwrap();
    let err = mcp_core::servicedef::load_dir(dir.path())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "{}:1:8: name \"a\" differs from the file name \"c.toml\": a service is found as <services_dir>/<name>.toml; rename the file to a.toml or set name = \"c\"",
            c.display()
        )
    );
    // The same from load_named, the loader of one file of the directory.
    let err = mcp_core::servicedef::load_named(&c).unwrap_err();
    assert_eq!((err.line(), err.col()), (Some(1), Some(8)));
    assert!(
        mcp_core::servicedef::load(&c).is_ok(),
        "any file may be loaded by path"
    );
    std::fs::write(dir.path().join("c.toml"), "name = \"c\"\nbogus = 1\n").unwrap();
    let err = mcp_core::servicedef::load_dir(dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("c.toml:2:1:"), "{err}");
}

#[test]
fn load_dir_refuses_two_services_that_would_share_an_instance_name() {
    let dir = tempfile::tempdir().unwrap();
    // `ux` with `web-db` and `ux-web` with `db` are both `ux-web-db`.
    std::fs::write(
        dir.path().join("ux.toml"),
        "name = \"ux\"\n\n[[components]]\nname = \"api\"\nimage = \"i\"\n\n[[components]]\nname = \"web-db\"\nimage = \"i\"\n",
    )
    .unwrap();
    let other = dir.path().join("ux-web.toml");
    std::fs::write(
        &other,
        "name = \"ux-web\"\n[[components]]\nname = \"db\"\nimage = \"i\"\n",
    )
    .unwrap();
    let err = servicedef::load_dir(dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:8:8: component \"web-db\" of service \"ux\" and component \"db\" of service \"ux-web\" would both be the instance ux-web-db: rename one of them (in {})",
            dir.path().join("ux.toml").display(),
            other.display()
        )
    );
    let defs = [
        servicedef::load(&dir.path().join("ux.toml")).unwrap(),
        servicedef::load(&other).unwrap(),
    ];
    assert_eq!(
        servicedef::shared_instance_name(&defs),
        Some(((0, "web-db"), (1, "db")))
    );
    assert_eq!(servicedef::shared_instance_name(&defs[..1]), None);
}
