"""Layer files are kas files: kas validates and merges them; jailbake reads its settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SDE, Project, copy_checkout, jailbake
from jailbake.core.errors import RecipeError
from jailbake.model.graph import build_graph
from jailbake.model.layer import load_layers
from jailbake.model.scan import split_config


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


def test_a_remote_repo_needs_a_pin(project: Project) -> None:
    path = project.layer(
        "bad.yml", {"header": {"version": 14}, "repos": {"x": {"url": "https://example.org/x.git"}}}
    )
    with pytest.raises(RecipeError, match=r"repos\.x: a remote repository needs a commit"):
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


def test_a_key_given_twice_in_a_layer_file_is_an_error(project: Project) -> None:
    # kas's loader would keep the second env and silently lose SOURCE_DATE_EPOCH.
    (project.root / "twice.yml").write_text(
        "header:\n  version: 14\nrepos:\n  this:\n    layers:\n      recipes:\n"
        "env:\n  SOURCE_DATE_EPOCH: '1700000000'\nenv:\n  COLOR: red\n"
    )
    (project.root / "top.yml").write_text("header:\n  version: 14\n  includes: [twice.yml]\n")
    for top in ("twice.yml", "top.yml"):
        with pytest.raises(RecipeError) as exc:
            load_layers([project.root / top])
        assert str(exc.value).startswith(f"{project.root.resolve() / 'twice.yml'}:9: ")
        assert "key 'env' appears twice (first at line 7)" in str(exc.value)


def test_an_include_loop_is_one_line(project: Project) -> None:
    (project.root / "a.yml").write_text("header:\n  version: 14\n  includes: [b.yml]\n")
    (project.root / "b.yml").write_text("header:\n  version: 14\n  includes: [c.yml]\n")
    (project.root / "c.yml").write_text("header:\n  version: 14\n  includes: [a.yml]\n")
    result = project.run("list", "a.yml", "--executor", "host")
    assert result.rc == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    root = project.root.resolve()
    assert lines[0] == (
        f"jailbake: error: {root / 'c.yml'}: header.includes: include loop: "
        f"{root / 'a.yml'} -> {root / 'b.yml'} -> {root / 'c.yml'} -> {root / 'a.yml'}"
    )


def release_copy(dest: Path) -> Path:
    """The checkout's files as a release tarball has them (what `git archive` exports)."""
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest


def test_a_copy_without_git_finds_its_top_directory(tmp_path: Path) -> None:
    """A release tarball or `git archive` of the checkout has no .git: layer paths start
    at the directory holding pyproject.toml (or a jailbake.yml) above the layer file."""
    copy = release_copy(tmp_path / "jailbake-1.0")
    assert not (copy / ".git").exists() and (copy / "pyproject.toml").is_file()
    for config, recipe in [
        ("examples/hello/hello.yml", "hello"),
        ("layers/rpi4-jailhouse.yml", "rpi4-boot"),
        ("layers/qemu-arm64-jailhouse.yml", "jailhouse-qemu-arm64"),
    ]:
        result = jailbake("list", config, "--json", "--cache-dir", str(tmp_path / "c"), cwd=copy)
        assert result.rc == 0, result.stderr
        assert recipe in {e["name"] for e in json.loads(result.stdout)}
    # From another directory, by absolute path, as well.
    result = jailbake("list", str(copy / "layers/rpi4-jailhouse.yml"), "--cache-dir",
                      str(tmp_path / "c"), cwd=tmp_path)  # fmt: skip
    assert result.rc == 0, result.stderr


def bsp_project(project: Path) -> Path:
    """A project directory that is no git checkout, its top marked by a jailbake.yml: a
    layer file including another by its project-relative path, and one recipe."""
    (project / "layers").mkdir(parents=True)
    (project / "recipes").mkdir()
    (project / "jailbake.yml").write_text("# the top of this project's layer paths\n")
    (project / "layers/board.yml").write_text(
        "header:\n  version: 14\n  includes:\n    - layers/common.yml\n"
        "repos:\n  bsp:\n    layers:\n      recipes:\n"
    )
    (project / "layers/common.yml").write_text(
        f"header:\n  version: 14\nenv:\n  SOURCE_DATE_EPOCH: '{SDE}'\n"
    )
    (project / "recipes/app.yml").write_text(
        'name: app\nversion: \'1\'\nscript: mkdir -p "$OUT"; echo hi > "$OUT/app.txt"\n'
        "outputs: [{path: app.txt, publish: true}]\n"
    )
    return project


def test_a_project_directory_is_marked_by_jailbake_yml(tmp_path: Path) -> None:
    project = bsp_project(tmp_path / "bsp")
    result = jailbake("build", "layers/board.yml", "--executor", "host", "--cache-dir",
                      str(tmp_path / "c"), "--json", cwd=project)  # fmt: skip
    assert result.rc == 0, result.stderr
    assert result.report["built"] == ["app"]

    # Without the marker, one line says where layer paths started and what to add.
    (project / "jailbake.yml").unlink()
    result = jailbake("build", "layers/board.yml", "--executor", "host", "--cache-dir",
                      str(tmp_path / "c"), cwd=project)  # fmt: skip
    assert result.rc == 2
    (line,) = result.stderr.strip().splitlines()
    assert "layers/layers/common.yml" in line and "no jailbake.yml or pyproject.toml" in line


def test_dump_is_the_flattened_configuration_kas_reads_again(tmp_path: Path) -> None:
    result = jailbake("dump", "layers/qemu-arm64-jailhouse.yml", cwd=ROOT)
    assert result.rc == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert "includes" not in data["header"]
    assert data["env"]["SOURCE_DATE_EPOCH"] == "1580515200"  # from the included file
    assert data["env"]["KERNEL_DEFCONFIG"] == "arm64_defconfig_5.4"
    assert list(data["repos"]["jailbake"]["layers"]) == ["recipes", "recipes/qemu-arm64"]
    lines = result.stdout.splitlines()
    assert "#   linux 5.4.17: recipes/qemu-arm64/linux.yml (overrides recipes/linux.yml)" in lines
    # Loaded again, the dump gives the same configuration and recipes.
    checkout = copy_checkout(tmp_path / "jailbake")
    (checkout / "layers" / "flat.yml").write_text(result.stdout)
    again = jailbake("dump", "layers/flat.yml", cwd=checkout)
    assert again.rc == 0, again.stderr
    assert again.stdout == result.stdout


def test_an_installed_wheel_builds_a_project_directory(tmp_path: Path) -> None:
    """jailbake installed from its wheel (not this checkout) finds a project's layer
    paths from its jailbake.yml, in a directory that is no git checkout."""
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    source = release_copy(tmp_path / "source")  # setuptools writes build/ where it builds
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = wheels.glob("jailbake-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
         str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    project = bsp_project(tmp_path / "bsp")
    env = dict(os.environ, PYTHONPATH=str(site))  # the wheel's files, not ./src
    where = subprocess.run(
        [sys.executable, "-c", "import jailbake; print(jailbake.__file__)"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(site))
    run = subprocess.run(
        [sys.executable, "-m", "jailbake.cli", "build", "layers/board.yml", "--executor",
         "host", "--cache-dir", str(tmp_path / "c")],
        cwd=project, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (project / "artifacts/app.txt").read_text() == "hi\n"
