"""build-trace.json: a build in the Chrome trace event format, which Perfetto and
chrome://tracing open. One complete event per recipe, on the track of the parallel
slot it ran in (results taken from a cache on a track of their own), with its key,
outcome and output size; within a recipe's event, its downloads and builder image;
the copies into the artifacts directory on a track of their own; and the machine's
CPU use and memory as counters."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a build answered from its record (replay) loads no step code
    from ..bake.plan import Outcome
    from .sampler import Sample

TRACE = "build-trace.json"
CACHE_TRACK = 0  # results reused or downloaded: no slot of their own
ARTIFACTS_TRACK = 1000  # copies into the artifacts directory, after the recipes
RECIPE_KINDS = frozenset({"built", "reused", "downloaded", "failed"})


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
            args: dict[str, Any] = {"key": outcome.result.key, "output_bytes": size}
            if outcome.status == "built":
                args["step_seconds"] = outcome.result.duration
            self._add(name, str(outcome.status), slot, start, now, **args)

    def reused(self, name: str, key: str, output_bytes: int) -> None:
        """A recipe whose result a build answered from its record (see replay)."""
        now = time.monotonic()
        with self._lock:
            self._add(name, "reused", CACHE_TRACK, now, now, key=key, output_bytes=output_bytes)

    def failed(self, name: str, exc: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            slot, start = self._open.pop(name, (CACHE_TRACK, now))
            self._add(name, "failed", slot, start, now, error=str(exc))

    def span(self, kind: str, name: str, start: float, recipe: str | None = None,
             **args: Any) -> None:  # fmt: skip
        """Something that took from start (time.monotonic()) until now: a download or a
        builder image within recipe's step, or a copy into the artifacts directory."""
        now = time.monotonic()
        with self._lock:
            slot = self._open[recipe][0] if recipe in self._open else ARTIFACTS_TRACK
            self.events.append(self._event(name, kind, slot, start, now, args))

    def sample(self, sample: Sample) -> None:
        """The machine's load, as two counter tracks: memory at the sample's moment, CPU
        use from the previous sample on (a counter holds its value until the next)."""
        memory = {
            "used MiB": round(sample.mem_used / 2**20, 1),
            "total MiB": round(sample.mem_total / 2**20, 1),
        }
        with self._lock:
            self._counter("memory", sample.at, memory)
            if sample.cpu_percent is not None:
                self._counter("CPU", sample.since, {"busy %": sample.cpu_percent})

    def _counter(self, name: str, at: float, args: dict[str, float]) -> None:
        ts = _us(max(0.0, at - self.started))
        self.events.append({"name": name, "ph": "C", "ts": ts, "pid": 1, "args": args})

    def _add(self, name: str, outcome: str, slot: int, start: float, end: float,
             **args: Any) -> None:  # fmt: skip
        args = {"outcome": outcome, **args}
        self.events.append(self._event(name, outcome, slot, start, end, args))

    def _event(self, name: str, cat: str, tid: int, start: float, end: float,
               args: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        return {
            "name": name,
            "cat": cat,
            "ph": "X",
            "ts": _us(start - self.started),
            "dur": _us(max(0.0, end - start)),
            "pid": 1,
            "tid": tid,
            "args": args,
        }

    def recipes(self) -> list[dict[str, Any]]:
        """The events of recipes (not of downloads, images or copies)."""
        return [e for e in self.events if e["ph"] == "X" and e["cat"] in RECIPE_KINDS]

    def document(self, targets: list[str], **extra: Any) -> dict[str, Any]:
        """The whole trace: events sorted by start, and names for the process and tracks.
        extra goes into otherData beside the totals."""
        tracks = sorted({e["tid"] for e in self.events if "tid" in e} | {CACHE_TRACK})
        meta: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "jailbake build"}}
        ]
        for tid in tracks:
            label = {CACHE_TRACK: "from the cache", ARTIFACTS_TRACK: "artifacts"}.get(
                tid, f"slot {tid}"
            )
            meta.append(
                {"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": label}}
            )
        return {
            "traceEvents": meta
            + sorted(self.events, key=lambda e: (e["ts"], e.get("tid", -1), e["name"])),
            "displayTimeUnit": "ms",
            "otherData": {
                "targets": targets,
                **{
                    s: sum(e["cat"] == s for e in self.recipes())
                    for s in ("built", "reused", "downloaded")
                },
                "wall_seconds": round(time.monotonic() - self.started, 3),
                **extra,
            },
        }


def write_atomic(dest: Path, text: str) -> Path:
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, dest)
    return dest


def write(dest_dir: Path, document: dict[str, Any]) -> Path:
    """Write build-trace.json into dest_dir, atomically."""
    return write_atomic(dest_dir / TRACE, json.dumps(document, separators=(",", ":")) + "\n")
