"""Publishing a build's artifacts, as CI pipelines do after a build.

A release is the artifacts listed in artifacts/manifest.json (each checked against
its recorded sha256), the manifest itself, the SBOMs written from it (SPDX 2.3 and
CycloneDX 1.6), the provenance of them all (provenance.intoto.json), SHA256SUMS over
all of them (`sha256sum -c` checks it) and, when a key is given, signatures of
SHA256SUMS, the provenance and the SBOMs. It goes to a directory or, with HTTP PUT
(WebDAV style), to a URL. SHA256SUMS always goes last, so a reader who finds it finds
everything it lists, and its signature.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..cache.keys import file_sha256
from ..core import net, paths
from ..core.errors import JailbakeError
from ..core.fields import CONTROL
from . import cdx, provenance, signing, spdx
from .artifacts import MANIFEST
from .cdx import CDX
from .provenance import PROVENANCE
from .spdx import SBOM

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

SUMS = "SHA256SUMS"
SIGNED = (SUMS, PROVENANCE, SBOM, CDX)  # what --sign signs
RETRY_STATUS = (429, 500, 502, 503, 504)  # "try again"; 501 and the like will not change
RETRIES = 4
BACKOFF = 0.5


class PublishError(JailbakeError):
    pass


def load_manifest(artifacts_dir: Path) -> dict[str, Any]:
    path = artifacts_dir / MANIFEST
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise PublishError(f"{path}: no manifest; build first (jailbake build)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise PublishError(f"{path}: not a jailbake manifest: {exc}") from None
    artifacts = data.get("artifacts") if isinstance(data, dict) else None
    if not isinstance(artifacts, list) or not all(
        isinstance(a, dict)
        and isinstance(a.get("path"), str)
        and not CONTROL.search(a["path"])  # a name is one line of SHA256SUMS
        and isinstance(a.get("sha256"), str)
        and re.fullmatch(r"[0-9a-f]{64}", a["sha256"])
        for a in artifacts
    ):
        raise PublishError(
            f"{path}: artifacts: expected a list of {{path, sha256}} entries as jailbake "
            "writes them (paths of one line); build again"
        )
    return data


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def release_run(
    artifacts_dir: Path, manifest_sha256: str, fallback: provenance.Run
) -> tuple[provenance.Run, bool]:
    """The run details of the build that wrote the manifest, when it left them (build
    --provenance), else fallback; and whether they were the build's."""
    path = artifacts_dir / PROVENANCE
    if path.is_file():
        try:
            run = provenance.run_of(provenance.load(path), manifest_sha256, path)
        except provenance.ProvenanceError as exc:
            log.warning("%s; written again", exc)
            run = None
        if run is not None:
            return run, True
    return fallback, False


def prepare(
    artifacts_dir: Path,
    run: provenance.Run,
    keys: Sequence[signing.SigningKey] = (),
) -> tuple[list[tuple[str, str]], bool]:
    """Check the artifacts against the manifest; write the SBOM, the provenance (with
    the build's run details if it left them, else run's), SHA256SUMS and the
    signatures. Returns (name, sha256) of every file of the release, SHA256SUMS last,
    and whether the run details were the build's."""
    schemes = [k.scheme for k in keys]
    if len(set(schemes)) != len(schemes):
        raise PublishError(
            "--sign: one key of each kind (ssh, minisign, gpg): two would write the same "
            "signature files"
        )
    manifest = load_manifest(artifacts_dir)
    files: list[tuple[str, str]] = []
    for artifact in manifest["artifacts"]:
        path = paths.check_inside(
            artifacts_dir, str(artifact["path"]), origin=f"{artifacts_dir / MANIFEST}: artifacts"
        )
        if not path.is_file():
            raise PublishError(f"{path}: listed in {MANIFEST} but missing; build again")
        actual = file_sha256(path)
        if actual != artifact["sha256"]:
            raise PublishError(
                f"{path}: sha256 {actual} differs from {MANIFEST}'s {artifact['sha256']}; "
                "it changed after the build: build again"
            )
        files.append((artifact["path"], actual))
    manifest_sha256 = file_sha256(artifacts_dir / MANIFEST)
    files.append((MANIFEST, manifest_sha256))
    spdx.write(artifacts_dir, manifest)
    files.append((SBOM, file_sha256(artifacts_dir / SBOM)))
    cdx.write(artifacts_dir, manifest)
    files.append((CDX, file_sha256(artifacts_dir / CDX)))
    run, from_build = release_run(artifacts_dir, manifest_sha256, run)
    provenance.write(artifacts_dir, MANIFEST, sorted(files), run)
    files.append((PROVENANCE, file_sha256(artifacts_dir / PROVENANCE)))
    sums = "".join(f"{digest}  {name}\n" for name, digest in sorted(files))
    _write(artifacts_dir / SUMS, sums)
    _stale_signatures(artifacts_dir, set())
    for key in keys:
        for name in SIGNED:
            sig = signing.sign(key, artifacts_dir / name)
            files.append((sig.name, file_sha256(sig)))
    files.append((SUMS, file_sha256(artifacts_dir / SUMS)))
    return files, from_build


def _stale_signatures(root: Path, made: set[str]) -> None:
    """Remove signatures of the release's signed files that this publish did not make
    (a key given last time, not now): they would vouch for other bytes."""
    for name in SIGNED:
        for suffix in signing.SUFFIX.values():
            if name + suffix not in made:
                path = paths.check_inside(root, name + suffix, origin=f"publish to {root}")
                if path.is_file() or path.is_symlink():
                    path.unlink()


def to_directory(artifacts_dir: Path, files: Sequence[tuple[str, str]], dest: Path) -> int:
    """Copy the release into dest; files it already holds unchanged are skipped."""
    copied = 0
    dest.mkdir(parents=True, exist_ok=True)
    _stale_signatures(dest, {name for name, _ in files})
    for name, digest in files:
        # A link already in dest is replaced, never followed.
        target = paths.target(dest, name, origin=f"publish to {dest}", replace_link=True)
        if target.is_file() and not target.is_symlink() and file_sha256(target) == digest:
            continue
        tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
        shutil.copyfile(artifacts_dir / name, tmp)
        os.replace(tmp, target)
        copied += 1
    return copied


class Uploader:
    """HTTP PUT to a WebDAV-style server, with retries."""

    def __init__(self, base_url: str) -> None:
        import requests

        self.base = base_url.rstrip("/")
        self.session: requests.Session = requests.Session()
        self.session.headers["User-Agent"] = "jailbake"

    def _request(self, method: str, name: str, **kwargs: Any) -> requests.Response:
        import requests

        url = f"{self.base}/{quote(name, safe='/')}"  # '?', '#' or '%' in a name stay in it
        for attempt in range(RETRIES + 1):
            try:
                data = kwargs.get("data_path")
                if data is not None:
                    bounds = net.blob_bounds(Path(data).stat().st_size)
                    with Path(data).open("rb") as f:
                        resp = net.request(self.session, method, url, bounds, data=f)
                else:
                    resp = net.request(self.session, method, url, net.RECORD)
                if resp.status_code not in RETRY_STATUS:
                    return resp
                resp.close()
                problem = f"HTTP {resp.status_code} {resp.reason}"
            except net.NetError as exc:
                raise PublishError(str(exc)) from None
            except requests.RequestException as exc:
                problem = str(exc)
            if attempt == RETRIES:
                raise PublishError(f"{method} {url}: {problem}")
            log.info("%s %s: %s; retrying", method, url, problem)
            time.sleep(BACKOFF * 2**attempt)
        raise AssertionError("unreachable")

    def remote_sums(self) -> dict[str, str]:
        """What the server's SHA256SUMS says it holds (nothing if it has none)."""
        with self._request("GET", SUMS) as resp:
            if resp.status_code != 200:
                return {}
            try:
                text = net.read_all(resp, net.RECORD).decode(errors="replace")
            except net.NetError as exc:
                raise PublishError(str(exc)) from None
        held = {}
        for line in text.splitlines():
            digest, _, name = line.partition("  ")
            if len(digest) == 64 and name:
                held[name] = digest
        return held

    def put(self, artifacts_dir: Path, name: str) -> None:
        resp = self._request("PUT", name, data_path=artifacts_dir / name)
        resp.close()
        if resp.status_code not in (200, 201, 204):
            raise PublishError(f"PUT {self.base}/{name}: HTTP {resp.status_code} {resp.reason}")

    def delete(self, name: str) -> None:
        resp = self._request("DELETE", name)
        resp.close()
        if resp.status_code not in (200, 202, 204, 404):
            raise PublishError(f"DELETE {self.base}/{name}: HTTP {resp.status_code} {resp.reason}")

    def exists(self, name: str) -> bool:
        with self._request("HEAD", name) as resp:
            return resp.status_code == 200


def to_url(artifacts_dir: Path, files: Sequence[tuple[str, str]], url: str) -> int:
    """Upload the release; what the server's SHA256SUMS lists with the same digest, and
    still has, is skipped. SHA256SUMS goes last."""
    uploader = Uploader(url)
    held = uploader.remote_sums()
    todo = [
        name
        for name, digest in files
        if name == SUMS or held.get(name) != digest or not uploader.exists(name)
    ]
    if held and len(todo) > 1:
        # The old SHA256SUMS goes first: while files change, no checksums file vouches
        # for them, and an interrupted upload leaves none (the next one sends all).
        uploader.delete(SUMS)
    for name in todo:
        log.info("uploading %s", name)
        uploader.put(artifacts_dir, name)
    return len(todo)


def publish_release(
    artifacts_dir: Path,
    to: str,
    run: provenance.Run,
    keys: Sequence[signing.SigningKey] = (),
) -> tuple[list[tuple[str, str]], int, bool]:
    """Prepare and send the release: (its files, how many were sent, whether the
    provenance's run details are the build's)."""
    files, from_build = prepare(artifacts_dir, run, keys)
    if to.startswith(("http://", "https://")):
        return files, to_url(artifacts_dir, files, to), from_build
    return files, to_directory(artifacts_dir, files, Path(to)), from_build
