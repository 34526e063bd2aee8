"""`publish`: a release with SHA256SUMS, manifest.json and an SPDX 2.3 SBOM, to a
directory or a WebDAV server (nginx), checksums last."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from conftest import ROOT, Project, WebDAV, assert_valid_spdx, copy_checkout, jailbake
from test_fetch import git_repo

RELEASE = {"SHA256SUMS", "manifest.json", "sbom.spdx.json", "sbom.cdx.json",
           "provenance.intoto.json"}  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """examples/hello built once: (checkout, artifacts directory)."""
    tmp = tmp_path_factory.mktemp("hello")
    checkout = copy_checkout(tmp / "jailbake")
    art = tmp / "art"
    jailbake(
        "build", "examples/hello/hello.yml", "--executor", "host",
        "--cache-dir", str(tmp / "cache"), "--artifacts-dir", str(art),
        cwd=checkout, check=True,
    )  # fmt: skip
    return checkout, art


def artifacts_copy(built: tuple[Path, Path], tmp_path: Path) -> Path:
    art = tmp_path / "art"
    shutil.copytree(built[1], art)
    return art


def publish(checkout: Path, art: Path, to: str, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jailbake.cli", "publish", "examples/hello/hello.yml",
         "--artifacts-dir", str(art), "--to", to, *more],
        cwd=checkout, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_release_directory_checks_and_validates(built: tuple[Path, Path], tmp_path: Path) -> None:
    checkout, _ = built
    art = artifacts_copy(built, tmp_path)
    dest = tmp_path / "release"
    result = publish(checkout, art, str(dest))
    assert result.returncode == 0, result.stderr
    names = {p.name for p in dest.iterdir()}
    assert names >= RELEASE and "hello-sdcard.img" in names and "hello-sdcard.img.bmap" in names
    subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=dest, check=True,
                   capture_output=True)  # fmt: skip
    listed = {line.split("  ", 1)[1] for line in (dest / "SHA256SUMS").read_text().splitlines()}
    assert listed == names - {"SHA256SUMS"}

    sbom_path = dest / "sbom.spdx.json"
    assert_valid_spdx(sbom_path)
    cdx = (dest / "sbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(cdx) is None
    assert {c["name"] for c in json.loads(cdx)["components"]} >= {"hello", "hello-sdcard.img"}
    sbom = json.loads(sbom_path.read_text())
    assert sbom["spdxVersion"] == "SPDX-2.3"
    packages = {p["name"]: p for p in sbom["packages"]}
    hello = packages["hello"]
    assert hello["versionInfo"] == "1.0" and hello["licenseDeclared"] == "MIT"
    assert hello["downloadLocation"].endswith("/hello-1.0.tar.gz")
    assert hello["checksums"][0]["checksumValue"].startswith("d18de153")
    relations = {
        (r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"])
        for r in sbom["relationships"]
    }
    assert ("SPDXRef-File-hello-sdcard.img", "GENERATED_FROM", "SPDXRef-Package-hello-sdcard") in (
        relations
    )
    assert ("SPDXRef-Package-hello-rootfs", "DEPENDS_ON", "SPDXRef-Package-hello") in relations
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["jailbake"] and {r["name"] for r in manifest["recipes"]} == set(packages)

    again = publish(checkout, art, str(dest))
    assert again.returncode == 0 and "(0 sent," in again.stderr


def test_an_artifact_changed_after_the_build_is_not_published(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    checkout, _ = built
    art = artifacts_copy(built, tmp_path)
    (art / "hello-rootfs.cpio.gz").write_bytes(b"not what was built")
    result = publish(checkout, art, str(tmp_path / "release"))
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "hello-rootfs.cpio.gz" in line and "changed after the build" in line
    assert not (tmp_path / "release").exists()


def test_upload_to_webdav_puts_checksums_last_and_skips_what_is_there(
    built: tuple[Path, Path], tmp_path: Path, webdav: WebDAV
) -> None:
    checkout, _ = built
    art = artifacts_copy(built, tmp_path)
    url = f"{webdav.url}/releases/hello/1.0"
    result = publish(checkout, art, url)
    assert result.returncode == 0, result.stderr
    served = webdav.docroot / "releases/hello/1.0"
    subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=served, check=True,
                   capture_output=True)  # fmt: skip
    puts = [path for method, path, status in webdav.requests() if method == "PUT"]
    assert puts[-1] == "/releases/hello/1.0/SHA256SUMS"
    assert len(puts) == len(list(served.iterdir()))

    first = len(webdav.requests())
    again = publish(checkout, art, url)
    assert again.returncode == 0, again.stderr
    puts = [p for m, p, _ in webdav.requests()[first:] if m == "PUT"]
    assert puts == ["/releases/hello/1.0/SHA256SUMS"], "only the checksums are sent again"

    # Signed, the signatures go before SHA256SUMS too, so that its reader finds them.
    key = tmp_path / "signer"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    first = len(webdav.requests())
    signed = publish(checkout, art, url, "--sign", str(key))
    assert signed.returncode == 0, signed.stderr
    puts = [p.rsplit("/", 1)[1] for m, p, _ in webdav.requests()[first:] if m == "PUT"]
    assert puts[-1] == "SHA256SUMS" and {
        "SHA256SUMS.sig", "provenance.intoto.json.sig", "sbom.spdx.json.sig", "sbom.cdx.json.sig"
    } == set(puts[:-1]), puts  # fmt: skip


def test_an_unreachable_server_is_one_line(built: tuple[Path, Path], tmp_path: Path) -> None:
    checkout, _ = built
    art = artifacts_copy(built, tmp_path)
    result = publish(checkout, art, "http://127.0.0.1:9/releases")
    assert result.returncode == 2
    assert "127.0.0.1:9" in result.stderr.strip().splitlines()[-1]


def test_sbom_declares_license_refs_and_omits_local_locations(
    project: Project, tmp_path: Path
) -> None:
    """Recipes with a LicenseRef- license and a source in a local repository still give
    an SBOM the SPDX tools accept."""
    commit = git_repo(tmp_path / "upstream")
    project.recipe(
        "firmware",
        license="LicenseRef-Vendor-Blob",
        sources=[{"git": f"file://{tmp_path / 'upstream'}", "commit": commit}],
        script='mkdir -p "$OUT"; cp README "$OUT/fw.bin"',
        outputs=[{"path": "fw.bin", "publish": True}],
    )
    project.build(artifacts=tmp_path / "art")
    result = project.run("publish", "--artifacts-dir", str(tmp_path / "art"), "--to", "rel")
    assert result.rc == 0, result.stderr
    sbom_path = project.root / "rel" / "sbom.spdx.json"
    assert_valid_spdx(sbom_path)
    sbom = json.loads(sbom_path.read_text())
    assert [r["licenseId"] for r in sbom["hasExtractedLicensingInfos"]] == [
        "LicenseRef-Vendor-Blob"
    ]
    assert sbom["packages"][0]["downloadLocation"] == "NOASSERTION"


def test_a_changed_release_withdraws_its_checksums_first(
    built: tuple[Path, Path], tmp_path: Path, webdav: WebDAV
) -> None:
    """Publishing other bytes to the same place deletes SHA256SUMS before the first
    file changes, so an interrupted upload never leaves checksums vouching for it."""
    checkout, _ = built
    art = artifacts_copy(built, tmp_path)
    url = f"{webdav.url}/releases/hello/latest"
    assert publish(checkout, art, url).returncode == 0
    jailbake(
        "build", "examples/hello/hello.yml", "--executor", "host",
        "--cache-dir", str(tmp_path / "cache"), "--artifacts-dir", str(art),
        cwd=checkout, env={"HELLO_GREETING": "another greeting"}, check=True,
    )  # fmt: skip
    first = len(webdav.requests())
    assert publish(checkout, art, url).returncode == 0
    changes = [(m, p) for m, p, _ in webdav.requests()[first:] if m in ("PUT", "DELETE")]
    assert changes[0] == ("DELETE", "/releases/hello/latest/SHA256SUMS")
    assert changes[-1] == ("PUT", "/releases/hello/latest/SHA256SUMS")
    served = webdav.docroot / "releases/hello/latest"
    subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=served, check=True,
                   capture_output=True)  # fmt: skip


def test_sbom_ids_are_unique_when_names_collide(tmp_path: Path) -> None:
    from jailbake.release.spdx import sbom

    same = "https://example.org/{}/archive/v1.0.tar.gz"
    manifest = {
        "recipes": [
            {
                "name": "a_b", "version": "1", "license": "MIT", "key": "k", "output_digest": "d",
                "depends": [],
                "sources": [{"url": same.format(x), "sha256": "0" * 64} for x in ("x", "y")],
            },
            {
                "name": "a-b", "version": "1", "license": "MIT", "key": "k", "output_digest": "d",
                "depends": ["a_b"], "sources": [],
            },
        ],
        "artifacts": [],
    }  # fmt: skip
    doc = sbom(manifest, tmp_path)
    ids = [p["SPDXID"] for p in doc["packages"]]
    assert len(ids) == len(set(ids)) == 4
    depends = [r for r in doc["relationships"] if r["relationshipType"] == "DEPENDS_ON"]
    assert depends == [
        {"spdxElementId": ids[-1], "relationshipType": "DEPENDS_ON", "relatedSpdxElement": ids[0]}
    ]
