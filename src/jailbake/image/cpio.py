"""A newc ("070701") cpio writer: sorted entries, fixed owners, times and inode numbers.

The output unpacks with GNU `cpio -idm` and is accepted by the Linux kernel as an
initramfs. Hard links share an inode number and carry their data once, on the
last link, as GNU cpio writes them.
"""

from __future__ import annotations

import queue
import stat
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
COPY_CHUNK = 1 << 20
GZIP_CHUNK = 1 << 18  # small enough that reading and deflating overlap on small archives


@dataclass(frozen=True)
class Entry:
    """One archive member. `source` holds a regular file's content; `link` a symlink's target."""

    name: str  # relative, no leading slash, e.g. "bin/busybox"
    mode: int  # full st_mode: type bits and permissions
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    source: Path | None = None
    data: bytes | None = None
    link: str = ""
    rdev: tuple[int, int] = (0, 0)
    hardlink_group: str = ""  # entries with the same non-empty group are one inode

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


FIELD_NAMES = (
    "inode",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "size",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
)
FIELD_MAX = 0xFFFFFFFF  # eight hex digits


def _header(ino: int, e: Entry, nlink: int, size: int, name: bytes) -> bytes:
    fields = (
        ino,
        e.mode,
        e.uid,
        e.gid,
        nlink,
        e.mtime,
        size,
        0,
        0,
        e.rdev[0],
        e.rdev[1],
        len(name) + 1,
        0,
    )
    for label, value in zip(FIELD_NAMES, fields, strict=True):
        if not 0 <= value <= FIELD_MAX:
            raise ValueError(f"{e.name}: {label} {value} does not fit a newc header")
    head = MAGIC + b"".join(b"%08X" % f for f in fields)
    return head + name + b"\0" + _pad(len(head) + len(name) + 1)


def _size(e: Entry) -> int:
    if stat.S_ISLNK(e.mode):
        return len(e.link.encode())
    if e.is_file:
        if e.data is not None:
            return len(e.data)
        assert e.source is not None
        return e.source.stat().st_size
    return 0


def write_newc(entries: Iterable[Entry], out: BinaryIO) -> int:
    """Write entries, sorted by name, as a newc archive; returns the number of members."""
    members = sorted(entries, key=lambda e: e.name)
    names = [e.name for e in members]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"duplicate archive member {dup!r}")
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(members):
        if e.hardlink_group and e.is_file:
            groups.setdefault(e.hardlink_group, []).append(i)
    inode: dict[int, int] = {}
    next_ino = 1
    for i, e in enumerate(members):
        if i in inode:
            continue
        group = groups.get(e.hardlink_group, [i]) if e.hardlink_group and e.is_file else [i]
        for j in group:
            inode[j] = next_ino
        next_ino += 1
    last_of_group = {g[-1] for g in groups.values()}
    for i, e in enumerate(members):
        name = e.name.encode()
        links = groups.get(e.hardlink_group) if e.hardlink_group and e.is_file else None
        nlink = len(links) if links else (2 if stat.S_ISDIR(e.mode) else 1)
        carries_data = links is None or i in last_of_group
        size = _size(e) if carries_data else 0
        out.write(_header(inode[i], e, nlink, size, name))
        if size:
            if stat.S_ISLNK(e.mode):
                out.write(e.link.encode())
            elif e.data is not None:
                out.write(e.data)
            else:
                assert e.source is not None
                with e.source.open("rb") as f:
                    copied = 0
                    while chunk := f.read(COPY_CHUNK):
                        out.write(chunk)
                        copied += len(chunk)
                if copied != size:
                    raise ValueError(f"{e.source} changed size while being archived")
            out.write(_pad(size))
    out.write(_header(0, Entry(TRAILER, 0), 1, 0, TRAILER.encode()))
    return len(members)


class _GzipWriter:
    """gzip output compressed on a second thread, so reading and deflating overlap.

    The header has no file name and mtime 0 (zlib's gzip wrapper writes neither).
    """

    def __init__(self, out: BinaryIO, level: int) -> None:
        self._out = out
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, 31)
        self._buf = bytearray()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (chunk := self._queue.get()) is not None:
                self._out.write(self._zlib.compress(chunk))
            self._out.write(self._zlib.flush())
        except BaseException as exc:
            self._error = exc
            while self._queue.get() is not None:  # drain so the writer never blocks
                pass

    def write(self, data: bytes) -> int:
        self._buf += data
        if len(self._buf) >= GZIP_CHUNK:
            self._queue.put(bytes(self._buf))
            self._buf.clear()
        return len(data)

    def close(self) -> None:
        if self._buf:
            self._queue.put(bytes(self._buf))
            self._buf.clear()
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def write_cpio_gz(entries: Iterable[Entry], path: Path, level: int = 6) -> int:
    """A gzip'd newc archive: no file name and mtime 0 in the gzip header."""
    with path.open("wb") as raw:
        gz = _GzipWriter(raw, level)
        try:
            count = write_newc(entries, gz)  # type: ignore[arg-type]
        finally:
            gz.close()
    return count
