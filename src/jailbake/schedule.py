"""doit schedules the recipe graph; jailbake's keys decide what is up to date."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .action import KeyInfo, Outcome, RecipeBuilder, Status
from .errors import Failures, JailbakeError
from .graph import Graph
from .store import ActionResult

log = logging.getLogger(__name__)

Report = Callable[[str, Outcome | None], None]


class _QuietReporter:
    """doit's reporter interface, silenced: jailbake prints its own progress."""

    desc = "jailbake"

    def __init__(self, outstream: Any, options: Any) -> None:
        self.failures: list[Any] = []

    def get_status(self, task: Any) -> None: ...
    def initialize(self, tasks: Any, selected_tasks: Any) -> None: ...
    def execute_task(self, task: Any) -> None: ...
    def add_failure(self, task: Any, fail: Any) -> None:
        self.failures.append((task, fail))

    def add_success(self, task: Any) -> None: ...
    def skip_uptodate(self, task: Any) -> None: ...
    def skip_ignore(self, task: Any) -> None: ...
    def cleanup_error(self, exception: Any) -> None: ...
    def runtime_error(self, msg: str) -> None:
        self.failures.append((None, msg))

    def teardown_task(self, task: Any) -> None: ...
    def complete_run(self) -> None: ...


class Scheduler:
    """Runs a graph's recipes as doit tasks, -j of them at a time."""

    def __init__(
        self,
        graph: Graph,
        builder: RecipeBuilder,
        report: Report,
        state_dir: Path,
        *,
        keep_going: bool = False,
        failed: Callable[[str, Exception], None] | None = None,
    ) -> None:
        self.graph = graph
        self.builder = builder
        self.report = report
        self.failed = failed
        self.state_dir = state_dir
        self.keep_going = keep_going
        self.outcomes: dict[str, Outcome] = {}
        self.errors: list[tuple[str, BaseException]] = []
        self._keys: dict[str, KeyInfo] = {}
        self._lock = threading.Lock()

    def _deps(self, name: str) -> dict[str, ActionResult]:
        with self._lock:
            return {d: self.outcomes[d].result for d in self.graph.recipes[name].depends}

    def _uptodate(self, name: str) -> bool:
        """Up to date when the key over the inputs, dependency outputs included, is stored."""
        try:
            recipe = self.graph.recipes[name]
            info, hit = self.builder.lookup(recipe, self._deps(name))
        except BaseException as exc:
            self._failure(name, exc)
            return False
        if hit is None or name in self.builder.force:
            log.debug("%s: run: key %s is not in the cache", name, info.key[:16])
            with self._lock:
                self._keys[name] = info  # the action builds under this key
            return False
        self.builder.store.record_last(name, info.key)
        outcome = Outcome(name, Status.REUSED, hit, 0.0)
        with self._lock:
            self.outcomes[name] = outcome
        self.report(name, outcome)
        return True

    def _failure(self, name: str, exc: BaseException) -> None:
        with self._lock:
            self.errors.append((name, exc))
        if self.failed is not None and isinstance(exc, Exception):
            self.failed(name, exc)

    def _action(self, name: str) -> bool:
        with self._lock:
            if self.errors and not self.keep_going:
                return False
            if any(failed == name for failed, _ in self.errors):
                return False  # its key could not be computed: said once already
        self.report(name, None)
        try:
            with self._lock:
                info = self._keys.pop(name, None)
            outcome = self.builder.build(self.graph.recipes[name], self._deps(name), info)
        except BaseException as exc:
            self._failure(name, exc)
            return False
        with self._lock:
            self.outcomes[name] = outcome
        self.report(name, outcome)
        return True

    def _tasks(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "actions": [(self._action, [name])],
                "task_dep": list(self.graph.recipes[name].depends),
                "uptodate": [lambda n=name: self._uptodate(n)],
                # doit swaps sys.stdout/sys.stderr around captured actions, which races
                # between threads; jailbake's actions print through their own stream.
                "verbosity": 0,
                "io": {"capture": False},
            }
            for name in self.graph.order
        ]

    def run(self, jobs: int) -> dict[str, Outcome]:
        from doit.cmd_base import TaskLoader2
        from doit.doit_cmd import DoitMain
        from doit.task import dict_to_task

        tasks = [dict_to_task(t) for t in self._tasks()]
        config = {
            "dep_file": str(self.state_dir / "doit.db"),
            "backend": "json",
            "reporter": _QuietReporter,
            "verbosity": 0,
        }

        class Loader(TaskLoader2):  # type: ignore[misc]
            def setup(self, opt_values: Any) -> None: ...
            def load_doit_config(self) -> dict[str, Any]:
                return config

            def load_tasks(self, cmd: Any, pos_args: Any) -> list[Any]:
                return tasks

        args = [
            "run",
            "--process",
            str(max(1, jobs)),
            "--parallel-type",
            "thread",
            *(["--continue"] if self.keep_going else []),
            # Targets in the order given: each one's dependencies, then it, then the next.
            *self.graph.targets,
        ]
        streams = sys.stdout, sys.stderr
        try:
            rc = DoitMain(Loader(), extra_config={"GLOBAL": config}).run(args)
        finally:
            sys.stdout, sys.stderr = streams
        if self.errors:
            interrupt = next((e for _, e in self.errors if not isinstance(e, Exception)), None)
            if interrupt is not None:
                raise interrupt
            if not self.keep_going:
                raise self.errors[0][1]
            raise Failures(self.errors, self._not_built())
        if rc != 0:
            raise JailbakeError(f"the scheduler stopped with status {rc}")
        missing = self._not_built()
        if missing:
            raise JailbakeError(f"recipes not built: {', '.join(missing)}")
        return self.outcomes

    def _not_built(self) -> list[str]:
        failed = {name for name, _ in self.errors}
        return [n for n in self.graph.order if n not in self.outcomes and n not in failed]
