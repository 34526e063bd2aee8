"""Offline mirrors: every source of a graph, and the builder images, in one directory.

A mirror directory serves `--mirror DIR` (or, behind any static HTTP server,
`--mirror URL`): url sources by file name and as sha256/<digest>, git sources as
<repo>-<commit>.tar exported at their commit, builder and base images as
images/<name>.tar saved through the engine API, and index.json listing it all.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..cache.keys import file_sha256
from ..core import paths
from ..core.errors import EngineError, JailbakeError
from ..executors import debs, engine
from ..model.graph import Graph
from ..model.recipe import Recipe, Source, SourceKind
from .builders import builder_dirs, builder_locks, image_file
from .fetch import Fetcher, deb_source, git_archive_name

log = logging.getLogger(__name__)

INDEX = "index.json"


@dataclass(frozen=True)
class Entry:
    """One file of a mirror."""

    path: str  # relative to the mirror directory
    kind: str  # url, git or image
    sha256: str
    size: int
    origin: str  # the URL, git URL and commit, or image tag it stands for
    used_by: str  # recipe or builder


def _sources(graph: Graph) -> list[tuple[Recipe, Source]]:
    return [
        (graph.recipes[name], source)
        for name in graph.order
        for source in graph.recipes[name].sources
        if source.kind is not SourceKind.FILE
    ]


def fetch_all(graph: Graph, fetcher: Fetcher, jobs: int) -> int:
    """Put every source of the graph in the cache, jobs at a time; return how many."""
    work = _sources(graph)

    def one(item: tuple[Recipe, Source]) -> None:
        recipe, source = item
        if source.kind is SourceKind.URL:
            fetcher.fetch_url(recipe.name, source)
        else:
            fetcher.fetch_git(recipe.name, source)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for _ in pool.map(one, work):
            pass
    return len(work)


class MirrorWriter:
    """Writes a mirror directory, adding only what it does not hold yet."""

    def __init__(self, dest: Path, fetcher: Fetcher) -> None:
        self.dest = dest
        self.fetcher = fetcher
        self.entries: dict[str, Entry] = {}
        index = dest / INDEX
        if index.is_file():
            try:
                for raw in json.loads(index.read_text()).get("entries", []):
                    entry = Entry(**raw)
                    if (dest / entry.path).is_file():
                        self.entries[entry.path] = entry
            except (ValueError, TypeError, AttributeError) as exc:
                raise JailbakeError(
                    f"{index}: not a jailbake mirror index ({exc}); move it away and run "
                    "jailbake mirror again"
                ) from None
        self.added = 0

    def _place(self, src: Path, rel: str) -> None:
        """Copy src to rel via a temporary name, so no partial file has the real name;
        a hard link where src is already in the mirror (the same file by name and by
        digest)."""
        target = self._target(rel)
        tmp = target.with_name(f".{target.name}.part")
        tmp.unlink(missing_ok=True)
        try:
            if not src.is_relative_to(self.dest):
                raise OSError
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, target)

    def _target(self, rel: str) -> Path:
        """Where rel goes: never through a link in the mirror (one there is replaced)."""
        return paths.target(self.dest, rel, origin=f"mirror {self.dest}", replace_link=True)

    def _have(self, rel: str, sha256: str) -> bool:
        entry = self.entries.get(rel)
        return entry is not None and entry.sha256 == sha256

    def add_url(self, used_by: str, source: Source) -> None:
        blob = self.fetcher.fetch_url(used_by, source)
        for rel in (f"sha256/{source.sha256}", source.filename):
            if self._have(rel, source.sha256):
                continue
            held = self.entries.get(rel)
            if held is not None:
                log.warning(
                    "mirror: %s already holds %s; %s is served as sha256/%s only",
                    rel,
                    held.origin,
                    source.location,
                    source.sha256,
                )
                continue
            self._place(blob, rel)
            self._record(rel, "url", source.sha256, source.location, used_by)
            blob = self.dest / rel  # the second name links to the first

    def add_git(self, used_by: str, source: Source) -> None:
        """A git source (or a remote layer repository) as `git archive` of its commit."""
        rel = git_archive_name(source.location, source.commit)
        origin = f"{source.location} {source.commit}"
        if rel in self.entries:
            return
        target = self._target(rel)
        tmp = target.with_name(f".{target.name}.part")
        tmp.unlink(missing_ok=True)
        self.fetcher.write_git_archive(used_by, source, tmp)
        os.replace(tmp, target)
        self._record(rel, "git", file_sha256(target), origin, used_by)

    def add_image(self, client: Any, tag: str, used_by: str) -> None:
        rel = image_file(tag)
        if rel in self.entries:
            return
        target = self._target(rel)
        tmp = target.with_name(f".{target.name}.part")
        tmp.unlink(missing_ok=True)
        log.info("saving image %s", tag)
        from docker.errors import DockerException

        try:
            with tmp.open("wb") as out:
                for chunk in client.images.get(tag).save(named=tag):
                    out.write(chunk)
        except DockerException as exc:
            tmp.unlink(missing_ok=True)
            raise EngineError(f"mirror: cannot save image {tag}: {exc}") from None
        os.replace(tmp, target)
        self._record(rel, "image", file_sha256(target), tag, used_by)

    def _record(self, rel: str, kind: str, sha256: str, origin: str, used_by: str) -> None:
        size = (self.dest / rel).stat().st_size
        self.entries[rel] = Entry(rel, kind, sha256, size, origin, used_by)
        self.added += 1

    def write_index(self) -> None:
        from .. import __version__

        data = {
            "jailbake": __version__,
            "entries": [asdict(self.entries[k]) for k in sorted(self.entries)],
        }
        tmp = self.dest / f".{INDEX}.part"
        tmp.unlink(missing_ok=True)
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.dest / INDEX)

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries.values())


def write_mirror(
    graph: Graph,
    fetcher: Fetcher,
    dest: Path,
    *,
    jobs: int = 4,
    client_factory: Callable[[], Any] | None = None,
) -> MirrorWriter:
    """Fill dest with every source of graph and, given an engine, its builder images."""
    dest.mkdir(parents=True, exist_ok=True)
    fetch_all(graph, fetcher, jobs)
    writer = MirrorWriter(dest, fetcher)
    try:
        for recipe, source in _sources(graph):
            if source.kind is SourceKind.URL:
                writer.add_url(recipe.name, source)
            else:
                writer.add_git(recipe.name, source)
        for name, url, commit in graph.layer.repos:  # remote layer repositories
            writer.add_git(f"repos.{name}", Source(SourceKind.GIT, url, commit=commit))
        for name, lock in sorted(builder_locks(graph).items()):  # builders can be remade
            for deb in lock.packages:
                writer.add_url(f"builder {name}", deb_source(deb))
        if client_factory is not None:
            _add_images(writer, graph, client_factory(), fetcher)
    finally:
        writer.write_index()
    return writer


def _add_images(writer: MirrorWriter, graph: Graph, client: Any, fetcher: Fetcher) -> None:
    """The images of builders whose packages are not pinned, and the images they start
    from (but the base image: it is made from its lock, as pinned builders are from
    theirs, whose .debs the mirror holds)."""
    for name, context in sorted(builder_dirs(graph).items()):
        if debs.lock_path(context) is not None:
            continue
        tag = engine.ensure_image(
            client, context, engine.image_key(context), fetch=fetcher.fetch_deb
        )
        writer.add_image(client, tag, name)
        for base in engine.base_images(context):
            if not base.startswith(engine.BASE_IMAGE):
                writer.add_image(client, base, name)
