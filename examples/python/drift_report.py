#!/usr/bin/env python3
"""Report drift on every node of the CLI configuration.

Lists components that are not as their definitions say (stopped, wrong
image, running while stopped on purpose), components with no instance at
all, and containers named like a service's component that MCP does not
manage. A node that cannot be reached is reported too.

    drift_report.py [--config PATH] [--json]

Exit status: 0 when every node is as defined, 1 when there is drift, 2 when
a node could not be asked.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass

import metacircular_mcp as mcp


@dataclass
class Finding:
    node: str
    instance: str
    drift: list[str]
    detail: str


def findings_of(client: mcp.Client) -> list[Finding]:
    status = client.status()
    found = [
        Finding(
            node=status.node,
            instance=c.instance_name,
            drift=c.drift,
            detail=f"wants {c.desired_image} {'running' if c.desired_active else 'stopped'}, "
            f"is {c.observed_state}" + (f" with {c.observed_image}" if c.observed_image else ""),
        )
        for c in status.drifted
    ]
    found += [
        Finding(status.node, i.name, ["unmanaged"], f"{i.image} {i.state}, not made by MCP")
        for i in status.unmanaged
    ]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--config", help="CLI configuration file")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)

    try:
        config = mcp.load_config(args.config)
    except (mcp.McpError, OSError) as err:
        print(f"drift_report: {err}", file=sys.stderr)
        return 2
    findings: list[Finding] = []
    unreachable: dict[str, str] = {}
    for node in config.nodes:
        try:
            findings += findings_of(mcp.Client.from_config(config.path, node=node.name))
        except mcp.McpError as err:
            unreachable[node.name] = str(err)

    if args.json:
        print(json.dumps({"drift": [asdict(f) for f in findings], "unreachable": unreachable}))
    else:
        for f in findings:
            print(f"{f.node}\t{f.instance}\t{','.join(f.drift)}\t{f.detail}")
        for name, why in unreachable.items():
            print(f"{name}\tunreachable\t{why}", file=sys.stderr)
        if not findings and not unreachable:
            print(f"no drift on {len(config.nodes)} node(s)")
    if unreachable:
        return 2
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
