"""jailbake log."""

from __future__ import annotations

import argparse
import sys

from ...core.errors import JailbakeError
from .. import context, grammar

NAME = "log"
HELP = "print the log of a recipe's last build"


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("args", nargs="+", metavar="[CONFIG] RECIPE", help="configuration and recipe")
    sp.add_argument("--path", action="store_true", help="print only where the log is")
    grammar.cache_dir(sp)


def run(args: argparse.Namespace) -> int:
    from ...cache.history import History

    config, (name,) = context.split_config(args.args, "log [CONFIG] RECIPE")
    graph = context.graph_of(args, config, (name,), reading=True)
    context.recipe_of(graph, name, "log")
    store = context.context_of(args, reading=True).store
    path = History(store).log_path(name)
    if path is None:
        raise JailbakeError(f"log: {name} has no build log in {store.root}; build it first")
    if args.path:
        print(path)
    else:
        with path.open("rb") as f:
            sys.stdout.flush()
            while chunk := f.read(1 << 16):
                sys.stdout.buffer.write(chunk)
    return 0
