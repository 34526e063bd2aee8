"""A build of the same command with nothing changed is answered from the last one's
record (no kas, no doit, no recipe parsing); anything the outcome rested on that
changed sends it through the whole build again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import SRC, HTTPFiles, Project, Result, make_tarball, sha256
from jailbake.cache.seal import path_stamp


def answered_from_record(project: Project, result: Result) -> bool:
    assert result.rc == 0, result.stderr
    trace = json.loads((project.root / "artifacts" / "build-trace.json").read_text())
    return bool(trace["otherData"].get("from_record"))


def two_recipes(project: Project) -> None:
    project.file("recipes/files/input.txt", "one\n")
    project.recipe(
        "a",
        sources=[{"file": "files/input.txt"}],
        script='mkdir -p "$OUT"; cat input.txt > "$OUT/a.txt"',
        outputs=[{"path": "a.txt", "publish": True}],
    )
    project.recipe(
        "b",
        depends=["a"],
        script='mkdir -p "$OUT/docs"; cat "$DEPS/a/a.txt" > "$OUT/docs/b.txt"',
        outputs=[{"path": "docs", "publish": "docs"}],
    )


def test_a_build_with_nothing_changed_is_answered_from_the_record(project: Project) -> None:
    two_recipes(project)
    first = project.build()
    assert first.report["built"] == ["a", "b"]
    assert not answered_from_record(project, first)

    second = project.build()
    assert answered_from_record(project, second)
    assert second.report["built"] == [] and second.report["reused"] == ["a", "b"]
    assert second.report["artifacts"] == first.report["artifacts"]
    assert "[jailbake] a: reused in 0.0s (" in second.stderr
    assert "2 recipes: 0 built, 2 reused" in second.stderr
    trace = json.loads((project.root / "artifacts" / "build-trace.json").read_text())
    reused = [e["name"] for e in trace["traceEvents"] if e.get("cat") == "reused"]
    assert reused == ["a", "b"]
    assert trace["otherData"]["depends"] == {"a": [], "b": ["a"]}
    page = (project.root / "artifacts" / "build-report.html").read_text()
    assert 'data-name="b"' in page
    # The artifacts are the files the first build left.
    assert (project.root / "artifacts" / "docs" / "b.txt").read_text() == "one\n"


def _same_size_and_time(path: Path, old: str, new: str) -> None:
    st = path.stat()
    path.chmod(0o644)
    path.write_text(path.read_text().replace(old, new))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _ac_file(project: Project, recipe: str) -> Path:
    manifest = json.loads((project.root / "artifacts" / "manifest.json").read_text())
    key = str(next(r["key"] for r in manifest["recipes"] if r["name"] == recipe))
    return project.cache / "ac" / key[:2] / f"{key}.json"


# Each change, and what the whole build that follows it builds.
CHANGES: dict[str, tuple[Callable[[Project], object], list[str]]] = {
    "a file source, same size and time": (
        lambda p: _same_size_and_time(p.root / "recipes/files/input.txt", "one", "two"),
        ["a", "b"],
    ),
    "a recipe, same size and time": (
        lambda p: _same_size_and_time(p.root / "recipes/b.yml", "b.txt", "B.txt"),
        ["b"],
    ),
    "a new recipe file": (lambda p: p.recipe("c"), ["c"]),
    "a published file edited, same size and time": (
        lambda p: _same_size_and_time(p.root / "artifacts/a.txt", "one", "ONE"),
        [],
    ),
    "a file added to a published directory": (
        lambda p: (p.root / "artifacts/docs/extra.txt").write_text("x"),
        [],
    ),
    "manifest.json removed": (lambda p: (p.root / "artifacts/manifest.json").unlink(), []),
    "a result gone from the cache": (lambda p: _ac_file(p, "b").unlink(), ["b"]),
    "an output tree gone from the cache": (
        lambda p: shutil.rmtree(p.cache / "trees"),
        ["a", "b"],
    ),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_whatever_the_build_rested_on_is_checked(project: Project, change: str) -> None:
    two_recipes(project)
    project.build()
    assert answered_from_record(project, project.build())
    act, expected = CHANGES[change]
    act(project)
    after = project.build()
    assert not answered_from_record(project, after), change
    assert sorted(after.report["built"]) == expected, after.stderr
    assert (project.root / "artifacts" / "a.txt").read_text() in ("one\n", "two\n")
    assert not (project.root / "artifacts" / "docs" / "extra.txt").exists()
    assert (project.root / "artifacts" / "manifest.json").is_file()
    assert answered_from_record(project, project.build()), change


def test_verbose_says_what_changed(project: Project) -> None:
    two_recipes(project)
    project.build()
    _same_size_and_time(project.root / "recipes/b.yml", "b.txt", "B.txt")
    argv = ["-v", "build", "layer.yml", "--executor", "host", "--cache-dir", str(project.cache)]
    result = project.run(*argv, check=True)
    assert f"changed since the last one: {project.root / 'recipes' / 'b.yml'}" in result.stderr


def test_a_recipe_file_whose_times_still_match_is_read_all_the_same(project: Project) -> None:
    """A recipe file's stat only tells an edit early: one whose recorded stat matches
    (as if the change and the record's stat had coincided) is still compared by
    content."""
    two_recipes(project)
    project.build()
    recipe = project.root / "recipes" / "b.yml"
    recipe.write_text(recipe.read_text().replace("b.txt", "B.txt"))
    (record,) = (project.cache / "replay").glob("*.json")
    data = json.loads(record.read_text())
    unchanged = project.root / "recipes" / "a.yml"
    assert [str(unchanged), path_stamp(unchanged)] in data["recipe_stats"]  # its format
    stat_key = path_stamp(recipe)
    data["recipe_stats"] = [[f, stat_key if f == str(recipe) else k]
                            for f, k in data["recipe_stats"]]  # fmt: skip
    assert stat_key in [k for _, k in data["recipe_stats"]]
    record.write_text(json.dumps(data))
    after = project.build()
    assert not answered_from_record(project, after)
    assert after.report["built"] == ["b"]


def test_variables_force_and_workspaces_are_not_answered_from_the_record(
    project: Project, tmp_path: Path
) -> None:
    two_recipes(project)
    project.build()
    assert answered_from_record(project, project.build())
    # Any JAILBAKE_* variable, set or changed.
    assert not answered_from_record(project, project.build(env={"JAILBAKE_X": "1"}))
    assert answered_from_record(project, project.build(env={"JAILBAKE_X": "1"}))
    assert not answered_from_record(project, project.build())
    # --force builds again.
    forced = project.build("--force", "a")
    assert not answered_from_record(project, forced)
    assert forced.report["built"] == ["a"]
    # An active workspace: its recipe's sources come from the workspace.
    project.build()
    started = project.run(
        "workspace", "layer.yml", "a", str(tmp_path / "ws"), "--cache-dir", str(project.cache)
    )
    assert started.rc == 0, started.stderr
    (tmp_path / "ws" / "input.txt").write_text("edited\n")
    result = project.build()
    assert not answered_from_record(project, result)
    assert result.report["built"] == ["a", "b"]
    assert (project.root / "artifacts" / "a.txt").read_text() == "edited\n"


def test_an_answer_from_the_record_keeps_the_last_build_of_each_recipe(
    project: Project,
) -> None:
    """`explain` compares with the last build of a recipe, whichever command made it."""
    project.layer(
        "layer.yml",
        {
            "header": {"version": 14},
            "repos": {"this": {"layers": {"recipes": None}}},
            "env": {"SOURCE_DATE_EPOCH": "1700000000", "FLAVOUR": "plain"},
        },
    )
    project.recipe("app", variables=["FLAVOUR"], script='mkdir -p "$OUT"; echo > "$OUT/app.txt"')
    project.build()
    project.build("--artifacts-dir", str(project.root / "other"), env={"FLAVOUR": "fancy"})
    assert answered_from_record(project, project.build())
    explained = project.run("explain", "layer.yml", "app", "--cache-dir", str(project.cache))
    assert "unchanged since the last build" in explained.stdout, explained.stdout


def test_changed_jailbake_code_is_not_answered_from_the_record(
    project: Project, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    shutil.copytree(SRC / "jailbake", src / "jailbake")
    env = {"PYTHONPATH": str(src)}
    project.recipe("a")
    project.build(env=env)
    assert answered_from_record(project, project.build(env=env))
    module = src / "jailbake" / "ui" / "progress.py"  # a module inside a package
    module.write_text(module.read_text() + "\n")
    assert not answered_from_record(project, project.build(env=env))


def test_an_answer_from_the_record_loads_no_build_code(project: Project) -> None:
    project.recipe("a")
    project.recipe("b", depends=["a"])
    project.build()
    argv = [sys.executable, "-X", "importtime", "-m", "jailbake.cli", "build", "layer.yml",
            "--executor", "host", "--cache-dir", str(project.cache)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(SRC))
    run = subprocess.run(argv, cwd=project.root, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines() if "|" in line}
    assert "jailbake.bake.replay" in imported
    heavy = {"kas", "doit", "docker", "yaml", "requests"}
    assert not {m for m in imported if m.split(".")[0] in heavy}
    assert not imported & {"jailbake.bake.build", "jailbake.bake.action", "jailbake.model.layer"}


def test_links_to_layer_files_and_recipe_directories_are_followed(project: Project) -> None:
    """A link moved to another file (a file source) or directory (the recipes) is seen,
    although each target is unchanged."""
    project.file("recipes/files/a.txt", "AAA\n")
    project.file("recipes/files/b.txt", "BBB\n")
    (project.root / "recipes/files/current").symlink_to("a.txt")
    project.recipe(
        "x",
        sources=[{"file": "files/current"}],
        script='mkdir -p "$OUT"; cat *.txt > "$OUT/x.txt"',  # the link's target
        outputs=[{"path": "x.txt", "publish": True}],
    )
    project.build()
    assert answered_from_record(project, project.build())
    (project.root / "recipes/files/current").unlink()
    (project.root / "recipes/files/current").symlink_to("b.txt")
    after = project.build()
    assert not answered_from_record(project, after)
    assert (project.root / "artifacts/x.txt").read_text() == "BBB\n"

    other = project.root / "recipes-other"
    shutil.copytree(project.root / "recipes", other, symlinks=True)
    (other / "files/current").unlink()
    (other / "files/current").symlink_to("a.txt")
    (project.root / "recipes").rename(project.root / "recipes-first")
    (project.root / "recipes").symlink_to("recipes-first")
    project.build()
    assert answered_from_record(project, project.build())
    (project.root / "recipes").unlink()
    (project.root / "recipes").symlink_to("recipes-other")
    assert not answered_from_record(project, project.build())
    assert (project.root / "artifacts/x.txt").read_text() == "AAA\n"


def test_a_recipe_outside_the_targets_is_still_checked(project: Project) -> None:
    """Every recipe of the layers is validated, needed or not: a file source of one
    outside --target that disappears fails the build as it would without a record."""
    project.recipe("a")
    project.file("recipes/files/in.txt", "in\n")
    project.recipe("other", sources=[{"file": "files/in.txt"}])
    project.build("--target", "a")
    assert answered_from_record(project, project.build("--target", "a"))
    (project.root / "recipes/files/in.txt").unlink()
    failed = project.build("--target", "a", check=False)
    assert failed.rc != 0 and "files/in.txt' does not exist" in failed.stderr


def test_a_fifo_named_by_a_recipe_outside_the_targets_is_refused_and_leaves_no_record(
    project: Project,
) -> None:
    """Every recipe of the layer is read, targets or not: a fifo among its sources is
    refused when the recipe is read (reading it would wait forever)."""
    project.recipe("a")
    os.mkfifo(project.root / "recipes" / "pipe")
    project.recipe("other", sources=[{"file": "pipe"}])
    result = project.build("--target", "a", check=False)
    assert result.rc != 0
    assert "other.yml" in result.stderr and "neither a regular file" in result.stderr
    (project.root / "recipes" / "pipe").unlink()
    project.file("recipes/pipe", "now a file\n")
    assert project.build("--target", "a").report["built"] == ["a"]


def test_licence_texts_in_the_cache_are_part_of_the_record(
    project: Project, http: HTTPFiles
) -> None:
    """manifest.json and the SBOM quote the SHA1 of the licence texts the cache holds."""
    licence = b"MIT licence text\n"
    tarball = make_tarball({"LICENSE": licence.decode(), "a.c": "int a;\n"})
    project.recipe(
        "x",
        sources=[{"url": http.add("x.tar.gz", tarball), "sha256": sha256(tarball)}],
        license_files=[{"path": "LICENSE", "sha256": sha256(licence)}],
        script='mkdir -p "$OUT"; cp a.c "$OUT/x.txt"',
        outputs=[{"path": "x.txt", "publish": True}],
    )
    project.build()
    assert answered_from_record(project, project.build())
    assert '"sha1"' in (project.root / "artifacts/manifest.json").read_text()
    blob = project.cache / "cas" / sha256(licence)[:2] / sha256(licence)
    blob.unlink()
    assert not answered_from_record(project, project.build())
    assert '"sha1"' not in (project.root / "artifacts/manifest.json").read_text()


def test_offline_builds_check_their_sources_every_time(project: Project, http: HTTPFiles) -> None:
    data = b"payload\n"
    project.recipe(
        "x",
        sources=[{"url": http.add("f.txt", data), "sha256": sha256(data)}],
        script='mkdir -p "$OUT"; cat f.txt > "$OUT/x.txt"',
    )
    project.build()
    project.build("--offline")
    assert not answered_from_record(project, project.build("--offline"))
    (project.cache / "cas" / sha256(data)[:2] / sha256(data)).unlink()
    failed = project.build("--offline", check=False)
    assert failed.rc != 0 and "neither cached nor in a mirror" in failed.stderr


def test_every_build_option_but_the_marked_ones_names_the_record(tmp_path: Path) -> None:
    """A new field of BuildOptions is part of the record's identity without being
    listed anywhere: a build asked for differently is never answered from the record."""
    import dataclasses

    from jailbake.bake.options import SAME_OUTCOME, BuildOptions
    from jailbake.bake.replay import _identity
    from jailbake.executors.step import ExecutorKind

    base = BuildOptions(configs=(tmp_path / "a.yml",), cache_dir=tmp_path / "c")
    other: dict[str, Any] = {
        "configs": (tmp_path / "b.yml",),
        "targets": ("x",),
        "jobs": 7,
        "executor": ExecutorKind.HOST,
        "cache_dir": tmp_path / "d",
        "artifacts_dir": tmp_path / "art",
        "mirrors": ("/srv/mirror",),
        "force": ("x",),
    }
    fields = dataclasses.fields(BuildOptions)
    for f in fields:
        value = getattr(base, f.name)
        changed: Any
        if f.name in other:
            changed = other[f.name]
        elif isinstance(value, bool):
            changed = not value
        else:  # an optional string (URLs, names)
            changed = "changed"
        varied = dataclasses.replace(base, **{f.name: changed})
        same = _identity(varied) == _identity(base)
        assert same == bool(f.metadata.get(SAME_OUTCOME)), f.name
    assert {f.name for f in fields if f.metadata.get(SAME_OUTCOME)} == {"jobs", "force"}
