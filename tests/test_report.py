"""build-report.html: the build drawn for people, checked in a real browser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Project, render_in_chromium, screenshot_path
from jailbake.ui.report import critical_path


def test_critical_path_is_the_longest_chain_of_dependencies() -> None:
    seconds = {"linux": 579.0, "busybox": 40.0, "rootfs": 2.5, "jailhouse": 6.5, "image": 9.8}
    depends = {
        "jailhouse": ["linux"],
        "rootfs": ["busybox", "jailhouse"],
        "image": ["rootfs", "linux"],
    }
    assert critical_path(seconds, depends) == (597.8, ["linux", "jailhouse", "rootfs", "image"])
    assert critical_path({}, {}) == (0.0, [])


def test_report_of_a_build_and_of_a_no_op(project: Project, tmp_path: Path) -> None:
    project.recipe("slow", script='sleep 1.5; mkdir -p "$OUT"; echo s > "$OUT/slow.txt"')
    project.recipe("quick")
    project.recipe("top", depends=["slow", "quick"], outputs=[
        {"path": "top.txt", "publish": "top.txt"}])  # fmt: skip
    project.recipe("bad", script="exit 3")
    art = tmp_path / "art"
    env = {"JAILBAKE_SAMPLE_SECONDS": "0.25"}
    project.build("-j", "2", "--target", "top", artifacts=art, env=env)
    page = render_in_chromium(art / "build-report.html", screenshot_path("report.png", tmp_path))
    assert page.rendered, page.dom[-2000:]
    assert sorted(page.bars) == ["quick", "slow", "top"] and page.visible_bars == 3
    assert sorted(page.rows) == ["quick", "slow", "top"]
    assert page.charts["cpu-chart"] >= 8 and page.charts["memory-chart"] >= 5
    assert "critical path: slow → top" in page.dom
    trace = json.loads((art / "build-trace.json").read_text())
    assert trace["otherData"]["critical_path"]["recipes"] == ["slow", "top"]
    # Every row links to its step's log, kept in the cache.
    logs = trace["otherData"]["logs"]
    assert sorted(logs) == ["quick", "slow", "top"]
    assert "slow" not in Path(logs["quick"]).read_text()
    assert Path(logs["slow"]).as_uri() in page.dom

    published = (art / "top.txt").stat()
    project.build("--target", "top", artifacts=art)
    again = render_in_chromium(art / "build-report.html", tmp_path / "again.png")
    assert again.rendered and sorted(again.bars) == ["quick", "slow", "top"]
    assert again.dom.count('class="bar reused"') == 3
    assert (art / "top.txt").stat().st_mtime_ns == published.st_mtime_ns
    assert (art / "top.txt").stat().st_ino == published.st_ino


@pytest.mark.parametrize("hostile", ["<script>alert(1)</script>", '" onload="x'])
def test_names_cannot_inject_markup(hostile: str) -> None:
    from jailbake.ui.report import render

    doc = {
        "traceEvents": [
            {"name": "a", "cat": "built", "ph": "X", "ts": 0, "dur": 10, "pid": 1, "tid": 1,
             "args": {"outcome": "built", "key": hostile, "output_bytes": 1}},
        ],
        "otherData": {"targets": [hostile], "wall_seconds": 1.0, "logs": {"a": "/x/" + hostile}},
    }  # fmt: skip
    page = render(doc)
    assert hostile not in page
    assert page.count("<script>") == 1
