#!/usr/bin/env python3
"""jailbake from a checkout: `python3 build.py [build] [CONFIG] [options]`.

On first use it creates .venv with jailbake's dependencies, then runs the
`jailbake` command line from src/ with it.
"""

from __future__ import annotations

import hashlib
import os
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
VENV = os.path.join(HERE, ".venv")
STAMP = os.path.join(VENV, ".jailbake-deps")


def _deps_digest() -> str:
    with open(os.path.join(HERE, "pyproject.toml"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _venv_python() -> str:
    return os.path.join(VENV, "bin", "python3")


def _ready() -> bool:
    try:
        with open(STAMP) as f:
            return f.read() == _deps_digest()
    except OSError:
        return False


def _bootstrap() -> None:
    """Create .venv and install the dependencies listed in pyproject.toml."""
    import subprocess
    import venv

    print("[jailbake] installing dependencies into .venv (first run)", file=sys.stderr)
    try:
        venv.EnvBuilder(with_pip=True, clear=os.path.exists(VENV)).create(VENV)
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
    with open(STAMP, "w") as f:
        f.write(_deps_digest())


def main() -> None:
    in_venv = os.path.realpath(sys.prefix) == os.path.realpath(VENV)
    if not _ready():
        _bootstrap()
    if not in_venv:
        os.execv(_venv_python(), [_venv_python(), __file__, *sys.argv[1:]])
    sys.path.insert(0, os.path.join(HERE, "src"))
    from jailbake.cli import main as cli_main

    sys.exit(cli_main())


if __name__ == "__main__":
    main()
