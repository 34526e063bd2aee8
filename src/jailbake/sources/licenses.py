"""A recipe's licence files: found in its prepared sources, checked against their pins
and kept in the cache, so that a licence changed upstream stops the build as a changed
source does, and legal-info and the SPDX document can quote the exact texts."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

from ..cache.store import Store
from ..core import paths
from ..core.errors import RecipeError
from ..model.recipe import Recipe


def check(recipe: Recipe, src: Path, store: Store) -> None:
    """Every licence file the recipe declares, read from src (its sources unpacked and
    patched), must have its pinned sha256; its text goes into the cache's CAS."""
    for i, entry in enumerate(recipe.license_files):
        field = f"license_files[{i}]"
        origin = f"{recipe.where('license_files')}: {field}.path"
        path = paths.check_inside(src, entry.path, origin=origin)
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise RecipeError(
                recipe.where("license_files"),
                f"{field}.path",
                f"{entry.path} is not in the sources (after unpacking and patches)",
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise RecipeError(
                recipe.where("license_files"), f"{field}.path", f"{entry.path} is not a file"
            )
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != entry.sha256:
            raise RecipeError(
                recipe.where("license_files"),
                f"{field}.sha256",
                f"{entry.path} has sha256 {actual}, the recipe pins {entry.sha256}: the "
                "licence text changed; read it, then pin the new sha256",
            )
        store.add_bytes(data)


def text(store: Store, sha256: str) -> bytes | None:
    """A licence text the cache holds, checked; None if it has none."""
    return store.blob_path(sha256).read_bytes() if store.verify_blob(sha256) else None
