"""Publishing declared outputs into the artifacts directory, atomically."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import JailbakeError
from .graph import Graph
from .keys import file_sha256
from .store import ActionResult, Store, normalize_tree


@dataclass(frozen=True)
class Artifact:
    path: str  # relative to the artifacts directory
    sha256: str


def _copy(src: Path, dest: Path, sde: int) -> None:
    """Copy a file or tree with normalized modes and times, then move it into place."""
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, tmp, symlinks=True)
            normalize_tree(tmp, sde)
            if dest.is_dir() and not dest.is_symlink():
                # A directory cannot replace another in one rename: move the old one aside.
                old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(dest, old)
                os.rename(tmp, dest)
                shutil.rmtree(old)
                return
        elif src.is_symlink():
            tmp.symlink_to(os.readlink(src))
        else:
            shutil.copyfile(src, tmp)
            tmp.chmod(0o755 if os.access(src, os.X_OK) else 0o644)
            os.utime(tmp, (sde, sde))
        os.replace(tmp, dest)
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink()


def publish(
    graph: Graph, store: Store, results: dict[str, ActionResult], dest_dir: Path
) -> list[Artifact]:
    """Copy every published output of the graph's recipes into dest_dir."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    sde = graph.layer.source_date_epoch
    published: list[Artifact] = []
    for name in graph.order:
        recipe = graph.recipes[name]
        tree = store.tree_path(results[name].output_digest)
        for output in recipe.outputs:
            if output.publish is None:
                continue
            dest = dest_dir / output.publish
            dest.parent.mkdir(parents=True, exist_ok=True)
            _copy(tree / output.path, dest, sde)
            published.extend(_describe(dest, dest_dir))
    return sorted(published, key=lambda a: a.path)


def _describe(path: Path, root: Path) -> Iterable[Artifact]:
    if path.is_dir() and not path.is_symlink():
        for dirpath, _, filenames in sorted(os.walk(path)):
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if p.is_file() and not p.is_symlink():
                    yield Artifact(p.relative_to(root).as_posix(), file_sha256(p))
    elif path.is_file():
        yield Artifact(path.relative_to(root).as_posix(), file_sha256(path))


def check_expected(graph: Graph, published: Iterable[Artifact]) -> None:
    """The layer's kas 'artifacts' entries must be among what this build published."""
    paths = {a.path for a in published}
    for ident, rel in graph.layer.artifacts:
        rel = rel.strip("/")
        if rel not in paths and not any(p.startswith(rel + "/") for p in paths):
            raise JailbakeError(
                f"{graph.layer.files[-1]}: artifacts.{ident}: expected {rel!r} among the "
                f"published artifacts: {', '.join(sorted(paths)) or 'none'}"
            )


MANIFEST = "manifest.json"


def write_manifest(
    graph: Graph, results: dict[str, ActionResult], published: list[Artifact], dest_dir: Path
) -> Artifact:
    """manifest.json: every recipe with version, key, output digest and pins, and the artifacts."""
    from . import __version__

    top = graph.layer.top_dir
    recipes = []
    for name in graph.order:
        recipe, result = graph.recipes[name], results[name]
        recipes.append(
            {
                "name": name,
                "version": recipe.version,
                "summary": recipe.summary,
                "license": recipe.license,
                "key": result.key,
                "output_digest": result.output_digest,
                "depends": sorted(recipe.depends),
                "sources": [s.pin() for s in recipe.sources],
            }
        )
    manifest = {
        "jailbake": __version__,
        "layers": [
            str(f.relative_to(top)) if f.is_relative_to(top) else f.name for f in graph.layer.files
        ],
        "targets": list(graph.targets),
        "source_date_epoch": graph.layer.source_date_epoch,
        "recipes": recipes,
        "artifacts": [{"path": a.path, "sha256": a.sha256} for a in published],
    }
    dest = dest_dir / MANIFEST
    tmp = dest_dir / f".{MANIFEST}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.chmod(0o644)
    os.utime(tmp, (graph.layer.source_date_epoch,) * 2)
    os.replace(tmp, dest)
    return Artifact(MANIFEST, file_sha256(dest))
