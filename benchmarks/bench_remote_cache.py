"""Cold build against an empty remote cache, then the same build from an empty local
cache against the now warm one (a second machine), with nginx's WebDAV module as the
server on 127.0.0.1 (run as root: nginx's workers run as nobody).

    .venv/bin/python benchmarks/bench_remote_cache.py examples/hello/hello.yml --executor host
    .venv/bin/python benchmarks/bench_remote_cache.py layers/busybox-initramfs.yml \\
        --mirror /var/cache/jailbake-test/mirror
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

from conftest import WebDAV, jailbake  # noqa: E402


def build(
    config: str, cache: Path, art: Path, url: str, extra: list[str]
) -> tuple[float, dict[str, Any]]:
    start = time.monotonic()
    result = jailbake(
        "build", config, "--json", "--remote-cache", url,
        "--cache-dir", str(cache), "--artifacts-dir", str(art), *extra,
        cwd=ROOT, timeout=3600,
    )  # fmt: skip
    seconds = time.monotonic() - start
    if result.rc != 0:
        sys.exit(result.stderr)
    return seconds, json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--executor", default="docker")
    parser.add_argument("--mirror", action="append", default=[])
    args = parser.parse_args()
    extra = ["--executor", args.executor, *(f"--mirror={m}" for m in args.mirror)]
    tmp = Path(tempfile.mkdtemp(prefix="jailbake-bench-"))
    tmp.chmod(0o755)
    server = WebDAV(tmp / "nginx")
    try:
        url = f"{server.url}/cache"
        cold, first = build(args.config, tmp / "a", tmp / "art-a", url, extra)
        warm, second = build(args.config, tmp / "b", tmp / "art-b", url, extra)
        size = sum(f.stat().st_size for f in (server.docroot / "cache").rglob("*") if f.is_file())
        print(f"cold build, uploading: {cold:.2f} s ({len(first['built'])} built)")
        print(
            f"second machine, warm remote cache: {warm:.2f} s "
            f"({len(second['built'])} built, {len(second['downloaded'])} downloaded)"
        )
        print(f"remote cache holds {size} bytes")
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    os.sync()


if __name__ == "__main__":
    main()
