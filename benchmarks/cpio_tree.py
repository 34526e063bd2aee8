"""Write TREE as a gzip'd newc archive with jailbake's writer, as a whole process, for
timing against the shell pipeline (see benchmarks/run_all.py):

    .venv/bin/python benchmarks/cpio_tree.py TREE OUT [--threads N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cpio import entries

from jailbake.image.cpio import write_cpio_gz


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tree", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    write_cpio_gz(entries(args.tree), args.out, threads=args.threads)


if __name__ == "__main__":
    main()
