//! Files under `<srv_root>/<service>/` end to end: the real CLI and client
//! against a real agent, the tree checked on disk.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mcp_core::client::ClientError;
use mcp_core::proto as pb;
use mcp_e2e::{Node, unique};
use sha2::{Digest, Sha256};

/// Deterministic pseudo-random content.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn srv(node: &Node, service: &str) -> PathBuf {
    node.dir.path().join("srv").join(service)
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

/// Every name in `dir`, recursively, relative to it.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let rel = e
                .path()
                .strip_prefix(dir)
                .expect("prefix")
                .display()
                .to_string();
            if e.file_type().expect("type").is_dir() {
                stack.push(e.path());
            }
            out.push(rel);
        }
    }
    out.sort();
    out
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn code(err: &ClientError) -> Option<tonic::Code> {
    match err {
        ClientError::PermissionDenied { .. } => Some(tonic::Code::PermissionDenied),
        ClientError::Unauthenticated { .. } => Some(tonic::Code::Unauthenticated),
        other => other.code(),
    }
}

#[test]
fn push_pull_ls_rm_through_the_cli() {
    let node = Node::start();
    let service = unique("files");
    let work = tempfile::tempdir().expect("tempdir");

    // A file of 5 MiB and a bit, to a path whose directories do not exist.
    let data = content(5 * 1024 * 1024 + 7, 1);
    let local = work.path().join("blob.bin");
    std::fs::write(&local, &data).expect("write");
    let out = node
        .mcp(&[
            "push",
            &service,
            local.to_str().expect("utf-8"),
            "conf/blob.bin",
            "--mode",
            "640",
        ])
        .success();
    let digest = hex::encode(Sha256::digest(&data));
    assert!(out.stdout.contains(&digest[..16]), "{}", out.stdout);
    let on_node = srv(&node, &service).join("conf/blob.bin");
    assert_eq!(std::fs::read(&on_node).expect("read"), data);
    assert_eq!(mode_of(&on_node), 0o640);
    // The service directory was created 0750; nothing else was left there.
    assert_eq!(mode_of(&srv(&node, &service)), 0o750);
    assert_eq!(tree(&srv(&node, &service)), ["conf", "conf/blob.bin"]);

    // Pulled back, into an existing directory: same bytes, same mode.
    let back = work.path().join("back");
    std::fs::create_dir(&back).expect("mkdir");
    node.mcp(&[
        "pull",
        &service,
        "conf/blob.bin",
        back.to_str().expect("utf-8"),
    ])
    .success();
    let pulled = back.join("blob.bin");
    assert_eq!(std::fs::read(&pulled).expect("read"), data);
    assert_eq!(mode_of(&pulled), 0o640);

    // A directory with -r; its symlink is skipped, not followed.
    let dir = work.path().join("site");
    std::fs::create_dir_all(dir.join("css")).expect("mkdir");
    std::fs::write(dir.join("index.html"), "<h1>hi</h1>\n").expect("write");
    std::fs::write(dir.join("css/main.css"), "h1 { color: red }\n").expect("write");
    std::os::unix::fs::symlink("/etc/hostname", dir.join("host")).expect("symlink");
    let err = node
        .mcp(&["push", &service, dir.to_str().expect("utf-8")])
        .failure();
    assert!(err.contains("push it with -r"), "{err}");
    let out = node
        .mcp(&["push", &service, dir.to_str().expect("utf-8"), "www", "-r"])
        .success();
    assert!(out.stdout.contains("skipped"), "{}", out.stdout);
    assert_eq!(
        tree(&srv(&node, &service)),
        [
            "conf",
            "conf/blob.bin",
            "www",
            "www/css",
            "www/css/main.css",
            "www/index.html"
        ]
    );

    // ls, plain and recursive, table and JSON.
    let ls = node.mcp(&["ls", &service]).success().stdout;
    assert!(ls.contains("conf/") && ls.contains("www/"), "{ls}");
    assert!(ls.contains("drwxr-x---"), "{ls}");
    let json = node.mcp_json(&["ls", &service, "www", "-r"]);
    let paths: Vec<&str> = json["nodes"][0]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert_eq!(paths, ["www/css", "www/css/main.css", "www/index.html"]);
    let index = &json["nodes"][0]["entries"][2];
    assert_eq!(index["kind"], "file");
    assert_eq!(index["size"], 12);

    // The whole tree pulled with -r.
    let copy = work.path().join("copy");
    node.mcp(&["pull", &service, ".", copy.to_str().expect("utf-8"), "-r"])
        .success();
    assert_eq!(tree(&copy), tree(&srv(&node, &service)));
    assert_eq!(
        std::fs::read(copy.join("www/css/main.css")).expect("read"),
        b"h1 { color: red }\n"
    );

    // A symlink inside the tree is pulled as the file it leads to.
    std::os::unix::fs::symlink("index.html", srv(&node, &service).join("www/home.html"))
        .expect("symlink");
    let home = work.path().join("home.html");
    node.mcp(&[
        "pull",
        &service,
        "www/home.html",
        home.to_str().expect("utf-8"),
    ])
    .success();
    assert_eq!(std::fs::read(&home).expect("read"), b"<h1>hi</h1>\n");

    // rm: a file; a non-empty directory only with -r.
    node.mcp(&["rm", &service, "conf/blob.bin"]).success();
    assert!(!on_node.exists());
    let err = node.mcp(&["rm", &service, "www"]).failure();
    assert!(err.contains("not empty"), "{err}");
    node.mcp(&["rm", &service, "www", "-r"]).success();
    assert_eq!(tree(&srv(&node, &service)), ["conf"]);

    // Bad input: named, and nothing touched.
    let err = node.mcp(&["pull", &service, "nope.txt"]).failure();
    assert!(err.contains("\"nope.txt\" does not exist"), "{err}");
    let err = node.mcp(&["ls", "../etc"]).failure();
    assert!(err.contains("invalid service name"), "{err}");
    let err = node
        .mcp(&["push", &service, local.to_str().expect("utf-8"), "../x"])
        .failure();
    assert!(err.contains("invalid path"), "{err}");
    let err = node
        .mcp(&[
            "push",
            &service,
            local.to_str().expect("utf-8"),
            "x",
            "--mode",
            "4755",
        ])
        .failure();
    assert!(err.contains("not a file mode"), "{err}");
    assert!(err.contains("only the permission bits"), "{err}");
    assert_eq!(tree(&srv(&node, &service)), ["conf"]);
}

#[test]
fn a_failed_push_leaves_the_old_file_and_no_temporary_files() {
    let mut node = Node::start();
    // A size limit of 1 MiB.
    node.reconfigure(|text| text.push_str("\n[files]\nmax_file_size = \"1M\"\n"));

    let service = unique("atomic");
    let dir = srv(&node, &service);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let old = b"old contents\n".to_vec();
    std::fs::write(dir.join("app.toml"), &old).expect("write");
    let work = tempfile::tempdir().expect("tempdir");

    // Over the limit, announced: refused before any data.
    let big = work.path().join("big");
    std::fs::write(&big, content(2 << 20, 2)).expect("write");
    let err = node
        .mcp(&["push", &service, big.to_str().expect("utf-8"), "app.toml"])
        .failure();
    assert!(
        err.contains("larger than the limit of 1048576 bytes"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.join("app.toml")).expect("read"), old);

    let rt = rt();
    rt.block_on(async {
        let mut c = node.client(&node.admin_token).await;
        let header = |size: u64| pb::PushFileRequest {
            part: Some(pb::push_file_request::Part::Header(pb::PushFileHeader {
                service: service.clone(),
                path: "app.toml".into(),
                mode: 0o600,
                size,
            })),
        };
        let data = |d: &[u8]| pb::PushFileRequest {
            part: Some(pb::push_file_request::Part::Data(d.to_vec().into())),
        };
        let sha = |d: &[u8]| pb::PushFileRequest {
            part: Some(pb::push_file_request::Part::Sha256(d.to_vec())),
        };
        let new = b"new contents\n";

        // A digest that does not match what arrived: DataLoss.
        let parts = vec![header(new.len() as u64), data(new), sha(&[0u8; 32])];
        let err = c
            .push_file(futures::stream::iter(parts))
            .await
            .expect_err("wrong digest accepted");
        assert_eq!(code(&err), Some(tonic::Code::DataLoss), "{err}");
        assert!(err.to_string().contains("sha256 mismatch"), "{err}");

        // Fewer bytes than announced.
        let right = Sha256::digest(new).to_vec();
        let parts = vec![header(100), data(new), sha(&right)];
        let err = c
            .push_file(futures::stream::iter(parts))
            .await
            .expect_err("short upload accepted");
        assert_eq!(code(&err), Some(tonic::Code::InvalidArgument), "{err}");

        // A stream that ends without its digest: nothing is put in place.
        let parts = vec![header(new.len() as u64), data(new)];
        let err = c
            .push_file(futures::stream::iter(parts))
            .await
            .expect_err("upload without digest accepted");
        assert_eq!(code(&err), Some(tonic::Code::Aborted), "{err}");

        // Data before the header.
        let err = c
            .push_file(futures::stream::iter(vec![data(new)]))
            .await
            .expect_err("headerless upload accepted");
        assert_eq!(code(&err), Some(tonic::Code::InvalidArgument), "{err}");

        // A client that goes away mid-upload.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(header(1 << 19)).await.expect("send");
        tx.send(data(&content(1 << 16, 3))).await.expect("send");
        let mut c2 = c.clone();
        let call = tokio::spawn(async move {
            c2.push_file(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        call.abort();
        drop(tx);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;

        // And a good one still works afterwards.
        let parts = vec![header(new.len() as u64), data(new), sha(&right)];
        let ok = c
            .push_file(futures::stream::iter(parts))
            .await
            .expect("a good push");
        assert_eq!(ok.sha256, right);
    });
    assert_eq!(
        std::fs::read(dir.join("app.toml")).expect("read"),
        b"new contents\n"
    );
    assert_eq!(mode_of(&dir.join("app.toml")), 0o600);
    // No temporary file of any failed attempt is left behind.
    assert_eq!(tree(&dir), ["app.toml"]);
}

#[test]
fn confinement_and_roles() {
    let node = Node::start();
    let service = unique("jail");
    let dir = srv(&node, &service);
    std::fs::create_dir_all(dir.join("data")).expect("mkdir");
    std::fs::write(dir.join("data/ok.txt"), "fine\n").expect("write");
    // Outside the tree: a directory and a secret, and ways into them.
    let outside = node.dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("secret"), "secret\n").expect("write");
    std::os::unix::fs::symlink(&outside, dir.join("out")).expect("symlink");
    std::os::unix::fs::symlink("../../outside/secret", dir.join("data/rel")).expect("symlink");
    std::fs::hard_link(outside.join("secret"), dir.join("hard")).expect("hard link");
    let snapshot = || -> Vec<(String, Vec<u8>, u64)> {
        tree(&outside)
            .into_iter()
            .map(|p| {
                let path = outside.join(&p);
                let m = std::fs::symlink_metadata(&path).expect("stat");
                (
                    p,
                    std::fs::read(&path).unwrap_or_default(),
                    m.mtime() as u64,
                )
            })
            .collect()
    };
    let before = snapshot();

    let rt = rt();
    rt.block_on(async {
        let mut admin = node.client(&node.admin_token).await;
        let push = |path: &str| {
            let body = b"x".to_vec();
            let sha = Sha256::digest(&body).to_vec();
            futures::stream::iter(vec![
                pb::PushFileRequest {
                    part: Some(pb::push_file_request::Part::Header(pb::PushFileHeader {
                        service: service.clone(),
                        path: path.to_string(),
                        mode: 0o644,
                        size: 1,
                    })),
                },
                pb::PushFileRequest {
                    part: Some(pb::push_file_request::Part::Data(body.into())),
                },
                pb::PushFileRequest {
                    part: Some(pb::push_file_request::Part::Sha256(sha)),
                },
            ])
        };
        let hostile = [
            ("../escape", tonic::Code::InvalidArgument),
            ("/etc/passwd", tonic::Code::InvalidArgument),
            ("data/../../escape", tonic::Code::InvalidArgument),
            ("a\0b", tonic::Code::InvalidArgument),
            ("data/\u{1b}[2Jx", tonic::Code::InvalidArgument),
            ("out/new", tonic::Code::PermissionDenied),
            ("out/secret", tonic::Code::PermissionDenied),
            ("data/rel", tonic::Code::PermissionDenied),
        ];
        for (path, want) in hostile {
            let err = admin.push_file(push(path)).await.expect_err(path);
            assert_eq!(code(&err), Some(want), "push {path:?}: {err}");
        }
        for path in ["../escape", "out/secret", "data/rel", "hard"] {
            let err = match admin.pull_file(&service, path).await {
                Ok(mut s) => {
                    use futures::StreamExt;
                    match s.next().await {
                        Some(Err(e)) => e,
                        other => panic!("pull {path:?} answered {other:?}"),
                    }
                }
                Err(e) => e,
            };
            assert!(
                matches!(
                    code(&err),
                    Some(tonic::Code::PermissionDenied | tonic::Code::InvalidArgument)
                ),
                "pull {path:?}: {err}"
            );
        }
        // The link itself may be listed; nothing through it.
        let link = admin
            .list_files(&service, "out", false)
            .await
            .expect("ls out");
        assert_eq!(link.len(), 1);
        assert_eq!(link[0].kind, "symlink");
        let err = admin
            .list_files(&service, "out/secret", false)
            .await
            .expect_err("ls out/secret");
        assert_eq!(code(&err), Some(tonic::Code::PermissionDenied), "{err}");
        // Listing shows the symlinks as such.
        let entries = admin.list_files(&service, ".", true).await.expect("ls -r");
        let out = entries
            .iter()
            .find(|e| e.path == "out")
            .expect("out listed");
        assert_eq!(out.kind, "symlink");
        assert_eq!(out.symlink_target, outside.display().to_string());
        assert!(!entries.iter().any(|e| e.path.starts_with("out/")));
        // Removing a symlink removes the link, not what it points to.
        admin
            .remove_file(&service, "out", true)
            .await
            .expect("rm out");
        admin
            .remove_file(&service, "hard", false)
            .await
            .expect("rm hard");

        // Readonly: may list and pull, never push or remove.
        let mut viewer = node.client(&node.readonly_token).await;
        assert!(
            !viewer
                .list_files(&service, ".", false)
                .await
                .expect("ls")
                .is_empty()
        );
        let mut s = viewer
            .pull_file(&service, "data/ok.txt")
            .await
            .expect("pull");
        use futures::StreamExt;
        assert!(s.next().await.expect("header").is_ok());
        let err = viewer
            .push_file(push("data/new"))
            .await
            .expect_err("readonly push");
        assert_eq!(code(&err), Some(tonic::Code::PermissionDenied), "{err}");
        let err = viewer
            .remove_file(&service, "data/ok.txt", false)
            .await
            .expect_err("readonly rm");
        assert_eq!(code(&err), Some(tonic::Code::PermissionDenied), "{err}");
    });
    assert_eq!(snapshot(), before, "something outside the tree changed");
    assert!(outside.join("secret").exists());
    assert!(dir.join("data/ok.txt").exists());
    assert!(!dir.join("data/new").exists());
    // Every refused push left nothing behind.
    assert_eq!(tree(&dir), ["data", "data/ok.txt", "data/rel"]);
    // The readonly refusals are in the audit log.
    let refused = mcp_e2e::wait_for(std::time::Duration::from_secs(5), || {
        node.audit_records().into_iter().find(|r| {
            r["method"] == "/mcp.v1.AgentService/PushFile"
                && r["caller"] == "viewer"
                && r["outcome"] == "PermissionDenied"
        })
    });
    assert!(refused.is_some(), "{:?}", node.audit_records());
}

/// `cmd` run under `script`, on a pseudo-terminal: what it wrote there.
fn on_a_terminal(node: &Node, args: &[&str]) -> String {
    let mut line = mcp_e2e::bin_dir().join("mcp").display().to_string();
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    let out = std::process::Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .env("MCP_CONFIG", node.cli_config())
        .env_remove("MCP_TOKEN")
        .output()
        .expect("script (util-linux) is needed for this test");
    assert!(
        out.status.success(),
        "{line}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_progress_bar_only_on_a_terminal_and_for_large_transfers() {
    let node = Node::start();
    let service = unique("progress");
    let work = tempfile::tempdir().expect("tempdir");
    let big = work.path().join("big.bin");
    std::fs::write(&big, content(24 << 20, 4)).expect("write");
    let small = work.path().join("small.txt");
    std::fs::write(&small, "small\n").expect("write");
    let big_s = big.to_str().expect("utf-8");
    let small_s = small.to_str().expect("utf-8");

    // indicatif draws with the total size and a rate.
    let tty = on_a_terminal(&node, &["push", &service, big_s]);
    assert!(tty.contains("24.00 MiB"), "{tty:?}");
    assert!(tty.contains("pushed"), "{tty:?}");
    // Small: no bar, even on a terminal. (A rate is "12.3 MiB/s" or
    // "512 B/s"; the random temporary path may well hold "B/s".)
    let tty = on_a_terminal(&node, &["push", &service, small_s]);
    assert!(!tty.contains("iB/s") && !tty.contains(" B/s"), "{tty:?}");
    // Not a terminal, or JSON: no bar, and JSON stays parseable.
    let piped = node.mcp(&["push", &service, big_s]).success();
    assert!(!piped.stderr.contains("MiB"), "{}", piped.stderr);
    let tty = on_a_terminal(
        &node,
        &[
            "--json",
            "pull",
            &service,
            "big.bin",
            work.path().join("back.bin").to_str().expect("utf-8"),
        ],
    );
    let json: serde_json::Value =
        serde_json::from_str(tty.trim()).unwrap_or_else(|e| panic!("{e}: {tty:?}"));
    assert_eq!(json["nodes"][0]["files"][0]["size"], 24 << 20);
}
