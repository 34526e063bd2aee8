"""The one way jailbake runs git: URLs checked by scheme, operands after `--`, and a
fixed configuration that no repository or remote can widen.

A layer or recipe names git repositories, a lock file pins them, a mirror list
points at them: each such string is checked here before it reaches git's argument
list, so that it can only ever be read as a repository, never as an option."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from . import run as _run

SCHEMES = ("https", "http", "ssh", "git", "file")

# Given to every git jailbake starts. GIT_ALLOW_PROTOCOL is the strictest form of
# git's protocol policy: it also binds submodules and redirects, and refuses `ext::`
# and `fd::` whatever a configuration says.
ENV = {
    "GIT_ALLOW_PROTOCOL": ":".join(SCHEMES),
    "GIT_PROTOCOL_FROM_USER": "0",
    "GIT_TERMINAL_PROMPT": "0",  # no prompt for a password on a terminal
}
CONFIG = (
    "protocol.allow=never",
    *(f"protocol.{scheme}.allow=always" for scheme in SCHEMES),
    "core.hooksPath=/dev/null",  # no hook of any repository runs
    "core.fsmonitor=false",
    "commit.gpgSign=false",  # no gpg.program runs
    "tag.gpgSign=false",
)

_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_HOST = re.compile(r"[A-Za-z0-9_.~\[\]:-]*")


def argv(*args: str | Path) -> list[str | Path]:
    """git with jailbake's fixed configuration, then args."""
    config: list[str | Path] = []
    for item in CONFIG:
        config += ["-c", item]
    return ["git", *config, *args]


def run(
    *args: str | Path,
    check: bool = True,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run git args (operands after `--`, see operands) through run.run."""
    return _run.run(
        argv(*args),
        check=check,
        cwd=cwd,
        env={**ENV, **(env or {})},
        stdout=stdout,
        stderr=stderr,
        timeout=timeout,
    )


def url_problem(url: str) -> str | None:
    """Why url cannot name a git repository for jailbake, or None if it can."""
    if not url:
        return "expected a git URL, got an empty string"
    if _CONTROL.search(url.replace(" ", "") if url.startswith("/") else url):
        return f"expected a URL without spaces or control characters, got {url!r}"
    if url.startswith("-"):
        return f"expected a URL, got {url!r}, which git would read as an option"
    if url.startswith("/"):
        return None  # a repository on this machine, by absolute path (spaces allowed)
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        return f"expected a URL with scheme {', '.join(SCHEMES)} (or an absolute path), got {url!r}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (a port that is no number raises here)
    except ValueError:
        return f"expected a URL with a host name, got {url!r}"
    user, _, host = parts.netloc.rpartition("@")
    if user.startswith("-"):  # ssh would read it as an option
        return f"expected a user name after {scheme}://, got {url!r}"
    if scheme.lower() == "file":
        if host or not parts.path.startswith("/"):
            return f"expected file:///absolute/path, got {url!r}"
        return None
    if not host or host.startswith("-") or not _HOST.fullmatch(host):
        return f"expected a host name after {scheme}://, got {url!r}"
    return None


_REF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/+-]*")


def ref_problem(name: str) -> str | None:
    """Why name cannot be a branch or tag name for jailbake, or None if it can."""
    if (
        not _REF.fullmatch(name)
        or ".." in name
        or "//" in name
        or name.endswith((".", "/", ".lock"))
        or "/." in name
    ):
        return f"expected a branch or tag name (letters, digits, ._/+-), got {name!r}"
    return None


def operands(*values: str | Path) -> Sequence[str | Path]:
    """Operands (repositories, refs) after `--`: git never reads them as options."""
    return ["--", *values]


def checkout_state(path: Path) -> tuple[str, bool] | None:
    """(commit, dirty) of the git work tree holding path: its HEAD, and whether any
    tracked file differs from it or an untracked file is not ignored. None outside
    a work tree, or in one without a commit."""
    where = path if path.is_dir() else path.parent
    head = run("-C", where, "rev-parse", "--verify", "-q", "HEAD^{commit}", check=False,
               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    commit = head.stdout.decode(errors="replace").strip()
    if head.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit):
        return None
    status = run("-C", where, "status", "--porcelain", check=False,
                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    return commit, status.returncode != 0 or bool(status.stdout.strip())
