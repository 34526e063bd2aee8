"""Joining the user's terminal to a container's: raw mode, and bytes both ways."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import termios
import tty
from typing import Any


def _write(stream: Any, data: bytes) -> None:
    stream.write(data)
    stream.flush()


def _demux(buffer: bytes) -> bytes:
    """Write the complete frames of a multiplexed (no tty) attach stream to stdout or
    stderr; return what is left of an incomplete one."""
    while len(buffer) >= 8:
        size = int.from_bytes(buffer[4:8], "big")
        if len(buffer) < 8 + size:
            break
        stream = sys.stderr.buffer if buffer[0] == 2 else sys.stdout.buffer
        _write(stream, buffer[8 : 8 + size])
        buffer = buffer[8 + size :]
    return buffer


def pump(sock: Any, *, interactive: bool, forward_stdin: bool) -> None:
    """Copy stdin to the attached socket and its output back, until the container
    closes it. interactive: a tty on both sides, put in raw mode meanwhile."""
    raw = getattr(sock, "_sock", sock)
    stdin = sys.stdin.fileno()
    saved = termios.tcgetattr(stdin) if interactive else None
    if interactive:
        tty.setraw(stdin)
    pending = b""
    reading = forward_stdin
    try:
        while True:
            watched = [raw, stdin] if reading else [raw]
            ready, _, _ = select.select(watched, [], [])
            if raw in ready:
                data = raw.recv(65536)
                if not data:
                    break
                if interactive:
                    _write(sys.stdout.buffer, data)
                else:
                    pending = _demux(pending + data)
            if reading and stdin in ready:
                keys = os.read(stdin, 65536)
                if keys:
                    raw.sendall(keys)
                else:  # the end of a piped script: the shell sees it too
                    reading = False
                    with contextlib.suppress(OSError):
                        raw.shutdown(socket.SHUT_WR)
    finally:
        if saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(stdin, termios.TCSADRAIN, saved)


def terminal_size() -> tuple[int, int]:
    """(rows, columns) of the user's terminal."""
    size = os.get_terminal_size(sys.stdout.fileno())
    return size.lines, size.columns
