"""Which recipe starts first: the longest remaining path, from earlier builds' times."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import Project


def starts(art: Path) -> dict[str, tuple[float, float]]:
    trace = json.loads((art / "build-trace.json").read_text())
    return {
        e["name"]: (e["ts"] / 1e6, (e["ts"] + e["dur"]) / 1e6)
        for e in trace["traceEvents"]
        if e["ph"] == "X" and e["cat"] == "built"
    }


def graph(project: Project, edit: str = "") -> None:
    def step(name: str, seconds: float) -> str:
        return f'sleep {seconds}; mkdir -p "$OUT"; echo {name}{edit} > "$OUT/{name}.txt"'

    project.recipe("side1", script=step("side1", 1))
    project.recipe("side2", script=step("side2", 1))
    project.recipe("setup", script=step("setup", 0.2))
    project.recipe("long", depends=["setup"], script=step("long", 2.5))
    project.recipe("top", depends=["side1", "side2", "long"])


def test_the_longest_chain_starts_first(project: Project, tmp_path: Path) -> None:
    graph(project)
    project.build("-j", "2", "--target", "top", artifacts=tmp_path / "a1")
    # Every recipe changed: all are built again, and the cache knows what each took.
    graph(project, edit="-again")
    art = tmp_path / "a2"
    project.build("-j", "2", "--target", "top", artifacts=art)
    t = starts(art)
    assert sorted(t) == ["long", "setup", "side1", "side2", "top"]
    # The kernel-like chain goes first and is never held up by the side branches...
    assert t["setup"][0] < t["side1"][0] + 0.5 and t["setup"][0] < t["side2"][0]
    assert t["long"][0] - t["setup"][1] < 0.5
    # ...which run beside it, one after the other, on the other slot.
    assert max(t["side1"][1], t["side2"][1]) <= t["long"][1] + 0.5
    # The build takes its critical path (setup, long, top), not more.
    trace = json.loads((art / "build-trace.json").read_text())
    path = trace["otherData"]["critical_path"]
    assert path["recipes"] == ["setup", "long", "top"]
    assert t["top"][1] - t["setup"][0] < path["seconds"] + 0.8


def test_steps_share_the_cores(project: Project, tmp_path: Path) -> None:
    """$JOBS is a step's share of the machine's cores: all of them for a step alone,
    what is left (at least one) for a step started beside it; -j does not multiply it."""
    cores = len(os.sched_getaffinity(0))
    record = 'mkdir -p "$OUT"; echo "$JOBS" > "$OUT/{n}.txt"'
    project.recipe("first", script="sleep 1.5; " + record.format(n="first"))
    project.recipe("second", script="sleep 0.5; " + record.format(n="second"))
    project.recipe("alone", depends=["first", "second"], script=record.format(n="alone"))
    art = tmp_path / "art"
    project.build("-j", "2", "--target", "alone", artifacts=art)
    trees = {p.name: p.read_text().strip() for p in project.cache.glob("trees/*/*.txt")}
    assert trees["alone.txt"] == str(cores)
    assert sorted([int(trees["first.txt"]), int(trees["second.txt"])]) == sorted(
        [cores, 1] if cores > 1 else [1, 1]
    )
