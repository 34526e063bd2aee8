"""Bad recipes fail at load with one line naming file, field and expectation, exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import Project
from jailbake.core.errors import RecipeError
from jailbake.model.recipe import SourceKind, load_recipe

GOOD_SHA = "a" * 64
GOOD_COMMIT = "b" * 40

CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown key", {"colour": "blue"}, "colour", "unknown key"),
    (
        "unknown source key",
        {"sources": [{"url": "http://x/a.tar", "sha256": GOOD_SHA, "md5": "x"}]},
        "sources[0].md5",
        "unknown key",
    ),
    ("wrong type", {"depends": "other"}, "depends", "expected a list"),
    (
        "short sha",
        {"sources": [{"url": "http://x/a.tar", "sha256": "abc"}]},
        "sources[0].sha256",
        "64 lower-case hex",
    ),
    (
        "non-hex sha",
        {"sources": [{"url": "http://x/a.tar", "sha256": "z" * 64}]},
        "sources[0].sha256",
        "64 lower-case hex",
    ),
    ("missing sha", {"sources": [{"url": "http://x/a.tar"}]}, "sources[0].sha256", "missing"),
    (
        "short commit",
        {"sources": [{"git": "http://x/r.git", "commit": "abc123"}]},
        "sources[0].commit",
        "full 40-hex-digit",
    ),
    (
        "tag as commit",
        {"sources": [{"git": "http://x/r.git", "commit": "v0.12"}]},
        "sources[0].commit",
        "full 40-hex-digit",
    ),
    (
        "missing file",
        {"sources": [{"file": "files/nope.txt"}]},
        "sources[0].file",
        "does not exist",
    ),
    (
        "escaping file",
        {"sources": [{"file": "../../etc/passwd"}]},
        "sources[0].file",
        "escapes the layer",
    ),
    ("escaping patch", {"patches": ["../layer.yml"]}, "patches[0].path", "escapes the layer"),
    ("absolute output", {"outputs": ["/etc/passwd"]}, "outputs[0].path", "relative path"),
    ("dotdot output", {"outputs": ["../x"]}, "outputs[0].path", "relative path"),
    ("no outputs", {"outputs": []}, "outputs", "at least one"),
    ("nested outputs", {"outputs": ["usr/bin/t", "usr"]}, "outputs", "lies inside"),
    (
        "publish dot",
        {"outputs": [{"path": "x", "publish": "."}]},
        "outputs[0].publish",
        "a file name",
    ),
    ("bad name", {"name": "Hello World"}, "name", "lower-case"),
    ("bool version", {"version": True}, "version", "expected a string"),
    ("bad variable", {"variables": ["1X"]}, "variables[0]", "variable name"),
    ("bad run_as", {"run_as": "admin"}, "run_as", "expected 'builder'"),
    ("source kind", {"sources": [{"sha256": GOOD_SHA}]}, "sources[0]", "expected one of"),
    ("nul byte", {"environment": {"A": "x\0y"}}, "environment.A", "NUL byte"),
]


@pytest.mark.parametrize(("label", "fields", "field", "expect"), CASES, ids=[c[0] for c in CASES])
def test_bad_recipe_is_one_error_line(
    project: Project, label: str, fields: dict[str, Any], field: str, expect: str
) -> None:
    path = project.recipe("broken", fields)
    result = project.run(
        "build",
        "layer.yml",
        "--executor",
        "host",
        "--cache-dir",
        str(project.cache),
        "--artifacts-dir",
        str(project.root / "out"),
    )
    assert result.rc == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0]
    assert f": {field}: " in lines[0]
    assert expect in lines[0]
    assert not (project.root / "out").exists()
    assert (
        not list((project.cache / "ac").rglob("*.json"))
        if (project.cache / "ac").exists()
        else True
    )


def test_missing_required_field(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text("name: x\nversion: '1'\noutputs: [a]\n")
    with pytest.raises(
        RecipeError, match=r"r\.yml.*: script: expected exactly one of a build 'script'"
    ):
        load_recipe(tmp_path / "r.yml", tmp_path)


def test_error_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(
        "name: x\nversion: '1'\nscript: true\n\nbogus: 1\noutputs: [a]\n"
    )
    with pytest.raises(RecipeError, match=r"r\.yml:5: bogus: unknown key"):
        load_recipe(tmp_path / "r.yml", tmp_path)


def test_invalid_yaml(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text("name: [x\n")
    with pytest.raises(RecipeError, match=r"r\.yml:2: not valid YAML"):
        load_recipe(tmp_path / "r.yml", tmp_path)


def test_full_recipe_loads(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "fix.patch").write_text("")
    (tmp_path / "files" / "cfg").write_text("CONFIG_X=y\n")
    (tmp_path / "r.yml").write_text(f"""
name: busybox
version: "1.35.0"
summary: Tiny utilities
license: GPL-2.0-only
sources:
  - url: https://busybox.net/downloads/busybox-1.35.0.tar.bz2
    sha256: {GOOD_SHA}
  - git: https://github.com/siemens/jailhouse
    commit: {GOOD_COMMIT}
    dest: jailhouse
  - file: files/cfg
patches: [files/fix.patch]
depends: [toolchain]
builder: debian-build
environment: {{ARCH: arm64, LEVEL: 3}}
variables: [MACHINE]
script: make
outputs:
  - path: bin/busybox
    publish: true
  - path: share/doc
""")
    r = load_recipe(tmp_path / "r.yml", tmp_path)
    assert [s.kind for s in r.sources] == [SourceKind.URL, SourceKind.GIT, SourceKind.FILE]
    assert r.sources[0].filename == "busybox-1.35.0.tar.bz2"
    assert r.sources[0].is_archive and r.sources[0].strip == 1
    assert r.sources[1].dest == "jailhouse"
    assert r.patches[0].rel == "files/fix.patch" and r.patches[0].strip == 1
    assert dict(r.environment) == {"ARCH": "arm64", "LEVEL": "3"}
    assert [(o.path, o.publish) for o in r.outputs] == [
        ("bin/busybox", "busybox"),
        ("share/doc", None),
    ]
    assert "summary" not in r.definition() and "license" not in r.definition()


def test_non_utf8_recipe(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(RecipeError, match=r"r\.yml: not UTF-8 text"):
        load_recipe(tmp_path / "r.yml", tmp_path)


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("name: x\nversion: '1'\nscript: true\nscript: rm -rf /\noutputs: [a]\n", 4, "script"),
        ("name: x\nname: y\nversion: '1'\nscript: true\noutputs: [a]\n", 2, "name"),
        (
            "name: x\nversion: '1'\nscript: true\noutputs: [a]\n"
            "environment:\n  A: '1'\n  B: '2'\n  A: '3'\n",
            8,
            "A",
        ),
    ],
    ids=["script", "name", "nested"],
)
def test_a_key_given_twice_is_an_error(tmp_path: Path, text: str, line: int, key: str) -> None:
    (tmp_path / "r.yml").write_text(text)
    with pytest.raises(RecipeError) as exc:
        load_recipe(tmp_path / "r.yml", tmp_path)
    message = str(exc.value)
    assert message.startswith(f"{tmp_path / 'r.yml'}:{line}: not valid YAML: key {key!r}")
    assert "appears twice" in message and "\n" not in message


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(
        "name: x\nversion: '1'\nscript: true\noutputs: [a]\n"
        "x-env: &env {A: '1', B: '2'}\nenvironment:\n  <<: *env\n  A: '3'\n"
    )
    with pytest.raises(RecipeError, match=r"x-env: unknown key"):
        load_recipe(tmp_path / "r.yml", tmp_path)


def test_a_directory_named_like_a_recipe_is_one_line(project: Project) -> None:
    (project.root / "recipes" / "odd.yml").mkdir()
    result = project.run("list", "layer.yml", "--executor", "host")
    assert result.rc == 2
    assert result.stderr.strip() == (
        f"jailbake: error: {project.root / 'recipes' / 'odd.yml'}: cannot read it: Is a directory"
    )
