"""jailbake dump, as `kas dump`: the flattened configuration of one or more layer files
as YAML that kas reads again, and where each recipe of the graph came from (as YAML
comments, so the document stays a kas configuration)."""

from __future__ import annotations

from pathlib import Path

import yaml

from .graph import Graph
from .layer import merged_config


def origins(graph: Graph) -> list[str]:
    """Comment lines: each recipe of the graph with its version, the file it is defined
    in, and the files of earlier layers it overrides."""
    top = graph.layer.top_dir

    def rel(path: Path) -> str:
        return str(path.relative_to(top)) if path.is_relative_to(top) else str(path)

    overridden: dict[str, list[str]] = {}
    for name, file in graph.overridden:
        overridden.setdefault(name, []).append(rel(file))
    lines = [f"# recipes ({len(graph.recipes)}): name version: file (and what it overrides)"]
    for name in sorted(graph.recipes):
        recipe = graph.recipes[name]
        line = f"#   {name} {recipe.version}: {rel(recipe.file)}"
        if name in overridden:
            line += f" (overrides {', '.join(overridden[name])})"
        lines.append(line)
    return lines


def dump(graph: Graph) -> str:
    """The configuration the graph was loaded from, flattened, and its recipes' origins."""
    config, _ = merged_config(list(graph.layer.files))
    header = dict(config.get("header") or {})
    header.pop("includes", None)  # merged in already
    config = {**config, "header": header}
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    return text + "".join(f"{line}\n" for line in origins(graph))
