"""jailbake mirror."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...core.errors import JailbakeError
from .. import context, grammar

NAME = "mirror"
HELP = "write every source and builder image of the graph into a directory"


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("args", nargs="+", metavar="[CONFIG] DIR", help="configuration and mirror")
    sp.add_argument(
        "--no-images", action="store_true", help="sources only, no builder or base images"
    )
    grammar.sources(sp)


def run(args: argparse.Namespace) -> int:
    from ...executors import engine
    from ...sources.mirror import write_mirror
    from ...ui.progress import human_size, plural

    if len(args.args) > 2:
        raise JailbakeError("mirror: expected [CONFIG] DIR")
    config, dest = (None, args.args[0]) if len(args.args) == 1 else args.args
    graph, fetcher = context.fetcher_of(args, config)
    writer = write_mirror(
        graph,
        fetcher,
        Path(dest),
        jobs=args.jobs,
        client_factory=None if args.no_images else engine.connect,
    )
    print(
        f"[jailbake] mirror {dest}: {plural(len(writer.entries), 'file')}, "
        f"{human_size(writer.size)} ({writer.added} added)",
        file=sys.stderr,
    )
    return 0
