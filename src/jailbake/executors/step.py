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


SCRIPT_PREAMBLE = 'set -eux\numask {umask}\ncd "$SRC"\n'
STEP_UMASK = "022"


class Vary(StrEnum):
    """What `jailbake repro` changes in a step's environment when it builds a recipe
    again, named as reprotest names its variations."""

    BUILD_PATH = "build_path"  # where the step sees its work directory
    TIME = "time"  # the clock, VARIED_CLOCK ahead (faketime)
    TIMEZONE = "timezone"  # TZ
    UMASK = "umask"  # the script's umask
    LOCALES = "locales"  # LC_ALL, LANG, LANGUAGE
    DOMAIN_HOST = "domain_host"  # the host name
    USER_GROUP = "user_group"  # the step's uid and gid
    NUM_CPUS = "num_cpus"  # the CPUs the step may use, and $JOBS
    FILEORDERING = "fileordering"  # the order directories list their entries (disorderfs)


# The values a varied step gets; the first build's are the step's usual ones.
VARIED_PATH = "jailbake-repro/a-much-longer/build-path"  # below the usual place
VARIED_CLOCK = "+1111d"  # faketime's offset: three years and a month ahead
VARIED_TZ = "REP-14"  # a POSIX zone 14 hours east of UTC (no tzdata needed)
VARIED_LOCALE = "fr_CH.UTF-8"
# A shell test that VARIED_LOCALE is installed (`locale -a` calls it fr_CH.utf8): without
# it the C library falls back to C, and only the variables would vary.
LOCALE_PROBE = "locale -a 2>/dev/null | grep -qix 'fr_CH[.]utf-*8'"
VARIED_HOSTNAME = "jailbake-repro-varied"
VARIED_UMASK = "002"
VARIED_UID = 1001


def parse_vary(words: str) -> frozenset[Vary]:
    """NAME[,NAME...] or 'all'; ValueError naming what is known."""
    chosen: set[Vary] = set()
    for word in (w.strip() for w in words.split(",")):
        if word == "all":
            chosen |= set(Vary)
        elif word in Vary.__members__.values():
            chosen.add(Vary(word))
        else:
            known = ", ".join(v.value for v in Vary)
            raise ValueError(f"unknown variation {word!r}; known: all, {known}")
    return frozenset(chosen)


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
    # What differs from the step's usual environment (jailbake repro).
    vary: frozenset[Vary] = frozenset()
    # A rebuild nobody keeps (jailbake repro): an executor neither answers it from its
    # own results nor keeps its result.
    scratch: bool = False


def write_script(work: Path, script: str, *, umask: str = STEP_UMASK) -> None:
    preamble = SCRIPT_PREAMBLE.format(umask=umask)
    (work / "build.sh").write_text(preamble + script.rstrip("\n") + "\n")
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
            **step_locale(step.vary),
        }
    )
    if Vary.TIME in step.vary:  # the clock moves; files keep the times they have
        env["NO_FAKE_STAT"] = "1"
    return env


def step_locale(vary: frozenset[Vary]) -> dict[str, str]:
    """TZ and the locale of a step (varied for jailbake repro)."""
    env = {"TZ": "UTC", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    if Vary.TIMEZONE in vary:
        env["TZ"] = VARIED_TZ
    if Vary.LOCALES in vary:
        env.update(LC_ALL=VARIED_LOCALE, LANG=VARIED_LOCALE, LANGUAGE="fr_CH:fr")
    return env


def first_cpu() -> int:
    """The CPU a step with num_cpus varied runs on: the first this process may use."""
    return min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0


def varied_jobs(jobs: int, cores: int) -> int:
    """$JOBS of a step with num_cpus varied: one CPU where the machine has more, else
    more jobs than CPUs."""
    return 1 if cores > 1 and jobs > 1 else jobs + 3


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

    def place(self, step: Step) -> Path:
        """Where the step sees its work directory."""
        ...

    def cannot_vary(self, step: Step) -> dict[Vary, str]:
        """The variations of step.vary this executor cannot make here, and why."""
        ...
