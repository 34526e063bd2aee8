"""What the command line shows of a build and leaves beside its artifacts: the progress
display on stderr, and build-trace.json and build-report.html drawn from its trace."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import report
from .progress import Progress, reused
from .trace import Tracer

if TYPE_CHECKING:
    from ..bake.observe import Finished, Plan
    from ..bake.plan import Outcome


class BuildView:
    """A build's observer (jailbake.bake.observe.Observer): every event goes to the
    progress display and to the trace; the machine's load is sampled while the
    schedule runs."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.progress = Progress(self.stream, live=live)
        self.tracer = Tracer()
        self._reused: list[str] = []

    @property
    def live(self) -> bool:
        return self.progress.live

    def begin(self) -> None:
        self.tracer = Tracer()  # the trace's time 0 is the build's start, not the view's

    @contextlib.contextmanager
    def watching(self, plan: Plan) -> Iterator[None]:
        from .sampler import Sampler

        with (
            Sampler(self.tracer.sample),
            self.progress.watching(
                plan.total,
                jobs=plan.jobs,
                estimates=plan.estimates,
                to_build=plan.to_build,
                depends=plan.depends,
            ),
        ):
            yield

    def __call__(self, name: str, outcome: Outcome | None) -> None:
        self.progress(name, outcome)
        self.tracer(name, outcome)

    def failed(self, name: str, exc: Exception) -> None:
        self.progress.failed(name, exc)
        self.tracer.failed(name, exc)

    def step_log(self, name: str, path: Path) -> None:
        self.progress.step_log(name, path)

    def span(self, kind: str, name: str, start: float, recipe: str | None = None,
             **args: Any) -> None:  # fmt: skip
        self.tracer.span(kind, name, start, recipe, **args)

    def reused(self, name: str, key: str, output_bytes: int) -> None:
        self.tracer.reused(name, key, output_bytes)
        self._reused.append(f"[jailbake] {name}: {reused(key, 0.0)}\n")

    def finished(self, done: Finished) -> None:
        if self._reused:  # one write for a build answered from its record
            self.stream.write("".join(self._reused))
            self._reused.clear()
        extra: dict[str, Any] = {"from_record": True} if done.from_record else {}
        if done.checks:
            extra["reproducibility"] = done.checks
        report.write_with_trace(
            self.tracer, done.dest, done.targets, done.depends, done.logs, **extra
        )
