"""jailbake builders."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import context

NAME = "builders"
HELP = (
    "make every builder image the configurations use (build, or load from a mirror), "
    "so that later builds need no network for them"
)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "configs",
        nargs="*",
        metavar="CONFIG",
        help="one or more layer configurations, each may be colon-separated "
        "(default: layers/rpi4-jailhouse.yml)",
    )
    sp.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="DIR",
        help="load saved images from this mirror directory instead of building (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    from ...core.paths import resolve_mirror
    from ...executors import engine
    from ...sources.mirror import ensure_builders

    client = engine.connect()
    for spec in args.configs or [None]:
        graph = context.graph_of(args, spec)
        mirrors = tuple(resolve_mirror(m, Path.cwd()) for m in args.mirror) + graph.layer.mirrors
        tags = ensure_builders(graph, client, mirrors)
        for name, tag in tags.items():
            print(f"{name}: {tag}")
    return 0
