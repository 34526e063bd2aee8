"""`jailbake` and `build.py`: a command handed to the resident process when one runs for
this user and this installation (`jailbake server start`), otherwise run here.

The resident process runs the command in a fork of itself, with this process's
arguments, working directory, environment, umask, and standard input, output and
error (passed over the socket), so the command behaves as if it ran here, only
without the start-up. Ctrl-C, Ctrl-Z, SIGTERM and SIGHUP are passed on to it (not
those this process ignores, which the command ignores too). Commands that
need the terminal as their own (shell, run) and `server` itself always run here, as
does everything while JAILBAKE_SERVER=off, or when no server answers or the one that
does runs other code.
"""

from __future__ import annotations

import os
import sys

from . import rendezvous  # nothing more at start-up: a served command starts in ~30 ms

LOCAL_WORDS = frozenset({"shell", "run", "server"})
# Passed on to the command (a process group of its own); SIGCONT resumes it after Ctrl-Z.
FORWARDED = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGCONT", "SIGTSTP")
# The sender's resource limits, which the command takes on (or leaves to its sender).
LIMITS = ("CPU", "FSIZE", "DATA", "STACK", "CORE", "NPROC", "NOFILE", "MEMLOCK", "AS")
EXIT = b"exit "
RUN = b"run "


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    code = served(args)
    if code is None:
        from .cli import main as run_here

        return run_here(args)
    return code


def served(args: list[str]) -> int | None:
    """The command's exit status from the resident process; None if it did not take it
    (nothing of the command has run then)."""
    if os.environ.get(rendezvous.OFF_VARIABLE) == "off" or LOCAL_WORDS.intersection(args):
        return None
    where = rendezvous.directory()
    if not rendezvous.private(where):
        return None
    # The builtin halves of socket and signal: their Python halves load enum and
    # selectors, which would cost a served command a tenth of its time.
    import _signal  # type: ignore[import-not-found]  # (no stub: signal's own half)
    import _socket
    import resource

    forwarded = [getattr(_signal, name) for name in FORWARDED]
    ignored = [n for n in forwarded if _signal.getsignal(n) == _signal.SIG_IGN]
    streams = (sys.stdin, sys.stdout, sys.stderr)
    if any(s is None or not hasattr(s, "write_through") for s in streams):
        return None  # a closed or replaced standard stream
    try:  # read back with ast.literal_eval: no code, only literals
        request = repr(
            {
                "identity": rendezvous.identity(),
                "argv": args,
                "cwd": os.getcwd(),
                "environ": dict(os.environ),
                "umask": _umask(),
                "ignored": ignored,
                "limits": [
                    [n, *resource.getrlimit(n)]
                    for n in (getattr(resource, f"RLIMIT_{r}") for r in LIMITS)
                ],
                "nice": os.getpriority(os.PRIO_PROCESS, 0),
                "stdio": [_settings(s) for s in streams],
            }
        ).encode("utf-8", "surrogateescape")
    except OSError:  # a removed working directory
        return None
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2))
    try:
        conn.connect(os.path.join(where, rendezvous.SOCKET))
        conn.sendmsg([request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        reply = conn.recv(64)
    except OSError:  # no server, or it could not take this command
        conn.close()
        return None
    except KeyboardInterrupt:
        conn.close()  # the server stops the command if it started it
        print("jailbake: interrupted", file=sys.stderr)
        return 130
    if not reply.startswith(RUN):
        conn.close()
        return None
    pid = int(reply[len(RUN) :])  # it leads a process group (and session) of its own

    def forward(signum: int, frame: object) -> None:
        try:
            if signum == _signal.SIGTERM:  # to jailbake, as a CI runner's cancel would
                os.kill(pid, signum)
            else:  # what a terminal sends to its foreground group
                os.killpg(pid, signum)
            if signum == _signal.SIGTSTP:  # Ctrl-Z: the command stops, and so do we
                os.kill(os.getpid(), _signal.SIGSTOP)
        except ProcessLookupError:
            pass

    for signum in forwarded:
        if signum not in ignored:
            _signal.signal(signum, forward)
    while True:
        try:
            message = conn.recv(64)
        except OSError:
            message = b""
        if message.startswith(EXIT):
            return int(message[len(EXIT) :])
        if not message:
            print("jailbake: error: the resident process ended the command", file=sys.stderr)
            return 1


def _settings(stream: object) -> list[object]:
    """How this Python set a standard stream up: encoding, errors, buffering."""
    return [getattr(stream, a) for a in ("encoding", "errors", "line_buffering", "write_through")]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


if __name__ == "__main__":
    sys.exit(main())
