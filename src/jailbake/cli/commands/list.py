"""jailbake list."""

from __future__ import annotations

import argparse
import json
import sys

from .. import context, grammar

NAME = "list"
HELP = "every recipe of the graph with version, key and pins"


def add_arguments(sp: argparse.ArgumentParser) -> None:
    grammar.config(sp)
    sp.add_argument("--json", action="store_true", help="print the list as JSON")
    grammar.executor(sp, remembered=True)


def run(args: argparse.Namespace) -> int:
    from ...bake.query import list_graph
    from ...cache.keys import short_key

    graph, plan = context.plan_of(args, args.config)
    entries = list_graph(graph, plan)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2, sort_keys=True))
        return 0
    for e in entries:
        key = short_key(e.key) if e.key else "?"
        state = "cached" if e.cached else "-"
        print(f"{e.name:24} {e.version:16} {key:12} {state:6} {e.file}")
        for s in e.sources:
            pin = s.get("sha256") or s.get("commit") or ""
            print(f"    {s.get('url') or s.get('git') or s.get('file')} {pin}".rstrip())
        if e.workspace:
            print(f"    workspace {e.workspace} (replaces the sources and patches above)")
        if e.runs:
            print(f"    runs {e.runs}")
    for name, file in graph.overridden:
        print(f"note: {name} from {file} is overridden by a later layer", file=sys.stderr)
    return 0
