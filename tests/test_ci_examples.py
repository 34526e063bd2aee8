"""The CI examples stay consistent with the command line: every jailbake command
they run parses, and every file they name exists."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
import yaml

from conftest import ROOT
from jailbake.cli.grammar import COMMANDS, parser

EXAMPLES = ROOT / "ci-examples"


def shell_lines(data: Any) -> list[str]:
    """Every command line of the shell steps of a GitHub workflow or GitLab file."""
    lines: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if key in ("run", "script", "before_script") and isinstance(value, str | list):
                for block in [value] if isinstance(value, str) else value:
                    lines += [line.strip() for line in str(block).splitlines() if line.strip()]
            else:
                lines += shell_lines(value)
    elif isinstance(data, list):
        for item in data:
            lines += shell_lines(item)
    return lines


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_ci_example_commands_parse(name: str) -> None:
    data = yaml.safe_load((EXAMPLES / name).read_text())
    commands = [line for line in shell_lines(data) if "build.py" in line or "scripts/" in line]
    used = set()
    for line in commands:
        words = shlex.split(line.replace("$(", "").replace(")", ""))
        for word in words:
            if word.startswith(("scripts/", "layers/")):
                assert (ROOT / word).is_file(), f"{name}: {line}: {word} does not exist"
        if "build.py" not in words:
            continue
        argv = words[words.index("build.py") + 1 :]
        assert argv and argv[0] in COMMANDS, f"{name}: {line}"
        try:
            parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{name}: {line}: jailbake does not accept these arguments")
        used.add(argv[0])
    # They build, cache, and publish with jailbake's own commands.
    assert {"fetch", "build", "publish", "verify-release", "cve", "base-image", "repro"} <= used
