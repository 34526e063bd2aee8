"""A whole build: layers -> graph -> scheduled recipes -> published artifacts."""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..cache.sha1 import sha1_of
from ..core.errors import FetchError, JailbakeError, RecipeError
from ..executors.docker import DockerExecutor
from ..executors.host import HostExecutor
from ..executors.step import Executor
from ..model.graph import Graph
from ..release import spdx
from ..release.artifacts import check_expected, publish, write_manifest
from ..sources.builders import describe as describe_builders
from . import replay
from .action import RecipeBuilder
from .checks import checks_of, without_report
from .context import Context, Settings
from .observe import Finished, Observer, Plan, Quiet
from .options import BuildOptions, BuildReport
from .plan import Outcome, Status
from .schedule import Scheduler

if TYPE_CHECKING:
    from ..model.recipe import Recipe

log = logging.getLogger(__name__)
T = TypeVar("T")


@contextlib.contextmanager
def _cancel_on_interrupt(*executors: Executor) -> Iterator[None]:
    """Ctrl-C and SIGTERM stop the running steps at once, in the signal handler: the
    scheduler waits for its worker threads before it lets the interrupt through, and
    a worker waits for its container or sandbox."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        for executor in dict.fromkeys(executors):
            executor.cancel()
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@dataclass(frozen=True)
class Scheduled:
    """The recipes of a build, each built or reused."""

    graph: Graph
    builder: RecipeBuilder
    outcomes: dict[str, Outcome]


def bake(options: BuildOptions, observer: Observer | None = None) -> BuildReport:
    """Build the options' targets; every recipe ends up built or reused, or this raises.
    observer: told what happens (the command line's progress display and trace)."""
    start = time.monotonic()
    observer = observer or Quiet()
    done = schedule(options, observer)
    graph, builder, outcomes = done.graph, done.builder, done.outcomes
    store = builder.store
    results = {n: o.result for n, o in outcomes.items()}

    def copied(name: str, start: float, size: int) -> None:
        observer.span("artifact", name, start, bytes=size)

    artifacts = publish(graph, store, results, options.artifacts_dir, on_copy=copied)
    check_expected(graph, artifacts)
    found = checks_of(builder.history, {n: r.key for n, r in results.items()})
    checks = {results[n].key: without_report(c) for n, c in found.items()}  # by key
    runs_in = {n: runs_in_of(builder, graph.recipes[n]) for n in graph.order}
    used = {graph.recipes[n].builder for n, where in runs_in.items() if where not in LOCAL}
    manifest, content = write_manifest(
        graph, results, artifacts, options.artifacts_dir, store, checks,
        runs_in=runs_in, builders=describe_builders(graph, used),
    )  # fmt: skip
    artifacts.append(manifest)
    spdx.write(options.artifacts_dir, content, functools.partial(sha1_of, store))
    # The artifacts' stat, taken as soon as this build has written them.
    replay.record(options, graph, builder, results, artifacts)
    logs = {n: store.blob_location(r.log.hash) for n, r in results.items() if r.log is not None}
    depends = {n: sorted(graph.recipes[n].depends) for n in graph.order}
    observer.finished(
        Finished(options.artifacts_dir, list(graph.targets), depends, logs, checks=found)
    )
    built = [n for n in graph.order if outcomes[n].status is Status.BUILT]
    reused = [n for n in graph.order if outcomes[n].status is Status.REUSED]
    downloaded = [n for n in graph.order if outcomes[n].status is Status.DOWNLOADED]
    return BuildReport(built, reused, artifacts, time.monotonic() - start, downloaded)


LOCAL = ("host", "jailbake")  # where a recipe runs when not in a builder image


def runs_in_of(builder: RecipeBuilder, recipe: Recipe) -> str:
    """'host', 'jailbake' (its own image writers) or the recipe's builder image."""
    where = builder.plan.builder_identity(recipe)["executor"]
    return recipe.builder if where == "docker" else where


def make_tool(options: BuildOptions, name: str, observer: Observer | None = None) -> Path:
    """The output tree of one recipe that makes a program jailbake runs (QEMU for
    `run`), built or reused; nothing is published and no record is kept."""
    done = schedule(replace(options, targets=(name,)), observer or Quiet())
    recipe = done.graph.recipes[name]
    if len(recipe.outputs) != 1:
        raise RecipeError(
            recipe.where("outputs"), "outputs", "a tool's recipe declares one output directory"
        )
    tree = done.builder.store.tree_path(done.outcomes[name].result.output_digest)
    return tree / recipe.outputs[0].path


def schedule(options: BuildOptions, observer: Observer) -> Scheduled:
    """Build or reuse every recipe the options' targets need."""
    context = Context(Settings.of_build(options))
    store = context.store
    graph = context.graph(options.configs, options.targets, memo=True)
    fetcher = context.fetcher(graph)
    remote = None
    if options.remote_cache:
        from ..cache.remote import RemoteCache

        remote = RemoteCache(options.remote_cache, store, readonly=options.remote_readonly)
    unknown = sorted(set(options.force) - set(graph.recipes))
    if unknown:
        raise JailbakeError(
            f"--force: {', '.join(unknown)} is not a recipe of this build; "
            f"its recipes: {', '.join(graph.order)}"
        )
    builder = context.builder(
        graph,
        options.executor,
        remote_executor=options.remote_executor,
        remote_instance=options.remote_instance,
        fetcher=fetcher,
        remote=remote,
        force=frozenset(options.force),
        keep_failed=options.keep_failed,
    )
    host, executor, local = builder.plan.host, builder.plan.executor, builder.plan.local
    assert isinstance(host, HostExecutor)
    for name in graph.order:
        if (ws := builder.plan.workspace_of(graph.recipes[name])) is not None:
            log.info("%s: sources from the workspace %s", name, ws.dir)
    observer.begin()
    builder.on_step = observer.step_log
    builder.on_span = fetcher.on_span = observer.span
    builder.history.remember_executor(graph.layer.files, options.executor.value)
    if options.offline:
        missing = fetcher.missing_offline(graph.recipes[n] for n in graph.order)
        if missing:
            lines = "; ".join(m.describe() for m in missing)
            raise FetchError(
                f"--offline: {len(missing)} source(s) are neither cached nor in a mirror: {lines}"
            )
    containers = [
        builder.plan.executor_for(graph.recipes[n])
        for n in graph.order
        if builder.plan.builder_identity(graph.recipes[n])["executor"] == "docker"
    ]
    for used in dict.fromkeys(containers):
        if isinstance(used, DockerExecutor):
            _ = used.client  # fail early, with how to start an engine
    if any(
        builder.plan.builder_identity(graph.recipes[n])["executor"] == "host" for n in graph.order
    ):
        host.start_probe()  # on another core: the first host step needs its answer
    to_build: frozenset[str] = frozenset()
    estimates: dict[str, float] = {}
    if observer.live:  # an ETA needs what the cache holds and what earlier builds took
        from .query import list_graph

        try:
            cached = {e.name for e in list_graph(graph, builder.plan) if e.cached}
        except JailbakeError:  # the build reports it, for its recipe, in its turn
            cached = set()
        to_build = frozenset(n for n in graph.order if n not in cached or n in builder.force)
        estimates = {
            n: d for n in graph.order if (d := builder.history.last_duration(n)) is not None
        }
    plan = Plan(
        len(graph.order),
        jobs=options.jobs,
        estimates=estimates,
        to_build=to_build,
        depends={n: graph.recipes[n].depends for n in graph.order},
    )
    with (
        _cancel_on_interrupt(executor, host, *([local] if local else [])),
        store.temp_dir("schedule") as state,
        observer.watching(plan),
    ):
        scheduler = Scheduler(
            graph,
            builder,
            observer,
            state,
            keep_going=options.keep_going,
            failed=observer.failed,
        )
        outcomes = scheduler.run(options.jobs)
    return Scheduled(graph, builder, outcomes)
