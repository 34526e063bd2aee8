"""jailbake graph."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import context, grammar

NAME = "graph"
HELP = "the recipe graph as Graphviz DOT (or SVG): versions, cache states, targets"


def add_arguments(sp: argparse.ArgumentParser) -> None:
    grammar.config(sp)
    grammar.targets(sp, "only what these recipes need (repeatable; default: the layer's target)")
    sp.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="write to FILE: DOT, or SVG when it ends in .svg (needs Graphviz's dot); "
        "default: DOT on stdout",
    )
    grammar.executor(sp, remembered=True)


def run(args: argparse.Namespace) -> int:
    from ...ui.dot import graph_dot, write_graph

    graph, plan = context.plan_of(args, args.config, args.target)
    text = graph_dot(graph, plan)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_graph(text, args.output)
        print(f"[jailbake] graph of {len(graph.order)} recipes in {args.output}", file=sys.stderr)
    return 0
