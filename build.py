#!/usr/bin/env python3
"""jailbake from a checkout: `python3 build.py [build] [CONFIG] [options]`.

On first use it creates .venv with jailbake's dependencies, then runs the
`jailbake` command line from src/ with it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
STAMP = VENV / ".jailbake-deps"


def _deps_digest() -> str:
    return hashlib.sha256((HERE / "pyproject.toml").read_bytes()).hexdigest()


def _venv_python() -> Path:
    return VENV / "bin" / "python3"


def _bootstrap() -> None:
    """Create .venv and install the dependencies listed in pyproject.toml."""
    print("[jailbake] installing dependencies into .venv (first run)", file=sys.stderr)
    try:
        venv.EnvBuilder(with_pip=True, clear=VENV.exists()).create(VENV)
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(
            f"jailbake: error: cannot create .venv ({exc}); install venv support with: "
            "sudo apt-get install python3-venv"
        )
    pip = [str(_venv_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if subprocess.run([*pip, "-e", str(HERE)]).returncode != 0:
        sys.exit(
            "jailbake: error: installing dependencies failed; retry with: "
            f"{_venv_python()} -m pip install -e {HERE}"
        )
    STAMP.write_text(_deps_digest())


def main() -> None:
    in_venv = Path(sys.prefix).resolve() == VENV.resolve()
    ready = STAMP.is_file() and STAMP.read_text() == _deps_digest()
    if not ready:
        _bootstrap()
    if not in_venv:
        os.execv(str(_venv_python()), [str(_venv_python()), __file__, *sys.argv[1:]])
    sys.path.insert(0, str(HERE / "src"))
    from jailbake.cli import main as cli_main

    sys.exit(cli_main())


if __name__ == "__main__":
    main()
