#!/usr/bin/env python3
"""Roll an image to a new tag across every service that runs it.

For each definition in the CLI's services directory with a component whose
image is REPOSITORY (any tag), the tag is rewritten in the file (nothing
else in it changes), the service is deployed to its node, and the node is
asked whether the component now runs the new image. When a deploy fails,
that service's file and deployment are put back as they were and the roll
stops: the services after it keep the old tag.

    roll_image.py registry.example:5000/metacrypt 1.5 [--config PATH] [--dry-run]

Exit status: 0 when every service rolled, 1 when one failed (and was put
back), 2 for bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import metacircular_mcp as mcp


def split_image(ref: str) -> tuple[str, str]:
    """`host:5000/app:1.4` -> (`host:5000/app`, `1.4`); no tag -> `latest`."""
    name, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return ref, "latest"


@dataclass
class Target:
    definition: mcp.ServiceDef
    path: Path
    components: list[str]


def targets(config: mcp.Config, repository: str) -> list[Target]:
    found = []
    for definition in mcp.load_services(config.services_dir):
        names = [c.name for c in definition.components if split_image(c.image)[0] == repository]
        if names and definition.path is not None:
            found.append(Target(definition, Path(definition.path), names))
    return found


def roll(config: mcp.Config, target: Target, image: str) -> bool:
    """Rolls one service; puts it back and returns False when that fails."""
    node = target.definition.node
    client = mcp.Client.from_config(config.path, node=node)
    service = target.definition.name
    original = target.path.read_bytes()
    try:
        for component in target.components:
            mcp.set_image(target.path, component, image)
        result = client.deploy(target.path)
        for c in result.results:
            print(f"  {service}-{c.component}: {c.action}")
        status = client.status(service)
        wrong = [
            c.component
            for c in status.components
            if c.component in target.components and c.observed_image != image
        ]
        if wrong:
            raise mcp.McpError(f"{', '.join(wrong)} do(es) not run {image} after the deploy")
        return True
    except mcp.McpError as err:
        print(f"  {service}: {err}", file=sys.stderr)
        target.path.write_bytes(original)
        try:
            client.deploy(target.path)
            print(f"  {service}: put back to {target.path.name} as it was", file=sys.stderr)
        except mcp.McpError as again:
            print(f"  {service}: could not put it back: {again}", file=sys.stderr)
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("repository", help="image repository, e.g. registry:5000/app")
    parser.add_argument("tag", help="the tag to roll to")
    parser.add_argument("--config", help="CLI configuration file")
    parser.add_argument("--dry-run", action="store_true", help="only list what would change")
    args = parser.parse_args(argv)

    try:
        config = mcp.load_config(args.config)
        found = targets(config, args.repository)
    except (mcp.McpError, OSError) as err:
        print(f"roll_image: {err}", file=sys.stderr)
        return 2
    image = f"{args.repository}:{args.tag}"
    if not found:
        print(f"no service runs {args.repository}")
        return 0
    for target in found:
        print(f"{target.definition.name}: {', '.join(target.components)} -> {image}")
        if args.dry_run:
            continue
        if not roll(config, target, image):
            print(f"stopped: {target.definition.name} failed and was put back", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
