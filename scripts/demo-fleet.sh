#!/usr/bin/env bash
# `make demo-fleet` / `make demo-fleet-down`: a fleet on this host.
#
#   up:   installs podman if missing, builds MCP, makes a small CA (openssl)
#         and starts `mcp-master` on 127.0.0.1:9445 and three agents, each
#         on its own loopback address (127.0.0.11 core, .12 and .13
#         workers) with its own podman API service and storage and its own
#         `publish_address`, joined to the master, which may dial them
#         (its token for agents added on each); syncs three services
#         through the master, which places them one per node, and prints
#         `mcp node list` and `mcp status` (both through the master).
#   down: stops everything it started, removes its containers and images,
#         and deletes .demo-fleet/.
#
# Everything lives under .demo-fleet/; to use the CLI against the fleet
# afterwards: export MCP_CONFIG=$PWD/.demo-fleet/mcp.toml
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/podman-host.sh"
demo=$root/.demo-fleet
bin=$root/target/release
export MCP_CONFIG=$demo/mcp.toml
export CONTAINERS_CONF=$demo/containers.conf
image=localhost/mcp-demo/busybox:1
nodes=(core-a worker-b worker-c)
declare -A addr=([core-a]=127.0.0.11 [worker-b]=127.0.0.12 [worker-c]=127.0.0.13)
declare -A role=([core-a]=core [worker-b]=worker [worker-c]=worker)

podman_of() { # node, podman args...
    local n=$1
    shift
    podman --root "$demo/$n/storage" --runroot "$demo/$n/run" --tmpdir "$demo/$n/tmp" "$@"
}

wait_for() { # what, command...
    local what=$1
    shift
    for _ in $(seq 1 150); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "demo-fleet: timed out waiting for $what" >&2
    return 1
}

pki() {
    [ -f "$demo/tls/server.pem" ] && return
    mkdir -p "$demo/tls"
    (
        cd "$demo/tls"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
            -subj "/CN=MCP demo fleet CA" -keyout ca.key -out ca.pem 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=mcp-demo-fleet" -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,IP:127.0.0.11,IP:127.0.0.12,IP:127.0.0.13\n' >ext.cnf
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
            -extfile ext.cnf -out server.pem 2>/dev/null
        chmod 600 ca.key server.key
    )
}

start() { # name, log, command...
    local name=$1 log=$2
    shift 2
    if [ -f "$demo/$name.pid" ] && kill -0 "$(cat "$demo/$name.pid")" 2>/dev/null; then
        return
    fi
    setsid nohup "$@" >"$log" 2>&1 </dev/null &
    echo $! >"$demo/$name.pid"
}

up() {
    mkdir -p "$demo"
    if ! command -v podman >/dev/null || ! command -v runc >/dev/null || [ ! -x /bin/busybox ] ||
        ! command -v curl >/dev/null || ! command -v openssl >/dev/null; then
        install_packages podman runc busybox-static catatonit curl openssl
    fi
    write_containers_conf "$CONTAINERS_CONF"
    echo "demo-fleet: building mcp, mcp-agent and mcp-master (release)"
    (cd "$root" && cargo build --release -q -p mcp-cli -p mcp-agent -p mcp-master)
    pki

    cat >"$demo/master.toml" <<TOML
listen = "127.0.0.1:9445"
db = "$demo/master/master.db"

[auth]
token_file = "$demo/master/tokens.toml"

[tls]
cert = "$demo/tls/server.pem"
key = "$demo/tls/server.key"

[fleet]
heartbeat_interval_ms = 1000
heartbeat_grace_ms = 1000
lost_after = 30

[agents]
token_file = "$demo/master/agents.token"
ca_cert = "$demo/tls/ca.pem"
TOML
    mkdir -p "$demo/master"
    if [ ! -f "$demo/admin-token" ]; then
        "$bin/mcp-master" --config "$demo/master.toml" token add demo --role admin >"$demo/admin-token" 2>/dev/null
        "$bin/mcp-master" --config "$demo/master.toml" token add nodes --role node >"$demo/join-token" 2>/dev/null
        chmod 600 "$demo/admin-token" "$demo/join-token"
    fi
    start master "$demo/master.log" "$bin/mcp-master" --config "$demo/master.toml"
    wait_for "the master" bash -c 'exec 3<>/dev/tcp/127.0.0.1/9445'

    for n in "${nodes[@]}"; do
        mkdir -p "$demo/$n"
        local sock=$demo/$n/podman.sock
        if ! curl -fsS --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; then
            start "$n-podman" "$demo/$n/podman.log" \
                podman --root "$demo/$n/storage" --runroot "$demo/$n/run" --tmpdir "$demo/$n/tmp" system service --time=0 "unix://$sock"
            wait_for "podman of $n" curl -fsS --unix-socket "$sock" http://d/_ping
        fi
        if ! podman_of "$n" image exists "$image"; then
            import_demo_image "$image" "Hello from $n" \
                --root "$demo/$n/storage" --runroot "$demo/$n/run" --tmpdir "$demo/$n/tmp"
        fi
        cat >"$demo/$n/agent.toml" <<TOML
node_name = "$n"
listen = "${addr[$n]}:9444"
publish_address = "${addr[$n]}"
db = "$demo/$n/mcp.db"
srv_root = "$demo/$n/srv"

[podman]
socket = "$sock"
stop_timeout = 2

[auth]
token_file = "$demo/tokens.toml"

[tls]
cert = "$demo/tls/server.pem"
key = "$demo/tls/server.key"

[unikernel]
state_dir = "$demo/$n/vms"

[master]
address = "127.0.0.1:9445"
ca_cert = "$demo/tls/ca.pem"
token_file = "$demo/join-token"
role = "${role[$n]}"
memory = "2G"
cpus = 2
TOML
    done
    # The agents (which share a token file here) accept the master's token
    # for agents as an admin token: what an operator runs on each node.
    "$bin/mcp-agent" --config "$demo/core-a/agent.toml" token add master --role admin \
        --from-file "$demo/master/agents.token" 2>/dev/null
    for n in "${nodes[@]}"; do
        start "$n" "$demo/$n/agent.log" "$bin/mcp-agent" --config "$demo/$n/agent.toml"
    done

    mkdir -p "$demo/services"
    {
        echo "services_dir = \"$demo/services\""
        echo "token_file = \"$demo/admin-token\""
        echo "master = \"127.0.0.1:9445\""
        echo
        echo "[tls]"
        echo "ca_cert = \"$demo/tls/ca.pem\""
    } >"$MCP_CONFIG"

    for i in 1 2 3; do
        local svc=hello$i
        cat >"$demo/services/$svc.toml" <<TOML
name = "$svc"

[[components]]
name = "web"
image = "$image"
cmd = ["httpd", "-f", "-p", "8080", "-h", "/www"]
ports = ["8080:8080"]
memory = "64M"
TOML
    done
    wait_for "three nodes in the master" sh -c "\"$bin/mcp\" --json node list | grep -c '\"state\": \"ready\"' | grep -qx 3"
    echo "demo-fleet: mcp sync --dry-run (where the master would place them)"
    "$bin/mcp" sync --dry-run || true
    echo "demo-fleet: mcp sync"
    "$bin/mcp" sync
    echo "demo-fleet: mcp node list"
    "$bin/mcp" node list
    echo "demo-fleet: mcp status"
    "$bin/mcp" status
    for n in "${nodes[@]}"; do
        echo "demo-fleet: curl http://${addr[$n]}:8080/ -> $(curl -fsS "http://${addr[$n]}:8080/")"
    done
    echo "demo-fleet: running. Try: export MCP_CONFIG=$MCP_CONFIG; $bin/mcp ps; $bin/mcp node drain worker-b; $bin/mcp events"
    echo "demo-fleet: remove it all with: make demo-fleet-down"
}

down() {
    if [ -x "$bin/mcp" ] && [ -f "$MCP_CONFIG" ]; then
        for i in 1 2 3; do
            "$bin/mcp" remove "hello$i" >/dev/null 2>&1 || true
        done
    fi
    for pidfile in "$demo"/*.pid; do
        [ -f "$pidfile" ] || continue
        kill "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
    done
    sleep 0.5
    for n in "${nodes[@]}"; do
        if [ -d "$demo/$n/storage" ]; then
            podman_of "$n" rm -f -a -t 0 >/dev/null 2>&1 || true
            podman_of "$n" system reset -f >/dev/null 2>&1 || true
        fi
    done
    rm -rf "$demo"
    echo "demo-fleet: removed"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
