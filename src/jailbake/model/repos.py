"""What a layer file says of a remote layer repository, and what reading the layer
needs of whoever checks it out: the layers are read without network or cache of
their own, the caller hands them a RepoCheckouts (sources.layerrepos makes one)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class RepoPin:
    """What a layer file says of a remote repository, after its lock file's overrides."""

    name: str
    url: str
    commit: str = ""  # full id: the reproducible way
    branch: str = ""
    tag: str = ""

    @property
    def ref(self) -> str:
        return f"refs/heads/{self.branch}" if self.branch else f"refs/tags/{self.tag}"


@dataclass(frozen=True)
class Checkout:
    name: str
    url: str
    commit: str
    path: Path
    floating: bool  # resolved from a branch or tag, not pinned


class RepoCheckouts(Protocol):
    """Checks out a remote layer repository at its pin, with its patches applied."""

    def checkout(self, pin: RepoPin, origin: Path, patches: Sequence[Path] = ()) -> Checkout:
        """The repository's files at its commit (origin: the layer file naming it)."""
        ...
