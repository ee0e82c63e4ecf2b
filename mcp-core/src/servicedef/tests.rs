//! Unit tests of parsing and validation: a table of bad definitions, each
//! with the exact position and message expected.

use std::path::Path;

use mcp_proto::v1 as pb;
use mcp_runtime::RuntimeKind;

use super::*;

/// The example from SPEC section 3.
const FULL: &str = r#"name   = "metacrypt"        # [a-z0-9][a-z0-9-]*, max 63
active = true               # desired state
node   = "rift"             # optional
tier   = "worker"           # v2

[[components]]
name    = "api"             # container name is metacrypt-api
image   = "registry.example:5000/metacrypt:1.4"
runtime = "container"
cmd     = ["serve", "--config", "/srv/metacrypt/metacrypt.toml"]
env     = { RUST_LOG = "info" }
ports   = ["127.0.0.1:8443:8443"]
volumes = ["/srv/metacrypt:/srv/metacrypt:rw"]
network = "mcnet"
user    = "0:0"
restart = "unless-stopped"
memory  = "256M"
vcpus   = 1

[[components.routes]]
hostname = "metacrypt.example"
port     = 8443
public   = true
"#;

fn ok(src: &str) -> ServiceDef {
    parse(src, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn parses_the_spec_example() {
    let def = ok(FULL);
    assert_eq!(def.name, "metacrypt");
    assert!(def.active);
    assert_eq!(def.node.as_deref(), Some("rift"));
    assert_eq!(def.tier, Tier::Worker);
    let c = &def.components[0];
    assert_eq!(c.runtime, RuntimeKind::Container);
    assert_eq!(c.env.get("RUST_LOG").map(String::as_str), Some("info"));
    assert_eq!(c.ports[0].host_ip, "127.0.0.1");
    assert_eq!(c.volumes[0].options, ["rw"]);
    assert_eq!(c.memory.as_ref().map(Memory::bytes), Some(256 << 20));
    assert_eq!(c.vcpus, Some(1));
    assert_eq!(
        c.routes,
        [RouteDef {
            hostname: "metacrypt.example".into(),
            port: 8443,
            public: true
        }]
    );
}

#[test]
fn defaults() {
    let def = ok("name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\n");
    assert!(def.active, "active defaults to true");
    assert_eq!(def.node, None);
    assert_eq!(def.tier, Tier::Worker);
    let c = &def.components[0];
    assert_eq!(c.runtime, RuntimeKind::Container);
    assert!(c.cmd.is_empty() && c.env.is_empty() && c.ports.is_empty() && c.routes.is_empty());
    assert_eq!(
        (c.memory.clone(), c.vcpus, c.restart.clone()),
        (None, None, None)
    );

    // Inline arrays of tables work as well as [[components]].
    let def = ok(
        "name = \"a\"\ncomponents = [{ name = \"b\", image = \"i\", memory = 1048576, routes = [{ hostname = \"h\", port = 1 }] }]\n",
    );
    let c = &def.components[0];
    assert_eq!(c.memory.as_ref().map(Memory::text), Some("1048576"));
    assert!(!c.routes[0].public);
}

/// `(source, line, col, message substring)`.
const BAD: &[(&str, usize, usize, &str)] = &[
    // TOML syntax.
    ("name = \"a\nactive = true\n", 1, 10, "syntax error"),
    (
        "name = \"a\"\nname = \"b\"\n",
        2,
        1,
        "syntax error: duplicate key",
    ),
    ("name = \"a\"\n[[components]\n", 2, 14, "syntax error"),
    // Unknown keys, at the key.
    (
        "name = \"a\"\nactve = true\n",
        2,
        1,
        "unknown key \"actve\" in the service",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\n  imagee = \"j\"\n",
        5,
        3,
        "unknown key \"imagee\" in a component; expected one of: name, image",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\n[[components.routes]]\nhostname = \"h\"\nport = 1\npublik = true\n",
        8,
        1,
        "unknown key \"publik\" in a route",
    ),
    // Wrong types, at the value.
    (
        "name = 5\n",
        1,
        8,
        "invalid type for \"name\": expected a string, found an integer",
    ),
    (
        "name = \"a\"\nactive = \"yes\"\n",
        2,
        10,
        "expected a boolean, found a string",
    ),
    (
        "name = \"a\"\n[components]\nname = \"b\"\n",
        2,
        1,
        "expected an array of tables ([[components]]), found a table",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nports = [8080]\n",
        5,
        10,
        "invalid type for \"ports[0]\": expected a string, found an integer",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\ncmd = \"serve\"\n",
        5,
        7,
        "expected an array of strings, found a string",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nenv = { PORT = 8080 }\n",
        5,
        16,
        "invalid type for \"env.PORT\": expected a string, found an integer",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nvcpus = 1.5\n",
        5,
        9,
        "expected an integer, found a float",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nmemory = true\n",
        5,
        10,
        "invalid type for \"memory\"",
    ),
    // Service-level values.
    (
        "active = true\n[[components]]\nname = \"b\"\nimage = \"i\"\n",
        1,
        1,
        "missing required key \"name\"",
    ),
    (
        "name = \"Meta\"\n",
        1,
        8,
        "invalid service name \"Meta\": must start with",
    ),
    (
        "name = \"meta_crypt\"\n",
        1,
        8,
        "invalid service name \"meta_crypt\": contains '_'",
    ),
    (
        "name = \"\"\n",
        1,
        8,
        "invalid service name \"\": must not be empty",
    ),
    (
        "name = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n",
        1,
        8,
        "is 64 characters long, the limit is 63",
    ),
    ("name = \"a\"\n", 1, 1, "no components"),
    ("name = \"a\"\ncomponents = []\n", 2, 14, "no components"),
    (
        "name = \"a\"\ntier = \"edge\"\n[[components]]\nname = \"b\"\nimage = \"i\"\n",
        2,
        8,
        "invalid tier \"edge\": expected \"core\" or \"worker\"",
    ),
    (
        "name = \"a\"\nnode = \"\"\n[[components]]\nname = \"b\"\nimage = \"i\"\n",
        2,
        8,
        "invalid node \"\": must not be empty",
    ),
    // Components.
    (
        "name = \"a\"\n[[components]]\nimage = \"i\"\n",
        2,
        1,
        "component is missing required key \"name\"",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"Api\"\nimage = \"i\"\n",
        3,
        8,
        "invalid component name \"Api\"",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\n\n[[components]]\nname    = \"b\"\nimage = \"j\"\n",
        7,
        11,
        "duplicate component name \"b\"",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\n",
        2,
        1,
        "component \"b\" is missing required key \"image\"",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"\"\n",
        4,
        9,
        "image must not be empty",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nruntime = \"docker\"\n",
        5,
        11,
        "invalid runtime \"docker\": expected \"container\" or \"unikernel\"",
    ),
    // Ports.
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nports = [\"80:80\", \"8080:abc\"]\n",
        5,
        19,
        "invalid port \"8080:abc\": container port \"abc\" is not a number",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nports = [\"0:80\"]\n",
        5,
        10,
        "invalid port \"0:80\": host port 0 is out of range 1-65535",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nports = [\"1.2.3:80:80\"]\n",
        5,
        10,
        "host ip \"1.2.3\" is not a valid IPv4 address",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nports = [\"80:80/sctp\"]\n",
        5,
        10,
        "protocol \"sctp\" is not tcp or udp",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nports = [\"127.0.0.1:80:80\"]\n[[components]]\nname = \"c\"\nimage = \"i\"\nports = [\"127.0.0.1:80:81\"]\n",
        9,
        10,
        "port \"127.0.0.1:80:81\" conflicts with \"127.0.0.1:80:80\" of component \"b\"",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nports = [\"80:80\", \"127.0.0.1:80:81/tcp\"]\n",
        5,
        19,
        "host port 80/tcp is already published",
    ),
    // Volumes.
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nvolumes = [\"/srv/a:data\"]\n",
        5,
        12,
        "invalid volume \"/srv/a:data\": destination \"data\" is not an absolute path",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nvolumes = [\"../a:/data\"]\n",
        5,
        12,
        "source \"../a\" is neither an absolute path nor a volume name",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nvolumes = [\"/a:/data:rw,exec\"]\n",
        5,
        12,
        "unknown option \"exec\"",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nvolumes = [\"/a:/data\", \"/b:/data\"]\n",
        5,
        24,
        "destination \"/data\" is already mounted",
    ),
    // Other component values.
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nrestart = \"sometimes\"\n",
        5,
        11,
        "invalid restart policy \"sometimes\"",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nmemory = \"12X\"\n",
        5,
        10,
        "invalid memory \"12X\": unknown unit \"X\"",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nmemory = 0\n",
        5,
        10,
        "invalid memory 0: must be greater than zero",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nvcpus = 65\n",
        5,
        9,
        "invalid vcpus 65: must be between 1 and 64",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nvcpus = 0\n",
        5,
        9,
        "invalid vcpus 0",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nenv = { GOOD = \"1\", 1BAD = \"2\" }\n",
        5,
        21,
        "invalid environment variable name \"1BAD\"",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\n[components.env]\n\"A-B\" = \"x\"\n",
        6,
        1,
        "invalid environment variable name \"A-B\"",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nnetwork = \"\"\n",
        5,
        11,
        "invalid network \"\": must not be empty",
    ),
    // Routes.
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\n[[components.routes]]\nhostname = \"h\"\nport = 70000\n",
        7,
        8,
        "invalid route port 70000: must be between 1 and 65535",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\n[[components.routes]]\nhostname = \"\"\nport = 80\n",
        6,
        12,
        "invalid route hostname \"\": must not be empty",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\n[[components.routes]]\nport = 80\n",
        5,
        1,
        "route is missing required key \"hostname\"",
    ),
    // Columns count characters, not bytes.
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\ncmd = [\"é\"]; \n",
        5,
        12,
        "syntax error",
    ),
];

#[test]
fn bad_definitions_point_at_the_problem() {
    for (i, (src, line, col, want)) in BAD.iter().enumerate() {
        let err = match parse(src, Path::new("svc.toml")) {
            Ok(def) => panic!("case {i} parsed: {def:?}\n{src}"),
            Err(e) => e,
        };
        assert_eq!(
            (err.line(), err.col()),
            (Some(*line), Some(*col)),
            "case {i}: {err}\n{src}"
        );
        assert!(err.message().contains(want), "case {i}: {err}\n{src}");
        assert_eq!(err.file(), "svc.toml");
        assert_eq!(
            err.to_string(),
            format!("svc.toml:{line}:{col}: {}", err.message())
        );
        assert!(
            !err.message().starts_with(char::is_uppercase),
            "case {i}: message starts lower-case: {err}"
        );
    }
}

#[test]
fn earliest_problem_in_the_file_wins() {
    // Keys are stored sorted; the error must still be the first in the file.
    let src = "name = \"a\"\n[[components]]\nname = \"b\"\nvolumes = [\"x\"]\nimage = \"i\"\nports = [\"y\"]\n";
    let err = parse(src, Path::new("s.toml")).expect_err("invalid");
    assert_eq!((err.line(), err.col()), (Some(4), Some(12)), "{err}");
    assert!(err.message().starts_with("invalid volume \"x\""), "{err}");
}

#[test]
fn proto_round_trip() {
    let def = ok(FULL);
    let spec = def.to_proto();
    assert_eq!(spec.tier, "worker");
    assert_eq!(spec.components[0].ports, ["127.0.0.1:8443:8443"]);
    assert_eq!(spec.components[0].memory, "256M");
    assert_eq!(ServiceDef::from_proto(&spec).ok(), Some(def));
}

fn spec_with(f: impl FnOnce(&mut pb::ServiceSpec)) -> pb::ServiceSpec {
    let mut spec = ok(FULL).to_proto();
    let second = pb::ComponentSpec {
        name: "web".into(),
        image: "nginx".into(),
        ..Default::default()
    };
    spec.components.push(second);
    f(&mut spec);
    spec
}

#[test]
fn proto_is_held_to_the_same_rules() {
    let cases: Vec<(pb::ServiceSpec, &str)> = vec![
        (
            spec_with(|s| s.components[1].ports = vec!["8080:abc".into()]),
            "components[1].ports[0]: invalid port \"8080:abc\": container port \"abc\" is not a number",
        ),
        (
            spec_with(|s| s.name = "Bad".into()),
            "name: invalid service name \"Bad\"",
        ),
        (
            spec_with(|s| s.tier = "edge".into()),
            "tier: invalid tier \"edge\"",
        ),
        (
            spec_with(|s| s.components.clear()),
            "components: no components",
        ),
        (
            spec_with(|s| s.components[1].name = "api".into()),
            "components[1].name: duplicate component name \"api\"",
        ),
        (
            spec_with(|s| s.components[1].image.clear()),
            "components[1].image: image must not be empty",
        ),
        (
            spec_with(|s| s.components[1].runtime = "vm".into()),
            "components[1].runtime: invalid runtime \"vm\"",
        ),
        (
            spec_with(|s| s.components[1].volumes = vec!["/a:/b".into(), "/a".into()]),
            "components[1].volumes[1]: invalid volume \"/a\"",
        ),
        (
            spec_with(|s| {
                s.components[1].env.insert("OK".into(), "1".into());
                s.components[1].env.insert("9X".into(), "1".into());
            }),
            "components[1].env[\"9X\"]: invalid environment variable name \"9X\"",
        ),
        (
            spec_with(|s| s.components[1].restart = "never".into()),
            "components[1].restart: invalid restart policy \"never\"",
        ),
        (
            spec_with(|s| s.components[1].memory = "1Q".into()),
            "components[1].memory: invalid memory \"1Q\"",
        ),
        (
            spec_with(|s| s.components[1].vcpus = 100),
            "components[1].vcpus: invalid vcpus 100",
        ),
        (
            spec_with(|s| s.components[0].routes[0].port = 70000),
            "components[0].routes[0].port: invalid route port 70000",
        ),
        (
            spec_with(|s| s.components[1].ports = vec!["127.0.0.1:8443:1".into()]),
            "components[1].ports[0]: port \"127.0.0.1:8443:1\" conflicts with \"127.0.0.1:8443:8443\" of component \"api\"",
        ),
    ];
    for (i, (spec, want)) in cases.into_iter().enumerate() {
        let err = ServiceDef::from_proto(&spec).expect_err(want);
        assert!(
            matches!(err, ServiceDefError::InvalidRequest { .. }),
            "case {i}"
        );
        assert_eq!(err.file(), "<request>");
        assert_eq!(err.line(), None);
        assert!(err.message().starts_with(want), "case {i}: {err}");
        assert_eq!(err.to_string(), format!("<request>: {}", err.message()));
    }
    // Empty optional strings and zero vcpus are "not set".
    let def = ServiceDef::from_proto(&spec_with(|_| {})).expect("valid");
    let web = def.component("web").expect("web");
    assert_eq!(
        (web.network.clone(), web.memory.clone(), web.vcpus),
        (None, None, None)
    );
    assert_eq!(web.runtime, RuntimeKind::Container);
}

#[test]
fn spec_hash_is_stable_and_covers_the_instance() {
    let def = ok(FULL);
    let api = &def.components[0];
    let hash = api.spec_hash();
    assert_eq!(hash.len(), 64);
    assert!(
        hash.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    // Pinned: the digest must never change across versions for the same
    // definition (a change would recreate every instance).
    assert_eq!(hash, PINNED_FULL_HASH);

    // Order of env keys in the file does not matter; units of memory do not either.
    let a = ok(
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nenv = { X = \"1\", A = \"2\" }\nmemory = \"1G\"\n",
    );
    let b = ok(
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nmemory = \"1024M\"\nenv = { A = \"2\", X = \"1\" }\n",
    );
    assert_eq!(a.components[0].spec_hash(), b.components[0].spec_hash());

    // Routes and the name are not part of it; everything else is.
    let mut other = api.clone();
    other.routes.clear();
    other.name = "renamed".into();
    assert_eq!(other.spec_hash(), hash);
    let changes: Vec<fn(&mut ComponentDef)> = vec![
        |c| c.image.push('x'),
        |c| c.runtime = RuntimeKind::Unikernel,
        |c| c.cmd.push("x".into()),
        |c| {
            c.env.insert("Y".into(), "1".into());
        },
        |c| c.ports[0].host_port += 1,
        |c| c.volumes[0].options.clear(),
        |c| c.network = None,
        |c| c.user = Some("1:1".into()),
        |c| c.restart = Some("always".into()),
        |c| c.memory = Some(Memory::from_bytes(1)),
        |c| c.vcpus = Some(2),
    ];
    for (i, change) in changes.into_iter().enumerate() {
        let mut c = api.clone();
        change(&mut c);
        assert_ne!(c.spec_hash(), hash, "change {i} must change the hash");
    }
}

/// The spec hash of the SPEC example's `api` component.
const PINNED_FULL_HASH: &str = "b33ba9161fcd2704919d5bd39579cb39d94cbeb07fd2b213acf10ac6d9d41233";

#[test]
fn instance_spec_carries_labels() {
    let def = ok(FULL);
    let spec = def.components[0].instance_spec(&def.name);
    assert_eq!(spec.name, "metacrypt-api");
    assert_eq!(spec.image, "registry.example:5000/metacrypt:1.4");
    assert_eq!(spec.memory_bytes, Some(256 << 20));
    assert_eq!(spec.vcpus, Some(1));
    assert_eq!(spec.restart.as_deref(), Some("unless-stopped"));
    let label = |k: &str| spec.labels.get(k).map(String::as_str);
    assert_eq!(label(mcp_runtime::labels::MANAGED), Some("true"));
    assert_eq!(label(mcp_runtime::labels::SERVICE), Some("metacrypt"));
    assert_eq!(label(mcp_runtime::labels::COMPONENT), Some("api"));
    let hash = def.components[0].spec_hash();
    assert_eq!(label(mcp_runtime::labels::SPEC_HASH), Some(hash.as_str()));
    assert_eq!(spec.labels.len(), 4);
}

#[test]
fn json_round_trip_and_old_json() {
    let def = ok(FULL);
    let json = serde_json::to_string(&def.components[0]).expect("serialize");
    let back: ComponentDef = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, def.components[0]);
    // JSON written before runtime/memory/vcpus/routes existed still loads.
    let old: ComponentDef = serde_json::from_str(
        r#"{"name":"b","image":"i","cmd":[],"env":{},"ports":[],"volumes":[]}"#,
    )
    .expect("old json");
    assert_eq!(old.runtime, RuntimeKind::Container);
    assert_eq!(old.memory, None);
}
