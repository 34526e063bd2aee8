"""build-trace.json: every build in the Chrome trace event format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import Project


def events(art: Path) -> list[dict[str, Any]]:
    trace = json.loads((art / "build-trace.json").read_text())
    return [e for e in trace["traceEvents"] if e["ph"] == "X"]


def test_every_recipe_is_an_event_on_its_slot(project: Project, tmp_path: Path) -> None:
    for name in ("a", "b"):
        project.recipe(name, script=f'sleep 1; mkdir -p "$OUT"; echo {name} > "$OUT/{name}.txt"')
    project.recipe("top", depends=["a", "b"])
    art = tmp_path / "art"
    project.build("-j", "2", artifacts=art)
    built = {e["name"]: e for e in events(art)}
    assert sorted(built) == ["a", "b", "top"]
    assert {e["args"]["outcome"] for e in built.values()} == {"built"}
    assert {built["a"]["tid"], built["b"]["tid"]} == {1, 2}  # they ran side by side
    assert built["a"]["dur"] >= 1_000_000 and built["top"]["ts"] >= built["a"]["ts"]
    assert built["top"]["args"]["output_bytes"] == 4 and len(built["top"]["args"]["key"]) == 64
    trace = json.loads((art / "build-trace.json").read_text())
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert {"slot 1", "slot 2", "from the cache"} <= names
    manifest = json.loads((art / "manifest.json").read_text())
    assert "build-trace.json" not in {a["path"] for a in manifest["artifacts"]}

    again = project.build(artifacts=art)
    reused = events(art)
    assert {e["args"]["outcome"] for e in reused} == {"reused"} and len(reused) == 3
    assert {e["tid"] for e in reused} == {0}
    assert again.report["built"] == []


def test_a_failed_build_leaves_no_trace_in_the_artifacts(project: Project, tmp_path: Path) -> None:
    project.recipe("bad", script="exit 1")
    project.build(artifacts=tmp_path / "art", check=False)
    assert not (tmp_path / "art" / "build-trace.json").exists()
