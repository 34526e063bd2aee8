"""Publishing declared outputs into the artifacts directory, atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache.keys import file_sha256
from ..cache.seal import path_stamp
from ..cache.sha1 import sha1_of
from ..cache.store import ActionResult, Store
from ..core import paths
from ..core.errors import CacheError, JailbakeError
from ..core.files import copy_hashed, normalize_tree
from . import inventory
from .provenance import code_digest

if TYPE_CHECKING:  # a build answered from its record loads no model
    from ..model.graph import Graph
    from ..model.layer import Layer
    from ..model.recipe import Recipe


@dataclass(frozen=True)
class Artifact:
    path: str  # relative to the artifacts directory
    sha256: str
    recipe: str = ""  # the recipe that made it


def published_record(store: Store, artifacts_dir: Path) -> Path:
    """Where store notes what it last published into artifacts_dir."""
    name = hashlib.sha256(str(artifacts_dir.resolve()).encode()).hexdigest()[:24]
    return store.root / "published" / f"{name}.json"


def _copy(src: Path, dest: Path, sde: int, sha256: str | None = None) -> None:
    """Copy a file or tree with normalized modes and times, then move it into place.
    A file is hashed while it is copied and must have sha256, its digest in the cache."""
    tmp = dest.parent / f".{dest.name}.tmp-{os.urandom(4).hex()}"
    old = dest.parent / f".{dest.name}.old-{os.urandom(4).hex()}"
    try:
        if sha256 is not None and src.is_file() and not src.is_symlink():
            actual = copy_hashed(src, tmp)
            if actual != sha256:
                raise CacheError(
                    f"{src}: the cached file has sha256 {actual}, not {sha256} as its "
                    "tree records; run 'jailbake verify --repair' and build again"
                )
            tmp.chmod(0o755 if os.access(src, os.X_OK) else 0o644)
            os.utime(tmp, (sde, sde))
        elif sha256 is None and src.is_dir() and not src.is_symlink():
            shutil.copytree(src, tmp, symlinks=True)
            normalize_tree(tmp, sde)
        else:
            raise CacheError(f"{src}: not the file or directory its result records")
        if dest.is_dir() and not dest.is_symlink():
            # A directory cannot be replaced in one rename: move the old one aside.
            os.rename(dest, old)
        elif tmp.is_dir() and os.path.lexists(dest):
            dest.unlink()  # a file or link where the directory goes
        os.replace(tmp, dest)
    finally:
        for leftover in (tmp, old):
            if os.path.lexists(leftover):
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()


def publish(
    graph: Graph,
    store: Store,
    results: dict[str, ActionResult],
    dest_dir: Path,
    on_copy: Callable[[str, float, int], None] | None = None,
) -> list[Artifact]:
    """Copy every published output of the graph's recipes into dest_dir.

    A file already published with the same content, and untouched since (same size,
    time and inode), is left as it is: a build with nothing changed copies nothing.
    on_copy is told of each copy made: (artifact, start time, bytes).
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    sde = graph.layer.source_date_epoch
    # What this cache last published there, kept in the cache: the artifacts directory
    # holds artifacts only.
    state_path = published_record(store, dest_dir)
    try:
        state: dict[str, Any] = json.loads(state_path.read_text())
    except (OSError, ValueError):
        state = {}
    published: list[Artifact] = []
    for name in graph.order:
        recipe, result = graph.recipes[name], results[name]
        tree = store.tree_path(result.output_digest)
        digests = {e["path"]: e["sha256"] for e in result.outputs if e["type"] == "file"}
        for output in recipe.outputs:
            if output.publish is None:
                continue
            # A link already in the artifacts directory is replaced, never followed.
            dest = paths.target(
                dest_dir,
                output.publish,
                origin=f"{recipe.where('outputs')}: outputs: publish",
                replace_link=True,
            )
            sha = digests.get(output.path)
            if sha is not None:  # a regular file
                if (
                    dest.is_file()
                    and not dest.is_symlink()
                    and state.get(output.publish) == [sha, *path_stamp(dest)]
                ):
                    published.append(Artifact(output.publish, sha, name))
                    continue
                start = time.monotonic()
                _copy(tree / output.path, dest, sde, sha)
                state[output.publish] = [sha, *path_stamp(dest)]
                if on_copy is not None:
                    on_copy(output.publish, start, dest.stat().st_size)
                published.append(Artifact(output.publish, sha, name))
                continue
            state.pop(output.publish, None)
            start = time.monotonic()
            _copy(tree / output.path, dest, sde)
            if on_copy is not None:
                size = sum(e.get("size", 0) for e in result.outputs if e["type"] == "file"
                           and e["path"].startswith(output.path + "/"))  # fmt: skip
                on_copy(output.publish, start, size)
            prefix = output.path + "/"
            published.extend(
                Artifact(f"{output.publish}/{path[len(prefix) :]}", digest, name)
                for path, digest in sorted(digests.items())
                if path.startswith(prefix)
            )
    tmp = store.temp_path("published")
    tmp.write_text(json.dumps(state, sort_keys=True))
    os.replace(tmp, state_path)
    return sorted(published, key=lambda a: a.path)


def check_expected(graph: Graph, published: Iterable[Artifact]) -> None:
    """The layer's kas 'artifacts' entries must be among what this build published.

    A build of other targets than the layer's (--target) checks only the entries
    named after a recipe it built."""
    paths = {a.path for a in published}
    whole_layer = set(graph.targets) == set(graph.layer.targets)
    for ident, rel in graph.layer.artifacts:
        if not whole_layer and ident not in graph.recipes:
            continue
        rel = rel.strip("/")
        if rel not in paths and not any(p.startswith(rel + "/") for p in paths):
            raise JailbakeError(
                f"{graph.layer.files[-1]}: artifacts.{ident}: expected {rel!r} among the "
                f"published artifacts: {', '.join(sorted(paths)) or 'none'}"
            )


MANIFEST = "manifest.json"


def layer_names(layer: Layer) -> list[str]:
    """The layer files of a build as manifest.json names them: relative to the top
    repository (the same in every checkout)."""
    top = layer.top_dir
    return [str(f.relative_to(top)) if f.is_relative_to(top) else f.name for f in layer.files]


def _license_files(recipe: Recipe, store: Store) -> dict[str, Any]:
    """The recipe's pinned licence files, with the SHA1 of those whose text the cache
    holds (the SPDX document lists them as files)."""
    entries = []
    for f in recipe.license_files:
        entry = f.pin()
        if store.verify_blob(f.sha256):
            entry["sha1"] = sha1_of(store, store.blob_path(f.sha256), f.sha256)
        entries.append(entry)
    return {"license_files": entries} if entries else {}


def _contents(recipe: Recipe, result: ActionResult, store: Store) -> dict[str, Any]:
    """What the SBOM says of a recipe's output beyond its pins: the Debian packages of a
    root file system among its outputs, and the digest of its configuration file."""
    found: dict[str, Any] = {}
    tree = store.tree_path(result.output_digest)
    for output in recipe.outputs:
        path = tree / output.path
        if path.is_symlink():
            continue
        if path.is_dir():
            packages = inventory.of_dir(path)
        elif path.name.endswith(".tar") and path.is_file():
            packages = inventory.of_tar(path)
        else:
            continue
        if packages is not None:
            found.update(packages.to_dict())
            break
    if recipe.cve_product is not None:
        found["cve_product"] = dict(zip(("ecosystem", "name"), recipe.cve_product, strict=True))
    if recipe.config_file:
        digests = {e["path"]: e["sha256"] for e in result.outputs if e["type"] == "file"}
        if recipe.config_file in digests:
            found["config"] = {"path": recipe.config_file, "sha256": digests[recipe.config_file]}
        else:
            raise JailbakeError(
                f"{recipe.where('config_file')}: config_file: {recipe.config_file!r} is not a "
                "file the build left among its outputs"
            )
    return found


def _holds(recipe: Recipe, entries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The dependencies whose outputs this recipe's output holds: those its root file
    system or image places, and those whose Debian packages its own root file system
    has, every one of them (it was made from theirs)."""
    held = set()
    if recipe.rootfs is not None:
        held |= {c.recipe for c in recipe.rootfs.contents}
    if recipe.image is not None:
        held |= {c.recipe for p in recipe.image.partitions for c in p.contents}
    mine = {(p["name"], p["version"], p["architecture"])
            for p in entries[recipe.name].get("packages", [])}  # fmt: skip
    for dep in recipe.depends:
        theirs = {(p["name"], p["version"], p["architecture"])
                  for p in entries.get(dep, {}).get("packages", [])}  # fmt: skip
        if theirs and theirs <= mine:
            held.add(dep)
    return sorted(held & set(recipe.depends))


def write_manifest(
    graph: Graph,
    results: dict[str, ActionResult],
    published: list[Artifact],
    dest_dir: Path,
    store: Store,
    checks: Mapping[str, Mapping[str, Any]] | None = None,
    runs_in: Mapping[str, str] | None = None,
    builders: Sequence[Mapping[str, Any]] = (),
) -> tuple[Artifact, dict[str, Any]]:
    """manifest.json: the layer files with their digests, every recipe with version,
    key, output digest, pins and where it ran (runs_in: 'host', 'jailbake' or the
    builder image's name), what `jailbake repro` found of its result (checks, by key),
    the builder images used (builders, see sources.builders.describe), and the
    artifacts. Returns it and its content. Nothing in it depends on the machine."""
    from .. import __version__

    recipes = []
    for name in graph.order:
        recipe, result = graph.recipes[name], results[name]
        recipes.append(
            {
                **_license_files(recipe, store),
                "name": name,
                "version": recipe.version,
                "summary": recipe.summary,
                "license": recipe.license,
                "key": result.key,
                "output_digest": result.output_digest,
                "depends": sorted(recipe.depends),
                "sources": [s.pin() for s in recipe.sources],
                **({"runs_in": runs_in[name]} if runs_in and name in runs_in else {}),
                **_contents(recipe, result, store),
                **(
                    {"reproducibility": dict(checks[result.key])}
                    if checks and result.key in checks
                    else {}
                ),
            }
        )
    entries = {r["name"]: r for r in recipes}
    for name in graph.order:
        if held := _holds(graph.recipes[name], entries):
            entries[name]["contains"] = held
    manifest = {
        "jailbake": __version__,
        "jailbake_sha256": code_digest(),
        "layers": layer_names(graph.layer),
        "configuration": [
            {"path": name, "sha256": file_sha256(path)}
            for name, path in zip(layer_names(graph.layer), graph.layer.files, strict=True)
        ],
        **(
            {"layer_repos": [{"name": n, "url": u, "commit": c} for n, u, c in graph.layer.repos]}
            if graph.layer.repos
            else {}
        ),
        "targets": list(graph.targets),
        "source_date_epoch": graph.layer.source_date_epoch,
        "recipes": recipes,
        "artifacts": [{"path": a.path, "sha256": a.sha256, "recipe": a.recipe} for a in published],
        **({"builders": [dict(b) for b in builders]} if builders else {}),
    }
    dest = dest_dir / MANIFEST
    tmp = dest_dir / f".{MANIFEST}.tmp-{os.urandom(4).hex()}"
    tmp.write_text(json.dumps(manifest, sort_keys=True) + "\n")  # C encoder: no indent
    tmp.chmod(0o644)
    os.utime(tmp, (graph.layer.source_date_epoch,) * 2)
    os.replace(tmp, dest)
    return Artifact(MANIFEST, file_sha256(dest)), manifest
