"""Images made of pinned packages, offline: the base image by mmdebstrap from a flat
repository of exactly its locked .debs, a builder's packages installed onto the base
in a container without network and committed. Both clamp every time to the lock's
epoch, so the same lock gives the same files on any machine, on any day. Resolving
the locks again (`jailbake lock-builders`) is the only step that asks Debian."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core import run
from ..core.errors import EngineError
from .debs import RESOLVE_SCRIPT, Deb, FetchDeb, Lock, index_of, parse_resolved, stage

log = logging.getLogger(__name__)

MOUNT = "/mnt"  # where a packages container sees the staged .debs (base-files makes it)
# What the engine puts into every container (its mount points): not the image's own.
ENGINE_STUBS = frozenset(
    {"etc/hosts", "etc/hostname", "etc/resolv.conf", "run/.containerenv", ".dockerenv"}
)
# Installs the staged .debs (apt orders them; nothing is downloaded: no lists, no
# network), drops what records the day (logs, caches), clamps every time to the epoch.
INSTALL_SCRIPT = rf"""
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends {MOUNT}/*.deb
rm -rf /var/log/* /var/cache/apt/*.bin /var/cache/ldconfig/aux-cache \
    /var/cache/debconf/*-old /var/lib/dpkg/*-old /var/lib/apt/lists/*
find / -xdev \( -path {MOUNT} -o -path /proc -o -path /sys -o -path /dev \) -prune \
    -o -newermt "@$SOURCE_DATE_EPOCH" -print0 \
    | xargs -0 -r touch --no-dereference --date="@$SOURCE_DATE_EPOCH"
"""
STUB_DIRS = frozenset({".", "etc", "run"})
_MIRROR = re.compile(r"(?:https?|file)://[^\s'\"\\]+")


def check_mirror(mirror: str) -> str:
    if not _MIRROR.fullmatch(mirror):
        raise EngineError(
            "the Debian mirror (--debian-mirror, else this machine's apt sources): "
            f"expected an http(s):// or file:// URL, got {mirror!r}"
        )
    return mirror


def resolve_base(
    suite: str, architecture: str, names: list[str], mirror: str, workdir: Path
) -> list[Deb]:
    """What mmdebstrap's minbase plus names is today in mirror, downloaded and hashed
    (this machine's mmdebstrap, as root)."""
    chroot = workdir / "resolve"
    run.run(
        [
            "mmdebstrap",
            "--quiet",
            "--mode=root",
            f"--architectures={architecture}",
            "--variant=minbase",
            *([f"--include={','.join(names)}"] if names else []),
            "--skip=download/empty",
            "--skip=essential/unlink",
            "--skip=cleanup/apt/cache",
            "--skip=cleanup/apt/lists",
            "--",
            suite,
            chroot,
            check_mirror(mirror),
        ]
    )
    index = index_of(chroot / "var/lib/apt/lists")
    lines = []
    for deb in sorted((chroot / "var/cache/apt/archives").glob("*.deb")):
        fields = run.run(
            ["dpkg-deb", "--field", deb, "Package", "Version", "Architecture"],
            stdout=-1,
        ).stdout.decode()
        control = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
        key = (
            control.get("Package", ""),
            control.get("Version", ""),
            control.get("Architecture", ""),
        )
        if key not in index:
            raise EngineError(f"lock-builders: {deb.name} is in no package index of {mirror}")
        path, sha256 = index[key]
        if hashlib.sha256(deb.read_bytes()).hexdigest() != sha256:
            raise EngineError(f"lock-builders: {deb.name} does not match its index's sha256")
        lines.append(f"DEB {' '.join(key)} {path} {sha256}")
    return parse_resolved("\n".join(lines), "lock-builders: the base image's packages")


def base_tarball(lock: Lock, fetch: FetchDeb, workdir: Path) -> Path:
    """The base image's root file system as a tar: mmdebstrap's minbase of the lock's
    .debs and nothing else, times clamped to its epoch (mmdebstrap is reproducible
    under SOURCE_DATE_EPOCH)."""
    repo = stage(lock, fetch, workdir / "repo")
    env = {"SOURCE_DATE_EPOCH": str(lock.epoch)}
    with (repo / "Packages").open("wb") as index:
        run.run(["apt-ftparchive", "packages", "."], cwd=repo, stdout=index, env=env)
    with (repo / "Release").open("wb") as release:
        run.run(
            [
                "apt-ftparchive",
                "-o", f"APT::FTPArchive::Release::Suite={lock.suite}",
                "-o", f"APT::FTPArchive::Release::Codename={lock.suite}",
                "release", ".",
            ],
            cwd=repo, stdout=release, env=env,
        )  # fmt: skip
    names = sorted({d.name for d in lock.packages})
    tarball = workdir / "base.tar"
    run.run(
        [
            "mmdebstrap",
            "--quiet",
            f"--architectures={lock.architecture}",
            "--variant=minbase",
            f"--include={','.join(names)}",
            '--customize-hook=rm -rf "$1"/var/log/* "$1"/var/cache/ldconfig/aux-cache',
            f"--customize-hook=echo 'deb {lock_mirror()} {lock.suite} main'"
            ' > "$1"/etc/apt/sources.list',
            "--",
            lock.suite,
            tarball,
            f"deb [trusted=yes] copy://{repo} ./",
        ],
        env=env,
    )
    return tarball


def lock_mirror() -> str:
    """The archive the images' apt sources name (they install nothing from it)."""
    return "http://deb.debian.org/debian"


def _run_container(
    client: Any, image: str, script: str, what: str, args: Sequence[str] = (), **options: Any
) -> Any:
    """A container of image running script (sh -c) to its end; the stopped container.
    EngineError with the end of its output if it fails."""
    container = client.containers.create(image, ["/bin/sh", "-c", script, "sh", *args], **options)
    try:
        container.start()
        code = int(container.wait().get("StatusCode", 1))
        if code != 0:
            tail = container.logs(stdout=True, stderr=True).decode(errors="replace")[-3000:]
            raise EngineError(f"{what}: exited with status {code}\n{tail}")
        return container
    except BaseException:
        container.remove(force=True)
        raise


def install_packages(
    client: Any, base: str, lock: Lock, fetch: FetchDeb, tag: str, labels: dict[str, str]
) -> str:
    """tag: base with lock's .debs installed, offline; times clamped to the epoch."""
    with tempfile.TemporaryDirectory(prefix="jailbake-debs-") as tmp:
        debs = stage(lock, fetch, Path(tmp) / "debs")
        os.chmod(tmp, 0o755)
        os.chmod(debs, 0o755)
        container = _run_container(
            client,
            base,
            INSTALL_SCRIPT,
            f"installing the pinned packages into {tag}",
            environment={"SOURCE_DATE_EPOCH": str(lock.epoch)},
            volumes={str(debs): {"bind": MOUNT, "mode": "ro"}},
            network_mode="none",
            user="0",
        )
        try:
            repository, _, version = tag.rpartition(":")
            changes = [f"LABEL {k}={v}" for k, v in sorted(labels.items())]
            container.commit(repository=repository, tag=version, changes=changes)
        finally:
            container.remove(force=True)
    return tag


def resolve_builder(client: Any, base: str, lock: Lock, names: list[str], mirror: str) -> list[Deb]:
    """What apt installs for names on the base image today, from mirror."""
    container = _run_container(
        client,
        base,
        RESOLVE_SCRIPT,
        f"resolving {' '.join(names)} on {base}",
        names,
        environment={"MIRROR": check_mirror(mirror), "SUITE": lock.suite},
        user="0",
    )
    try:
        output = container.logs(stdout=True, stderr=False).decode(errors="replace")
    finally:
        container.remove(force=True)
    return parse_resolved(output, f"lock-builders: resolving on {base}")


def filesystem_listing(client: Any, tag: str) -> list[str]:
    """Every entry of the image's file system, sorted: path, type, mode, owner, time,
    and the sha256 of a file's bytes or a link's target. Two images with the same
    listing have the same contents, whatever their layers or ids. Left out: the mount
    points the engine makes in every container (ENGINE_STUBS), and with them the
    times of the directories holding them."""
    import tarfile

    container = client.containers.create(tag, ["true"])
    try:
        with tempfile.TemporaryFile() as spool:
            for chunk in container.export():
                spool.write(chunk)
            spool.seek(0)
            lines = []
            with tarfile.open(fileobj=spool, mode="r|") as tar:
                for member in tar:
                    name = member.name.strip("/") or "."
                    if name in ENGINE_STUBS:
                        continue
                    if name in STUB_DIRS:
                        member.mtime = 0
                    what = member.linkname
                    if member.isfile():
                        f = tar.extractfile(member)
                        what = hashlib.sha256(f.read() if f else b"").hexdigest()
                    lines.append(
                        f"{name} {member.type.decode()} "
                        f"{member.mode:o} {member.uid}:{member.gid} {member.mtime} {what}"
                    )
    finally:
        container.remove(force=True)
    return sorted(lines)
