"""Every speed figure of jailbake against the floor it can be measured against here:

    .venv/bin/python benchmarks/run_all.py [--runs 5] [--recipes 500] [--tree DIR]
                                           [--shape chain|dag]

| case                              | floor                              |
|-----------------------------------|------------------------------------|
| no-op build of a 500-recipe graph | python start-up (`python -c pass`) |
| one leaf recipe edited            | python start-up                    |
| cold build of that graph (-j 2)   | each recipe's script run under the |
|                                   | same bubblewrap sandbox, in turn   |
| 10 one-line docker steps          | 10 x `podman run --rm` (same image)|
| gzip'd newc archive of a tree     | `find | sort | cpio | gzip -n`     |

Each case runs as a whole process, alternating with its floor (A B A B ...); the
table gives medians, the median of the pairwise ratios, and each case's goal. The trees a cold run
replaces (its cache, the floor's scratch directories) are put aside and removed
after the last run: on ext4 without a journal, a file made within a minute of
thousands of deletions costs several times more (the inode allocator steps over
recently freed inodes), which would charge each run for the one before it. The docker case needs
Podman's Docker API (DOCKER_HOST) and the debian-build builder image; it is skipped
without them. --tree names the directory to archive (default: a generated 200 MB
tree, half text, half random).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_cpio import big_tree  # noqa: E402
from bench_graph import write_project  # noqa: E402

PYTHON = sys.executable
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
ENV.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: modules load from bytecode


def timed(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> float:
    start = time.monotonic()
    run = subprocess.run(
        argv, cwd=cwd, env=env or ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    elapsed = time.monotonic() - start
    if run.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({run.returncode}): {run.stderr[-2000:]}")
    return elapsed


def paired(
    a: Callable[[], float], b: Callable[[], float] | None, runs: int
) -> tuple[float, float | None, float | None]:
    """Median of a, of b, and of the ratios a/b taken pair by pair."""
    times_a, times_b, ratios = [], [], []
    for _ in range(runs):
        ta = a()
        times_a.append(ta)
        if b is not None:
            tb = b()
            times_b.append(tb)
            ratios.append(ta / tb)
    if b is None:
        return statistics.median(times_a), None, None
    return statistics.median(times_a), statistics.median(times_b), statistics.median(ratios)


def put_aside(path: Path, trash: Path) -> None:
    """Move path out of the way (to be removed after the last run), see the docstring."""
    if path.exists():
        trash.mkdir(exist_ok=True)
        path.rename(trash / f"{len(os.listdir(trash))}")


def sandboxed_scripts(count: int, work: Path, jobs: int, trash: Path) -> float:
    """The cold build's floor: each recipe's script (the one write_project gives it) in
    a scratch directory under the host executor's bubblewrap sandbox, jobs at a time."""
    from concurrent.futures import ThreadPoolExecutor

    sys.path.insert(0, str(ROOT / "src"))
    from jailbake.executors.host import bwrap_argv

    def one(i: int) -> None:
        step = work / f"s{i}"
        for sub in ("src", "out"):
            (step / sub).mkdir(parents=True)
        (step / "build.sh").write_text(f'set -e\nmkdir -p "$OUT"; echo {i} > "$OUT/r.txt"\n')
        argv = [*bwrap_argv(step, [], as_root=os.getuid() == 0), "bash", str(step / "build.sh")]
        env = dict(ENV, OUT=str(step / "out"))
        subprocess.run(argv, cwd=step / "src", env=env, check=True)

    put_aside(work, trash)
    start = time.monotonic()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, range(count)))
    return time.monotonic() - start


def build(project: Path, cache: Path, *args: str) -> Callable[[], float]:
    """A build in a new Python (jailbake.cli)."""
    argv = [PYTHON, "-m", "jailbake.cli", "build", "layer.yml", "--cache-dir", str(cache),
            "--artifacts-dir", str(project / "artifacts"), *args]  # fmt: skip
    return lambda: timed(argv, cwd=project)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--recipes", type=int, default=500)
    parser.add_argument("--tree", type=Path)
    parser.add_argument(
        "--shape", choices=("chain", "dag"), default="chain", help="of the graph (bench_graph)"
    )
    args = parser.parse_args()
    rows: list[tuple[str, float, str, float | None, float | None]] = []

    with tempfile.TemporaryDirectory(prefix="jailbake-bench-") as tmp:
        work = Path(tmp)
        graph = work / "graph"
        write_project(graph, args.recipes, shape=args.shape)
        host = ("--executor", "host", "-j", "2")

        trash = work / "trash"

        def cold() -> float:
            put_aside(work / "cold", trash)
            return build(graph, work / "cold", *host)()

        def scripts() -> float:
            # In a chain each recipe waits for the one before it: one script at a time.
            jobs = 1 if args.shape == "chain" else 2
            return sandboxed_scripts(args.recipes, work / "scripts", jobs, trash)

        t, f, r = paired(cold, scripts, max(1, args.runs // 2))
        rows.append((f"cold build, {args.recipes} recipes", t, "the scripts, sandboxed", f, r))

        noop = build(graph, work / "cold", *host)
        noop()

        def floor() -> float:
            return timed([PYTHON, "-c", "pass"])

        t, f, r = paired(noop, floor, args.runs)
        rows.append(("no-op build", t, "python start-up", f, r))

        leaf = graph / "recipes" / f"r{args.recipes - 1:04d}.yml"  # no recipe needs it
        text = leaf.read_text()
        flip = [0]

        def edited() -> float:
            flip[0] += 1
            leaf.write_text(text.replace('"$OUT/r.txt"', f'"$OUT/r.txt"; true {flip[0]}', 1))
            return noop()

        t, f, r = paired(edited, floor, args.runs)
        rows.append(("one leaf recipe edited", t, "python start-up", f, r))

        image = "localhost/jailbake-debian-build"
        have_podman = shutil.which("podman") and os.environ.get("DOCKER_HOST")
        if have_podman:
            docker = work / "docker"
            write_project(docker, 10, builder="debian-build")
            build(docker, work / "warm", "--executor", "docker", "--target", "r0000")()
            tags = subprocess.run(
                ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", image],
                capture_output=True, text=True, check=True,
            ).stdout.split()  # fmt: skip

            def steps() -> float:
                put_aside(work / "dsteps", trash)
                return build(docker, work / "dsteps", "--executor", "docker", "-j", "1")()

            runs = [["podman", "run", "--rm", "--network", "none", tags[0], "true"]] * 10

            def bare() -> float:
                return sum(timed(argv) for argv in runs)

            t, f, r = paired(steps, bare, args.runs)
            rows.append(("10 one-line docker steps", t, "10 x podman run --rm", f, r))

        tree = args.tree
        if tree is None:
            tree = work / "tree"
            tree.mkdir()
            big_tree(tree, 200)
        out = work / "tree.cpio.gz"
        ours = [PYTHON, str(HERE / "cpio_tree.py"), str(tree), str(out)]
        shell = ["sh", "-c", f"cd '{tree}' && find . | LC_ALL=C sort | "
                 f"cpio --quiet -o -H newc -R 0:0 | gzip -n > '{work / 'shell.gz'}'"]  # fmt: skip
        t, f, r = paired(lambda: timed(ours), lambda: timed(shell), args.runs)
        rows.append(("cpio.gz writer", t, "find|sort|cpio|gzip -n", f, r))

    print(f"{'case':40} {'jailbake s':>11}  {'floor':24} {'floor s':>8} {'ratio':>6}  goal")
    for case, t, floor_name, f, r in rows:
        fs = f"{f:8.3f}" if f is not None else f"{'-':>8}"
        rs = f"{r:6.2f}" if r is not None else f"{'-':>6}"
        print(f"{case:40} {t:11.3f}  {floor_name:24} {fs} {rs}  {goal(case, t, r)}")


# The speed goals the table is read against: (seconds at most, ratio to the floor at most).
GOALS = {
    "cold build": (1.5, None),
    "no-op build": (0.12, None),
    "one leaf recipe edited": (0.15, None),
    "10 one-line docker steps": (None, 1.1),
    "cpio.gz writer": (None, 0.6),
}


def goal(case: str, seconds: float, ratio: float | None) -> str:
    for name, (most, most_ratio) in GOALS.items():
        if case.startswith(name):
            if most is not None:
                return f"<= {most} s: {'met' if seconds <= most else 'not met'}"
            assert most_ratio is not None
            met = ratio is not None and ratio <= most_ratio
            return f"<= x{most_ratio} of the floor: {'met' if met else 'not met'}"
    return ""


if __name__ == "__main__":
    main()
