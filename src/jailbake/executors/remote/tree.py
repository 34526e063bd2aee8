"""Directory trees as the Remote Execution API sees them: Merkle trees of Directory
messages, made from files on disk (an action's input root) and written back to disk
(an action's output directory), every file checked against its digest."""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ...cache.keys import file_sha256
from ...core.errors import JailbakeError
from ._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as pb
from .reapi import Blob, Client, RemoteExecutionError, message_blob


@dataclass
class _Dir:
    files: dict[str, tuple[pb.Digest, bool]] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    dirs: dict[str, _Dir] = field(default_factory=dict)


class InputRoot:
    """An input root put together from files and trees on disk."""

    def __init__(self) -> None:
        self._root = _Dir()
        self._blobs: dict[str, Blob] = {}

    def _dir(self, rel: PurePosixPath) -> _Dir:
        node = self._root
        for part in rel.parts:
            node = node.dirs.setdefault(part, _Dir())
        return node

    def add_file(self, rel: str, path: Path) -> None:
        where = PurePosixPath(rel)
        d = pb.Digest(hash=file_sha256(path), size_bytes=path.stat().st_size)
        self._blobs.setdefault(d.hash, Blob(d, path=path))
        executable = bool(os.stat(path).st_mode & stat.S_IXUSR)
        self._dir(where.parent).files[where.name] = (d, executable)

    def add_tree(self, rel: str, root: Path) -> None:
        """root's files, links and directories (links are kept as links)."""
        base = PurePosixPath(rel)
        self._dir(base)
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            parent = base / here.relative_to(root).as_posix()
            for name in sorted(dirnames + filenames):
                path = here / name
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    self._dir(parent).links[name] = os.readlink(path)
                elif stat.S_ISDIR(st.st_mode):
                    self._dir(parent / name)
                elif stat.S_ISREG(st.st_mode):
                    self.add_file(str(parent / name), path)
                else:
                    raise JailbakeError(f"{path}: not a file, directory or symbolic link")

    def add_manifest(self, rel: str, root: Path, manifest: Sequence[Mapping[str, Any]]) -> None:
        """The tree at root as its manifest (keys.tree_manifest) describes it, without
        hashing its files again: a stored tree, checked against its stamp before a step
        that reads it runs. A file is read only if the server lacks it."""
        base = PurePosixPath(rel)
        self._dir(base)
        for entry in manifest:
            where = base / entry["path"]
            if entry["type"] == "dir":
                self._dir(where)
            elif entry["type"] == "symlink":
                self._dir(where.parent).links[where.name] = entry["target"]
            else:
                d = pb.Digest(hash=entry["sha256"], size_bytes=entry["size"])
                self._blobs.setdefault(d.hash, Blob(d, path=root / entry["path"]))
                self._dir(where.parent).files[where.name] = (d, bool(entry["exec"]))

    def digest(self) -> pb.Digest:
        return self._encode(self._root)

    def _encode(self, node: _Dir) -> pb.Digest:
        message = pb.Directory(
            files=[
                pb.FileNode(name=n, digest=d, is_executable=x)
                for n, (d, x) in sorted(node.files.items())
            ],
            directories=[
                pb.DirectoryNode(name=n, digest=self._encode(c))
                for n, c in sorted(node.dirs.items())
            ],
            symlinks=[pb.SymlinkNode(name=n, target=t) for n, t in sorted(node.links.items())],
        )
        blob = message_blob(message)
        self._blobs.setdefault(blob.digest.hash, blob)
        return blob.digest

    def blobs(self) -> list[Blob]:
        return list(self._blobs.values())


MAX_DEPTH = 256  # directories within directories of a result
MAX_ENTRIES = 2_000_000  # files, links and directories written for one result


def write_tree(client: Client, tree_digest: pb.Digest, dest: Path) -> int:
    """Write the Tree message's directories and files under dest; returns the files
    written. An executor's answer is checked as a remote cache's is: names stay in
    their directory, links inside dest, depth and entries are bounded (a Tree may
    name one directory from many places), sizes and digests are the bytes'."""
    tree = pb.Tree.FromString(client.read(tree_digest))
    children = {message_blob(c).digest.hash: c for c in tree.children}
    dest.mkdir(exist_ok=True)
    files = entries = 0
    todo: list[tuple[Any, Path, str, int]] = [(tree.root, dest, "out", 0)]
    while todo:
        directory, at, where, depth = todo.pop()
        names = [n.name for n in (*directory.files, *directory.symlinks, *directory.directories)]
        if len(set(names)) != len(names):
            twice = sorted(n for n in set(names) if names.count(n) > 1)
            raise RemoteExecutionError(f"remote result: {where}: {twice[0]!r} is named twice")
        entries += len(names)
        if entries > MAX_ENTRIES:
            raise RemoteExecutionError(f"remote result: more than {MAX_ENTRIES} entries")
        for node in directory.files:
            path = at / _name(node.name, where)
            client.read_file(node.digest, path)
            path.chmod(0o755 if node.is_executable else 0o644)
            files += 1
        for link in directory.symlinks:
            name = _name(link.name, where)
            _check_link(f"{where}/{name}", link.target)
            os.symlink(link.target, at / name)
        for sub in directory.directories:
            name = _name(sub.name, where)
            child = children.get(sub.digest.hash)
            if child is None:
                raise RemoteExecutionError(
                    f"remote result: {where}/{name}: directory {sub.digest.hash} is not in "
                    "the output tree"
                )
            if depth + 1 > MAX_DEPTH:
                raise RemoteExecutionError(
                    f"remote result: {where}/{name}: deeper than {MAX_DEPTH} directories"
                )
            (at / name).mkdir()
            todo.append((child, at / name, f"{where}/{name}", depth + 1))
    return files


def _name(name: str, where: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise RemoteExecutionError(f"remote result: {where}: {name!r} is not a file name")
    return name


def _check_link(where: str, target: str) -> None:
    """A link of a result points inside the result ('out/...'), as unpacked ones do."""
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(where), target))
    if (
        not target
        or "\0" in target
        or target.startswith("/")
        or not (resolved == "out" or resolved.startswith("out/"))
    ):
        raise RemoteExecutionError(
            f"remote result: symbolic link {where} -> {target!r} points outside the output"
        )
