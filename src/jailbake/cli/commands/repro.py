"""jailbake repro."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import context, grammar

if TYPE_CHECKING:
    from ...executors.step import Vary

NAME = "repro"
HELP = (
    "build recipes a second time from the same inputs under varied conditions and "
    "compare their outputs with the cached results, file by file (diffoscope reports "
    "each difference)"
)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    from ...executors.step import Vary as Variation

    sp.add_argument(
        "words",
        nargs="*",
        metavar="[CONFIG] RECIPE",
        help="a layer configuration (default: layers/rpi4-jailhouse.yml), then the "
        "recipes to check, built with what they depend on (default: every recipe its "
        "targets need)",
    )
    sp.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help="what to vary (repeatable; default: all): "
        + ", ".join(v.value for v in Variation)
        + "; -NAME leaves one out of all",
    )
    sp.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="where repro.json, index.html and diffoscope's reports go "
        "(default: ARTIFACTS_DIR/repro)",
    )
    grammar.artifacts_dir(sp)
    grammar.mirrors(sp)
    sp.add_argument(
        "--offline", action="store_true", help="never open a connection (sources from mirrors)"
    )
    sp.add_argument(
        "--json", action="store_true", help="end with the report as one JSON line on stdout"
    )
    grammar.executor(sp, remembered=False)


def chosen_variations(words: list[str]) -> frozenset[Vary]:
    from ...core.errors import JailbakeError
    from ...executors.step import parse_vary

    given = [w.strip() for word in words for w in word.split(",") if w.strip()]
    if not given:
        return frozenset(all_variations())
    removed = [w[1:] for w in given if w.startswith("-")]
    added = [w for w in given if not w.startswith("-")]
    try:
        chosen = parse_vary(",".join(added)) if added else frozenset(all_variations())
        return chosen - (parse_vary(",".join(removed)) if removed else frozenset())
    except ValueError as exc:
        raise JailbakeError(f"--vary: {exc}") from None


def all_variations() -> list[Vary]:
    from ...executors.step import Vary as Variation

    return list(Variation)


def run(args: argparse.Namespace) -> int:
    from ...bake.options import BuildOptions
    from ...bake.repro import repro
    from ...cache.store import default_cache_dir
    from ...executors.step import ExecutorKind
    from ...ui import reprohtml
    from ...ui.view import BuildView

    config, recipes = context.split_config(args.words, "[CONFIG] [RECIPE...]", most=None)
    vary = chosen_variations(args.vary)
    options = BuildOptions(
        configs=context.configs(config),
        jobs=max(1, os.cpu_count() or 1),
        executor=ExecutorKind(args.executor),
        cache_dir=args.cache_dir or default_cache_dir(),
        artifacts_dir=args.artifacts_dir,
        mirrors=tuple(args.mirror),
        offline=args.offline,
        remote_executor=args.remote_executor,
        remote_instance=args.remote_instance,
    )
    report_dir = args.report_dir or args.artifacts_dir / "repro"

    def say(line: str) -> None:
        print(f"[jailbake] {line}", file=sys.stderr)

    report = repro(options, tuple(recipes), vary, report_dir, BuildView(), say)
    doc = report.to_dict()
    index = reprohtml.write(report_dir, doc)
    for entry in report.checked:
        if entry.error:
            print(f"{entry.recipe}: REBUILD FAILED: {entry.error}")
        elif entry.reproducible:
            print(f"{entry.recipe}: reproducible ({', '.join(entry.varied) or 'no variation'})")
        else:
            for d in entry.differences:
                under = {"none": "with no variation", "all": "under all variations together"}
                where = under.get(d.under, f"under {d.under}")
                report_file = f" [{report.report_dir / d.html}]" if d.html else ""
                report_file = report_file or (f" ({d.note})" if d.note else "")
                print(f"{entry.recipe}: DIFFERS {where}: {', '.join(d.files)}{report_file}")
        by_reason: dict[str, list[str]] = {}
        for vary_name, why in sorted(entry.skipped.items()):
            by_reason.setdefault(why, []).append(vary_name)
        for why, names in by_reason.items():
            print(f"{entry.recipe}:   not varied: {', '.join(names)} ({why})")
    good = sum(1 for c in report.checked if c.reproducible and not c.error)
    print(
        f"[jailbake] repro: {good} of {len(report.checked)} recipes reproducible "
        f"({report.seconds:.1f}s); report: {index}",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(doc, sort_keys=True))
    return 0 if report.ok else 1
