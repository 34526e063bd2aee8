"""jailbake's own cost around each step of a real build: preparing the sources
(download or copy, unpack, patch, licence check), storing the outputs (hash, move
into the cache) and publishing, against the step itself. From the build's
build-trace.json.

    .venv/bin/python benchmarks/overhead.py LAYER [--target NAME]... [--mirror DIR]
                                                  [--offline] [-j N]

e.g. layers/busybox-initramfs.yml --offline --mirror /var/cache/jailbake-test/mirror
(busybox, its initramfs and card), layers/qemu-arm64-jailhouse.yml --target
debian-rootfs with the same mirror, or a layer's linux with its sources at hand. The cache
is a new one each time, so every recipe is built.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("layer")
    parser.add_argument("--mirror", action="append", default=[])
    parser.add_argument("--target", action="append", default=[])
    parser.add_argument("--offline", action="store_true")
    parser.add_argument("-j", "--jobs", default="2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jailbake-overhead-") as tmp:
        art = Path(tmp) / "artifacts"
        argv = [sys.executable, "-m", "jailbake.cli", "build", args.layer, "-j", args.jobs,
                "--cache-dir", str(Path(tmp) / "cache"), "--artifacts-dir", str(art)]  # fmt: skip
        argv += [a for m in args.mirror for a in ("--mirror", m)]
        argv += [a for t in args.target for a in ("--target", t)]
        argv += ["--offline"] if args.offline else []
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        subprocess.run(argv, env=env, check=True, stderr=subprocess.DEVNULL)
        trace = json.loads((art / "build-trace.json").read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    recipes = [e for e in spans if e["cat"] == "built"]
    head = ("step s", "prepare s", "store s", "clean s", "other s", "own %")
    print(f"{'recipe':24} " + " ".join(f"{h:>9}" for h in head))
    for r in sorted(recipes, key=lambda e: -e["dur"]):
        inside = [
            e for e in spans
            if e["cat"] == "phase" and e["tid"] == r["tid"]
            and r["ts"] <= e["ts"] <= r["ts"] + r["dur"]
        ]  # fmt: skip
        phase = {e["name"]: e["dur"] / 1e6 for e in inside}
        total = r["dur"] / 1e6
        step = phase.get("step", 0.0)
        own = total - step
        share = 100 * own / step if step else float("nan")
        parts = [phase.get(p, 0.0) for p in ("prepare", "store", "clean")]
        cells = (step, *parts, own - sum(parts), share)
        print(f"{r['name']:24} " + " ".join(f"{c:9.2f}" for c in cells))
    copies = sum(e["dur"] for e in spans if e["cat"] == "artifact") / 1e6
    print(f"publishing the artifacts: {copies:.2f} s; wall {trace['otherData']['wall_seconds']} s")


if __name__ == "__main__":
    main()
