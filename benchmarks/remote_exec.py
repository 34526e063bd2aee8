"""A wide graph of short steps through the remote executor (BuildGrid 0.9.1 with one,
then two test workers on this machine) against the docker executor:

    .venv/bin/python benchmarks/remote_exec.py [--recipes 200] [--seconds 1]

or its parts, to time each build on its own with a tool of your choice:

    .venv/bin/python benchmarks/remote_exec.py --write DIR [--recipes 200] [--seconds 1]
    .venv/bin/python benchmarks/remote_exec.py --serve WORKERS   # prints the URL until killed

The graph has ten roots; every other recipe depends on the one ten before it, so ten
steps can run at once. Each step sleeps --seconds in the debian-build image. Every build
starts from an empty cache. Per-action overhead is the wall time beyond what the steps'
own seconds need with that many running at once (two for `-j 2` and for two workers),
divided by the number of steps. Needs what tests/test_buildgrid.py needs (scripts/test
prepares it): BuildGrid's environment, PostgreSQL, Podman's API at $DOCKER_HOST and the
builder images.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

import buildgrid_service  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
ENV.pop("PYTHONDONTWRITEBYTECODE", None)


def write_graph(root: Path, count: int, seconds: float) -> None:
    (root / "recipes").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    shutil.copytree(ROOT / "docker", root / "docker")
    (root / "layer.yml").write_text(
        "header:\n  version: 14\nrepos:\n  bench:\n    layers:\n      recipes:\n"
        "env:\n  SOURCE_DATE_EPOCH: '1700000000'\n"
        f"target: {json.dumps([f'r{i:04d}' for i in range(count)])}\n"
    )
    for i in range(count):
        deps = [f"r{i - 10:04d}"] if i >= 10 else []
        (root / "recipes" / f"r{i:04d}.yml").write_text(
            f"name: r{i:04d}\nversion: '1'\nbuilder: debian-build\n"
            f"depends: {json.dumps(deps)}\n"
            f'script: sleep {seconds}; mkdir -p "$OUT"; echo {i} > "$OUT/r.txt"\n'
            "outputs: [r.txt]\n"
        )


def build(root: Path, *args: str) -> float:
    cache = Path(tempfile.mkdtemp(prefix="jailbake-bench-cache-", dir="/var/tmp"))
    try:
        start = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "jailbake.cli", "build", "layer.yml", "--cache-dir",
             str(cache), "--artifacts-dir", str(root / "artifacts"), *args],
            cwd=root, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        elapsed = time.monotonic() - start
        if run.returncode != 0:
            sys.exit(f"build {' '.join(args)} failed: {run.stderr[-2000:]}")
        return elapsed
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipes", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--write", type=Path, help="only write the project into this directory")
    parser.add_argument("--serve", type=int, metavar="WORKERS", help="only run BuildGrid")
    args = parser.parse_args()
    if args.write:
        write_graph(args.write, args.recipes, args.seconds)
        return
    reason = buildgrid_service.missing()
    if reason:
        sys.exit(f"remote_exec: {reason}")
    if args.serve:
        # Ended by Ctrl-C or kill (a background job may not see SIGINT): either way the
        # server, its workers and PostgreSQL stop with it.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        with buildgrid_service.running(workers=args.serve) as url:
            print(url, flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        write_graph(root, args.recipes, args.seconds)
        rows = [("docker executor, -j 2", 2, build(root, "--executor", "docker", "-j", "2"))]
        for workers in (1, 2):
            with buildgrid_service.running(workers=workers) as url:
                wall = build(root, "--executor", "remote", "--remote-executor", url, "-j", "4")
            rows.append((f"remote, BuildGrid + {workers} worker(s), -j 4", workers, wall))
    print(f"{args.recipes} steps of {args.seconds} s, ten at most running at once:")
    print(f"{'case':40} {'wall s':>8} {'overhead per step s':>20}")
    for name, parallel, wall in rows:
        floor = args.recipes * args.seconds / parallel
        print(f"{name:40} {wall:8.1f} {(wall - floor) / args.recipes * parallel:20.3f}")


if __name__ == "__main__":
    main()
