"""jailbake dump."""

from __future__ import annotations

import argparse
import sys

from .. import context, grammar

NAME = "dump"
HELP = (
    "the layer files' merged configuration as YAML (as kas dump), and where each recipe comes from"
)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    grammar.config(sp)
    grammar.targets(sp, "only the recipes these need (repeatable; default: the layer's target)")
    sp.add_argument(
        "--resolve-refs",
        action="store_true",
        help="name the commit each remote layer repository's branch or tag resolved to",
    )
    sp.add_argument(
        "--lock", action="store_true", help="print the lock file instead (as kas dump --lock)"
    )
    grammar.cache_dir(sp)


def run(args: argparse.Namespace) -> int:
    from ...model.dump import dump

    graph = context.graph_of(args, args.config, args.target, reading=not args.resolve_refs)
    sys.stdout.write(dump(graph, resolve_refs=args.resolve_refs, lock=args.lock))
    return 0
