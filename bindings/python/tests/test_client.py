"""The client against a real agent with real podman: every operation the
CLI has, through the same Rust client."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
import time
from pathlib import Path

import pytest

import metacircular_mcp as mcp
from conftest import Node, free_port, wait_for


def web(node: Node, name: str, image: str | None = None, port: int | None = None) -> str:
    ports = f'ports = ["127.0.0.1:{port}:8080"]\n' if port else ""
    return (
        f'name = "{name}"\n\n[[components]]\nname = "web"\n'
        f'image = "{image or node.image_v1}"\n{ports}'
    )


def test_from_config_talks_to_the_node(node: Node, client: mcp.Client) -> None:
    assert client.node == node.name
    assert client.address == node.address
    assert repr(client) == f"Client(node='{node.name}', address='{node.address}')"
    info = client.node_info()
    assert info.node == node.name
    assert info.runtime_available, info
    assert info.runtime_error is None
    assert info.agent_version
    config = mcp.load_config(node.config)
    assert config.path == str(node.config)
    assert config.services_dir == str(node.services_dir)
    assert config.nodes == [n for n in config.nodes if n.name == node.name]
    assert [(n.name, n.address) for n in config.nodes] == [(node.name, node.address)]


def test_explicit_connection_arguments(node: Node) -> None:
    c = mcp.Client(node.address, token=node.admin_token, ca_cert=node.ca_cert, node="n1")
    assert c.node == "n1"
    assert c.status().node == node.name
    with pytest.raises(mcp.InvalidArgumentError, match="ca_cert is required"):
        mcp.Client(node.address, token=node.admin_token)


def test_deploy_status_ps_list_events_and_lifecycle(
    node: Node, client: mcp.Client, tmp_path: Path
) -> None:
    name = node.service_name("life")
    path = tmp_path / f"{name}.toml"
    path.write_text(web(node, name))
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)

    res = client.deploy(path)
    assert res.ok and res.node == node.name and res.service == name
    assert [(r.component, r.action) for r in res.results] == [("web", "created")]
    assert res.results[0].instance_id and res.results[0].error is None

    status = client.status(name)
    [c] = status.components
    assert (c.service, c.component, c.observed_state, c.drift) == (name, "web", "running", [])
    assert c.instance_name == f"{name}-web"
    assert c.desired_image == node.image_v1 and c.desired_active
    assert c.started_at is not None and c.started_at >= started
    assert status.drifted == []

    ps = client.ps()
    [inst] = [i for i in ps.instances if i.name == f"{name}-web"]
    assert inst.managed and inst.service == name and inst.component == "web"
    assert inst.state == "running" and inst.drift == []

    [summary] = [s for s in client.list() if s.name == name]
    assert summary.active and summary.components == ["web"]
    assert summary.updated_at is not None and summary.updated_at >= started

    # A definition object, changed in Python: the component is replaced.
    def_v2 = mcp.parse_service(path).with_image("web", node.image_v2)
    res = client.deploy(def_v2)
    assert [(r.component, r.action) for r in res.results] == [("web", "updated")]
    assert client.status(name).components[0].observed_image == node.image_v2

    assert [r.action for r in client.stop(name).results] == ["stopped"]
    [c] = client.status(name).components
    assert not c.desired_active and c.observed_state != "running" and c.drift == []
    assert [r.action for r in client.start(name).results] == ["started"]
    assert [r.action for r in client.restart(name, component="web").results] == ["restarted"]
    assert client.status(name).components[0].observed_state == "running"

    kinds = [e.kind for e in client.events(name, since=started)]
    for kind in ("deployed", "created", "updated", "stopped", "started", "restarted"):
        assert kind in kinds, kinds
    last_two = client.events(name, limit=2)
    assert len(last_two) == 2 and last_two[-1].kind == kinds[-1]
    assert all(e.time is not None and e.time >= started for e in client.events(name, since="10m"))
    assert client.events(name, since=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)) == []

    assert [r.action for r in client.remove(name).results] == ["removed"]
    assert all(s.name != name for s in client.list())
    gone = node.podman_cmd("container", "exists", f"{name}-web")
    assert gone.returncode == 1


def test_failed_component_raises_deploy_error_with_the_answer(node: Node, client: mcp.Client) -> None:
    name = node.service_name("bad")
    missing = f"{node.registry}/mcp-test/no-such-image:1"
    definition = mcp.parse_service(web(node, name, image=missing))
    with pytest.raises(mcp.DeployError) as caught:
        client.deploy(definition)
    err = caught.value
    assert isinstance(err.result, mcp.ActionResult)
    assert not err.result.ok
    [failed] = err.result.failed
    assert failed.component == "web" and failed.action == "failed"
    assert failed.error and "no-such-image" in failed.error
    assert f"{name}-web" in str(err) and err.node == node.name

    answer = client.deploy(definition, check=False)
    assert not answer.ok and answer.failed[0].component == "web"


def test_a_version_that_never_becomes_healthy_is_rolled_back(
    node: Node, client: mcp.Client
) -> None:
    name = node.service_name("gate")
    port = free_port()
    good = mcp.parse_service(web(node, name, port=port))
    assert [r.action for r in client.deploy(good).results] == ["created"]

    # The new image serves 404 on the checked path, so it is never ready
    # (and with 100 retries not unhealthy before the timeout): the deploy
    # gives up after `timeout` and puts the old version back.
    bad = mcp.parse_service(
        web(node, name, image=node.image_v2, port=port)
        + '\n[components.health]\nkind = "http"\nport = 8080\npath = "/missing"\ninterval = "300ms"\nretries = 100\n'
    )
    began = time.monotonic()
    with pytest.raises(mcp.DeployError) as caught:
        client.deploy(bad, timeout=dt.timedelta(seconds=3))
    took = time.monotonic() - began
    # It gave up on the timeout (the message below says why), not sooner.
    assert took > 2.5, took
    answer = caught.value.result
    assert isinstance(answer, mcp.ActionResult) and not answer.ok
    [result] = answer.results
    assert result.component == "web" and result.action == "rolled-back", result
    assert result.error and "not ready within 3s" in result.error, result.error
    assert "HTTP 404" in result.error and "/missing" in result.error, result.error

    [c] = client.status(name).components
    assert (c.observed_image, c.observed_state, c.drift) == (node.image_v1, "running", [])
    kinds = [e.kind for e in client.events(name)]
    assert "rolled-back" in kinds, kinds

    with pytest.raises(mcp.InvalidArgumentError, match="timeout"):
        client.deploy(good, timeout=-1)
    # Longer than the agent allows (24 h): refused by the agent, nothing done.
    with pytest.raises(mcp.InvalidArgumentError, match="longer than the longest allowed"):
        client.deploy(bad, timeout=dt.timedelta(days=2))
    [c] = client.status(name).components
    assert c.observed_image == node.image_v1
    client.remove(name)


def test_health_in_status_and_a_deploy_that_does_not_wait(
    node: Node, client: mcp.Client
) -> None:
    name = node.service_name("nowait")
    port = free_port()
    checked = mcp.parse_service(
        web(node, name, port=port)
        + '\n[components.health]\nkind = "http"\nport = 8080\ninterval = "300ms"\n'
    )
    client.deploy(checked)
    [c] = client.status(name).components
    assert (c.health, c.health_detail, c.drift) == ("healthy", None, []), c

    # Without waiting, a version whose process dies at once is reported as
    # deployed once started; the monitor then finds it stopped.
    crash = mcp.parse_service(
        web(node, name, port=port) + 'cmd = ["/bin/sh", "-c", "exit 3"]\n'
    )
    answer = client.deploy(crash, wait=False)
    assert [r.action for r in answer.results] == ["updated"], answer

    def stopped() -> bool:
        [c] = client.status(name).components
        return c.drift == ["stopped"] and c.health is None

    wait_for("the crashed version to show as stopped", 20, stopped)
    with pytest.raises(mcp.InvalidArgumentError, match="wait=False"):
        client.deploy(crash, wait=False, timeout=5)
    client.remove(name)


def test_history_and_rollback(node: Node, client: mcp.Client, readonly_token: str) -> None:
    name = node.service_name("hist")
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    v1 = mcp.parse_service(web(node, name))
    client.deploy(v1)
    with pytest.raises(mcp.ConflictError) as none:
        client.rollback(name, component="web")
    assert none.value.code == "FAILED_PRECONDITION"
    assert f'service "{name}" component "web" has no earlier revision' in none.value.message
    client.deploy(v1.with_image("web", node.image_v2))

    revisions = client.history(name)
    assert [(r.revision, r.component, r.image, r.outcome) for r in revisions] == [
        (2, "web", node.image_v2, "deployed"),
        (1, "web", node.image_v1, "deployed"),
    ]
    first = revisions[1]
    assert first.detail == "" and len(first.spec_hash) == 64
    assert first.time >= started and first.time.tzinfo is not None
    assert revisions[0].time > first.time
    assert repr(first).startswith("Revision(revision=1, component='web', time=")

    res = client.rollback(name)
    assert res.ok and res.service == name and res.node == node.name
    assert [(r.component, r.action) for r in res.results] == [("web", "updated")]
    assert client.status(name).components[0].observed_image == node.image_v1
    [newest] = client.history(name, "web", limit=1)
    assert (newest.revision, newest.image, newest.outcome, newest.detail) == (
        3,
        node.image_v1,
        "rollback",
        "revision 1",
    )
    assert any(e.kind == "rollback" and e.component == "web" for e in client.events(name))

    viewer = mcp.Client(node.address, token=readonly_token, ca_cert=node.ca_cert)
    assert viewer.history(name, limit=1) == [newest]
    with pytest.raises(mcp.PermissionDeniedError):
        viewer.rollback(name)
    with pytest.raises(mcp.NotFoundError):
        client.history(name, "nope")
    with pytest.raises(mcp.NotFoundError):
        client.rollback("no-such-service")
    client.remove(name)


def test_sync_dry_run_returns_the_plan_and_changes_nothing(node: Node, client: mcp.Client) -> None:
    name = node.service_name("sync")
    definition = mcp.parse_service(web(node, name))
    plan = client.sync([definition], dry_run=True)
    assert plan.dry_run and plan.results == [] and plan.ok
    [planned] = [p for p in plan.plan if p.service == name]
    assert planned.action == "create"
    assert [(c.component, c.change) for c in planned.components] == [("web", "create")]
    assert all(s.name != name for s in client.list()), "a dry run deploys nothing"

    done = client.sync([definition])
    assert not done.dry_run and done.ok
    assert [(r.service, [c.action for c in r.results]) for r in done.results if r.service == name] == [
        (name, ["created"])
    ]
    again = client.sync([definition.with_image("web", node.image_v2)], dry_run=True)
    [planned] = [p for p in again.plan if p.service == name]
    [comp] = planned.components
    assert comp.change == "update" and comp.recreate
    [image_change] = [f for f in comp.fields if f.field == "image"]
    assert (image_change.before, image_change.after) == (node.image_v1, node.image_v2)
    client.remove(name)


def test_sync_without_definitions_sends_the_services_dir(node: Node) -> None:
    client = node.client()
    name = node.service_name("dir")
    path = node.write_service(name, web(node, name))
    try:
        plan = client.sync(dry_run=True)
        assert any(p.service == name and p.action == "create" for p in plan.plan)
        bare = mcp.Client(node.address, token=node.admin_token, ca_cert=node.ca_cert)
        with pytest.raises(mcp.InvalidArgumentError, match="needs definitions"):
            bare.sync()
        # A service name means its file in services_dir, as for `mcp deploy`.
        assert client.deploy(name).results[0].action == "created"
        client.remove(name)
    finally:
        path.unlink()


def test_stop_and_start_keep_the_definition_file_as_mcp_does(
    node: Node, readonly_token: str, tmp_path: Path
) -> None:
    client = node.client()
    name = node.service_name("active")
    path = node.write_service(name, web(node, name))
    try:
        assert client.deploy(name).results[0].action == "created"
        # A service with a file in services_dir: `active` is set in the
        # file, only that value, and the file is deployed, as `mcp stop`.
        text = path.read_text()
        assert [r.action for r in client.stop(name).results] == ["stopped"]
        assert mcp.parse_service(path).active is False
        assert all(line in path.read_text() for line in text.splitlines())
        [c] = client.status(name).components
        assert not c.desired_active and c.observed_state != "running"
        assert [r.action for r in client.start(name).results] == ["started"]
        assert mcp.parse_service(path).active is True
        assert client.status(name).components[0].observed_state == "running"

        # A refused stop (a readonly token) leaves the file as it was.
        before = path.read_bytes()
        viewer = node.client(token_file=str(_token_file(tmp_path, readonly_token)))
        with pytest.raises(mcp.PermissionDeniedError):
            viewer.stop(name)
        assert path.read_bytes() == before

        # A definition file given by path, from a client made without a
        # configuration: the same.
        bare = mcp.Client(node.address, token=node.admin_token, ca_cert=node.ca_cert)
        bare.stop(str(path))
        assert mcp.parse_service(path).active is False
        assert not bare.status(name).components[0].desired_active
        bare.start(str(path))
        assert mcp.parse_service(path).active is True
        client.remove(name)
    finally:
        path.unlink()


def _token_file(tmp_path: Path, token: str) -> Path:
    f = tmp_path / "token"
    f.write_text(token + "\n")
    f.chmod(0o600)
    return f


def test_adopt_takes_a_hand_made_container(node: Node, client: mcp.Client) -> None:
    name = node.service_name("adopt")
    run = node.podman_cmd("run", "-d", "--name", f"{name}-web", node.image_v1)
    assert run.returncode == 0, run.stderr
    res = client.adopt(name)
    assert res.adopted == ["web"] and res.already_managed == [] and res.node == node.name
    assert res.definition.name == name
    assert res.definition.components[0].image == node.image_v1
    # Deployed unchanged, the adopted definition changes nothing.
    assert [r.action for r in client.deploy(res.definition).results] == ["unchanged"]
    client.remove(name)


def test_errors_are_typed_and_carry_the_agents_message(
    node: Node, client: mcp.Client, readonly_token: str
) -> None:
    with pytest.raises(mcp.NotFoundError) as nf:
        client.stop("no-such-service")
    assert nf.value.code == "NOT_FOUND" and "no-such-service" in nf.value.message
    assert nf.value.node == node.name and str(nf.value).startswith(f"{node.name}: ")

    wrong = mcp.Client(node.address, token="mcp_" + "0" * 64, ca_cert=node.ca_cert)
    with pytest.raises(mcp.AuthenticationError) as auth:
        wrong.status()
    assert auth.value.code == "UNAUTHENTICATED" and "the token argument" in str(auth.value)

    viewer = mcp.Client(node.address, token=readonly_token, ca_cert=node.ca_cert)
    assert viewer.status().node == node.name
    name = node.service_name("ro")
    with pytest.raises(mcp.PermissionDeniedError) as denied:
        viewer.deploy(mcp.parse_service(web(node, name)))
    assert denied.value.code == "PERMISSION_DENIED" and "readonly" in denied.value.message
    assert all(s.name != name for s in client.list()), "nothing was deployed"

    with pytest.raises(mcp.UnavailableError) as down:
        mcp.Client("127.0.0.1:1", token=node.admin_token, ca_cert=node.ca_cert)
    assert down.value.code == "UNAVAILABLE" and "127.0.0.1:1" in str(down.value)

    with pytest.raises(mcp.ConfigError):
        mcp.Client(node.address, token=node.admin_token, ca_cert=node.dir / "no-such-ca.pem")
    with pytest.raises(mcp.InvalidArgumentError, match="pull="):
        client.deploy(mcp.parse_service(web(node, name)), pull="sometimes")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        client.deploy(node.dir / "no-such.toml")
    for cls in (
        mcp.AuthenticationError,
        mcp.PermissionDeniedError,
        mcp.NotFoundError,
        mcp.InvalidDefinitionError,
        mcp.UnavailableError,
        mcp.DeployError,
    ):
        assert issubclass(cls, mcp.McpError)


def test_logs_without_follow_end_after_the_existing_output(node: Node, client: mcp.Client) -> None:
    name = node.service_name("logs")
    text = (
        f'name = "{name}"\n\n[[components]]\nname = "say"\nimage = "{node.image_v1}"\n'
        'cmd = ["/bin/busybox", "sh", "-c", "echo one; echo two >&2; echo three; exec /bin/busybox sleep 600"]\n'
    )
    client.deploy(mcp.parse_service(text))
    wait_for("three lines of output", 10, lambda: len(list(client.logs(name))) >= 3)
    lines = list(client.logs(name, "say"))
    assert sorted((l.stream, l.text) for l in lines) == [
        ("stderr", "two"),
        ("stdout", "one"),
        ("stdout", "three"),
    ]
    assert all(l.component == "say" for l in lines)
    assert [l.text for l in client.logs(name, "say", tail=1)] in (["three"], ["two"])
    with pytest.raises(mcp.NotFoundError):
        list(client.logs(name, "nope"))
    client.remove(name)


def ticker(node: Node, name: str, every: str = "0.2") -> str:
    return (
        f'name = "{name}"\n\n[[components]]\nname = "tick"\nimage = "{node.image_v1}"\n'
        f'cmd = ["/bin/busybox", "sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; /bin/busybox sleep {every}; done"]\n'
    )


def test_follow_yields_lines_as_they_come_and_stops_on_break(node: Node, client: mcp.Client) -> None:
    name = node.service_name("follow")
    client.deploy(mcp.parse_service(ticker(node, name)))
    seen: list[tuple[float, str]] = []
    stream = client.logs(name, "tick", follow=True, tail=0)
    for line in stream:
        seen.append((time.monotonic(), line.text))
        if len(seen) == 5:
            break
    assert [t for _, t in seen][0].startswith("tick ")
    numbers = [int(t.split()[1]) for _, t in seen]
    assert numbers == list(range(numbers[0], numbers[0] + 5)), numbers
    # Lines arrived one by one as written (0.2 s apart), not all at the end.
    assert seen[-1][0] - seen[0][0] > 0.4
    assert not stream.closed
    stream.close()
    assert stream.closed
    assert list(stream) == []
    stream.close()  # idempotent

    with client.logs(name, "tick", follow=True) as s:
        first = next(s)
    assert first.text.startswith("tick ") and s.closed
    client.remove(name)


def quiet(node: Node, name: str) -> str:
    """A service whose one component writes nothing."""
    return (
        f'name = "{name}"\n\n[[components]]\nname = "q"\nimage = "{node.image_v1}"\n'
        'cmd = ["/bin/busybox", "sleep", "600"]\n'
    )


def test_calls_from_many_threads_run_at_once_and_release_the_gil(
    node: Node, client: mcp.Client
) -> None:
    name = node.service_name("quiet")
    client.deploy(mcp.parse_service(quiet(node, name)))
    # A thread blocked in a follow that never yields: if it held the GIL,
    # nothing below could run.
    stream = client.logs(name, follow=True)
    blocked = threading.Thread(target=lambda: list(stream), daemon=True)
    blocked.start()

    errors: list[BaseException] = []
    counts: list[int] = []

    def work() -> None:
        try:
            for _ in range(10):
                counts.append(len(client.status().components))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(counts) == 80
    assert blocked.is_alive(), "the follow is still waiting"
    stream.close()
    client.remove(name)
    blocked.join(timeout=10)
    assert not blocked.is_alive(), "closing ended the follow"


def test_ctrl_c_interrupts_a_follow(node: Node, client: mcp.Client) -> None:
    name = node.service_name("sigint")
    client.deploy(mcp.parse_service(quiet(node, name)))
    script = (
        "import signal, sys, metacircular_mcp as mcp\n"
        # As in a terminal, whatever the test runner inherited (a runner
        # started in the background has SIGINT ignored).
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        f"c = mcp.Client.from_config({str(node.config)!r})\n"
        f"s = c.logs({name!r}, follow=True)\n"
        "try:\n"
        "    print('ready', flush=True)\n"
        "    for line in s:\n"
        "        pass\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        "    c.status()\n"
        "    print('still usable', flush=True)\n"
        "    sys.exit(3)\n"
    )
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        env=node.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    proc.send_signal(2)
    # Without the signal handled, the follow would block for ever.
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"Ctrl-C did not end the follow: {out!r} {err!r}") from None
    assert proc.returncode == 3, (out, err)
    assert out.split() == ["interrupted", "still", "usable"], (out, err)
    client.remove(name)


def test_a_forked_child_needs_its_own_client(node: Node, client: mcp.Client) -> None:
    import os

    client.status()  # the parent's runtime is running
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 0
        try:
            try:
                client.status()
                code = 10
            except mcp.InvalidArgumentError as e:
                code = 0 if "fork" in str(e) else 11
            if code == 0:
                fresh = node.client()
                code = 0 if fresh.status().node == node.name else 12
        except BaseException:
            code = 13
        os.write(write, bytes([code]))
        os._exit(0)
    os.close(write)
    result = os.read(read, 1)
    os.waitpid(pid, 0)
    assert result == bytes([0]), result
    assert client.status().node == node.name, "the parent's client still works"
