"""The provenance of a release: an in-toto Statement (v1) whose predicate is SLSA
Provenance v1 (provenance.intoto.json), written with in-toto's own attestation classes.

- subject: the files of the release, by sha256 (artifacts, manifest.json, the SBOMs);
- buildDefinition: the layer configuration (its files and digests, the checkout's
  commit and whether it was dirty, the layer repositories' commits) and the targets as
  external parameters; every source pin, every builder image (key, image digest,
  locked packages) and jailbake itself as resolved dependencies;
- runDetails: the builder's id, the executor it used (and its endpoint), when the
  build started and ended.

All but the run details comes from manifest.json. A build asked for provenance writes
it with its own run details; publish writes it again over the files it releases,
keeping the run details of the build that wrote the manifest when that build left them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..cache.keys import file_sha256
from ..core import files
from ..core.errors import JailbakeError
from .inventory import Package

PROVENANCE = "provenance.intoto.json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# What the external and internal parameters mean: docs/releases.md#build-type.
BUILD_TYPE = "https://jailbake.dev/provenance/build/v1"
DEFAULT_BUILDER = "https://jailbake.dev/builders/local"


class ProvenanceError(JailbakeError):
    pass


@dataclass(frozen=True)
class Checkout:
    """The git checkout the layer files came from, as it was at build time."""

    commit: str
    dirty: bool

    def to_dict(self) -> dict[str, Any]:
        return {"commit": self.commit, "dirty": self.dirty}


@dataclass(frozen=True)
class Run:
    """One invocation that built a release: who ran it, where steps ran, and when."""

    builder_id: str
    executor: str  # host, docker or remote ('unrecorded' when the build left no details)
    started: datetime | None = None  # None: not known (publish of a build without them)
    finished: datetime | None = None
    endpoint: str = ""  # the container engine's or the execution service's address
    invocation: str = field(default_factory=lambda: os.urandom(16).hex())
    image_digests: Mapping[str, str] = field(default_factory=dict)  # by builder name
    checkout: Checkout | None = None
    written_by: str = "build"  # or 'publish', for a build that left no run details


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: object, where: str) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise ProvenanceError(f"{where}: expected a UTC time like 2026-01-01T00:00:00Z") from None


def code_digest() -> str:
    """jailbake's own modules, by content: what 'jailbake 0.1.0' was, exactly."""
    package = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        h.update(f"{path.relative_to(package).as_posix()}\0".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def source_dependency(recipe: str, pin: Mapping[str, Any]) -> dict[str, Any] | None:
    """A recipe's pinned source as a resource descriptor (layer files are the checkout's)."""
    if "url" in pin:
        return {
            "uri": str(pin["url"]),
            "digest": {"sha256": str(pin["sha256"])},
            "annotations": {"recipe": recipe},
        }
    if "git" in pin:
        return {
            "uri": f"git+{pin['git']}",
            "digest": {"gitCommit": str(pin["commit"])},
            "annotations": {"recipe": recipe},
        }
    return None


def _deb(name: str, package: Mapping[str, Any]) -> dict[str, Any]:
    deb = Package(str(package["name"]), str(package["version"]), str(package["architecture"]),
                  str(package["name"]), "")  # fmt: skip
    return {
        "uri": deb.purl,
        "digest": {"sha256": str(package["sha256"])},
        "annotations": {"builder": name},
    }


def dependencies(manifest: Mapping[str, Any], run: Run) -> list[dict[str, Any]]:
    """Every source pin, builder image and locked package, and jailbake itself."""
    found: list[dict[str, Any]] = []
    for recipe in manifest.get("recipes", []):
        for pin in recipe.get("sources", []):
            if (dep := source_dependency(recipe["name"], pin)) is not None:
                found.append(dep)
    for builder in manifest.get("builders", []):
        name = str(builder["name"])
        if "key" in builder:
            image: dict[str, Any] = {
                "name": f"builder:{name}",
                "uri": str(builder["tag"]),
                "annotations": {"key": str(builder["key"])},
            }
            if digest := run.image_digests.get(name, ""):
                image["digest"] = {"sha256": digest.removeprefix("sha256:")}
            if "lock" in builder:
                image["annotations"]["lock"] = str(builder["lock"])
                image["annotations"]["base"] = str(builder["base"])
            found.append(image)
        else:  # the base image the pinned builders stand on
            found.append({"name": f"builder:{name}", "annotations": {"lock": str(builder["lock"])}})
        found += [_deb(name, p) for p in builder.get("packages", [])]
    for repo in manifest.get("layer_repos", []):
        found.append(
            {
                "name": f"layer:{repo['name']}",
                "uri": f"git+{repo['url']}",
                "digest": {"gitCommit": str(repo["commit"])},
            }
        )
    found.append(
        {
            "name": "jailbake",
            "uri": f"pkg:pypi/jailbake@{manifest.get('jailbake', 'unknown')}",
            # What the build ran (the manifest says), not what writes this.
            "digest": {"sha256": str(manifest.get("jailbake_sha256") or code_digest())},
        }
    )
    return found


def statement(
    manifest: Mapping[str, Any],
    manifest_sha256: str,
    subjects: Sequence[tuple[str, str]],
    run: Run,
) -> dict[str, Any]:
    """The Statement of the release files `subjects` ((name, sha256)), made and checked
    by in_toto_attestation."""
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import resource_descriptor_pb2
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
    from in_toto_attestation.v1.statement import Statement

    configuration: dict[str, Any] = {"files": list(manifest.get("configuration", []))}
    if run.checkout is not None:
        configuration["repository"] = run.checkout.to_dict()
    external = {
        "configuration": configuration,
        "targets": list(manifest.get("targets", [])),
        "layerRepositories": list(manifest.get("layer_repos", [])),
    }
    internal = {
        # Strings: a protobuf Struct would turn numbers into floats.
        "sourceDateEpoch": str(manifest.get("source_date_epoch", 0)),
        "manifest": {"sha256": manifest_sha256},
        "writtenBy": run.written_by,
    }
    prov = provenance_pb2.Provenance()
    definition = prov.build_definition
    definition.build_type = BUILD_TYPE
    definition.external_parameters.update(external)
    definition.internal_parameters.update(internal)
    for dep in dependencies(manifest, run):
        descriptor = resource_descriptor_pb2.ResourceDescriptor()
        definition.resolved_dependencies.append(json_format.ParseDict(dep, descriptor))
    details = prov.run_details
    details.builder.id = run.builder_id
    details.builder.version["jailbake"] = str(manifest.get("jailbake", "unknown"))
    executor = ResourceDescriptor(
        name=f"executor:{run.executor}",
        uri=run.endpoint,
    ).pb
    details.builder.builder_dependencies.append(executor)
    if run.invocation:
        details.metadata.invocation_id = run.invocation
    if run.started is not None:
        details.metadata.started_on.FromJsonString(_time(run.started))
    if run.finished is not None:
        details.metadata.finished_on.FromJsonString(_time(run.finished))
    subject = [ResourceDescriptor(name=n, digest={"sha256": d}).pb for n, d in subjects]
    made = Statement(subject, PREDICATE_TYPE, json_format.MessageToDict(prov))
    made.validate()
    document: dict[str, Any] = json_format.MessageToDict(made.pb)
    return document


def write(
    artifacts_dir: Path, manifest_name: str, subjects: Sequence[tuple[str, str]], run: Run
) -> Path:
    """Write provenance.intoto.json into artifacts_dir, atomically."""
    manifest_path = artifacts_dir / manifest_name
    manifest = json.loads(manifest_path.read_text())
    document = statement(manifest, file_sha256(manifest_path), subjects, run)
    dest = artifacts_dir / PROVENANCE
    tmp = dest.with_name(f".{PROVENANCE}.tmp-{os.urandom(4).hex()}")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    tmp.chmod(0o644)
    os.replace(tmp, dest)
    return dest


MAX_PROVENANCE = 64 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def _check_parameters(definition: Mapping[str, Any], where: str) -> None:
    """The free-form parameters jailbake reads, by kind."""
    external = definition.get("externalParameters", {})
    internal = definition.get("internalParameters", {})
    if not isinstance(external, dict) or not isinstance(internal, dict):
        raise ProvenanceError(f"{where}: parameters: expected objects")
    configuration = external.get("configuration", {})
    if not isinstance(configuration, dict):
        raise ProvenanceError(f"{where}: externalParameters.configuration: expected an object")
    files = configuration.get("files", [])
    if not isinstance(files, list) or not all(
        isinstance(f, dict) and isinstance(f.get("path"), str)
        and isinstance(f.get("sha256"), str) and _SHA256.fullmatch(f["sha256"])
        for f in files
    ):  # fmt: skip
        raise ProvenanceError(
            f"{where}: externalParameters.configuration.files: expected [{{path, sha256}}]"
        )
    repository = configuration.get("repository")
    if repository is not None and not (
        isinstance(repository, dict)
        and isinstance(repository.get("commit"), str)
        and _COMMIT.fullmatch(repository["commit"])
        and isinstance(repository.get("dirty"), bool)
    ):
        raise ProvenanceError(
            f"{where}: externalParameters.configuration.repository: expected {{commit, dirty}}"
        )
    targets = external.get("targets", [])
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ProvenanceError(f"{where}: externalParameters.targets: expected a list of names")
    manifest = internal.get("manifest", {})
    if not isinstance(manifest, dict) or not isinstance(manifest.get("sha256", ""), str):
        raise ProvenanceError(f"{where}: internalParameters.manifest: expected {{sha256}}")
    if not isinstance(internal.get("writtenBy", ""), str):
        raise ProvenanceError(f"{where}: internalParameters.writtenBy: expected a string")


def load(path: Path) -> dict[str, Any]:
    """A provenance statement, read as a regular file of bounded size and checked: the
    Statement and its SLSA predicate by in-toto's own schema (protobuf), the
    parameters jailbake reads by kind."""
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2

    try:
        data = json.loads(files.read_limited(path, MAX_PROVENANCE))
    except FileNotFoundError:
        raise ProvenanceError(f"{path}: missing") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise ProvenanceError(f"{path}: not a JSON file: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or data.get("_type") != STATEMENT_TYPE:
        raise ProvenanceError(f"{path}: _type: expected {STATEMENT_TYPE}")
    if data.get("predicateType") != PREDICATE_TYPE:
        raise ProvenanceError(f"{path}: predicateType: expected {PREDICATE_TYPE}")
    try:
        json_format.ParseDict(data, statement_pb2.Statement())
        predicate = data.get("predicate")
        if not isinstance(predicate, dict):
            raise ValueError("predicate: expected an object")
        json_format.ParseDict(predicate, provenance_pb2.Provenance())
    except (json_format.ParseError, TypeError, AttributeError, ValueError) as exc:
        line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ProvenanceError(f"{path}: not an SLSA Provenance v1 statement: {line}") from None
    definition = data["predicate"].get("buildDefinition") or {}
    if definition.get("buildType") != BUILD_TYPE:
        raise ProvenanceError(f"{path}: predicate.buildDefinition.buildType: expected {BUILD_TYPE}")
    _check_parameters(definition, str(path))
    subjects = data.get("subject")
    if not isinstance(subjects, list) or not all(
        isinstance(s, dict)
        and isinstance(s.get("name"), str)
        and isinstance(s.get("digest"), dict)
        and isinstance(s["digest"].get("sha256"), str)
        for s in subjects
    ):
        raise ProvenanceError(f"{path}: subject: expected a list of {{name, digest.sha256}}")
    return data


def subjects_of(document: Mapping[str, Any]) -> dict[str, str]:
    return {s["name"]: s["digest"]["sha256"] for s in document["subject"]}


def run_of(document: Mapping[str, Any], manifest_sha256: str, where: Path) -> Run | None:
    """The run details a provenance records, if it was written for this manifest."""
    predicate = document["predicate"]
    internal = predicate["buildDefinition"].get("internalParameters") or {}
    if (internal.get("manifest") or {}).get("sha256") != manifest_sha256:
        return None
    if internal.get("writtenBy") != "build":  # publish's own: no build's run details
        return None
    details = predicate.get("runDetails") or {}
    builder = details.get("builder") or {}
    metadata = details.get("metadata") or {}
    when = f"{where}: predicate.runDetails.metadata"
    executor = next(iter(builder.get("builderDependencies") or [{}]))
    repository = (
        predicate["buildDefinition"].get("externalParameters", {}).get("configuration", {})
    ).get("repository")
    images = {
        str(d["name"]).removeprefix("builder:"): str(d["digest"]["sha256"])
        for d in predicate["buildDefinition"].get("resolvedDependencies", [])
        if str(d.get("name", "")).startswith("builder:") and "sha256" in d.get("digest", {})
    }
    return Run(
        builder_id=str(builder.get("id", DEFAULT_BUILDER)),
        executor=str(executor.get("name", "executor:unknown")).removeprefix("executor:"),
        endpoint=str(executor.get("uri", "")),
        started=_parse_time(metadata.get("startedOn"), f"{when}.startedOn"),
        finished=_parse_time(metadata.get("finishedOn"), f"{when}.finishedOn"),
        invocation=str(metadata.get("invocationId", "")),
        image_digests=images,
        checkout=Checkout(str(repository["commit"]), bool(repository["dirty"]))
        if isinstance(repository, dict) and "commit" in repository
        else None,
    )
