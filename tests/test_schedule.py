"""Which recipe starts first: the longest remaining path, from earlier builds' times."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import Project, sha256


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


def test_a_recipe_never_built_is_ranked_by_the_sources_a_mirror_holds(
    project: Project, tmp_path: Path
) -> None:
    """From an empty cache, an offline mirror still tells how big a recipe's sources are:
    the recipe with the big download starts before a longer chain of small ones."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    big = os.urandom(8 << 20)  # guessed at 1 s + 8 MiB at 2 MB/s
    (mirror / "big.bin").write_bytes(big)
    url = "http://127.0.0.1:9/big.bin"  # never asked: the mirror has it
    project.recipe("big", sources=[{"url": url, "sha256": sha256(big)}])
    project.recipe("a1")
    project.recipe("a2", depends=["a1"])
    project.recipe("a3", depends=["a2"])
    project.recipe("top", depends=["a3", "big"])
    art = tmp_path / "art"
    project.build("-j", "1", "--mirror", str(mirror), "--target", "top", artifacts=art)
    t = starts(art)
    assert t["big"][1] <= t["a1"][0], t
