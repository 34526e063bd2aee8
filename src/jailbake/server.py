"""`jailbake server`: a resident process that keeps jailbake and its libraries loaded and
runs each command sent to it in a fork of itself, as BitBake's server does.

What a command costs before its first real step is mostly Python importing jailbake,
kas, doit, PyYAML and the Docker SDK. A fork of a process that holds them starts with
all of that done. Each command still runs in a process of its own, with the sender's
arguments, working directory, environment, umask and standard streams; nothing one
command does stays in the server for the next.

The server takes a command only from its own user (the socket's directory is private,
and the peer's uid is checked), only from the same interpreter, module search path,
jailbake package and groups, and only while every module it holds is the file it
loaded: an edited, upgraded or reinstalled module makes it refuse the command (which
then runs in its sender) and shut down. It also shuts down after its idle timeout.

The fork takes on what the sender's own Python would have: its standard streams as that
Python set them up (encoding, errors, buffering), its locale, the signals it ignores
(nohup), its resource limits and priority. It runs in a session of its own: it has no
controlling terminal, so nothing in it can be stopped for reading one, and a prompt
that opens /dev/tty (ssh's) does not reach the user: run such a command with
JAILBAKE_SERVER=off.
"""

from __future__ import annotations

import array
import ast
import contextlib
import fcntl
import gc
import importlib
import io
import json
import locale
import logging
import os
import pkgutil
import resource
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import rendezvous
from .errors import JailbakeError
from .run import start_ticks
from .seal import path_stamp

log = logging.getLogger(__name__)
Command = Callable[[list[str]], int]  # argv -> exit status

REQUEST_BYTES = 4 << 20  # the environment comes with the command
LOG = "server.log"  # what a server in the background says: refused commands, its stop
# Loaded in the server: all of jailbake but the Remote Execution client (gRPC must not
# be forked with its threads running), and what jailbake loads only when it needs it.
NOT_PRELOADED = ("jailbake.reapi", "jailbake.remoteexec", "jailbake.remotetree", "jailbake._protos")
LIBRARIES = (
    "concurrent.futures",
    "doit.control",
    "doit.dependency",
    "doit.runner",
    "doit.task",
    "docker.client",
    "docker.errors",
    "jsonschema",
    "kas.configschema",
    "kas.context",
    "kas.includehandler",
    "kas.kasusererror",
    "requests",
    "requests.adapters",
    "tempfile",
    "tqdm",
    "urllib3.util.retry",
    "yaml",
)


@dataclass(frozen=True)
class State:
    """What `jailbake server status` shows of a running server."""

    pid: int
    started: float
    idle_minutes: float
    socket: str
    log: str
    ticks: int  # the process's start time, in clock ticks since boot: the pid is this one
    served: int = 0  # commands run so far

    @staticmethod
    def read(where: str) -> State | None:
        """The running server's state; None if no server runs here."""
        state = os.path.join(where, rendezvous.STATE)
        try:
            with open(os.path.join(where, rendezvous.LOCK), "a+b") as lock:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
                with contextlib.suppress(OSError):  # what a killed server left
                    os.unlink(state)
            return None  # no server holds the lock
        except BlockingIOError:
            pass
        except OSError:
            return None
        try:
            with open(state) as f:
                data = json.load(f)
            found = State(**data)
        except (OSError, ValueError, TypeError):
            return None
        return found if found.pid > 0 and start_ticks(found.pid) == found.ticks else None

    def save(self, where: str) -> None:
        tmp = os.path.join(where, f".{rendezvous.STATE}.{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(asdict(self), f)
        os.replace(tmp, os.path.join(where, rendezvous.STATE))


def _prepare_directory() -> str:
    where = rendezvous.directory()
    with contextlib.suppress(FileExistsError):
        os.makedirs(where, mode=0o700)
    if not rendezvous.private(where):
        raise JailbakeError(
            f"{where}: not a private directory (expected a directory owned by uid "
            f"{os.getuid()} with mode 0700); the server's socket is kept there"
        )
    return where


def start(
    command: Command, idle_minutes: float = rendezvous.IDLE_MINUTES, *, foreground: bool = False
) -> State:
    """Start the server that runs each command it takes as command(argv) (the command
    line's main): in this process with foreground, else in the background, once its
    socket listens. JailbakeError if one runs already."""
    if idle_minutes <= 0:
        raise JailbakeError(f"--idle-timeout: expected minutes above 0, got {idle_minutes:g}")
    where = _prepare_directory()
    lock = open(os.path.join(where, rendezvous.LOCK), "a+b")  # noqa: SIM115 (held for life)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        running = State.read(where)
        which = f" (pid {running.pid})" if running else ""
        raise JailbakeError(f"a jailbake server runs already{which}; stop it first") from None
    path = os.path.join(where, rendezvous.SOCKET)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # left by a server that was killed: the lock was free
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    log_path = os.path.join(where, LOG) if not foreground else ""
    if not foreground:
        pid = os.fork()
        if pid:
            listener.close()
            lock.close()  # the server's copy keeps the lock
            return State(pid, time.time(), idle_minutes, path, log_path, start_ticks(pid) or 0)
        _detach(log_path, keep=(lock.fileno(), listener.fileno()))
    state = State(
        os.getpid(), time.time(), idle_minutes, path, log_path, start_ticks(os.getpid()) or 0
    )
    state.save(where)
    try:
        _Server(command, listener, idle_minutes * 60, lock.fileno(), state, where).serve()
    finally:
        if os.getpid() == state.pid:  # not in a command's fork
            with contextlib.suppress(OSError):
                os.unlink(path)
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(where, rendezvous.STATE))
    if not foreground:
        os._exit(0)
    return state


def _detach(log_path: str, keep: tuple[int, ...]) -> None:
    """A daemon: its own session, no terminal, its output to the log, no descriptor of
    its starter's but the ones kept (a pipe left open would keep a reader waiting)."""
    os.setsid()
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDONLY)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        with contextlib.suppress(OSError):  # Python's own are not inheritable
            if fd > 2 and fd not in keep and os.get_inheritable(fd):
                os.close(fd)


def stop() -> State | None:
    """Ask the running server to stop; the commands it runs finish first. None if none
    runs."""
    where = rendezvous.directory()
    if not rendezvous.private(where):
        return None
    state = State.read(where)
    if state is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while os.path.exists(state.socket) and time.monotonic() < deadline:
        time.sleep(0.01)
    return state


def status() -> State | None:
    where = rendezvous.directory()
    return State.read(where) if rendezvous.private(where) else None


def _preload() -> dict[str, list[int]]:
    """Import what commands use; the stamp of every module file the server holds."""
    import jailbake

    names = [
        m.name
        for m in pkgutil.walk_packages(jailbake.__path__, "jailbake.")
        if not m.name.startswith(NOT_PRELOADED)
    ]
    for name in (*names, *LIBRARIES):
        try:
            importlib.import_module(name)
        except Exception as exc:  # a command that needs it says why
            log.debug("server: %s not preloaded: %s", name, exc)
    from .options import parser

    parser()
    return _module_stamps()


def _module_stamps() -> dict[str, list[int]]:
    stamps = {}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str):
            with contextlib.suppress(OSError):
                stamps[file] = path_stamp(file, follow=True)
    return stamps


def _unchanged(stamps: dict[str, list[int]]) -> bool:
    try:
        return all(path_stamp(file, follow=True) == stamp for file, stamp in stamps.items())
    except OSError:
        return False


@dataclass
class _Server:
    command: Command
    listener: socket.socket
    idle_seconds: float
    lock: int  # held by the server alone, not by the commands it forks
    state: State
    where: str
    commands: dict[int, socket.socket] = field(default_factory=dict)
    stopping: bool = False
    wake: tuple[int, int] = (-1, -1)

    def serve(self) -> None:
        stamps = _preload()
        identity = rendezvous.identity()
        self.wake = wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda signum, frame: None)
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ, "accept")
        selector.register(wake_r, selectors.EVENT_READ, "signal")
        gc.freeze()  # the forks share what is loaded instead of copying it
        last = time.monotonic()
        while not (self.stopping and not self.commands):
            timeout = None
            if not self.commands:
                timeout = last + self.idle_seconds - time.monotonic()
                if timeout <= 0:
                    self._stop(selector)
                    continue
            for key, _ in selector.select(timeout):
                if key.data == "accept":
                    if self.stopping:
                        continue
                    try:
                        conn, _ = self.listener.accept()
                    except OSError as exc:  # out of descriptors, a sender gone already
                        log.warning("server: cannot take a command: %s", exc)
                        continue
                    last = time.monotonic()
                    self._take(conn, identity, stamps, selector)
                elif key.data == "signal":
                    received = os.read(wake_r, 512)
                    if {signal.SIGTERM, signal.SIGINT, signal.SIGHUP} & set(received):
                        self._stop(selector)
                    self._reap(selector)
                    last = time.monotonic()  # idle from the last command's end
                else:
                    self._hangup(key.data, key.fileobj, selector)  # type: ignore[arg-type]
        selector.close()
        os.close(wake_r)
        os.close(wake_w)

    def _hangup(self, pid: int, conn: socket.socket, selector: selectors.BaseSelector) -> None:
        """The sender went away (or spoke out of turn): stop its command as SIGTERM
        would, unless the command has ended and been reaped already."""
        if self.commands.get(pid) is not conn:
            return
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(conn)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    def _stop(self, selector: selectors.BaseSelector) -> None:
        """Take no more commands; those running finish."""
        if self.stopping:
            return
        self.stopping = True
        selector.unregister(self.listener)
        with contextlib.suppress(OSError):
            os.unlink(self.listener.getsockname())
        self.listener.close()

    def _reap(self, selector: selectors.BaseSelector) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.commands.pop(pid, None)
            if conn is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):  # the command said it already, unless killed
                conn.send(b"exit %d" % (code if code >= 0 else 128 - code))
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(conn)
            conn.close()

    def _take(
        self,
        conn: socket.socket,
        identity: list[object],
        stamps: dict[str, list[int]],
        selector: selectors.BaseSelector,
    ) -> None:
        """Read a command and fork it; until the fork, any failure answers "no" (the
        sender runs it), and after it nothing does."""
        fds: list[int] = []
        try:
            request = _read_request(conn, identity, fds)
            if not _unchanged(stamps):
                log.info("server: a module changed since it was loaded; stopping")
                self._stop(selector)
                raise ValueError("a module changed")
            pid = os.fork()
        except (OSError, ValueError, KeyError, TypeError, SyntaxError, MemoryError) as exc:
            log.info("server: a command was refused (it runs in its sender): %s", exc)
            with contextlib.suppress(OSError):
                conn.send(b"no")
            conn.close()
            for fd in fds:
                os.close(fd)
            return
        if pid == 0:  # what the server holds is not the command's
            try:
                signal.set_wakeup_fd(-1)
                selector.close()
                if not self.stopping:
                    self.listener.close()
                for other in self.commands.values():
                    other.close()
                for fd in (*self.wake, self.lock):
                    os.close(fd)
                _run_command(self.command, conn, request, fds)
            finally:
                os._exit(1)  # a fork never returns into the server's loop
        for fd in fds:
            os.close(fd)
        self.commands[pid] = conn
        try:
            selector.register(conn, selectors.EVENT_READ, pid)
            self.state = replace(self.state, served=self.state.served + 1)
            self.state.save(self.where)
        except (OSError, ValueError) as exc:  # the command runs all the same
            log.warning("server: %s", exc)


def _read_request(conn: socket.socket, identity: list[object], fds: list[int]) -> dict[str, Any]:
    """The sender's command, from this user and this installation; fds gets the
    sender's standard streams."""
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    if uid != os.getuid():  # the directory keeps others out; this, its replacement
        raise ValueError(f"uid {uid} is not this server's")
    conn.settimeout(5)
    message, ancillary, flags, _ = conn.recvmsg(REQUEST_BYTES, socket.CMSG_SPACE(3 * 4))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(data[: len(data) - len(data) % received.itemsize])
            fds += received
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        raise ValueError("the command was cut short")
    request = ast.literal_eval(message.decode("utf-8", "surrogateescape"))
    if not isinstance(request, dict):
        raise ValueError("not a command")
    if len(fds) != 3 or request["identity"] != identity:
        raise ValueError("another installation's command")
    return request


def _run_command(
    command: Command, conn: socket.socket, request: dict[str, Any], fds: list[int]
) -> None:
    """In the fork: become the sender's process, run its command, report its status."""
    try:
        _become_sender(request, fds)
    except BaseException:  # nothing of the command has run: its sender runs it
        with contextlib.suppress(OSError):
            conn.send(b"no")
        os._exit(1)
    code = 1
    try:
        conn.settimeout(None)
        conn.send(b"run %d" % os.getpid())
        try:
            returned: object = command(request["argv"])
        except SystemExit as exc:  # argparse's --help and usage errors
            returned = exc.code
        code = returned if isinstance(returned, int) else (0 if returned is None else 1)
    except BaseException:  # reported by the exit status below
        code = 130 if sys.exc_info()[0] is KeyboardInterrupt else 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # nothing interrupts the report
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        with contextlib.suppress(Exception):
            logging.shutdown()
        with contextlib.suppress(OSError):
            conn.send(b"exit %d" % code)
        os._exit(code)


def _become_sender(request: dict[str, Any], fds: list[int]) -> None:
    """The sender's session of its own, streams, working directory, umask, environment,
    locale, limits, priority, signals and arguments."""
    os.setsid()  # no terminal to be stopped by; Ctrl-C reaches the group (pgid = pid)
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in request["ignored"]:  # nohup's SIGHUP, a background job's SIGINT
        signal.signal(signum, signal.SIG_IGN)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["environ"])
    time.tzset()  # the sender's TZ
    with contextlib.suppress(locale.Error):
        locale.setlocale(locale.LC_CTYPE, "")  # as Python does at start-up
    for limit, soft, hard in request["limits"]:
        if resource.getrlimit(limit) != (soft, hard):
            resource.setrlimit(limit, (soft, hard))  # raising one fails: the sender runs it
    if os.getpriority(os.PRIO_PROCESS, 0) != request["nice"]:
        os.setpriority(os.PRIO_PROCESS, 0, request["nice"])
    sys.argv = [sys.argv[0], *request["argv"]]
    sys.stdin, sys.stdout, sys.stderr = (
        _stream(fd, "r" if fd == 0 else "w", *spec) for fd, spec in enumerate(request["stdio"])
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)


def _stream(
    fd: int, mode: str, encoding: str, errors: str, line_buffering: bool, write_through: bool
) -> io.TextIOWrapper:
    """A standard stream as the sender's Python made it (PYTHONIOENCODING, the locale,
    PYTHONUNBUFFERED); unbuffered writes go straight to the descriptor, as with -u."""
    raw = io.FileIO(fd, mode, closefd=False)
    buffer: io.RawIOBase | io.BufferedIOBase = raw
    if mode == "r":
        buffer = io.BufferedReader(raw)
    elif not write_through:
        buffer = io.BufferedWriter(raw)
    return io.TextIOWrapper(
        buffer,  # type: ignore[arg-type]
        encoding=encoding,
        errors=errors,
        newline="\n",
        line_buffering=line_buffering,
        write_through=write_through,
    )
