"""The context of one command: the store, the layer repositories, the graph, the
fetcher, the executors and the recipe builder, each made once, from typed settings.

Every command makes its work from one Context; library code never sees argparse. A
command that only reads layers (list, explain, graph, dump, log, clean, run, publish)
asks for a reading context: it runs no network command, and takes remote layer
repositories from the cache alone.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..cache.history import History
from ..cache.store import Store, default_cache_dir
from ..core.paths import resolve_mirror
from ..executors.step import Executor, ExecutorKind
from ..model.graph import Graph, build_graph
from ..model.layer import Layer, load_layers
from ..sources.fetch import Fetcher
from ..sources.layerrepos import LayerRepos

if TYPE_CHECKING:  # the remote executor's code loads only for --executor remote
    from ..cache.remote import RemoteCache
    from ..executors.remote.executor import RemoteSettings
    from .action import RecipeBuilder
    from .options import BuildOptions
    from .plan import Planner

READING = (
    "reading a layer fetches nothing; 'jailbake fetch' (or build) puts it in the cache "
    "(--cache-dir, else JAILBAKE_CACHE_DIR, else ~/.cache/jailbake)"
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where a command keeps and finds things."""

    cache_dir: Path = dataclasses.field(default_factory=default_cache_dir)
    mirrors: tuple[str, ...] = ()  # directories or URLs, as given (relative to cwd)
    offline: bool = False  # sources and layer repositories from the cache and mirrors
    reading: bool = False  # only reads layers: no network command, nothing fetched

    @classmethod
    def of_build(cls, options: BuildOptions) -> Settings:
        return cls(options.cache_dir, options.mirrors, options.offline)


def make_executor(kind: ExecutorKind, remote: RemoteSettings | None = None) -> Executor:
    """A new executor of that kind (docker's engine is connected on first use)."""
    if kind is ExecutorKind.HOST:
        from ..executors.host import HostExecutor

        return HostExecutor()
    if kind is ExecutorKind.REMOTE:
        assert remote is not None
        from ..executors.remote.executor import RemoteExecutor

        return RemoteExecutor(remote)
    from ..executors import engine
    from ..executors.docker import DockerExecutor

    return DockerExecutor(engine.connect)


def remote_settings(graph: Graph, url: str | None, instance: str | None) -> RemoteSettings:
    """The remote executor's service and platform, from the command line and the layer."""
    from ..executors.remote.executor import RemoteSettings

    return RemoteSettings.from_layer(
        graph.layer.variables(), url, instance, str(graph.layer.files[-1])
    )


class Context:
    """What one command's work is made from; each part is made on first use."""

    def __init__(self, settings: Settings, cwd: Path | None = None) -> None:
        self.settings = settings
        self.cwd = cwd or Path.cwd()

    @functools.cached_property
    def store(self) -> Store:
        return Store(self.settings.cache_dir)

    @functools.cached_property
    def history(self) -> History:
        """What earlier builds with this cache left: last keys, executors, logs."""
        return History(self.store)

    @functools.cached_property
    def mirrors(self) -> tuple[str, ...]:
        """The command's mirrors, resolved (the layer's own come with its graph)."""
        return tuple(resolve_mirror(m, self.cwd) for m in self.settings.mirrors)

    @functools.cached_property
    def repos(self) -> LayerRepos:
        """What checks out the remote layer repositories the layers name: into the
        cache, from the mirrors, from the network unless offline or reading."""
        if self.settings.reading:
            return LayerRepos(
                Fetcher(self.store, self.mirrors, offline=True, offline_reason=READING)
            )
        return LayerRepos(Fetcher(self.store, self.mirrors, offline=self.settings.offline))

    def layers(self, configs: Sequence[Path], memo_dir: Path | None = None) -> Layer:
        return load_layers(configs, memo_dir=memo_dir, repos=self.repos)

    def graph(
        self, configs: Sequence[Path], targets: Sequence[str] = (), *, memo: bool = False
    ) -> Graph:
        """The graph of the layer files; memo: keep parsed recipes in the cache."""
        memo_dir = self.settings.cache_dir / "layers" if memo else None
        return build_graph(self.layers(configs, memo_dir), targets, memo_dir)

    def fetcher(self, graph: Graph | None = None, *, offline: bool | None = None) -> Fetcher:
        """The sources' fetcher: the command's mirrors, then the layer's."""
        mirrors = self.mirrors + (graph.layer.mirrors if graph is not None else ())
        if self.settings.reading:
            return Fetcher(self.store, mirrors, offline=True, offline_reason=READING)
        offline = self.settings.offline if offline is None else offline
        return Fetcher(self.store, mirrors, offline=offline)

    def planner(
        self,
        graph: Graph,
        kind: ExecutorKind,
        *,
        remote_executor: str | None = None,
        remote_instance: str | None = None,
    ) -> Planner:
        """The plan of graph's recipes with steps on kind's executor; host recipes run
        on this machine, and with a remote executor, steps it cannot take run in
        containers here. No engine or service is contacted until a step runs."""
        from ..executors.host import HostExecutor
        from .plan import Planner

        host = HostExecutor()
        settings = None
        if kind is ExecutorKind.REMOTE:
            settings = remote_settings(graph, remote_executor, remote_instance)
        executor = host if kind is ExecutorKind.HOST else make_executor(kind, settings)
        local = make_executor(ExecutorKind.DOCKER) if settings is not None else None
        return Planner(graph, self.store, executor, host=host, local=local, history=self.history)

    def builder(
        self,
        graph: Graph,
        kind: ExecutorKind,
        *,
        remote_executor: str | None = None,
        remote_instance: str | None = None,
        fetcher: Fetcher | None = None,
        remote: RemoteCache | None = None,
        force: frozenset[str] = frozenset(),
        keep_failed: bool = False,
    ) -> RecipeBuilder:
        """A builder of the planner's recipes (see planner), fetching with fetcher (by
        default the command's)."""
        from .action import RecipeBuilder

        plan = self.planner(
            graph, kind, remote_executor=remote_executor, remote_instance=remote_instance
        )
        return RecipeBuilder(
            plan,
            fetcher or self.fetcher(graph),
            remote=remote,
            force=force,
            keep_failed=keep_failed,
        )
