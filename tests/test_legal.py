"""Licence files pinned in recipes, the SPDX document of every build, and legal-info."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    HTTPFiles,
    Project,
    assert_valid_spdx,
    copy_checkout,
    jailbake,
    make_tarball,
    sha256,
)
from test_fetch import git_repo

COPYING = "Permission is hereby granted, free of charge, ...\n"
TARBALL = make_tarball({"COPYING": COPYING, "main.c": "int main(void) { return 0; }\n"})


def pkg(project: Project, http: HTTPFiles, **fields: Any) -> str:
    url = http.add("pkg-1.0.tar.gz", TARBALL)
    project.file("recipes/files/fix.patch", PATCH)
    project.recipe(
        "pkg",
        license="MIT",
        sources=[{"url": url, "sha256": sha256(TARBALL)}],
        patches=["files/fix.patch"],
        script='mkdir -p "$OUT"; cp main.c "$OUT/"',
        outputs=[{"path": "main.c", "publish": True}],
        **fields,
    )
    return url


PATCH = """--- a/main.c
+++ b/main.c
@@ -1 +1 @@
-int main(void) { return 0; }
+int main(void) { return 1; }
"""


def pinned(text: str = COPYING, license: str = "MIT") -> list[dict[str, str]]:
    return [{"path": "COPYING", "sha256": sha256(text.encode()), "license": license}]


def test_licence_files_are_checked_and_described_in_the_sbom(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    pkg(project, http, license_files=pinned())
    art = tmp_path / "art"
    project.build(artifacts=art)
    manifest = json.loads((art / "manifest.json").read_text())
    (entry,) = manifest["recipes"][0]["license_files"]
    assert entry["sha256"] == sha256(COPYING.encode()) and len(entry["sha1"]) == 40
    sbom = json.loads((art / "sbom.spdx.json").read_text())
    (package,) = sbom["packages"]
    assert package["filesAnalyzed"] is True and package["licenseInfoFromFiles"] == ["MIT"]
    licence = next(f for f in sbom["files"] if f["SPDXID"] in package["hasFiles"])
    assert licence["fileName"] == "./COPYING" and licence["licenseInfoInFiles"] == ["MIT"]
    assert {"algorithm": "SHA256", "checksumValue": entry["sha256"]} in licence["checksums"]
    assert_valid_spdx(art / "sbom.spdx.json")
    # The SBOM is the same bytes when nothing changed, and is not rewritten.
    before = (art / "sbom.spdx.json").read_bytes()
    project.build(artifacts=art)
    assert (art / "sbom.spdx.json").read_bytes() == before
    # clean --all keeps the licence texts the graph pins, as it keeps its sources.
    text = project.cache / "cas" / entry["sha256"][:2] / entry["sha256"]
    assert text.read_text() == COPYING
    cleaned = project.run("clean", "layer.yml", "--all", "--cache-dir", str(project.cache))
    assert cleaned.rc == 0, cleaned.stderr
    assert text.read_text() == COPYING


def test_a_changed_licence_fails_the_build_like_a_changed_source(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    pkg(project, http, license_files=pinned("the old licence\n"))
    art = tmp_path / "art"
    result = project.build(artifacts=art, check=False)
    assert result.rc != 0
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("jailbake: error")]
    assert "recipes/pkg.yml" in line and "license_files[0].sha256" in line
    assert sha256(COPYING.encode()) in line and "licence text changed" in line
    assert not art.exists() or not any(art.iterdir())
    assert not any(p.is_file() for p in (project.cache / "ac").rglob("*"))  # no result

    # Pinned anew: the key follows the pin, so the recipe is built.
    pkg(project, http, license_files=pinned())
    assert project.build(artifacts=art).report["built"] == ["pkg"]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"path": "COPYING"}, "license_files[0].sha256: missing"),
        ({"path": "../COPYING", "sha256": "0" * 64}, "license_files[0].path: expected a relative"),
        ({"path": "COPYING", "sha256": "xyz"}, "license_files[0].sha256: expected 64"),
        ({"path": "COPYING", "sha256": "0" * 64, "text": "x"}, "[0].text: unknown key"),
    ],
)
def test_bad_licence_entries_are_one_line(
    project: Project, http: HTTPFiles, entry: dict[str, str], expected: str
) -> None:
    pkg(project, http, license_files=[entry])
    result = project.run("list", "layer.yml", "--executor", "host")
    assert result.rc != 0
    assert expected in result.stderr and "recipes/pkg.yml" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_licence_file_missing_from_the_sources(project: Project, http: HTTPFiles) -> None:
    pkg(project, http, license_files=[{"path": "LICENSE", "sha256": "0" * 64}])
    result = project.build(check=False)
    assert "license_files[0].path: LICENSE is not in the sources" in result.stderr


def test_legal_info_holds_texts_sources_and_patches(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    url = pkg(project, http, license_files=pinned())
    commit = git_repo(tmp_path / "upstream")
    project.recipe(
        "blob",
        license="LicenseRef-Vendor",
        redistribute=False,
        sources=[{"git": f"file://{tmp_path / 'upstream'}", "commit": commit}],
        license_files=[{"path": "README", "sha256": sha256(b"hello from git\n")}],
    )
    project.file("recipes/files/defconfig", "CONFIG_X=y\n")
    project.recipe(
        "tool",
        license="GPL-2.0-only",
        depends=["pkg", "blob"],
        sources=[{"git": f"file://{tmp_path / 'upstream'}", "commit": commit},
                 {"file": "files/defconfig"}],
    )  # fmt: skip
    out = tmp_path / "legal"
    # Nothing built yet: the licence texts come from the sources, prepared for it.
    result = project.run("legal-info", "layer.yml", str(out), "--cache-dir", str(project.cache))
    assert result.rc == 0, result.stderr
    assert "3 recipes" in result.stderr and "no licence file pinned" in result.stderr
    rows = {r["PACKAGE"]: r for r in csv.DictReader((out / "manifest.csv").open())}
    assert rows["pkg"]["LICENSE"] == "MIT" and rows["pkg"]["LICENSE FILES"] == "COPYING"
    assert rows["pkg"]["SOURCE SITE"] == url.rsplit("/", 1)[0]
    assert rows["pkg"]["PATCHES"] == "fix.patch"
    assert rows["blob"]["REDISTRIBUTED"] == "no"
    assert rows["blob"]["SOURCE ARCHIVE"] == "not redistributed"
    assert (out / "licenses/pkg-1/COPYING").read_text() == COPYING
    assert (out / "licenses/blob-1/README").read_text() == "hello from git\n"
    assert (out / "sources/pkg-1/pkg-1.0.tar.gz").read_bytes() == TARBALL
    assert (out / "sources/pkg-1/fix.patch").read_text() == PATCH
    assert not (out / "sources/blob-1").exists()
    archive = out / f"sources/tool-1/upstream-{commit}.tar"
    listing = subprocess.run(["tar", "tf", archive], capture_output=True, text=True, check=True)
    assert listing.stdout.split() == ["README"]
    assert (out / "sources/tool-1/defconfig").read_text() == "CONFIG_X=y\n"
    assert "tool" in (out / "README").read_text()
    check = subprocess.run(["sha256sum", "--quiet", "-c", "legal-info.sha256"], cwd=out)
    assert check.returncode == 0

    # Again: the directory is replaced whole, and what no recipe holds is gone.
    (out / "stale.txt").write_text("x")
    assert project.run("legal-info", "layer.yml", str(out), "--cache-dir",
                       str(project.cache)).rc == 0  # fmt: skip
    assert not (out / "stale.txt").exists()


def test_legal_info_refuses_a_foreign_directory_and_offline_gaps(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    pkg(project, http, license_files=pinned())
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    result = project.run("legal-info", "layer.yml", str(foreign), "--cache-dir",
                         str(project.cache))  # fmt: skip
    assert result.rc != 0 and "is not a legal-info directory" in result.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]

    out = tmp_path / "legal"
    result = project.run("legal-info", "layer.yml", str(out), "--offline", "--cache-dir",
                         str(project.cache))  # fmt: skip
    assert result.rc != 0 and "--offline forbids downloading" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".legal*"))


def test_legal_info_of_the_hello_example(tmp_path: Path) -> None:
    checkout = copy_checkout(tmp_path / "jailbake")
    out = tmp_path / "legal"
    result = jailbake("legal-info", "examples/hello/hello.yml", str(out), "--offline",
                      "--cache-dir", str(tmp_path / "cache"), cwd=checkout)  # fmt: skip
    assert result.rc == 0, result.stderr
    assert "no licence file pinned" not in result.stderr
    tarball = checkout / "examples/hello/mirror/hello-1.0.tar.gz"
    assert (out / "sources/hello-1.0/hello-1.0.tar.gz").read_bytes() == tarball.read_bytes()
    assert (out / "licenses/hello-1.0/LICENSE").read_text().startswith("MIT License")
    rows = {r["PACKAGE"]: r for r in csv.DictReader((out / "manifest.csv").open())}
    assert sorted(rows) == ["hello", "hello-boot", "hello-initramfs", "hello-motd",
                            "hello-rootfs", "hello-sdcard"]  # fmt: skip
    assert {r["LICENSE"] for r in rows.values()} == {"MIT"}
