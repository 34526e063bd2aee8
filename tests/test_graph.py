"""The recipe graph: unknown dependencies, cycles, variables and builders fail at load."""

from __future__ import annotations

import pytest

from conftest import Project
from jailbake.core.errors import CycleError, JailbakeError, RecipeError
from jailbake.model.graph import build_graph
from jailbake.model.layer import load_layers


def graph_of(project: Project, *targets: str):  # type: ignore[no-untyped-def]
    return build_graph(load_layers([project.root / "layer.yml"]), targets)


def test_order_puts_dependencies_first(project: Project) -> None:
    project.recipe("c", depends=["a", "b"])
    project.recipe("b", depends=["a"])
    project.recipe("a")
    project.recipe("unrelated")
    g = graph_of(project, "c")
    assert g.order == ("a", "b", "c")


def test_cycle_is_printed(project: Project) -> None:
    project.recipe("a", depends=["b"])
    project.recipe("b", depends=["c"])
    project.recipe("c", depends=["a"])
    with pytest.raises(CycleError) as exc:
        graph_of(project, "a")
    assert "dependency cycle: a -> b -> c -> a" in str(exc.value)
    assert "recipes/a.yml" in str(exc.value)


def test_cycle_via_cli_exits_2_with_one_line(project: Project) -> None:
    project.recipe("a", depends=["a"])
    result = project.run(
        "build", "layer.yml", "--executor", "host", "--cache-dir", str(project.cache)
    )
    assert result.rc == 2
    assert result.stderr.strip().splitlines() == [
        f"jailbake: error: {project.root}/recipes/a.yml:3: depends: dependency cycle: a -> a"
    ]


def test_unknown_dependency(project: Project) -> None:
    project.recipe("a", depends=["ghost"])
    with pytest.raises(RecipeError, match=r"a\.yml:\d+: depends\[0\]: unknown recipe 'ghost'"):
        graph_of(project)


def test_unknown_target(project: Project) -> None:
    project.recipe("a")
    # Asked for on the command line: the layer file is not at fault.
    with pytest.raises(JailbakeError, match=r"^unknown recipe 'zz'; the layers have: a$"):
        graph_of(project, "zz")
    # Named by the layer: its file and field are.
    project.layer(
        "layer.yml",
        {
            "header": {"version": 14},
            "repos": {"this": {"layers": {"recipes": None}}},
            "target": ["zz"],
        },
    )
    with pytest.raises(RecipeError, match=r"layer\.yml: target: unknown recipe 'zz'; known: a"):
        graph_of(project)


def test_variable_must_be_in_layer_env(project: Project) -> None:
    project.recipe("a", variables=["MACHINE_NAME"])
    with pytest.raises(RecipeError, match=r"variables\[0\]: variable 'MACHINE_NAME' is not set"):
        graph_of(project)


def test_builder_must_exist(project: Project) -> None:
    project.recipe("a", builder="nosuch")
    with pytest.raises(
        RecipeError,
        match=r"builder: expected 'host' or a directory "
        r"docker/nosuch/",
    ):
        graph_of(project)


def test_duplicate_recipe_names_in_one_layer(project: Project) -> None:
    project.recipe("a")
    (project.root / "recipes" / "a-again.yml").write_text(
        "name: a\nversion: '1'\nscript: 'true'\noutputs: [x]\n"
    )
    with pytest.raises(RecipeError, match="also defined in"):
        graph_of(project)
