"""Builder images: which the layers use, their pinned packages, making them (from
their locks, a mirror's saved image, or their Dockerfile), and locking them again."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import FetchError, JailbakeError
from ..executors import debs, engine, pinned
from ..model.graph import Graph
from .fetch import Fetcher

log = logging.getLogger(__name__)

IMAGES = "images"  # a mirror directory's saved builder images


def image_file(tag: str) -> str:
    """images/<name>.tar for an image tag: localhost/jailbake-x:abc -> jailbake-x-abc.tar."""
    name = tag.rsplit("/", 1)[-1].replace(":", "-")
    return f"{IMAGES}/{re.sub(r'[^A-Za-z0-9._-]', '_', name)}.tar"


def builder_dirs(graph: Graph) -> dict[str, Path]:
    """The builder directories the graph's recipes use, by name."""
    dirs: dict[str, Path] = {}
    for name in graph.order:
        path = graph.builder_dir(graph.recipes[name])
        if path is not None:
            dirs[path.name] = path
    return dirs


def builder_locks(graph: Graph) -> dict[str, debs.Lock]:
    """The pinned packages of the graph's builders and of the base image they name, by
    builder ('debian-base' for the base)."""
    locks: dict[str, debs.Lock] = {}
    for name, context in sorted(builder_dirs(graph).items()):
        lock_file = debs.lock_path(context)
        if lock_file is None:
            continue
        locks[name] = lock = debs.read_lock(lock_file)
        base_file = debs.lock_path(context.parent / debs.BASE_DIR)
        if base_file is not None and debs.read_lock(base_file).digest == lock.base:
            locks[debs.BASE_DIR] = debs.read_lock(base_file)
    return locks


def describe(graph: Graph, used: Iterable[str]) -> list[dict[str, Any]]:
    """The builder images `used` as manifest.json lists them: name, key and tag, and
    for a pinned builder its lock's digest, the base lock it stands on and its packages
    (the base's own lock listed as 'debian-base'). The same on every machine."""
    dirs, locks = builder_dirs(graph), builder_locks(graph)

    def packages(lock: debs.Lock) -> list[dict[str, str]]:
        return [
            {"name": d.name, "version": d.version, "architecture": d.architecture,
             "sha256": d.sha256}
            for d in lock.packages
        ]  # fmt: skip

    described: list[dict[str, Any]] = []
    for name in sorted(set(used)):
        key = engine.image_key(dirs[name])
        entry: dict[str, Any] = {"name": name, "key": key, "tag": engine.image_tag(name, key)}
        if (lock := locks.get(name)) is not None:
            entry.update(lock=lock.digest, base=lock.base, packages=packages(lock))
        described.append(entry)
    base = locks.get(debs.BASE_DIR)
    if base is not None and any(e.get("base") == base.digest for e in described):
        described.append({"name": debs.BASE_DIR, "lock": base.digest, "packages": packages(base)})
    return described


def ensure_builders(graph: Graph, client: Any, fetcher: Fetcher) -> dict[str, str]:
    """Every builder image the graph uses, in the engine: present, loaded from a mirror
    directory, or made (from its pinned packages, fetched like sources; a builder
    without a packages.lock builds its Dockerfile, with the network). Returns the tag
    of each, by builder."""
    tags = {}
    mirrors = fetcher.mirrors
    for name, context in sorted(builder_dirs(graph).items()):
        tags[name] = engine.ensure_image(
            client,
            context,
            engine.image_key(context),
            load=lambda tag: load_image(client, mirrors, tag),
            offline=fetcher.offline,
            fetch=fetcher.fetch_deb,
        )
    return tags


def _archive_tags(path: Path) -> list[str]:
    """The tags an image archive (docker save) would give: its manifest.json's RepoTags."""
    import tarfile

    try:
        with tarfile.open(path, "r:") as tar:  # members' data is skipped, not read
            for member in tar:
                if member.name == "manifest.json" and member.isfile() and member.size < 1 << 20:
                    f = tar.extractfile(member)
                    manifest = json.loads(f.read()) if f is not None else None
                    break
            else:
                return []
    except (OSError, tarfile.TarError, ValueError):
        return []
    if not isinstance(manifest, list):
        return []
    return [t for entry in manifest if isinstance(entry, dict)
            for t in entry.get("RepoTags") or []]  # fmt: skip


def load_image(client: Any, mirrors: Iterable[str], tag: str) -> bool:
    """Load tag into the engine from the first mirror directory holding it."""
    for mirror in mirrors:
        if "://" in mirror:
            continue
        path = Path(mirror) / image_file(tag)
        if path.is_file():
            from docker.errors import DockerException

            log.info("loading image %s from %s", tag, path)
            tags = _archive_tags(path)
            if tags != [tag]:  # a mirror's archive could name (and replace) any image
                raise FetchError(
                    f"{path}: expected an image archive of {tag} alone, but it names {tags}"
                )
            try:
                with path.open("rb") as f:
                    client.images.load(f)  # streamed: builder images are hundreds of MB
                client.images.get(tag)
            except DockerException as exc:
                raise FetchError(f"{path}: cannot load image {tag} from it: {exc}") from None
            return True
    return False


def base_lock_file(docker_dir: Path) -> Path:
    """docker/debian-base/packages.lock of a layer's docker directory."""
    return docker_dir / debs.BASE_DIR / debs.LOCK


def make_base(client: Any, lock_file: Path, fetcher: Fetcher, *, force: bool = False) -> str:
    """The pinned base image in the engine: kept if it is labelled with the lock's
    digest (unless force), else made from the lock's .debs."""
    import tempfile

    lock = debs.read_lock(lock_file)
    tag = engine.base_tag(lock.suite)
    if not force and engine.labelled(client, tag) == lock.digest:
        return tag
    with tempfile.TemporaryDirectory(prefix="jailbake-base-", dir="/var/tmp") as tmp:
        return engine.make_base_image(client, lock_file, fetcher.fetch_deb, Path(tmp))


@dataclass(frozen=True)
class Relocked:
    path: Path
    packages: int
    changed: bool


def _write_if_changed(path: Path, lock: debs.Lock) -> Relocked:
    """Write lock unless path already pins the same packages (then its epoch stays, and
    so do the image keys)."""
    if path.is_file():
        try:
            old = debs.read_lock(path)
        except JailbakeError:
            old = None
        if old is not None and (old.suite, old.architecture, old.base, old.packages) == (
            lock.suite,
            lock.architecture,
            lock.base,
            lock.packages,
        ):
            return Relocked(path, len(old.packages), False)
    debs.write_lock(path, lock)
    return Relocked(path, len(lock.packages), True)


def lock_builders(
    client: Any,
    docker_dir: Path,
    contexts: Iterable[Path],
    fetcher: Fetcher,
    debian_mirror: str,
    *,
    keep_base: bool = False,
) -> list[Relocked]:
    """Resolve the base image's packages and each builder's again, from debian_mirror
    today, and write the locks that changed. The base is resolved by this machine's
    mmdebstrap (root); a builder's names in a container of the new base image."""
    import tempfile
    import time

    base_file = base_lock_file(docker_dir)
    names = debs.requested(base_file.parent)
    if names is None:
        raise JailbakeError(
            f"{base_file.parent / debs.REQUESTED}: expected the base image's packages"
        )
    done: list[Relocked] = []
    if not keep_base or not base_file.is_file():
        old = debs.read_lock(base_file) if base_file.is_file() else None
        suite = old.suite if old else "bookworm"
        architecture = old.architecture if old else engine.debian_architecture()
        with tempfile.TemporaryDirectory(prefix="jailbake-lock-", dir="/var/tmp") as tmp:
            resolved = pinned.resolve_base(suite, architecture, names, debian_mirror, Path(tmp))
        packages = debs.sorted_debs(resolved)
        same = old is not None and old.packages == packages  # then its epoch stays
        epoch = old.epoch if old is not None and same else int(time.time())
        done.append(
            _write_if_changed(base_file, debs.Lock(suite, architecture, epoch, "", packages))
        )
    base_lock = debs.read_lock(base_file)
    base = make_base(client, base_file, fetcher)
    for context in sorted(set(contexts)):
        wanted = debs.requested(context)
        if wanted is None:
            log.info("%s has no packages file: its Dockerfile is not pinned", context)
            continue
        resolved = pinned.resolve_builder(client, base, base_lock, wanted, debian_mirror)
        if not resolved:
            raise JailbakeError(
                f"{context / debs.REQUESTED}: expected packages the base image lacks; it "
                "has all of these already (remove the file, or name what the builder adds)"
            )
        lock = debs.Lock(
            base_lock.suite,
            base_lock.architecture,
            base_lock.epoch,
            base_lock.digest,
            debs.sorted_debs(resolved),
        )
        done.append(_write_if_changed(context / debs.LOCK, lock))
    return done
