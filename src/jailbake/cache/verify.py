"""`jailbake verify`: the whole cache checked against its own digests, as `git fsck`
checks a repository. With repair, what is wrong is evicted: it is built or fetched
again when next needed."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..core import gitcmd
from ..core.files import remove_tree
from .keys import file_sha256
from .store import ActionResult, Store


@dataclass
class Report:
    blobs: int = 0
    repositories: int = 0
    trees: int = 0
    results: int = 0
    problems: list[str] = field(default_factory=list)
    removed: int = 0


def verify_store(store: Store, *, repair: bool = False) -> Report:
    """Hash every blob and tree again, fsck every git repository, and check every
    result record."""
    report = Report()
    for path in sorted((store.root / "cas").glob("*/*")):
        report.blobs += 1
        if path.is_symlink() or not path.is_file() or file_sha256(path) != path.name:
            report.problems.append(f"blob {path.name}: its content does not hash to its name")
            if repair:
                path.unlink()
                report.removed += 1
    for git_dir in sorted((store.root / "git").glob("*.git")):
        report.repositories += 1
        cp = gitcmd.run(
            *("--git-dir", git_dir, "fsck", "--no-dangling", "--no-progress"),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if cp.returncode != 0:
            detail = (cp.stderr.decode(errors="replace").strip().splitlines() or ["?"])[0]
            report.problems.append(f"repository {git_dir.name}: git fsck: {detail}")
            if repair:
                remove_tree(git_dir)
                report.removed += 1
    bad_trees: set[str] = set()
    for path in sorted((store.root / "trees").iterdir()):
        report.trees += 1
        if path.is_symlink() or not store.verify_tree(path.name, full=True):
            bad_trees.add(path.name)
            report.problems.append(f"tree {path.name}: its files do not hash to its digest")
            if repair:
                store.evict_tree(path.name)
                report.removed += 1
    for path in sorted((store.root / "ac").glob("*/*.json")):
        report.results += 1
        problem = _check_record(store, path, bad_trees)
        if problem:
            report.problems.append(f"result {path.stem}: {problem}")
            if repair:
                path.unlink()
                report.removed += 1
    return report


def _check_record(store: Store, path: Path, bad_trees: set[str]) -> str:
    try:
        result = ActionResult.from_json(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        return f"not a result record ({exc})"
    if result.key != path.stem:
        return f"records key {str(result.key)[:16]}, not the one it is stored under"
    digest = result.output_digest
    if digest in bad_trees:
        return f"its output tree {digest[:16]} is corrupt"
    if not os.path.isdir(store.tree_path(digest)):
        return f"its output tree {digest[:16]} is missing"
    return ""
