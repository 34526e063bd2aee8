"""jailbake lock-builders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import grammar

NAME = "lock-builders"
HELP = (
    "resolve the Debian packages of the base image and of every builder again and "
    "rewrite their packages.lock files (needs root and the Debian archive)"
)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "configs",
        nargs="*",
        metavar="CONFIG",
        help="layer configurations whose builders to lock (default: layers/rpi4-jailhouse.yml)",
    )
    sp.add_argument(
        "--debian-mirror",
        default=None,
        metavar="URL",
        help="the Debian archive to resolve from (default: this machine's apt sources)",
    )
    sp.add_argument(
        "--keep-base",
        action="store_true",
        help="keep the base image's lock; resolve only the builders on it",
    )
    grammar.mirrors(sp)
    grammar.cache_dir(sp)


def run(args: argparse.Namespace) -> int:
    from ...core.errors import JailbakeError
    from ...executors import engine
    from ...sources.builders import builder_dirs, lock_builders
    from .. import context

    work = context.context_of(args, reading=False)
    contexts: list[Path] = []
    for spec in args.configs or [None]:
        contexts += builder_dirs(work.graph(context.configs(spec), ())).values()
    parents = sorted({c.parent for c in contexts})
    if len(parents) != 1:
        where = ", ".join(map(str, parents)) or "none"
        raise JailbakeError(
            f"lock-builders: expected the builders in one docker/ directory, got {where}"
        )
    client = engine.connect()
    mirror = args.debian_mirror or engine.apt_mirror()
    for done in lock_builders(
        client, parents[0], contexts, work.fetcher(), mirror, keep_base=args.keep_base
    ):
        state = "rewritten" if done.changed else "unchanged"
        print(f"{done.path}: {done.packages} packages, {state}")
    print(f"[jailbake] resolved from {mirror}", file=sys.stderr)
    return 0
