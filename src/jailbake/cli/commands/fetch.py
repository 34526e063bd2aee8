"""jailbake fetch."""

from __future__ import annotations

import argparse
import sys

from .. import context, grammar

NAME = "fetch"
HELP = "download every source of the graph into the cache"


def add_arguments(sp: argparse.ArgumentParser) -> None:
    grammar.config(sp)
    grammar.sources(sp)


def run(args: argparse.Namespace) -> int:
    from ...sources.mirror import fetch_all

    graph, fetcher = context.fetcher_of(args, args.config)
    count = fetch_all(graph, fetcher, args.jobs)
    print(f"[jailbake] {count} sources in {fetcher.store.root}", file=sys.stderr)
    return 0
