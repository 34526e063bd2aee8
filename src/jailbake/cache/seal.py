"""Sealing a finished output tree before it is stored: in one walk, every entry gets
its normalized time and its final read-only mode, every file is hashed, and the
stamp the store checks the tree against later (see tree_stamp) is taken.

A kernel's build tree holds some 80,000 entries: walking it once instead of four
times, and hashing its files on several threads once it holds many bytes, is most
of the cost of storing it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any

from .keys import file_entry, file_sha256

# Hashing runs on threads once a tree's files hold this many bytes: below it, starting
# them costs more than they save. OpenSSL's sha256 and the reads release the GIL.
PARALLEL_BYTES = 16 << 20
MAX_THREADS = 4


@dataclass
class Sealed:
    """A sealed tree: its manifest (as keys.tree_manifest gives it) and the stamps of
    its directories' entries, but not yet those of its directories, whose final mode is
    set when the tree moves into place (see finish)."""

    root: str
    manifest: list[dict[str, Any]]
    stamp: dict[str, list[int]]
    dirs: list[str] = field(default_factory=list)  # relative paths
    # Files with other names in the tree: sealing a later name changes their times too.
    linked: list[str] = field(default_factory=list)

    def finish(self) -> dict[str, list[int]]:
        """Make the directories below the root read-only; the full stamp, but for the
        root, which the caller stamps once it is in place."""
        for rel in self.dirs:
            path = os.path.join(self.root, rel)
            os.chmod(path, 0o555)
            self.stamp[rel] = stamp_of(os.lstat(path))
        for rel in self.linked:
            self.stamp[rel] = stamp_of(os.lstat(os.path.join(self.root, rel)))
        return self.stamp


def tree_stamp(root: str | os.PathLike[str]) -> dict[str, list[int]]:
    """What the file system says of every entry of a tree: type and mode, size, inode,
    modification and change times. The change time moves on any write, chmod or rename,
    and nothing short of the clock sets it back: an unchanged stamp means unchanged bytes.
    A directory that cannot be read adds nothing (the stamp then differs)."""
    top = os.fspath(root)
    stamp = {".": stamp_of(os.lstat(os.path.join(top, ".")))}
    todo = [(top, "")]
    while todo:
        where, prefix = todo.pop()
        try:
            with os.scandir(where) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            rel = prefix + entry.name
            st = entry.stat(follow_symlinks=False)
            stamp[rel] = stamp_of(st)
            if stat.S_ISDIR(st.st_mode):
                todo.append((entry.path, rel + "/"))
    return stamp


def stamp_of(st: os.stat_result) -> list[int]:
    """An entry's part of a tree's stamp: type and mode, size, inode, times."""
    return [st.st_mode, st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def path_stamp(path: str | os.PathLike[str], *, follow: bool = False) -> list[int]:
    """stamp_of one path (the link itself unless follow): equal stamps, same bytes."""
    return stamp_of(os.stat(path) if follow else os.lstat(path))


def seal_tree(root: str, mtime: int) -> Sealed:
    """Set every entry's time to mtime, files to 0444 (0555 when executable), and hash
    the files. Raises ValueError for an entry that is not a file, directory or link."""
    times = (mtime, mtime)
    manifest: list[dict[str, Any]] = []
    files: list[tuple[dict[str, Any], str]] = []
    sealed = Sealed(root, manifest, {})
    size = 0
    os.chmod(root, 0o755)
    todo = [(root, "")]  # directories to read, each made readable before
    while todo:
        top, prefix = todo.pop()
        with os.scandir(top) as it:
            entries = list(it)
        for entry in entries:
            rel, path = prefix + entry.name, entry.path
            if entry.is_symlink():
                os.utime(path, times, follow_symlinks=False)
                manifest.append({"path": rel, "type": "symlink", "target": os.readlink(path)})
            elif entry.is_dir(follow_symlinks=False):
                os.chmod(path, 0o755)  # readable, whatever the step left
                os.utime(path, times)
                manifest.append({"path": rel, "type": "dir"})
                sealed.dirs.append(rel)
                todo.append((path, rel + "/"))
                continue  # stamped once read-only
            else:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode):
                    raise ValueError(f"{rel}: not a file, directory or symbolic link")
                item = file_entry(rel, st, "")  # hashed once the walk is done
                os.chmod(path, 0o555 if item["exec"] else 0o444)
                os.utime(path, times)
                manifest.append(item)
                files.append((item, path))
                size += st.st_size
                if st.st_nlink > 1:
                    sealed.linked.append(rel)
            sealed.stamp[rel] = stamp_of(os.lstat(path))
    os.utime(root, times)
    _hash_files(files, threaded=size >= PARALLEL_BYTES and len(files) > 1)
    manifest.sort(key=lambda e: e["path"])
    return sealed


def _hash_files(files: list[tuple[dict[str, Any], str]], *, threaded: bool) -> None:
    def run(part: list[tuple[dict[str, Any], str]]) -> None:
        for item, path in part:
            item["sha256"] = file_sha256(path, follow_symlinks=False)

    if not threaded:
        run(files)
        return
    from concurrent.futures import ThreadPoolExecutor  # only for a large tree

    threads = min(MAX_THREADS, os.cpu_count() or 1)
    parts = [files[i :: threads * 4] for i in range(threads * 4)]  # big files spread out
    with ThreadPoolExecutor(threads, thread_name_prefix="jailbake-hash") as pool:
        for _ in pool.map(run, parts):
            pass
