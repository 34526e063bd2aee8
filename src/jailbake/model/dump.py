"""jailbake dump, as `kas dump`: the flattened configuration of one or more layer files
as YAML that kas reads again, and where each recipe of the graph came from (as YAML
comments, so the document stays a kas configuration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def lock_document(graph: Graph) -> dict[str, Any]:
    """kas's lock file: the commit of each remote layer repository the graph used."""
    repos = {name: {"commit": commit} for name, _, commit in sorted(graph.layer.repos)}
    return {"header": {"version": 14}, "overrides": {"repos": repos}}


def dump(graph: Graph, *, resolve_refs: bool = False, lock: bool = False) -> str:
    """The configuration the graph was loaded from, flattened, and its recipes' origins;
    with resolve_refs each remote repository names the commit used; with lock, the lock
    file instead (as kas dump --lock)."""
    if lock:
        return yaml.safe_dump(lock_document(graph), sort_keys=False)
    config, _ = merged_config(list(graph.layer.files))
    header = dict(config.get("header") or {})
    header.pop("includes", None)  # merged in already
    config = {**config, "header": header}
    if resolve_refs:
        used = {name: commit for name, _, commit in graph.layer.repos}
        config["repos"] = {
            name: {**(repo or {}), "commit": used[name]} if name in used else repo
            for name, repo in (config.get("repos") or {}).items()
        }
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    return text + "".join(f"{line}\n" for line in origins(graph))
