//! Unit tests of `files`: path parsing (a table of hostile paths and a
//! property test), error mapping, temporary names, and the component-walk
//! resolver called directly. Attacks on a real tree are in
//! `tests/files_confinement.rs`.

use std::os::unix::fs::{PermissionsExt, symlink};

use proptest::prelude::*;
use rustix::fd::AsFd;
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use super::error::from_errno;
use super::path::{component_problem, quote};
use super::resolve::{DIR_FLAGS, Follow, create_dirs, open_beneath, open_by_components};
use super::upload::temp_name;
use super::*;

fn parse(raw: &str) -> Result<RemotePath, FilesError> {
    RemotePath::parse(raw)
}

/// The reason of an `InvalidPath`, or a panic naming what came instead.
fn rejection(raw: &str) -> String {
    match parse(raw) {
        Err(FilesError::InvalidPath { reason, .. }) => reason,
        other => panic!("{raw:?} should be rejected, got {other:?}"),
    }
}

#[test]
fn normalizes_dots_and_slashes() {
    for (raw, normalized) in [
        ("a", "a"),
        ("a/b", "a/b"),
        ("./a//b/", "a/b"),
        ("a/./b/.", "a/b"),
        ("a///b////c", "a/b/c"),
        ("./././x", "x"),
        ("x/", "x"),
    ] {
        assert_eq!(parse(raw).unwrap().as_str(), normalized, "{raw:?}");
    }
}

#[test]
fn empty_and_dot_paths_are_the_root() {
    for raw in ["", ".", "./", "./.", ".//./"] {
        let path = parse(raw).unwrap();
        assert!(path.is_root(), "{raw:?}");
        assert_eq!(path.to_string(), ".");
        assert_eq!(path.syscall_path(), ".");
        assert_eq!(path.components().count(), 0);
        assert_eq!(path, RemotePath::root());
    }
}

#[test]
fn hostile_paths_are_rejected_with_the_reason() {
    let long_component = "a".repeat(MAX_COMPONENT_LEN + 1);
    let long_path = "ab/".repeat(MAX_PATH_LEN / 3 + 1);
    for (raw, reason) in [
        ("..", "\"..\" component"),
        ("../x", "\"..\" component"),
        ("a/..", "\"..\" component"),
        ("a/../../x", "\"..\" component"),
        ("a/../a", "\"..\" component"),
        ("./..", "\"..\" component"),
        ("/etc/passwd", "absolute"),
        ("/", "absolute"),
        ("//a", "absolute"),
        ("\0", "NUL"),
        ("a\0b", "NUL"),
        ("a/\0/b", "NUL"),
        ("a\nb", "control character '\\n'"),
        ("tab\there", "control character '\\t'"),
        ("esc\u{1b}[31m", "control character '\\u{1b}'"),
        ("del\u{7f}", "control character '\\u{7f}'"),
        ("csi\u{9b}2J", "control character '\\u{9b}'"),
        ("\r", "control character '\\r'"),
        (long_component.as_str(), "limit is 255"),
        (long_path.as_str(), "limit is 4095"),
    ] {
        let got = rejection(raw);
        assert!(got.contains(reason), "{raw:?}: {got:?} lacks {reason:?}");
    }
}

#[test]
fn literal_look_alikes_are_ordinary_names() {
    for raw in [
        "%2e%2e",
        "%2e%2e/%2fetc",
        "..a",
        "a..",
        "...",
        ".hidden",
        "\u{2024}\u{2024}",
        "\u{ff0e}\u{ff0e}/x",
        "a\u{2215}b",
        "..\\..\\windows",
        "C:\\x",
        "~",
        "~root",
        "$HOME",
        "naïve/日本語",
        " leading and trailing ",
    ] {
        let path = parse(raw).unwrap();
        assert_eq!(path.as_str(), raw.trim_end_matches('/'), "{raw:?}");
        assert!(path.components().all(|c| c != ".."));
    }
}

#[test]
fn limits_are_inclusive() {
    let component = "a".repeat(MAX_COMPONENT_LEN);
    assert_eq!(parse(&component).unwrap().as_str(), component);
    let mut path = "b/".repeat((MAX_PATH_LEN - 1) / 2);
    path.push('c');
    assert_eq!(path.len(), MAX_PATH_LEN);
    assert!(parse(&path).is_ok());
    path.push('c');
    assert!(rejection(&path).contains("4096 bytes long"));
}

#[test]
fn a_multibyte_component_counts_bytes() {
    // 128 two-byte characters: 256 bytes, one over.
    let name = "é".repeat(128);
    assert!(rejection(&name).contains("component of 256 bytes"));
    assert!(parse(&"é".repeat(127)).is_ok());
}

#[test]
fn errors_quote_the_path_escaped() {
    let err = parse("x/../\u{1b}]0;pwned\u{7}").unwrap_err().to_string();
    assert!(
        err.starts_with("invalid path \"x/../\\u{1b}]0;pwned\\u{7}\""),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'));
    let long = format!("{}/..", "é".repeat(1000));
    let err = parse(&long).unwrap_err().to_string();
    assert!(err.len() < 300, "{err}");
    assert!(err.contains("(2003 bytes)"), "{err}");
}

#[test]
fn quote_cuts_on_a_character_boundary() {
    let quoted = quote(&"é".repeat(100));
    assert!(quoted.starts_with(&"é".repeat(48)));
    assert!(quoted.ends_with("... (200 bytes)"));
    assert_eq!(quote("short"), "short");
}

#[test]
fn split_parent_name_and_join() {
    let path = parse("a/b/c").unwrap();
    let (parent, name) = path.split_last().unwrap();
    assert_eq!((parent.as_str(), name), ("a/b", "c"));
    assert_eq!(path.file_name(), Some("c"));
    assert_eq!(path.parent().unwrap().to_string(), "a/b");
    assert_eq!(path.depth(), 3);
    let top = parse("top").unwrap();
    assert_eq!(top.split_last().unwrap().0, RemotePath::root());
    assert_eq!(RemotePath::root().split_last(), None);
    assert_eq!(RemotePath::root().file_name(), None);

    assert_eq!(RemotePath::root().join("x").unwrap().as_str(), "x");
    assert_eq!(path.join("d").unwrap().as_str(), "a/b/c/d");
    for bad in ["", ".", "..", "x/y", "/", "a\0", "\n"] {
        assert!(
            matches!(path.join(bad), Err(FilesError::InvalidPath { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn strip_prefix_is_by_component() {
    let path = parse("a/b/c").unwrap();
    assert_eq!(
        path.strip_prefix(&parse("a").unwrap()).unwrap().as_str(),
        "b/c"
    );
    assert_eq!(path.strip_prefix(&RemotePath::root()).unwrap(), path);
    assert!(path.strip_prefix(&path).unwrap().is_root());
    assert_eq!(path.strip_prefix(&parse("a/b/c/d").unwrap()), None);
    assert_eq!(
        parse("ab/c").unwrap().strip_prefix(&parse("a").unwrap()),
        None
    );
}

#[test]
fn from_str_and_debug() {
    let path: RemotePath = "./x//y".parse().unwrap();
    assert_eq!(format!("{path:?}"), "RemotePath(\"x/y\")");
    assert_eq!(format!("{:?}", RemotePath::root()), "RemotePath(\".\")");
    assert!("/x".parse::<RemotePath>().is_err());
}

#[test]
fn component_problem_allows_plain_names() {
    assert_eq!(component_problem("file.txt"), None);
    assert_eq!(component_problem("%00"), None);
    assert!(component_problem("..").is_some());
    assert!(
        component_problem("a\u{85}b").is_some(),
        "NEL is a C1 control"
    );
}

#[test]
fn modes_are_permission_bits_only() {
    assert!(check_mode(0o644).is_ok());
    assert!(check_mode(0o777).is_ok());
    assert!(check_mode(0).is_ok());
    for bad in [0o4755, 0o2755, 0o1777, 0o100644, u32::MAX] {
        let err = check_mode(bad).unwrap_err();
        assert!(matches!(err, FilesError::InvalidMode { mode } if mode == bad));
        assert!(err.to_string().contains("0o777"), "{err}");
    }
}

#[test]
fn errnos_map_to_precise_variants() {
    let path = parse("a/b").unwrap();
    let map = |errno| from_errno(errno, "open", &path, "why");
    assert!(matches!(map(Errno::NOENT), FilesError::NotFound { path } if path == "a/b"));
    assert!(matches!(map(Errno::XDEV), FilesError::Escapes { .. }));
    assert!(matches!(
        map(Errno::LOOP),
        FilesError::Symlink { reason: "why", .. }
    ));
    assert!(matches!(
        map(Errno::NOTDIR),
        FilesError::NotADirectory { .. }
    ));
    assert!(matches!(map(Errno::ISDIR), FilesError::IsADirectory { .. }));
    assert!(matches!(
        map(Errno::NOTEMPTY),
        FilesError::DirectoryNotEmpty { .. }
    ));
    assert!(matches!(
        map(Errno::NAMETOOLONG),
        FilesError::InvalidPath { .. }
    ));
    assert!(matches!(map(Errno::NOSPC), FilesError::NoSpace { .. }));
    assert!(matches!(map(Errno::DQUOT), FilesError::NoSpace { .. }));
    let FilesError::Io { op, path, source } = map(Errno::IO) else {
        panic!("EIO should be Io");
    };
    assert_eq!((op, path.as_str()), ("open", "a/b"));
    assert_eq!(source.raw_os_error(), Some(Errno::IO.raw_os_error()));
}

#[test]
fn messages_are_lower_case_without_a_trailing_period() {
    let path = || "a/b".to_owned();
    let errors = [
        map_err(Errno::NOENT),
        map_err(Errno::XDEV),
        map_err(Errno::LOOP),
        FilesError::HardLinked {
            path: path(),
            links: 2,
        },
        FilesError::NotAFile {
            path: path(),
            kind: FileKind::Other,
        },
        FilesError::IsRoot { op: "remove" },
        FilesError::TooLarge {
            path: path(),
            limit: 10,
        },
        FilesError::DigestMismatch {
            path: path(),
            expected: "00".into(),
            actual: "11".into(),
        },
        FilesError::TooDeep {
            path: path(),
            limit: 3,
        },
        FilesError::NoServiceDir {
            dir: "/srv/x".into(),
        },
    ];
    for err in errors {
        let msg = err.to_string();
        let first = msg.trim_start_matches('"').chars().next().unwrap();
        assert!(!first.is_uppercase(), "{msg}");
        assert!(!msg.ends_with('.'), "{msg}");
    }
    assert_eq!(
        map_err(Errno::XDEV).to_string(),
        "\"a/b\" leads outside the service directory"
    );
}

fn map_err(errno: Errno) -> FilesError {
    from_errno(errno, "open", "a/b", "a reason")
}

#[test]
fn temp_names_fit_a_component_and_mark_the_target() {
    let temp = temp_name("config.toml", 0xabc);
    assert_eq!(temp, ".config.toml.mcp-upload-0000000000000abc");
    let long = "x".repeat(MAX_COMPONENT_LEN);
    let temp = temp_name(&long, u64::MAX);
    assert_eq!(temp.len(), MAX_COMPONENT_LEN);
    assert!(temp.ends_with(".mcp-upload-ffffffffffffffff"));
    // Cut on a character boundary.
    let wide = "日".repeat(85);
    let temp = temp_name(&wide, 1);
    assert!(temp.len() <= MAX_COMPONENT_LEN);
    assert!(temp.starts_with(".日"));
    assert!(component_problem(&temp).is_none());
}

#[test]
fn public_types_cross_threads() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<ServiceTree>();
    sync::<ServiceTree>();
    send::<Upload>();
    send::<ReadFile>();
    send::<DirEntries>();
    send::<Walk>();
    send::<FilesError>();
    sync::<FilesError>();
}

/// A directory with `real/file`, `link -> real` and `out -> ..`.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::fs::write(dir.path().join("real/file"), "inside").unwrap();
    symlink("real", dir.path().join("link")).unwrap();
    symlink("..", dir.path().join("out")).unwrap();
    dir
}

fn open_root(dir: &tempfile::TempDir) -> rustix::fd::OwnedFd {
    rustix::fs::open(dir.path(), DIR_FLAGS, Mode::empty()).unwrap()
}

#[test]
fn component_walk_opens_real_paths() {
    let dir = fixture();
    let root = open_root(&dir);
    let fd =
        open_by_components(root.as_fd(), &parse("real/file").unwrap(), OFlags::RDONLY).unwrap();
    let mut contents = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut contents).unwrap();
    assert_eq!(contents, "inside");
    let fd = open_by_components(root.as_fd(), &RemotePath::root(), DIR_FLAGS).unwrap();
    assert_eq!(
        rustix::fs::fstat(&fd).unwrap().st_ino,
        rustix::fs::fstat(&root).unwrap().st_ino
    );
}

#[test]
fn component_walk_refuses_every_symlink() {
    let dir = fixture();
    let root = open_root(&dir);
    for (raw, flags) in [
        ("link/file", OFlags::RDONLY),
        ("link", DIR_FLAGS),
        ("link", OFlags::RDONLY),
        ("out/x", OFlags::RDONLY),
        ("out", DIR_FLAGS),
    ] {
        let got = open_by_components(root.as_fd(), &parse(raw).unwrap(), flags);
        assert_eq!(got.err(), Some(Errno::LOOP), "{raw:?}");
    }
    // With O_PATH the last component is the link itself, for the caller to
    // inspect; it is never followed.
    let fd = open_by_components(root.as_fd(), &parse("out").unwrap(), OFlags::PATH).unwrap();
    let st = rustix::fs::fstat(&fd).unwrap();
    assert_eq!(FileType::from_raw_mode(st.st_mode), FileType::Symlink);
}

#[test]
fn component_walk_reports_a_file_in_the_middle() {
    let dir = fixture();
    let root = open_root(&dir);
    let got = open_by_components(root.as_fd(), &parse("real/file/x").unwrap(), OFlags::RDONLY);
    assert_eq!(got.err(), Some(Errno::NOTDIR));
}

#[test]
fn openat2_follows_inside_and_refuses_escapes() {
    let dir = fixture();
    let root = open_root(&dir);
    let open = |raw: &str, follow| {
        open_beneath(
            root.as_fd(),
            &parse(raw).unwrap(),
            OFlags::RDONLY,
            follow,
            Resolver::Auto,
        )
    };
    assert!(open("link/file", Follow::InTree).is_ok());
    assert_eq!(open("out/x", Follow::InTree).err(), Some(Errno::XDEV));
    assert_eq!(open("link/file", Follow::Never).err(), Some(Errno::LOOP));
    // ComponentWalk is stricter: the in-tree link is refused too.
    let walked = open_beneath(
        root.as_fd(),
        &parse("link/file").unwrap(),
        OFlags::RDONLY,
        Follow::InTree,
        Resolver::ComponentWalk,
    );
    assert_eq!(walked.err(), Some(Errno::LOOP));
}

#[test]
fn create_dirs_sets_the_exact_mode_and_refuses_symlinks() {
    let dir = fixture();
    let root = open_root(&dir);
    let mode = Mode::from_bits_truncate(0o705);
    create_dirs(root.as_fd(), &parse("new/deeper").unwrap(), mode).unwrap();
    for made in ["new", "new/deeper"] {
        let perm = std::fs::metadata(dir.path().join(made))
            .unwrap()
            .permissions();
        assert_eq!(perm.mode() & 0o7777, 0o705, "{made}");
    }
    let err = create_dirs(root.as_fd(), &parse("link/sub").unwrap(), mode).unwrap_err();
    assert!(
        matches!(&err, FilesError::Symlink { path, .. } if path == "link"),
        "{err}"
    );
    assert!(!dir.path().join("real/sub").exists());
    let err = create_dirs(root.as_fd(), &parse("real/file/sub").unwrap(), mode).unwrap_err();
    assert!(
        matches!(&err, FilesError::NotADirectory { path } if path == "real/file"),
        "{err}"
    );
}

/// Path-like strings: dot segments, separators, look-alikes, controls, long
/// names, and anything at all.
fn raw_paths() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just(String::new()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("...".to_owned()),
        Just("%2e%2e".to_owned()),
        Just("\u{ff0e}\u{ff0e}".to_owned()),
        Just("\0".to_owned()),
        Just("\n".to_owned()),
        "[a-z]{1,8}",
        "\\PC{1,6}",
        (250usize..260).prop_map(|n| "n".repeat(n)),
    ];
    prop_oneof![
        (
            proptest::option::of(prop_oneof![Just("/"), Just("./"), Just("//")]),
            proptest::collection::vec(segment, 0..8),
            any::<bool>()
        )
            .prop_map(|(lead, segments, trailing)| {
                let mut raw = lead.unwrap_or_default().to_owned();
                raw.push_str(&segments.join("/"));
                if trailing {
                    raw.push('/');
                }
                raw
            }),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsed_paths_are_plain_and_stable(raw in raw_paths()) {
        match RemotePath::parse(&raw) {
            Ok(path) => {
                prop_assert!(!path.as_str().starts_with('/'));
                prop_assert!(path.as_str().len() <= MAX_PATH_LEN);
                for component in path.components() {
                    prop_assert!(component != ".." && component != "." && !component.is_empty());
                    prop_assert!(!component.contains('\0'));
                    prop_assert!(!component.chars().any(char::is_control));
                    prop_assert!(component.len() <= MAX_COMPONENT_LEN);
                }
                prop_assert_eq!(path.components().collect::<Vec<_>>().join("/"), path.as_str());
                // Parsing is idempotent.
                prop_assert_eq!(RemotePath::parse(&path.to_string()).ok(), Some(path.clone()));
            }
            Err(FilesError::InvalidPath { path, reason }) => {
                prop_assert!(!reason.is_empty());
                // Quoted in full when short, else cut to about 96 bytes.
                prop_assert!(path == raw || path.len() <= 128);
            }
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    #[test]
    fn any_dotdot_component_is_rejected(
        before in proptest::collection::vec("[a-z.]{1,4}", 0..4),
        after in proptest::collection::vec("[a-z.]{1,4}", 0..4),
    ) {
        let mut segments = before;
        segments.push("..".to_owned());
        segments.extend(after);
        prop_assert!(RemotePath::parse(&segments.join("/")).is_err());
    }
}
