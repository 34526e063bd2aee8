"""doit schedules the recipe graph; jailbake's keys decide what is up to date.

doit runs as a library (its task control, dispatcher and thread runner) with one
change: the tasks ready to start are taken longest remaining path first (what earlier
builds took, from the cache; for recipes never built, a guess from the sizes of the
sources that the cache or a mirror directory holds), so a long chain such as the
kernel's starts before short side branches take the slots. Recipes whose keys are
cached are decided before doit starts, and doit is given only the others (none: it
is not started at all).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..cache.store import ActionResult
from ..core.errors import Failures, JailbakeError
from ..model.graph import Graph
from .action import RecipeBuilder
from .plan import KeyInfo, Outcome, Status

log = logging.getLogger(__name__)

Report = Callable[[str, Outcome | None], None]
GUESS_BYTES_PER_SECOND = 2_000_000  # a recipe never built: its sources' size, compiled


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
        """Up to date when the key over the inputs, dependency outputs included, is stored
        (with its output tree as it was stored)."""
        with self._lock:
            if name in self.outcomes:  # decided before doit started
                return True
        outcome = self._lookup(name, check_tree=True)
        if outcome is not None:
            self.report(name, outcome)
        return outcome is not None

    def _lookup(self, name: str, *, check_tree: bool) -> Outcome | None:
        """The recipe's outcome if its key is stored (None to build it); without
        check_tree, its output tree is checked later, if this build reads it."""
        with self._lock:
            if any(failed == name for failed, _ in self.errors):
                return None
        try:
            recipe = self.graph.recipes[name]
            info, hit = self.builder.plan.lookup(recipe, self._deps(name), check_tree=check_tree)
        except BaseException as exc:
            self._failure(name, exc)
            return None
        if hit is None or name in self.builder.force:
            log.debug("%s: run: key %s is not in the cache", name, info.key[:16])
            with self._lock:
                self._keys[name] = info  # the action builds under this key
            return None
        self.builder.history.record_last(name, info.key)
        outcome = Outcome(name, Status.REUSED, hit, 0.0)
        with self._lock:
            self.outcomes[name] = outcome
        return outcome

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

    def _tasks(self, pending: list[str]) -> list[dict[str, Any]]:
        """doit's tasks for the recipes not decided yet (those looked up and found in the
        cache need none)."""
        waiting = set(pending)
        return [
            {
                "name": name,
                "actions": [(self._action, [name])],
                "task_dep": [d for d in self.graph.recipes[name].depends if d in waiting],
                "uptodate": [lambda n=name: self._uptodate(n)],
                # doit swaps sys.stdout/sys.stderr around captured actions, which races
                # between threads; jailbake's actions print through their own stream.
                "verbosity": 0,
                "io": {"capture": False},
            }
            for name in pending
        ]

    def _decide_cached(self) -> list[str]:
        """Look up, in dependency order, every key whose dependencies are decided; the
        recipes left to build (or whose key failed), in that order.

        The output trees this build reads are then checked against their digests: the
        dependencies of the recipes to build and the published outputs (the others are
        checked by the build that reads them). A tree changed on disk is removed, and its
        recipe and every recipe that waits for it are decided again, in doit."""
        for name in self.graph.order:
            with self._lock:
                ready = all(d in self.outcomes for d in self.graph.recipes[name].depends)
            if ready:
                self._lookup(name, check_tree=False)
        pending = [n for n in self.graph.order if n not in self.outcomes]
        used = {d for n in pending for d in self.graph.recipes[n].depends}
        used |= {n for n in self.outcomes if self.graph.recipes[n].publishes}
        store = self.builder.store
        changed = {
            n
            for n in self.graph.order
            if n in used and n in self.outcomes and not store.check_tree(self.outcomes[n].result)
        }
        if changed:
            for name in self.graph.order:  # dependencies first: the waiting ones follow
                if name in changed or any(d in changed for d in self.graph.recipes[name].depends):
                    changed.add(name)
                    self.outcomes.pop(name, None)
            pending = [n for n in self.graph.order if n not in self.outcomes]
        for name in self.graph.order:
            if name in self.outcomes:
                self.report(name, self.outcomes[name])
        return pending

    def priorities(self, pending: list[str] | None = None) -> dict[str, float]:
        """Each pending recipe's longest remaining path, in expected seconds: its own
        time and the longest chain of pending recipes that wait for it, up to the
        targets. pending: in dependency order; all of the graph's recipes by default."""
        fetcher = self.builder.fetcher
        order = self.graph.order if pending is None else pending
        own: dict[str, float] = {}
        for name in order:
            last = self.builder.history.last_duration(name)
            if last is None:  # never built here: a guess from the sizes of its sources
                # that the cache, a mirror directory or the layer holds
                sources = self.graph.recipes[name].sources
                sizes = sum(fetcher.known_size(s) or 0 for s in sources)
                last = 1.0 + sizes / GUESS_BYTES_PER_SECOND
            own[name] = last
        waiting: dict[str, list[str]] = {n: [] for n in order}
        for name in order:
            for dep in self.graph.recipes[name].depends:
                if dep in waiting:
                    waiting[dep].append(name)
        rank: dict[str, float] = {}
        for name in reversed(order):
            rank[name] = own[name] + max((rank[w] for w in waiting[name]), default=0.0)
        return rank

    def run(self, jobs: int) -> dict[str, Outcome]:
        try:
            pending = self._decide_cached()
            if pending:
                self._run_doit(jobs, pending)
        except KeyboardInterrupt:
            self.builder.store.settle(wait=False)  # Ctrl-C is not kept waiting
            raise
        finally:  # what was built before a failure or an interrupt counts too
            try:
                self.builder.history.save_last()
            except OSError as exc:  # the build's own outcome is what to report
                log.warning("cache: the last-built keys were not saved: %s", exc)
            self.builder.store.settle()  # work directories still being removed
        if self.errors:
            interrupt = next((e for _, e in self.errors if not isinstance(e, Exception)), None)
            if interrupt is not None:
                raise interrupt
            if not self.keep_going:
                raise self.errors[0][1]
            raise Failures(self.errors, self._not_built())
        missing = self._not_built()
        if missing:
            raise JailbakeError(f"recipes not built: {', '.join(missing)}")
        return self.outcomes

    def _run_doit(self, jobs: int, pending: list[str]) -> None:
        from doit.control import TaskControl, TaskDispatcher
        from doit.dependency import Dependency, JsonDB
        from doit.runner import MThreadRunner
        from doit.task import Stream, dict_to_task

        rank = self.priorities(pending)

        class Ready:
            """doit's queue of tasks to look at next, as a priority queue."""

            def __init__(self) -> None:
                self._heap: list[tuple[float, int, Any]] = []
                self._count = itertools.count()

            def append(self, node: Any) -> None:
                heapq.heappush(self._heap, (-rank[node.task.name], next(self._count), node))

            def popleft(self) -> Any:
                return heapq.heappop(self._heap)[2]

            def __bool__(self) -> bool:
                return bool(self._heap)

            def __len__(self) -> int:
                return len(self._heap)

        class Dispatcher(TaskDispatcher):  # type: ignore[misc]
            def __init__(self, *args: Any) -> None:
                super().__init__(*args)
                self.ready = Ready()

        control = TaskControl([dict_to_task(t) for t in self._tasks(pending)])
        # The targets still pending (every recipe that waits for a pending one is pending
        # too), the longest first: each one's dependencies, then it.
        targets = [t for t in self.graph.targets if t in rank]
        control.process(sorted(targets, key=lambda t: -rank[t]) or None)
        dispatcher = Dispatcher(control.tasks, control.targets, control.selected_tasks)
        deps = Dependency(JsonDB, str(self.state_dir / "doit.db"))
        runner = MThreadRunner(
            deps, _QuietReporter(None, {}), self.keep_going, False, Stream(0), max(1, jobs)
        )
        try:
            rc = runner.run_all(dispatcher)
        finally:
            deps.close()
        if rc != 0 and not self.errors:
            raise JailbakeError(f"the scheduler stopped with status {rc}")

    def _not_built(self) -> list[str]:
        failed = {name for name, _ in self.errors}
        return [n for n in self.graph.order if n not in self.outcomes and n not in failed]
