"""One build step as every executor takes it: its work directory laid out (src/,
out/, home/, deps/<name>, build.sh), the variables its script gets (WORKDIR, SRC,
OUT, DEPS, HOME, JOBS and the recipe's environment, with umask 022), and the
protocol an executor keeps."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

STEP_LOG = "build.log"


class ExecutorKind(StrEnum):
    DOCKER = "docker"
    HOST = "host"
    REMOTE = "remote"  # a Remote Execution API service (see executors.remote)


SCRIPT_PREAMBLE = 'set -eux\numask 022\ncd "$SRC"\n'


def shell_script(command: str | None) -> str:
    """What `jailbake shell` runs: the step's umask and directory, then the user's
    command or an interactive shell."""
    # A non-interactive bash drops PS1: the interactive one gets it on its command line.
    interactive = 'exec env PS1="$JAILBAKE_PS1" bash --norc --noprofile -i'
    return f'umask 022; cd "$SRC"; {command or interactive}'


def shell_variables(step: Step) -> dict[str, str]:
    return {
        "JAILBAKE_PS1": f"[jailbake {step.recipe}] \\w\\$ ",
        "TERM": os.environ.get("TERM", "dumb"),
    }


@dataclass(frozen=True)
class Step:
    """One recipe's build, laid out in work/: src/, out/, home/, deps/<name>, build.sh."""

    recipe: str
    work: Path
    deps: tuple[tuple[str, Path], ...]
    env: tuple[tuple[str, str], ...]
    log: Path
    image: str | None = None
    jobs: int = 1
    # Where the step ran, when its work directory has moved since (a kept failed step):
    # a confined host shell sees it there again, so absolute paths in build files hold.
    ran_at: Path | None = None
    root: bool = False  # uid 0 inside the container (still unprivileged on the host side)
    ccache: Path | None = None  # the builder image's compiler cache, for container steps
    # The manifests (keys.tree_manifest) of the dependencies' stored trees, by name, for
    # executors that describe their inputs by digest (remote) and need not hash again.
    dep_manifests: tuple[tuple[str, tuple[dict[str, Any], ...]], ...] = ()
    # Run it, even where the executor keeps results of its own (a forced build).
    fresh: bool = False


def write_script(work: Path, script: str) -> None:
    (work / "build.sh").write_text(SCRIPT_PREAMBLE + script.rstrip("\n") + "\n")
    for sub in ("src", "out", "home", "deps"):
        (work / sub).mkdir(exist_ok=True)


def variables(step: Step, root: Path) -> dict[str, str]:
    env = dict(step.env)
    env.update(
        {
            "WORKDIR": str(root),
            "SRC": str(root / "src"),
            "OUT": str(root / "out"),
            "DEPS": str(root / "deps"),
            "HOME": str(root / "home"),
            "JOBS": str(step.jobs),
            "TZ": "UTC",
            "LC_ALL": "C.UTF-8",
            "LANG": "C.UTF-8",
        }
    )
    return env


class Executor(Protocol):
    kind: ExecutorKind

    def run(self, step: Step) -> int:
        """Run step's build.sh; return its exit status. Output goes to step.log."""
        ...

    def live_log(self, step: Step) -> Path:
        """Where the step's output can be read while it runs."""
        ...

    def origin(self, step: Step) -> str:
        """Where the finished step's result came from if it did not run ('' if it ran)."""
        ...

    def shell(self, step: Step, command: str | None) -> int:
        """Run command (or an interactive shell) in the step's environment."""
        ...

    def cancel(self) -> None:
        """Stop every step still running (the build was interrupted)."""
        ...
