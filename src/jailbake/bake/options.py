"""What a build is asked to do, and what it answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..cache.store import default_cache_dir
from ..executors.step import ExecutorKind
from ..release.artifacts import Artifact

# A field so marked does not change what a build makes or where: the record of the last
# build (replay) answers a build that differs only in it. Every other field is part of
# the record's identity, a new one included.
SAME_OUTCOME = "same_outcome"


@dataclass(frozen=True)
class BuildOptions:
    """What a build is asked to do: the command line's build, or a library caller's."""

    configs: tuple[Path, ...]
    targets: tuple[str, ...] = ()
    jobs: int = field(default=1, metadata={SAME_OUTCOME: True})
    executor: ExecutorKind = ExecutorKind.DOCKER
    cache_dir: Path = field(default_factory=default_cache_dir)
    artifacts_dir: Path = Path("artifacts")
    mirrors: tuple[str, ...] = ()
    offline: bool = False
    remote_cache: str | None = None  # URL of a Bazel-style HTTP cache
    remote_readonly: bool = False
    keep_going: bool = False
    # Recipes built again even when cached (a build with any never uses a record).
    force: tuple[str, ...] = field(default=(), metadata={SAME_OUTCOME: True})
    keep_failed: bool = False  # a failed step's work directory is kept for a shell
    remote_executor: str | None = None  # --executor remote: the service's URL
    remote_instance: str | None = None


@dataclass(frozen=True)
class BuildReport:
    built: list[str]
    reused: list[str]
    artifacts: list[Artifact]
    seconds: float
    downloaded: list[str] = field(default_factory=list)  # from the remote cache

    def to_dict(self) -> dict[str, object]:
        return {
            "built": self.built,
            "reused": self.reused,
            "downloaded": self.downloaded,
            "artifacts": [{"path": a.path, "sha256": a.sha256} for a in self.artifacts],
        }
