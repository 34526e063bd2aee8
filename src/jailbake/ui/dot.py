"""The recipe graph as a picture: Graphviz DOT text, and SVG through Graphviz's dot."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from ..bake.plan import Planner
from ..bake.query import cached_results
from ..cache.keys import short_key
from ..core import run
from ..core.errors import JailbakeError
from ..model.graph import Graph

FILL = {"cached": "#c8e6c9", "to build": "#fff3bf"}


def _quote(text: str) -> str:
    return json.dumps(text)  # a DOT string: double quotes, backslash escapes


def graph_dot(graph: Graph, plan: Planner) -> str:
    """Every recipe of graph as a node (name, version, cache state, the layer recipe it
    overrides), an edge from each recipe to each dependency; targets drawn bold."""
    keys, results = cached_results(graph, plan)
    overridden = {}
    for name, file in graph.overridden:
        top = graph.layer.top_dir
        overridden[name] = str(file.relative_to(top)) if file.is_relative_to(top) else str(file)
    lines = [
        "digraph jailbake {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
        '  edge [color="#607d8b"];',
    ]
    for name in graph.order:
        recipe = graph.recipes[name]
        state = "cached" if results[name] is not None else "to build"
        key = keys[name]
        label = [name, recipe.version, f"{state} {short_key(key)}" if key else state]
        if name in overridden:
            label.append(f"overrides {overridden[name]}")
        attrs = [f"label={_quote(chr(10).join(label))}", f'fillcolor="{FILL[state]}"']
        if name in graph.targets:
            attrs += ["penwidth=3", 'fontname="Helvetica-Bold"']
        lines.append(f"  {_quote(name)} [{', '.join(attrs)}];")
    for name in graph.order:
        for dep in sorted(graph.recipes[name].depends):
            lines.append(f"  {_quote(name)} -> {_quote(dep)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_graph(text: str, dest: Path) -> None:
    """DOT text to dest, or an SVG drawing of it when dest ends in .svg."""
    if dest.suffix != ".svg":
        dest.write_text(text)
        return
    if shutil.which("dot") is None:
        raise JailbakeError(
            f"graph: drawing {dest} needs Graphviz's dot (Debian: apt-get install graphviz); "
            "without it, write DOT text with -o FILE.dot"
        )
    cp = run.run(
        ["dot", "-Tsvg"], input=text.encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        check=False,
    )  # fmt: skip
    if cp.returncode != 0:
        detail = (cp.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        raise JailbakeError(f"graph: dot failed: {detail}")
    tmp = dest.with_name(f".{dest.name}.part")
    tmp.write_bytes(cp.stdout)
    tmp.replace(dest)
