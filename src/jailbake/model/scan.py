"""What a build read from the layers, as cheap fingerprints: the configuration files of
the directories kas read, the repository markers above the first layer file, and the
recipe files of each recipe directory."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CONFIG_SUFFIXES = (".yml", ".yaml", ".json")
RECIPE_SUFFIXES = (".yml", ".yaml")


def split_config(spec: str) -> list[Path]:
    """'a.yml:b.yml' -> paths, as kas takes them."""
    return [Path(p) for p in spec.split(":") if p]


def config_fingerprint(dirs: Sequence[str]) -> str:
    """The configuration files (*.yml, *.yaml, *.json) of these directories, by content:
    any file kas could read or find there, added, removed or edited (whatever its size
    and time), changes it."""
    digest = hashlib.sha256()
    for d in dirs:
        try:
            names = sorted(n for n in os.listdir(d) if n.endswith(CONFIG_SUFFIXES))
        except OSError:
            names = []
        digest.update(f"{d}\0{len(names)}\0".encode())
        for name in names:
            try:
                with open(os.path.join(d, name), "rb") as f:
                    data = f.read()
            except OSError:  # a directory so named, or unreadable
                data = b"\0unreadable"
            digest.update(f"{name}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


def repositories(first: Path) -> list[str]:
    """Where kas would find the top repository (.git or .hg above the first file)."""
    return [
        str(d / marker)
        for d in (first.parent, *first.parent.parents)
        for marker in (".git", ".hg")
        if (d / marker).exists()
    ]


def recipe_names(layer_dir: Path) -> list[str]:
    """The recipe files of a recipe directory, in load order: *.yml, then *.yaml."""
    try:
        names = os.listdir(layer_dir)
    except OSError:
        return []
    return sorted(n for n in names if n.endswith(".yml")) + sorted(
        n for n in names if n.endswith(".yaml")
    )


def bytes_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ConfigScan:
    """Where a layer configuration came from: the directories whose configuration files
    kas read or could find, their fingerprint, and the repository markers above the
    first layer file, as they were when it was loaded."""

    dirs: tuple[str, ...]
    fingerprint: str
    repositories: tuple[str, ...]

    @classmethod
    def of(cls, first: Path, dirs: Sequence[str]) -> ConfigScan:
        dirs = tuple(sorted(set(dirs)))
        return cls(dirs, config_fingerprint(dirs), tuple(repositories(first)))

    def holds(self, first: Path) -> bool:
        """Whether nothing kas would read or find differs now."""
        return (
            tuple(repositories(first)) == self.repositories
            and config_fingerprint(self.dirs) == self.fingerprint
        )
