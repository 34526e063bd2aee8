"""The host executor: a step in a scratch directory on this machine, under
bubblewrap where it works here (the host read-only, no network), otherwise
unconfined and said so."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path

from ..core import run
from ..core.errors import StepError
from . import disorder
from .step import (
    LOCALE_PROBE,
    VARIED_CLOCK,
    VARIED_HOSTNAME,
    VARIED_LOCALE,
    VARIED_PATH,
    VARIED_UID,
    ExecutorKind,
    Step,
    Vary,
    first_cpu,
    shell_script,
    shell_variables,
    variables,
)

log = logging.getLogger(__name__)


# Where a confined step sees its work directory, whatever scratch directory holds it:
# a build that records its path records the same one on every machine and every run.
HOST_PLACE = Path("/var/tmp/jailbake-step")
HOSTNAME = "jailbake"
UNCONFINED_WARNING = (
    "host steps run UNCONFINED: as {user}, with the network and write access to "
    "everything {user} may write, dependencies' cached trees included ({why}; "
    "install bubblewrap to confine them)"
)


def bwrap_argv(
    work: Path | None,
    trees: list[Path],
    *,
    as_root: bool,
    new_session: bool = True,
    work_at: Path | None = None,
    env_fd: int | None = None,
    hostname: str = HOSTNAME,
    uid: int | None = None,
) -> list[str]:
    """bubblewrap around a host step: the host read-only, the step's work directory and
    nothing else writable, its dependencies read-only, no network, a fresh /tmp, and
    none of the host's service sockets (a socket on a read-only mount still connects).

    bwrap itself is found on jailbake's own PATH and started with jailbake's clean
    environment: the step's variables (a recipe's PATH or LD_PRELOAD among them) are
    set inside the sandbox only, read by bwrap from env_fd (see sandbox_env), never
    given to the process that builds it nor shown in its command line."""
    argv = [
        host_tool("bwrap"),
        *("--ro-bind", "/", "/"),
        *("--dev", "/dev", "--proc", "/proc"),
    ]
    for hidden in _hidden_dirs():
        argv += ["--tmpfs", hidden]
    if work is not None:
        at = work_at or work
        if work_at is not None:  # a place to mount it on, whatever the host holds there
            argv += ["--tmpfs", str(work_at.parent)]
        argv += ["--bind", str(work), str(at), "--chdir", str(at / "src")]
    for tree in trees:  # they may lie below a hidden directory
        argv += ["--ro-bind", str(tree), str(tree)]
    argv += _isolation(as_root=as_root, new_session=new_session, hostname=hostname)
    if uid is not None:  # a user namespace with this uid and gid (root's too)
        argv += [*(() if "--unshare-user" in argv else ("--unshare-user",)),
                 "--uid", str(uid), "--gid", str(uid)]  # fmt: skip
    if env_fd is not None:
        argv += ["--args", str(env_fd)]
    return argv


def _isolation(*, as_root: bool, new_session: bool, hostname: str = HOSTNAME) -> list[str]:
    """What every sandbox of jailbake's is cut off from: the network, other processes,
    IPC, the host name, the caller's terminal (no TIOCSTI) and, as root, every
    capability; it dies with jailbake."""
    return [
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        *("--hostname", hostname),
        *(["--new-session"] if new_session else []),
        "--die-with-parent",
        *(("--cap-drop", "ALL") if as_root else ("--unshare-user",)),
    ]


def tree_argv(
    root: Path,
    binds: Mapping[Path, str],
    *,
    writable: Mapping[Path, str] | None = None,
    as_root: bool,
    new_session: bool = True,
) -> list[str]:
    """bubblewrap running a program of a built tree (a recipe's Debian file system,
    such as QEMU's) with that tree as its /, read-only: nothing of the host is in it
    but binds (host path -> path inside, read-only) and writable, each mounted below
    /run; no network, a fresh /tmp, the basic devices, a clean environment."""
    argv = [
        host_tool("bwrap"),
        *("--ro-bind", str(root), "/"),
        *("--dev", "/dev", "--proc", "/proc"),
        *("--tmpfs", "/tmp", "--tmpfs", "/var/tmp", "--tmpfs", "/run"),
    ]
    for mounts, option in ((binds, "--ro-bind"), (writable or {}, "--bind")):
        for host_path, inside in mounts.items():
            if not inside.startswith("/run/") or ".." in inside.split("/"):
                raise ValueError(f"a sandbox mount point below /run, not {inside!r}")
            argv += [option, str(host_path), inside]
    argv += [
        *_isolation(as_root=as_root, new_session=new_session),
        "--clearenv",
        *("--setenv", "PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        *("--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/var/tmp"),
        *("--setenv", "TERM", os.environ.get("TERM", "dumb")),
        *("--chdir", "/run"),
    ]
    return argv


def sandbox_env(env: Mapping[str, str]) -> int:
    """A file descriptor holding bwrap's arguments (NUL-separated, for --args) that
    give the sandbox exactly env: secrets in a step's variables stay out of every
    process's command line. The caller closes it once bwrap has started."""
    args = ["--clearenv"]
    for key, value in sorted(env.items()):
        args += ["--setenv", key, value]
    fd = os.memfd_create("jailbake-step-env")  # close-on-exec unless passed
    os.write(fd, b"".join(os.fsencode(a) + b"\0" for a in args))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def host_tool(name: str) -> str:
    """A host program by absolute path, looked up on jailbake's own PATH: a step's
    variables never choose which program runs on the host."""
    return shutil.which(name, path=run.clean_env()["PATH"]) or name


def _hidden_dirs() -> list[str]:
    """Directories a host step sees empty: scratch space, and where the sockets of
    services live (the container engine's among them)."""
    candidates = ["/tmp", "/var/tmp", "/run", "/var/run", "/dev/shm"]
    for var in ("XDG_RUNTIME_DIR", "DOCKER_HOST"):
        value = os.environ.get(var, "").removeprefix("unix://")
        if value.startswith("/"):
            candidates.append(value if var == "XDG_RUNTIME_DIR" else os.path.dirname(value))
    hidden: list[str] = []
    for path in candidates:
        # A link (/var/run -> /run) is hidden through its target; "/" cannot be.
        if path != "/" and os.path.isdir(path) and not os.path.islink(path):
            hidden.append(os.path.normpath(path))
    return sorted(set(hidden), key=lambda p: (p.count("/"), p))


class HostExecutor:
    """The container contract in a scratch directory on this machine: under bubblewrap
    when it works here, otherwise unconfined (and said so, once per build)."""

    kind = ExecutorKind.HOST

    def __init__(self, *, sandbox: bool = True) -> None:
        self._want_sandbox = sandbox
        self._sandbox: bool | None = None
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._cancelled = False
        self._probing: threading.Thread | None = None
        self._probed: str | None = None  # what the probing thread found

    def start_probe(self) -> None:
        """Start the probe (see confined) on a thread, which waits for bubblewrap on
        another core while the build gets ready: the first step needs the answer only
        later."""
        with self._lock:
            if self._sandbox is None and self._probing is None:
                self._probing = threading.Thread(
                    target=self._probe_ahead, name="jailbake-probe", daemon=True
                )
                self._probing.start()

    def _probe_ahead(self) -> None:
        try:
            self._probed = self._probe()
        except Exception as exc:  # confined probes again and says why
            log.debug("bwrap probe: %s", exc)

    @property
    def confined(self) -> bool:
        """Whether steps run under bubblewrap; probed once."""
        with self._lock:
            if self._sandbox is None:
                if self._probing is not None:
                    self._probing.join()
                # A probe that failed to run at all says why here.
                why = self._probe() if self._probed is None else self._probed
                self._sandbox = not why
                if why:
                    user = "root" if os.getuid() == 0 else f"uid {os.getuid()}"
                    log.warning(UNCONFINED_WARNING.format(user=user, why=why))
            return self._sandbox

    def _probe(self) -> str:
        """Why steps cannot be confined here ('' if they can)."""
        if not self._want_sandbox:
            return "confinement was turned off"
        if shutil.which(host_tool("bwrap")) is None:
            return "bubblewrap (bwrap) is not installed"
        fd = sandbox_env({})  # bwrap 0.5 or later: --clearenv
        try:
            cp = run.run(
                [*bwrap_argv(None, [], as_root=os.getuid() == 0, env_fd=fd), "true"],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(fd,),
            )
        finally:
            os.close(fd)
        if cp.returncode != 0:
            detail = cp.stderr.decode(errors="replace").strip().splitlines()
            return f"bwrap does not work here: {detail[-1] if detail else cp.returncode}"
        return ""

    def place(self, step: Step) -> Path:
        """Where the step sees its work directory: HOST_PLACE when confined (deeper
        with build_path varied), where it is otherwise."""
        if not self.confined:
            return step.work
        return HOST_PLACE / VARIED_PATH if Vary.BUILD_PATH in step.vary else HOST_PLACE

    def cannot_vary(self, step: Step) -> dict[Vary, str]:
        why: dict[Vary, str] = {}
        if not self.confined:
            for vary in (Vary.BUILD_PATH, Vary.DOMAIN_HOST, Vary.USER_GROUP, Vary.FILEORDERING):
                why[vary] = "host steps run unconfined here (no bubblewrap)"
        if shutil.which(host_tool("faketime")) is None:
            why[Vary.TIME] = "faketime is not installed"
        if shutil.which(host_tool("taskset")) is None:
            why[Vary.NUM_CPUS] = "taskset is not installed"
        if Vary.FILEORDERING not in why and (reason := disorder.unavailable()):
            why[Vary.FILEORDERING] = reason
        if Vary.LOCALES in step.vary and not _has_varied_locale():
            why[Vary.LOCALES] = f"the {VARIED_LOCALE} locale is not installed here"
        return {k: v for k, v in why.items() if k in step.vary}

    def run(self, step: Step) -> int:
        with contextlib.ExitStack() as stack:
            work = step.work
            if Vary.FILEORDERING in step.vary:
                work = stack.enter_context(disorder.disordered(step.work))
            return self._run(step, work)

    def _run(self, step: Step, work: Path) -> int:
        trees = []
        for name, tree in step.deps:
            (step.work / "deps" / name).symlink_to(tree)
            trees.append(tree)
        place = self.place(step)
        env = variables(step, place)
        argv: list[str | Path] = [host_tool("bash"), place / "build.sh"]
        if Vary.TIME in step.vary:
            argv = [host_tool("faketime"), "-f", VARIED_CLOCK, *argv]
        fds: tuple[int, ...] = ()
        if self.confined:
            env["TMPDIR"] = "/tmp"
            fds = (sandbox_env(run.clean_env(env)),)
            sandbox = bwrap_argv(
                work,
                trees,
                as_root=os.getuid() == 0,
                work_at=place,
                env_fd=fds[0],
                hostname=VARIED_HOSTNAME if Vary.DOMAIN_HOST in step.vary else HOSTNAME,
                uid=VARIED_UID if Vary.USER_GROUP in step.vary else None,
            )
            argv = [*sandbox, *argv]
            env = {}
        if Vary.NUM_CPUS in step.vary:
            argv = [host_tool("taskset"), "--cpu-list", str(first_cpu()), *argv]
        with step.log.open("ab") as logf:
            try:
                proc = run.start(argv, cwd=work / "src", env=env, output=logf, pass_fds=fds)
            except OSError as exc:
                raise StepError(f"{step.recipe}: cannot start its step: {exc.strerror}") from None
            finally:
                for fd in fds:
                    os.close(fd)
            with self._lock:
                self._running.add(proc)
                cancelled = self._cancelled
            try:
                if cancelled:  # interrupted while this step was being set up
                    proc.kill()
                return proc.wait()
            finally:
                with self._lock:
                    self._running.discard(proc)

    def live_log(self, step: Step) -> Path:
        return step.log

    def origin(self, step: Step) -> str:
        return ""

    def shell(self, step: Step, command: str | None) -> int:
        """A shell (or command) in the step's environment, on the user's terminal."""
        trees = []
        for name, tree in step.deps:
            link = step.work / "deps" / name
            if not os.path.lexists(link):
                link.symlink_to(tree)
            trees.append(tree)
        at = step.work
        if self.confined:
            at = step.ran_at if step.ran_at is not None else self.place(step)
        if step.ran_at is not None and at != step.ran_at:
            log.warning(
                "%s: the step ran in %s; unconfined, the shell opens it where it is kept, "
                "and absolute paths in its build files still point there",
                step.recipe,
                step.ran_at,
            )
        env = {**variables(step, at), **shell_variables(step)}
        argv: list[str | Path] = [host_tool("bash"), "-c", shell_script(command)]
        fds: tuple[int, ...] = ()
        if self.confined:
            env["TMPDIR"] = "/tmp"
            fds, env = (sandbox_env(run.clean_env(env)),), {}
            # The user's own shell: it keeps the terminal (no session of its own).
            sandbox = bwrap_argv(
                step.work,
                trees,
                as_root=os.getuid() == 0,
                new_session=False,
                work_at=at,
                env_fd=fds[0],
            )
            argv = [*sandbox, *argv]
        # Ctrl-C belongs to the shell and what runs in it, not to jailbake waiting for it
        # (a handler, unlike SIG_IGN, is not inherited by the shell).
        previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
        try:
            return run.run(
                argv, cwd=step.work / "src", env=env, check=False, pass_fds=fds
            ).returncode
        finally:
            signal.signal(signal.SIGINT, previous)
            for fd in fds:
                os.close(fd)

    def cancel(self) -> None:
        """Stop the running steps: confined ones run in a session of their own and do not
        get the terminal's Ctrl-C."""
        with self._lock:
            self._cancelled = True
            running = list(self._running)
        for proc in running:
            with contextlib.suppress(OSError):
                proc.kill()


@functools.cache
def _has_varied_locale() -> bool:
    """Whether this machine has the locale the locales variation runs host steps in."""
    return run.run(["sh", "-c", LOCALE_PROBE], check=False).returncode == 0
