"""jailbake legal-info, as Buildroot's: for every recipe of a build its licence, the
licence texts from its sources, and the exact sources and patches it was built from,
with a manifest.csv and the sha256 of every file. Written to a new directory that
replaces the old one whole, or not at all."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from ..cache.store import Store
from ..core import paths
from ..core.errors import JailbakeError
from ..core.files import remove_tree
from ..model.recipe import Recipe, Source, SourceKind

if TYPE_CHECKING:
    from ..model.graph import Graph
from ..sources import licenses
from ..sources.fetch import Fetcher, git_archive_name

MANIFEST = "manifest.csv"
SUMS = "legal-info.sha256"
README = "README"
COLUMNS = (
    "PACKAGE",
    "VERSION",
    "LICENSE",
    "LICENSE FILES",
    "SOURCE ARCHIVE",
    "SOURCE SITE",
    "PATCHES",
    "REDISTRIBUTED",
)


@dataclass(frozen=True)
class LegalInfo:
    dest: Path
    recipes: int
    sources: int
    license_texts: int
    missing_texts: list[str]  # recipes with sources but no licence file pinned


def _site(source: Source) -> str:
    if source.kind is SourceKind.URL:
        return source.location.rsplit("/", 1)[0]
    if source.kind is SourceKind.GIT:
        return f"{source.location}@{source.commit}"
    return "this layer"


class Preparer(Protocol):
    """What legal-info takes a graph's sources and licence texts from
    (jailbake.bake.action.RecipeBuilder is one)."""

    graph: Graph
    store: Store
    fetcher: Fetcher

    def prepare_sources(self, recipe: Recipe, dest: Path) -> Any: ...


def _source_name(source: Source) -> str:
    if source.kind is SourceKind.URL:
        return source.filename
    if source.kind is SourceKind.GIT:
        return git_archive_name(source.location, source.commit)
    assert source.path is not None
    return source.path.name


class _Writer:
    def __init__(self, builder: Preparer, root: Path) -> None:
        self.builder = builder
        self.root = root
        self.count = 0

    def target(self, rel: PurePosixPath, origin: str) -> Path:
        return paths.target(self.root, rel, origin=origin)

    def source(self, recipe: Recipe, source: Source, where: PurePosixPath) -> None:
        dest = self.target(where / _source_name(source), recipe.where("sources"))
        fetcher = self.builder.fetcher
        if source.kind is SourceKind.URL:
            shutil.copyfile(fetcher.fetch_url(recipe.name, source), dest)
        elif source.kind is SourceKind.GIT:
            fetcher.write_git_archive(recipe.name, source, dest)
        else:
            assert source.path is not None
            shutil.copyfile(source.path, dest)
        self.count += 1

    def texts(self, recipe: Recipe, where: PurePosixPath) -> None:
        """The recipe's licence texts, from the cache, or from its sources prepared anew
        (which checks them against their pins and puts them in the cache)."""
        store = self.builder.store
        if not all(store.verify_blob(f.sha256) for f in recipe.license_files):
            with store.temp_dir(f"legal-{recipe.name}") as work:
                self.builder.prepare_sources(recipe, work / "src")
        for entry in recipe.license_files:
            data = licenses.text(store, entry.sha256)
            if data is None:  # removed by someone else meanwhile
                raise JailbakeError(f"{recipe.name}: licence text {entry.path} left the cache")
            self.target(where / entry.path, recipe.where("license_files")).write_bytes(data)


def _row(recipe: Recipe) -> dict[str, str]:
    upstream = [s for s in recipe.sources if s.kind is not SourceKind.FILE]
    return {
        "PACKAGE": recipe.name,
        "VERSION": recipe.version,
        "LICENSE": recipe.license or "unknown",
        "LICENSE FILES": " ".join(f.path for f in recipe.license_files),
        "SOURCE ARCHIVE": " ".join(_source_name(s) for s in recipe.sources)
        if recipe.redistribute
        else "not redistributed",
        "SOURCE SITE": " ".join(_site(s) for s in upstream),
        "PATCHES": " ".join(PurePosixPath(p.rel).name for p in recipe.patches),
        "REDISTRIBUTED": "yes" if recipe.redistribute else "no",
    }


def _readme(info: LegalInfo, names: list[str]) -> str:
    missing = (
        "Recipes with upstream sources but no licence file pinned (license_files): "
        + ", ".join(info.missing_texts)
        + "\n"
        if info.missing_texts
        else ""
    )
    return (
        "Licence information of a jailbake build, as `jailbake legal-info` writes it.\n\n"
        f"{MANIFEST}: one line per recipe: licence, licence files, the source archives\n"
        "and patches it is built from, where they come from, and whether they are\n"
        "redistributed here (recipes of binary blobs say no).\n"
        "licenses/RECIPE-VERSION/: the licence texts taken from each recipe's sources,\n"
        "checked against the sha256 its recipe pins.\n"
        "sources/RECIPE-VERSION/: the exact source archives (git sources as `git\n"
        "archive` tarballs of their commit), layer files and patches.\n"
        f"{SUMS}: the sha256 of every file here (sha256sum -c checks it).\n\n"
        f"Recipes: {', '.join(names)}\n{missing}"
    )


def write_legal_info(builder: Preparer, dest: Path) -> LegalInfo:
    """Write the legal-info directory of builder's graph to dest."""
    graph = builder.graph
    if dest.exists() and not (dest / SUMS).is_file() and any(dest.iterdir()):
        raise JailbakeError(
            f"legal-info: {dest} exists and is not a legal-info directory; "
            "give a new or empty directory"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    remove_tree(tmp)
    tmp.mkdir()
    try:
        writer = _Writer(builder, tmp)
        rows = []
        texts = 0
        missing = []
        for name in graph.order:
            recipe = graph.recipes[name]
            label = f"{recipe.name}-{recipe.version}"
            writer.texts(recipe, PurePosixPath("licenses", label))
            texts += len(recipe.license_files)
            upstream = [s for s in recipe.sources if s.kind is not SourceKind.FILE]
            if upstream and not recipe.license_files:
                missing.append(name)
            if recipe.redistribute:
                for source in recipe.sources:
                    writer.source(recipe, source, PurePosixPath("sources", label))
                for patch in recipe.patches:
                    rel = PurePosixPath("sources", label, PurePosixPath(patch.rel).name)
                    shutil.copyfile(patch.path, writer.target(rel, recipe.where("patches")))
            rows.append(_row(recipe))
        out = io.StringIO()
        table = csv.DictWriter(out, COLUMNS, lineterminator="\n", quoting=csv.QUOTE_ALL)
        table.writeheader()
        table.writerows(rows)
        (tmp / MANIFEST).write_text(out.getvalue())
        info = LegalInfo(dest, len(rows), writer.count, texts, missing)
        (tmp / README).write_text(_readme(info, list(graph.order)))
        sums = []
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            sums.append(f"{digest}  {path.relative_to(tmp).as_posix()}\n")
        (tmp / SUMS).write_text("".join(sums))
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        if dest.exists():
            os.rename(dest, old)
        os.rename(tmp, dest)
        remove_tree(old)
    except BaseException:
        remove_tree(tmp)
        raise
    return info
