"""Buildroot/makedevs device tables: nodes, directories and permissions without root.

# <name>      <type> <mode> <uid> <gid> <major> <minor> <start> <inc> <count>
/dev          d      755    0     0     -       -       -       -     -
/dev/console  c      600    0     0     5       1       -       -     -
/dev/tty      c      666    0     0     4       0       0       1     4
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..core.errors import RecipeError

MAX_MAJOR = (1 << 12) - 1
MAX_MINOR = (1 << 20) - 1
MAX_ID = (1 << 32) - 2  # (uid_t)-1 means "no owner"


class NodeType(StrEnum):
    FILE = "f"  # an existing file: set its mode and owner
    DIR = "d"
    CHAR = "c"
    BLOCK = "b"
    FIFO = "p"


@dataclass(frozen=True)
class DeviceEntry:
    path: str  # normalized, relative to the root: "dev/console"
    type: NodeType
    mode: int  # permission bits
    uid: int
    gid: int
    major: int = 0
    minor: int = 0


def _number(text: str, what: str, where: str, field: str, limit: int | None = None) -> int:
    if text == "-":
        return 0
    try:
        value = int(text, 10)
    except ValueError:
        raise RecipeError(where, field, f"{what}: expected a number, got {text!r}") from None
    if value < 0 or (limit is not None and value > limit):
        bound = f" (0..{limit})" if limit is not None else ""
        raise RecipeError(where, field, f"{what}: {value} is out of range{bound}")
    return value


def tree_path(path: str, where: str, field: str) -> str:
    """'/dev/console' -> 'dev/console'; refuses paths that leave the tree."""
    if not path.startswith("/"):
        raise RecipeError(where, field, f"expected an absolute path inside the image, got {path!r}")
    if ".." in path.split("/"):
        raise RecipeError(where, field, f"path {path!r} escapes the image tree")
    norm = posixpath.normpath(path).lstrip("/")
    if not norm or norm == ".":
        raise RecipeError(where, field, "expected a path below /, not / itself")
    return norm


def parse_device_table(file: Path, field: str = "rootfs.device_table") -> list[DeviceEntry]:
    """Parse and validate a device table file; errors name its file and line."""
    entries: list[DeviceEntry] = []
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(file, field, f"cannot read the device table: {exc}") from None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{file}:{lineno}"
        cols = line.split()
        if len(cols) != 10:
            raise RecipeError(
                where,
                field,
                f"expected 10 columns (name type mode uid gid major "
                f"minor start inc count), got {len(cols)}",
            )
        name, kind, mode_s, uid_s, gid_s, major_s, minor_s, start_s, inc_s, count_s = cols
        try:
            node = NodeType(kind)
        except ValueError:
            raise RecipeError(
                where, field, f"type: expected one of f d c b p, got {kind!r}"
            ) from None
        try:
            mode = int(mode_s, 8)
        except ValueError:
            raise RecipeError(
                where, field, f"mode: expected octal digits, got {mode_s!r}"
            ) from None
        if mode > 0o7777:
            raise RecipeError(where, field, f"mode: {mode_s} is not a permission mode")
        uid = _number(uid_s, "uid", where, field, MAX_ID)
        gid = _number(gid_s, "gid", where, field, MAX_ID)
        is_dev = node in (NodeType.CHAR, NodeType.BLOCK)
        if is_dev and (major_s == "-" or minor_s == "-"):
            raise RecipeError(where, field, "a device node needs a major and a minor number")
        major = _number(major_s, "major", where, field, MAX_MAJOR)
        minor = _number(minor_s, "minor", where, field, MAX_MINOR)
        count = _number(count_s, "count", where, field)
        start = _number(start_s, "start", where, field)
        inc = _number(inc_s, "inc", where, field)
        path = tree_path(name, where, field)
        if count and not is_dev:
            raise RecipeError(where, field, "count: only device nodes come in series")
        for i in range(count) if count else [None]:
            if i is None:
                entries.append(DeviceEntry(path, node, mode, uid, gid, major, minor))
                continue
            minor_i = minor + i * inc
            if minor_i > MAX_MINOR:
                raise RecipeError(where, field, f"minor: {minor_i} is out of range")
            entries.append(DeviceEntry(f"{path}{start + i}", node, mode, uid, gid, major, minor_i))
    return entries
