"""File helpers every package uses: removing a tree whatever its modes, copying while
hashing, normalising a tree's modes and times, and whether a process still runs."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path


def normalize_tree(root: Path, mtime: int) -> None:
    """Modes 0644/0755 by the executable bit, every time set to mtime."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in [*filenames, *dirnames]:
            p = Path(dirpath) / name
            if not p.is_symlink():
                p.chmod(0o755 if p.is_dir() or p.lstat().st_mode & 0o111 else 0o644)
            os.utime(p, (mtime, mtime), follow_symlinks=False)
    root.chmod(0o755)
    os.utime(root, (mtime, mtime))


def copy_hashed(src: Path, dest: Path) -> str:
    """Copy the file src to the new file dest; return the sha256 of what was copied."""
    h = hashlib.sha256()
    with src.open("rb") as fin, dest.open("xb") as fout:
        while chunk := fin.read(1 << 20):
            h.update(chunk)
            fout.write(chunk)
    return h.hexdigest()


def remove_tree(path: Path) -> None:
    """rm -rf that also removes read-only trees."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    try:  # most trees (work directories) are writable: one pass
        shutil.rmtree(path)
        return
    except PermissionError:
        pass  # a read-only directory inside: made writable, then removed
    for dirpath, dirnames, _ in os.walk(path):
        for name in [dirpath, *(os.path.join(dirpath, d) for d in dirnames)]:
            st = os.lstat(name)
            if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IWUSR:
                os.chmod(name, st.st_mode | stat.S_IRWXU)
    shutil.rmtree(path)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_limited(path: Path, limit: int) -> bytes:
    """The bytes of a regular file, at most limit of them: opened without following a
    link (as the last component) and without waiting on a FIFO. ValueError says why a
    file is not read; OSError is the file system's own answer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(path):
            raise ValueError("a symbolic link, not a file") from None
        raise exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > limit:
            raise ValueError(f"larger than {limit} bytes")
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > limit:
                raise ValueError(f"larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
