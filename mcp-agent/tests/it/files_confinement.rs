//! Confinement of `mcp_agent::files` on real directories: symlink and hard
//! link attacks, special files, hostile paths for every operation (a table
//! and a property test), the directory-swap races during an upload, and the
//! upload's atomicity. Attacks run under both resolvers (`openat2` and the
//! component walk used on kernels without it).
//!
//! Every fixture puts a sentinel tree next to the service directory; after
//! each attack the whole base directory except the service tree is compared
//! with a snapshot taken before it (kinds, modes, inodes, mtimes, contents,
//! link targets), so a write, creation or removal outside is caught.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use mcp_agent::files::{
    DEFAULT_DIR_MODE, FileKind, FilesError, MAX_COMPONENT_LEN, RemotePath, Resolver, ServiceTree,
    UploadOptions, WalkEntry,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

const SERVICE: &str = "svc";
const SECRET: &[u8] = b"SECRET: outside the service directory\n";
const RESOLVERS: [Resolver; 2] = [Resolver::Auto, Resolver::ComponentWalk];

/// `<base>/outside` (the sentinel), `<base>/srv/other` (another service)
/// and `<base>/srv/svc`, the tree under attack:
///
/// ```text
/// file.txt                      dir/inner.txt
/// dir/deeper/x.txt              dir/link_up -> ../..        (escapes)
/// dir/link_root -> ..           (inside: the tree root)
/// %2e%2e/file                   (a literal name)
/// link_in -> dir                link_file_in -> file.txt
/// link_out -> ../../outside     link_out_file -> ../../outside/SECRET-file
/// link_abs -> <base>/outside    link_abs_in -> <base>/srv/svc/dir
/// link_parent -> ..             link_other -> ../other
/// loop_a -> loop_b -> loop_a    hard_secret (a hard link of outside/SECRET-file)
/// ```
struct Fixture {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    srv: PathBuf,
    svc: PathBuf,
    outside: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let outside = base.join("outside");
        let srv = base.join("srv");
        let svc = srv.join(SERVICE);
        fs::create_dir_all(outside.join("SECRET-dir")).unwrap();
        fs::write(outside.join("SECRET-file"), SECRET).unwrap();
        fs::write(outside.join("SECRET-dir/SECRET-inner"), SECRET).unwrap();
        fs::create_dir_all(srv.join("other")).unwrap();
        fs::write(srv.join("other/SECRET-other"), SECRET).unwrap();

        fs::create_dir_all(svc.join("dir/deeper")).unwrap();
        fs::create_dir_all(svc.join("%2e%2e")).unwrap();
        fs::write(svc.join("file.txt"), "inside\n").unwrap();
        fs::write(svc.join("dir/inner.txt"), "inner\n").unwrap();
        fs::write(svc.join("dir/deeper/x.txt"), "x\n").unwrap();
        fs::write(svc.join("%2e%2e/file"), "literal\n").unwrap();
        symlink("../..", svc.join("dir/link_up")).unwrap();
        symlink("..", svc.join("dir/link_root")).unwrap();
        symlink("dir", svc.join("link_in")).unwrap();
        symlink("file.txt", svc.join("link_file_in")).unwrap();
        symlink("../../outside", svc.join("link_out")).unwrap();
        symlink("../../outside/SECRET-file", svc.join("link_out_file")).unwrap();
        symlink(&outside, svc.join("link_abs")).unwrap();
        symlink(svc.join("dir"), svc.join("link_abs_in")).unwrap();
        symlink("..", svc.join("link_parent")).unwrap();
        symlink("../other", svc.join("link_other")).unwrap();
        symlink("loop_b", svc.join("loop_a")).unwrap();
        symlink("loop_a", svc.join("loop_b")).unwrap();
        fs::hard_link(outside.join("SECRET-file"), svc.join("hard_secret")).unwrap();
        Fixture {
            _tmp: tmp,
            base,
            srv,
            svc,
            outside,
        }
    }

    fn tree(&self, resolver: Resolver) -> ServiceTree {
        ServiceTree::open(&self.srv, SERVICE)
            .unwrap()
            .with_resolver(resolver)
    }

    /// Everything under the base directory except the service tree.
    fn outside_snapshot(&self) -> Snapshot {
        snapshot(&self.base, &self.svc)
    }

    /// Every inode in the service tree (not following symlinks).
    fn tree_inodes(&self) -> BTreeSet<(u64, u64)> {
        snapshot(&self.svc, Path::new("/nonexistent"))
            .values()
            .map(|node| (node.dev, node.ino))
            .collect()
    }
}

#[derive(Debug, PartialEq)]
struct Node {
    kind: &'static str,
    mode: u32,
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    content: Option<Vec<u8>>,
    target: Option<PathBuf>,
}

type Snapshot = BTreeMap<PathBuf, Node>;

/// Every entry under `dir` (itself included), skipping `skip` and below.
fn snapshot(dir: &Path, skip: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        if path == skip {
            continue;
        }
        let meta = fs::symlink_metadata(&path).unwrap();
        let kind = if meta.is_symlink() {
            "symlink"
        } else if meta.is_dir() {
            "dir"
        } else if meta.is_file() {
            "file"
        } else {
            "other"
        };
        if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                todo.push(entry.unwrap().path());
            }
        }
        out.insert(
            path.clone(),
            Node {
                kind,
                mode: meta.mode(),
                dev: meta.dev(),
                ino: meta.ino(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                content: meta.is_file().then(|| fs::read(&path).unwrap()),
                target: meta.is_symlink().then(|| fs::read_link(&path).unwrap()),
            },
        );
    }
    out
}

fn p(raw: &str) -> RemotePath {
    RemotePath::parse(raw).unwrap()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn opts() -> UploadOptions {
    UploadOptions::new(0o640, 1 << 20)
}

/// Uploads `data` to `path` in one chunk and commits.
fn put(tree: &ServiceTree, path: &str, data: &[u8]) -> Result<(), FilesError> {
    let mut upload = tree.upload(&p(path), opts())?;
    upload.write_chunk(data)?;
    upload.commit(None).map(drop)
}

fn read(tree: &ServiceTree, path: &str) -> Result<Vec<u8>, FilesError> {
    let mut data = Vec::new();
    tree.open_read(&p(path))?.read_to_end(&mut data).unwrap();
    Ok(data)
}

fn names(tree: &ServiceTree, path: &str) -> Result<BTreeSet<String>, FilesError> {
    tree.list(&p(path))?.map(|e| e.map(|e| e.name)).collect()
}

/// Temporary upload files left in `dir`.
fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".mcp-upload-"))
        .collect()
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// An escape through a symlink: `Escapes` with `openat2`; the component walk
/// refuses the symlink itself before it could lead anywhere.
fn is_escape_refusal(resolver: Resolver, err: &FilesError) -> bool {
    match resolver {
        Resolver::Auto => matches!(err, FilesError::Escapes { .. }),
        Resolver::ComponentWalk => matches!(err, FilesError::Symlink { .. }),
    }
}

// ---------------------------------------------------------------- opening

#[test]
fn open_refuses_invalid_service_names() {
    let fx = Fixture::new();
    for bad in [
        "",
        ".",
        "..",
        "../outside",
        "a/b",
        "Svc",
        "svc/..",
        "-x",
        "x_y",
        "\0",
    ] {
        let err = ServiceTree::open(&fx.srv, bad).unwrap_err();
        assert!(
            matches!(err, FilesError::InvalidService { .. }),
            "{bad:?}: {err}"
        );
        let err = ServiceTree::open_or_create(&fx.srv, bad).unwrap_err();
        assert!(
            matches!(err, FilesError::InvalidService { .. }),
            "{bad:?}: {err}"
        );
    }
    assert!(fs::read_dir(&fx.srv).unwrap().count() == 2);
}

#[test]
fn reads_on_a_missing_tree_are_not_found_and_create_nothing() {
    let fx = Fixture::new();
    let err = ServiceTree::open(&fx.srv, "fresh").unwrap_err();
    assert!(
        matches!(&err, FilesError::NoServiceDir { dir } if dir.ends_with("srv/fresh")),
        "{err}"
    );
    assert!(!fx.srv.join("fresh").exists());
    let err = ServiceTree::open(&fx.base.join("no-srv"), "fresh").unwrap_err();
    assert!(matches!(err, FilesError::NoServiceDir { .. }), "{err}");
    assert!(!fx.base.join("no-srv").exists());
}

#[test]
fn open_or_create_makes_the_tree_with_mode_0750() {
    let fx = Fixture::new();
    let tree = ServiceTree::open_or_create(&fx.srv, "fresh").unwrap();
    assert_eq!(tree.service(), "fresh");
    assert_eq!(tree.dir(), fx.srv.join("fresh"));
    assert_eq!(mode_of(&fx.srv.join("fresh")), DEFAULT_DIR_MODE);
    put(&tree, "a/b.txt", b"hello").unwrap();
    assert_eq!(fs::read(fx.srv.join("fresh/a/b.txt")).unwrap(), b"hello");
    assert_eq!(mode_of(&fx.srv.join("fresh/a")), DEFAULT_DIR_MODE);
    // srv_root itself is never created.
    let err = ServiceTree::open_or_create(&fx.base.join("no-srv"), "x").unwrap_err();
    assert!(matches!(err, FilesError::Io { .. }), "{err}");
    assert!(!fx.base.join("no-srv").exists());
}

#[test]
fn a_service_directory_that_is_a_symlink_is_refused() {
    let fx = Fixture::new();
    symlink(&fx.outside, fx.srv.join("evil")).unwrap();
    symlink("other", fx.srv.join("alias")).unwrap();
    let before = fx.outside_snapshot();
    for name in ["evil", "alias"] {
        let err = ServiceTree::open(&fx.srv, name).unwrap_err();
        assert!(matches!(err, FilesError::Symlink { .. }), "{name}: {err}");
        let err = ServiceTree::open_or_create(&fx.srv, name).unwrap_err();
        assert!(matches!(err, FilesError::Symlink { .. }), "{name}: {err}");
    }
    assert_eq!(fx.outside_snapshot(), before);
}

#[test]
fn a_service_directory_that_is_a_file_is_refused() {
    let fx = Fixture::new();
    fs::write(fx.srv.join("plain"), "x").unwrap();
    let err = ServiceTree::open_or_create(&fx.srv, "plain").unwrap_err();
    assert!(matches!(err, FilesError::NotADirectory { .. }), "{err}");
}

#[test]
fn the_tree_fd_is_held_when_the_directory_is_swapped_for_a_symlink() {
    let fx = Fixture::new();
    let tree = ServiceTree::open(&fx.srv, SERVICE).unwrap();
    fs::rename(&fx.svc, fx.srv.join("svc.moved")).unwrap();
    symlink(&fx.outside, &fx.svc).unwrap();
    let before = snapshot(&fx.outside, Path::new("/nonexistent"));
    put(&tree, "after-swap", b"data").unwrap();
    tree.mkdir_all(&p("made"), 0o755).unwrap();
    tree.remove(&p("file.txt"), false).unwrap();
    assert_eq!(read(&tree, "dir/inner.txt").unwrap(), b"inner\n");
    assert_eq!(snapshot(&fx.outside, Path::new("/nonexistent")), before);
    assert_eq!(
        fs::read(fx.srv.join("svc.moved/after-swap")).unwrap(),
        b"data"
    );
    assert!(fx.srv.join("svc.moved/made").is_dir());
    assert!(!fx.srv.join("svc.moved/file.txt").exists());
}

// ---------------------------------------------------------- the root path

#[test]
fn the_root_itself_is_listed_and_stat_but_never_removed_or_written() {
    let fx = Fixture::new();
    let tree = fx.tree(Resolver::Auto);
    let root = RemotePath::root();
    assert_eq!(tree.stat(&root).unwrap().kind, FileKind::Dir);
    assert!(names(&tree, "").unwrap().contains("file.txt"));
    assert!(names(&tree, ".").unwrap().contains("link_out"));
    assert!(matches!(
        tree.remove(&root, true).unwrap_err(),
        FilesError::IsRoot { op: "remove" }
    ));
    assert!(matches!(
        tree.upload(&root, opts()).unwrap_err(),
        FilesError::IsRoot { op: "upload" }
    ));
    assert!(matches!(
        tree.open_read(&root).unwrap_err(),
        FilesError::NotAFile {
            kind: FileKind::Dir,
            ..
        }
    ));
    let mode = mode_of(&fx.svc);
    tree.mkdir_all(&root, 0o700).unwrap();
    assert!(fx.svc.join("file.txt").exists());
    assert_eq!(
        mode_of(&fx.svc),
        mode,
        "the mode of an existing directory is kept"
    );
    assert_ne!(mode, 0o700);
}

// ------------------------------------------------------------------ reads

#[test]
fn stat_reports_entries_without_following_symlinks() {
    let fx = Fixture::new();
    for resolver in RESOLVERS {
        let tree = fx.tree(resolver);
        let file = tree.stat(&p("file.txt")).unwrap();
        assert_eq!((file.kind, file.size, file.links), (FileKind::File, 7, 1));
        assert_eq!(file.mode, mode_of(&fx.svc.join("file.txt")));
        assert_eq!(file.symlink_target, None);
        let age = std::time::SystemTime::now()
            .duration_since(file.mtime)
            .unwrap();
        assert!(age.as_secs() < 600);

        for (link, target) in [
            ("link_out", PathBuf::from("../../outside")),
            ("link_abs", fx.outside.clone()),
            ("link_parent", PathBuf::from("..")),
            ("loop_a", PathBuf::from("loop_b")),
        ] {
            let meta = tree.stat(&p(link)).unwrap();
            assert_eq!(meta.kind, FileKind::Symlink, "{link}");
            assert_eq!(
                meta.symlink_target.as_deref(),
                Some(target.as_path()),
                "{link}"
            );
        }
        assert_eq!(tree.stat(&p("hard_secret")).unwrap().links, 2);
        assert_eq!(tree.stat(&p("dir")).unwrap().kind, FileKind::Dir);
        assert!(matches!(
            tree.stat(&p("missing")).unwrap_err(),
            FilesError::NotFound { path } if path == "missing"
        ));
        assert!(matches!(
            tree.stat(&p("file.txt/x")).unwrap_err(),
            FilesError::NotADirectory { .. }
        ));
    }
}

#[test]
fn reads_through_escaping_symlinks_are_refused() {
    let fx = Fixture::new();
    for resolver in RESOLVERS {
        let tree = fx.tree(resolver);
        for path in [
            "link_out/SECRET-file",
            "link_out/SECRET-dir/SECRET-inner",
            "link_abs/SECRET-file",
            "link_abs_in/inner.txt",
            "link_parent/other/SECRET-other",
            "link_parent/svc/file.txt",
            "link_other/SECRET-other",
            "dir/link_up/other/SECRET-other",
        ] {
            let err = tree.stat(&p(path)).unwrap_err();
            assert!(
                is_escape_refusal(resolver, &err),
                "{resolver:?} stat {path}: {err}"
            );
            let err = tree.open_read(&p(path)).unwrap_err();
            assert!(
                is_escape_refusal(resolver, &err),
                "{resolver:?} read {path}: {err}"
            );
            assert!(err.to_string().contains(path), "{err}");
        }
        for path in [
            "link_out",
            "link_abs",
            "link_parent",
            "link_other",
            "dir/link_up",
        ] {
            let err = tree.list(&p(path)).unwrap_err();
            assert!(
                is_escape_refusal(resolver, &err),
                "{resolver:?} list {path}: {err}"
            );
            let err = tree.walk(&p(path), 8).unwrap_err();
            assert!(
                is_escape_refusal(resolver, &err),
                "{resolver:?} walk {path}: {err}"
            );
        }
        for path in ["link_out_file", "link_abs"] {
            let err = tree.open_read(&p(path)).unwrap_err();
            assert!(
                is_escape_refusal(resolver, &err),
                "{resolver:?} read {path}: {err}"
            );
        }
    }
}

#[test]
fn symlink_loops_are_refused() {
    let fx = Fixture::new();
    for resolver in RESOLVERS {
        let tree = fx.tree(resolver);
        for path in ["loop_a", "loop_a/x", "loop_b/y/z"] {
            let err = tree.open_read(&p(path)).unwrap_err();
            assert!(
                matches!(err, FilesError::Symlink { .. }),
                "{resolver:?} {path}: {err}"
            );
        }
        assert!(matches!(
            tree.list(&p("loop_a")).unwrap_err(),
            FilesError::Symlink { .. }
        ));
    }
}

#[test]
fn symlinks_inside_the_tree_are_followed_for_reads_with_openat2_only() {
    let fx = Fixture::new();
    let tree = fx.tree(Resolver::Auto);
    assert_eq!(read(&tree, "link_file_in").unwrap(), b"inside\n");
    assert_eq!(read(&tree, "link_in/inner.txt").unwrap(), b"inner\n");
    assert_eq!(read(&tree, "dir/link_root/file.txt").unwrap(), b"inside\n");
    assert_eq!(tree.stat(&p("link_in/inner.txt")).unwrap().size, 6);
    assert!(names(&tree, "link_in").unwrap().contains("inner.txt"));

    let strict = fx.tree(Resolver::ComponentWalk);
    for path in [
        "link_file_in",
        "link_in/inner.txt",
        "dir/link_root/file.txt",
    ] {
        let err = strict.open_read(&p(path)).unwrap_err();
        assert!(matches!(err, FilesError::Symlink { .. }), "{path}: {err}");
        assert!(err.to_string().contains("without openat2"), "{err}");
    }
    assert!(matches!(
        strict.list(&p("link_in")).unwrap_err(),
        FilesError::Symlink { .. }
    ));
    // Plain paths work the same under both.
    assert_eq!(read(&strict, "dir/deeper/x.txt").unwrap(), b"x\n");
}

#[test]
fn a_hard_linked_file_is_not_read() {
    let fx = Fixture::new();
    for resolver in RESOLVERS {
        let tree = fx.tree(resolver);
        let err = tree.open_read(&p("hard_secret")).unwrap_err();
        assert!(
            matches!(err, FilesError::HardLinked { links: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("hard_secret"));
    }
    // A hard link made inside the tree is refused as well: the rule cannot
    // tell where the other link is.
    fs::hard_link(fx.svc.join("file.txt"), fx.svc.join("file-again")).unwrap();
    let tree = fx.tree(Resolver::Auto);
    assert!(matches!(
        tree.open_read(&p("file.txt")).unwrap_err(),
        FilesError::HardLinked { .. }
    ));
    fs::remove_file(fx.svc.join("file-again")).unwrap();
    assert_eq!(read(&tree, "file.txt").unwrap(), b"inside\n");
}

#[test]
fn hard_links_are_harmless_to_writes_and_removals() {
    let fx = Fixture::new();
    let before = fx.outside_snapshot();
    let tree = fx.tree(Resolver::Auto);
    put(&tree, "hard_secret", b"replaced").unwrap();
    assert_eq!(fs::read(fx.svc.join("hard_secret")).unwrap(), b"replaced");
    assert_eq!(fx.outside_snapshot(), before);
    assert_eq!(fs::read(fx.outside.join("SECRET-file")).unwrap(), SECRET);

    fs::hard_link(fx.outside.join("SECRET-file"), fx.svc.join("hard2")).unwrap();
    tree.remove(&p("hard2"), false).unwrap();
    assert!(!fx.svc.join("hard2").exists());
    assert_eq!(fs::read(fx.outside.join("SECRET-file")).unwrap(), SECRET);
}

#[test]
fn special_files_are_never_opened_for_reading() {
    let fx = Fixture::new();
    let dir = rustix::fs::open(
        &fx.svc,
        rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    rustix::fs::mknodat(
        &dir,
        "fifo",
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(fx.svc.join("socket")).unwrap();
    // /dev/null's numbers; creating a device node needs CAP_MKNOD.
    let device = rustix::fs::mknodat(
        &dir,
        "device",
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_bits_truncate(0o600),
        rustix::fs::makedev(1, 3),
    )
    .is_ok();
    let mut specials = vec!["fifo", "socket"];
    if device {
        specials.push("device");
    }
    for resolver in RESOLVERS {
        let tree = fx.tree(resolver);
        for name in &specials {
            // A FIFO opened for reading would block this call forever.
            let err = tree.open_read(&p(name)).unwrap_err();
            assert!(
                matches!(
                    err,
                    FilesError::NotAFile {
                        kind: FileKind::Other,
                        ..
                    }
                ),
                "{name}: {err}"
            );
            assert_eq!(tree.stat(&p(name)).unwrap().kind, FileKind::Other);
        }
        let err = put(&tree, "fifo", b"x").unwrap_err();
        assert!(matches!(err, FilesError::NotAFile { .. }), "{err}");
    }
}

#[test]
fn list_reports_every_entry_without_following() {
    let fx = Fixture::new();
    let tree = fx.tree(Resolver::Auto);
    let entries: BTreeMap<String, FileKind> = tree
        .list(&RemotePath::root())
        .unwrap()
        .map(|e| e.map(|e| (e.name, e.metadata.kind)))
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: BTreeMap<String, FileKind> = [
        ("file.txt", FileKind::File),
        ("dir", FileKind::Dir),
        ("%2e%2e", FileKind::Dir),
        ("link_in", FileKind::Symlink),
        ("link_file_in", FileKind::Symlink),
        ("link_out", FileKind::Symlink),
        ("link_out_file", FileKind::Symlink),
        ("link_abs", FileKind::Symlink),
        ("link_abs_in", FileKind::Symlink),
        ("link_parent", FileKind::Symlink),
        ("link_other", FileKind::Symlink),
        ("loop_a", FileKind::Symlink),
        ("loop_b", FileKind::Symlink),
        ("hard_secret", FileKind::File),
    ]
    .into_iter()
    .map(|(n, k)| (n.to_owned(), k))
    .collect();
    assert_eq!(entries, expected);
    assert!(matches!(
        tree.list(&p("file.txt")).unwrap_err(),
        FilesError::NotADirectory { .. }
    ));
    assert!(matches!(
        tree.list(&p("nope")).unwrap_err(),
        FilesError::NotFound { .. }
    ));
}

#[test]
fn names_that_cannot_be_requested_are_reported_as_errors() {
    let fx = Fixture::new();
    fs::create_dir(fx.svc.join("odd")).unwrap();
    fs::write(fx.svc.join("odd/ok"), "").unwrap();
    fs::write(fx.svc.join("odd/new\nline"), "").unwrap();
    fs::write(fx.svc.join("odd").join(OsStr::from_bytes(b"bad\xff")), "").unwrap();
    let tree = fx.tree(Resolver::Auto);
    let (ok, errors): (Vec<_>, Vec<_>) = tree.list(&p("odd")).unwrap().partition(Result::is_ok);
    let ok: Vec<String> = ok.into_iter().map(|e| e.unwrap().name).collect();
    assert_eq!(ok, ["ok"]);
    assert_eq!(errors.len(), 2);
    for err in errors {
        let err = err.unwrap_err();
        assert!(matches!(err, FilesError::InvalidPath { .. }), "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
    }
    let walked: Vec<_> = tree.walk(&RemotePath::root(), 8).unwrap().collect();
    assert!(
        walked
            .iter()
            .any(|e| matches!(e, Ok(w) if w.path.as_str() == "odd/ok"))
    );
    assert_eq!(walked.iter().filter(|e| e.is_err()).count(), 2);
}

// ------------------------------------------------------------------ walks

fn walk_all(tree: &ServiceTree, path: &str, depth: usize) -> (Vec<WalkEntry>, Vec<FilesError>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for item in tree.walk(&p(path), depth).unwrap() {
        match item {
            Ok(entry) => entries.push(entry),
            Err(err) => errors.push(err),
        }
    }
    (entries, errors)
}

#[test]
fn walk_never_descends_through_symlinks() {
    let fx = Fixture::new();
    for resolver in RESOLVERS {
        let tree = fx.tree(resolver);
        let (entries, errors) = walk_all(&tree, "", 16);
        assert!(errors.is_empty(), "{errors:?}");
        let paths: BTreeSet<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        for expected in [
            "dir/deeper/x.txt",
            "dir/link_up",
            "dir/link_root",
            "%2e%2e/file",
        ] {
            assert!(paths.contains(expected), "{expected} in {paths:?}");
        }
        assert!(paths.iter().all(|p| !p.contains("SECRET")), "{paths:?}");
        assert!(paths.iter().all(|p| !p.starts_with("link_in/")));
        assert_eq!(entries.len(), 20, "{paths:?}");
        for entry in &entries {
            assert_eq!(entry.depth, entry.path.depth(), "{:?}", entry.path);
            let on_disk = fs::symlink_metadata(fx.svc.join(entry.path.as_str())).unwrap();
            assert_eq!(
                entry.metadata.kind == FileKind::Symlink,
                on_disk.is_symlink()
            );
        }
    }
}

#[test]
fn walk_reports_each_directory_before_its_contents() {
    let fx = Fixture::new();
    let tree = fx.tree(Resolver::Auto);
    let (entries, _) = walk_all(&tree, "dir", 16);
    let position = |path: &str| {
        entries
            .iter()
            .position(|e| e.path.as_str() == path)
            .unwrap()
    };
    assert!(position("dir/deeper") < position("dir/deeper/x.txt"));
    // Depth counts from the walk's start: dir/deeper is 1, its file 2.
    assert_eq!(entries[position("dir/deeper")].depth, 1);
    assert_eq!(entries[position("dir/deeper/x.txt")].depth, 2);
    assert_eq!(
        entries[position("dir/deeper/x.txt")]
            .path
            .strip_prefix(&p("dir"))
            .unwrap()
            .as_str(),
        "deeper/x.txt"
    );
}

#[test]
fn walk_reports_contents_beyond_the_depth_limit_as_an_error() {
    let fx = Fixture::new();
    fs::create_dir_all(fx.svc.join("d1/d2/d3/d4")).unwrap();
    fs::write(fx.svc.join("d1/d2/d3/d4/f"), "").unwrap();
    fs::create_dir_all(fx.svc.join("d1/empty")).unwrap();
    let tree = fx.tree(Resolver::Auto);
    let items: Vec<_> = tree.walk(&p("d1"), 2).unwrap().collect();
    let ok: Vec<&str> = items
        .iter()
        .filter_map(|i| i.as_ref().ok())
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(
        ok.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(["d1/d2", "d1/d2/d3", "d1/empty"])
    );
    let errors: Vec<&FilesError> = items.iter().filter_map(|i| i.as_ref().err()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(matches!(errors[0], FilesError::TooDeep { path, limit: 2 } if path == "d1/d2/d3"));
    // The error comes right after the directory it is about.
    let at = items.iter().position(|i| i.is_err()).unwrap();
    assert!(matches!(&items[at - 1], Ok(e) if e.path.as_str() == "d1/d2/d3"));
    // Depth 0 means 1.
    let (entries, errors) = walk_all(&tree, "d1", 0);
    assert_eq!(entries.len(), 2);
    assert_eq!(errors.len(), 1);
}

// -------------------------------------------------------------- removals

#[test]
fn removals_act_on_the_entry_itself() {
    for resolver in RESOLVERS {
        let fx = Fixture::new();
        let before = fx.outside_snapshot();
        let tree = fx.tree(resolver);
        for link in ["link_out", "link_abs", "link_out_file", "loop_a"] {
            tree.remove(&p(link), false).unwrap();
            assert!(fs::symlink_metadata(fx.svc.join(link)).is_err(), "{link}");
        }
        // Recursive on a symlink to a directory removes the link only.
        tree.remove(&p("link_parent"), true).unwrap();
        tree.remove(&p("link_other"), true).unwrap();
        assert!(fx.svc.join("file.txt").exists());
        assert_eq!(fx.outside_snapshot(), before, "{resolver:?}");
    }
}

#[test]
fn removals_through_symlinks_are_refused() {
    let fx = Fixture::new();
    let before = fx.outside_snapshot();
    for resolver in RESOLVERS {
        let tree = fx.tree(resolver);
        for path in [
            "link_out/SECRET-file",
            "link_out/SECRET-dir",
            "link_abs/SECRET-file",
            "link_parent/other",
            "link_other/SECRET-other",
            "dir/link_up/other",
            "link_in/inner.txt",
            "loop_a/x",
        ] {
            let err = tree.remove(&p(path), true).unwrap_err();
            assert!(
                matches!(err, FilesError::Symlink { .. }),
                "{resolver:?} {path}: {err}"
            );
        }
    }
    assert_eq!(fx.outside_snapshot(), before);
    assert!(fx.svc.join("dir/inner.txt").exists());
}

#[test]
fn recursive_removal_never_follows_symlinks_inside() {
    let fx = Fixture::new();
    for link in ["abs", "rel"] {
        let target = if link == "abs" {
            fx.outside.clone()
        } else {
            PathBuf::from("../../../../outside")
        };
        fs::create_dir_all(fx.svc.join("dir/deeper/more")).unwrap();
        symlink(target, fx.svc.join(format!("dir/deeper/more/{link}"))).unwrap();
    }
    fs::hard_link(
        fx.outside.join("SECRET-file"),
        fx.svc.join("dir/deeper/hard"),
    )
    .unwrap();
    let before = fx.outside_snapshot();
    let tree = fx.tree(Resolver::Auto);
    assert!(matches!(
        tree.remove(&p("dir"), false).unwrap_err(),
        FilesError::DirectoryNotEmpty { .. }
    ));
    tree.remove(&p("dir"), true).unwrap();
    assert!(!fx.svc.join("dir").exists());
    assert_eq!(fx.outside_snapshot(), before);
    assert_eq!(fs::read(fx.outside.join("SECRET-file")).unwrap(), SECRET);
}

#[test]
fn removal_basics() {
    let fx = Fixture::new();
    let tree = fx.tree(Resolver::Auto);
    tree.remove(&p("file.txt"), false).unwrap();
    assert!(!fx.svc.join("file.txt").exists());
    fs::create_dir(fx.svc.join("empty")).unwrap();
    tree.remove(&p("empty"), false).unwrap();
    assert!(!fx.svc.join("empty").exists());
    assert!(matches!(
        tree.remove(&p("nope"), true).unwrap_err(),
        FilesError::NotFound { .. }
    ));
    let deep: String = (0..40).map(|i| format!("l{i}/")).collect();
    fs::create_dir_all(fx.svc.join(&deep)).unwrap();
    fs::write(fx.svc.join(&deep).join("leaf"), "x").unwrap();
    tree.remove(&p("l0"), true).unwrap();
    assert!(!fx.svc.join("l0").exists());
}

#[test]
fn removal_of_a_tree_deeper_than_the_limit_stops_with_an_error() {
    let fx = Fixture::new();
    let deep: String = (0..mcp_agent::files::MAX_WALK_DEPTH + 2)
        .map(|_| "d/")
        .collect();
    fs::create_dir_all(fx.svc.join(&deep)).unwrap();
    let tree = fx.tree(Resolver::Auto);
    let err = tree.remove(&p("d"), true).unwrap_err();
    assert!(matches!(err, FilesError::TooDeep { .. }), "{err}");
    assert!(fx.svc.join("d").exists());
}

// ------------------------------------------------------------ mkdir_all

#[test]
fn mkdir_all_creates_with_the_exact_mode_and_never_through_symlinks() {
    let fx = Fixture::new();
    let before = fx.outside_snapshot();
    for resolver in RESOLVERS {
        let tree = fx.tree(resolver);
        for path in [
            "link_out/x",
            "link_abs/x/y",
            "link_parent/evil",
            "dir/link_up/evil",
            "link_in/x",
            "loop_a/x",
            "link_out",
        ] {
            let err = tree.mkdir_all(&p(path), 0o755).unwrap_err();
            assert!(
                matches!(err, FilesError::Symlink { .. }),
                "{resolver:?} {path}: {err}"
            );
        }
        let err = tree.mkdir_all(&p("file.txt/sub"), 0o755).unwrap_err();
        assert!(
            matches!(&err, FilesError::NotADirectory { path } if path == "file.txt"),
            "{err}"
        );
        assert!(matches!(
            tree.mkdir_all(&p("x"), 0o4755).unwrap_err(),
            FilesError::InvalidMode { .. }
        ));
    }
    assert_eq!(fx.outside_snapshot(), before);
    let tree = fx.tree(Resolver::Auto);
    tree.mkdir_all(&p("a/b/c"), 0o711).unwrap();
    for made in ["a", "a/b", "a/b/c"] {
        assert_eq!(mode_of(&fx.svc.join(made)), 0o711, "{made}");
    }
    tree.mkdir_all(&p("a/b/c"), 0o700).unwrap();
    assert_eq!(
        mode_of(&fx.svc.join("a/b/c")),
        0o711,
        "existing dirs are kept"
    );
}

// --------------------------------------------------------------- uploads

#[test]
fn an_upload_streams_chunks_and_lands_atomically() {
    let fx = Fixture::new();
    let tree = fx.tree(Resolver::Auto);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut upload = tree
        .upload(
            &p("new/dir/blob.bin"),
            UploadOptions::new(0o604, 1 << 20).with_expected_size(100_000),
        )
        .unwrap();
    for chunk in data.chunks(7_000) {
        upload.write_chunk(chunk).unwrap();
        assert!(
            !fx.svc.join("new/dir/blob.bin").exists(),
            "visible before commit"
        );
    }
    assert_eq!(upload.written(), 100_000);
    assert_eq!(upload.path().as_str(), "new/dir/blob.bin");
    let committed = upload.commit(Some(sha256(&data))).unwrap();
    assert_eq!(committed.size, 100_000);
    assert_eq!(committed.sha256, sha256(&data));
    assert_eq!(fs::read(fx.svc.join("new/dir/blob.bin")).unwrap(), data);
    assert_eq!(mode_of(&fx.svc.join("new/dir/blob.bin")), 0o604);
    assert_eq!(mode_of(&fx.svc.join("new/dir")), DEFAULT_DIR_MODE);
    assert!(temp_files(&fx.svc.join("new/dir")).is_empty());
    // And it reads back.
    assert_eq!(read(&tree, "new/dir/blob.bin").unwrap(), data);
}

#[test]
fn an_upload_replaces_an_existing_file() {
    let fx = Fixture::new();
    let tree = fx.tree(Resolver::Auto);
    let inode = fs::metadata(fx.svc.join("file.txt")).unwrap().ino();
    put(&tree, "file.txt", b"new contents").unwrap();
    assert_eq!(fs::read(fx.svc.join("file.txt")).unwrap(), b"new contents");
    assert_ne!(
        fs::metadata(fx.svc.join("file.txt")).unwrap().ino(),
        inode,
        "a new inode"
    );
}

/// Starts an upload of `file.txt` that has written some bytes.
fn half_upload(tree: &ServiceTree, options: UploadOptions) -> mcp_agent::files::Upload {
    let mut upload = tree.upload(&p("file.txt"), options).unwrap();
    upload.write_chunk(b"partial ").unwrap();
    upload
}

/// Asserts `file.txt` is as the fixture made it, with no temporary file.
fn assert_untouched(fx: &Fixture) {
    assert_eq!(fs::read(fx.svc.join("file.txt")).unwrap(), b"inside\n");
    assert!(temp_files(&fx.svc).is_empty(), "{:?}", temp_files(&fx.svc));
}

#[test]
fn failed_or_abandoned_uploads_leave_the_target_unchanged() {
    let fx = Fixture::new();
    let tree = fx.tree(Resolver::Auto);

    let upload = half_upload(&tree, opts());
    assert_eq!(temp_files(&fx.svc).len(), 1);
    drop(upload);
    assert_untouched(&fx);

    half_upload(&tree, opts()).abort().unwrap();
    assert_untouched(&fx);

    let err = half_upload(&tree, opts())
        .commit(Some([0; 32]))
        .unwrap_err();
    assert!(
        matches!(&err, FilesError::DigestMismatch { actual, .. } if *actual == hex::encode(sha256(b"partial "))),
        "{err}"
    );
    assert_untouched(&fx);

    let err = half_upload(&tree, opts().with_expected_sha256([1; 32]))
        .commit(None)
        .unwrap_err();
    assert!(matches!(err, FilesError::DigestMismatch { .. }), "{err}");
    assert_untouched(&fx);

    let err = half_upload(&tree, opts().with_expected_size(100))
        .commit(None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            FilesError::SizeMismatch {
                expected: 100,
                actual: 8,
                ..
            }
        ),
        "{err}"
    );
    assert_untouched(&fx);

    let mut upload = half_upload(&tree, UploadOptions::new(0o644, 10));
    let err = upload.write_chunk(b"too much").unwrap_err();
    assert!(
        matches!(err, FilesError::TooLarge { limit: 10, .. }),
        "{err}"
    );
    let err = upload.write_chunk(b"x").unwrap_err();
    assert!(matches!(err, FilesError::UploadFailed { .. }), "{err}");
    assert!(matches!(
        upload.commit(None).unwrap_err(),
        FilesError::UploadFailed { .. }
    ));
    assert_untouched(&fx);

    let mut upload = half_upload(&tree, opts().with_expected_size(10));
    let err = upload.write_chunk(b"more than ten").unwrap_err();
    assert!(
        matches!(
            err,
            FilesError::SizeMismatch {
                expected: 10,
                actual: 21,
                ..
            }
        ),
        "{err}"
    );
    drop(upload);
    assert_untouched(&fx);
}

#[test]
fn upload_options_are_checked_before_anything_is_written() {
    let fx = Fixture::new();
    let tree = fx.tree(Resolver::Auto);
    let err = tree
        .upload(
            &p("f"),
            UploadOptions::new(0o644, 10).with_expected_size(11),
        )
        .unwrap_err();
    assert!(
        matches!(err, FilesError::TooLarge { limit: 10, .. }),
        "{err}"
    );
    for mode in [0o4755, 0o2755, 0o1644] {
        let err = tree
            .upload(&p("f"), UploadOptions::new(mode, 10))
            .unwrap_err();
        assert!(matches!(err, FilesError::InvalidMode { .. }), "{err}");
    }
    assert!(temp_files(&fx.svc).is_empty());
    assert!(!fx.svc.join("f").exists());
}

#[test]
fn an_upload_target_must_be_a_file_or_absent() {
    let fx = Fixture::new();
    let before = fx.outside_snapshot();
    for resolver in RESOLVERS {
        let tree = fx.tree(resolver);
        let err = put(&tree, "dir", b"x").unwrap_err();
        assert!(matches!(err, FilesError::IsADirectory { .. }), "{err}");
        for link in [
            "link_out_file",
            "link_file_in",
            "link_out",
            "loop_a",
            "link_abs",
        ] {
            let err = put(&tree, link, b"pwned").unwrap_err();
            assert!(
                matches!(err, FilesError::Symlink { .. }),
                "{resolver:?} {link}: {err}"
            );
            assert!(
                fs::symlink_metadata(fx.svc.join(link))
                    .unwrap()
                    .is_symlink()
            );
        }
    }
    assert_eq!(fx.outside_snapshot(), before);
    assert!(temp_files(&fx.svc).is_empty());
}

#[test]
fn uploads_through_symlinks_are_refused() {
    let fx = Fixture::new();
    let before = fx.outside_snapshot();
    for resolver in RESOLVERS {
        let tree = fx.tree(resolver);
        for path in [
            "link_out/pwned",
            "link_out/SECRET-file",
            "link_abs/pwned",
            "link_abs_in/pwned",
            "link_parent/pwned",
            "link_parent/other/pwned",
            "link_other/pwned",
            "dir/link_up/pwned",
            "dir/link_root/pwned",
            "link_in/pwned",
            "loop_a/pwned",
        ] {
            let err = put(&tree, path, b"pwned").unwrap_err();
            assert!(
                matches!(err, FilesError::Symlink { .. }),
                "{resolver:?} {path}: {err}"
            );
        }
    }
    assert_eq!(fx.outside_snapshot(), before);
    assert!(!fx.svc.join("dir/pwned").exists());
    assert!(!fx.svc.join("pwned").exists());
}

#[test]
fn look_alike_names_stay_literal_and_inside() {
    let fx = Fixture::new();
    let before = fx.outside_snapshot();
    let tree = fx.tree(Resolver::Auto);
    let long = "n".repeat(MAX_COMPONENT_LEN);
    for path in [
        "%2e%2e/%2e%2e/x",
        "%2e%2e/file",
        "\u{ff0e}\u{ff0e}/x",
        "\u{2024}\u{2024}/x",
        "..\\..\\x",
        "...",
        long.as_str(),
    ] {
        put(&tree, path, path.as_bytes()).unwrap();
        assert_eq!(
            fs::read(fx.svc.join(path)).unwrap(),
            path.as_bytes(),
            "{path:?}"
        );
        assert_eq!(read(&tree, path).unwrap(), path.as_bytes());
    }
    assert_eq!(fx.outside_snapshot(), before);
}

#[test]
fn the_last_commit_of_concurrent_uploads_wins_whole() {
    let fx = Fixture::new();
    let tree = fx.tree(Resolver::Auto);
    let mut first = tree.upload(&p("same"), opts()).unwrap();
    let mut second = tree.upload(&p("same"), opts()).unwrap();
    first.write_chunk(&[b'a'; 5000]).unwrap();
    second.write_chunk(&[b'b'; 3000]).unwrap();
    first.write_chunk(&[b'a'; 5000]).unwrap();
    second.commit(None).unwrap();
    assert_eq!(fs::read(fx.svc.join("same")).unwrap(), vec![b'b'; 3000]);
    first.commit(None).unwrap();
    assert_eq!(fs::read(fx.svc.join("same")).unwrap(), vec![b'a'; 10000]);
    assert!(temp_files(&fx.svc).is_empty());
}

// ----------------------------------------------------------------- races

#[test]
fn swapping_the_parent_for_a_symlink_mid_upload_does_not_redirect_it() {
    for resolver in RESOLVERS {
        let fx = Fixture::new();
        fs::create_dir(fx.svc.join("sub")).unwrap();
        fs::write(fx.svc.join("sub/target"), "old").unwrap();
        let tree = fx.tree(resolver);
        let before = fx.outside_snapshot();

        let mut upload = tree.upload(&p("sub/target"), opts()).unwrap();
        upload.write_chunk(b"first half, ").unwrap();
        // The attack: move the directory away and put a symlink to the
        // outside directory in its place, between two chunks.
        fs::rename(fx.svc.join("sub"), fx.svc.join("sub.moved")).unwrap();
        symlink(&fx.outside, fx.svc.join("sub")).unwrap();
        upload.write_chunk(b"second half").unwrap();
        upload.commit(None).unwrap();

        assert_eq!(fx.outside_snapshot(), before, "{resolver:?}");
        assert!(!fx.outside.join("target").exists());
        assert_eq!(
            fs::read(fx.svc.join("sub.moved/target")).unwrap(),
            b"first half, second half"
        );
        assert!(
            fs::symlink_metadata(fx.svc.join("sub"))
                .unwrap()
                .is_symlink()
        );
        assert!(temp_files(&fx.svc.join("sub.moved")).is_empty());
        assert!(fs::read_dir(&fx.outside).unwrap().all(|e| {
            !e.unwrap()
                .file_name()
                .to_string_lossy()
                .contains("mcp-upload")
        }));
    }
}

#[test]
fn a_target_swapped_for_a_symlink_mid_upload_is_refused_at_commit() {
    let fx = Fixture::new();
    let tree = fx.tree(Resolver::Auto);
    let before = fx.outside_snapshot();
    let mut upload = tree.upload(&p("file.txt"), opts()).unwrap();
    upload.write_chunk(b"pwned").unwrap();
    fs::remove_file(fx.svc.join("file.txt")).unwrap();
    symlink(fx.outside.join("SECRET-file"), fx.svc.join("file.txt")).unwrap();
    let err = upload.commit(None).unwrap_err();
    assert!(matches!(err, FilesError::Symlink { .. }), "{err}");
    assert_eq!(fx.outside_snapshot(), before);
    assert!(
        fs::symlink_metadata(fx.svc.join("file.txt"))
            .unwrap()
            .is_symlink()
    );
    assert!(temp_files(&fx.svc).is_empty());
}

#[test]
fn a_temporary_file_replaced_mid_upload_is_not_renamed_into_place() {
    let fx = Fixture::new();
    let tree = fx.tree(Resolver::Auto);
    let mut upload = tree.upload(&p("file.txt"), opts()).unwrap();
    upload.write_chunk(b"ours").unwrap();
    let temp = fx.svc.join(&temp_files(&fx.svc)[0]);
    fs::remove_file(&temp).unwrap();
    symlink(fx.outside.join("SECRET-file"), &temp).unwrap();
    let err = upload.commit(None).unwrap_err();
    assert!(matches!(err, FilesError::Changed { .. }), "{err}");
    assert_eq!(fs::read(fx.svc.join("file.txt")).unwrap(), b"inside\n");
    assert_eq!(fs::read(fx.outside.join("SECRET-file")).unwrap(), SECRET);
}

// ------------------------------------------------- every op, many paths

/// Path strings built from the fixture's names, dot segments, separators,
/// encodings, look-alikes and bad bytes, plus arbitrary strings.
fn hostile_paths() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        8 => prop_oneof![
            Just("dir"), Just("deeper"), Just("file.txt"), Just("inner.txt"), Just("x.txt"),
            Just("link_in"), Just("link_file_in"), Just("link_out"), Just("link_out_file"),
            Just("link_abs"), Just("link_abs_in"), Just("link_parent"), Just("link_other"),
            Just("link_up"), Just("link_root"), Just("loop_a"), Just("hard_secret"),
            Just("%2e%2e"), Just("SECRET-file"), Just("SECRET-dir"), Just("other"),
            Just("outside"), Just("srv"), Just("svc"), Just("new"),
        ].prop_map(str::to_owned),
        2 => prop_oneof![
            Just(""), Just("."), Just(".."), Just("..."), Just("%2f"), Just("%2E%2E"),
            Just("\u{ff0e}\u{ff0e}"), Just("\u{2025}"), Just("..\\.."), Just("\0"), Just("a\0b"),
            Just("\n"), Just("\u{1b}[2J"), Just("é"),
        ].prop_map(str::to_owned),
        1 => (254usize..258).prop_map(|n| "L".repeat(n)),
        1 => "[a-z]{1,5}",
    ];
    prop_oneof![
        8 => (
            prop_oneof![4 => Just(""), 1 => Just("/"), 1 => Just("./"), 1 => Just("//")],
            proptest::collection::vec(segment, 0..5),
            any::<bool>(),
        )
            .prop_map(|(lead, segments, trailing)| {
                let mut raw = format!("{lead}{}", segments.join("/"));
                if trailing {
                    raw.push('/');
                }
                raw
            }),
        // Paths that exist in the fixture, so operations get to succeed.
        4 => (
            proptest::sample::select(vec![
                "file.txt", "dir", "dir/inner.txt", "dir/deeper", "dir/deeper/x.txt",
                "dir/link_up", "dir/link_root", "dir/link_root/dir/inner.txt", "%2e%2e",
                "%2e%2e/file", "link_in", "link_in/inner.txt", "link_file_in", "link_out",
                "link_out/SECRET-file", "link_out_file", "link_abs", "link_abs/SECRET-dir",
                "link_abs_in", "link_parent", "link_parent/svc/file.txt", "link_other",
                "loop_a", "hard_secret",
            ]),
            proptest::option::of(prop_oneof![Just("/"), Just("/."), Just("/x"), Just("/..")]),
        )
            .prop_map(|(path, suffix)| format!("{path}{}", suffix.unwrap_or_default())),
        // Climbing out with `..` (refused by the parser; if it ever let one
        // through, these would reach the sentinels).
        2 => (
            proptest::sample::select(vec!["..", "dir/..", "dir/../..", "dir/deeper/../../..", "../svc/.."]),
            proptest::sample::select(vec!["", "x", "outside/x", "other/SECRET-other", "outside", "svc/file.txt"]),
        )
            .prop_map(|(up, to)| format!("{up}/{to}")),
        1 => any::<String>(),
    ]
}

/// Whether `path`, resolved by the host's own rules (all symlinks
/// followed), lands inside the tree.
fn resolves_inside(fx: &Fixture, path: &Path) -> bool {
    fx.svc
        .join(path)
        .canonicalize()
        .is_ok_and(|real| real.starts_with(&fx.svc))
}

/// Whether every leading component of `path` is a real directory.
fn real_dirs_on_the_way(fx: &Fixture, path: &RemotePath) -> bool {
    let mut at = fx.svc.clone();
    let components: Vec<&str> = path.components().collect();
    components[..components.len().saturating_sub(1)]
        .iter()
        .all(|c| {
            at.push(c);
            fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir())
        })
}

/// Runs `op` on `raw` in a fresh fixture (if `raw` parses at all: parsing
/// touches no file), then checks nothing outside the tree changed and no
/// temporary file was left. `op` checks what it touched.
fn check_op(
    raw: &str,
    resolver: Resolver,
    op: impl Fn(&Fixture, &ServiceTree, &RemotePath) -> Result<Outcome, TestCaseError>,
) -> Result<Outcome, TestCaseError> {
    let Ok(path) = RemotePath::parse(raw) else {
        return Ok(Outcome::Refused);
    };
    let fx = Fixture::new();
    let before = fx.outside_snapshot();
    let outcome = op(&fx, &fx.tree(resolver), &path)?;
    prop_assert_eq!(
        fx.outside_snapshot(),
        before,
        "{:?} changed something outside",
        raw
    );
    prop_assert!(
        temp_files(&fx.svc).is_empty(),
        "{:?} left a temporary file",
        raw
    );
    Ok(outcome)
}

/// Whether an operation was carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    Refused,
}

fn outcome<T, E>(result: &Result<T, E>) -> Outcome {
    if result.is_ok() {
        Outcome::Done
    } else {
        Outcome::Refused
    }
}

/// stat, list, walk and open_read: each either fails or reaches only what
/// the host itself would resolve inside the tree, and never shows the
/// sentinel's names or contents.
fn reads(fx: &Fixture, tree: &ServiceTree, path: &RemotePath) -> Result<Outcome, TestCaseError> {
    let host = PathBuf::from(path.as_str());
    let mut done = Outcome::Refused;
    if let Ok(meta) = tree.stat(path) {
        done = Outcome::Done;
        let parent = host.parent().unwrap_or(Path::new(""));
        prop_assert!(resolves_inside(fx, parent), "stat {path:?} outside");
        // The sentinel's size shows up only for the in-tree hard link to it.
        let secret_sized = meta.kind == FileKind::File && meta.size == SECRET.len() as u64;
        prop_assert!(
            !secret_sized || path.as_str().ends_with("hard_secret"),
            "stat {path:?}"
        );
    }
    if let Ok(entries) = tree.list(path) {
        done = Outcome::Done;
        prop_assert!(resolves_inside(fx, &host), "list {path:?} outside");
        for entry in entries.flatten() {
            prop_assert!(
                !entry.name.contains("SECRET"),
                "list {path:?} shows {}",
                entry.name
            );
        }
    }
    if let Ok(walk) = tree.walk(path, 3) {
        for entry in walk.flatten() {
            prop_assert!(
                !entry.path.as_str().contains("SECRET"),
                "walk {path:?}: {:?}",
                entry.path
            );
            prop_assert!(entry.path.strip_prefix(path).is_some());
        }
    }
    if let Ok(mut file) = tree.open_read(path) {
        done = Outcome::Done;
        let mut data = Vec::new();
        file.read_to_end(&mut data).unwrap();
        prop_assert!(data != SECRET, "read {path:?} returned the sentinel");
        let (file, _) = file.into_std();
        let id = (
            file.metadata().unwrap().dev(),
            file.metadata().unwrap().ino(),
        );
        let outside: BTreeSet<(u64, u64)> = fx
            .outside_snapshot()
            .values()
            .map(|n| (n.dev, n.ino))
            .collect();
        prop_assert!(
            fx.tree_inodes().contains(&id),
            "read {path:?}: inode not in the tree"
        );
        prop_assert!(!outside.contains(&id), "read {path:?}: an outside inode");
        prop_assert!(resolves_inside(fx, &host));
    }
    Ok(done)
}

/// An upload: fails, or wrote a regular file at the path reached through
/// real directories only.
fn upload(fx: &Fixture, tree: &ServiceTree, path: &RemotePath) -> Result<Outcome, TestCaseError> {
    let result = put(tree, path.as_str(), b"pwned");
    if result.is_ok() {
        prop_assert!(real_dirs_on_the_way(fx, path));
        let host = fx.svc.join(path.as_str());
        prop_assert!(fs::symlink_metadata(&host).unwrap().is_file());
        prop_assert_eq!(fs::read(&host).unwrap(), b"pwned");
    }
    Ok(outcome(&result))
}

/// mkdir_all: fails, or made a real directory through real directories.
fn mkdir(fx: &Fixture, tree: &ServiceTree, path: &RemotePath) -> Result<Outcome, TestCaseError> {
    let result = tree.mkdir_all(path, 0o755);
    if result.is_ok() {
        prop_assert!(real_dirs_on_the_way(fx, path));
        prop_assert!(
            fs::symlink_metadata(fx.svc.join(path.as_str()))
                .unwrap()
                .is_dir()
        );
    }
    Ok(outcome(&result))
}

/// A recursive removal: fails, or removed the entry reached through real
/// directories (and nothing outside, checked by `check_op`).
fn remove(fx: &Fixture, tree: &ServiceTree, path: &RemotePath) -> Result<Outcome, TestCaseError> {
    let result = tree.remove(path, true);
    if result.is_ok() {
        prop_assert!(real_dirs_on_the_way(fx, path));
        prop_assert!(fs::symlink_metadata(fx.svc.join(path.as_str())).is_err());
    }
    Ok(outcome(&result))
}

/// Every operation on `raw`, each on a fresh fixture; how many were done.
fn every_op_stays_inside(raw: &str, resolver: Resolver) -> Result<usize, TestCaseError> {
    let mut done = 0;
    for op in [reads, upload, mkdir, remove] {
        if check_op(raw, resolver, op)? == Outcome::Done {
            done += 1;
        }
    }
    Ok(done)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_operation_on_any_path_stays_inside(raw in hostile_paths(), walk in any::<bool>()) {
        let resolver = if walk { Resolver::ComponentWalk } else { Resolver::Auto };
        every_op_stays_inside(&raw, resolver)?;
    }
}

/// A fixed table of hostile and ordinary paths through the same checks, with
/// how many of the four operations (reads, upload, mkdir_all, remove) each
/// should carry out under `openat2` and under the component walk: the
/// checks above only bite when operations succeed.
#[test]
fn hostile_path_table_stays_inside() {
    let long = "x".repeat(300);
    let table = [
        ("..", 0, 0),
        ("../", 0, 0),
        ("../outside", 0, 0),
        ("a/../../x", 0, 0),
        ("/etc/passwd", 0, 0),
        ("//etc/passwd", 0, 0),
        ("\0", 0, 0),
        ("a\0b", 0, 0),
        (long.as_str(), 0, 0),
        // The root: stat/list and mkdir_all only.
        (".", 2, 2),
        ("./", 2, 2),
        ("././.", 2, 2),
        ("", 2, 2),
        // Literal names.
        ("%2e%2e", 3, 3),
        ("%2e%2e/%2e%2e/outside", 2, 2),
        ("\u{ff0e}\u{ff0e}/\u{ff0e}\u{ff0e}/outside", 2, 2),
        // Symlinks as the last component: stat and remove act on the link.
        ("link_out", 2, 2),
        ("link_out/", 2, 2),
        ("link_parent", 2, 2),
        ("loop_a", 2, 2),
        // Through escaping symlinks: nothing.
        ("link_out/SECRET-file", 0, 0),
        ("link_abs/SECRET-dir", 0, 0),
        ("link_parent/other", 0, 0),
        ("dir/link_up/other", 0, 0),
        // Through in-tree symlinks: reads with openat2 only.
        ("dir/link_root/file.txt", 1, 0),
        ("link_in/deeper", 1, 0),
        // Hard link: stat, replaced by an upload, removed; never read.
        ("hard_secret", 3, 3),
        ("dir/deeper", 3, 3),
        ("file.txt", 3, 3),
        ("new/file", 2, 2),
    ];
    for (raw, with_openat2, with_walk) in table {
        let done = every_op_stays_inside(raw, Resolver::Auto).unwrap();
        assert_eq!(done, with_openat2, "{raw:?} with openat2");
        let done = every_op_stays_inside(raw, Resolver::ComponentWalk).unwrap();
        assert_eq!(done, with_walk, "{raw:?} with the component walk");
    }
}

#[test]
fn an_upload_removes_stale_temporary_files_of_interrupted_uploads() {
    let f = Fixture::new();
    let old = f.svc.join("dir/.app.toml.mcp-upload-00000000deadbeef");
    let fresh = f.svc.join("dir/.app.toml.mcp-upload-00000000cafef00d");
    let lookalike_dir = f.svc.join("dir/.x.mcp-upload-0000000000000001");
    for p in [&old, &fresh] {
        fs::write(p, "partial").unwrap();
    }
    fs::create_dir(&lookalike_dir).unwrap();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let tree = f.tree(Resolver::Auto);
    let mut up = tree
        .upload(
            &RemotePath::parse("dir/new.txt").unwrap(),
            UploadOptions::new(0o644, 1 << 20),
        )
        .unwrap();
    up.write_chunk(b"new\n").unwrap();
    up.commit(None).unwrap();
    // The stale one went; the fresh one may be an upload in progress; a
    // directory is never taken for a temporary file.
    assert!(!old.exists());
    assert!(fresh.exists());
    assert!(lookalike_dir.is_dir());
    assert_eq!(fs::read(f.svc.join("dir/new.txt")).unwrap(), b"new\n");
}
