//! The man pages in `man/` are what the binaries' clap definitions make
//! now: a flag or subcommand added without `make man` fails here.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use mcp_e2e::bin_dir;

/// Every `*.1` file in `dir`, by name, with its contents.
fn pages(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "1"))
        .map(|path| {
            let name = path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read a page"))
        })
        .collect()
}

#[test]
fn the_committed_man_pages_are_current() {
    let made = tempfile::tempdir().expect("tempdir");
    for bin in ["mcp", "mcp-agent", "mcp-master"] {
        let out = Command::new(bin_dir().join(bin))
            .args(["generate-man"])
            .arg(made.path())
            .output()
            .expect("run the binary");
        assert!(
            out.status.success(),
            "{bin} generate-man: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let made = pages(made.path());
    for name in [
        "mcp.1",
        "mcp-deploy.1",
        "mcp-node-drain.1",
        "mcp-agent.1",
        "mcp-agent-token-add.1",
        "mcp-master.1",
    ] {
        assert!(
            made.contains_key(name),
            "no page {name} among {:?}",
            made.keys()
        );
    }
    assert!(
        !made
            .keys()
            .any(|n| n.contains("generate-man") || n.ends_with("-help.1")),
        "hidden and help commands have no page: {:?}",
        made.keys()
    );
    let committed = pages(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../man"));
    let stale: Vec<&String> = made
        .iter()
        .filter(|(name, text)| committed.get(*name) != Some(text))
        .map(|(name, _)| name)
        .chain(committed.keys().filter(|name| !made.contains_key(*name)))
        .collect();
    assert!(
        stale.is_empty(),
        "man pages out of date (run `make man` and commit man/): {stale:?}"
    );
}
