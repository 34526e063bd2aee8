"""build-trace.json: a build in the Chrome trace event format, which Perfetto and
chrome://tracing open. One complete event per recipe, on the track of the parallel
slot it ran in (results taken from a cache on a track of their own), with its key,
outcome and output size."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from .action import Outcome, Status

TRACE = "build-trace.json"
CACHE_TRACK = 0  # results reused or downloaded: no slot of their own


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


class Tracer:
    """Collects the events of one build."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self._open: dict[str, tuple[int, float]] = {}  # recipe -> (slot, start)
        self._lock = threading.Lock()

    def _slot(self) -> int:
        used = {slot for slot, _ in self._open.values()}
        return next(n for n in range(1, len(used) + 2) if n not in used)

    def __call__(self, name: str, outcome: Outcome | None) -> None:
        now = time.monotonic()
        with self._lock:
            if outcome is None:
                self._open[name] = (self._slot(), now)
                return
            slot, start = self._open.pop(name, (CACHE_TRACK, now - outcome.seconds))
            size = sum(e.get("size", 0) for e in outcome.result.outputs if e["type"] == "file")
            self._add(name, str(outcome.status), slot, start, now, key=outcome.result.key,
                      output_bytes=size)  # fmt: skip

    def failed(self, name: str, exc: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            slot, start = self._open.pop(name, (CACHE_TRACK, now))
            self._add(name, "failed", slot, start, now, error=str(exc))

    def _add(self, name: str, outcome: str, slot: int, start: float, end: float,
             **args: Any) -> None:  # fmt: skip
        self.events.append(
            {
                "name": name,
                "cat": outcome,
                "ph": "X",
                "ts": _us(start - self.started),
                "dur": _us(max(0.0, end - start)),
                "pid": 1,
                "tid": slot,
                "args": {"outcome": outcome, **args},
            }
        )

    def document(self, targets: list[str]) -> dict[str, Any]:
        """The whole trace: events sorted by start, and names for the process and tracks."""
        tracks = sorted({e["tid"] for e in self.events} | {CACHE_TRACK})
        meta: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "jailbake build"}}
        ]
        for tid in tracks:
            label = "from the cache" if tid == CACHE_TRACK else f"slot {tid}"
            meta.append(
                {"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": label}}
            )
        return {
            "traceEvents": meta + sorted(self.events, key=lambda e: (e["ts"], e["tid"])),
            "displayTimeUnit": "ms",
            "otherData": {
                "targets": targets,
                "built": sum(e["cat"] == str(Status.BUILT) for e in self.events),
                "reused": sum(e["cat"] == str(Status.REUSED) for e in self.events),
                "wall_seconds": round(time.monotonic() - self.started, 3),
            },
        }

    def write(self, dest_dir: Path, targets: list[str]) -> Path:
        """Write build-trace.json into dest_dir, atomically."""
        dest = dest_dir / TRACE
        tmp = dest_dir / f".{TRACE}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(self.document(targets), indent=1) + "\n")
        os.replace(tmp, dest)
        return dest
