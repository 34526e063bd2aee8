"""Publishing declared outputs into the artifacts directory, atomically."""

from __future__ import annotations

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
