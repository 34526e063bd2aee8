"""What a build tells the person watching it: a line when a recipe starts, and one when
it ends saying what happened and how long it took."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from .action import Outcome, Status
from .keys import short_key


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def describe(outcome: Outcome) -> str:
    """'built in 3.2s (key)', 'reused in 0.0s (key)', ... for one recipe's end."""
    key = short_key(outcome.result.key)
    took = f"{outcome.seconds:.1f}s"
    if outcome.status is Status.REUSED:
        return f"reused in {took} ({key})"
    if outcome.status is Status.DOWNLOADED:
        return f"from the remote cache in {took} ({key})"
    text = f"built in {took} ({key})"
    if outcome.previous is not None:
        same = outcome.previous == outcome.result.output_digest
        text += (
            "; output identical to the cached one"
            if same
            else f"; output DIFFERS from the cached one ({short_key(outcome.previous)} -> "
            f"{short_key(outcome.result.output_digest)})"
        )
    return text


class Progress:
    """One line per recipe when it starts and when it ends."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def _print(self, line: str) -> None:
        with self._lock:
            print(line, file=self.stream, flush=True)

    def __call__(self, name: str, outcome: Outcome | None) -> None:
        if outcome is None:
            self._print(f"[jailbake] {name}: building")
        else:
            self._print(f"[jailbake] {name}: {describe(outcome)}")

    def failed(self, name: str, exc: Exception) -> None:
        log_path = getattr(exc, "log_path", None)
        where = f" (log: {log_path})" if log_path else f": {exc}"
        self._print(f"[jailbake] {name}: FAILED{where}")
