"""A build with nothing to do skips work (kas, doit), yet sees every change: to a layer
file or one it includes, a recipe, a patch, a file source or a variable, even an edit
that keeps the file's size and modification time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import SRC, Project


def same_size_and_time(path: Path, old: str, new: str) -> None:
    """Replace old with new (of the same length) in path, keeping its mtime."""
    assert len(old) == len(new)
    st = path.stat()
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size


def built(project: Project, **env: str) -> list[str]:
    return list(project.build(env=env or None).report["built"])


def test_edits_that_keep_size_and_time_are_seen(project: Project) -> None:
    project.layer(
        "layer.yml",
        {
            "header": {"version": 14, "includes": ["common.yml"]},
            "repos": {"this": {"layers": {"recipes": None}}},
            "env": {"SOURCE_DATE_EPOCH": "1700000000", "FLAVOUR": "aaa"},
        },
    )
    project.layer("common.yml", {"header": {"version": 14}, "env": {"COLOUR": "red"}})
    project.file("recipes/files/input.txt", "one\n")
    project.file(
        "recipes/files/fix.patch", "--- a/input.txt\n+++ b/input.txt\n@@ -1 +1 @@\n-one\n+two\n"
    )
    project.recipe(
        "app",
        variables=["FLAVOUR", "COLOUR"],
        sources=[{"file": "files/input.txt"}],
        patches=["files/fix.patch"],
        script='mkdir -p "$OUT"; echo "$FLAVOUR $COLOUR $(cat input.txt)" > "$OUT/app.txt"',
    )
    assert built(project) == ["app"]
    assert built(project) == []

    cases = [
        ("layer.yml", "aaa", "bbb"),  # a layer file
        ("common.yml", "red", "tan"),  # a layer file it includes
        ("recipes/app.yml", "app.txt", "app.TXT"),  # the recipe
        ("recipes/files/fix.patch", "+two", "+six"),  # a patch
    ]
    for rel, old, new in cases:
        same_size_and_time(project.root / rel, old, new)
        assert built(project) == ["app"], rel
        assert built(project) == [], rel
    # A file source: the patch no longer applies to it.
    same_size_and_time(project.root / "recipes/files/input.txt", "one", "uno")
    result = project.build(check=False)
    assert result.rc != 0 and "fix.patch does not apply" in result.stderr
    same_size_and_time(project.root / "recipes/files/input.txt", "uno", "one")
    assert built(project) == []
    # A variable from the environment overrides the layer's.
    assert built(project, FLAVOUR="ccc") == ["app"]
    assert built(project, FLAVOUR="ccc") == []


def test_an_include_found_elsewhere_is_seen(project: Project) -> None:
    """kas looks for an include in the top repository first, then beside the including
    file: a file that appears at the first place is read from then on."""
    (project.root / "layers").mkdir()
    project.layer(
        "layers/main.yml",
        {
            "header": {"version": 14, "includes": ["common.yml"]},
            "repos": {"this": {"layers": {"recipes": None}}},
            "env": {"SOURCE_DATE_EPOCH": "1700000000"},
        },
    )
    project.layer("layers/common.yml", {"header": {"version": 14}, "env": {"FLAVOUR": "plain"}})
    script = 'mkdir -p "$OUT"; echo "$FLAVOUR" > "$OUT/app.txt"'
    project.recipe("app", variables=["FLAVOUR"], script=script)
    assert project.build(config="layers/main.yml").report["built"] == ["app"]
    assert project.build(config="layers/main.yml").report["built"] == []
    project.layer("common.yml", {"header": {"version": 14}, "env": {"FLAVOUR": "fancy"}})
    assert project.build(config="layers/main.yml").report["built"] == ["app"]


def test_a_no_op_build_loads_neither_kas_nor_doit(project: Project, tmp_path: Path) -> None:
    """Also when the command has no record to be answered from (see test_replay): here,
    another artifacts directory."""
    project.recipe("a")
    project.recipe("b", depends=["a"])
    project.build()
    argv = [sys.executable, "-X", "importtime", "-m", "jailbake.cli", "build", "layer.yml",
            "--executor", "host", "--cache-dir", str(project.cache),
            "--artifacts-dir", str(tmp_path / "elsewhere")]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(SRC))
    run = subprocess.run(argv, cwd=project.root, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines() if "|" in line}
    assert "jailbake.bake.build" in imported
    assert not {m for m in imported if m.split(".")[0] in ("kas", "doit", "docker")}


def test_an_edited_recipe_without_sources_loads_no_download_or_archive_code(
    project: Project,
) -> None:
    """A build that fetches and unpacks nothing, with no remote cache, loads none of the
    code for it (nor kas: the layer files did not change)."""
    project.recipe("a")
    project.recipe("b", depends=["a"])
    project.build()
    project.recipe("b", depends=["a"], script='mkdir -p "$OUT"; echo edited > "$OUT/b.txt"')
    argv = [sys.executable, "-X", "importtime", "-m", "jailbake.cli", "build", "layer.yml",
            "--executor", "host", "--cache-dir", str(project.cache), "--json"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(SRC))
    run = subprocess.run(argv, cwd=project.root, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1])["built"] == ["b"]
    imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines() if "|" in line}
    assert "doit" in imported and "jailbake.bake.action" in imported
    heavy = {"kas", "docker", "requests", "tqdm", "tarfile", "uuid"}
    assert not {m for m in imported if m.split(".")[0] in heavy}
    lazy = {
        "jailbake.core.net",
        "jailbake.cache.remote",
        "jailbake.sources.unpack",
        "jailbake.core.console",
    }
    assert not imported & lazy
