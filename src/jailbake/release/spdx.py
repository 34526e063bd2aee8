"""The SPDX 2.3 document of a build (sbom.spdx.json), written from its manifest: a
package per recipe (and per source of recipes with several) with its package URL and
its licence files where the recipe pins them, the Debian packages inside each root
file system, the artifacts as files generated from the recipes, and how they relate
(an image CONTAINS its root file system, which CONTAINS its packages; a recipe
DEPENDS_ON what it was built with). Every build writes it beside the artifacts;
publish sends it."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..cache.history import differences
from . import components

NONE = "NOASSERTION"
SBOM = "sbom.spdx.json"

# The SHA1 of an artifact (SPDX requires one per file) from its path and sha256.
Sha1Of = Callable[[Path, str], str]


def _file_digests(path: Path) -> tuple[str, str]:
    sha1, sha256 = hashlib.sha1(), hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha1.update(chunk)
            sha256.update(chunk)
    return sha1.hexdigest(), sha256.hexdigest()


def _spdx_id(kind: str, name: str) -> str:
    return f"SPDXRef-{kind}-" + re.sub(r"[^A-Za-z0-9.-]", "-", name)


class _Ids:
    """SPDX ids from names, made unique where two names sanitize alike."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def new(self, kind: str, name: str) -> str:
        base = _spdx_id(kind, name)
        ident, n = base, 1
        while ident in self.used:
            n += 1
            ident = f"{base}-{n}"
        self.used.add(ident)
        return ident


def _sha256(digest: str) -> list[dict[str, str]]:
    return [{"algorithm": "SHA256", "checksumValue": digest}]


# SPDX 2.3's form of a download location (clause 7.7), as the SPDX tools check it (from
# the start): a URL whose host ends in a domain (neither localhost nor an IP address),
# optionally prefixed by its VCS.
_LOCATION = re.compile(
    r"^(?:(?:git|hg|svn|bzr)\+)?(?:https?|ssh|git|svn|sftp|ftp)://"
    r"(?:[\w\-.!~*'()%;:&=+$,]+@)?[a-z0-9]+(?:[\-.][a-z0-9]+)*\.[a-z]{2,5}",
    re.IGNORECASE,
)


def _download_location(source: dict[str, Any]) -> str:
    """SPDX's form of a source's location; local files and repositories, and hosts SPDX
    cannot name (localhost, addresses), have none (the package comment keeps them)."""
    location = str(source.get("url") or source.get("git") or "")
    if "git" in source:
        location = f"git+{location}@{source['commit']}"
    return location if _LOCATION.match(location) else NONE


def _license_refs(expressions: list[str]) -> list[dict[str, str]]:
    """SPDX requires every LicenseRef- an expression uses to be declared."""
    refs = sorted({ref for e in expressions for ref in re.findall(r"LicenseRef-[A-Za-z0-9.-]+", e)})
    return [
        {
            "licenseId": ref,
            "name": ref.removeprefix("LicenseRef-"),
            "extractedText": "Not an SPDX-listed license: the terms are in the sources "
            "this package is built from.",
        }
        for ref in refs
    ]


def file_sha1(path: Path, sha256: str = "") -> str:
    """The SHA1 of a file, read whole."""
    return _file_digests(path)[0]


def _license_files(
    recipe: dict[str, Any], package: dict[str, Any], ids: _Ids
) -> list[dict[str, Any]]:
    """The recipe's licence files as SPDX files of its package, when all their texts
    were at hand (the manifest then holds their SHA1): the package is then analysed
    as far as those files, with the licences they state."""
    entries = recipe.get("license_files") or []
    if not entries or not all("sha1" in e for e in entries):
        return []
    files = []
    for entry in entries:
        stated = entry.get("license") or NONE
        files.append(
            {
                "SPDXID": ids.new("LicenseFile", f"{recipe['name']}-{entry['path']}"),
                "fileName": f"./{entry['path']}",
                "fileTypes": ["TEXT"],
                "checksums": [
                    {"algorithm": "SHA1", "checksumValue": entry["sha1"]},
                    {"algorithm": "SHA256", "checksumValue": entry["sha256"]},
                ],
                "licenseConcluded": NONE,
                "licenseInfoInFiles": [stated],
                "copyrightText": NONE,
            }
        )
    code = hashlib.sha1("".join(sorted(e["sha1"] for e in entries)).encode()).hexdigest()
    package["filesAnalyzed"] = True
    package["packageVerificationCode"] = {"packageVerificationCodeValue": code}
    package["licenseInfoFromFiles"] = sorted({f["licenseInfoInFiles"][0] for f in files})
    package["hasFiles"] = [f["SPDXID"] for f in files]
    return files


def _check_annotation(check: dict[str, Any], version: str) -> dict[str, str]:
    """What `jailbake repro` found of a recipe's result, as an SPDX review."""
    varied = ", ".join(check.get("varied", [])) or "no variation"
    if check.get("reproducible"):
        verdict = f"reproducible: rebuilt under {varied}, the same bytes"
    else:
        verdict = f"not reproducible: {differences(check)}"
    left = check.get("not_varied", [])
    return {
        "annotationDate": str(check.get("checked", "")),
        "annotationType": "REVIEW",
        "annotator": f"Tool: jailbake-{version}",
        "comment": f"jailbake repro: {verdict}"
        + (f" (not varied: {', '.join(left)})" if left else ""),
    }


def _purl_ref(purl: str) -> list[dict[str, str]]:
    return [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
             "referenceLocator": purl}] if purl else []  # fmt: skip


def _config_annotation(config: dict[str, Any], version: str, when: str) -> dict[str, str]:
    return {
        "annotationDate": when,
        "annotationType": "OTHER",
        "annotator": f"Tool: jailbake-{version}",
        "comment": f"configuration {config['path']}: sha256 {config['sha256']}",
    }


def _deb_package(deb: components.Deb, ident: str) -> dict[str, Any]:
    p = deb.package
    package: dict[str, Any] = {
        "SPDXID": ident,
        "name": p.name,
        "versionInfo": p.version,
        "supplier": "Organization: Debian",
        "downloadLocation": deb.url if _LOCATION.match(deb.url) else NONE,
        "filesAnalyzed": False,
        "licenseConcluded": NONE,
        "licenseDeclared": p.license or NONE,
        "copyrightText": NONE,
        "externalRefs": _purl_ref(p.purl),
        "primaryPackagePurpose": "LIBRARY",
    }
    if p.source != p.name:
        package["sourceInfo"] = f"built from the Debian source package {p.source}"
    if deb.sha256:
        package["checksums"] = _sha256(deb.sha256)
    return package


def sbom(
    manifest: dict[str, Any], artifacts_dir: Path, sha1_of: Sha1Of = file_sha1
) -> dict[str, Any]:
    """An SPDX 2.3 document: a package per recipe (and per source of recipes with
    several), the artifacts as files generated from them, and their dependencies."""
    packages: list[dict[str, Any]] = []
    relationships: list[dict[str, str]] = []
    files: list[dict[str, Any]] = []
    ids = _Ids()
    # Recipe names are unique, and so are their ids unless two sanitize alike.
    recipe_ids = {r["name"]: ids.new("Package", r["name"]) for r in manifest["recipes"]}
    debs = components.debs(manifest)
    created = datetime.fromtimestamp(int(manifest.get("source_date_epoch", 0)), UTC)
    when = created.strftime("%Y-%m-%dT%H:%M:%SZ")

    def relate(a: str, kind: str, b: str) -> None:
        relationships.append(
            {"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b}
        )

    for recipe in manifest["recipes"]:
        ident = recipe_ids[recipe["name"]]
        sources = [s for s in recipe["sources"] if "url" in s or "git" in s]
        package: dict[str, Any] = {
            "SPDXID": ident,
            "name": recipe["name"],
            "versionInfo": recipe["version"],
            "downloadLocation": _download_location(sources[0]) if len(sources) == 1 else NONE,
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": recipe.get("license") or "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "comment": f"jailbake key {recipe['key']}, output {recipe['output_digest']}",
        }
        if purl := components.purl_of(recipe):
            package["externalRefs"] = _purl_ref(purl)
        if recipe.get("summary"):
            package["summary"] = recipe["summary"]
        annotations = []
        if check := recipe.get("reproducibility"):
            annotations.append(_check_annotation(check, manifest.get("jailbake", "")))
        if config := recipe.get("config"):
            annotations.append(_config_annotation(config, manifest.get("jailbake", ""), when))
        if annotations:
            package["annotations"] = annotations
        if len(sources) == 1 and "sha256" in sources[0]:
            package["checksums"] = _sha256(sources[0]["sha256"])
        packages.append(package)
        files += _license_files(recipe, package, ids)
        if len(sources) > 1:
            for source in sources:
                location = _download_location(source)
                name = location.rsplit("/", 1)[-1].split("@", 1)[0] or recipe["name"]
                sub = ids.new("Source", f"{recipe['name']}-{name}")
                entry: dict[str, Any] = {
                    "SPDXID": sub,
                    "name": name,
                    "downloadLocation": location,
                    "filesAnalyzed": False,
                    "licenseConcluded": "NOASSERTION",
                    "licenseDeclared": "NOASSERTION",
                    "copyrightText": "NOASSERTION",
                }
                if "sha256" in source:
                    entry["checksums"] = [
                        {"algorithm": "SHA256", "checksumValue": source["sha256"]}
                    ]
                packages.append(entry)
                relate(ident, "CONTAINS", sub)
        held = set(recipe.get("contains", []))
        for dep in recipe["depends"]:
            relate(ident, "CONTAINS" if dep in held else "DEPENDS_ON", recipe_ids[dep])
        for deb in debs.get(recipe["name"], []):
            sub = ids.new("Deb", f"{deb.package.name}-{deb.package.architecture}")
            packages.append(_deb_package(deb, sub))
            relate(ident, "CONTAINS", sub)

    for artifact in manifest["artifacts"]:
        sha256 = artifact["sha256"]
        sha1 = sha1_of(artifacts_dir / artifact["path"], sha256)
        ident = ids.new("File", artifact["path"])
        files.append(
            {
                "SPDXID": ident,
                "fileName": f"./{artifact['path']}",
                "checksums": [
                    {"algorithm": "SHA1", "checksumValue": sha1},
                    {"algorithm": "SHA256", "checksumValue": sha256},
                ],
                "licenseConcluded": "NOASSERTION",
                "copyrightText": "NOASSERTION",
            }
        )
        relate("SPDXRef-DOCUMENT", "DESCRIBES", ident)
        if artifact.get("recipe"):
            relate(ident, "GENERATED_FROM", recipe_ids[artifact["recipe"]])

    if not manifest["artifacts"]:  # a build that publishes nothing: it made its targets
        for target in manifest.get("targets") or []:
            if target in recipe_ids:
                relate("SPDXRef-DOCUMENT", "DESCRIBES", recipe_ids[target])
    name = "-".join(manifest.get("targets") or ["jailbake"])
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    declared = [str(p["licenseDeclared"]) for p in packages]
    declared += [i for f in files for i in f.get("licenseInfoInFiles", [])]
    document: dict[str, Any] = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        # Unique per release, yet the same for the same build: derived from the manifest.
        "documentNamespace": f"https://spdx.org/spdxdocs/jailbake/{name}-{digest}",
        "creationInfo": {
            "created": when,
            "creators": [f"Tool: jailbake-{manifest.get('jailbake', 'unknown')}"],
        },
        "packages": packages,
        "files": files,
        "relationships": relationships,
    }
    refs = _license_refs(declared)
    if refs:
        document["hasExtractedLicensingInfos"] = refs
    return document


def write(artifacts_dir: Path, manifest: dict[str, Any], sha1_of: Sha1Of = file_sha1) -> Path:
    """Write sbom.spdx.json into artifacts_dir, atomically, with a fixed time."""
    dest = artifacts_dir / SBOM
    tmp = dest.with_name(f".{SBOM}.tmp")
    tmp.write_text(json.dumps(sbom(manifest, artifacts_dir, sha1_of)) + "\n")
    tmp.chmod(0o644)
    sde = int(manifest.get("source_date_epoch", 0))
    os.utime(tmp, (sde, sde))
    os.replace(tmp, dest)
    return dest
