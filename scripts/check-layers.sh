#!/bin/sh
# The crate layers (ARCHITECTURE.md): the front ends (`mcp`, the Python
# bindings) and `mcp-core` link neither SQLite nor a runtime backend, nor
# the agent's or the master's library; the master builds on `mcp-core`
# alone (no runtime, no agent). The Python module links no parking_lot
# (its process-wide table of parked threads can be copied mid-update by a
# fork, and a forked child's own runtime would then crash in it). Fails,
# naming the crate and what it pulls in, when an arrow points the wrong way.
set -eu

status=0
# forbid PACKAGE PATTERN WHAT: fails when PACKAGE's normal dependency tree
# holds a crate whose name matches PATTERN, naming them.
forbid() {
    found=$(cargo tree -p "$1" -e normal --prefix none --format '{p}' |
        grep -E "^($2) " | sort -u || true)
    if [ -n "$found" ]; then
        echo "check-layers: $1 $3:" >&2
        echo "$found" | sed 's/^/  /' >&2
        status=1
    fi
}
for package in mcp-core mcp-cli mcp-python; do
    forbid "$package" 'rusqlite|libsqlite3-sys|mcp-sqlite|mcp-runtime|mcp-agent|mcp-master' \
        'depends on what it must not'
done
forbid mcp-master 'mcp-runtime|mcp-agent' 'depends on what it must not'
forbid mcp-python 'parking_lot|parking_lot_core' 'links what is not fork-safe'
[ "$status" -eq 0 ] && echo "check-layers: mcp-core, mcp-cli and mcp-python link no SQLite, runtime, agent or master; mcp-master no runtime or agent; mcp-python no parking_lot"
exit "$status"
