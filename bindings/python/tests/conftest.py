"""Fixtures: a real node (its own podman API service and an `mcp-agent
--dev` over TLS) per test session, sharing the host's podman storage and
the local image registry that `scripts/test-env.sh` sets up.

Nothing here skips: a missing prerequisite fails with what to do."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import metacircular_mcp as mcp

REPO = Path(__file__).resolve().parents[3]


def require_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(
            f"{name} is not set: these tests need podman and the local image registry. "
            "Run `make test`, or `scripts/test-env.sh && . .test-env/env` first."
        )
    return value


def bin_dir() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    directory = Path(os.environ.get("MCP_BIN_DIR", target / "debug"))
    for name in ("mcp", "mcp-agent", "mcp-master"):
        if not (directory / name).exists():
            raise RuntimeError(
                f"{directory / name} is missing: build the binaries first "
                "(`cargo build --workspace --bins`; `make test` does)"
            )
    return directory


_ports = itertools.count()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and lies below the kernel's
    ephemeral range: a port handed out here is bound later by an agent or a
    container, and one from the ephemeral range could be taken meanwhile by
    any outgoing connection on the host."""
    lowest, stretch = 10_000, 2_000
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32_768
    ephemeral = max(ephemeral, lowest + stretch)
    size = ephemeral - lowest
    start = (os.getpid() % (size // stretch)) * stretch
    for _ in range(size):
        port = lowest + (start + next(_ports)) % size
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on 127.0.0.1 between {lowest} and {ephemeral}")


def wait_for(what: str, timeout: float, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


_names = itertools.count()


@dataclass
class Node:
    """One test node: a temp dir, a podman service, an agent and the CLI
    configuration `mcp-agent --dev` wrote for it."""

    dir: Path
    bins: Path
    name: str
    address: str
    socket: Path
    registry: str
    image_v1: str
    image_v2: str
    env: dict[str, str]
    agent: subprocess.Popen[bytes] | None = None
    podman: subprocess.Popen[bytes] | None = None
    services: list[str] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.dir / "config" / "mcp" / "mcp.toml"

    @property
    def services_dir(self) -> Path:
        return self.dir / "config" / "mcp" / "services"

    @property
    def ca_cert(self) -> Path:
        return self.dir / "config" / "mcp" / "dev-ca.pem"

    @property
    def admin_token(self) -> str:
        return (self.dir / "config" / "mcp" / "dev-token").read_text().strip()

    @property
    def srv_root(self) -> Path:
        return self.dir / "data" / "mcp" / "srv"

    def service_name(self, prefix: str) -> str:
        """A service name unique to this test process, removed at the end."""
        name = f"{prefix}-{os.getpid()}-{next(_names)}"
        self.services.append(name)
        return name

    def write_service(self, name: str, text: str) -> Path:
        self.services_dir.mkdir(parents=True, exist_ok=True)
        path = self.services_dir / f"{name}.toml"
        path.write_text(text)
        return path

    def agent_cmd(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bins / "mcp-agent"), "--dev", "--config", str(self.dir / "agent.toml"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )

    def podman_cmd(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", "--url", f"unix://{self.socket}", *args],
            capture_output=True,
            text=True,
        )

    def start_agent(self) -> None:
        assert self.agent is None, "agent already running"
        log = open(self.dir / "agent.log", "ab")
        self.agent = subprocess.Popen(
            [str(self.bins / "mcp-agent"), "--dev", "--config", str(self.dir / "agent.toml")],
            env=dict(self.env, RUST_LOG="info"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        host, port = self.address.rsplit(":", 1)

        def listening() -> bool:
            assert self.agent is not None
            if self.agent.poll() is not None:
                raise AssertionError(
                    f"mcp-agent exited with {self.agent.returncode}:\n{self.agent_log()}"
                )
            try:
                socket.create_connection((host, int(port)), timeout=0.2).close()
            except OSError:
                return False
            return self.config.exists()

        wait_for("the agent to listen", 20, listening)

    def stop_agent(self) -> None:
        if self.agent is not None:
            agent, self.agent = self.agent, None
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
                raise

    def agent_log(self) -> str:
        path = self.dir / "agent.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def client(self, **kwargs: str) -> mcp.Client:
        return mcp.Client.from_config(self.config, **kwargs)

    def cleanup(self) -> None:
        # Everything this node started goes, even when a step fails.
        try:
            self.stop_agent()
        finally:
            listed = self.podman_cmd("ps", "-a", "--format", "{{.Names}}")
            for name in listed.stdout.split():
                if any(name.startswith(f"{s}-") for s in self.services):
                    self.podman_cmd("rm", "-f", "-t", "0", name)
            if self.podman is not None:
                self.podman.kill()
                self.podman.wait()


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    require_env("CONTAINERS_CONF")
    registry = require_env("MCP_TEST_REGISTRY")
    image_v1 = require_env("MCP_TEST_IMAGE")
    image_v2 = require_env("MCP_TEST_IMAGE_V2")
    bins = bin_dir()
    directory = tmp_path_factory.mktemp("node")
    sock = directory / "podman.sock"
    podman = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{sock}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for("the podman API service", 20, sock.exists)
    address = f"127.0.0.1:{free_port()}"
    name = f"py-{os.getpid()}"
    (directory / "agent.toml").write_text(
        f'node_name = "{name}"\nlisten = "{address}"\n\n'
        f'[podman]\nsocket = "{sock}"\ninsecure_registries = ["{registry}"]\nstop_timeout = 1\n'
    )
    env = dict(os.environ)
    env["XDG_CONFIG_HOME"] = str(directory / "config")
    env["XDG_DATA_HOME"] = str(directory / "data")
    env.pop("MCP_CONFIG", None)
    env.pop("MCP_TOKEN", None)
    n = Node(
        dir=directory,
        bins=bins,
        name=name,
        address=address,
        socket=sock,
        registry=registry,
        image_v1=image_v1,
        image_v2=image_v2,
        env=env,
        podman=podman,
    )
    try:
        n.start_agent()
        yield n
    finally:
        n.cleanup()


@pytest.fixture(scope="session")
def client(node: Node) -> mcp.Client:
    return node.client()


@pytest.fixture(scope="session")
def readonly_token(node: Node) -> str:
    token = node.agent_cmd("token", "add", "viewer", "--role", "readonly").stdout.strip()
    viewer = mcp.Client(node.address, token=token, ca_cert=node.ca_cert)

    def accepted() -> bool:
        try:
            viewer.status()
        except mcp.AuthenticationError:
            return False
        return True

    # A running agent reads its token file again within a second.
    wait_for("the agent to accept the new token", 10, accepted)
    return token
