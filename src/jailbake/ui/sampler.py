"""The machine's CPU use and memory over a build, sampled from /proc as pybootchart's
collector does, for the build's trace and report."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_INTERVAL = 1.0


def interval_from_env() -> float:
    """JAILBAKE_SAMPLE_SECONDS, or every second."""
    try:
        value = float(os.environ.get("JAILBAKE_SAMPLE_SECONDS", DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value > 0 else DEFAULT_INTERVAL


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    since: float  # the previous sample's time: cpu_percent is the use in between
    cpu_percent: float | None  # of all cores; None for the first sample
    mem_used: int  # bytes: MemTotal - MemAvailable
    mem_total: int


def _cpu_times(proc: Path) -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from the first line of /proc/stat."""
    with (proc / "stat").open() as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user).
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def _memory(proc: Path) -> tuple[int, int]:
    values: dict[str, int] = {}
    with (proc / "meminfo").open() as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                values[key] = int(rest.split()[0]) * 1024
    total = values.get("MemTotal", 0)
    return total - values.get("MemAvailable", total), total


class Sampler:
    """A thread reading /proc every interval while a build runs; each sample goes to
    on_sample as it is taken. Where /proc cannot be read, there are no samples."""

    def __init__(
        self,
        on_sample: Callable[[Sample], None],
        interval: float | None = None,
        proc: Path = Path("/proc"),
    ) -> None:
        self.on_sample = on_sample
        self.interval = interval_from_env() if interval is None else interval
        self.proc = proc
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: tuple[float, int, int] | None = None  # time, busy, total

    def sample(self) -> Sample | None:
        try:
            busy, total = _cpu_times(self.proc)
            used, mem_total = _memory(self.proc)
        except (OSError, ValueError, IndexError):
            return None
        now = time.monotonic()
        last, self._last = self._last, (now, busy, total)
        if last is None:
            return Sample(now, now, None, used, mem_total)
        cpu = 100.0 * (busy - last[1]) / (total - last[2]) if total > last[2] else 0.0
        return Sample(now, last[0], round(min(100.0, max(0.0, cpu)), 1), used, mem_total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            sample = self.sample()
            if sample is not None:
                self.on_sample(sample)

    def __enter__(self) -> Sampler:
        first = self.sample()  # memory now, and where the first interval's CPU use starts
        if first is not None:
            self.on_sample(first)
        self._thread = threading.Thread(target=self._run, name="jailbake-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        final = self.sample()  # the load up to the build's last moment
        if final is not None:
            self.on_sample(final)
