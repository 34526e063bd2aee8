"""jailbake explain."""

from __future__ import annotations

import argparse
import json

from ...core.errors import JailbakeError
from .. import context, grammar

NAME = "explain"
HELP = "a recipe's key inputs and what changed since its last build"


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("args", nargs="+", metavar="[CONFIG] RECIPE", help="configuration and recipe")
    grammar.executor(sp, remembered=True)


def run(args: argparse.Namespace) -> int:
    from ...bake.query import explain
    from ...cache.keys import short_key

    config, (name,) = context.split_config(args.args, "explain [CONFIG] RECIPE")
    graph, plan = context.plan_of(args, config, (name,))
    if name not in graph.recipes:
        raise JailbakeError(
            f"explain: unknown recipe {name!r}; known: {', '.join(sorted(graph.recipes))}"
        )
    ex = explain(graph, plan, name)
    if ex.missing_deps:
        print(f"{name}: key unknown until these are built: {', '.join(ex.missing_deps)}")
        return 0
    print(f"{name}: key {ex.key}")
    ws = plan.workspace_of(graph.recipes[name])
    if ws is not None:
        print(f"sources from the workspace {ws.dir} (inputs: files.workspace)")
    print("inputs:")
    print(json.dumps(ex.inputs, indent=2, sort_keys=True))
    if ex.last_key is None:
        print(f"{name} has not been built with this cache")
    elif ex.last_key == ex.key:
        print(f"unchanged since the last build ({short_key(ex.last_key)})")
    else:
        print(f"changed since the last build ({short_key(ex.last_key)}):")
        for field, before, now in ex.changed:
            print(f"  {field}: {json.dumps(before)} -> {json.dumps(now)}")
    return 0
