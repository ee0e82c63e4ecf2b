"""Service definitions from Python: typed objects, value equality, located
errors, and in-place edits of definition files."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

import metacircular_mcp as mcp

FULL = """\
# The metacrypt service.
name = "metacrypt"
node = "rift"
tier = "core"

[[components]]
name = "api"
image = "registry.example:5000/metacrypt:1.4"   # pinned
cmd = ["serve", "--tls"]
env = { LOG = "info", MODE = "prod" }
ports = ["127.0.0.1:8443:8443"]
volumes = ["/srv/metacrypt/data:/data"]
network = "mcp"
user = "1000:1000"
restart = "always"
memory = "256M"

depends_on = ["db"]

[components.health]
kind = "http"
port = 8443
path = "/healthz"
interval = "2s"
start_period = "30s"

[[components.routes]]
hostname = "crypt.example"
port = 8443
public = true

[[components]]
name = "db"
image = "registry.example:5000/pg:16"

[components.health]
kind = "command"
command = ["pg_isready", "-U", "app"]

[[components]]
name = "vm"
runtime = "unikernel"
kernel = "vmlinuz"
initrd = "initrd.img"
append = "console=ttyS0"
memory = "128M"
vcpus = 2
"""


def test_parse_gives_typed_objects() -> None:
    d = mcp.parse_service(FULL)
    assert (d.name, d.active, d.node, d.tier) == ("metacrypt", True, "rift", "core")
    assert d.path is None
    api, db, vm = d.components
    assert api.name == "api" and api.runtime == "container"
    assert api.image == "registry.example:5000/metacrypt:1.4"
    assert api.cmd == ["serve", "--tls"]
    assert api.env == {"LOG": "info", "MODE": "prod"}
    assert api.ports == ["127.0.0.1:8443:8443"]
    assert api.volumes == ["/srv/metacrypt/data:/data"]
    assert (api.network, api.user, api.restart) == ("mcp", "1000:1000", "always")
    assert (api.memory, api.memory_bytes, api.vcpus) == ("256M", 256 << 20, None)
    [route] = api.routes
    assert (route.hostname, route.port, route.public) == ("crypt.example", 8443, True)
    assert (vm.runtime, vm.kernel, vm.initrd, vm.append, vm.vcpus) == (
        "unikernel",
        "vmlinuz",
        "initrd.img",
        "console=ttyS0",
        2,
    )
    assert vm.network is None and vm.cmd == [] and vm.env == {} and vm.health is None
    assert (api.depends_on, db.depends_on) == (["db"], [])
    assert api.health is not None and db.health is not None
    h = api.health
    assert (h.kind, h.port, h.path, h.status, h.command) == ("http", 8443, "/healthz", None, [])
    assert (h.interval, h.timeout, h.retries, h.start_period) == (
        dt.timedelta(seconds=2),
        dt.timedelta(seconds=2),
        3,
        dt.timedelta(seconds=30),
    )
    assert (db.health.kind, db.health.command, db.health.port) == (
        "command",
        ["pg_isready", "-U", "app"],
        None,
    )
    assert d.component("vm") == vm and d.component("nope") is None
    assert len(api.spec_hash) == 64 and api.spec_hash != vm.spec_hash


def test_equality_repr_and_toml_round_trip() -> None:
    a = mcp.parse_service(FULL)
    b = mcp.parse_service(a.to_toml())
    assert a == b and a is not b
    assert a != a.with_active(False)
    assert a.with_active(False).active is False
    assert a.components[0] == b.components[0]
    assert a.components[0] != a.components[1]
    assert a.components[0].health == b.components[0].health
    r = repr(a)
    assert r.startswith("ServiceDef(name='metacrypt', active=True, node='rift', tier='core', components=[")
    assert "Component(name='api', image='registry.example:5000/metacrypt:1.4'" in r
    assert "env={'LOG': 'info', 'MODE': 'prod'}" in r
    assert "routes=[Route(hostname='crypt.example', port=8443, public=True)]" in r
    assert repr(a.components[0].routes[0]) == "Route(hostname='crypt.example', port=8443, public=True)"
    with pytest.raises(TypeError):
        hash(a)
    with pytest.raises(AttributeError):
        a.name = "x"  # type: ignore[misc]


def test_with_image_validates() -> None:
    d = mcp.parse_service(FULL)
    rolled = d.with_image("api", "registry.example:5000/metacrypt:1.5")
    assert rolled.components[0].image.endswith(":1.5")
    assert d.components[0].image.endswith(":1.4"), "the original is unchanged"
    assert rolled.components[0].spec_hash != d.components[0].spec_hash
    with pytest.raises(mcp.InvalidArgumentError, match=r'no component "nope" \(components: api, db, vm\)'):
        d.with_image("nope", "x:1")
    with pytest.raises(mcp.InvalidDefinitionError) as e:
        d.with_image("api", "has space")
    assert e.value.file == "<request>" and e.value.line is None
    assert "components[0].image" in e.value.message


def test_errors_carry_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "web.toml"
    path.write_text('name = "web"\n\n[[components]]\nname = "app"\nimage = "i"\nports = ["8080:abc"]\n')
    with pytest.raises(mcp.InvalidDefinitionError) as e:
        mcp.parse_service(path)
    err = e.value
    assert (err.file, err.line, err.column) == (str(path), 6, 10)
    assert err.message == 'invalid port "8080:abc": container port "abc" is not a number'
    assert str(err) == f"{path}:6:10: {err.message}"
    assert err.code is None and err.node is None
    assert isinstance(err, mcp.InvalidArgumentError) and isinstance(err, mcp.McpError)

    with pytest.raises(mcp.InvalidDefinitionError) as e:
        mcp.parse_service('name = "web"\nbogus = 1\n', origin="inline.toml")
    assert (e.value.file, e.value.line, e.value.column) == ("inline.toml", 2, 1)
    assert "bogus" in e.value.message

    with pytest.raises(mcp.InvalidDefinitionError) as e:
        mcp.parse_service("name = \n")
    assert e.value.file == "<string>" and e.value.line == 1

    with pytest.raises(FileNotFoundError) as missing:
        mcp.parse_service(tmp_path / "missing.toml")
    assert "missing.toml" in str(missing.value)
    good = tmp_path / "good.toml"
    good.write_text('name = "good"\n[[components]]\nname = "c"\nimage = "i"\n')
    assert mcp.parse_service(os.fspath(good)).path == str(good), "a str path is read as a file"


def test_load_services_reads_a_directory(tmp_path: Path) -> None:
    (tmp_path / "b.toml").write_text('name = "b"\n[[components]]\nname = "c"\nimage = "i"\n')
    (tmp_path / "a.toml").write_text('name = "a"\n[[components]]\nname = "c"\nimage = "i"\n')
    (tmp_path / "notes.txt").write_text("not a definition")
    defs = mcp.load_services(tmp_path)
    assert [d.name for d in defs] == ["a", "b"]
    assert defs[0].path == str(tmp_path / "a.toml")
    # A second `a`, in c.toml: refused at its name, since a service is
    # looked up as <services_dir>/<name>.toml.
    (tmp_path / "c.toml").write_text('name = "a"\n[[components]]\nname = "c"\nimage = "i"\n')
    with pytest.raises(mcp.InvalidDefinitionError, match='differs from the file name "c.toml"') as e:
        mcp.load_services(tmp_path)
    assert (e.value.file, e.value.line, e.value.column) == (str(tmp_path / "c.toml"), 1, 8)


def test_set_image_and_set_active_edit_files_in_place(tmp_path: Path) -> None:
    path = tmp_path / "metacrypt.toml"
    path.write_text(FULL)
    assert mcp.set_image(path, "api", "registry.example:5000/metacrypt:1.5") is True
    assert path.read_text() == FULL.replace(":1.4", ":1.5"), "only the value changed"
    assert mcp.set_image(path, "api", "registry.example:5000/metacrypt:1.5") is False

    with pytest.raises(mcp.InvalidDefinitionError) as e:
        mcp.set_image(path, "api", "bad image")
    assert (e.value.file, e.value.line) == (str(path), 8)
    with pytest.raises(mcp.InvalidDefinitionError) as e:
        mcp.parse_service(FULL.replace('kind = "http"', 'kind = "grpc"'))
    assert (e.value.line, e.value.column) == (FULL.splitlines().index('kind = "http"') + 1, 8)
    assert '"grpc"' in e.value.message
    with pytest.raises(mcp.InvalidDefinitionError, match='no component "cache"'):
        mcp.set_image(path, "cache", "x:1")
    assert path.read_text() == FULL.replace(":1.4", ":1.5"), "refused edits leave the file alone"

    mcp.set_active(path, False)
    assert mcp.parse_service(path).active is False
    assert path.read_text().startswith("# The metacrypt service.\nname = \"metacrypt\"\nactive = false\n")
