"""jailbake clean."""

from __future__ import annotations

import argparse
import sys

from ...core.errors import JailbakeError
from .. import context, grammar

NAME = "clean"
HELP = "remove recipes' results from the cache, or with --all everything the graph no longer uses"


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "args", nargs="*", metavar="[CONFIG] [RECIPE]", help="configuration and recipes"
    )
    sp.add_argument(
        "--ccache",
        action="store_true",
        help="empty the builder images' compiler caches (ccache) as well, or only them",
    )
    sp.add_argument(
        "--all",
        action="store_true",
        help="remove every result, tree, download and log this configuration does not "
        "use: in a cache shared with other configurations, theirs too",
    )
    grammar.executor(sp, remembered=True)


def run(args: argparse.Namespace) -> int:
    from ...bake.clean import clean_recipes, collect_garbage
    from ...ui.progress import human_size, plural

    config, names = context.split_config(args.args, "clean [CONFIG] [RECIPE...]", most=None)
    if names and args.all:
        raise JailbakeError("clean: give the recipes whose results to remove, or --all")
    if args.ccache:
        from ...core.files import remove_tree

        ccache = context.context_of(args, reading=True).store.root / "ccache"
        size = sum(f.stat().st_size for f in ccache.rglob("*") if f.is_file())
        remove_tree(ccache)
        print(f"[jailbake] clean: compiler caches emptied, {human_size(size)} freed",
              file=sys.stderr)  # fmt: skip
        if not names and not args.all:
            return 0
    if not names and not args.all:
        raise JailbakeError("clean: give the recipes whose results to remove, --all or --ccache")
    graph, plan = context.plan_of(args, config, names)
    freed = collect_garbage(graph, plan) if args.all else clean_recipes(graph, plan, names)
    print(
        f"[jailbake] clean: removed {plural(len(freed.results), 'result')}, "
        f"{plural(freed.trees, 'tree')}, {plural(freed.blobs, 'blob')} (downloads, logs), "
        f"{freed.other} other; {human_size(freed.bytes)} freed",
        file=sys.stderr,
    )
    return 0
