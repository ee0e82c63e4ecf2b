"""Files under /srv/<service>/ from Python: push, pull, list, stat and
remove, checked on disk on both sides."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import metacircular_mcp as mcp
from conftest import Node


def test_push_list_pull_remove(node: Node, client: mcp.Client, tmp_path: Path) -> None:
    service = node.service_name("files")
    (node.srv_root / service).mkdir(parents=True)
    data = os.urandom(3 << 20)
    local = tmp_path / "blob.bin"
    local.write_bytes(data)
    local.chmod(0o600)

    pushed = client.push(service, local, "conf/blob.bin", mode=0o640)
    [f] = pushed.files
    assert (pushed.node, pushed.service, pushed.skipped) == (node.name, service, [])
    assert (f.remote, f.size, f.sha256) == ("conf/blob.bin", len(data), hashlib.sha256(data).hexdigest())
    on_node = node.srv_root / service / "conf" / "blob.bin"
    assert on_node.read_bytes() == data
    assert on_node.stat().st_mode & 0o777 == 0o640

    tree = tmp_path / "site"
    (tree / "css").mkdir(parents=True)
    (tree / "index.html").write_text("<h1>hi</h1>\n")
    (tree / "css" / "a.css").write_text("body{}\n")
    (tree / "link").symlink_to("index.html")
    res = client.push(service, tree, recursive=True)
    assert sorted(t.remote for t in res.files) == ["site/css/a.css", "site/index.html"]
    assert res.skipped == ["site/link"] or any("link" in s for s in res.skipped)

    entries = client.list_files(service, recursive=True)
    paths = [e.path for e in entries]
    assert paths == sorted(paths)
    for p in ("conf", "conf/blob.bin", "site", "site/css/a.css", "site/index.html"):
        assert p in paths, paths
    entry = client.stat_file(service, "conf/blob.bin")
    assert (entry.kind, entry.size, entry.mode) == ("file", len(data), 0o640)
    assert entry.mtime is not None and entry.symlink_target is None
    assert [e.path for e in client.list_files(service, "site")] == ["site/css", "site/index.html"]

    back = tmp_path / "back"
    back.mkdir()
    pulled = client.pull(service, "conf/blob.bin", back)
    assert pulled.files[0].local == str(back / "blob.bin")
    assert (back / "blob.bin").read_bytes() == data
    client.pull(service, "site", back / "site-copy", recursive=True)
    assert (back / "site-copy" / "css" / "a.css").read_text() == "body{}\n"

    assert client.remove_file(service, "conf/blob.bin") == "conf/blob.bin"
    assert not on_node.exists()
    with pytest.raises(mcp.ConflictError):
        client.remove_file(service, "site")
    client.remove_file(service, "site", recursive=True)
    assert [e.path for e in client.list_files(service)] == ["conf"]
    with pytest.raises(mcp.NotFoundError):
        client.stat_file(service, "site/index.html")


def test_bad_paths_and_local_errors(node: Node, client: mcp.Client, tmp_path: Path) -> None:
    service = node.service_name("conf")
    (node.srv_root / service).mkdir(parents=True)
    local = tmp_path / "x"
    local.write_text("x")
    for hostile in ("../escape", "/etc/passwd", "a/../../b"):
        with pytest.raises(mcp.InvalidArgumentError) as e:
            client.push(service, local, hostile)
        assert e.value.code == "INVALID_ARGUMENT", hostile
    assert not (node.srv_root / "escape").exists()
    with pytest.raises(FileNotFoundError) as missing:
        client.push(service, tmp_path / "nope")
    assert missing.value.filename == str(tmp_path / "nope")
    with pytest.raises(mcp.InvalidArgumentError, match="mode"):
        client.push(service, local, mode=0o100000)
    # The rule `mcp push --mode` and the agent apply: permission bits only.
    with pytest.raises(mcp.InvalidArgumentError, match="only the permission bits"):
        client.push(service, local, mode=0o4755)
    with pytest.raises(mcp.NotFoundError):
        client.pull(service, "absent", tmp_path / "absent")
    assert not (tmp_path / "absent").exists()
