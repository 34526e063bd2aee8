"""What a person watching a build sees: on a real pseudo-terminal the live block, in a
pipe (CI) plain lines and heartbeats."""

from __future__ import annotations

import itertools
import os
import re
import sys
from pathlib import Path

from conftest import SRC, Project, in_pty

SLOW = (
    'echo "compiling part one"; sleep 2; echo "linking the image"; sleep 2; '
    'mkdir -p "$OUT"; echo done > "$OUT/slow.txt"'
)


class Screen:
    """Enough of a terminal for jailbake's display: text, newlines, carriage returns,
    'cursor to the start of the line N lines up' (CSI N F) and 'clear below' (CSI J)."""

    def __init__(self) -> None:
        self.lines: list[str] = [""]
        self.row = 0
        self.col = 0

    def feed(self, text: str) -> None:
        for token in re.split(r"(\x1b\[[0-9;]*[A-Za-z]|\r\n|\n|\r)", text):
            if not token:
                continue
            if token in ("\n", "\r\n"):
                self.row += 1
                self.col = 0
                if self.row == len(self.lines):
                    self.lines.append("")
            elif token == "\r":
                self.col = 0
            elif token.startswith("\x1b["):
                arg, op = token[2:-1], token[-1]
                if op == "F":
                    self.row = max(0, self.row - int(arg or 1))
                    self.col = 0
                elif op == "J":
                    self.lines[self.row] = self.lines[self.row][: self.col]
                    del self.lines[self.row + 1 :]
            else:
                line = self.lines[self.row]
                self.lines[self.row] = line[: self.col] + token + line[self.col + len(token) :]
                self.col += len(token)

    def text(self) -> str:
        return "\n".join(self.lines)


def build_in_pty(project: Project, *args: str) -> tuple[int, list[str]]:
    """jailbake build on a pseudo-terminal; its exit status and the screen as it was
    each time output arrived."""
    argv = [sys.executable, "-m", "jailbake.cli", "build", "layer.yml", "--executor", "host",
            "--cache-dir", str(project.cache), "--artifacts-dir", str(project.root / "art"),
            *args]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(SRC), "TERM": "xterm"}
    rc, pieces = in_pty(argv, cwd=project.root, env=env)
    screen, shots = Screen(), []
    for piece in pieces:
        screen.feed(piece)
        shots.append(screen.text())
    return rc, shots


def test_the_terminal_shows_a_bar_and_each_running_recipe(project: Project) -> None:
    project.recipe("quick")
    project.recipe("slow", script=SLOW)
    rc, shots = build_in_pty(project, "-j", "2")
    assert rc == 0, shots[-1]
    live = [s for s in shots if "linking the image" in s]
    assert live, shots[-1]
    lines = live[-1].splitlines()
    bar = next(line for line in lines if "recipes |" in line)
    assert bar.startswith("[jailbake] 1/2 recipes |"), bar
    running = next(line for line in lines if line.startswith("  slow "))
    assert re.match(r"  slow +\d+s  linking the image$", running), running
    # The block sits beneath the event lines and is gone at the end.
    assert lines.index(bar) > max(i for i, line in enumerate(lines) if "quick:" in line)
    final = shots[-1].splitlines()
    assert not any("recipes |" in line or line.startswith("  slow") for line in final)
    assert any(re.match(r"\[jailbake\] slow: built in \d+\.\ds", line) for line in final), final
    assert [line for line in final if line][-1].startswith(
        "[jailbake] 2 recipes: 2 built, 0 reused"
    )


def test_the_bar_estimates_from_earlier_builds(project: Project) -> None:
    project.recipe("slow", script=SLOW)
    first = project.build()
    took = float(re.search(r"slow: built in (\d+\.\d)s", first.stderr).group(1))  # type: ignore[union-attr]
    rc, shots = build_in_pty(project, "--force", "slow")
    assert rc == 0, shots[-1]
    etas = [re.search(r"ETA (\d+)s", s) for s in shots]
    seen = [int(m.group(1)) for m in etas if m]
    assert seen and max(seen) in (int(took) - 1, int(took)), (seen, took)
    assert seen == sorted(seen, reverse=True)  # counting down
    assert min(seen) <= took - 2


def test_without_a_terminal_a_long_step_sends_heartbeats(project: Project) -> None:
    project.recipe("slow", script=SLOW)
    result = project.build(env={"JAILBAKE_HEARTBEAT_SECONDS": "1.5"})
    beats = re.findall(r"\[jailbake\] slow: still building after (\d+)s: (.*)", result.stderr)
    assert len(beats) >= 2, result.stderr
    seconds = [int(b[0]) for b in beats]
    assert seconds[0] >= 1 and all(b - a >= 1 for a, b in itertools.pairwise(seconds)), beats
    assert beats[0][1] == "compiling part one" and beats[-1][1] == "linking the image"
    assert "\x1b[" not in result.stderr
    assert re.search(r"\[jailbake\] slow: built in \d+\.\ds", result.stderr)


def test_a_failed_recipe_says_how_long_it_ran(project: Project, tmp_path: Path) -> None:
    project.recipe("bad", script="sleep 1; exit 4")
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert re.search(r"\[jailbake\] bad: FAILED after 1\.\ds \(log: ", result.stderr)
