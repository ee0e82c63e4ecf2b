//! Parsing and formatting of the string-valued fields of a definition:
//! ports, volumes, memory sizes, spans of time, restart policies and names.
//!
//! Every parser returns an [`InvalidValue`] whose message names the bad value,
//! e.g. `invalid port "8080:abc": container port "abc" is not a number`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use crate::instance::{PortMapping, VolumeMount};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why one value of a definition was rejected. The message is lower-case and
/// names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub(crate) String);

impl InvalidValue {
    /// The message, e.g. `invalid memory "12X": unknown unit "X"`.
    pub fn message(&self) -> &str {
        &self.0
    }
}

/// Longest service or component name.
pub const MAX_NAME_LEN: usize = 63;
/// Longest instance name (`<service>-<component>`).
pub const MAX_INSTANCE_NAME_LEN: usize = 128;

/// Mount options accepted in a volume's third field.
pub const VOLUME_OPTIONS: &[&str] = &[
    "ro", "rw", "z", "Z", "shared", "slave", "private", "rshared", "rslave", "rprivate", "nocopy",
    "U",
];

/// Checks a service or component name against `[a-z0-9][a-z0-9-]*`, at most
/// [`MAX_NAME_LEN`] characters; returns why it is bad.
pub fn name_problem(name: &str) -> Option<String> {
    let Some(first) = name.chars().next() else {
        return Some("must not be empty".into());
    };
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Some("must start with a lower-case letter or a digit".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!(
            "contains {c:?}; only lower-case letters, digits and '-' are allowed"
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "is {} characters long, the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    None
}

/// Whether `key` is a valid environment variable name, `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_env_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `name` is a named volume, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn is_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Checks a restart policy: `no`, `always`, `on-failure`, `on-failure:N` or
/// `unless-stopped`.
pub(crate) fn check_restart(policy: &str) -> Result<(), InvalidValue> {
    let ok = match policy {
        "no" | "always" | "on-failure" | "unless-stopped" => true,
        _ => policy.strip_prefix("on-failure:").is_some_and(|n| {
            !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) && n.parse::<u32>().is_ok()
        }),
    };
    if ok {
        Ok(())
    } else {
        Err(InvalidValue(format!(
            "invalid restart policy {policy:?}: expected no, always, on-failure, on-failure:N or unless-stopped"
        )))
    }
}

/// Parses a published port, `[host-ip:]host-port:container-port[/tcp|udp]`.
/// The host address is IPv4 or bracketed IPv6 (`[::1]:8080:80`); the
/// protocol defaults to `tcp`.
pub fn parse_port(spec: &str) -> Result<PortMapping, InvalidValue> {
    let bad = |why: String| InvalidValue(format!("invalid port {spec:?}: {why}"));
    const SHAPE: &str = "expected [host-ip:]host-port:container-port[/tcp|udp]";

    let (rest, protocol) = match spec.rsplit_once('/') {
        Some((rest, proto @ ("tcp" | "udp"))) => (rest, proto),
        Some((_, proto)) => {
            return Err(bad(format!("protocol {proto:?} is not tcp or udp")));
        }
        None => (spec, "tcp"),
    };
    let (host_ip, ports) = if let Some(after) = rest.strip_prefix('[') {
        let Some((ip, ports)) = after.split_once("]:") else {
            return Err(bad(SHAPE.into()));
        };
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| bad(format!("host ip {ip:?} is not a valid IPv6 address")))?;
        (ip.to_string(), ports)
    } else {
        match rest.matches(':').count() {
            1 => (String::new(), rest),
            2 => {
                let (ip, ports) = rest.split_once(':').unwrap_or_default();
                let ip: Ipv4Addr = ip.parse().map_err(|_| {
                    bad(format!(
                        "host ip {ip:?} is not a valid IPv4 address (write IPv6 addresses in brackets)"
                    ))
                })?;
                (ip.to_string(), ports)
            }
            _ => return Err(bad(SHAPE.into())),
        }
    };
    let Some((host, container)) = ports.split_once(':') else {
        return Err(bad(SHAPE.into()));
    };
    if container.contains(':') {
        return Err(bad(SHAPE.into()));
    }
    let host_port = port_number("host", host).map_err(bad)?;
    let container_port = port_number("container", container).map_err(bad)?;
    Ok(PortMapping {
        host_ip,
        host_port,
        container_port,
        protocol: protocol.to_string(),
    })
}

fn port_number(which: &str, text: &str) -> Result<u16, String> {
    if text.is_empty() {
        return Err(format!("{which} port is missing"));
    }
    if !text.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("{which} port {text:?} is not a number"));
    }
    match text.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{which} port {text} is out of range 1-65535")),
    }
}

/// Formats a port in the canonical form [`parse_port`] reads back:
/// IPv6 host addresses in brackets, `/tcp` left out.
pub fn format_port(port: &PortMapping) -> String {
    let mut out = String::new();
    if port.host_ip.contains(':') {
        out.push_str(&format!("[{}]:", port.host_ip));
    } else if !port.host_ip.is_empty() {
        out.push_str(&format!("{}:", port.host_ip));
    }
    out.push_str(&format!("{}:{}", port.host_port, port.container_port));
    if port.protocol != "tcp" {
        out.push_str(&format!("/{}", port.protocol));
    }
    out
}

/// Whether two host addresses can collide on the same port: they are equal,
/// or one of them is a wildcard (empty, `0.0.0.0`, `::`).
pub fn host_ips_overlap(a: &str, b: &str) -> bool {
    let wildcard = |ip: &str| matches!(ip, "" | "0.0.0.0" | "::");
    a == b || wildcard(a) || wildcard(b)
}

/// Parses a span of time as written in a definition (`"10s"`, `"1m 30s"`,
/// `"500ms"`, humantime syntax): a whole number of milliseconds, zero
/// allowed. Returns why the text is not one, to follow `invalid <what>
/// "<text>": `.
pub(crate) fn parse_span(text: &str) -> Result<Duration, String> {
    if text.trim_start().starts_with('-') {
        return Err("must not be negative".into());
    }
    let span = humantime::parse_duration(text)
        .map_err(|_| String::from("expected a span such as \"10s\", \"1m 30s\" or \"500ms\""))?;
    if span.subsec_nanos() % 1_000_000 != 0 {
        return Err("must be a whole number of milliseconds".into());
    }
    if u64::try_from(span.as_millis()).is_err() {
        return Err("too large".into());
    }
    Ok(span)
}

/// Formats a span so that [`parse_span`] reads it back: `"10s"`,
/// `"1m 30s"`, `"0s"`.
pub(crate) fn format_span(span: Duration) -> String {
    humantime::format_duration(span).to_string()
}

/// Parses a mount, `source:destination[:options]`. The source is an absolute
/// path or a named volume; the destination is absolute; options are
/// comma-separated from [`VOLUME_OPTIONS`].
pub fn parse_volume(spec: &str) -> Result<VolumeMount, InvalidValue> {
    let bad = |why: String| InvalidValue(format!("invalid volume {spec:?}: {why}"));
    let mut parts = spec.splitn(3, ':');
    let source = parts.next().unwrap_or_default();
    let Some(destination) = parts.next() else {
        return Err(bad("expected source:destination[:options]".into()));
    };
    let options = parts.next();
    if source.is_empty() {
        return Err(bad("source is empty".into()));
    }
    if !source.starts_with('/') && !is_volume_name(source) {
        return Err(bad(format!(
            "source {source:?} is neither an absolute path nor a volume name"
        )));
    }
    if destination.is_empty() {
        return Err(bad("destination is empty".into()));
    }
    if !destination.starts_with('/') {
        return Err(bad(format!(
            "destination {destination:?} is not an absolute path"
        )));
    }
    let mut opts: Vec<String> = Vec::new();
    if let Some(options) = options {
        for opt in options.split(',') {
            if !VOLUME_OPTIONS.contains(&opt) {
                return Err(bad(format!(
                    "unknown option {opt:?}; expected one of {}",
                    VOLUME_OPTIONS.join(", ")
                )));
            }
            if opts.iter().any(|o| o == opt) {
                return Err(bad(format!("option {opt:?} is given twice")));
            }
            opts.push(opt.to_string());
        }
        if opts.iter().any(|o| o == "ro") && opts.iter().any(|o| o == "rw") {
            return Err(bad("options \"ro\" and \"rw\" contradict each other".into()));
        }
    }
    Ok(VolumeMount {
        source: source.to_string(),
        destination: destination.to_string(),
        options: opts,
    })
}

/// Formats a mount in the form [`parse_volume`] reads back.
pub fn format_volume(volume: &VolumeMount) -> String {
    if volume.options.is_empty() {
        format!("{}:{}", volume.source, volume.destination)
    } else {
        format!(
            "{}:{}:{}",
            volume.source,
            volume.destination,
            volume.options.join(",")
        )
    }
}

/// A memory size, as written in the definition and in bytes.
///
/// Accepted forms: a number of bytes (`"1048576"`, or a TOML integer), or a
/// number with a unit `k`, `m`, `g` or `t` (either case) optionally followed by
/// `B` or `iB`: `"256M"`, `"1G"`, `"512MiB"`, `"64kb"`. Units are binary
/// multiples (1K = 1024 bytes) whatever the suffix. Zero is refused.
///
/// Serialized as its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Memory {
    bytes: u64,
    text: String,
}

impl Memory {
    /// Parses a memory size such as `"256M"`.
    pub fn parse(text: &str) -> Result<Memory, InvalidValue> {
        let bad = |why: &str| InvalidValue(format!("invalid memory {text:?}: {why}"));
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        if number.is_empty() {
            return Err(bad(
                "expected a number with an optional unit k, m, g or t, such as \"256M\"",
            ));
        }
        let shift = match unit {
            "" | "b" | "B" => 0,
            _ => {
                let mut chars = unit.chars();
                let shift = match chars.next() {
                    Some('k' | 'K') => 10,
                    Some('m' | 'M') => 20,
                    Some('g' | 'G') => 30,
                    Some('t' | 'T') => 40,
                    _ => return Err(bad(&format!("unknown unit {unit:?}"))),
                };
                if !matches!(chars.as_str(), "" | "b" | "B" | "ib" | "iB") {
                    return Err(bad(&format!("unknown unit {unit:?}")));
                }
                shift
            }
        };
        let bytes = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1u64 << shift))
            .ok_or_else(|| bad("too large"))?;
        if bytes == 0 {
            return Err(bad("must be greater than zero"));
        }
        Ok(Memory {
            bytes,
            text: text.to_string(),
        })
    }

    /// A size of exactly `bytes`, written as a plain number.
    pub fn from_bytes(bytes: u64) -> Memory {
        Memory {
            bytes,
            text: bytes.to_string(),
        }
    }

    /// The size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The size as written, e.g. `"256M"`.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Memory {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Memory, InvalidValue> {
        Memory::parse(s)
    }
}

impl Serialize for Memory {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Memory, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Bytes(u64),
        }
        match Repr::deserialize(deserializer)? {
            Repr::Text(text) => Memory::parse(&text).map_err(serde::de::Error::custom),
            Repr::Bytes(0) => Err(serde::de::Error::custom("memory must be greater than zero")),
            Repr::Bytes(bytes) => Ok(Memory::from_bytes(bytes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_and_format_round_trip() {
        let cases = [
            ("8080:80", "", 8080, 80, "tcp", "8080:80"),
            (
                "127.0.0.1:8443:8443",
                "127.0.0.1",
                8443,
                8443,
                "tcp",
                "127.0.0.1:8443:8443",
            ),
            ("53:53/udp", "", 53, 53, "udp", "53:53/udp"),
            ("1:65535/tcp", "", 1, 65535, "tcp", "1:65535"),
            ("[::1]:80:8080", "::1", 80, 8080, "tcp", "[::1]:80:8080"),
            (
                "[0:0::1]:80:8080/udp",
                "::1",
                80,
                8080,
                "udp",
                "[::1]:80:8080/udp",
            ),
        ];
        for (text, ip, host, container, proto, canonical) in cases {
            let p = parse_port(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (
                    p.host_ip.as_str(),
                    p.host_port,
                    p.container_port,
                    p.protocol.as_str()
                ),
                (ip, host, container, proto),
                "{text}"
            );
            assert_eq!(format_port(&p), canonical);
            assert_eq!(parse_port(canonical).ok(), Some(p));
        }
    }

    #[test]
    fn bad_ports_name_the_problem() {
        let cases = [
            ("8080:abc", "container port \"abc\" is not a number"),
            ("abc:80", "host port \"abc\" is not a number"),
            ("0:80", "host port 0 is out of range 1-65535"),
            ("80:70000", "container port 70000 is out of range 1-65535"),
            ("8080", "expected [host-ip:]host-port:container-port"),
            ("1:2:3:4", "expected [host-ip:]host-port:container-port"),
            ("80:80/sctp", "protocol \"sctp\" is not tcp or udp"),
            (
                "300.1.1.1:80:80",
                "host ip \"300.1.1.1\" is not a valid IPv4 address",
            ),
            ("[::g]:80:80", "host ip \"::g\" is not a valid IPv6 address"),
            ("[::1]:80", "expected [host-ip:]host-port:container-port"),
            (":80", "host port is missing"),
            ("80:", "container port is missing"),
        ];
        for (text, want) in cases {
            let err = parse_port(text).expect_err(text);
            assert!(
                err.message()
                    .starts_with(&format!("invalid port {text:?}: ")),
                "{err}"
            );
            assert!(err.message().contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn volumes_parse_and_format() {
        let v = parse_volume("/srv/a:/data:ro,z").expect("valid");
        assert_eq!(v.source, "/srv/a");
        assert_eq!(v.destination, "/data");
        assert_eq!(v.options, ["ro", "z"]);
        assert_eq!(format_volume(&v), "/srv/a:/data:ro,z");
        let v = parse_volume("pgdata:/var/lib/postgresql").expect("valid");
        assert_eq!(v.source, "pgdata");
        assert!(v.options.is_empty());
        assert_eq!(format_volume(&v), "pgdata:/var/lib/postgresql");
    }

    #[test]
    fn bad_volumes_name_the_problem() {
        let cases = [
            ("/srv/a", "expected source:destination[:options]"),
            (
                "/srv/a:data",
                "destination \"data\" is not an absolute path",
            ),
            (
                "./a:/data",
                "source \"./a\" is neither an absolute path nor a volume name",
            ),
            (":/data", "source is empty"),
            ("/a:/b:rx", "unknown option \"rx\""),
            ("/a:/b:ro,rw", "contradict"),
            ("/a:/b:ro,ro", "given twice"),
            ("/a:/b:", "unknown option \"\""),
        ];
        for (text, want) in cases {
            let err = parse_volume(text).expect_err(text);
            assert!(err.message().starts_with("invalid volume "), "{err}");
            assert!(err.message().contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn memory_units_are_binary() {
        let cases = [
            ("1048576", 1_048_576),
            ("1024B", 1024),
            ("4k", 4096),
            ("4K", 4096),
            ("4KiB", 4096),
            ("256M", 256 << 20),
            ("256MB", 256 << 20),
            ("512MiB", 512 << 20),
            ("1G", 1 << 30),
            ("2gb", 2 << 30),
            ("1T", 1 << 40),
        ];
        for (text, bytes) in cases {
            let m = Memory::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(m.bytes(), bytes, "{text}");
            assert_eq!(m.text(), text);
        }
        for (text, want) in [
            ("", "expected a number"),
            ("M", "expected a number"),
            ("12X", "unknown unit \"X\""),
            ("1Mi", "unknown unit \"Mi\""),
            ("1.5G", "unknown unit \".5G\""),
            ("0", "greater than zero"),
            ("99999999999999999999", "too large"),
            ("17179869184G", "too large"),
            ("256 M", "unknown unit \" M\""),
        ] {
            let err = Memory::parse(text).expect_err(text);
            assert!(err.message().contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn memory_serializes_as_text() {
        let m = Memory::parse("256M").expect("valid");
        let json = serde_json::to_string(&m).expect("serializes");
        assert_eq!(json, "\"256M\"");
        assert_eq!(serde_json::from_str::<Memory>(&json).ok(), Some(m));
        assert_eq!(
            serde_json::from_str::<Memory>("1024").ok(),
            Some(Memory::from_bytes(1024))
        );
        assert!(serde_json::from_str::<Memory>("\"12X\"").is_err());
    }

    #[test]
    fn spans() {
        for (text, ms) in [
            ("10s", 10_000),
            ("1m30s", 90_000),
            ("1m 30s", 90_000),
            ("500ms", 500),
            ("1.5s", 1500),
            ("0s", 0),
            ("0", 0),
            ("2h", 7_200_000),
        ] {
            let span = parse_span(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(span, Duration::from_millis(ms), "{text}");
            assert_eq!(parse_span(&format_span(span)), Ok(span), "{text}");
        }
        assert_eq!(format_span(Duration::from_millis(90_500)), "1m 30s 500ms");
        for (text, want) in [
            ("-5s", "must not be negative"),
            (" -1ms", "must not be negative"),
            ("10", "expected a span such as \"10s\""),
            ("soon", "expected a span"),
            ("", "expected a span"),
            ("10S", "expected a span"),
            ("1500us", "whole number of milliseconds"),
            ("18446744073709551615s", "too large"),
        ] {
            let err = parse_span(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn restart_policies() {
        for ok in [
            "no",
            "always",
            "on-failure",
            "on-failure:3",
            "unless-stopped",
        ] {
            assert!(check_restart(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "sometimes",
            "on-failure:",
            "on-failure:x",
            "on-failure:-1",
            "No",
        ] {
            let err = check_restart(bad).expect_err(bad);
            assert!(err.message().starts_with("invalid restart policy"), "{err}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(name_problem("metacrypt"), None);
        assert_eq!(name_problem("0a-b"), None);
        assert_eq!(name_problem(&"a".repeat(63)), None);
        assert!(name_problem("").is_some_and(|m| m.contains("empty")));
        assert!(name_problem("-a").is_some_and(|m| m.contains("must start")));
        assert!(name_problem("Api").is_some_and(|m| m.contains("must start")));
        assert!(name_problem("a_b").is_some_and(|m| m.contains("'_'")));
        assert!(name_problem(&"a".repeat(64)).is_some_and(|m| m.contains("limit is 63")));
        assert!(is_env_key("RUST_LOG") && is_env_key("_x1") && !is_env_key("1X"));
        assert!(!is_env_key("") && !is_env_key("A-B"));
    }
}
