"""jailbake verify."""

from __future__ import annotations

import argparse
import sys

from .. import context, grammar

NAME = "verify"
HELP = "hash every file of the cache again and check its records (git fsck)"


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--repair",
        action="store_true",
        help="remove what is wrong; it is built or fetched again when next needed",
    )
    grammar.cache_dir(sp)


def run(args: argparse.Namespace) -> int:
    from ...cache.verify import verify_store

    store = context.context_of(args, reading=True).store
    report = verify_store(store, repair=args.repair)
    for problem in report.problems:
        print(problem)
    removed = f", {report.removed} removed" if args.repair else ""
    print(
        f"[jailbake] verify {store.root}: {report.blobs} blobs, {report.repositories} "
        f"repositories, {report.trees} trees, {report.results} results: "
        f"{len(report.problems)} problems{removed}",
        file=sys.stderr,
    )
    return 1 if report.problems and not args.repair else 0
