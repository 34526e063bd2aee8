"""A step's work directory seen through disorderfs: every directory lists its entries
in another order than the file system underneath (shuffled, then reversed), which
`jailbake repro` uses to find builds that depend on the order of readdir."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..core import run
from ..core.errors import StepError


def unavailable() -> str:
    """Why directories cannot be disordered here ('' if they can)."""
    if shutil.which("disorderfs", path=run.clean_env()["PATH"]) is None:
        return "disorderfs is not installed"
    if not os.path.exists("/dev/fuse"):
        return "there is no /dev/fuse"
    if (
        shutil.which("fusermount3", path=run.clean_env()["PATH"]) is None
        and shutil.which("fusermount", path=run.clean_env()["PATH"]) is None
    ):
        return "fusermount is not installed"
    return ""


@contextlib.contextmanager
def disordered(path: Path) -> Iterator[Path]:
    """path mounted through disorderfs on a new directory, for as long as the context
    lasts. As root, disorderfs acts with each caller's own ids (a container's user
    keeps its files) and reaches path through a bind mount below /run: with the
    caller's ids it could not pass a private parent directory (root's ~/.cache)."""
    tools = run.clean_env()["PATH"]
    multi = os.getuid() == 0
    top = Path(tempfile.mkdtemp(prefix="jailbake-disorder-", dir="/run" if multi else path.parent))
    # Passable, not listable: other users cannot find the step's directory through it
    # (the names below are random), disorderfs acting as the step's user can.
    os.chmod(top, 0o711)
    under, seen = top / secrets.token_hex(16), top / secrets.token_hex(16)
    under.mkdir()
    seen.mkdir()
    mounted: list[Path] = []
    try:
        if multi:
            _mount(["mount", "--bind", str(path), str(under)], path)
            mounted.append(under)
        else:
            under = path
        cp = run.run(
            [
                shutil.which("disorderfs", path=tools) or "disorderfs", "--quiet",
                f"--multi-user={'yes' if multi else 'no'}", "--shuffle-dirents=yes",
                "--reverse-dirents=yes", "--sort-dirents=no",
                "-o", "allow_other,default_permissions" if multi else "default_permissions",
                under, seen,
            ],
            check=False, stdout=-1, stderr=-1,
        )  # fmt: skip
        if cp.returncode != 0:
            detail = cp.stderr.decode(errors="replace").strip()
            raise StepError(f"disorderfs cannot mount {path}: {detail}")
        mounted.append(seen)
        yield seen
    finally:
        fusermount = shutil.which("fusermount3", path=tools) or "fusermount"
        for point in reversed(mounted):
            if point == seen:
                run.run([fusermount, "-u", "-z", point], check=False)
            else:
                run.run(["umount", "--lazy", point], check=False)
        for leftover in (seen, under, top):
            with contextlib.suppress(OSError):
                os.rmdir(leftover)


def _mount(argv: list[str], path: Path) -> None:
    cp = run.run(argv, check=False, stdout=-1, stderr=-1)
    if cp.returncode != 0:
        detail = cp.stderr.decode(errors="replace").strip()
        raise StepError(f"cannot bind {path} for disorderfs: {detail}")
