"""Publishing declared outputs into the artifacts directory, atomically."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import JailbakeError, RecipeError
from .graph import Graph
from .keys import file_sha256
from .store import ActionResult, Store


@dataclass(frozen=True)
class Artifact:
    path: str  # relative to the artifacts directory
    sha256: str


def _copy(src: Path, dest: Path, sde: int) -> None:
    """Copy a file or tree with normalized modes and times, replacing dest atomically."""
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, tmp, symlinks=True)
            for dirpath, dirnames, filenames in os.walk(tmp):
                for name in [*dirnames, *filenames]:
                    p = Path(dirpath) / name
                    if not p.is_symlink():
                        p.chmod(0o755 if p.is_dir() or os.access(p, os.X_OK) else 0o644)
                    os.utime(p, (sde, sde), follow_symlinks=False)
            tmp.chmod(0o755)
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
        elif src.is_symlink():
            tmp.symlink_to(os.readlink(src))
        else:
            shutil.copyfile(src, tmp)
            tmp.chmod(0o755 if os.access(src, os.X_OK) else 0o644)
        os.utime(tmp, (sde, sde), follow_symlinks=False)
        os.replace(tmp, dest)
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()


def publish(
    graph: Graph, store: Store, results: dict[str, ActionResult], dest_dir: Path
) -> list[Artifact]:
    """Copy every published output of the graph's recipes into dest_dir."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    sde = graph.layer.source_date_epoch
    published: list[Artifact] = []
    claimed: dict[str, str] = {}
    for name in graph.order:
        recipe = graph.recipes[name]
        tree = store.tree_path(results[name].output_digest)
        for output in recipe.outputs:
            if output.publish is None:
                continue
            if output.publish in claimed:
                raise RecipeError(
                    recipe.where("outputs"),
                    "outputs",
                    f"artifact {output.publish!r} is also published by {claimed[output.publish]}",
                )
            claimed[output.publish] = name
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


def check_expected(graph: Graph, dest_dir: Path) -> None:
    """The layer's kas 'artifacts' entries must exist after the build."""
    for ident, rel in graph.layer.artifacts:
        if not (dest_dir / rel).exists():
            raise JailbakeError(
                f"{graph.layer.files[-1]}: artifacts.{ident}: expected "
                f"{dest_dir / rel} after the build"
            )
