"""The test suite itself: it passes wherever the checkout lives."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT

SWITCHING_USER = "tests/test_verify.py"  # its tests run jailbake as nobody


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="switches user")
def test_tests_that_switch_user_pass_from_a_private_checkout() -> None:
    """A clone in a 0700 directory (as mktemp -d makes it, or under root's home), made
    under umask 077: the user a test switches to can reach nothing in it."""
    from test_verify import _system_python

    if _system_python() is None:
        pytest.skip("no system python3 of this test's version for an ordinary user")
    top = Path(tempfile.mkdtemp(prefix="jailbake-private-"))
    try:
        clone = top / "clone"
        ignore = shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "artifacts", "*.egg-info", ".*_cache"
        )
        shutil.copytree(ROOT, clone, ignore=ignore)
        for path in [top, *top.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o700 if path.is_dir() else path.stat().st_mode & 0o700)
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             SWITCHING_USER, "-k", "ordinary_user"],
            cwd=clone,
            env={**os.environ, "PYTHONPATH": str(clone / "src")},
            capture_output=True,
            text=True,
            timeout=900,
        )  # fmt: skip
        summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
        assert " passed" in summary and "skipped" not in summary, summary
    finally:
        shutil.rmtree(top)
