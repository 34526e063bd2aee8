"""Engine overhead on a generated graph of trivial recipes.

    .venv/bin/python benchmarks/bench_graph.py [--recipes 500] [--docker-steps 10]

Reports the cold build, the no-op rebuild (whole command, and the part after
Python start-up), and the per-step cost of the host and docker executors
against a bare `podman run --rm` of the same base image. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "localhost/debian-base:bookworm"


def graph_deps(count: int, shape: str) -> list[list[int]]:
    """Each recipe's dependencies. chain: recipe i needs i-1 and i//2 (one recipe at a
    time); dag: 1 to 4 earlier recipes drawn at random (seeded), 1176 edges and 153
    leaves for 500 recipes, the size of the graph the project's speed goals were
    measured on with BitBake."""
    if shape == "chain":
        return [sorted({i - 1, i // 2} - {i}) if i else [] for i in range(count)]
    import random

    rnd = random.Random(3)
    return [sorted(rnd.sample(range(i), min(i, rnd.choice((1, 2, 3, 4, 2))))) for i in range(count)]


def write_project(root: Path, count: int, builder: str = "host", shape: str = "chain") -> None:
    (root / "recipes").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "layer.yml").write_text(
        "header:\n  version: 14\nrepos:\n  bench:\n    layers:\n      recipes:\n"
        "env:\n  SOURCE_DATE_EPOCH: '1700000000'\n"
    )
    if builder != "host":
        shutil.copytree(ROOT / "docker", root / "docker")
    for i, needs in enumerate(graph_deps(count, shape)):
        deps = [f"r{d:04d}" for d in needs]
        (root / "recipes" / f"r{i:04d}.yml").write_text(
            f"name: r{i:04d}\nversion: '1'\nbuilder: {builder}\n"
            f"depends: {json.dumps(deps)}\n"
            f'script: mkdir -p "$OUT"; echo {i} > "$OUT/r.txt"\noutputs: [r.txt]\n'
        )


def jailbake(root: Path, cache: Path, *args: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    start = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jailbake.cli",
            "build",
            "layer.yml",
            "--cache-dir",
            str(cache),
            "--artifacts-dir",
            str(root / "artifacts"),
            *args,
        ],
        cwd=root,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.monotonic() - start


def noop_in_process(root: Path, cache: Path) -> float:
    sys.path.insert(0, str(ROOT / "src"))
    from jailbake.bake.build import bake
    from jailbake.bake.options import BuildOptions
    from jailbake.executors.step import ExecutorKind
    from jailbake.ui.view import BuildView

    cwd = Path.cwd()
    os.chdir(root)
    try:
        options = BuildOptions(
            configs=(root / "layer.yml",),
            executor=ExecutorKind.HOST,
            cache_dir=cache,
            artifacts_dir=root / "artifacts",
            jobs=2,
        )
        with open(os.devnull, "w") as null:
            start = time.monotonic()
            report = bake(options, BuildView(null))
            elapsed = time.monotonic() - start
        assert not report.built
        return elapsed
    finally:
        os.chdir(cwd)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipes", type=int, default=500)
    parser.add_argument("--docker-steps", type=int, default=10)
    args = parser.parse_args()
    figures: dict[str, float | int | str] = {"recipes": args.recipes}
    with tempfile.TemporaryDirectory(prefix="jailbake-bench-") as tmp:
        work = Path(tmp)
        host = work / "host"
        write_project(host, args.recipes)
        cold = jailbake(host, work / "cache", "--executor", "host", "-j", "2")
        figures["cold_build_s"] = round(cold, 2)
        figures["host_step_overhead_ms"] = round(cold / args.recipes * 1000, 1)
        noop = min(jailbake(host, work / "cache", "--executor", "host") for _ in range(3))
        figures["noop_command_s"] = round(noop, 3)
        figures["noop_in_process_s"] = round(noop_in_process(host, work / "cache"), 3)

        if shutil.which("podman") and args.docker_steps:
            docker = work / "docker"
            write_project(docker, args.docker_steps, builder="debian-build")
            # Build the builder image outside the measurement.
            jailbake(docker, work / "warm", "--executor", "docker", "--target", "r0000")
            elapsed = jailbake(docker, work / "dcache", "--executor", "docker", "-j", "1")
            figures["docker_step_s"] = round(elapsed / args.docker_steps, 3)
            start = time.monotonic()
            for _ in range(args.docker_steps):
                subprocess.run(
                    ["podman", "run", "--rm", "--network=none", BASE_IMAGE, "true"],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
            figures["bare_podman_run_s"] = round((time.monotonic() - start) / args.docker_steps, 3)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
