"""The recipe graph of a layer configuration: lookup, validation, order."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import CycleError, JailbakeError, RecipeError
from ..core.yamlfile import ParseMemo
from .layer import Layer
from .recipe import HOST_BUILDER, NO_BUILDER, Recipe, load_recipe
from .scan import recipe_names


@dataclass(frozen=True)
class Graph:
    """Recipes reachable from the targets, in dependency order."""

    layer: Layer
    recipes: dict[str, Recipe]
    order: tuple[str, ...]
    targets: tuple[str, ...]
    overridden: tuple[tuple[str, Path], ...] = ()
    # Every recipe file read, with the sha256 of its bytes as read, and the layer files
    # every recipe read names (Recipe.layer_refs), its dependencies or not (see replay).
    recipe_files: tuple[tuple[str, str], ...] = ()
    layer_refs: tuple[tuple[str, str], ...] = ()

    def builder_dir(self, recipe: Recipe) -> Path | None:
        if recipe.builder in (HOST_BUILDER, NO_BUILDER):
            return None
        for docker_dir in reversed(self.layer.docker_dirs):
            if (docker_dir / recipe.builder / "Dockerfile").is_file():
                return docker_dir / recipe.builder
        raise RecipeError(
            recipe.where("builder"),
            "builder",
            f"expected 'host' or a directory docker/{recipe.builder}/ with a Dockerfile",
        )


def _check_artifact_names(recipes: dict[str, Recipe], order: Iterable[str]) -> None:
    claimed: dict[str, str] = {}
    for name in order:
        recipe = recipes[name]
        for output in recipe.outputs:
            if output.publish is None:
                continue
            other = claimed.setdefault(output.publish, name)
            if other != name:
                raise RecipeError(
                    recipe.where("outputs"),
                    "outputs",
                    f"artifact {output.publish!r} is also published by {other}",
                )


def collect_recipes(
    layer: Layer, memo_dir: Path | None = None
) -> tuple[dict[str, Recipe], list[tuple[str, Path]], dict[Path, str], list[tuple[str, str]]]:
    """All recipes of the layer's recipe directories; later directories override. With
    memo_dir, recipe files parsed before are taken from there (see ParseMemo). Also the
    sha256 of each file read, and the layer files all of them name."""
    memo = ParseMemo(memo_dir / "recipes.json" if memo_dir else None)
    recipes: dict[str, Recipe] = {}
    overridden: list[tuple[str, Path]] = []
    refs: list[tuple[str, str]] = []
    for layer_dir in layer.recipe_dirs:
        seen_here: dict[str, Path] = {}
        for file in (layer_dir / name for name in recipe_names(layer_dir)):
            recipe = load_recipe(file, layer_dir, memo)
            refs += recipe.layer_refs
            if recipe.name in seen_here:
                raise RecipeError(
                    recipe.where("name"),
                    "name",
                    f"recipe {recipe.name!r} is also defined in {seen_here[recipe.name]}",
                )
            seen_here[recipe.name] = file
            if recipe.name in recipes:
                overridden.append((recipe.name, recipes[recipe.name].file))
            recipes[recipe.name] = recipe
    memo.save()
    return recipes, overridden, memo.digests, refs


def _find_cycle(recipes: dict[str, Recipe]) -> list[str] | None:
    """The first dependency cycle of an iterative depth-first walk, as [a, b, ..., a]."""
    done: set[str] = set()
    for root in sorted(recipes):
        if root in done:
            continue
        path: list[str] = [root]
        on_path = {root}
        pending = [iter(recipes[root].depends)]
        while pending:
            dep = next(pending[-1], None)
            if dep is None:
                pending.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
            elif dep in on_path:
                return [*path[path.index(dep) :], dep]
            elif dep not in done:
                path.append(dep)
                on_path.add(dep)
                pending.append(iter(recipes[dep].depends))
    return None


def _order(recipes: dict[str, Recipe]) -> list[str]:
    """Dependencies first; ties broken by name, so the order is stable."""
    waiting = {name: len(r.depends) for name, r in recipes.items()}
    users: dict[str, list[str]] = {name: [] for name in recipes}
    for name, r in recipes.items():
        for dep in r.depends:
            users[dep].append(name)
    ready = [name for name, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for user in users[name]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    return order


def build_graph(layer: Layer, targets: Iterable[str] = (), memo_dir: Path | None = None) -> Graph:
    """Load the layer's recipes and validate the part of the graph the targets need."""
    recipes, overridden, digests, refs = collect_recipes(layer, memo_dir)
    wanted = tuple(targets) or layer.targets or tuple(sorted(recipes))
    known = ", ".join(sorted(recipes)) or "none"
    for t in wanted:
        if t in recipes:
            continue
        if targets:  # asked for on the command line, not by the layer
            raise JailbakeError(f"unknown recipe {t!r}; the layers have: {known}")
        raise RecipeError(layer.files[-1], "target", f"unknown recipe {t!r}; known: {known}")
    variables = layer.variables()
    needed: dict[str, Recipe] = {}
    todo = list(wanted)
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        recipe = recipes[name]
        needed[name] = recipe
        for i, dep in enumerate(recipe.depends):
            if dep not in recipes:
                raise RecipeError(
                    recipe.where("depends"), f"depends[{i}]", f"unknown recipe {dep!r}"
                )
            todo.append(dep)
        for i, var in enumerate(recipe.variables):
            if var not in variables:
                raise RecipeError(
                    recipe.where("variables"),
                    f"variables[{i}]",
                    f"variable {var!r} is not set in the layer's env",
                )
    cycle = _find_cycle(needed)
    if cycle:
        raise CycleError(needed[cycle[0]].where("depends"), cycle)
    order = _order(needed)
    _check_artifact_names(needed, order)
    graph = Graph(
        layer,
        needed,
        tuple(order),
        tuple(wanted),
        tuple(overridden),
        tuple((str(f), d) for f, d in digests.items()),
        tuple(dict.fromkeys(refs)),
    )
    for name in order:
        graph.builder_dir(needed[name])
    return graph
