"""jailbake's newc writer against `find . | cpio -o -H newc -R 0:0 | gzip -n`.

    .venv/bin/python benchmarks/bench_cpio.py [--big-mb 200]

Two trees: busybox-sized (one 1 MiB binary, 400 applet symlinks, a few files)
and a large one (--big-mb of files, half compressible text, half random).
Prints one JSON object with seconds for each and the ratio writer/pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from jailbake.image.cpio import Entry, write_cpio_gz

SDE = 1700000000


def busybox_tree(root: Path) -> None:
    rng = random.Random(1)
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(rng.randbytes(1 << 20))
    for i in range(400):
        (root / "bin" / f"applet{i}").symlink_to("busybox")
    for d in ("etc", "proc", "sys", "dev", "tmp"):
        (root / d).mkdir()
    (root / "etc" / "inittab").write_text("::sysinit:/etc/init.d/rcS\n" * 4)


def big_tree(root: Path, megabytes: int) -> None:
    rng = random.Random(2)
    words = [f"word{i}" for i in range(5000)]
    size = 0
    i = 0
    while size < megabytes << 20:
        d = root / f"dir{i // 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        n = rng.randint(64 << 10, 2 << 20)
        if i % 2:
            data = rng.randbytes(n)
        else:
            data = " ".join(rng.choice(words) for _ in range(n // 6)).encode()[:n]
        (d / f"file{i}").write_bytes(data)
        size += len(data)
        i += 1


def entries(root: Path) -> list[Entry]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = p.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                out.append(Entry(rel, st.st_mode, mtime=SDE, link=os.readlink(p)))
            elif stat.S_ISDIR(st.st_mode):
                out.append(Entry(rel, st.st_mode, mtime=SDE))
            else:
                out.append(Entry(rel, st.st_mode, mtime=SDE, source=p))
    return out


def pipeline(root: Path, dest: Path) -> float:
    start = time.monotonic()
    subprocess.run(
        f"find . | cpio --quiet -o -H newc -R 0:0 | gzip -n > {dest}",
        shell=True,
        cwd=root,
        check=True,
    )
    return time.monotonic() - start


def writer(root: Path, dest: Path) -> float:
    start = time.monotonic()
    write_cpio_gz(entries(root), dest)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big-mb", type=int, default=200)
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="jailbake-cpio-") as tmp:
        work = Path(tmp)
        for label, make in (
            ("busybox", busybox_tree),
            (f"big{args.big_mb}mb", lambda r: big_tree(r, args.big_mb)),
        ):
            root = work / label
            root.mkdir()
            make(root)
            shell = min(pipeline(root, work / "a.gz") for _ in range(3))
            ours = min(writer(root, work / "b.gz") for _ in range(3))
            figures[f"{label}_pipeline_s"] = round(shell, 3)
            figures[f"{label}_writer_s"] = round(ours, 3)
            figures[f"{label}_ratio"] = round(ours / shell, 2)
            figures[f"{label}_writer_bytes"] = (work / "b.gz").stat().st_size
            figures[f"{label}_pipeline_bytes"] = (work / "a.gz").stat().st_size
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
