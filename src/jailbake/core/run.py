"""The one place jailbake starts host processes."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

# Host tools see only these variables from the caller's environment.
_PASSTHROUGH = ("PATH", "HOME", "TMPDIR", "http_proxy", "https_proxy", "no_proxy")


def start_ticks(pid: int) -> int | None:
    """When a process started, in clock ticks since boot (field 22 of /proc/PID/stat):
    with its pid, what names it across pid reuse. None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment from an allow-list, pinned to a neutral locale and time zone."""
    env = {k: os.environ[k] for k in _PASSTHROUGH if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin")
    env.update({"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TZ": "UTC"})
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    check: bool = True,
    input: bytes | None = None,
    timeout: float | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run argv with a clean environment (plus env); raise CalledProcessError on failure."""
    args = [str(a) for a in argv]
    log.debug("run: %s (cwd=%s)", " ".join(args), cwd)
    return subprocess.run(
        args,
        cwd=cwd,
        env=clean_env(env),
        stdout=stdout,
        stderr=stderr,
        check=check,
        input=input,
        timeout=timeout,
        pass_fds=pass_fds,
    )


def spawn(
    argv: Sequence[str | Path], *, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start argv with a clean environment; its stdin, stdout and stderr are pipes."""
    args = [str(a) for a in argv]
    log.debug("spawn: %s (cwd=%s)", " ".join(args), cwd)
    return subprocess.Popen(
        args,
        cwd=cwd,
        env=clean_env(env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def start(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    output: IO[bytes] | int,
    new_session: bool = False,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start argv with a clean environment, no input, and stdout and stderr to output
    (a file, or subprocess.DEVNULL); new_session: out of the terminal's reach (Ctrl-C)."""
    args = [str(a) for a in argv]
    log.debug("start: %s (cwd=%s)", " ".join(args), cwd)
    return subprocess.Popen(
        args,
        cwd=cwd,
        env=clean_env(env),
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=new_session,
        pass_fds=pass_fds,
    )


def reader(
    argv: Sequence[str | Path],
    *,
    source: IO[bytes] | None = None,
    errors: IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start argv with a clean environment, to be read from its stdout; its stdin is
    source (else nothing), its stderr errors (else this process's)."""
    args = [str(a) for a in argv]
    log.debug("reader: %s", " ".join(args))
    return subprocess.Popen(
        args,
        env=clean_env(env),
        stdin=source if source is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=errors,
    )
