"""jailbake lock."""

from __future__ import annotations

import argparse
import sys

from .. import context, grammar

NAME = "lock"
HELP = (
    "pin every remote layer repository at its commit in <config>.lock.yml (kas's lock file format)"
)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    grammar.config(sp)
    sp.add_argument(
        "--update", action="store_true", help="move to the newest commit of each branch or tag"
    )
    grammar.cache_dir(sp)


def run(args: argparse.Namespace) -> int:
    from ...sources.lockfile import write_lock

    repos = context.repos_of(args, reading=False)
    dest, pins = write_lock(context.configs(args.config), repos, update=args.update)
    for name, commit in pins.items():
        print(f"{name}: {commit}")
    print(f"[jailbake] {len(pins)} remote layer repositories pinned in {dest}", file=sys.stderr)
    return 0
