"""The automation scripts in examples/python, run against the test node."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import metacircular_mcp as mcp
from conftest import REPO, Node, wait_for

EXAMPLES = REPO / "examples" / "python"


def run(node: Node, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--config", str(node.config), *args],
        env=node.env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def service(node: Node, name: str, image: str) -> Path:
    return node.write_service(
        name,
        f'# {name}: keep this comment\nname = "{name}"\n\n[[components]]\nname = "web"\n'
        f'image = "{image}"  # the tag the roll changes\n',
    )


def test_roll_image_rolls_every_service_and_puts_back_a_failure(
    node: Node, client: mcp.Client
) -> None:
    repo = node.image_v1.rpartition(":")[0]
    names = [node.service_name("roll"), node.service_name("roll")]
    other = node.service_name("other")
    paths = [service(node, n, node.image_v1) for n in names]
    other_text = f'name = "{other}"\n\n[[components]]\nname = "web"\nimage = "{node.registry}/elsewhere/app:1"\n'
    other_path = node.write_service(other, other_text)
    try:
        for p in paths:
            client.deploy(p)

        dry = run(node, "roll_image.py", repo, "2", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert all(f"{n}: web -> {repo}:2" in dry.stdout for n in names), dry.stdout
        assert other not in dry.stdout
        assert all(":1\"" in p.read_text() for p in paths), "a dry run changes no file"

        done = run(node, "roll_image.py", repo, "2")
        assert done.returncode == 0, done.stdout + done.stderr
        for n, p in zip(names, paths):
            assert p.read_text() == (
                f'# {n}: keep this comment\nname = "{n}"\n\n[[components]]\nname = "web"\n'
                f'image = "{node.image_v2}"  # the tag the roll changes\n'
            )
            [c] = client.status(n).components
            assert (c.observed_image, c.observed_state) == (node.image_v2, "running")
        assert other_path.read_text() == other_text

        before = [p.read_bytes() for p in paths]
        bad = run(node, "roll_image.py", repo, "no-such-tag")
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert "put back" in bad.stderr and names[0] in bad.stderr
        assert [p.read_bytes() for p in paths] == before, "the failed file was put back"
        for n in names:
            [c] = client.status(n).components
            assert (c.observed_image, c.observed_state) == (node.image_v2, "running")
    finally:
        for n in names:
            client.remove(n, check=False)
        for p in [*paths, other_path]:
            p.unlink()


def test_drift_report(node: Node, client: mcp.Client) -> None:
    name = node.service_name("drift")
    path = service(node, name, node.image_v1)
    try:
        client.deploy(path)
        clean = run(node, "drift_report.py", "--json")
        report = json.loads(clean.stdout)
        assert [f for f in report["drift"] if f["instance"].startswith(name)] == []

        stopped = node.podman_cmd("stop", "-t", "0", f"{name}-web")
        assert stopped.returncode == 0, stopped.stderr
        wait_for(
            "drift to show",
            15,
            lambda: any(c.drift for c in client.status(name).components),
        )
        found = run(node, "drift_report.py")
        assert found.returncode == 1, found.stdout + found.stderr
        [line] = [l for l in found.stdout.splitlines() if f"{name}-web" in l]
        assert line.split("\t")[:3] == [node.name, f"{name}-web", "stopped"]
        assert f"wants {node.image_v1} running" in line

        as_json = json.loads(run(node, "drift_report.py", "--json").stdout)
        assert {
            "node": node.name,
            "instance": f"{name}-web",
            "drift": ["stopped"],
        }.items() <= next(f for f in as_json["drift"] if f["instance"] == f"{name}-web").items()
    finally:
        client.remove(name, check=False)
        path.unlink()
