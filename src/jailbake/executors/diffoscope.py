"""diffoscope on two sets of a recipe's output files, confined: it unpacks and reads
what a step made (archives, file systems, ELF files), so it runs under bubblewrap
with the host read-only, no network, and only its report directory writable."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..core import run
from .host import bwrap_argv, host_tool

log = logging.getLogger(__name__)

TIMEOUT = 1800  # seconds for one report, at most (a kernel's image takes minutes)
MAX_REPORT = 32 << 20  # bytes of an HTML report, at most (diffoscope's own limit)


@dataclass(frozen=True)
class Report:
    html: Path | None
    text: Path | None
    note: str = ""  # why there is no report, or what limited it


def unavailable() -> str:
    if shutil.which(host_tool("diffoscope")) is None:
        return "diffoscope is not installed (Debian: diffoscope-minimal)"
    return ""


def compare(
    where: Path, left: str, right: str, html: Path, text: Path, *, confined: bool
) -> Report:
    """diffoscope's report of where/left against where/right (named so in the report),
    as html and text."""
    why = unavailable()
    if why:
        return Report(None, None, why)
    if not confined:  # it unpacks what a step made: never on the host itself
        return Report(None, None, "no report: diffoscope runs only under bubblewrap")
    where, html, text = where.absolute(), html.absolute(), text.absolute()
    out = html.parent
    out.mkdir(parents=True, exist_ok=True)
    argv: list[str | Path] = [
        host_tool("diffoscope"), "--no-progress", "--exclude-directory-metadata=yes",
        f"--max-report-size={MAX_REPORT}", "--html", html, "--text", text, left, right,
    ]  # fmt: skip
    for name in (left, right):
        if "/" in name or name.startswith((".", "-")):
            raise ValueError(f"a directory's name in {where}, not {name!r}")
    sandbox = bwrap_argv(None, [where], as_root=os.getuid() == 0)
    argv = [*sandbox, "--bind", str(out), str(out), "--chdir", str(where), *argv]
    try:
        cp = run.run(
            argv, cwd=where, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            timeout=TIMEOUT, env={"HOME": "/tmp", "TMPDIR": "/tmp"},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return Report(None, None, f"diffoscope took more than {TIMEOUT} s")
    detail = cp.stderr.decode(errors="replace").strip().splitlines()
    if cp.returncode not in (0, 1) or not (html.is_file() or text.is_file()):  # 1: differs
        return Report(None, None, f"diffoscope failed: {detail[-1] if detail else cp.returncode}")
    return Report(html if html.is_file() else None, text if text.is_file() else None)
