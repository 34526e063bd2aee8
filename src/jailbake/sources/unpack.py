"""Archive extraction that refuses members escaping the tree."""

from __future__ import annotations

import lzma
import os
import posixpath
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import IO

from ..core import gitcmd, run
from ..core.errors import JailbakeError, UnpackError


def _strip(name: str, strip: int) -> str | None:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if len(parts) <= strip:
        return None
    return "/".join(parts[strip:])


def _check(member: tarfile.TarInfo, origin: str) -> None:
    name = member.name
    if name.startswith("/") or posixpath.isabs(name):
        raise UnpackError(f"{origin}: member {name!r} has an absolute path")
    if ".." in name.split("/"):
        raise UnpackError(f"{origin}: member {name!r} escapes the tree with '..'")
    if member.isdev() or member.isfifo():
        raise UnpackError(f"{origin}: member {name!r} is a device or fifo")
    if member.issym():
        target = member.linkname
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise UnpackError(f"{origin}: symlink {name!r} -> {target!r} points outside the tree")
    if member.islnk():
        target = posixpath.normpath(member.linkname)
        if target.startswith("/") or target == ".." or target.startswith("../"):
            raise UnpackError(
                f"{origin}: hard link {name!r} -> {member.linkname!r} points outside the tree"
            )


# Compressed tars are decompressed by a process of their own where the tool is
# installed, on another core while this one extracts: the kernel's .tar.xz unpacks in
# about half the time.
DECOMPRESSORS = (
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


def extract_tar(
    fileobj: IO[bytes] | None, path: Path | None, dest: Path, *, strip: int = 0, origin: str
) -> None:
    """Extract a (compressed) tar into dest after checking every member."""
    dest.mkdir(parents=True, exist_ok=True)
    tool = _decompressor(path) if path is not None and fileobj is None else None
    try:
        if tool is not None:
            assert path is not None
            _extract_decompressed(tool, path, dest, strip, origin)
            return
        with tarfile.open(name=path, fileobj=fileobj, mode="r|*" if fileobj else "r:*") as tar:
            _extract_members(tar, dest, strip, origin)
    except tarfile.FilterError as exc:
        raise UnpackError(f"{origin}: refused member: {exc}") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        # Decompressors say several lines on damaged data; the first names the fault.
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnpackError(f"{origin}: cannot unpack: {detail}") from None


def _decompressor(path: Path) -> str | None:
    """The installed tool that decompresses the file, by its first bytes; None for a
    plain tar, or a compression with no tool here (tarfile then decompresses it)."""
    with open(path, "rb") as f:
        head = f.read(6)
    for magic, tool in DECOMPRESSORS:
        if head.startswith(magic):
            return tool if shutil.which(tool, path=run.clean_env()["PATH"]) else None
    return None


def _extract_decompressed(tool: str, path: Path, dest: Path, strip: int, origin: str) -> None:
    with open(path, "rb") as source, tempfile.TemporaryFile() as errors:
        proc = run.reader([tool, "-dc"], source=source, errors=errors)
        assert proc.stdout is not None
        failure: BaseException | None = None
        read_all = False
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                _extract_members(tar, dest, strip, origin)
            while proc.stdout.read(1 << 20):  # to the stream's end, where its checksum is
                pass
            read_all = True
        except (tarfile.TarError, EOFError) as exc:  # the tool may know better why
            failure = exc
        finally:
            proc.stdout.close()  # a tool still writing ends (SIGPIPE)
            try:
                proc.wait(timeout=None if read_all else 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # After a complete read any failure of the tool counts (a stream cut short
        # between two members, a bad checksum); after a failed one, its own complaint.
        if proc.returncode != 0 and (read_all or proc.returncode > 0):
            errors.seek(0)
            said = errors.read(4096).decode(errors="replace").strip().splitlines()
            detail = said[0] if said else f"{tool} failed ({proc.returncode})"
            raise UnpackError(f"{origin}: cannot unpack: {detail}")
        if failure is not None:
            raise failure


def _extract_members(tar: tarfile.TarFile, dest: Path, strip: int, origin: str) -> None:
    guard = _Guard(dest)
    for member in tar:
        _check(member, origin)  # on the names as stored, before stripping
        stripped = _strip(member.name, strip)
        if stripped is None:
            continue
        member.name = stripped
        if member.islnk():
            link = _strip(member.linkname, strip)
            if link is None:
                raise UnpackError(f"{origin}: hard link {stripped!r} points outside the tree")
            if os.path.islink(os.path.join(guard.root, link)):
                # tarfile would make it a symbolic link with the same target, which
                # means something else in another directory.
                raise UnpackError(
                    f"{origin}: hard link {stripped!r} -> {link!r} names a symbolic link"
                )
            member.linkname = link
        _check(member, origin)
        member.uid = member.gid = 0
        member.uname = member.gname = ""
        member.mode &= 0o755 if not member.isdir() else 0o777
        if guard.plain(member):
            tar.extract(_data_filtered(member), guard.root, filter="fully_trusted")
            guard.extracted(member)
        else:
            tar.extract(member, guard.root, set_attrs=not member.issym(), filter="data")


class _Guard:
    """Which members need tarfile's "data" filter to resolve their paths on disk.

    The filter resolves each member's destination (and a link's target) through the
    links already on disk, which catches chains of links that the name checks cannot
    see: an lstat for every component of every name, most of the time a large archive
    takes to unpack. A plain member cannot land anywhere else, so only its attributes
    need the filter: a file or directory whose directories are all known to be real
    directories below the root (seen with lstat once, or made by the extraction), and
    whose own name is not a link on disk (nor anything but a directory, for a
    directory). Links and every other member go through the filter itself."""

    def __init__(self, dest: Path) -> None:
        self.root = os.path.realpath(dest)
        self.real_dirs: set[str] = {""}  # relative to root; "" is root itself

    def plain(self, member: tarfile.TarInfo) -> bool:
        if not (member.isreg() or member.isdir()):
            return False
        name = member.name
        parent = posixpath.dirname(name)
        if parent not in self.real_dirs:
            missing = False
            walked = ""
            for part in parent.split("/"):
                walked = f"{walked}/{part}" if walked else part
                if walked in self.real_dirs:
                    continue
                if not missing:
                    try:
                        mode = os.lstat(os.path.join(self.root, walked)).st_mode
                    except FileNotFoundError:
                        missing = True  # made below as real directories
                        continue
                    if not stat.S_ISDIR(mode):
                        return False
                    self.real_dirs.add(walked)
        try:
            mode = os.lstat(os.path.join(self.root, name)).st_mode
        except FileNotFoundError:
            return True
        # A directory member over a file leaves the file (tarfile ignores EEXIST): it
        # must not be taken for a real directory from then on.
        return stat.S_ISDIR(mode) if member.isdir() else not stat.S_ISLNK(mode)

    def extracted(self, member: tarfile.TarInfo) -> None:
        """Note what a plain member made: its directories (those that were missing were
        made below real ones), and itself if it is a directory."""
        name = member.name
        parent = posixpath.dirname(name)
        while parent not in self.real_dirs:
            self.real_dirs.add(parent)
            parent = posixpath.dirname(parent)
        if member.isdir():
            self.real_dirs.add(name)


def _data_filtered(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """What tarfile's "data" filter makes of a plain file or directory (see _Guard):
    no high mode bits and no group or other write; a file readable and writable by its
    owner, executable only if its owner may execute it; a directory's mode left to the
    umask; no owner. In place: the member is this extraction's own."""
    if member.isreg():
        bits = member.mode & 0o755
        member.mode = (bits if bits & 0o100 else bits & ~0o111) | 0o600
    else:
        member.mode = None  # type: ignore[assignment]  # as the filter leaves it
    member.uid = member.gid = member.uname = member.gname = None  # type: ignore[assignment]
    return member


def git_export(git_dir: Path, commit: str, dest: Path, *, origin: str) -> None:
    """The files of a commit of a bare repository (`git archive`), checked like any tar."""
    argv = gitcmd.argv("--git-dir", git_dir, "archive", "--format=tar", "--end-of-options", commit)
    with run.reader(argv, env=gitcmd.ENV) as proc:
        assert proc.stdout is not None
        extract_tar(proc.stdout, None, dest, origin=origin)
    if proc.returncode != 0:
        raise JailbakeError(f"{origin}: git archive of {commit} failed")
