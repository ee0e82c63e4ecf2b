//! Unit tests of parsing and validation: a table of bad definitions, each
//! with the exact position and message expected.

use std::path::Path;

use crate::instance::RuntimeKind;
use mcp_proto::v1 as pb;

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
    // Direct kernel boot.
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nkernel = \"vmlinuz\"\n",
        5,
        10,
        "\"kernel\" is only for unikernel components (runtime \"unikernel\")",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nruntime = \"container\"\ninitrd = \"initrd.img\"\n",
        6,
        10,
        "\"initrd\" is only for unikernel components",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nappend = \"quiet\"\n",
        5,
        10,
        "\"append\" is only for unikernel components",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"vm.img\"\nruntime = \"unikernel\"\ninitrd = \"initrd.img\"\n",
        6,
        10,
        "\"initrd\" needs \"kernel\": it is only used when booting a kernel directly",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"vm.img\"\nruntime = \"unikernel\"\nappend = \"console=ttyS0\"\n",
        6,
        10,
        "\"append\" needs \"kernel\"",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nruntime = \"unikernel\"\nkernel = \"\"\n",
        5,
        10,
        "invalid kernel \"\": must not be empty",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nruntime = \"unikernel\"\nkernel = \"/boot/my kernel\"\n",
        5,
        10,
        "invalid kernel \"/boot/my kernel\": must not contain whitespace",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nruntime = \"unikernel\"\nkernel = \"k\"\ninitrd = \"\"\n",
        6,
        10,
        "invalid initrd \"\": must not be empty",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nruntime = \"unikernel\"\nkernel = \"k\"\nappend = \"\"\n",
        6,
        10,
        "invalid append \"\": must not be empty",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nruntime = \"unikernel\"\nkernel = \"k\"\nimage = \"\"\n",
        6,
        9,
        "image must not be empty (leave it out to boot the kernel without a disk)",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nruntime = \"unikernel\"\n",
        2,
        1,
        "component \"b\" is missing required key \"image\" (or \"kernel\" to boot a kernel directly)",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nruntime = \"unikernel\"\nkernel = 5\n",
        5,
        10,
        "invalid type for \"kernel\": expected a string, found an integer",
    ),
    // Limits of a VM, known from the definition alone.
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nruntime = \"unikernel\"\nimage = \"vm.img\"\nmemory = \"8M\"\n",
        6,
        10,
        "invalid memory \"8M\" for a unikernel component: a VM needs at least 32 MiB",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nruntime = \"unikernel\"\nimage = \"vm.img\"\nmemory = 1048576\n",
        6,
        10,
        "invalid memory \"1048576\" for a unikernel component: a VM needs at least 32 MiB",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nruntime = \"unikernel\"\nimage = \"vm.img\"\nvolumes = [\"/srv/a:/data\"]\n",
        6,
        12,
        "invalid volume \"/srv/a:/data\": a unikernel component runs in a VM, which cannot mount volumes",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nruntime = \"unikernel\"\nimage = \"vm.img\"\nports = [\"[::1]:8080:80\"]\n",
        6,
        10,
        "invalid port \"[::1]:8080:80\" for a unikernel component: QEMU's user network forwards IPv4 host addresses only",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nruntime = \"unikernel\"\nimage = \"vm.img\"\nvcpus = 65\n",
        6,
        9,
        "invalid vcpus 65: must be between 1 and 64",
    ),
    (
        // An invalid runtime is the problem, not the kernel on its fallback.
        "name = \"a\"\n[[components]]\nname = \"b\"\nkernel = \"k\"\nruntime = \"vm\"\n",
        5,
        11,
        "invalid runtime \"vm\"",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nruntime = \"unikernel\"\nkernal = \"k\"\n",
        5,
        1,
        "unknown key \"kernal\" in a component; expected one of: name, image, runtime, cmd, env, ports, volumes, network, user, restart, memory, vcpus, routes, kernel, initrd, append",
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

/// Spec hashes recorded before `kernel`, `initrd` and `append` existed: a
/// component that sets none of them must keep its digest, or upgrading MCP
/// would recreate it.
const PINNED_BEFORE_KERNEL_BOOT: &[(&str, &str)] = &[
    (
        "name = \"m\"\n[[components]]\nname = \"c\"\nimage = \"i\"\n",
        "fc558105bb751af3b60195f0b94c20c92fcb661a990aff4bb077027a4859aba1",
    ),
    (
        "name = \"v\"\n[[components]]\nname = \"vm\"\nimage = \"vault.img\"\nruntime = \"unikernel\"\nmemory = \"1G\"\nvcpus = 2\n",
        "f069d33160dd52707b21b24801b10a7865bdf62cf7081729453fa78a2f70d4fc",
    ),
];

#[test]
fn spec_hash_without_kernel_boot_is_unchanged() {
    assert_eq!(ok(FULL).components[0].spec_hash(), PINNED_FULL_HASH);
    for (src, pinned) in PINNED_BEFORE_KERNEL_BOOT {
        assert_eq!(ok(src).components[0].spec_hash(), *pinned, "{src}");
    }
    // And it survives a JSON round trip through storage (no new keys).
    let c = &ok(PINNED_BEFORE_KERNEL_BOOT[1].0).components[0];
    let json = serde_json::to_string(c).expect("serialize");
    for key in ["\"kernel\"", "\"initrd\"", "\"append\""] {
        assert!(!json.contains(key), "{json}");
    }
}

#[test]
fn spec_hash_covers_kernel_boot() {
    let def = ok(KERNEL_VM);
    let vm = &def.components[0];
    let hash = vm.spec_hash();
    let changes: Vec<fn(&mut ComponentDef)> = vec![
        |c| c.kernel = Some("other".into()),
        |c| c.initrd = None,
        |c| c.initrd = Some("other.img".into()),
        |c| c.append = None,
        |c| c.append = Some("console=ttyS0 quiet".into()),
        |c| c.image.clear(),
    ];
    for (i, change) in changes.into_iter().enumerate() {
        let mut c = vm.clone();
        change(&mut c);
        assert_ne!(c.spec_hash(), hash, "change {i} must change the hash");
    }
    // Taking the kernel away (booting the disk instead) changes it too.
    let mut disk = vm.clone();
    (disk.kernel, disk.initrd, disk.append, disk.image) = (None, None, None, "vm.img".into());
    let mut with_kernel = disk.clone();
    with_kernel.kernel = Some("vmlinuz".into());
    assert_ne!(disk.spec_hash(), with_kernel.spec_hash());
    // Fields do not run into each other.
    let mut a = vm.clone();
    (a.initrd, a.append) = (Some("x".into()), None);
    let mut b = vm.clone();
    (b.initrd, b.append) = (None, Some("x".into()));
    assert_ne!(a.spec_hash(), b.spec_hash());
}

/// A unikernel booting a kernel directly, with an initrd, a command line
/// and an extra disk.
const KERNEL_VM: &str = r#"name = "vm"

[[components]]
name    = "app"
runtime = "unikernel"
kernel  = "kernel/vmlinuz"
initrd  = "/srv/vm/initrd.img"
append  = "console=ttyS0 root=/dev/vda rw"
image   = "data.img"
memory  = "512M"
vcpus   = 2
ports   = ["127.0.0.1:8080:80"]
"#;

#[test]
fn parses_a_kernel_boot_unikernel() {
    let def = ok(KERNEL_VM);
    let c = &def.components[0];
    assert_eq!(c.runtime, RuntimeKind::Unikernel);
    assert_eq!(c.kernel.as_deref(), Some("kernel/vmlinuz"));
    assert_eq!(c.initrd.as_deref(), Some("/srv/vm/initrd.img"));
    assert_eq!(c.append.as_deref(), Some("console=ttyS0 root=/dev/vda rw"));
    assert_eq!(c.image, "data.img");

    // The instance boots the kernel, paths as written; the image is the disk.
    let spec = c.instance_spec(&def.name);
    assert_eq!(spec.name, "vm-app");
    assert_eq!(spec.image, "data.img");
    assert_eq!(
        spec.kernel,
        Some(crate::instance::KernelBoot {
            kernel: "kernel/vmlinuz".into(),
            initrd: Some("/srv/vm/initrd.img".into()),
            append: Some("console=ttyS0 root=/dev/vda rw".into()),
        })
    );
    assert_eq!(
        spec.labels.get(crate::instance::labels::SPEC_HASH),
        Some(&c.spec_hash())
    );

    // Without a disk and with only a kernel, image is empty and nothing else set.
    let bare = ok(
        "name = \"vm\"\n[[components]]\nname = \"app\"\nruntime = \"unikernel\"\nkernel = \"vmlinuz\"\n",
    );
    let c = &bare.components[0];
    assert_eq!(
        (c.image.as_str(), c.initrd.clone(), c.append.clone()),
        ("", None, None)
    );
    let spec = c.instance_spec(&bare.name);
    assert_eq!(spec.image, "");
    assert_eq!(
        spec.kernel,
        Some(crate::instance::KernelBoot {
            kernel: "vmlinuz".into(),
            initrd: None,
            append: None,
        })
    );

    // Booting a disk image: no kernel in the instance.
    let disk = ok(
        "name = \"vm\"\n[[components]]\nname = \"app\"\nruntime = \"unikernel\"\nimage = \"vm.img\"\n",
    );
    assert_eq!(disk.components[0].kernel, None);
    assert_eq!(disk.components[0].instance_spec("vm").kernel, None);
}

#[test]
fn kernel_boot_proto_round_trip() {
    let def = ok(KERNEL_VM);
    let spec = def.to_proto();
    let c = &spec.components[0];
    assert_eq!(
        (c.kernel.as_str(), c.initrd.as_str(), c.append.as_str()),
        (
            "kernel/vmlinuz",
            "/srv/vm/initrd.img",
            "console=ttyS0 root=/dev/vda rw"
        )
    );
    assert_eq!(ServiceDef::from_proto(&spec).ok(), Some(def.clone()));

    // No disk: an empty image on the wire is "none" when there is a kernel.
    let mut no_disk = def.clone();
    no_disk.components[0].image.clear();
    no_disk.components[0].initrd = None;
    let spec = no_disk.to_proto();
    assert_eq!(spec.components[0].image, "");
    assert_eq!(spec.components[0].initrd, "");
    assert_eq!(ServiceDef::from_proto(&spec).ok(), Some(no_disk));

    // A container's proto has them empty, read back as unset.
    let full = ok(FULL);
    let spec = full.to_proto();
    assert_eq!(spec.components[0].kernel, "");
    assert_eq!(ServiceDef::from_proto(&spec).ok(), Some(full));
}

#[test]
fn kernel_boot_proto_is_held_to_the_same_rules() {
    let cases: Vec<(pb::ServiceSpec, &str)> = vec![
        (
            spec_with(|s| s.components[1].kernel = "vmlinuz".into()),
            "components[1].kernel: \"kernel\" is only for unikernel components",
        ),
        (
            spec_with(|s| {
                s.components[1].runtime = "container".into();
                s.components[1].append = "quiet".into();
            }),
            "components[1].append: \"append\" is only for unikernel components",
        ),
        (
            spec_with(|s| {
                s.components[1].runtime = "unikernel".into();
                s.components[1].initrd = "initrd.img".into();
            }),
            "components[1].initrd: \"initrd\" needs \"kernel\"",
        ),
        (
            spec_with(|s| {
                s.components[1].runtime = "unikernel".into();
                s.components[1].image.clear();
            }),
            "components[1].image: image must not be empty",
        ),
        (
            spec_with(|s| {
                s.components[1].runtime = "unikernel".into();
                s.components[1].kernel = "my kernel".into();
            }),
            "components[1].kernel: invalid kernel \"my kernel\": must not contain whitespace",
        ),
    ];
    for (i, (spec, want)) in cases.into_iter().enumerate() {
        let err = ServiceDef::from_proto(&spec).expect_err(want);
        assert!(
            matches!(err, ServiceDefError::InvalidRequest { .. }),
            "case {i}"
        );
        assert!(err.message().starts_with(want), "case {i}: {err}");
    }
    // A kernel without an image is fine on the wire as in a file.
    let def = ServiceDef::from_proto(&spec_with(|s| {
        let web = &mut s.components[1];
        web.runtime = "unikernel".into();
        web.image.clear();
        web.kernel = "vmlinuz".into();
        web.append = "console=ttyS0".into();
    }))
    .expect("valid");
    let web = def.component("web").expect("web");
    assert_eq!(
        (
            web.image.as_str(),
            web.kernel.as_deref(),
            web.initrd.as_deref(),
            web.append.as_deref()
        ),
        ("", Some("vmlinuz"), None, Some("console=ttyS0"))
    );
}

#[test]
fn kernel_boot_to_toml_round_trip() {
    let def = ok(KERNEL_VM);
    let written = to_toml(&def);
    assert!(
        written.contains("kernel = \"kernel/vmlinuz\"\n"),
        "{written}"
    );
    assert_eq!(ok(&written), def, "{written}");

    // Without a disk, no image key is written, and it still parses back.
    let mut no_disk = def.clone();
    no_disk.components[0].image.clear();
    no_disk.components[0].append = None;
    let written = to_toml(&no_disk);
    assert!(!written.contains("image"), "{written}");
    assert!(!written.contains("append"), "{written}");
    assert_eq!(ok(&written), no_disk, "{written}");
    assert_eq!(
        ok(&written).components[0].spec_hash(),
        no_disk.components[0].spec_hash()
    );

    // Components without a kernel are written as before.
    assert!(!to_toml(&ok(FULL)).contains("kernel"));
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
    assert_eq!(label(crate::instance::labels::MANAGED), Some("true"));
    assert_eq!(label(crate::instance::labels::SERVICE), Some("metacrypt"));
    assert_eq!(label(crate::instance::labels::COMPONENT), Some("api"));
    let hash = def.components[0].spec_hash();
    assert_eq!(
        label(crate::instance::labels::SPEC_HASH),
        Some(hash.as_str())
    );
    assert_eq!(spec.labels.len(), 4);
}

#[test]
fn instance_spec_carries_only_command_health_checks() {
    use std::time::Duration;
    let def = ok(HEALTHY);
    let spec = |name: &str| {
        def.component(name)
            .unwrap_or_else(|| panic!("{name} exists"))
            .instance_spec(&def.name)
    };
    // A command check is run inside the container by the runtime.
    assert_eq!(
        spec("db").health,
        Some(crate::instance::HealthSpec {
            command: vec!["pg_isready".into(), "-U".into(), "app".into()],
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            retries: 3,
            start_period: Duration::ZERO,
        })
    );
    // tcp and http checks are probed from the node, not by the runtime.
    assert_eq!(spec("cache").health, None);
    assert_eq!(spec("web").health, None);
    assert_eq!(
        ok(FULL).components[0].instance_spec("metacrypt").health,
        None
    );
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
    assert_eq!((old.kernel, old.initrd, old.append), (None, None, None));

    // Kernel boot fields are stored and read back.
    let vm = ok(KERNEL_VM).components[0].clone();
    let json = serde_json::to_string(&vm).expect("serialize");
    let back: ComponentDef = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, vm);
}

/// A service with a health check of every kind and a dependency.
const HEALTHY: &str = r#"name = "shop"

[[components]]
name  = "db"
image = "postgres:16"

[components.health]
kind    = "command"
command = ["pg_isready", "-U", "app"]

[[components]]
name  = "cache"
image = "valkey:8"
ports = ["127.0.0.1:6379:6379"]

[components.health]
kind     = "tcp"
port     = 6379
interval = "2s"

[[components]]
name       = "web"
image      = "web:1"
ports      = ["127.0.0.1:8080:8080", "127.0.0.1:9090:9090"]
depends_on = ["db", "cache"]

[components.health]
kind         = "http"
port         = 8080
path         = "/healthz?full=1"
status       = 204
interval     = "1m 30s"
timeout      = "2500ms"
retries      = 5
start_period = "1m"

[[components.routes]]
hostname = "shop.example"
port     = 8080

[[components]]
name       = "admin"
image      = "admin:1"
ports      = ["9000:9000"]
depends_on = ["web"]
health     = { kind = "http", port = 9000 }
"#;

#[test]
fn parses_health_checks_with_defaults() {
    use std::time::Duration;
    let def = ok(HEALTHY);
    let health = |name: &str| {
        def.component(name)
            .and_then(|c| c.health.clone())
            .unwrap_or_else(|| panic!("{name} has a health check"))
    };
    let secs = Duration::from_secs;

    // Every default applied.
    assert_eq!(
        health("db"),
        HealthCheck {
            probe: HealthProbe::Command {
                argv: vec!["pg_isready".into(), "-U".into(), "app".into()],
            },
            interval: secs(10),
            timeout: secs(5),
            retries: 3,
            start_period: Duration::ZERO,
        }
    );
    assert_eq!(
        health("db"),
        HealthCheck::new(HealthProbe::Command {
            argv: vec!["pg_isready".into(), "-U".into(), "app".into()],
        })
    );
    // An interval shorter than the default timeout makes the timeout that short.
    assert_eq!(
        health("cache"),
        HealthCheck {
            probe: HealthProbe::Tcp { port: 6379 },
            interval: secs(2),
            timeout: secs(2),
            retries: 3,
            start_period: Duration::ZERO,
        }
    );
    // Every key given.
    assert_eq!(
        health("web"),
        HealthCheck {
            probe: HealthProbe::Http {
                port: 8080,
                path: "/healthz?full=1".into(),
                status: Some(204),
            },
            interval: secs(90),
            timeout: Duration::from_millis(2500),
            retries: 5,
            start_period: secs(60),
        }
    );
    // Inline table; path "/" and any 2xx by default.
    let admin = health("admin");
    assert_eq!(
        admin.probe,
        HealthProbe::Http {
            port: 9000,
            path: "/".into(),
            status: None,
        }
    );
    assert_eq!(admin.probe.kind(), "http");
    assert_eq!(admin.probe.port(), Some(9000));
    assert_eq!(health("db").probe.port(), None);

    assert_eq!(
        def.component("web").map(|c| c.depends_on.clone()),
        Some(vec!["db".into(), "cache".into()])
    );
    assert!(def.component("db").is_some_and(|c| c.depends_on.is_empty()));
    // Neither key: none of either.
    let plain = ok(FULL);
    assert_eq!(plain.components[0].health, None);
    assert!(plain.components[0].depends_on.is_empty());
}

/// A component publishing 8080 (as host port 8080 and container port 80)
/// and 53/udp, whose health table starts on line 6; keys from line 7.
const H: &str = "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nports = [\"8080:80\", \"53:53/udp\"]\n[components.health]\n";

/// `(health keys after H, line, col, exact message)`.
const BAD_HEALTH: &[(&str, usize, usize, &str)] = &[
    (
        "kind = \"grpc\"\n",
        7,
        8,
        "invalid health kind \"grpc\": expected \"command\", \"tcp\" or \"http\"",
    ),
    (
        "kind = \"tcp\"\nport = 80\ninterval = \"-5s\"\n",
        9,
        12,
        "invalid health interval \"-5s\": must not be negative",
    ),
    (
        "kind = \"tcp\"\nport = 80\ninterval = \"0s\"\n",
        9,
        12,
        "invalid health interval \"0s\": must be greater than zero",
    ),
    (
        "kind = \"tcp\"\nport = 80\ninterval = \"soon\"\n",
        9,
        12,
        "invalid health interval \"soon\": expected a span such as \"10s\", \"1m 30s\" or \"500ms\"",
    ),
    (
        "kind = \"tcp\"\nport = 80\ninterval = \"1500us\"\n",
        9,
        12,
        "invalid health interval \"1500us\": must be a whole number of milliseconds",
    ),
    (
        "kind = \"tcp\"\nport = 80\ninterval = 10\n",
        9,
        12,
        "invalid type for \"health.interval\": expected a span such as \"10s\", found an integer",
    ),
    (
        "kind = \"tcp\"\nport = 80\ntimeout = \"0ms\"\n",
        9,
        11,
        "invalid health timeout \"0ms\": must be greater than zero",
    ),
    (
        "kind = \"tcp\"\nport = 80\ninterval = \"2s\"\ntimeout = \"3s\"\n",
        10,
        11,
        "invalid health timeout \"3s\": must not be longer than the interval (2s)",
    ),
    (
        "kind = \"tcp\"\nport = 80\ntimeout = \"15s\"\n",
        9,
        11,
        "invalid health timeout \"15s\": must not be longer than the interval (10s, the default)",
    ),
    (
        "kind = \"tcp\"\nport = 80\nstart_period = \"-1m\"\n",
        9,
        16,
        "invalid health start_period \"-1m\": must not be negative",
    ),
    (
        "kind = \"tcp\"\nport = 80\nretries = 0\n",
        9,
        11,
        "invalid health retries 0: must be between 1 and 100",
    ),
    (
        "kind = \"tcp\"\nport = 80\nretries = 101\n",
        9,
        11,
        "invalid health retries 101: must be between 1 and 100",
    ),
    (
        "kind = \"tcp\"\nport = 8080\n",
        8,
        8,
        "health port 8080 is not published: the agent probes it through its host port, so add it to \"ports\", e.g. \"127.0.0.1:8080:8080\"",
    ),
    (
        "kind = \"tcp\"\nport = 53\n",
        8,
        8,
        "health port 53 is not published over tcp (only over udp): the agent probes it through its host port, so add it to \"ports\", e.g. \"127.0.0.1:53:53\"",
    ),
    (
        "kind = \"http\"\nport = 0\n",
        8,
        8,
        "invalid health port 0: must be between 1 and 65535",
    ),
    (
        "kind = \"http\"\nport = 80\npath = \"healthz\"\n",
        9,
        8,
        "invalid health path \"healthz\": must start with \"/\"",
    ),
    (
        "kind = \"http\"\nport = 80\npath = \"/health z\"\n",
        9,
        8,
        "invalid health path \"/health z\": must not contain whitespace or control characters",
    ),
    (
        "kind = \"http\"\nport = 80\nstatus = 600\n",
        9,
        10,
        "invalid health status 600: must be between 100 and 599",
    ),
    (
        "kind = \"tcp\"\nport = 80\npath = \"/\"\n",
        9,
        1,
        "\"path\" does not belong to a \"tcp\" health check: it is only for kind \"http\"",
    ),
    (
        "kind = \"command\"\ncommand = [\"true\"]\nport = 80\n",
        9,
        1,
        "\"port\" does not belong to a \"command\" health check: it is only for kinds \"tcp\" and \"http\"",
    ),
    (
        "kind = \"http\"\nport = 80\ncommand = [\"true\"]\n",
        9,
        1,
        "\"command\" does not belong to a \"http\" health check: it is only for kind \"command\"",
    ),
    (
        "kind = \"command\"\ncommand = []\n",
        8,
        11,
        "invalid health command []: must not be empty; give the program and its arguments, such as [\"pg_isready\", \"-U\", \"app\"]",
    ),
    (
        "kind = \"command\"\ncommand = [\"\", \"x\"]\n",
        8,
        11,
        "invalid health command [\"\", \"x\"]: the program (the first element) must not be empty",
    ),
    (
        "kind = \"command\"\ncommand = \"pg_isready -U app\"\n",
        8,
        11,
        "invalid type for \"health.command\": expected an array of strings (the program and its arguments; no shell), found a string",
    ),
    (
        "kind = \"command\"\n",
        6,
        1,
        "health check of kind \"command\" is missing required key \"command\"",
    ),
    (
        "kind = \"http\"\npath = \"/\"\n",
        6,
        1,
        "health check of kind \"http\" is missing required key \"port\"",
    ),
    (
        "port = 80\n",
        6,
        1,
        "health check is missing required key \"kind\" (expected \"command\", \"tcp\" or \"http\")",
    ),
    (
        "kind = \"tcp\"\nport = 80\nintervall = \"5s\"\n",
        9,
        1,
        "unknown key \"intervall\" in a health check; expected one of: kind, command, port, path, status, interval, timeout, retries, start_period",
    ),
    (
        // A wrong kind is the problem, not the keys of the kinds it is not.
        "kind = \"grpc\"\nport = 80\npath = \"/\"\ncommand = [\"x\"]\n",
        7,
        8,
        "invalid health kind \"grpc\": expected \"command\", \"tcp\" or \"http\"",
    ),
];

/// `(definition, line, col, exact message)`.
const BAD_HEALTH_OTHER: &[(&str, usize, usize, &str)] = &[
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nhealth = \"tcp\"\n",
        5,
        10,
        "invalid type for \"health\": expected a table ([components.health]), found a string",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"b\"\nruntime = \"unikernel\"\nimage = \"vm.img\"\n[components.health]\nkind = \"command\"\ncommand = [\"true\"]\n",
        7,
        8,
        "invalid health kind \"command\" for a unikernel component: it runs a program inside a container; use \"tcp\" or \"http\"",
    ),
    (
        // An invalid port is the problem, not the health port it hides.
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nhealth = { kind = \"tcp\", port = 80 }\nports = [\"80:abc\"]\n",
        6,
        10,
        "invalid port \"80:abc\": container port \"abc\" is not a number",
    ),
    (
        // The port is published by another component, not this one.
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\nports = [\"80:80\"]\n[[components]]\nname = \"c\"\nimage = \"i\"\nhealth = { kind = \"tcp\", port = 80 }\n",
        9,
        33,
        "health port 80 is not published: the agent probes it through its host port, so add it to \"ports\", e.g. \"127.0.0.1:80:80\"",
    ),
];

/// Components `db`, then `web` whose `depends_on` is on line 8 (values
/// from column 15).
const D: &str = "name = \"a\"\n[[components]]\nname = \"db\"\nimage = \"i\"\n[[components]]\nname = \"web\"\nimage = \"i\"\n";

const BAD_DEPENDS_ON: &[(&str, usize, usize, &str)] = &[
    (
        "depends_on = [\"dbb\"]\n",
        8,
        15,
        "invalid depends_on \"dbb\": no component of that name; known components: db",
    ),
    (
        "depends_on = [\"db\", \"web\"]\n",
        8,
        21,
        "invalid depends_on \"web\": a component cannot depend on itself",
    ),
    (
        "depends_on = [\"db\", \"db\"]\n",
        8,
        21,
        "duplicate depends_on entry \"db\"",
    ),
    (
        "depends_on = \"db\"\n",
        8,
        14,
        "invalid type for \"depends_on\": expected an array of strings, found a string",
    ),
    (
        "depends_on = [\"db\", 1]\n",
        8,
        21,
        "invalid type for \"depends_on[1]\": expected a string, found an integer",
    ),
];

/// `(definition, line, col, exact message)` for cycles.
const DEPENDENCY_CYCLES: &[(&str, usize, usize, &str)] = &[
    (
        "name = \"a\"\n[[components]]\nname = \"db\"\nimage = \"i\"\ndepends_on = [\"web\"]\n[[components]]\nname = \"web\"\nimage = \"i\"\ndepends_on = [\"db\"]\n",
        9,
        15,
        "invalid depends_on \"db\": dependency cycle db -> web -> db",
    ),
    (
        "name = \"a\"\n[[components]]\nname = \"x\"\nimage = \"i\"\ndepends_on = [\"y\"]\n[[components]]\nname = \"y\"\nimage = \"i\"\ndepends_on = [\"z\"]\n[[components]]\nname = \"z\"\nimage = \"i\"\ndepends_on = [\"x\"]\n",
        13,
        15,
        "invalid depends_on \"x\": dependency cycle x -> y -> z -> x",
    ),
    (
        // The cycle does not start at the first component; the entry
        // that closes it comes before the one that leads into it.
        "name = \"a\"\n[[components]]\nname = \"x\"\nimage = \"i\"\ndepends_on = [\"y\"]\n[[components]]\nname = \"z\"\nimage = \"i\"\ndepends_on = [\"y\"]\n[[components]]\nname = \"y\"\nimage = \"i\"\ndepends_on = [\"w\", \"z\"]\n[[components]]\nname = \"w\"\nimage = \"i\"\n",
        9,
        15,
        "invalid depends_on \"y\": dependency cycle y -> z -> y",
    ),
];

fn assert_exact(cases: &[(String, usize, usize, &str)]) {
    for (i, (src, line, col, want)) in cases.iter().enumerate() {
        let err = match parse(src, Path::new("web.toml")) {
            Ok(def) => panic!("case {i} parsed: {def:?}\n{src}"),
            Err(e) => e,
        };
        assert_eq!(err.message(), *want, "case {i}\n{src}");
        assert_eq!(
            (err.line(), err.col()),
            (Some(*line), Some(*col)),
            "case {i}: {err}\n{src}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("web.toml:{line}:{col}: "))
        );
    }
}

#[test]
fn bad_health_checks_point_at_the_problem() {
    let cases: Vec<(String, usize, usize, &str)> = BAD_HEALTH
        .iter()
        .map(|(keys, line, col, want)| (format!("{H}{keys}"), *line, *col, *want))
        .chain(
            BAD_HEALTH_OTHER
                .iter()
                .map(|(src, line, col, want)| (src.to_string(), *line, *col, *want)),
        )
        .collect();
    assert_exact(&cases);
    // The brief's example, in full.
    let err = parse(
        &format!("{H}kind = \"tcp\"\nport = 80\ninterval = \"-5s\"\n"),
        Path::new("web.toml"),
    )
    .expect_err("negative");
    assert_eq!(
        err.to_string(),
        "web.toml:9:12: invalid health interval \"-5s\": must not be negative"
    );
}

#[test]
fn bad_depends_on_points_at_the_problem() {
    let cases: Vec<(String, usize, usize, &str)> = BAD_DEPENDS_ON
        .iter()
        .map(|(keys, line, col, want)| (format!("{D}{keys}"), *line, *col, *want))
        .chain(
            DEPENDENCY_CYCLES
                .iter()
                .map(|(src, line, col, want)| (src.to_string(), *line, *col, *want)),
        )
        .collect();
    assert_exact(&cases);
    // Alone, a component depends on nothing there is.
    let err = parse(
        "name = \"a\"\n[[components]]\nname = \"b\"\nimage = \"i\"\ndepends_on = [\"c\"]\n",
        Path::new("a.toml"),
    )
    .expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "a.toml:5:15: invalid depends_on \"c\": no component of that name; the service has no other components"
    );
}

fn wave_names(def: &ServiceDef) -> Vec<Vec<&str>> {
    def.start_order()
        .iter()
        .map(|wave| wave.iter().map(|c| c.name.as_str()).collect())
        .collect()
}

#[test]
fn start_order_is_waves_of_dependencies() {
    // No dependencies: one wave, in file order.
    let def = ok(
        "name = \"a\"\n[[components]]\nname = \"z\"\nimage = \"i\"\n[[components]]\nname = \"y\"\nimage = \"i\"\n",
    );
    assert_eq!(wave_names(&def), [vec!["z", "y"]]);

    assert_eq!(
        wave_names(&ok(HEALTHY)),
        [vec!["db", "cache"], vec!["web"], vec!["admin"]]
    );

    // A diamond, and a component that waits for two waves: each in the
    // earliest wave it can be, file order within a wave.
    let def = ok(r#"name = "a"
[[components]]
name = "top"
image = "i"
depends_on = ["left", "right"]
[[components]]
name = "late"
image = "i"
depends_on = ["top", "base"]
[[components]]
name = "right"
image = "i"
depends_on = ["base"]
[[components]]
name = "left"
image = "i"
depends_on = ["base"]
[[components]]
name = "base"
image = "i"
[[components]]
name = "free"
image = "i"
"#);
    assert_eq!(
        wave_names(&def),
        [
            vec!["base", "free"],
            vec!["right", "left"],
            vec!["top"],
            vec!["late"]
        ]
    );
    // Every member depends only on earlier waves.
    let waves = def.start_order();
    for (w, wave) in waves.iter().enumerate() {
        for c in wave {
            for d in &c.depends_on {
                let at = waves
                    .iter()
                    .position(|wave| wave.iter().any(|x| &x.name == d));
                assert!(at.is_some_and(|at| at < w), "{} -> {d}", c.name);
            }
        }
    }

    // Not validated: unknown names are ignored, a cycle comes last.
    let mut def = ok(
        "name = \"a\"\n[[components]]\nname = \"p\"\nimage = \"i\"\n[[components]]\nname = \"q\"\nimage = \"i\"\n[[components]]\nname = \"r\"\nimage = \"i\"\n",
    );
    def.components[0].depends_on = vec!["q".into()];
    def.components[1].depends_on = vec!["p".into()];
    def.components[2].depends_on = vec!["ghost".into()];
    assert_eq!(wave_names(&def), [vec!["r"], vec!["p", "q"]]);
    def.components[2].depends_on = vec!["r".into()];
    assert_eq!(wave_names(&def), [vec!["p", "q", "r"]]);
    // Waiting for a cycle and for a started component: last, no empty wave.
    def.components[2].depends_on = vec!["p".into(), "s".into()];
    def.components.push(ComponentDef {
        name: "s".into(),
        ..ComponentDef::default()
    });
    assert_eq!(wave_names(&def), [vec!["s"], vec!["p", "q", "r"]]);
    assert!(ServiceDef::default().start_order().is_empty());
}

#[test]
fn health_and_depends_on_proto_round_trip() {
    let def = ok(HEALTHY);
    let spec = def.to_proto();
    let web = &spec.components[2];
    assert_eq!(web.depends_on, ["db", "cache"]);
    assert_eq!(
        web.health,
        Some(pb::HealthCheck {
            kind: "http".into(),
            command: Vec::new(),
            port: 8080,
            path: "/healthz?full=1".into(),
            status: 204,
            interval: "1m 30s".into(),
            timeout: "2s 500ms".into(),
            retries: 5,
            start_period: "1m".into(),
        })
    );
    let db = spec.components[0].health.clone().unwrap_or_default();
    assert_eq!(
        (
            db.kind.as_str(),
            db.command.len(),
            db.port,
            db.interval.as_str(),
            db.start_period.as_str()
        ),
        ("command", 3, 0, "10s", "0s")
    );
    assert_eq!(
        spec.components[3].health.as_ref().map(|h| h.status),
        Some(0)
    );
    assert_eq!(ServiceDef::from_proto(&spec).ok(), Some(def));

    // Unset fields on the wire take the defaults, as in a file.
    let def = ServiceDef::from_proto(&spec_with(|s| {
        s.components[1].ports = vec!["127.0.0.1:8080:80".into()];
        s.components[1].health = Some(pb::HealthCheck {
            kind: "http".into(),
            port: 80,
            ..Default::default()
        });
        s.components[1].depends_on = vec!["api".into()];
    }))
    .expect("valid");
    let web = def.component("web").expect("web");
    assert_eq!(
        web.health,
        Some(HealthCheck::new(HealthProbe::Http {
            port: 80,
            path: "/".into(),
            status: None,
        }))
    );
    assert_eq!(web.depends_on, ["api"]);
    // Neither key: none on the wire.
    let full = ok(FULL).to_proto();
    assert_eq!(full.components[0].health, None);
    assert!(full.components[0].depends_on.is_empty());
}

#[test]
fn health_and_depends_on_proto_are_held_to_the_same_rules() {
    let with_health = |h: pb::HealthCheck| {
        spec_with(move |s| {
            s.components[1].ports = vec!["8080:80".into()];
            s.components[1].health = Some(h);
        })
    };
    let tcp = pb::HealthCheck {
        kind: "tcp".into(),
        port: 80,
        ..Default::default()
    };
    let cases: Vec<(pb::ServiceSpec, &str)> = vec![
        (
            with_health(pb::HealthCheck {
                kind: "grpc".into(),
                ..tcp.clone()
            }),
            "components[1].health.kind: invalid health kind \"grpc\": expected \"command\", \"tcp\" or \"http\"",
        ),
        (
            with_health(pb::HealthCheck {
                kind: String::new(),
                ..tcp.clone()
            }),
            "components[1].health: health check is missing required key \"kind\"",
        ),
        (
            with_health(pb::HealthCheck {
                path: "/".into(),
                ..tcp.clone()
            }),
            "components[1].health.path: \"path\" does not belong to a \"tcp\" health check",
        ),
        (
            with_health(pb::HealthCheck {
                port: 0,
                ..tcp.clone()
            }),
            "components[1].health: health check of kind \"tcp\" is missing required key \"port\"",
        ),
        (
            with_health(pb::HealthCheck {
                port: 8080,
                ..tcp.clone()
            }),
            "components[1].health.port: health port 8080 is not published",
        ),
        (
            with_health(pb::HealthCheck {
                port: 70000,
                ..tcp.clone()
            }),
            "components[1].health.port: invalid health port 70000: must be between 1 and 65535",
        ),
        (
            with_health(pb::HealthCheck {
                interval: "-5s".into(),
                ..tcp.clone()
            }),
            "components[1].health.interval: invalid health interval \"-5s\": must not be negative",
        ),
        (
            with_health(pb::HealthCheck {
                interval: "2s".into(),
                timeout: "3s".into(),
                ..tcp.clone()
            }),
            "components[1].health.timeout: invalid health timeout \"3s\": must not be longer than the interval (2s)",
        ),
        (
            with_health(pb::HealthCheck {
                retries: 101,
                ..tcp.clone()
            }),
            "components[1].health.retries: invalid health retries 101",
        ),
        (
            with_health(pb::HealthCheck {
                kind: "command".into(),
                port: 0,
                command: vec![String::new()],
                ..Default::default()
            }),
            "components[1].health.command: invalid health command [\"\"]: the program (the first element) must not be empty",
        ),
        (
            with_health(pb::HealthCheck {
                kind: "command".into(),
                port: 0,
                ..Default::default()
            }),
            "components[1].health: health check of kind \"command\" is missing required key \"command\"",
        ),
        (
            spec_with(|s| s.components[1].depends_on = vec!["db".into()]),
            "components[1].depends_on[0]: invalid depends_on \"db\": no component of that name; known components: api",
        ),
        (
            spec_with(|s| s.components[1].depends_on = vec!["web".into()]),
            "components[1].depends_on[0]: invalid depends_on \"web\": a component cannot depend on itself",
        ),
        (
            spec_with(|s| s.components[1].depends_on = vec!["api".into(), "api".into()]),
            "components[1].depends_on[1]: duplicate depends_on entry \"api\"",
        ),
        (
            spec_with(|s| {
                s.components[0].depends_on = vec!["web".into()];
                s.components[1].depends_on = vec!["api".into()];
            }),
            "components[1].depends_on[0]: invalid depends_on \"api\": dependency cycle api -> web -> api",
        ),
    ];
    for (i, (spec, want)) in cases.into_iter().enumerate() {
        let err = ServiceDef::from_proto(&spec).expect_err(want);
        assert!(
            matches!(err, ServiceDefError::InvalidRequest { .. }),
            "case {i}"
        );
        assert!(err.message().starts_with(want), "case {i}: {err}");
    }
}

#[test]
fn health_and_depends_on_to_toml_round_trip() {
    let def = ok(HEALTHY);
    let written = to_toml(&def);
    assert_eq!(ok(&written), def, "{written}");
    for (a, b) in def.components.iter().zip(&ok(&written).components) {
        assert_eq!(a.spec_hash(), b.spec_hash());
    }
    // Defaults are left out: the shortened timeout too.
    assert!(
        written.contains("[components.health]\nkind = \"tcp\"\nport = 6379\ninterval = \"2s\"\n\n"),
        "{written}"
    );
    assert!(
        written.contains("[components.health]\nkind = \"http\"\nport = 9000\n"),
        "{written}"
    );
    assert!(
        written.contains("depends_on = [\"db\", \"cache\"]\n"),
        "{written}"
    );
    assert!(
        written.contains(
            "interval = \"1m 30s\"\ntimeout = \"2s 500ms\"\nretries = 5\nstart_period = \"1m\"\n"
        ),
        "{written}"
    );
    // Components without them are written as before.
    let full = to_toml(&ok(FULL));
    assert!(
        !full.contains("health") && !full.contains("depends_on"),
        "{full}"
    );
}

#[test]
fn spec_hash_is_unchanged_without_health_and_ignores_depends_on() {
    // Definitions with neither key keep the digests of earlier versions.
    assert_eq!(ok(FULL).components[0].spec_hash(), PINNED_FULL_HASH);
    for (src, pinned) in PINNED_BEFORE_KERNEL_BOOT {
        assert_eq!(ok(src).components[0].spec_hash(), *pinned, "{src}");
    }
    // depends_on orders starts; the instance is the same.
    let mut api = ok(FULL).components[0].clone();
    api.depends_on = vec!["db".into()];
    assert_eq!(api.spec_hash(), PINNED_FULL_HASH);

    // A health check is part of the digest, every field of it.
    api.health = Some(HealthCheck::new(HealthProbe::Http {
        port: 8443,
        path: "/".into(),
        status: None,
    }));
    let hash = api.spec_hash();
    assert_ne!(hash, PINNED_FULL_HASH);
    let changes: Vec<fn(&mut HealthCheck)> = vec![
        |h| h.probe = HealthProbe::Tcp { port: 8443 },
        |h| {
            h.probe = HealthProbe::Command {
                argv: vec!["true".into()],
            }
        },
        |h| {
            h.probe = HealthProbe::Http {
                port: 8444,
                path: "/".into(),
                status: None,
            }
        },
        |h| {
            h.probe = HealthProbe::Http {
                port: 8443,
                path: "/x".into(),
                status: None,
            }
        },
        |h| {
            h.probe = HealthProbe::Http {
                port: 8443,
                path: "/".into(),
                status: Some(200),
            }
        },
        |h| h.interval += std::time::Duration::from_millis(1),
        |h| h.timeout -= std::time::Duration::from_millis(1),
        |h| h.retries += 1,
        |h| h.start_period = std::time::Duration::from_secs(1),
    ];
    for (i, change) in changes.into_iter().enumerate() {
        let mut c = api.clone();
        if let Some(h) = c.health.as_mut() {
            change(h);
        }
        assert_ne!(c.spec_hash(), hash, "change {i} must change the hash");
    }
    // Pinned, so the encoding of the health check does not drift either.
    assert_eq!(
        hash,
        "c66659fb0c1034f3d9bdbe41b06ec7f2f513b1a183950506dc45de852736fdc3"
    );
}

#[test]
fn health_and_depends_on_json() {
    let def = ok(HEALTHY);
    let web = def.component("web").expect("web");
    let json = serde_json::to_value(web).expect("serialize");
    assert_eq!(
        json["health"],
        serde_json::json!({
            "kind": "http",
            "port": 8080,
            "path": "/healthz?full=1",
            "status": 204,
            "interval_ms": 90000,
            "timeout_ms": 2500,
            "retries": 5,
            "start_period_ms": 60000,
        })
    );
    assert_eq!(json["depends_on"], serde_json::json!(["db", "cache"]));
    for c in &def.components {
        let text = serde_json::to_string(c).expect("serialize");
        let back: ComponentDef = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(&back, c, "{text}");
    }
    // Without them, no keys (records stay as they were), and records from
    // before they existed load.
    let text = serde_json::to_string(&ok(FULL).components[0]).expect("serialize");
    assert!(
        !text.contains("health") && !text.contains("depends_on"),
        "{text}"
    );
    let old: ComponentDef = serde_json::from_str(r#"{"name":"b","image":"i"}"#).expect("old json");
    assert_eq!((old.health, old.depends_on), (None, Vec::new()));
}
