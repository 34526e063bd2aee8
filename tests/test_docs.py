"""The manual: it builds with MkDocs in strict mode (a broken link, a missing anchor or
a page left out of the navigation is an error), and its command-line reference and
man page are what the grammar says today."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SRC


def generated(flag: str, tmp_path: Path) -> str:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    subprocess.run(
        [sys.executable, "-m", "jailbake.cli.manual", flag, str(out)],
        env={**env, "PYTHONPATH": str(SRC)},
        check=True,
    )
    return out.read_text()


@pytest.mark.parametrize(
    ("flag", "committed"),
    [("--markdown", "docs/reference/cli.md"), ("--man", "docs/man/jailbake.1")],
)
def test_the_committed_reference_is_what_the_grammar_says(
    flag: str, committed: str, tmp_path: Path
) -> None:
    """Regenerate with: python -m jailbake.cli.manual --markdown docs/reference/cli.md
    --man docs/man/jailbake.1"""
    assert (ROOT / committed).read_text() == generated(flag, tmp_path)


def test_the_reference_lists_every_command_and_flag() -> None:
    from jailbake.cli.grammar import COMMANDS, parser

    text = (ROOT / "docs/reference/cli.md").read_text()
    sub = parser()._subparsers
    assert sub is not None
    for name in COMMANDS:
        assert f"## {name}\n" in text
    for action in parser()._actions:
        for option in action.option_strings:
            assert option in text or option in ("-h", "--help")


def test_the_manual_builds_strictly(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).parent / "mkdocs"
    if not mkdocs.exists():
        pytest.fail(f"{mkdocs} is missing: pip install -e '.[test]' installs MkDocs")
    site = tmp_path / "site"
    run = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert (site / "reference" / "cli" / "index.html").is_file()
    assert (site / "architecture" / "index.html").is_file()


def test_the_manual_finds_a_broken_link(tmp_path: Path) -> None:
    """The strict build is a link check: a page linking to a missing one fails it."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[gone](missing.md)\n")
    (tmp_path / "mkdocs.yml").write_text(
        "site_name: x\nstrict: true\nvalidation:\n  anchors: warn\n"
    )
    run = subprocess.run(
        [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0
    assert "missing.md" in run.stderr


def test_the_readme_is_a_first_read() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in ("docs/README.md", "docs/architecture.md", "docs/reference/cli.md"):
        assert f"]({page})" in readme, page
