"""A newc ("070701") cpio writer: sorted entries, fixed owners, times and inode numbers.

The output unpacks with GNU `cpio -idm` and is accepted by the Linux kernel as an
initramfs. Hard links share an inode number and carry their data once, on the
last link, as GNU cpio writes them.
"""

from __future__ import annotations

import collections
import os
import stat
import struct
import zlib
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
COPY_CHUNK = 1 << 20


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
    if TRAILER in names:  # the kernel and cpio stop reading at it
        raise ValueError(f"an archive member named {TRAILER!r} would end the archive there")
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


BLOCK = 128 << 10  # uncompressed bytes per deflate block, as pigz
WINDOW = 32 << 10  # deflate's window: each block is primed with the previous 32 KiB
# The gzip header: no file name, mtime 0, no extra flags, OS "Unix" (as zlib writes it).
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"
FINAL_EMPTY_BLOCK = b"\x03\x00"  # a last, empty, fixed-Huffman deflate block


def _deflate(block: bytes, primer: bytes, level: int) -> bytes:
    """One block as raw deflate ending on a byte boundary (a sync flush), primed with
    the data before it: the blocks joined are one deflate stream."""
    if primer:
        z = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, primer)
    else:
        z = zlib.compressobj(level, zlib.DEFLATED, -15, 8)
    return z.compress(block) + z.flush(zlib.Z_SYNC_FLUSH)


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


class ParallelGzip:
    """A gzip stream deflated in parallel blocks, the pigz way: the input is cut into
    fixed blocks, each deflated on its own thread primed with the 32 KiB before it, and
    the blocks are joined into one gzip member. The bytes depend on the data and the
    level only, not on the number of threads or how the data is written; memory stays
    at a few blocks per thread."""

    def __init__(self, out: BinaryIO, level: int = 6, threads: int | None = None) -> None:
        self._out = out
        self._level = level
        self._threads = max(1, threads or default_threads())
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="jailbake-gzip")
        self._pending: collections.deque[Future[bytes]] = collections.deque()
        self._buf = bytearray()
        self._primer = b""
        self._crc = 0
        self._size = 0
        out.write(GZIP_HEADER)

    def _submit(self, block: bytes) -> None:
        self._pending.append(self._pool.submit(_deflate, block, self._primer, self._level))
        self._primer = block[-WINDOW:]
        while len(self._pending) > 2 * self._threads:
            self._out.write(self._pending.popleft().result())

    def write(self, data: bytes) -> int:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._buf += data
        if len(self._buf) >= BLOCK:
            view = memoryview(self._buf)
            whole = len(self._buf) - len(self._buf) % BLOCK
            for at in range(0, whole, BLOCK):
                self._submit(bytes(view[at : at + BLOCK]))
            view.release()
            del self._buf[:whole]
        return len(data)

    def close(self) -> None:
        try:
            if self._buf:
                self._submit(bytes(self._buf))
                self._buf.clear()
            while self._pending:
                self._out.write(self._pending.popleft().result())
            self._out.write(FINAL_EMPTY_BLOCK)
            self._out.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        finally:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True)


def write_cpio_gz(
    entries: Iterable[Entry], path: Path, level: int = 6, threads: int | None = None
) -> int:
    """A gzip'd newc archive: no file name and mtime 0 in the gzip header, deflated on
    every core the process may use (the bytes do not depend on how many)."""
    with path.open("wb") as raw:
        gz = ParallelGzip(raw, level, threads)
        try:
            count = write_newc(entries, gz)  # type: ignore[arg-type]
        finally:
            gz.close()
    return count
