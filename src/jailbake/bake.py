"""A whole build: layers -> graph -> scheduled recipes -> published artifacts."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from . import replay, report
from .action import RecipeBuilder, Status
from .cache.store import ActionResult, Store
from .core.errors import FetchError, JailbakeError
from .core.paths import resolve_mirror
from .executors import engine
from .executors.docker import DockerExecutor
from .executors.host import HostExecutor
from .executors.step import Executor, ExecutorKind
from .model.graph import Graph, build_graph
from .model.layer import load_layers
from .release import spdx
from .release.artifacts import check_expected, publish, write_manifest
from .request import BuildOptions, BuildReport
from .sampler import Sampler
from .schedule import Scheduler
from .sources.fetch import Fetcher
from .sources.layerrepos import LayerRepos
from .status import Progress
from .trace import Tracer

if TYPE_CHECKING:  # the remote executor's code loads only for --executor remote
    from .executors.remote.executor import RemoteSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


def make_executor(kind: ExecutorKind, remote: RemoteSettings | None = None) -> Executor:
    if kind is ExecutorKind.HOST:
        return HostExecutor()
    if kind is ExecutorKind.REMOTE:
        assert remote is not None
        from .executors.remote.executor import RemoteExecutor

        return RemoteExecutor(remote)
    return DockerExecutor(engine.connect)


def remote_settings(graph: Graph, url: str | None, instance: str | None) -> RemoteSettings:
    """The remote executor's service and platform, from the command line and the layer."""
    from .executors.remote.executor import RemoteSettings

    return RemoteSettings.from_layer(
        graph.layer.variables(), url, instance, str(graph.layer.files[-1])
    )


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


def _both(
    first: Callable[[str, T], None], second: Callable[[str, T], None]
) -> Callable[[str, T], None]:
    """One event for two listeners: the progress display and the trace."""

    def both(name: str, event: T) -> None:
        first(name, event)
        second(name, event)

    return both


def load_graph(
    configs: Sequence[Path],
    targets: Sequence[str] = (),
    memo_dir: Path | None = None,
    repos: LayerRepos | None = None,
) -> Graph:
    return build_graph(load_layers(configs, memo_dir=memo_dir, repos=repos), targets, memo_dir)


def _write_trace_and_report(
    tracer: Tracer, graph: Graph, store: Store, results: dict[str, ActionResult], dest: Path
) -> None:
    """build-trace.json and build-report.html beside the artifacts."""
    depends = {n: sorted(graph.recipes[n].depends) for n in graph.order}
    logs = {n: store.blob_location(r.log.hash) for n, r in results.items() if r.log is not None}
    report.write_with_trace(tracer, dest, graph.targets, depends, logs)


def bake(options: BuildOptions, progress: Progress | None = None) -> BuildReport:
    """Build the options' targets; every recipe ends up built or reused, or this raises."""
    start = time.monotonic()
    store = Store(options.cache_dir)
    mirrors = tuple(resolve_mirror(m, Path.cwd()) for m in options.mirrors)
    repos = LayerRepos(Fetcher(store, mirrors, offline=options.offline))
    graph = load_graph(options.configs, options.targets, options.cache_dir / "layers", repos)
    mirrors += graph.layer.mirrors
    fetcher = Fetcher(store, mirrors, offline=options.offline)
    host = HostExecutor()
    settings = (
        remote_settings(graph, options.remote_executor, options.remote_instance)
        if options.executor is ExecutorKind.REMOTE
        else None
    )
    executor = (
        host if options.executor is ExecutorKind.HOST else make_executor(options.executor, settings)
    )
    local = make_executor(ExecutorKind.DOCKER) if settings is not None else None
    remote = None
    if options.remote_cache:
        from .cache.remote import RemoteCache

        remote = RemoteCache(options.remote_cache, store, readonly=options.remote_readonly)
    unknown = sorted(set(options.force) - set(graph.recipes))
    if unknown:
        raise JailbakeError(
            f"--force: {', '.join(unknown)} is not a recipe of this build; "
            f"its recipes: {', '.join(graph.order)}"
        )
    builder = RecipeBuilder(
        graph,
        store,
        fetcher,
        executor,
        host=host,
        local=local,
        remote=remote,
        force=frozenset(options.force),
        keep_failed=options.keep_failed,
    )
    for name in graph.order:
        if (ws := builder.workspace_of(graph.recipes[name])) is not None:
            log.info("%s: sources from the workspace %s", name, ws.dir)
    progress = progress or Progress()
    builder.on_step = progress.step_log
    tracer = Tracer()
    builder.on_span = fetcher.on_span = tracer.span
    store.remember_executor(graph.layer.files, options.executor.value)
    if options.offline:
        missing = fetcher.missing_offline(graph.recipes[n] for n in graph.order)
        if missing:
            lines = "; ".join(m.describe() for m in missing)
            raise FetchError(
                f"--offline: {len(missing)} source(s) are neither cached nor in a mirror: {lines}"
            )
    containers = [
        builder.executor_for(graph.recipes[n])
        for n in graph.order
        if builder.builder_identity(graph.recipes[n])["executor"] == "docker"
    ]
    for used in dict.fromkeys(containers):
        if isinstance(used, DockerExecutor):
            _ = used.client  # fail early, with how to start an engine
    if any(builder.builder_identity(graph.recipes[n])["executor"] == "host" for n in graph.order):
        host.start_probe()  # on another core: the first host step needs its answer
    to_build: frozenset[str] = frozenset()
    estimates: dict[str, float] = {}
    if progress.live:  # an ETA needs what the cache holds and what earlier builds took
        from .query import list_graph

        try:
            cached = {e.name for e in list_graph(graph, builder) if e.cached}
        except JailbakeError:  # the build reports it, for its recipe, in its turn
            cached = set()
        to_build = frozenset(n for n in graph.order if n not in cached or n in builder.force)
        estimates = {n: d for n in graph.order if (d := store.last_duration(n)) is not None}
    with (
        Sampler(tracer.sample),
        _cancel_on_interrupt(executor, host, *([local] if local else [])),
        store.temp_dir("schedule") as state,
        progress.watching(
            len(graph.order),
            jobs=options.jobs,
            estimates=estimates,
            to_build=to_build,
            depends={n: graph.recipes[n].depends for n in graph.order},
        ),
    ):
        scheduler = Scheduler(
            graph,
            builder,
            _both(progress, tracer),
            state,
            keep_going=options.keep_going,
            failed=_both(progress.failed, tracer.failed),
        )
        outcomes = scheduler.run(options.jobs)
    results = {n: o.result for n, o in outcomes.items()}

    def copied(name: str, start: float, size: int) -> None:
        tracer.span("artifact", name, start, bytes=size)

    artifacts = publish(graph, store, results, options.artifacts_dir, on_copy=copied)
    check_expected(graph, artifacts)
    manifest, content = write_manifest(graph, results, artifacts, options.artifacts_dir, store)
    artifacts.append(manifest)
    spdx.write(options.artifacts_dir, content, store.sha1_of)
    # The artifacts' stat, taken as soon as this build has written them.
    replay.record(options, graph, builder, results, artifacts)
    _write_trace_and_report(tracer, graph, store, results, options.artifacts_dir)
    built = [n for n in graph.order if outcomes[n].status is Status.BUILT]
    reused = [n for n in graph.order if outcomes[n].status is Status.REUSED]
    downloaded = [n for n in graph.order if outcomes[n].status is Status.DOWNLOADED]
    return BuildReport(built, reused, artifacts, time.monotonic() - start, downloaded)
