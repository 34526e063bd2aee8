"""Layer files are kas files: kas validates and merges them; jailbake reads its settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import SDE, Project
from jailbake.errors import RecipeError
from jailbake.graph import build_graph
from jailbake.layer import load_layers, split_config


def test_split_config() -> None:
    assert split_config("a.yml:b/c.yml") == [Path("a.yml"), Path("b/c.yml")]


def test_defaults_and_settings(project: Project) -> None:
    layer = load_layers([project.root / "layer.yml"], environ={})
    assert layer.top_dir == project.root.resolve()
    assert layer.recipe_dirs == ((project.root / "recipes").resolve(),)
    assert layer.source_date_epoch == SDE
    assert layer.targets == ()


def test_includes_and_later_files_override(project: Project) -> None:
    (project.root / "extra").mkdir()
    project.layer(
        "base.yml",
        {
            "header": {"version": 14},
            "repos": {"this": {"layers": {"recipes": None}}},
            "env": {"SOURCE_DATE_EPOCH": "1", "COLOR": "red"},
            "target": ["a"],
        },
    )
    project.layer(
        "top.yml",
        {
            "header": {"version": 14, "includes": ["base.yml"]},
            "env": {"COLOR": "blue"},
        },
    )
    project.layer(
        "user.yml",
        {
            "header": {"version": 14},
            "repos": {"mine": {"layers": {"extra": None}}},
            "machine": "rpi4",
            "target": "b",
        },
    )
    layer = load_layers([project.root / "top.yml", project.root / "user.yml"], environ={})
    assert layer.variables() == {"SOURCE_DATE_EPOCH": "1", "COLOR": "blue"}
    assert layer.targets == ("b",)
    assert layer.machine == "rpi4"
    assert [d.name for d in layer.recipe_dirs] == ["recipes", "extra"]


def test_environment_overrides_env_defaults_like_kas(project: Project) -> None:
    layer = load_layers([project.root / "layer.yml"], environ={"SOURCE_DATE_EPOCH": "42"})
    assert layer.source_date_epoch == 42


def test_later_layer_overrides_a_recipe(project: Project) -> None:
    project.recipe("tool", version="1.0")
    (project.root / "mine").mkdir()
    (project.root / "mine" / "tool.yml").write_text(
        "name: tool\nversion: '2.0'\nscript: 'true'\noutputs: [x]\n"
    )
    project.layer(
        "user.yml", {"header": {"version": 14}, "repos": {"mine": {"layers": {"mine": None}}}}
    )
    graph = build_graph(load_layers([project.root / "layer.yml", project.root / "user.yml"]))
    assert graph.recipes["tool"].version == "2.0"
    assert graph.overridden[0][0] == "tool"


def test_unknown_key_is_one_line_from_kas_schema(project: Project) -> None:
    path = project.layer("bad.yml", {"header": {"version": 14}, "recipes": ["x"]})
    with pytest.raises(RecipeError) as exc:
        load_layers([path])
    assert str(exc.value).startswith(f"{path}: recipes: unknown key; expected one of:")
    assert "\n" not in str(exc.value)


def test_wrong_type_from_kas_schema(project: Project) -> None:
    path = project.layer("bad.yml", {"header": {"version": 14}, "env": {"A": ["list"]}})
    with pytest.raises(RecipeError, match=r"bad\.yml: env\.A: not a valid kas configuration"):
        load_layers([path])


def test_bad_source_date_epoch(project: Project) -> None:
    with pytest.raises(RecipeError, match=r"env\.SOURCE_DATE_EPOCH: expected a number"):
        load_layers([project.root / "layer.yml"], environ={"SOURCE_DATE_EPOCH": "yesterday"})


def test_missing_layer_dir(project: Project) -> None:
    path = project.layer(
        "bad.yml", {"header": {"version": 14}, "repos": {"x": {"layers": {"nowhere": None}}}}
    )
    with pytest.raises(RecipeError, match=r"repos\.x\.layers\.nowhere: expected a directory"):
        load_layers([path])


def test_remote_repos_are_refused(project: Project) -> None:
    path = project.layer(
        "bad.yml", {"header": {"version": 14}, "repos": {"x": {"url": "https://example.org/x.git"}}}
    )
    with pytest.raises(RecipeError, match=r"repos\.x\.url: remote layer repositories"):
        load_layers([path])


def test_kas_lock_file_is_merged(project: Project) -> None:
    # kas injects <file>.lock.yml after <file>; its overrides pin repositories.
    (project.root / "layer.lock.yml").write_text(
        "header:\n  version: 14\noverrides:\n  repos:\n    this:\n      commit: " + "c" * 40 + "\n"
    )
    layer = load_layers([project.root / "layer.yml"])
    assert layer.recipe_dirs == ((project.root / "recipes").resolve(),)


def test_missing_layer_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="layer file not found"):
        load_layers([tmp_path / "nope.yml"])
