"""jailbake legal-info."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import context, grammar

NAME = "legal-info"
HELP = (
    "licences, licence texts, and the exact sources and patches of every recipe, "
    "with a manifest.csv (as Buildroot's legal-info)"
)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("args", nargs="+", metavar="[CONFIG] DIR", help="configuration and output")
    grammar.offline(sp)
    grammar.sources(sp)


def run(args: argparse.Namespace) -> int:
    from ...executors.step import ExecutorKind
    from ...release.legal import write_legal_info
    from ...ui.progress import plural

    config, (dest,) = context.split_config(args.args, "legal-info [CONFIG] DIR")
    work = context.context_of(args, reading=False)
    graph = work.graph(context.configs(config), tuple(args.target))
    # Sources are only prepared (for their licence texts), never built: no engine.
    builder = work.builder(graph, ExecutorKind.HOST, fetcher=work.fetcher(graph))
    info = write_legal_info(builder, Path(dest))
    print(
        f"[jailbake] legal-info {dest}: {plural(info.recipes, 'recipe')}, "
        f"{plural(info.sources, 'source')}, {plural(info.license_texts, 'licence text')}",
        file=sys.stderr,
    )
    if info.missing_texts:
        print(
            "[jailbake] no licence file pinned (license_files) for: "
            + ", ".join(info.missing_texts),
            file=sys.stderr,
        )
    return 0
