"""Removing results from the cache: one recipe's, or everything a graph no longer uses."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..cache.store import ActionResult, Store
from ..core.files import remove_tree
from ..model.graph import Graph
from ..model.recipe import SourceKind
from ..sources.fetch import Fetcher
from .plan import Planner
from .query import list_graph


@dataclass
class Freed:
    results: list[str] = field(default_factory=list)  # keys
    trees: int = 0
    blobs: int = 0
    other: int = 0  # logs, repositories, stamps
    bytes: int = 0


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size if os.path.lexists(path) else 0
    total = 0
    for dirpath, _, filenames in os.walk(path):
        total += sum(os.lstat(os.path.join(dirpath, n)).st_size for n in filenames)
    return total


def _records(store: Store) -> dict[str, ActionResult]:
    records = {}
    for path in (store.root / "ac").glob("*/*.json"):
        try:
            records[path.stem] = ActionResult.from_json(path.read_bytes())
        except (OSError, ValueError, TypeError):
            records[path.stem] = ActionResult(path.stem, "", "", {}, [], "", 0.0)
    return records


def _drop_results(store: Store, keys: Iterable[str], freed: Freed) -> None:
    for key in sorted(set(keys)):
        path = store.root / "ac" / key[:2] / f"{key}.json"
        if path.is_file():
            freed.bytes += _size(path)
            path.unlink()
            freed.results.append(key)
    _drop_unused_trees(store, freed)


def _drop_unused_trees(store: Store, freed: Freed) -> None:
    used = {r.output_digest for r in _records(store).values()}
    for tree in sorted((store.root / "trees").iterdir()):
        if tree.name not in used:
            freed.bytes += _size(tree)
            store.evict_tree(tree.name)
            freed.trees += 1


def clean_recipes(graph: Graph, plan: Planner, names: Iterable[str]) -> Freed:
    """Remove the results of these recipes: under their current key (where their
    dependencies are cached) and under the key they were last built with."""
    store = plan.store
    current = {e.name: e.key for e in list_graph(graph, plan)}
    keys = []
    for name in names:
        keys += [k for k in (current.get(name), plan.history.last_key(name)) if k]
    freed = Freed()
    _drop_results(store, keys, freed)
    return freed


def collect_garbage(graph: Graph, plan: Planner) -> Freed:
    """Keep what building graph again would use: the results of its recipes' current
    keys, their trees and logs, its sources; remove everything else."""
    store = plan.store
    keep = {e.key for e in list_graph(graph, plan) if e.key and e.cached}
    records = _records(store)
    freed = Freed()
    _drop_results(store, (k for k in records if k not in keep), freed)
    kept = [records[k] for k in keep if k in records]
    logs = {r.log.hash for r in kept if r.log is not None}
    pins = {
        s.sha256
        for name in graph.order
        for s in graph.recipes[name].sources
        if s.kind is SourceKind.URL
    }
    pins |= {f.sha256 for name in graph.order for f in graph.recipes[name].license_files}
    for blob in sorted((store.root / "cas").glob("*/*")):
        if blob.name not in pins and blob.name not in logs:
            freed.bytes += _size(blob)
            blob.unlink()
            freed.blobs += 1
    fetcher = Fetcher(store, offline=True)
    repos = {
        fetcher.git_dir(s.location).name
        for name in graph.order
        for s in graph.recipes[name].sources
        if s.kind is SourceKind.GIT
    }
    log_names = {f"{r.recipe}-{r.key[:16]}.log" for r in kept}
    trees = {p.name for p in (store.root / "trees").iterdir()}
    failed, sha1 = store.root / "failed", store.root / "sha1"
    for path in [
        *(failed.iterdir() if failed.is_dir() else ()),
        *(sha1.iterdir() if sha1.is_dir() else ()),  # artifacts' SHA1, found again if needed
        *(p for p in (store.root / "git").iterdir() if p.name not in repos),
        *(p for p in (store.root / "logs").iterdir() if p.name not in log_names),
        *(p for p in (store.root / "stamps").iterdir() if p.stem not in trees),
    ]:
        freed.bytes += _size(path)
        remove_tree(path)
        freed.other += 1
    return freed
