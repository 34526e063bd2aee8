"""jailbake build."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .. import context, grammar

NAME = "build"
HELP = "build the targets of a layer configuration (the default)"


def add_arguments(sp: argparse.ArgumentParser) -> None:
    grammar.config(sp)
    sp.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME",
        help="recipe to build, in this order (repeatable; default: the layer's target)",
    )
    sp.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=None,
        help="recipes built in parallel, and $JOBS inside each step (default: the number "
        "of processors)",
    )
    sp.add_argument(
        "-k",
        "--keep-going",
        action="store_true",
        help="after a failure, build everything that does not depend on it; "
        "list every failure at the end",
    )
    sp.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="NAME",
        help="build this recipe again even if its result is cached, and say whether the "
        "new output is identical (repeatable)",
    )
    sp.add_argument(
        "--keep-failed",
        action="store_true",
        help="keep a failed step's work directory and print the 'jailbake shell' command "
        "that opens it",
    )
    grammar.artifacts_dir(sp)
    grammar.mirrors(sp)
    sp.add_argument(
        "--offline",
        action="store_true",
        help="never open a connection; fail listing every missing source",
    )
    sp.add_argument(
        "--remote-cache",
        metavar="URL",
        help="a shared cache speaking Bazel's HTTP cache protocol (/ac/, /cas/)",
    )
    sp.add_argument(
        "--remote-cache-readonly",
        action="store_true",
        help="use the remote cache's results but never upload (untrusted builds)",
    )
    sp.add_argument(
        "--json",
        action="store_true",
        help='end with one JSON line on stdout: the report, or {"ok": false, "error": ...}',
    )
    grammar.provenance(sp)
    grammar.executor(sp, remembered=False)


def run(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from ...bake.options import BuildOptions
    from ...bake.replay import answer
    from ...cache.store import default_cache_dir
    from ...executors.step import ExecutorKind
    from ...ui.progress import plural
    from ...ui.view import BuildView

    options = BuildOptions(
        configs=context.configs(args.config),
        targets=tuple(args.target),
        jobs=max(1, (os.cpu_count() or 1) if args.jobs is None else args.jobs),
        executor=ExecutorKind(args.executor),
        cache_dir=args.cache_dir or default_cache_dir(),
        artifacts_dir=args.artifacts_dir,
        mirrors=tuple(args.mirror),
        offline=args.offline,
        remote_cache=args.remote_cache,
        remote_readonly=args.remote_cache_readonly,
        keep_going=args.keep_going,
        force=tuple(args.force),
        keep_failed=args.keep_failed,
        remote_executor=args.remote_executor,
        remote_instance=args.remote_instance,
    )
    view = BuildView()
    started = datetime.now(UTC)
    report = answer(options, view)
    if report is None:  # something changed since the last build of this command
        from ...bake.build import bake

        report = bake(options, view)
    if args.provenance:
        from ...bake.attest import attest

        written = attest(options, started, datetime.now(UTC), args.builder_id)
        print(f"[jailbake] provenance: {written}", file=sys.stderr)
    remote = f"{len(report.downloaded)} from the remote cache, " if report.downloaded else ""
    total = len(report.built) + len(report.reused) + len(report.downloaded)
    print(
        f"[jailbake] {plural(total, 'recipe')}: {len(report.built)} built, "
        f"{len(report.reused)} reused, {remote}{plural(len(report.artifacts), 'artifact')} "
        f"in {options.artifacts_dir} ({report.seconds:.1f}s)",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps({"ok": True, **report.to_dict()}, sort_keys=True))
    return 0
