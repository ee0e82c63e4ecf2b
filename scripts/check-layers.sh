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
for package in mcp-core mcp-cli mcp-python; do
    found=$(cargo tree -p "$package" -e normal --prefix none --format '{p}' |
        grep -E '^(rusqlite|libsqlite3-sys|mcp-sqlite|mcp-runtime|mcp-agent|mcp-master) ' | sort -u || true)
    if [ -n "$found" ]; then
        echo "check-layers: $package depends on what it must not:" >&2
        echo "$found" | sed 's/^/  /' >&2
        status=1
    fi
done
found=$(cargo tree -p mcp-master -e normal --prefix none --format '{p}' |
    grep -E '^(mcp-runtime|mcp-agent) ' | sort -u || true)
if [ -n "$found" ]; then
    echo "check-layers: mcp-master depends on what it must not:" >&2
    echo "$found" | sed 's/^/  /' >&2
    status=1
fi
found=$(cargo tree -p mcp-python -e normal --prefix none --format '{p}' |
    grep -E '^(parking_lot|parking_lot_core) ' | sort -u || true)
if [ -n "$found" ]; then
    echo "check-layers: mcp-python links what is not fork-safe:" >&2
    echo "$found" | sed 's/^/  /' >&2
    status=1
fi
[ "$status" -eq 0 ] && echo "check-layers: mcp-core, mcp-cli and mcp-python link no SQLite, runtime, agent or master; mcp-master no runtime or agent; mcp-python no parking_lot"
exit "$status"
