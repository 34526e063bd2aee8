"""jailbake base-image."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import grammar

NAME = "base-image"
HELP = (
    "make the builders' Debian base image from its pinned packages "
    "(docker/debian-base/packages.lock) with mmdebstrap, offline, and import it into "
    "the engine (needs root)"
)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--lock",
        type=Path,
        default=Path("docker/debian-base/packages.lock"),
        help="the base image's lock file",
    )
    grammar.mirrors(sp)
    grammar.offline(sp)
    grammar.cache_dir(sp)
    sp.add_argument("--force", action="store_true", help="make it again even if present")


def run(args: argparse.Namespace) -> int:
    from ...executors import engine
    from ...sources.builders import make_base
    from .. import context

    work = context.context_of(args, reading=False)
    client = engine.connect()
    tag = make_base(client, args.lock, work.fetcher(), force=args.force)
    print(f"{tag}: the base of {args.lock}")
    return 0
