"""Read-only questions about a graph: what is in it, and why a key changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..cache.keys import flatten
from ..cache.store import ActionResult
from ..model.graph import Graph
from .plan import Planner


@dataclass(frozen=True)
class Entry:
    name: str
    version: str
    summary: str
    license: str
    key: str | None
    cached: bool
    depends: list[str]
    sources: list[dict[str, Any]]
    file: str
    workspace: str | None = None  # the directory the recipe's sources come from instead
    runs: str | None = None  # with a remote executor: where the step runs

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "summary": self.summary,
            "license": self.license,
            "key": self.key,
            "cached": self.cached,
            "depends": self.depends,
            "sources": self.sources,
            "file": self.file,
            "workspace": self.workspace,
            "runs": self.runs,
        }


def cached_results(
    graph: Graph, plan: Planner, until: str | None = None
) -> tuple[dict[str, str | None], dict[str, ActionResult | None]]:
    """Each recipe's key, where its dependencies' outputs are in the cache, and its
    cached result; in graph order, stopping before until."""
    keys: dict[str, str | None] = {}
    results: dict[str, ActionResult | None] = {}
    for name in graph.order:
        if name == until:
            break
        recipe = graph.recipes[name]
        deps = {d: results.get(d) for d in recipe.depends}
        keys[name] = results[name] = None
        if all(r is not None for r in deps.values()):
            info, results[name] = plan.lookup(recipe, {d: r for d, r in deps.items() if r})
            keys[name] = info.key
    return keys, results


def list_graph(graph: Graph, plan: Planner) -> list[Entry]:
    """Every recipe with its key, where its dependencies' outputs are in the cache."""
    keys, results = cached_results(graph, plan)
    entries = []
    for name in graph.order:
        recipe = graph.recipes[name]
        key = keys[name]
        sources = [
            {k: v for k, v in s.pin().items() if k in ("url", "sha256", "git", "commit", "file")}
            for s in recipe.sources
        ]
        ws = plan.workspace_of(recipe)
        entries.append(
            Entry(
                name,
                recipe.version,
                recipe.summary,
                recipe.license,
                key,
                results[name] is not None,
                sorted(recipe.depends),
                sources,
                str(recipe.file.relative_to(graph.layer.top_dir))
                if recipe.file.is_relative_to(graph.layer.top_dir)
                else str(recipe.file),
                str(ws.dir) if ws else None,
                plan.runs(recipe),
            )
        )
    return entries


@dataclass(frozen=True)
class Explanation:
    recipe: str
    key: str | None
    inputs: dict[str, Any]
    last_key: str | None
    changed: list[tuple[str, Any, Any]]  # (input, before, now)
    missing_deps: list[str]


def explain(graph: Graph, plan: Planner, name: str) -> Explanation:
    """The recipe's key inputs now, and what differs from its last build in this cache."""
    entries = {e.name: e for e in list_graph(graph, plan)}
    recipe = graph.recipes[name]
    store = plan.store
    missing = [d for d in recipe.depends if not entries[d].cached]
    last_key = plan.history.last_key(name)
    last = store.get_result(last_key) if last_key else None
    if missing:
        return Explanation(name, None, {}, last_key, [], missing)
    deps: dict[str, ActionResult] = {}
    for d in recipe.depends:
        hit = store.get_result(entries[d].key or "")
        assert hit is not None
        deps[d] = hit
    info, _ = plan.lookup(recipe, deps)
    changed: list[tuple[str, Any, Any]] = []
    if last is not None and last.key != info.key:
        before, now = flatten(last.inputs), flatten(info.inputs)
        for k in sorted(set(before) | set(now)):
            if before.get(k) != now.get(k):
                changed.append((k, before.get(k), now.get(k)))
    return Explanation(name, info.key, info.inputs, last_key, changed, [])
