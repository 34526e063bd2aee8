"""The docker executor: a fresh container per step from its builder image, no
network, a non-root user, inputs read-only; through the Docker Engine API (Docker
or Podman)."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core import run
from ..core.errors import EngineError
from . import disorder
from .step import (
    LOCALE_PROBE,
    STEP_LOG,
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

CONTAINER_WORKDIR = Path("/work")
# What cannot_vary asks of a builder image, as shell tests.
IMAGE_PROBES = {"faketime": "command -v faketime", "locale": LOCALE_PROBE}
CONTAINER_UID = 1000
CONTAINER_CCACHE = Path("/ccache")
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# ccache's settings for steps: the compiler known by its content, a bounded size. No
# base_dir: ccache would make the compiler's absolute paths relative, and what a build
# makes would depend on the cache (modpost's srcversion of an out-of-tree module only
# hashes the headers its dependency files name by the module's absolute directory).
# The current directory is hashed where it reaches the output (debug information).
CCACHE_SETTINGS = {
    "CCACHE_DIR": str(CONTAINER_CCACHE),
    "CCACHE_COMPILERCHECK": "content",
    "CCACHE_UMASK": "002",
    "CCACHE_DEPEND": "true",  # no preprocessor run on a miss: kbuild passes -MMD
    "PATH": "/usr/lib/ccache:" + CONTAINER_PATH,
}
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
        self._probed: dict[tuple[str, str], bool] = {}  # (image, probe): whether it passed
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

    def _user(self, work: Path, uid: int = CONTAINER_UID) -> str:
        if os.getuid() != 0:
            return f"{os.getuid()}:{os.getgid()}"
        # Rootful engines do not remap uids: the step's user must own its directories.
        for dirpath, dirnames, filenames in os.walk(work):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                os.lchown(name, uid, uid)
        return f"{uid}:{uid}"

    def place(self, step: Step) -> Path:
        """/work, or deeper with build_path varied."""
        return (
            CONTAINER_WORKDIR / VARIED_PATH if Vary.BUILD_PATH in step.vary else CONTAINER_WORKDIR
        )

    def cannot_vary(self, step: Step) -> dict[Vary, str]:
        why: dict[Vary, str] = {}
        if step.root:
            why[Vary.USER_GROUP] = "the recipe runs as root (run_as: root)"
        elif os.getuid() != 0:
            why[Vary.USER_GROUP] = "a rootless engine maps the step to the caller's uid"
        if Vary.FILEORDERING in step.vary and (reason := disorder.unavailable()):
            why[Vary.FILEORDERING] = reason
        if Vary.TIME in step.vary and step.image and not self._image_has(step.image, "faketime"):
            why[Vary.TIME] = f"the builder image {step.image} has no faketime"
        if Vary.LOCALES in step.vary and step.image and not self._image_has(step.image, "locale"):
            why[Vary.LOCALES] = f"the builder image {step.image} has no {VARIED_LOCALE} locale"
        return {k: v for k, v in why.items() if k in step.vary}

    def _image_has(self, image: str, what: str) -> bool:
        """Whether a builder image has faketime, or the varied locale (a probe container,
        once per image)."""
        with self._lock:
            known = self._probed.get((image, what))
        if known is None:  # not containers.run: its log stream can hang on Podman
            probe = self.client.containers.create(
                image, ["sh", "-c", IMAGE_PROBES[what]], network_mode="none"
            )
            try:
                probe.start()
                known = int(probe.wait().get("StatusCode", 1)) == 0
            finally:
                with contextlib.suppress(Exception):
                    probe.remove(force=True)
            with self._lock:
                self._probed[(image, what)] = known
        return known

    def run(self, step: Step) -> int:
        from docker.errors import DockerException

        try:
            return self._run(step)
        except DockerException as exc:
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EngineError(f"{step.recipe}: the container engine failed: {detail}") from None

    def _container_args(self, step: Step, work: Path | None = None) -> dict[str, Any]:
        """The container of a step: its mounts, user, variables, no network, and the
        capabilities its recipe may have; work: where the step's work directory is seen
        from the host, if not where it is (disordered)."""
        place = self.place(step)
        volumes = {str(work or step.work): {"bind": str(place), "mode": "rw"}}
        for name, tree in step.deps:
            (step.work / "deps" / name).mkdir(exist_ok=True)
            volumes[str(tree)] = {"bind": str(place / "deps" / name), "mode": "ro"}
        uid = VARIED_UID if Vary.USER_GROUP in step.vary else CONTAINER_UID
        user = "0:0" if step.root else self._user(step.work, uid)
        environment = variables(step, place)
        if step.ccache is not None:
            step.ccache.mkdir(parents=True, exist_ok=True)
            if os.getuid() == 0 and not step.root:
                os.chown(step.ccache, uid, uid)
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
            "hostname": VARIED_HOSTNAME if Vary.DOMAIN_HOST in step.vary else "jailbake",
            "cpuset_cpus": str(first_cpu()) if Vary.NUM_CPUS in step.vary else None,
            "labels": {
                "org.jailbake.model.recipe": step.recipe,
                LABEL_HOST: os.uname().nodename,
                LABEL_PID: str(os.getpid()),
                LABEL_PROCESS: process_identity(os.getpid()),
            },
            "network_mode": "none",
            "user": user,
            "volumes": volumes,
            "working_dir": str(place / "src"),
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
            cpuset_cpus=args.get("cpuset_cpus"),
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
        with contextlib.ExitStack() as stack:
            work = None
            if Vary.FILEORDERING in step.vary:
                work = stack.enter_context(disorder.disordered(step.work))
            return self._run_in(step, work)

    def _run_in(self, step: Step, work: Path | None) -> int:
        assert step.image, "a docker step needs an image"
        # The step writes its log into its work directory (readable live from the host);
        # following the engine's log stream would add a polling delay to every step.
        place = self.place(step)
        inner_log = place / STEP_LOG
        fifo = step.work / EXIT_FIFO
        os.mkfifo(fifo, 0o600)
        clock = f"faketime -f {VARIED_CLOCK} " if Vary.TIME in step.vary else ""
        script = (
            f"{clock}bash {place / 'build.sh'} >{inner_log} 2>&1; rc=$?; "
            f"echo $rc 1<>{place / EXIT_FIFO}; exit $rc"
        )
        args = self._container_args(step, work)
        container = self._start(step.image, ["bash", "-c", script], args)
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
        from ..core import console

        assert step.image, "a docker step needs an image"
        interactive = command is None and sys.stdin.isatty() and sys.stdout.isatty()
        args = self._container_args(step)
        args["environment"].update(shell_variables(step))
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
