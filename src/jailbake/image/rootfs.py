"""Root file system trees described in a recipe, assembled without root into a cpio archive."""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import JailbakeError
from .cpio import Entry
from .devtable import DeviceEntry, NodeType

DIR_MODE = stat.S_IFDIR | 0o755


@dataclass(frozen=True)
class Content:
    """A dependency's output (or a directory of it) copied into the tree at dest; or,
    with archive, a tar file of that output unpacked there with its owners and modes."""

    recipe: str
    path: str = ""
    dest: str = ""
    archive: bool = False

    def definition(self) -> list[str]:
        return [self.recipe, self.path, self.dest, *(["archive"] if self.archive else [])]


@dataclass(frozen=True)
class ExtraFile:
    path: str
    source: Path
    rel: str  # layer-relative, for keys
    mode: int


@dataclass(frozen=True)
class Symlink:
    path: str
    target: str


@dataclass(frozen=True)
class RootfsSpec:
    """What goes into the tree, in order: contents, directories, files, symlinks, devices."""

    contents: tuple[Content, ...]
    directories: tuple[str, ...]
    files: tuple[ExtraFile, ...]
    symlinks: tuple[Symlink, ...]
    devices: tuple[DeviceEntry, ...]
    device_table: str = ""  # layer-relative path, for keys

    def definition(self) -> dict[str, Any]:
        return {
            "contents": [c.definition() for c in self.contents],
            "directories": list(self.directories),
            "files": [[f.path, f.rel, f.mode] for f in self.files],
            "symlinks": [[s.path, s.target] for s in self.symlinks],
            "device_table": self.device_table,
        }


class _Tree:
    def __init__(self, sde: int) -> None:
        self.sde = sde
        self.entries: dict[str, Entry] = {}

    def put(self, entry: Entry) -> None:
        old = self.entries.get(entry.name)
        if old is not None and stat.S_ISDIR(old.mode) and not stat.S_ISDIR(entry.mode):
            prefix = entry.name + "/"
            if any(name.startswith(prefix) for name in self.entries):
                raise JailbakeError(
                    f"rootfs: {entry.name!r} would replace a directory that has entries"
                )
        parent = posixpath.dirname(entry.name)
        if parent and parent not in self.entries:
            self.put(Entry(parent, DIR_MODE, mtime=self.sde))
        elif parent and not stat.S_ISDIR(self.entries[parent].mode):
            raise JailbakeError(f"rootfs: {entry.name!r} needs {parent!r} to be a directory")
        self.entries[entry.name] = entry


def assemble(spec: RootfsSpec, dep_trees: Mapping[str, Path], sde: int, where: str) -> list[Entry]:
    """The archive entries of the tree, owners root, times SOURCE_DATE_EPOCH."""
    tree = _Tree(sde)
    for i, content in enumerate(spec.contents):
        tree_root = os.path.realpath(dep_trees[content.recipe])
        base = dep_trees[content.recipe] / content.path
        real = os.path.realpath(base)
        if real != tree_root and not real.startswith(tree_root + os.sep):
            raise JailbakeError(
                f"{where}: rootfs.contents[{i}].path: {content.path!r} of "
                f"{content.recipe} leads out of its output through a link"
            )
        if not base.is_dir():
            raise JailbakeError(
                f"{where}: rootfs.contents[{i}].path: {content.recipe} has no "
                f"directory {content.path or '.'!r} in its output"
            )
        seen: dict[tuple[int, int], str] = {}
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for item in sorted(dirnames + filenames):
                p = Path(dirpath) / item
                rel = p.relative_to(base).as_posix()
                name = posixpath.join(content.dest, rel) if content.dest else rel
                st = p.lstat()
                if stat.S_ISLNK(st.st_mode):
                    tree.put(Entry(name, stat.S_IFLNK | 0o777, mtime=sde, link=os.readlink(p)))
                elif stat.S_ISDIR(st.st_mode):
                    tree.put(Entry(name, DIR_MODE, mtime=sde))
                else:
                    mode = stat.S_IFREG | (0o755 if st.st_mode & 0o111 else 0o644)
                    group = ""
                    if st.st_nlink > 1:
                        group = seen.setdefault((st.st_dev, st.st_ino), f"{i}:{name}")
                    tree.put(Entry(name, mode, mtime=sde, source=p, hardlink_group=group))
    for d in spec.directories:
        if d not in tree.entries:
            tree.put(Entry(d, DIR_MODE, mtime=sde))
    for f in spec.files:
        tree.put(Entry(f.path, stat.S_IFREG | f.mode, mtime=sde, source=f.source))
    for s in spec.symlinks:
        tree.put(Entry(s.path, stat.S_IFLNK | 0o777, mtime=sde, link=s.target))
    for dev in spec.devices:
        _apply_device(tree, dev, where)
    return list(tree.entries.values())


def _apply_device(tree: _Tree, dev: DeviceEntry, where: str) -> None:
    existing = tree.entries.get(dev.path)
    if dev.type is NodeType.FILE:
        if existing is None or not existing.is_file:
            raise JailbakeError(
                f"{where}: rootfs.device_table: {dev.path!r} is not a file in the tree"
            )
        tree.put(_replace(existing, mode=stat.S_IFREG | dev.mode, uid=dev.uid, gid=dev.gid))
        return
    kind = {
        NodeType.DIR: stat.S_IFDIR,
        NodeType.CHAR: stat.S_IFCHR,
        NodeType.BLOCK: stat.S_IFBLK,
        NodeType.FIFO: stat.S_IFIFO,
    }[dev.type]
    rdev = (dev.major, dev.minor) if dev.type in (NodeType.CHAR, NodeType.BLOCK) else (0, 0)
    tree.put(Entry(dev.path, kind | dev.mode, uid=dev.uid, gid=dev.gid, mtime=tree.sde, rdev=rdev))


def _replace(e: Entry, **changes: Any) -> Entry:
    from dataclasses import replace

    return replace(e, **changes)
