"""Checking a published release as its receiver would (jailbake verify-release):

- SHA256SUMS, the provenance and the SBOM carry good signatures by the given key;
- every file SHA256SUMS lists is there with its digest, and nothing else is (but those
  signatures);
- the provenance's subjects are exactly the files of the release, by digest;
- given the layer checkout, the provenance names its configuration files (by digest),
  its commit, and its recipes' source pins.

Each problem is one line; the release is good when there are none."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache.keys import file_sha256
from ..core import files, paths
from ..core.errors import JailbakeError
from . import provenance, signing
from .provenance import PROVENANCE
from .publish import SIGNED, SUMS

_SUMS_LINE = re.compile(r"([0-9a-f]{64})  ([^\n]+)")


@dataclass(frozen=True)
class Expected:
    """What a layer checkout says a release of it must name."""

    configuration: Sequence[Mapping[str, str]]  # [{path, sha256}] as the manifest lists
    commit: str | None  # the checkout's HEAD, if it is a git work tree
    dependencies: Sequence[Mapping[str, Any]]  # provenance.source_dependency of each pin


@dataclass
class Findings:
    files: int = 0
    signatures: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


MAX_SUMS = 16 << 20


def _listed(release: Path, found: Findings) -> dict[str, str]:
    sums = release / SUMS
    try:
        text = files.read_limited(sums, MAX_SUMS).decode()
    except FileNotFoundError:
        found.problems.append(f"{sums}: missing: not a release directory")
        return {}
    except (OSError, ValueError) as exc:  # a link, a FIFO, not UTF-8, too large
        found.problems.append(f"{sums}: not read: {exc}")
        return {}
    listed: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _SUMS_LINE.fullmatch(line)
        if match is None or match[2] in listed:
            found.problems.append(
                f"{sums}:{number}: expected '<sha256>  <name>', each name once: {line[:80]!r}"
            )
            continue
        listed[match[2]] = match[1]
    return listed


def _check_files(release: Path, listed: Mapping[str, str], found: Findings) -> None:
    for name, digest in sorted(listed.items()):
        try:
            path = paths.check_inside(release, name, origin=f"{release / SUMS}")
        except JailbakeError as exc:
            found.problems.append(str(exc))
            continue
        if not path.is_file():
            found.problems.append(f"{path}: listed in {SUMS} but missing")
        elif (actual := file_sha256(path)) != digest:
            found.problems.append(f"{path}: sha256 {actual}, not {digest} as {SUMS} says")
        else:
            found.files += 1


def _check_extra(release: Path, listed: Mapping[str, str], found: Findings) -> None:
    allowed = {*listed, SUMS}
    # Signatures by other schemes' keys too: a release may carry several.
    allowed |= {n + suffix for n in SIGNED for suffix in signing.SUFFIX.values()}
    for dirpath, dirnames, filenames in os.walk(release):
        dirnames.sort()
        for name in sorted(filenames):
            rel = (Path(dirpath) / name).relative_to(release).as_posix()
            if rel not in allowed:
                found.problems.append(f"{release / rel}: not listed in {SUMS}: an extra file")


def _check_signatures(
    release: Path, listed: Mapping[str, str], key: signing.PublicKey, found: Findings
) -> None:
    for name in SIGNED:
        if name != SUMS and name not in listed:
            continue  # reported as a missing file of the release
        path = release / name
        try:
            signing.verify(key, path, signing.signature_path(path, key.scheme))
            found.signatures += 1
        except signing.SignatureError as exc:
            found.problems.append(str(exc))


def _check_subjects(
    release: Path, listed: Mapping[str, str], found: Findings
) -> dict[str, Any] | None:
    path = release / PROVENANCE
    if PROVENANCE not in listed:
        found.problems.append(f"{path}: not listed in {SUMS}: the release has no provenance")
        return None
    try:
        document = provenance.load(path)
    except provenance.ProvenanceError as exc:
        found.problems.append(str(exc))
        return None
    subjects = provenance.subjects_of(document)
    files = {n: d for n, d in listed.items() if n not in (SUMS, PROVENANCE)}
    for name in sorted(set(subjects) | set(files)):
        if name not in files:
            found.problems.append(f"{path}: subject {name}: not a file of the release")
        elif name not in subjects:
            found.problems.append(f"{path}: {name}: a file of the release but not a subject")
        elif subjects[name] != files[name]:
            found.problems.append(
                f"{path}: subject {name}: sha256 {subjects[name]}, the file's is {files[name]}"
            )
    return document


def _dependency_keys(deps: Sequence[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (
            str((d.get("annotations") or {}).get("recipe", "")),
            str(d.get("uri", "")),
            ",".join(f"{k}:{v}" for k, v in sorted((d.get("digest") or {}).items())),
        )
        for d in deps
        if (d.get("annotations") or {}).get("recipe")
    }


def check_against(document: Mapping[str, Any], expected: Expected, where: Path,
                  found: Findings) -> None:  # fmt: skip
    """The provenance's configuration and pins against the layer checkout's."""
    definition = document["predicate"]["buildDefinition"]
    configuration = (definition.get("externalParameters") or {}).get("configuration") or {}
    named = {str(f.get("path")): str(f.get("sha256")) for f in configuration.get("files", [])}
    have = {str(f["path"]): str(f["sha256"]) for f in expected.configuration}
    for name in sorted(set(named) | set(have)):
        if name not in have:
            found.problems.append(f"{where}: configuration file {name}: not in the checkout")
        elif name not in named:
            found.problems.append(
                f"{where}: configuration file {name} of the checkout is not the release's"
            )
        elif named[name] != have[name]:
            found.problems.append(
                f"{where}: configuration file {name}: sha256 {named[name]} in the release, "
                f"{have[name]} in the checkout"
            )
    repository = configuration.get("repository") or {}
    if expected.commit is not None and "commit" not in repository:
        found.notes.append(f"{where}: names no commit: the checkout's cannot be compared")
    elif expected.commit is not None and repository["commit"] != expected.commit:
        found.problems.append(
            f"{where}: built from commit {repository['commit']}, the checkout is at "
            f"{expected.commit}"
        )
    if repository.get("dirty"):
        found.notes.append(f"{where}: built from a checkout with uncommitted changes")
    pinned = _dependency_keys(definition.get("resolvedDependencies") or [])
    wanted = _dependency_keys(expected.dependencies)
    for recipe, uri, digest in sorted(pinned - wanted):
        found.problems.append(f"{where}: {recipe}: {uri} ({digest}) is not pinned by the checkout")
    for recipe, uri, digest in sorted(wanted - pinned):
        found.problems.append(f"{where}: {recipe}: the checkout pins {uri} ({digest}); the "
                              "release does not name it")  # fmt: skip


def verify_release(
    release: Path, key: signing.PublicKey, expected: Expected | None = None
) -> Findings:
    found = Findings()
    if not release.is_dir():
        found.problems.append(f"{release}: not a directory")
        return found
    listed = _listed(release, found)
    if not listed:
        if not found.problems:
            found.problems.append(f"{release / SUMS}: lists no file")
        return found
    _check_signatures(release, listed, key, found)
    _check_files(release, listed, found)
    _check_extra(release, listed, found)
    document = _check_subjects(release, listed, found)
    if document is not None and expected is not None:
        check_against(document, expected, release / PROVENANCE, found)
    return found


def targets_of(release: Path) -> list[str]:
    """The targets the release's provenance names (none if it cannot be read)."""
    try:
        document = provenance.load(release / PROVENANCE)
    except provenance.ProvenanceError:
        return []
    external = document["predicate"]["buildDefinition"].get("externalParameters") or {}
    return [str(t) for t in external.get("targets", [])]
