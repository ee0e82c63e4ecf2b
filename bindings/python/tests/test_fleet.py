"""The fleet through the bindings: a real `mcp-master` and a real agent
that joins it; `Client.nodes()`, `drain()`, `undrain()` and `plan()` on a
client of the master, and `Client.from_config` with a configuration that
names the master: deploys placed and queries answered for the fleet."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import metacircular_mcp as mcp

from conftest import Node, free_port, wait_for


@dataclass
class Fleet:
    master: str
    admin: str
    readonly: str
    node: str
    ca_cert: Path
    directory: Path


def spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),
        env={"PATH": "/usr/bin:/bin", "RUST_LOG": "info"},
    )


@pytest.fixture(scope="module")
def fleet(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    # The session node's development PKI: its server certificate names
    # 127.0.0.1, where the master and the joining agent listen too.
    tls = node.dir / "data" / "mcp" / "tls"
    directory = tmp_path_factory.mktemp("fleet")
    master_address = f"127.0.0.1:{free_port()}"
    (directory / "master.toml").write_text(
        f'listen = "{master_address}"\ndb = "{directory / "master.db"}"\n\n'
        f'[auth]\ntoken_file = "{directory / "tokens.toml"}"\n\n'
        f'[tls]\ncert = "{tls / "server.pem"}"\nkey = "{tls / "server.key"}"\n\n'
        "[fleet]\nheartbeat_interval_ms = 200\nheartbeat_grace_ms = 200\nlost_after = 5\n\n"
        f'[agents]\ntoken_file = "{directory / "agents.token"}"\nca_cert = "{node.ca_cert}"\n'
    )

    def token(name: str, role: str) -> str:
        out = subprocess.run(
            [str(node.bins / "mcp-master"), "--config", str(directory / "master.toml"),
             "token", "add", name, "--role", role],
            capture_output=True, text=True, check=True,
        )
        return out.stdout.strip()

    admin, readonly, join = token("ops", "admin"), token("viewer", "readonly"), token("n", "node")
    (directory / "join-token").write_text(join + "\n")
    agent_address = f"127.0.0.1:{free_port()}"
    name = f"pyfleet-{free_port()}"
    (directory / "agent.toml").write_text(
        f'node_name = "{name}"\nlisten = "{agent_address}"\ndb = "{directory / "agent.db"}"\n'
        f'srv_root = "{directory / "srv"}"\n\n'
        f'[podman]\nsocket = "{node.socket}"\ninsecure_registries = ["{node.registry}"]\n'
        "stop_timeout = 1\n\n"
        f'[auth]\ntoken_file = "{directory / "agent-tokens.toml"}"\n\n'
        f'[tls]\ncert = "{tls / "server.pem"}"\nkey = "{tls / "server.key"}"\n\n'
        f'[master]\naddress = "{master_address}"\nca_cert = "{node.ca_cert}"\n'
        f'token_file = "{directory / "join-token"}"\nmemory = "1G"\ncpus = 2\n'
    )
    master = spawn(
        [str(node.bins / "mcp-master"), "--config", str(directory / "master.toml")],
        directory / "master.log",
    )
    agent = None
    try:
        # The master makes its token for agents at its start; the agent
        # accepts it as an admin token, as an operator sets up a node.
        wait_for("the master's token for agents", 20, (directory / "agents.token").exists)
        subprocess.run(
            [str(node.bins / "mcp-agent"), "--config", str(directory / "agent.toml"),
             "token", "add", "master", "--role", "admin",
             "--from-file", str(directory / "agents.token")],
            capture_output=True, text=True, check=True,
        )
        agent = spawn(
            [str(node.bins / "mcp-agent"), "--config", str(directory / "agent.toml")],
            directory / "agent.log",
        )

        def joined() -> bool:
            # The master may not listen yet: connecting is retried too.
            try:
                client = mcp.Client(master_address, token=readonly, ca_cert=node.ca_cert)
                return any(n.node == name and n.state == "ready" for n in client.nodes())
            except mcp.UnavailableError:
                return False

        wait_for("the agent to join the master", 20, joined)
        yield Fleet(master_address, admin, readonly, name, node.ca_cert, directory)
    finally:
        for process in (agent, master):
            if process is not None:
                process.kill()
                process.wait()


def test_nodes_drain_undrain_and_plan(fleet: Fleet, node: Node) -> None:
    ops = mcp.Client(fleet.master, token=fleet.admin, ca_cert=fleet.ca_cert)
    [joined] = [n for n in ops.nodes() if n.node == fleet.node]
    assert isinstance(joined, mcp.FleetNode)
    assert (joined.role, joined.state, joined.services) == ("worker", "ready", 0)
    assert isinstance(joined.capacity, mcp.Resources)
    assert (joined.capacity.memory_bytes, joined.capacity.cpus) == (1 << 30, 2)
    assert joined.last_heartbeat is not None and joined.last_heartbeat.tzinfo is not None
    assert "FleetNode(node=" in repr(joined)

    web = mcp.parse_service(
        'name = "web"\n[[components]]\nname = "app"\nimage = "x:1"\nmemory = "256M"\n'
    )
    [placed] = ops.plan([web])
    assert isinstance(placed, mcp.Placement)
    assert (placed.service, placed.node, placed.decision, placed.moved_from) == (
        "web", fleet.node, "new", None,
    )
    big = mcp.parse_service(
        'name = "big"\n[[components]]\nname = "app"\nimage = "x:1"\nmemory = "2G"\n'
    )
    with pytest.raises(mcp.ConflictError, match=r"needs 2 GiB memory, 0 CPUs; no ready node has room"):
        ops.plan([big])

    drained = ops.drain(fleet.node)
    assert drained.state == "draining"
    with pytest.raises(mcp.ConflictError, match="no worker or core node is ready"):
        ops.plan([web])
    assert ops.undrain(fleet.node).state == "ready"
    with pytest.raises(mcp.NotFoundError, match='no node named "nowhere"'):
        ops.drain("nowhere")

    viewer = mcp.Client(fleet.master, token=fleet.readonly, ca_cert=fleet.ca_cert)
    assert [p.node for p in viewer.plan([web])] == [fleet.node]
    with pytest.raises(mcp.PermissionDeniedError):
        viewer.drain(fleet.node)


def test_from_config_names_the_master_and_commands_go_through_it(
    fleet: Fleet, node: Node
) -> None:
    (fleet.directory / "admin-token").write_text(fleet.admin + "\n")
    services = fleet.directory / "services"
    services.mkdir(exist_ok=True)
    config = fleet.directory / "mcp.toml"
    config.write_text(
        f'master = "{fleet.master}"\ntoken_file = "admin-token"\n'
        f'services_dir = "{services}"\n\n[tls]\nca_cert = "{fleet.ca_cert}"\n'
    )
    client = mcp.Client.from_config(config)
    assert client.node == "master"
    port = free_port()
    name = f"pyfleet-web-{port}"
    node.services.append(name)
    web = mcp.parse_service(
        f'name = "{name}"\n[[components]]\nname = "web"\nimage = "{node.image_v1}"\n'
        f'ports = ["127.0.0.1:{port}:8080"]\nmemory = "64M"\n'
    )
    try:
        deployed = client.deploy(web)
        # Placed on the only node, which the answer names.
        assert deployed.node == fleet.node
        status = client.status(name)
        [row] = status.components
        assert (row.node, row.observed_state) == (fleet.node, "running")
        [listed] = [s for s in client.list() if s.name == name]
        assert listed.node == fleet.node
        events = [e for e in client.events(service=name) if e.kind == "placed"]
        assert events and events[0].node == fleet.node
        # A client made for one node narrows the master's answers to it.
        narrowed = mcp.Client.from_config(config, node=fleet.node)
        assert {c.node for c in narrowed.status().components} == {fleet.node}
    finally:
        removed = client.remove(name)
        assert removed.node == fleet.node
