"""From a command's arguments to its work: the layer files it names, and the one
Context (jailbake.bake.context) its store, graph, fetcher and builder come from."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import JailbakeError

if TYPE_CHECKING:
    from ..bake.action import RecipeBuilder
    from ..bake.context import Context
    from ..bake.plan import Planner
    from ..model.graph import Graph
    from ..sources.fetch import Fetcher
    from ..sources.layerrepos import LayerRepos

DEFAULT_CONFIGS = ("layers/rpi4-jailhouse.yml",)


def default_config() -> str:
    for candidate in DEFAULT_CONFIGS:
        if Path(candidate).is_file():
            return candidate
    raise JailbakeError(
        f"no CONFIG given and none of {', '.join(DEFAULT_CONFIGS)} exists "
        "here; give a layer file like layers/x.yml[:more.yml]"
    )


def configs(spec: str | None) -> tuple[Path, ...]:
    from ..model.scan import split_config

    return tuple(split_config(spec or default_config()))


def looks_like_config(word: str) -> bool:
    return ":" in word or word.endswith((".yml", ".yaml", ".json")) or Path(word).is_file()


def split_config(
    args: list[str], usage: str, *, most: int | None = 2
) -> tuple[str | None, list[str]]:
    """[CONFIG] WORD...: with a fixed number of words, the first of a full set is the
    configuration; otherwise the first is, if it looks like one."""
    if most is not None:
        if not 0 < len(args) <= most:
            raise JailbakeError(f"expected {usage}")
        return (args[0], args[1:]) if len(args) == most else (None, args)
    if args and looks_like_config(args[0]):
        return args[0], args[1:]
    return None, args


def context_of(args: argparse.Namespace, *, reading: bool) -> Context:
    """The command's context, from the options it has: --cache-dir, --mirror,
    --offline. reading: a command that only reads the layers (list, explain, graph,
    dump, log, clean, publish) runs no network command."""
    from ..bake.context import Context, Settings
    from ..cache.store import default_cache_dir

    settings = Settings(
        cache_dir=getattr(args, "cache_dir", None) or default_cache_dir(),
        mirrors=tuple(getattr(args, "mirror", None) or ()),
        offline=bool(getattr(args, "offline", False)),
        reading=reading,
    )
    return Context(settings)


def repos_of(args: argparse.Namespace, *, reading: bool) -> LayerRepos:
    return context_of(args, reading=reading).repos


def graph_of(
    args: argparse.Namespace,
    config: str | None,
    targets: Sequence[str] = (),
    *,
    reading: bool = False,
) -> Graph:
    """The graph of the layer files; remote layer repositories go into the command's
    cache (from its mirrors, not the network, with --offline)."""
    return context_of(args, reading=reading).graph(configs(config), tuple(targets))


def fetcher_of(args: argparse.Namespace, config: str | None) -> tuple[Graph, Fetcher]:
    """The graph of the command's targets, and the fetcher of its sources."""
    context = context_of(args, reading=False)
    graph = context.graph(configs(config), tuple(args.target))
    return graph, context.fetcher(graph, offline=False)


def plan_of(
    args: argparse.Namespace,
    config: str | None,
    targets: Sequence[str] = (),
    *,
    keys: bool = True,
    reading: bool = True,
) -> tuple[Graph, Planner]:
    """The graph and its plan, for questions about it; keys: the command shows keys (and
    says which executor they are for when no build told); reading: see context_of."""
    return _planned(context_of(args, reading=reading), args, config, targets, keys=keys)


def builder_of(
    args: argparse.Namespace,
    config: str | None,
    targets: Sequence[str] = (),
    *,
    keys: bool = True,
    reading: bool = True,
    fetching: bool = False,
) -> tuple[Graph, RecipeBuilder]:
    """The graph and a builder of it (see plan_of); fetching: it fetches missing
    sources from the command's and the layer's mirrors and upstream (unless --offline),
    otherwise it fetches nothing."""
    from ..bake.action import RecipeBuilder

    work = context_of(args, reading=reading)
    graph, plan = _planned(work, args, config, targets, keys=keys)
    fetcher = work.fetcher(graph) if fetching else work.fetcher(offline=True)
    return graph, RecipeBuilder(plan, fetcher)


def _planned(
    work: Context, args: argparse.Namespace, config: str | None, targets: Sequence[str],
    *, keys: bool,
) -> tuple[Graph, Planner]:  # fmt: skip
    from ..executors.step import ExecutorKind

    graph = work.graph(configs(config), tuple(targets))
    kind = args.executor or work.history.remembered_executor(graph.layer.files)
    if kind is None:
        kind = ExecutorKind.DOCKER.value
        if keys:
            print(
                "[jailbake] keys for the docker executor: no build of this configuration "
                "in this cache says otherwise (--executor chooses)",
                file=sys.stderr,
            )
    # Keys need only the executor's kind: no engine or service is contacted for list and
    # explain. The service's URL names where steps run in list; keys do not need it.
    url = args.remote_executor or graph.layer.variables().get("JAILBAKE_REMOTE_EXECUTOR")
    plan = work.planner(
        graph,
        ExecutorKind(kind),
        remote_executor=url or "grpc://not-given:1",
        remote_instance=args.remote_instance,
    )
    return graph, plan


def recipe_of(graph: Graph, name: str, command: str) -> None:
    if name not in graph.recipes:
        raise JailbakeError(
            f"{command}: unknown recipe {name!r}; known: {', '.join(sorted(graph.recipes))}"
        )
