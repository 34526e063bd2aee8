"""The Debian packages an image is made of, pinned.

`docker/debian-base/packages.lock` pins the base image (mmdebstrap's minbase and what
`packages` adds); `docker/<builder>/packages` names what a builder adds on top, and its
`packages.lock` pins what apt resolved that to: name, version, architecture, pool path
and sha256 of every .deb, and the digest of the base lock it was resolved against. The
images are made from exactly those files, offline, so the same lock gives the same
toolchain; `jailbake lock-builders` resolves them again."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..cache.keys import digest_of
from ..core import yamlfile
from ..core.errors import EngineError

POOL = "https://deb.debian.org/debian/"
REQUESTED = "packages"
LOCK = "packages.lock"
BASE_DIR = "debian-base"
HEADER = (
    "# The Debian packages of this image, pinned by `jailbake lock-builders` from the\n"
    "# names in `packages` (edit those, then lock again). Installed offline from exactly\n"
    "# these files; the image's key is this lock.\n"
)

_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_VERSION = re.compile(r"(?:[0-9]+:)?[0-9A-Za-z][0-9A-Za-z.+~-]*")
_ARCH = re.compile(r"[a-z0-9][a-z0-9-]*")
_SUITE = re.compile(r"[a-z][a-z0-9.-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_POOL_PATH = re.compile(
    r"pool/(?:main|contrib|non-free|non-free-firmware)/(?:lib)?[a-z0-9]/"
    r"[a-z0-9][a-z0-9+.-]*/[A-Za-z0-9][A-Za-z0-9+.~_-]*\.deb"
)
_WHAT = {
    "name": "a Debian package name",
    "version": "a Debian version",
    "architecture": "a Debian architecture",
    "path": "a .deb's path in Debian's pool (pool/COMPONENT/X/SOURCE/FILE.deb)",
    "sha256": "64 lower-case hex digits",
    "suite": "a Debian suite such as bookworm",
    "base": "the sha256 of the base image's lock (64 lower-case hex digits), or ''",
}
_DEB_KEYS = ("name", "version", "architecture", "path", "sha256")
_LOCK_KEYS = ("suite", "architecture", "epoch", "base", "packages")
_PATTERNS = (_NAME, _VERSION, _ARCH, _POOL_PATH, _SHA256)


@dataclass(frozen=True)
class Deb:
    """One pinned package file in Debian's pool."""

    name: str
    version: str
    architecture: str
    path: str  # in the pool: pool/main/b/bc/bc_1.07.1-3+b1_amd64.deb
    sha256: str

    @property
    def url(self) -> str:
        return POOL + self.path

    @property
    def filename(self) -> str:
        return PurePosixPath(self.path).name


@dataclass(frozen=True)
class Lock:
    suite: str
    architecture: str
    epoch: int  # SOURCE_DATE_EPOCH of the image: every time in it is clamped to this
    base: str  # digest of the base image's lock; '' in the base's own lock
    packages: tuple[Deb, ...]

    @property
    def digest(self) -> str:
        """What identifies the packages: the key of the image they make."""
        return digest_of(
            {
                "suite": self.suite,
                "architecture": self.architecture,
                "epoch": self.epoch,
                "base": self.base,
                "packages": sorted([getattr(d, k) for k in _DEB_KEYS] for d in self.packages),
            }
        )


FetchDeb = Callable[[Deb], Path]  # a local file holding the pinned .deb, sha256 checked


def requested(context_dir: Path) -> list[str] | None:
    """The package names <context>/packages asks for (None: there is no such file)."""
    path = context_dir / REQUESTED
    if not path.is_file():
        return None
    names: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        for word in line.split("#", 1)[0].split():
            if not _NAME.fullmatch(word):
                raise EngineError(f"{path}:{number}: expected a Debian package name, got {word!r}")
            names.append(word)
    return names


def lock_path(context_dir: Path) -> Path | None:
    path = context_dir / LOCK
    return path if path.is_file() else None


def _field(where: str, entry: dict[str, Any], key: str, pattern: re.Pattern[str]) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise EngineError(f"{where}.{key}: expected {_WHAT[key]}, got {value!r}")
    return value


def read_lock(path: Path) -> Lock:
    """The lock, every value checked by kind: it names files to download and to
    install, so nothing in it reaches a path or an argument unchecked."""
    data = yamlfile.load(path)
    if not isinstance(data, dict):
        raise EngineError(f"{path}: expected a mapping of {', '.join(_LOCK_KEYS)}")
    for key in sorted(set(data) - set(_LOCK_KEYS)):
        raise EngineError(f"{path}: {key}: unknown key; expected one of {', '.join(_LOCK_KEYS)}")
    suite = _field(str(path), data, "suite", _SUITE)
    architecture = _field(str(path), data, "architecture", _ARCH)
    epoch = data.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch < 1 << 40:
        raise EngineError(f"{path}: epoch: expected seconds since 1970 (an integer), got {epoch!r}")
    base = data.get("base", "")
    if not isinstance(base, str) or (base and not _SHA256.fullmatch(base)):
        raise EngineError(f"{path}: base: expected {_WHAT['base']}, got {base!r}")
    entries = data.get("packages")
    if not isinstance(entries, list) or not entries:
        raise EngineError(f"{path}: packages: expected a list of pinned packages")
    debs: list[Deb] = []
    seen: set[tuple[str, str]] = set()
    files: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"{path}: packages[{i}]"
        if not isinstance(entry, dict) or set(entry) != set(_DEB_KEYS):
            raise EngineError(f"{where}: expected a mapping of exactly {', '.join(_DEB_KEYS)}")
        deb = Deb(*(_field(where, entry, k, p) for k, p in zip(_DEB_KEYS, _PATTERNS, strict=True)))
        if deb.architecture not in (architecture, "all"):
            raise EngineError(
                f"{where}.architecture: expected {architecture} or all, got {deb.architecture!r}"
            )
        if (deb.name, deb.architecture) in seen:
            raise EngineError(f"{where}.name: {deb.name} is pinned twice")
        if deb.filename in files:
            raise EngineError(
                f"{where}.path: expected a file name no other entry has, got {deb.filename} again"
            )
        seen.add((deb.name, deb.architecture))
        files.add(deb.filename)
        debs.append(deb)
    return Lock(suite, architecture, epoch, base, tuple(sorted(debs, key=_order)))


def _order(deb: Deb) -> tuple[str, str]:
    return (deb.name, deb.architecture)


def sorted_debs(found: list[Deb]) -> tuple[Deb, ...]:
    return tuple(sorted(found, key=_order))


def write_lock(path: Path, lock: Lock) -> None:
    lines = [
        HEADER,
        f"suite: {lock.suite}\n",
        f"architecture: {lock.architecture}\n",
        f"epoch: {lock.epoch}\n",
        f"base: '{lock.base}'\n",
        "packages:\n",
    ]
    for deb in sorted(lock.packages, key=_order):
        lines.append(
            f"  - {{name: {deb.name}, version: '{deb.version}', architecture: {deb.architecture},"
            f"\n     path: {deb.path},\n     sha256: {deb.sha256}}}\n"
        )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines))
    tmp.replace(path)


def stage(lock: Lock, fetch: FetchDeb, dest: Path) -> Path:
    """dest/ holding every pinned .deb of lock under its pool file name (hard links to
    the cache where it can)."""
    import errno
    import os
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for deb in lock.packages:
        blob = fetch(deb)
        target = dest / deb.filename
        try:
            os.link(blob, target)
        except OSError as exc:  # another file system, or links not allowed: a copy
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            shutil.copyfile(blob, target)
    return dest


# What apt resolves a builder's names to, in a container of the base image with the
# network: every .deb apt would download, with its pool path and sha256.
RESOLVE_SCRIPT = r"""
set -eu
printf 'deb %s %s main\n' "$MIRROR" "$SUITE" > /etc/apt/sources.list
rm -f /etc/apt/sources.list.d/*
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -qq -y --download-only \
    --no-install-recommends "$@" >/dev/null
cd /var/cache/apt/archives
for f in *.deb; do
    [ -e "$f" ] || continue  # the base image has every package already
    p=$(dpkg-deb -f "$f" Package); v=$(dpkg-deb -f "$f" Version)
    a=$(dpkg-deb -f "$f" Architecture)
    path=$(apt-cache show --no-all-versions "$p=$v" | sed -n 's/^Filename: //p' | head -n 1)
    echo "DEB $p $v $a $path $(sha256sum < "$f" | cut -d ' ' -f 1)"
done
"""


def parse_resolved(text: str, where: str) -> list[Deb]:
    """The DEB lines RESOLVE_SCRIPT (or resolve_base) printed, each checked by kind."""
    debs = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0] != "DEB":
            continue
        if len(words) != 6:
            raise EngineError(
                f"{where}: expected 'DEB name version arch path sha256', got {line!r}"
            )
        entry = dict(zip(_DEB_KEYS, words[1:], strict=True))
        debs.append(
            Deb(*(_field(where, entry, k, p) for k, p in zip(_DEB_KEYS, _PATTERNS, strict=True)))
        )
    return debs


def index_of(lists_dir: Path) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(package, version, architecture) -> (pool path, sha256) from apt's Packages lists."""
    index: dict[tuple[str, str, str], tuple[str, str]] = {}
    for packages in sorted(lists_dir.glob("*_Packages")):
        for stanza in packages.read_text().split("\n\n"):
            fields = dict(
                line.split(": ", 1)
                for line in stanza.splitlines()
                if ": " in line and not line.startswith(" ")
            )
            if {"Package", "Version", "Architecture", "Filename", "SHA256"} <= set(fields):
                key = (fields["Package"], fields["Version"], fields["Architecture"])
                index[key] = (fields["Filename"], fields["SHA256"])
    return index
