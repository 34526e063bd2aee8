"""What both SBOMs (SPDX and CycloneDX) say of a build, from its manifest: a package
URL for each recipe, the Debian packages each root file system brings in (with the
pinned .deb they came from, where a recipe pins it), and which recipe's output holds
which."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from .inventory import Package

_GITHUB_ARCHIVE = re.compile(
    r"https://github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)/archive/(?:refs/tags/)?"
    r"([A-Za-z0-9_.+-]+?)(?:\.tar\.gz|\.tar\.xz|\.tar\.bz2|\.zip)"
)
_GITHUB_GIT = re.compile(r"(?:https|git|ssh)://(?:git@)?github\.com/([A-Za-z0-9_.-]+)/"
                         r"([A-Za-z0-9_.-]+?)(?:\.git)?/?")  # fmt: skip
_DEB = re.compile(r"([a-z0-9][a-z0-9+.-]*)_([0-9A-Za-z.+~-]+)_([a-z0-9-]+)\.deb")


@dataclass(frozen=True)
class Deb:
    """A Debian package inside a recipe's root file system."""

    package: Package
    url: str = ""  # the pinned .deb it was installed from, if a recipe pins it
    sha256: str = ""


def purl_of(recipe: Mapping[str, Any]) -> str:
    """A package URL for a recipe of one source: pkg:github for GitHub archives and
    repositories, pkg:generic with its download URL and checksum otherwise ('' for a
    recipe of no source, or of several)."""
    from packageurl import PackageURL

    sources = [s for s in recipe.get("sources", []) if "url" in s or "git" in s]
    if len(sources) != 1:
        return ""
    source = sources[0]
    if "url" in source and (m := _GITHUB_ARCHIVE.fullmatch(str(source["url"]))):
        return str(PackageURL("github", m[1].lower(), m[2].lower(), m[3]).to_string())
    if "git" in source and (m := _GITHUB_GIT.fullmatch(str(source["git"]))):
        return str(PackageURL("github", m[1].lower(), m[2].lower(), str(source["commit"]))
                   .to_string())  # fmt: skip
    qualifiers: dict[str, str] = {}
    if "url" in source:
        qualifiers = {"download_url": str(source["url"]), "checksum": f"sha256:{source['sha256']}"}
    else:
        qualifiers = {"vcs_url": f"git+{source['git']}@{source['commit']}"}
    name = re.sub(r"[^A-Za-z0-9._-]", "-", str(recipe["name"]))
    return str(PackageURL("generic", None, name, str(recipe["version"]), qualifiers).to_string())


def _deb_pins(manifest: Mapping[str, Any]) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(name, version without epoch, arch) -> (url, sha256) of every pinned .deb."""
    pins = {}
    for recipe in manifest.get("recipes", []):
        for source in recipe.get("sources", []):
            url = str(source.get("url", ""))
            match = _DEB.fullmatch(unquote(urlsplit(url).path.rsplit("/", 1)[-1]))
            if match:
                pins[(match[1], match[2], match[3])] = (url, str(source["sha256"]))
    return pins


def contained(manifest: Mapping[str, Any]) -> dict[str, list[str]]:
    """Recipe -> the recipes whose outputs its output holds."""
    return {r["name"]: list(r.get("contains", [])) for r in manifest.get("recipes", [])}


def debs(manifest: Mapping[str, Any]) -> dict[str, list[Deb]]:
    """Recipe -> the Debian packages its root file system brings in: those of its
    inventory that no recipe it holds already has (jailhouse-rootfs holds
    debian-rootfs: debian-rootfs's packages are listed once, under debian-rootfs)."""
    pins = _deb_pins(manifest)
    holds = contained(manifest)
    inventories = {
        r["name"]: {_ident(p): p for p in (Package.of(d) for d in r.get("packages", []))}
        for r in manifest.get("recipes", [])
    }
    found: dict[str, list[Deb]] = {}
    for name, packages in inventories.items():
        inside: set[tuple[str, str, str]] = set()
        stack, seen = list(holds.get(name, [])), set()
        while stack:
            held = stack.pop()
            if held in seen:
                continue
            seen.add(held)
            inside |= set(inventories.get(held, {}))
            stack += holds.get(held, [])
        own = [p for key, p in sorted(packages.items()) if key not in inside]
        if own:
            found[name] = [Deb(p, *pins.get(_pin_key(p), ("", ""))) for p in own]
    return found


def _ident(p: Package) -> tuple[str, str, str]:
    return (p.name, p.version, p.architecture)


def _pin_key(p: Package) -> tuple[str, str, str]:
    return (p.name, p.version.split(":", 1)[-1], p.architecture)


def package_count(manifest: Mapping[str, Any]) -> int:
    return sum(len(d) for d in debs(manifest).values())


def holders(recipes: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Recipe -> the recipe that holds it, where one does (the first, in build order)."""
    held: dict[str, str] = {}
    for recipe in recipes:
        for name in recipe.get("contains", []):
            held.setdefault(str(name), str(recipe["name"]))
    return held
