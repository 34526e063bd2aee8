"""The recipe graph of a layer configuration: lookup, validation, order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import CycleError, RecipeError
from .layer import Layer
from .recipe import HOST_BUILDER, Recipe, load_recipe


@dataclass(frozen=True)
class Graph:
    """Recipes reachable from the targets, in dependency order."""

    layer: Layer
    recipes: dict[str, Recipe]
    order: tuple[str, ...]
    targets: tuple[str, ...]
    overridden: tuple[tuple[str, Path], ...] = ()

    def builder_dir(self, recipe: Recipe) -> Path | None:
        if recipe.builder == HOST_BUILDER:
            return None
        for docker_dir in reversed(self.layer.docker_dirs):
            if (docker_dir / recipe.builder / "Dockerfile").is_file():
                return docker_dir / recipe.builder
        raise RecipeError(
            recipe.where("builder"),
            "builder",
            f"expected 'host' or a directory docker/{recipe.builder}/ with a Dockerfile",
        )

    def dependents(self, name: str) -> list[str]:
        return [n for n in self.order if name in self.recipes[n].depends]


def collect_recipes(layer: Layer) -> tuple[dict[str, Recipe], list[tuple[str, Path]]]:
    """All recipes of the layer's recipe directories; later directories override."""
    recipes: dict[str, Recipe] = {}
    overridden: list[tuple[str, Path]] = []
    for layer_dir in layer.recipe_dirs:
        seen_here: dict[str, Path] = {}
        for file in sorted(layer_dir.glob("*.yml")) + sorted(layer_dir.glob("*.yaml")):
            recipe = load_recipe(file, layer_dir)
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
    return recipes, overridden


def _find_cycle(recipes: dict[str, Recipe], start: str) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dep in recipes[name].depends:
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[name] = 2
        return None

    return visit(start)


def build_graph(layer: Layer, targets: Iterable[str] = ()) -> Graph:
    """Load the layer's recipes and validate the part of the graph the targets need."""
    recipes, overridden = collect_recipes(layer)
    wanted = tuple(targets) or layer.targets or tuple(sorted(recipes))
    for t in wanted:
        if t not in recipes:
            raise RecipeError(
                layer.files[-1],
                "target",
                f"unknown recipe {t!r}; known: {', '.join(sorted(recipes)) or 'none'}",
            )
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
    for name in sorted(needed):
        cycle = _find_cycle(needed, name)
        if cycle:
            raise CycleError(needed[cycle[0]].where("depends"), cycle)
    order: list[str] = []
    placed: set[str] = set()

    def place(name: str) -> None:
        if name in placed:
            return
        for dep in sorted(needed[name].depends):
            place(dep)
        placed.add(name)
        order.append(name)

    for name in sorted(needed):
        place(name)
    graph = Graph(layer, needed, tuple(order), tuple(wanted), tuple(overridden))
    for name in order:
        graph.builder_dir(needed[name])
    return graph
