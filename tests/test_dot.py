"""`jailbake graph`: the recipe graph as DOT and SVG, with versions, cache states,
targets and overrides."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import Project, path_without


def chain(project: Project) -> None:
    project.recipe("base", version="2.1")
    project.recipe("app", depends=["base"])
    project.recipe("extra")
    project.layer(
        "layer.yml",
        {
            "header": {"version": 14},
            "repos": {"this": {"layers": {"recipes": None}}},
            "env": {"SOURCE_DATE_EPOCH": "1700000000"},
            "target": ["app"],
        },
    )


def graph(project: Project, *args: str) -> str:
    result = project.run("graph", "layer.yml", "--executor", "host", "--cache-dir",
                         str(project.cache), *args)  # fmt: skip
    assert result.rc == 0, result.stderr
    return result.stdout


def node(dot: str, name: str) -> str:
    return next(line for line in dot.splitlines() if line.strip().startswith(f'"{name}" ['))


def test_dot_shows_versions_states_targets_and_edges(project: Project, tmp_path: Path) -> None:
    chain(project)
    dot = graph(project)
    assert '"app" -> "base";' in dot and '"extra"' not in dot
    assert "base\\n2.1\\nto build" in node(dot, "base")
    assert "penwidth=3" in node(dot, "app") and "penwidth" not in node(dot, "base")
    project.build("--target", "base", artifacts=tmp_path / "art")
    dot = graph(project)
    assert 'fillcolor="#c8e6c9"' in node(dot, "base") and "cached " in node(dot, "base")
    assert 'fillcolor="#fff3bf"' in node(dot, "app")
    assert "extra" in graph(project, "--target", "extra")
    # Graphviz reads it.
    check = subprocess.run(["dot", "-Tplain"], input=dot, capture_output=True, text=True)
    assert check.returncode == 0 and "node app " in check.stdout.replace('"', "")


def test_an_overriding_layer_is_named(project: Project) -> None:
    chain(project)
    (project.root / "mine").mkdir()
    (project.root / "mine" / "base.yml").write_text(
        'name: base\nversion: "9"\nbuilder: host\nscript: mkdir -p "$OUT"; touch "$OUT/b"\n'
        "outputs: [b]\n"
    )
    project.layer(
        "user.yml",
        {"header": {"version": 14}, "repos": {"mine": {"layers": {"mine": None}}}},
    )
    result = project.run("graph", "layer.yml:user.yml", "--executor", "host", "--cache-dir",
                         str(project.cache))  # fmt: skip
    assert result.rc == 0, result.stderr
    label = node(result.stdout, "base")
    assert "base\\n9\\nto build " in label and "\\noverrides recipes/base.yml" in label


def test_svg_needs_graphviz_and_says_so(project: Project, tmp_path: Path) -> None:
    chain(project)
    svg = tmp_path / "g.svg"
    result = project.run("graph", "layer.yml", "--executor", "host", "-o", str(svg),
                         "--cache-dir", str(project.cache))  # fmt: skip
    assert result.rc == 0, result.stderr
    assert svg.read_text().lstrip().startswith("<?xml") and ">app</text>" in svg.read_text()
    missing = project.run(
        "graph", "layer.yml", "--executor", "host", "-o", str(tmp_path / "x.svg"),
        "--cache-dir", str(project.cache), env={"PATH": path_without("dot", tmp_path)},
    )  # fmt: skip
    assert missing.rc == 2
    assert "needs Graphviz's dot (Debian: apt-get install graphviz)" in missing.stderr
    assert not (tmp_path / "x.svg").exists()
