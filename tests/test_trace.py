"""build-trace.json: every build in the Chrome trace event format."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from conftest import HTTPFiles, Project, make_tarball, sha256


def events(art: Path) -> list[dict[str, Any]]:
    """The recipes' events (not their downloads, phases or copies)."""
    trace = json.loads((art / "build-trace.json").read_text())
    kinds = {"built", "reused", "downloaded", "failed"}
    return [e for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] in kinds]


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


def test_downloads_copies_and_the_machine_load_are_in_the_trace(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    tarball = make_tarball({"data.txt": "x" * 5000})
    url = http.add("pkg-1.0.tar.gz", tarball)
    project.recipe(
        "pkg",
        sources=[{"url": url, "sha256": sha256(tarball)}],
        script='sleep 1.2; mkdir -p "$OUT"; cp data.txt "$OUT/"',
        outputs=[{"path": "data.txt", "publish": "data.txt"}],
    )
    art = tmp_path / "art"
    project.build(artifacts=art, env={"JAILBAKE_SAMPLE_SECONDS": "0.25"})
    trace = json.loads((art / "build-trace.json").read_text())
    spans = {e["cat"]: e for e in trace["traceEvents"] if e["ph"] == "X"}
    step, fetch, copy = spans["built"], spans["fetch"], spans["artifact"]
    # The download is drawn inside its recipe, on its slot; the copy on the artifacts track.
    assert fetch["name"] == "pkg-1.0.tar.gz" and fetch["args"]["bytes"] == len(tarball)
    assert fetch["tid"] == step["tid"] and step["ts"] <= fetch["ts"]
    assert fetch["ts"] + fetch["dur"] <= step["ts"] + step["dur"]
    assert copy["name"] == "data.txt" and copy["args"]["bytes"] == 5000
    assert copy["ts"] >= step["ts"] + step["dur"]
    # Within the recipe: preparing its sources, its step, storing its outputs and
    # removing its work directory, in turn.
    phases = [e for e in trace["traceEvents"] if e.get("cat") == "phase"]
    assert [e["name"] for e in phases] == ["prepare", "step", "store", "clean"]
    assert all(e["tid"] == step["tid"] for e in phases)
    # (1 µs for the rounding of times to whole microseconds)
    assert all(a["ts"] + a["dur"] <= b["ts"] + 1 for a, b in itertools.pairwise(phases))
    assert phases[-1]["ts"] + phases[-1]["dur"] <= step["ts"] + step["dur"] + 1
    assert phases[1]["dur"] >= 1_200_000 and phases[0]["ts"] <= fetch["ts"]
    cpu = [e for e in trace["traceEvents"] if e["ph"] == "C" and e["name"] == "CPU"]
    memory = [e for e in trace["traceEvents"] if e["ph"] == "C" and e["name"] == "memory"]
    assert len(cpu) >= 4 and len(memory) == len(cpu) + 1  # every 0.25 s over 1.2 s
    assert all(0 <= e["args"]["busy %"] <= 100 for e in cpu)
    assert all(0 < e["args"]["used MiB"] < e["args"]["total MiB"] for e in memory)
    assert trace["otherData"]["critical_path"]["recipes"] == ["pkg"]

    # Nothing to fetch or copy again: the trace says so.
    project.build(artifacts=art)
    trace = json.loads((art / "build-trace.json").read_text())
    assert {e["cat"] for e in trace["traceEvents"] if e["ph"] == "X"} == {"reused"}
