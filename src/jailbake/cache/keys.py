"""Keys: sha256 over canonical JSON. Pure functions, no I/O beyond hashing given files."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

# Bumped when what a key means changes (sandbox layout, output normalization).
ACTION_FORMAT = 1


def canonical_json(obj: Any, *, ascii: bool = False) -> bytes:
    """JSON with sorted keys and no whitespace: equal data, equal bytes. A file name
    that is not UTF-8 (read with Python's surrogate escapes) keeps its own bytes, or,
    with ascii, its escapes (JSON any reader takes, as records are written)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii)
    return text.encode("utf-8", "surrogateescape")


def digest_of(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj)).hexdigest()


def file_sha256(path: Path | str, *, follow_symlinks: bool = True) -> str:
    """The sha256 of a regular file's bytes; without follow_symlinks, a link is refused
    (OSError). A fifo or a device is never waited on or read: OSError."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


def _sha256_of(rel: str, path: str, st: os.stat_result) -> str:
    return file_sha256(path)


def file_entry(rel: str, st: os.stat_result, sha256: str) -> dict[str, Any]:
    """A regular file's entry in a tree's manifest (see tree_manifest)."""
    exe = bool(st.st_mode & 0o111)
    return {"path": rel, "type": "file", "exec": exe, "size": st.st_size, "sha256": sha256}


def tree_manifest(
    root: Path | str,
    *,
    hash_file: Callable[[str, str, os.stat_result], str] = _sha256_of,
    skip: Collection[str] = (),
) -> list[dict[str, Any]]:
    """Every entry under root, sorted, with normalized modes and content digests.
    hash_file(rel, path, lstat) gives a file's sha256 (a caller may know it already);
    skip: names left out at the top of root. OSError for a directory it cannot read."""
    entries: list[dict[str, Any]] = []
    todo = [(os.fspath(root), "")]
    while todo:
        top, prefix = todo.pop()
        with os.scandir(top) as it:
            listing = [e for e in it if prefix or e.name not in skip]
        for entry in listing:
            rel, path = prefix + entry.name, entry.path
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                entries.append({"path": rel, "type": "symlink", "target": os.readlink(path)})
            elif stat.S_ISDIR(st.st_mode):
                entries.append({"path": rel, "type": "dir"})
                todo.append((path, rel + "/"))
            elif stat.S_ISREG(st.st_mode):
                entries.append(file_entry(rel, st, hash_file(rel, path, st)))
            else:
                raise ValueError(f"{rel}: not a file, directory or symbolic link")
    entries.sort(key=lambda e: e["path"])
    return entries


def path_digest(path: Path) -> str:
    """Content digest of a file or a directory tree (names, executable bits, bytes)."""
    if path.is_dir():
        return digest_of(tree_manifest(path))
    return digest_of({"sha256": file_sha256(path), "exec": os.access(path, os.X_OK)})


def step_key_inputs(
    definition: Mapping[str, Any],
    files: Mapping[str, str],
    variables: Mapping[str, str],
    deps: Mapping[str, str],
    builder: Mapping[str, str],
) -> dict[str, Any]:
    """Everything a recipe's result depends on, as plain data."""
    return {
        "format": ACTION_FORMAT,
        "recipe": dict(definition),
        "files": dict(files),
        "variables": dict(variables),
        "deps": dict(deps),
        "builder": dict(builder),
    }


def step_key(inputs: Mapping[str, Any]) -> str:
    return digest_of(inputs)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists by index. For explaining key changes."""
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for k in sorted(obj):
            out.update(flatten(obj[k], f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list) and obj:
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = obj
    return out


KEY_PREFIX = 12  # characters of a key or digest shown to people


def short_key(key: str) -> str:
    return key[:KEY_PREFIX]
