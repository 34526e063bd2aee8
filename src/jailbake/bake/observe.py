"""What a build tells whoever watches it; the build itself prints nothing.

The command line hands a build an Observer (jailbake.ui.view.BuildView: the progress
display, the trace and the report); a library caller may hand none (Quiet).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .plan import Outcome


@dataclass(frozen=True)
class Plan:
    """What a build knows before its first step: the observer's estimate of what is
    left needs it."""

    total: int
    jobs: int = 1
    estimates: Mapping[str, float] = field(default_factory=dict)  # earlier durations
    to_build: frozenset[str] = frozenset()
    depends: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Finished:
    """What a finished build leaves for its trace and report, beside its artifacts."""

    dest: Path  # the artifacts directory
    targets: list[str]
    depends: dict[str, list[str]]
    logs: dict[str, str]  # recipe -> where its step's log is kept
    from_record: bool = False  # answered from the last build's record (replay)
    # recipe -> what the last `jailbake repro` of its result found, and where its report
    # went (History.check_record)
    checks: dict[str, dict[str, object]] = field(default_factory=dict)


class Observer(Protocol):
    """The events of one build, in the order they happen: begin(), watching() around the
    schedule, a recipe's start (outcome None) and end, failures, spans of work inside
    a step, and finished() once the artifacts are written."""

    @property
    def live(self) -> bool:
        """Whether it shows an estimate of the time left (the build then asks the
        cache what it holds before it starts)."""
        ...

    def begin(self) -> None:
        """The build's clock starts: graph and executors are ready (or its record holds)."""
        ...

    def watching(self, plan: Plan) -> contextlib.AbstractContextManager[None]: ...

    def __call__(self, name: str, outcome: Outcome | None) -> None: ...

    def failed(self, name: str, exc: Exception) -> None: ...

    def step_log(self, name: str, path: Path) -> None: ...

    def span(self, kind: str, name: str, start: float, recipe: str | None = None,
             **args: Any) -> None: ...  # fmt: skip

    def reused(self, name: str, key: str, output_bytes: int) -> None:
        """A recipe reused without a schedule: a build answered from its record."""
        ...

    def finished(self, done: Finished) -> None: ...


class Quiet:
    """An observer that keeps nothing."""

    live = False

    def begin(self) -> None:
        pass

    @contextlib.contextmanager
    def watching(self, plan: Plan) -> Iterator[None]:
        yield

    def __call__(self, name: str, outcome: Outcome | None) -> None:
        pass

    def failed(self, name: str, exc: Exception) -> None:
        pass

    def step_log(self, name: str, path: Path) -> None:
        pass

    def span(self, kind: str, name: str, start: float, recipe: str | None = None,
             **args: Any) -> None:  # fmt: skip
        pass

    def reused(self, name: str, key: str, output_bytes: int) -> None:
        pass

    def finished(self, done: Finished) -> None:
        pass
