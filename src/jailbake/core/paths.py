"""Writing inside a tree without following links.

A tree jailbake writes into (a step's sources, its outputs, the artifacts
directory, a publish destination) may already hold symbolic links: ones a
recipe brought, ones a step left. Every path written below such a root is
walked one component at a time with lstat; a component that is a link, or a
file where a directory is needed, stops the write with one error naming the
path. The root itself is the caller's choice and may be a link.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path, PurePosixPath

from .errors import JailbakeError


class UnsafePath(JailbakeError):
    """A write would leave its tree: through a symbolic link, '..' or an absolute path."""


def _parts(rel: str | PurePosixPath, origin: str) -> tuple[str, ...]:
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts:
        raise UnsafePath(f"{origin}: {str(rel)!r} leaves the tree")
    return tuple(p for p in pure.parts if p not in ("", "."))


def _link_error(origin: str, root: Path, path: Path) -> UnsafePath:
    rel = path.relative_to(root).as_posix()
    return UnsafePath(
        f"{origin}: {rel!r} is a symbolic link (to {os.readlink(path)!r}), "
        "which jailbake does not follow"
    )


def directory(root: Path, rel: str | PurePosixPath, *, origin: str) -> Path:
    """root/rel as a directory, made where missing; no component below root may be a
    link or a non-directory."""
    path = root
    for part in _parts(rel, origin):
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise _link_error(origin, root, path)
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePath(
                f"{origin}: {path.relative_to(root).as_posix()!r} is a file, not a directory"
            )
    return path


def target(
    root: Path, rel: str | PurePosixPath, *, origin: str, replace_link: bool = False
) -> Path:
    """root/rel, ready to be (re)written: its parents are real directories (made where
    missing) and it is not itself a link, unless replace_link (the caller replaces it
    with a rename, which does not follow it)."""
    parts = _parts(rel, origin)
    if not parts:
        raise UnsafePath(f"{origin}: an empty path names no file")
    parent = directory(root, PurePosixPath(*parts[:-1]) if parts[:-1] else ".", origin=origin)
    path = parent / parts[-1]
    if path.is_symlink() and not replace_link:
        raise _link_error(origin, root, path)
    return path


def check_inside(root: Path, rel: str | PurePosixPath, *, origin: str) -> Path:
    """root/rel, after checking that no component below root is a link (nothing is made)."""
    path = root
    for part in _parts(rel, origin):
        path = path / part
        if path.is_symlink():
            raise _link_error(origin, root, path)
    return path


def copy_into(src: Path, root: Path, rel: str | PurePosixPath, *, origin: str) -> None:
    """Copy the file or tree src to root/rel, links copied as links, never writing through
    a link already below root."""
    dest = target(root, rel, origin=origin)
    if src.is_symlink():
        if os.path.lexists(dest):
            _remove(dest, origin, root)
        os.symlink(os.readlink(src), dest)
        return
    if not src.is_dir():
        if dest.is_dir():
            raise UnsafePath(f"{origin}: {dest.relative_to(root).as_posix()!r} is a directory")
        if dest.exists():
            dest.unlink()
        shutil.copyfile(src, dest, follow_symlinks=False)
        dest.chmod(0o755 if os.access(src, os.X_OK) else 0o644)
        return
    directory(root, PurePosixPath(rel), origin=origin)
    for entry in sorted(os.listdir(src)):
        copy_into(src / entry, root, PurePosixPath(rel) / entry, origin=origin)


def _remove(path: Path, origin: str, root: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        raise UnsafePath(f"{origin}: {path.relative_to(root).as_posix()!r} is a directory")
    path.unlink()


def resolve_mirror(location: str, base: Path) -> str:
    """A mirror URL as given, or a mirror directory made absolute against base."""
    return location if "://" in location else str((base / location).resolve())
