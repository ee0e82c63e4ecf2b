#!/usr/bin/env bash
# `make demo` / `make demo-down`: a one-node MCP on this host.
#
#   up:   installs podman if missing, builds MCP, starts a podman API service
#         and `mcp-agent --dev`, builds a small busybox-httpd image locally,
#         deploys examples/hello.toml, prints `mcp status` and fetches a page.
#   down: removes the service, stops the agent and the podman service, and
#         deletes .demo/.
#
# Everything lives under .demo/ (agent data, CLI config, logs); to use the
# CLI against the demo agent afterwards: export MCP_CONFIG=$PWD/.demo/mcp.toml
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/podman-host.sh"
demo=$root/.demo
bin=$root/target/release
export MCP_CONFIG=$demo/mcp.toml
export XDG_DATA_HOME=$demo/data
export CONTAINERS_CONF=$demo/containers.conf
image=localhost/mcp-demo/busybox:1

up() {
    mkdir -p "$demo"
    if ! command -v podman >/dev/null || ! command -v runc >/dev/null || [ ! -x /bin/busybox ] || ! command -v curl >/dev/null; then
        install_packages podman runc busybox-static catatonit curl
    fi
    write_containers_conf "$CONTAINERS_CONF"

    echo "demo: building mcp and mcp-agent (release)"
    (cd "$root" && cargo build --release -q -p mcp-cli -p mcp-agent)

    if [ ! -S "$demo/podman.sock" ] || ! curl -fsS --unix-socket "$demo/podman.sock" http://d/_ping >/dev/null 2>&1; then
        setsid nohup podman system service --time=0 "unix://$demo/podman.sock" >"$demo/podman.log" 2>&1 </dev/null &
        echo $! >"$demo/podman.pid"
        for _ in $(seq 1 100); do
            curl -fsS --unix-socket "$demo/podman.sock" http://d/_ping >/dev/null 2>&1 && break
            sleep 0.1
        done
    fi

    if ! podman image exists "$image"; then
        echo "demo: building $image"
        import_demo_image "$image" "Hello from MCP"
    fi

    cat >"$demo/agent.toml" <<TOML
[podman]
socket = "$demo/podman.sock"
stop_timeout = 2
TOML
    if [ ! -f "$demo/agent.pid" ] || ! kill -0 "$(cat "$demo/agent.pid")" 2>/dev/null; then
        setsid nohup "$bin/mcp-agent" --dev --config "$demo/agent.toml" >"$demo/agent.log" 2>&1 </dev/null &
        echo $! >"$demo/agent.pid"
        for _ in $(seq 1 100); do
            [ -f "$MCP_CONFIG" ] && "$bin/mcp" node info >/dev/null 2>&1 && break
            sleep 0.1
        done
    fi

    echo "demo: mcp deploy examples/hello.toml"
    "$bin/mcp" deploy "$root/examples/hello.toml"
    echo "demo: mcp status"
    "$bin/mcp" status
    echo "demo: curl http://127.0.0.1:8080/"
    for _ in $(seq 1 50); do
        curl -fsS http://127.0.0.1:8080/ && break
        sleep 0.1
    done
    echo
    echo "demo: running. Try: export MCP_CONFIG=$MCP_CONFIG; $bin/mcp ps; $bin/mcp logs hello worker"
    echo "demo: remove it all with: make demo-down"
}

down() {
    if [ -x "$bin/mcp" ] && [ -f "$MCP_CONFIG" ]; then
        "$bin/mcp" remove hello >/dev/null 2>&1 || true
    fi
    for p in agent podman; do
        if [ -f "$demo/$p.pid" ]; then
            kill "$(cat "$demo/$p.pid")" 2>/dev/null || true
            rm -f "$demo/$p.pid"
        fi
    done
    sleep 0.5
    podman rm -f hello-web hello-worker >/dev/null 2>&1 || true
    podman rmi "$image" >/dev/null 2>&1 || true
    rm -rf "$demo"
    echo "demo: removed"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
