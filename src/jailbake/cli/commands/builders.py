"""jailbake builders."""

from __future__ import annotations

import argparse

from .. import context, grammar

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
        help="load saved images, or the pinned .debs to make them, from this mirror (repeatable)",
    )
    grammar.offline(sp)
    grammar.cache_dir(sp)


def run(args: argparse.Namespace) -> int:
    from ...executors import engine
    from ...sources.builders import ensure_builders

    work = context.context_of(args, reading=False)
    client = engine.connect()
    for spec in args.configs or [None]:
        graph = work.graph(context.configs(spec), ())
        tags = ensure_builders(graph, client, work.fetcher(graph))
        for name, tag in tags.items():
            print(f"{name}: {tag}")
    return 0
