"""A one-line source change through a workspace, against the same change without one.

    .venv/bin/python benchmarks/workspace_rebuild.py setup DIR   # caches, workspace, cold builds
    .venv/bin/python benchmarks/workspace_rebuild.py edit DIR    # one line changed, layer built
    .venv/bin/python benchmarks/workspace_rebuild.py clean DIR   # busybox built again from a
                                                                 # clean tree (warm ccache)

The recipe is busybox of layers/busybox-initramfs.yml (offline, from the test mirror:
JAILBAKE_TEST_ASSETS, default /var/cache/jailbake-test; the builder images must be
in the engine). `setup` makes two caches in DIR: `ws/` with a workspace of busybox
(DIR/busybox), built once; `plain/` without one, built once (its compiler cache warm).
`edit` writes a new line into one busybox source file of the workspace and builds the
layer: make recompiles that file and links. `clean` is what the same change costs
without a workspace: every file compiled again in a fresh tree, from the compiler cache
but one. Time `edit` and `clean` as whole processes, several runs each; setup prints
its cold build times.

The kernel's figure is a manual benchmark: see benchmarks/README.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER = "layers/busybox-initramfs.yml"
EDITED = "coreutils/echo.c"
ASSETS = Path(os.environ.get("JAILBAKE_TEST_ASSETS", "/var/cache/jailbake-test"))
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
ENV.pop("PYTHONDONTWRITEBYTECODE", None)


def jailbake(*args: str, cache: Path, quiet: bool = True) -> float:
    argv = [sys.executable, "-m", "jailbake.cli", *args, "--cache-dir", str(cache)]
    start = time.monotonic()
    run = subprocess.run(
        argv, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if quiet else None, text=True,
    )  # fmt: skip
    if run.returncode != 0:
        sys.exit(f"jailbake {' '.join(args)} failed ({run.returncode}): {run.stderr[-2000:]}")
    return time.monotonic() - start


def build(cache: Path, art: Path, *extra: str) -> float:
    mirror = str(ASSETS / "mirror")
    return jailbake("build", LAYER, "--offline", "--mirror", mirror,
                    "--artifacts-dir", str(art), *extra, cache=cache)  # fmt: skip


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in ("setup", "edit", "clean"):
        sys.exit(__doc__)
    what, where = sys.argv[1], Path(sys.argv[2]).absolute()
    ws_cache, plain_cache, sources = where / "ws", where / "plain", where / "busybox"
    if what == "setup":
        mirror = str(ASSETS / "mirror")
        plain = build(plain_cache, where / "art-plain")
        jailbake("workspace", LAYER, "busybox", str(sources), "--offline", "--mirror", mirror,
                 cache=ws_cache)  # fmt: skip
        cold = build(ws_cache, where / "art-ws")
        print(f"cold build without a workspace: {plain:.1f} s; with one: {cold:.1f} s")
    elif what == "edit":
        path = sources / EDITED
        lines = path.read_text().splitlines(keepends=True)
        mark = "/* changed for a benchmark: "
        lines = [line for line in lines if not line.startswith(mark)]
        lines.append(f"{mark}{time.time_ns()} */\n")
        path.write_text("".join(lines))
        build(ws_cache, where / "art-ws")
    else:
        build(plain_cache, where / "art-plain", "--force", "busybox")


if __name__ == "__main__":
    main()
