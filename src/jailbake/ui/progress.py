"""What a build tells the person watching it.

Every recipe gets a line when it starts and one when it ends, saying what happened
and how long it took. On a terminal, beneath those lines, a block redrawn in place:
a progress bar for the build (recipes done of all, elapsed, and an ETA from the
durations earlier builds of the same recipes took) and a line per running recipe
with its elapsed time and the last line of its log. Without a terminal (CI), a
step that runs longer than a minute gets a heartbeat line, at most one a minute.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import threading
import time
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..cache.keys import short_key

if TYPE_CHECKING:  # a build answered from its record (replay) loads no step code
    from ..bake.plan import Outcome

REFRESH = 0.5  # seconds between redraws of the live block


def _heartbeat() -> float:
    try:
        return max(0.1, float(os.environ.get("JAILBAKE_HEARTBEAT_SECONDS", "60")))
    except ValueError:
        return 60.0


_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_time(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def reused(key: str, seconds: float) -> str:
    """'reused in 0.0s (key)': a recipe's end when the cache had its result."""
    return f"reused in {seconds:.1f}s ({short_key(key)})"


def describe(outcome: Outcome) -> str:
    """'built in 3.2s (key)', 'reused in 0.0s (key)', ... for one recipe's end."""
    key = short_key(outcome.result.key)
    took = f"{outcome.seconds:.1f}s"
    if outcome.status == "reused":
        return reused(outcome.result.key, outcome.seconds)
    if outcome.status == "downloaded":
        return f"from the remote cache in {took} ({key})"
    text = f"{outcome.origin or 'built'} in {took} ({key})"
    if outcome.previous is not None:
        same = outcome.previous == outcome.result.output_digest
        text += (
            "; output identical to the cached one"
            if same
            else f"; output DIFFERS from the cached one ({short_key(outcome.previous)} -> "
            f"{short_key(outcome.result.output_digest)})"
        )
    return text


def fit(text: str, width: int) -> str:
    """text cut to width terminal columns (tabs expanded, wide characters counted twice),
    so that no line of the live block wraps."""
    out, used = [], 0
    for char in text.expandtabs(4):
        cells = 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
        if unicodedata.combining(char):
            cells = 0
        if used + cells > width:
            break
        out.append(char)
        used += cells
    return "".join(out)


def last_line(path: Path | None) -> str:
    """The last line a running step wrote to its log, printable."""
    if path is None:
        return ""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        return ""
    traced = ""
    for line in reversed(re.split(r"[\r\n]", tail)):
        text = _CONTROL.sub("", line).strip()
        if text.startswith("+"):  # bash's trace of the script (set -x): what it says is news
            traced = traced or text
        elif text:
            return text
    return traced


@dataclass
class _Running:
    started: float
    log: Path | None = None
    beat: float = 0.0  # when the last heartbeat was printed


@dataclass
class _Plan:
    total: int = 0
    estimates: Mapping[str, float] = field(default_factory=dict)  # seconds, by recipe
    jobs: int = 1
    to_build: frozenset[str] = frozenset()  # not in the cache when the build started
    depends: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


class _AboveTheBlock(logging.Handler):
    """Log records printed as event lines, so that the live block stays whole."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress
        self.setFormatter(logging.Formatter("[jailbake] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.progress.say(self.format(record))


class Progress:
    """Start and end lines for every recipe; the live block on a terminal, heartbeats
    without one."""

    def __init__(self, stream: TextIO = sys.stderr, *, live: bool | None = None) -> None:
        self.stream = stream
        if live is None:
            live = stream.isatty() and os.environ.get("TERM", "") not in ("", "dumb")
        self.live = live
        self._lock = threading.RLock()
        self._running: dict[str, _Running] = {}
        self._finished: set[str] = set()
        self._done = 0
        self._plan = _Plan()
        self._started = time.monotonic()
        self._drawn = 0  # lines of the live block on the screen now
        self._stop = threading.Event()
        self._heartbeat = _heartbeat()  # read per build: the environment may change

    # -- events from the scheduler ------------------------------------------------------
    def __call__(self, name: str, outcome: Outcome | None) -> None:
        with self._lock:
            if outcome is None:
                self._running[name] = _Running(time.monotonic())
                self._print(f"[jailbake] {name}: building")
            else:
                self._running.pop(name, None)
                self._finished.add(name)
                self._done += 1
                self._print(f"[jailbake] {name}: {describe(outcome)}")

    def step_log(self, name: str, path: Path) -> None:
        """Where the running step of name writes its log."""
        with self._lock:
            if name in self._running:
                self._running[name].log = path

    def failed(self, name: str, exc: Exception) -> None:
        # What went wrong is the build's error line (or --keep-going's summary): said once.
        log_path = getattr(exc, "log_path", None)
        where = f" (log: {log_path})" if log_path else ""
        with self._lock:
            started = self._running.pop(name, None)
            took = f" after {time.monotonic() - started.started:.1f}s" if started else ""
            self._finished.add(name)
            self._done += 1
            self._print(f"[jailbake] {name}: FAILED{took}{where}")

    # -- the display ------------------------------------------------------------------
    @contextmanager
    def watching(
        self,
        total: int,
        *,
        jobs: int = 1,
        estimates: Mapping[str, float] | None = None,
        to_build: frozenset[str] = frozenset(),
        depends: Mapping[str, tuple[str, ...]] | None = None,
    ) -> Iterator[None]:
        """Show the live block (or heartbeats) while the build runs."""
        self._plan = _Plan(total, estimates or {}, max(1, jobs), to_build, depends or {})
        self._started = time.monotonic()
        ticker = threading.Thread(target=self._tick, daemon=True)
        ticker.start()
        # Log records (warnings from deep inside a build) go above the block too.
        root = logging.getLogger()
        handlers = root.handlers[:]
        if self.live:
            root.handlers = [_AboveTheBlock(self)]
        try:
            yield
        finally:
            root.handlers = handlers
            self._stop.set()
            ticker.join()
            with self._lock:
                self._clear()

    def _tick(self) -> None:
        while not self._stop.wait(REFRESH if self.live else 1.0):
            with self._lock:
                if self.live:
                    self._clear()
                    self._draw()
                else:
                    self._heartbeats()

    def say(self, line: str) -> None:
        """A line of its own, above the live block."""
        with self._lock:
            self._print(line)

    def _print(self, line: str) -> None:
        """An event line: above the live block, which is drawn again beneath it."""
        if self.live:
            self._clear()
        print(line, file=self.stream, flush=not self.live)
        if self.live:
            self._draw()

    def _heartbeats(self) -> None:
        now = time.monotonic()
        for name, run in sorted(self._running.items()):
            beat = self._heartbeat
            if now - run.started >= beat and now - max(run.beat, run.started) >= beat:
                run.beat = now
                said = last_line(run.log)
                tail = f": {said}" if said else ""
                print(
                    f"[jailbake] {name}: still building after {human_time(now - run.started)}"
                    f"{tail}",
                    file=self.stream,
                    flush=True,
                )

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _size(self) -> tuple[int, int]:
        """(columns, rows) of the terminal the block is drawn on."""
        try:
            size = os.get_terminal_size(self.stream.fileno())
            return size.columns, size.lines
        except (OSError, ValueError, AttributeError):
            fallback = shutil.get_terminal_size((100, 24))
            return fallback.columns, fallback.lines

    def _draw(self) -> None:
        columns, rows = self._size()
        width = max(20, columns - 1)
        now = time.monotonic()
        lines = [fit(self._bar(now, width), width)]
        running = sorted(self._running.items(), key=lambda kv: kv[1].started)
        room = max(1, rows - 3)  # a block taller than the screen could not be taken back
        for name, run in running[:room]:
            head = f"  {name:<20} {human_time(now - run.started):>7}  "
            lines.append(fit(head + last_line(run.log), width))
        if len(running) > room:
            lines[-1] = fit(f"  ... and {len(running) - room + 1} more", width)
        self.stream.write("".join(f"{line}\n" for line in lines))
        self.stream.flush()
        self._drawn = len(lines)

    def _bar(self, now: float, width: int) -> str:
        from tqdm import tqdm

        plan = self._plan
        elapsed = now - self._started
        eta = self._eta(now)
        postfix = f"ETA {human_time(eta)}" if eta is not None else ""
        return str(
            tqdm.format_meter(
                self._done,
                max(plan.total, self._done),
                elapsed,
                ncols=width,
                prefix="[jailbake] ",
                bar_format="{desc}{n_fmt}/{total_fmt} recipes |{bar}| {elapsed}{postfix}",
                postfix=postfix,
            )
        )

    def _eta(self, now: float) -> float | None:
        """Seconds left, by what earlier builds of the running and waiting recipes took;
        None when no earlier build says."""
        plan = self._plan
        running = [
            max(0.0, plan.estimates[name] - (now - run.started))
            for name, run in self._running.items()
            if name in plan.estimates
        ]
        waiting = [
            plan.estimates[name]
            for name in plan.to_build - set(self._running) - self._finished
            if name in plan.estimates
        ]
        if not running and not waiting:
            return None
        return max(self._critical_path(now), sum(running + waiting) / plan.jobs)

    def _critical_path(self, now: float) -> float:
        """The longest chain of recipes still to build, by their estimates: no number
        of jobs makes a chain shorter."""
        plan = self._plan
        left = {n: plan.estimates.get(n, 0.0) for n in plan.to_build - self._finished}
        for name, run in self._running.items():
            left[name] = max(0.0, plan.estimates.get(name, 0.0) - (now - run.started))
        longest: dict[str, float] = {}

        def chain(name: str) -> float:
            if name not in longest:
                before = [chain(d) for d in plan.depends.get(name, ()) if d in left]
                longest[name] = left[name] + max(before, default=0.0)
            return longest[name]

        return max((chain(n) for n in left), default=0.0)
