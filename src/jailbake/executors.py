"""Executors run one build step: in a fresh container, or in a scratch directory on the host.

Both give the script the same variables: WORKDIR, SRC, OUT, DEPS, HOME and the
recipe's environment, with umask 022.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .core import run
from .core.errors import EngineError, StepError
from .request import ExecutorKind

log = logging.getLogger(__name__)

CONTAINER_WORKDIR = Path("/work")
CONTAINER_UID = 1000
CONTAINER_CCACHE = Path("/ccache")
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# ccache's settings for steps: hits whatever the step's path (its work directory is
# /work in every container anyway), the compiler known by its content, a bounded size.
CCACHE_SETTINGS = {
    "CCACHE_DIR": str(CONTAINER_CCACHE),
    "CCACHE_BASEDIR": "/work",
    "CCACHE_NOHASHDIR": "true",
    "CCACHE_COMPILERCHECK": "content",
    "CCACHE_UMASK": "002",
    "CCACHE_DEPEND": "true",  # no preprocessor run on a miss: kbuild passes -MMD
    "PATH": "/usr/lib/ccache:" + CONTAINER_PATH,
}
STEP_LOG = "build.log"
# Added to the engine's defaults for run_as: root steps; part of their keys.
ROOT_STEP_CAPS = ("MKNOD",)
ROOT_STEP_PRIVILEGES = "uid 0, engine default capabilities + " + ",".join(ROOT_STEP_CAPS)
WAIT_INTERVAL = 1.0  # seconds between looks at a running step container, at most
EXIT_FIFO = ".jailbake-exit"  # in a container step's work directory: its end, announced
MAX_ENGINE_ERRORS = 10  # inspections of a step's container failing in a row, at most
LABEL_HOST = "org.jailbake.host"
LABEL_PID = "org.jailbake.pid"
LABEL_PROCESS = "org.jailbake.process"  # pid namespace and start time: pids are reused


def process_identity(pid: int) -> str:
    """'<pid namespace inode>:<start time>' of a live process, '' if there is none."""
    try:
        namespace = os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return ""
    started = run.start_ticks(pid)
    return "" if started is None else f"{namespace}:{started}"


SCRIPT_PREAMBLE = 'set -eux\numask 022\ncd "$SRC"\n'


def shell_script(command: str | None) -> str:
    """What `jailbake shell` runs: the step's umask and directory, then the user's
    command or an interactive shell."""
    # A non-interactive bash drops PS1: the interactive one gets it on its command line.
    interactive = 'exec env PS1="$JAILBAKE_PS1" bash --norc --noprofile -i'
    return f'umask 022; cd "$SRC"; {command or interactive}'


def _shell_variables(step: Step) -> dict[str, str]:
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


def _variables(step: Step, root: Path) -> dict[str, str]:
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
    argv += [
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        *("--hostname", "jailbake"),
        *(["--new-session"] if new_session else []),  # no TIOCSTI into the caller's terminal
        "--die-with-parent",
        *(("--cap-drop", "ALL") if as_root else ("--unshare-user",)),
    ]
    if env_fd is not None:
        argv += ["--args", str(env_fd)]
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

    def run(self, step: Step) -> int:
        trees = []
        for name, tree in step.deps:
            (step.work / "deps" / name).symlink_to(tree)
            trees.append(tree)
        env = _variables(step, step.work)
        argv: list[str | Path] = [host_tool("bash"), step.work / "build.sh"]
        fds: tuple[int, ...] = ()
        if self.confined:
            env["TMPDIR"] = "/tmp"
            fds = (sandbox_env(run.clean_env(env)),)
            argv = [*bwrap_argv(step.work, trees, as_root=os.getuid() == 0, env_fd=fds[0]), *argv]
            env = {}
        with step.log.open("ab") as logf:
            try:
                proc = run.start(argv, cwd=step.work / "src", env=env, output=logf, pass_fds=fds)
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
        at = step.ran_at if step.ran_at is not None and self.confined else step.work
        if step.ran_at is not None and at != step.ran_at:
            log.warning(
                "%s: the step ran in %s; unconfined, the shell opens it where it is kept, "
                "and absolute paths in its build files still point there",
                step.recipe,
                step.ran_at,
            )
        env = {**_variables(step, at), **_shell_variables(step)}
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
                work_at=step.ran_at,
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


def _exited(container: Any, errors: list[Exception]) -> int | None:
    """The container's exit status if it has stopped, as the engine reports it. Podman
    can fail an inspection while the container's process is exiting ("read
    /proc/PID/cgroup: no such process"): that counts as not yet, MAX_ENGINE_ERRORS
    times in a row."""
    from docker.errors import APIError

    try:
        container.reload()
    except APIError as exc:
        if not exc.is_server_error():
            raise
        errors.append(exc)
        if len(errors) >= MAX_ENGINE_ERRORS:
            raise
        log.debug("inspecting a step's container: %s", exc)
        return None
    errors.clear()
    state = container.attrs.get("State") or {}
    if state.get("Status") in ("exited", "dead", "stopped"):
        return int(state.get("ExitCode", 1))
    return None


def _wait(container: Any, fifo: Path) -> int:
    """The container's exit status once it has stopped.

    The step's shell writes a line into a FIFO in its work directory as it ends, which
    wakes this thread at once, without the CPU that a held wait request costs on Podman
    (its API answers one by re-reading its state database in a tight loop). Only the
    engine's word counts: the line just says when to ask. Without a line (the step was
    killed, or removed the FIFO) the engine is asked every WAIT_INTERVAL.
    """
    try:
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        keep = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # no end-of-file until the step's
    except OSError:
        reader = keep = -1
    errors: list[Exception] = []
    try:
        while True:
            if reader >= 0:
                announced = bool(select.select([reader], [], [], WAIT_INTERVAL)[0])
            else:
                announced = False
                time.sleep(WAIT_INTERVAL)
            if announced:
                os.read(reader, 64)
                delay = 0.005
                for _ in range(8):  # the shell announced its end: the engine follows
                    code = _exited(container, errors)
                    if code is not None:
                        return code
                    time.sleep(delay)
                    delay *= 2
                continue
            code = _exited(container, errors)
            if code is not None:
                return code
    finally:
        for fd in (reader, keep):
            if fd >= 0:
                os.close(fd)


def _take_log(produced: Path, log_path: Path) -> None:
    """Append the log a container wrote in its work directory, which the step owned: a
    link there must not make jailbake read (and publish) a host file."""
    try:
        fd = os.open(produced, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return
    except OSError:  # a link (ELOOP) or worse: not the log jailbake asked for
        with log_path.open("a") as logf:
            print(f"jailbake: {STEP_LOG} in the work directory is not a file; ignored", file=logf)
        return
    with os.fdopen(fd, "rb") as f, log_path.open("ab") as logf:
        if stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            shutil.copyfileobj(f, logf)
    produced.unlink()


class DockerExecutor:
    """A fresh container per step: no network, a non-root user, inputs read-only."""

    kind = ExecutorKind.DOCKER

    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._client_factory = client_factory
        self._client: Any = None
        self._running: dict[str, Any] = {}
        self._cancelled = False
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
            self._remove_orphans()
        return self._client

    def _remove_orphans(self) -> None:
        """Stop the step containers of jailbake processes on this host that were killed."""
        host = os.uname().nodename
        try:
            mine = self._client.containers.list(
                all=True, filters={"label": [f"{LABEL_HOST}={host}"]}
            )
        except Exception as exc:  # listing is a courtesy; the build goes on without it
            log.debug("listing containers: %s", exc)
            return
        me = process_identity(os.getpid())
        namespace = me.split(":")[0]
        for container in mine:
            pid = container.labels.get(LABEL_PID, "")
            owner = container.labels.get(LABEL_PROCESS, "")
            if (
                not (pid.isascii() and pid.isdigit())
                or not owner
                or owner.split(":")[0] != namespace
            ):
                continue  # started from another pid namespace: not ours to judge
            if process_identity(int(pid)) != owner:
                log.info("removing container %s of a killed build", container.name)
                try:
                    container.remove(force=True)
                except Exception as exc:
                    log.debug("removing %s: %s", container.name, exc)

    def _user(self, work: Path) -> str:
        if os.getuid() != 0:
            return f"{os.getuid()}:{os.getgid()}"
        # Rootful engines do not remap uids: the step's user must own its directories.
        for dirpath, dirnames, filenames in os.walk(work):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                os.lchown(name, CONTAINER_UID, CONTAINER_UID)
        return f"{CONTAINER_UID}:{CONTAINER_UID}"

    def run(self, step: Step) -> int:
        from docker.errors import DockerException

        try:
            return self._run(step)
        except DockerException as exc:
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EngineError(f"{step.recipe}: the container engine failed: {detail}") from None

    def _container_args(self, step: Step) -> dict[str, Any]:
        """The container of a step: its mounts, user, variables, no network, and the
        capabilities its recipe may have."""
        volumes = {str(step.work): {"bind": str(CONTAINER_WORKDIR), "mode": "rw"}}
        for name, tree in step.deps:
            (step.work / "deps" / name).mkdir(exist_ok=True)
            volumes[str(tree)] = {"bind": str(CONTAINER_WORKDIR / "deps" / name), "mode": "ro"}
        user = "0:0" if step.root else self._user(step.work)
        environment = _variables(step, CONTAINER_WORKDIR)
        if step.ccache is not None:
            step.ccache.mkdir(parents=True, exist_ok=True)
            if os.getuid() == 0 and not step.root:
                os.chown(step.ccache, CONTAINER_UID, CONTAINER_UID)
            volumes[str(step.ccache)] = {"bind": str(CONTAINER_CCACHE), "mode": "rw"}
            size = os.environ.get("JAILBAKE_CCACHE_SIZE", "5G")
            environment.update(CCACHE_SETTINGS, CCACHE_MAXSIZE=size)
        # Root steps (e.g. mmdebstrap --mode=root) keep the engine's default capabilities
        # so they can chown inside their tree, plus MKNOD (in Docker's defaults, not in
        # Podman's) to unpack root file systems with device nodes; the engine's device
        # rules still refuse to open any device the container was not given.
        caps = {"cap_add": list(ROOT_STEP_CAPS)} if step.root else {"cap_drop": ["ALL"]}
        return {
            "environment": environment,
            "hostname": "jailbake",
            "labels": {
                "org.jailbake.recipe": step.recipe,
                LABEL_HOST: os.uname().nodename,
                LABEL_PID: str(os.getpid()),
                LABEL_PROCESS: process_identity(os.getpid()),
            },
            "network_mode": "none",
            "user": user,
            "volumes": volumes,
            "working_dir": str(CONTAINER_WORKDIR / "src"),
            "security_opt": ["no-new-privileges"],
            **caps,
        }

    def _start(self, image: str, command: list[str], args: dict[str, Any]) -> Any:
        """Create and start a container with the engine API's own calls: the SDK's
        containers.run inspects each new container before starting it, a round trip
        nothing here reads."""
        api = self.client.api
        host_config = api.create_host_config(
            binds=args["volumes"],
            network_mode=args["network_mode"],
            security_opt=args["security_opt"],
            cap_add=args.get("cap_add"),
            cap_drop=args.get("cap_drop"),
        )
        created = api.create_container(
            image,
            command,
            hostname=args["hostname"],
            user=args["user"],
            environment=args["environment"],
            working_dir=args["working_dir"],
            labels=args["labels"],
            host_config=host_config,
        )
        container = self.client.containers.prepare_model({"Id": created["Id"]})
        try:
            api.start(created["Id"])
        except BaseException:
            with contextlib.suppress(Exception):
                container.remove(force=True)
            raise
        return container

    def _run(self, step: Step) -> int:
        assert step.image, "a docker step needs an image"
        # The step writes its log into its work directory (readable live from the host);
        # following the engine's log stream would add a polling delay to every step.
        inner_log = CONTAINER_WORKDIR / STEP_LOG
        fifo = step.work / EXIT_FIFO
        os.mkfifo(fifo, 0o600)
        script = (
            f"bash {CONTAINER_WORKDIR / 'build.sh'} >{inner_log} 2>&1; rc=$?; "
            f"echo $rc 1<>{CONTAINER_WORKDIR / EXIT_FIFO}; exit $rc"
        )
        container = self._start(step.image, ["bash", "-c", script], self._container_args(step))
        with self._lock:
            self._running[container.id] = container
            cancelled = self._cancelled
        try:
            if cancelled:  # interrupted while this step was being set up
                raise KeyboardInterrupt
            return _wait(container, fifo)
        finally:
            fifo.unlink(missing_ok=True)
            _take_log(step.work / STEP_LOG, step.log)
            with self._lock:
                self._running.pop(container.id, None)
            try:
                container.remove(force=True)
            except Exception as exc:  # the engine may have removed it already
                log.debug("removing container: %s", exc)

    def live_log(self, step: Step) -> Path:
        return step.work / STEP_LOG  # the container writes it; jailbake appends it at the end

    def origin(self, step: Step) -> str:
        return ""

    def shell(self, step: Step, command: str | None) -> int:
        """A shell (or command) in the step's container, on the user's terminal."""
        from docker.errors import DockerException

        try:
            return self._shell(step, command)
        except DockerException as exc:
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EngineError(f"{step.recipe}: the container engine failed: {detail}") from None

    def _shell(self, step: Step, command: str | None) -> int:
        from .core import console

        assert step.image, "a docker step needs an image"
        interactive = command is None and sys.stdin.isatty() and sys.stdout.isatty()
        args = self._container_args(step)
        args["environment"].update(_shell_variables(step))
        container = self.client.containers.create(
            step.image,
            ["bash", "-c", shell_script(command)],
            stdin_open=command is None,  # a shell reads its commands, a terminal or not
            tty=interactive,
            **args,
        )
        sock = None
        try:
            sock = self.client.api.attach_socket(
                container.id,
                params={"stdin": int(command is None), "stdout": 1, "stderr": 1, "stream": 1},
            )
            container.start()
            if interactive:
                with contextlib.suppress(Exception):  # a courtesy: the shell works without
                    rows, columns = console.terminal_size()
                    container.resize(height=rows, width=columns)
            console.pump(sock, interactive=interactive, forward_stdin=command is None)
            return int(container.wait().get("StatusCode", 1))
        finally:
            if sock is not None:
                with contextlib.suppress(Exception):
                    sock.close()
            with contextlib.suppress(Exception):
                container.remove(force=True)

    def cancel(self) -> None:
        """Remove the running step containers: they are not jailbake's children, and
        would go on compiling after an interrupted build otherwise."""
        with self._lock:
            self._cancelled = True  # steps still being set up will not start
            running = {c.id: c for c in self._running.values()}
        try:  # also those created but not yet handed back by the engine
            for container in self.client.containers.list(
                all=True, filters={"label": [f"{LABEL_PID}={os.getpid()}"]}
            ):
                running.setdefault(container.id, container)
        except Exception as exc:
            log.debug("listing containers: %s", exc)
        for container in running.values():
            try:
                container.remove(force=True)
            except Exception as exc:
                log.debug("removing %s: %s", container.name, exc)
