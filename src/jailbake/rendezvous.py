"""Where the resident jailbake process of this user listens, and what it must share with
a command to run it: the same interpreter, the same module search path, the same
jailbake package.

The socket lives in a directory only its owner may enter (mode 0700): under
$XDG_RUNTIME_DIR when that is set, else /tmp/jailbake-UID. A directory that is not
private is never used. This module is imported before anything else by every command,
so it imports only what Python has already loaded at start-up.
"""

from __future__ import annotations

import os
import stat
import sys

OFF_VARIABLE = "JAILBAKE_SERVER"  # "off": every command runs in its own process
SOCKET = "server.sock"
LOCK = "server.lock"  # held by the running server
STATE = "server.json"  # its pid, start time and idle timeout
IDLE_MINUTES = 60.0  # a server stops after this long without a command (--idle-timeout)
# Interpreter flags that change nothing a command does: bytecode caching (as set by
# PYTHONDONTWRITEBYTECODE), the prompt, import tracing. The others (-O, -I, -E, -X dev,
# -X utf8, ...) must be the same.
IGNORED_FLAGS = frozenset({"dont_write_bytecode", "inspect", "interactive", "quiet", "verbose"})


def directory() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(base, "jailbake") if base else f"/tmp/jailbake-{os.getuid()}"


def private(path: str) -> bool:
    """A real directory (not a link), owned by this user, that no one else may enter."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def identity() -> list[object]:
    """What a command and the server must share for the server to run it: the
    interpreter and how it was started, where modules come from, and the groups (a
    process cannot take on new ones)."""
    package = os.path.dirname(os.path.abspath(__file__))
    names = type(sys.flags).__match_args__
    flags = [[n, getattr(sys.flags, n)] for n in names if n not in IGNORED_FLAGS]
    groups = sorted(os.getgroups())  # joined the docker group since the server started?
    return [
        sys.version,
        sys.executable,
        sys.prefix,
        list(sys.path),
        flags,
        list(sys.warnoptions),
        package,
        groups,
    ]
