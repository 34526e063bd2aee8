"""The CycloneDX 1.6 SBOM of a build (sbom.cdx.json), for Dependency-Track and
scanners: what the SPDX document says, made with cyclonedx-python-lib from the
manifest by publish (and build --provenance). A component per recipe (with package
URL, source checksum, licence, key and configuration digest as properties), the Debian
packages nested in the root file system that brings them in, held recipes nested in
their holder (an image holds its root file system), the artifacts as files, and each
recipe's dependencies. The same manifest gives the same bytes."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import components

CDX = "sbom.cdx.json"
PROPERTY = "jailbake"


def _license(expression: str) -> list[Any]:
    from cyclonedx.model.license import LicenseExpression

    return [LicenseExpression(expression)] if expression else []


def bom_json(manifest: Mapping[str, Any]) -> str:
    """The CycloneDX 1.6 JSON document of the manifest's build."""
    import uuid

    from cyclonedx.model import (
        ExternalReference,
        ExternalReferenceType,
        HashAlgorithm,
        HashType,
        Property,
        XsUri,
    )
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    version = str(manifest.get("jailbake", "unknown"))
    debs = components.debs(manifest)
    recipes = list(manifest.get("recipes", []))
    made: dict[str, Component] = {}
    for recipe in recipes:
        name = str(recipe["name"])
        sources = [s for s in recipe.get("sources", []) if "url" in s or "git" in s]
        props = [
            Property(name=f"{PROPERTY}:key", value=str(recipe["key"])),
            Property(name=f"{PROPERTY}:output_digest", value=str(recipe["output_digest"])),
        ]
        if config := recipe.get("config"):
            props.append(Property(name=f"{PROPERTY}:config:{config['path']}",
                                  value=f"sha256:{config['sha256']}"))  # fmt: skip
        if check := recipe.get("reproducibility"):
            verdict = "reproducible" if check.get("reproducible") else "not reproducible"
            props.append(Property(name=f"{PROPERTY}:repro", value=f"{verdict} "
                                  f"({', '.join(check.get('varied', []))})"))  # fmt: skip
        references = []
        hashes = []
        if len(sources) == 1:
            source = sources[0]
            location = str(source.get("url") or f"git+{source['git']}@{source['commit']}")
            references.append(
                ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(location))
            )
            if "sha256" in source:
                hashes.append(HashType(alg=HashAlgorithm.SHA_256, content=str(source["sha256"])))
        purl = components.purl_of(recipe)
        component = Component(
            name=name,
            version=str(recipe["version"]),
            type=ComponentType.OPERATING_SYSTEM if name in debs else ComponentType.APPLICATION,
            bom_ref=f"recipe:{name}",
            description=str(recipe.get("summary") or "") or None,
            licenses=_license(str(recipe.get("license") or "")),
            purl=PackageURL.from_string(purl) if purl else None,
            hashes=hashes,
            external_references=references,
            properties=props,
        )
        for deb in debs.get(name, []):
            p = deb.package
            pinned = Component(
                name=p.name,
                version=p.version,
                type=ComponentType.LIBRARY,
                bom_ref=f"deb:{name}:{p.name}:{p.architecture}",
                purl=PackageURL.from_string(p.purl),
                licenses=_license(p.license),
            )
            if deb.sha256:
                pinned.hashes.add(HashType(alg=HashAlgorithm.SHA_256, content=deb.sha256))
                pinned.external_references.add(
                    ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(deb.url))
                )
            component.components.add(pinned)
        made[name] = component

    bom = Bom()
    held = components.holders(recipes)
    for name, component in made.items():  # held only among dependencies: no loop
        holder = held.get(name)
        (made[holder].components if holder in made else bom.components).add(component)
    for recipe in recipes:
        depends = [made[d] for d in recipe.get("depends", []) if d in made]
        bom.register_dependency(made[str(recipe["name"])], depends)
    for artifact in manifest.get("artifacts", []):
        file = Component(
            name=str(artifact["path"]),
            type=ComponentType.FILE,
            bom_ref=f"file:{artifact['path']}",
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=str(artifact["sha256"]))],
        )
        bom.components.add(file)
        if artifact.get("recipe") in made:
            bom.register_dependency(file, [made[str(artifact["recipe"])]])

    targets = [str(t) for t in manifest.get("targets", [])]
    top = Component(name="-".join(targets) or "jailbake", type=ComponentType.FIRMWARE,
                    bom_ref="build")  # fmt: skip
    bom.metadata.component = top
    bom.register_dependency(top, [made[t] for t in targets if t in made])
    bom.metadata.tools.components.add(
        Component(name="jailbake", version=version, type=ComponentType.APPLICATION)
    )
    bom.metadata.timestamp = datetime.fromtimestamp(int(manifest.get("source_date_epoch", 0)), UTC)
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).digest()
    bom.serial_number = uuid.UUID(bytes=digest[:16], version=4)  # the same build, the same id
    return str(JsonV1Dot6(bom).output_as_string(indent=None))


def write(artifacts_dir: Path, manifest: Mapping[str, Any]) -> Path:
    """Write sbom.cdx.json into artifacts_dir, atomically, with a fixed time."""
    dest = artifacts_dir / CDX
    tmp = dest.with_name(f".{CDX}.tmp")
    tmp.write_text(bom_json(manifest) + "\n")
    tmp.chmod(0o644)
    sde = int(manifest.get("source_date_epoch", 0))
    os.utime(tmp, (sde, sde))
    os.replace(tmp, dest)
    return dest
