#!/usr/bin/env bash
# What the tests leave running, checked at the end of `make test`.
#
#   scripts/leftovers.sh snapshot   before the tests: what runs already
#   scripts/leftovers.sh check      after them: fails naming whatever the
#                                   tests started and left (processes of
#                                   QEMU, mcp-agent, mcp-master, mcp, podman services,
#                                   conmon; containers; volumes), then
#                                   kills and removes it so the next run
#                                   starts clean
#
# Each test kills what it started when it ends, passed or failed (guards
# with Drop in Rust, finalizers in pytest); this is the net under them.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state=${MCP_ENV_DIR:-$root/.test-env}/leftovers-before
mkdir -p "$(dirname "$state")"

# Processes a test may start, one `PID ARGS` line each, zombies left out
# (they run nothing; their parent reaps them).
processes() {
    ps -eo pid=,stat=,args= |
        awk '$2 !~ /^Z/ { $2 = ""; print }' |
        grep -E '(qemu-system|/mcp-agent|/mcp-master|/mcp |podman system service|conmon|caddy run|named -c|pebble)' |
        grep -vE 'grep|leftovers\.sh' || true
}

containers() {
    podman ps -a --format '{{.ID}} {{.Names}}' 2>/dev/null || true
}

volumes() {
    podman volume ls --format '{{.Name}}' 2>/dev/null || true
}

snapshot() {
    {
        processes | sed 's/^/process /'
        containers | sed 's/^/container /'
        volumes | sed 's/^/volume /'
    } | sort >"$state"
}

check() {
    [ -f "$state" ] || : >"$state"
    # Processes just killed by a test's guard may take a moment to vanish.
    local left=""
    for _ in $(seq 1 50); do
        left=$({
            processes | sed 's/^/process /'
            containers | sed 's/^/container /'
            volumes | sed 's/^/volume /'
        } | sort | comm -23 - "$state")
        [ -z "$left" ] && break
        sleep 0.1
    done
    if [ -z "$left" ]; then
        echo "leftovers: the tests left nothing running"
        return 0
    fi
    echo "leftovers: the tests left these behind (a test does not clean up after itself):" >&2
    echo "$left" | cut -c1-300 | sed 's/^/  /' >&2
    # Clean up, so that the next run starts from nothing.
    echo "$left" | awk '$1 == "process" { print $2 }' | xargs -r kill -9 2>/dev/null || true
    echo "$left" | awk '$1 == "container" { print $2 }' | xargs -r podman rm -f -t 0 >/dev/null 2>&1 || true
    echo "$left" | awk '$1 == "volume" { print $2 }' | xargs -r podman volume rm -f >/dev/null 2>&1 || true
    return 1
}

case "${1:-}" in
snapshot) snapshot ;;
check) check ;;
*)
    echo "usage: $0 snapshot|check" >&2
    exit 2
    ;;
esac
