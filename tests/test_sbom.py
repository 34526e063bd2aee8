"""Complete SBOMs: the Debian packages inside each root file system (from its dpkg
database and copyright files), package URLs, configuration digests, and which output
holds which; as SPDX 2.3 (checked by the SPDX tools) and CycloneDX 1.6 (checked by
cyclonedx-python-lib's validator)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from conftest import Project, assert_valid_spdx
from jailbake.release import components, inventory

DEP5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"

STATUS = """\
Package: libfoo
Status: install ok installed
Architecture: arm64
Source: foo (2.0-1)
Version: 1:2.0-1

Package: tool
Status: install ok installed
Architecture: arm64
Version: 1.0-1
Description: a tool
 whose description has two lines

Package: gone
Status: deinstall ok config-files
Architecture: arm64
Version: 1.0

Package: libfoo-dev
Status: install ok installed
Architecture: arm64
Source: foo
Version: 1:2.0-1

Package: ../escape
Status: install ok installed
Architecture: arm64
Version: 1.0

Package: dual
Status: install ok installed
Architecture: all
Version: 3
"""

BASE_SCRIPT = r"""
root="$WORKDIR/root"
mkdir -p "$root/var/lib/dpkg" "$root/usr/share/doc/libfoo" "$root/usr/share/doc/tool" \
         "$root/usr/share/doc/dual"
cp "$SRC/status" "$root/var/lib/dpkg/status"
mkdir -p "$root/etc"
printf 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n' \
  > "$root/etc/os-release"
doc="$root/usr/share/doc"
printf '%s\nFiles: *\nCopyright: someone\nLicense: GPL-2+\n' "$DEP5" > "$doc/libfoo/copyright"
printf 'This is tool, by someone. GPL.\n' > "$root/usr/share/doc/tool/copyright"
printf '%s\nFiles: *\nLicense: BSD-3-clause or custom\n' "$DEP5" > "$doc/dual/copyright"
ln -s libfoo "$root/usr/share/doc/libfoo-dev"
mkdir -p "$OUT"
tar -C "$root" --sort=name --numeric-owner --mtime=@0 -cf "$OUT/rootfs.tar" .
"""

APP_SCRIPT = r"""
root="$WORKDIR/root"
mkdir -p "$root"
tar -C "$root" -xf "$DEPS/base-rootfs/rootfs.tar"
printf '\nPackage: app\nStatus: install ok installed\nArchitecture: arm64\nVersion: 0.1\n' \
  >> "$root/var/lib/dpkg/status"
mkdir -p "$root/usr/share/doc/app"
printf '%s\nFiles: *\nLicense: Expat\n' "$DEP5" > "$root/usr/share/doc/app/copyright"
mkdir -p "$OUT"
tar -C "$root" --sort=name --numeric-owner --mtime=@0 -cf "$OUT/rootfs.tar" .
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path]:
    tmp = tmp_path_factory.mktemp("sbom")
    project = Project(tmp / "p", tmp / "cache")
    project.file("recipes/files/status", STATUS)
    project.recipe(
        "base-rootfs",
        sources=[{"file": "files/status"}],
        environment={"DEP5": DEP5},
        script=BASE_SCRIPT,
        outputs=["rootfs.tar"],
        license="LicenseRef-Debian-packages",
    )
    project.recipe(
        "app-rootfs",
        depends=["base-rootfs", "kernel"],
        environment={"DEP5": DEP5},
        script=APP_SCRIPT,
        outputs=[{"path": "rootfs.tar", "publish": "app-rootfs.tar"}],
    )
    project.recipe(
        "kernel",
        version="5.4.16",
        license="GPL-2.0-only",
        script='mkdir -p "$OUT/boot"; echo CONFIG_JAILHOUSE=y > "$OUT/boot/config"',
        outputs=["boot"],
        config_file="boot/config",
    )
    project.layer("layer.yml", {
        "header": {"version": 14}, "repos": {"this": {"layers": {"recipes": None}}},
        "env": {"SOURCE_DATE_EPOCH": "1700000000"}, "target": ["app-rootfs"],
    })  # fmt: skip
    art = tmp / "art"
    project.build("--provenance", artifacts=art)  # which writes the CycloneDX SBOM too
    return project, art


def test_the_inventory_of_a_root_file_system(built: tuple[Project, Path]) -> None:
    _, art = built
    manifest = json.loads((art / "manifest.json").read_text())
    recipes = {r["name"]: r for r in manifest["recipes"]}
    base = {p["name"]: p for p in recipes["base-rootfs"]["packages"]}
    # Installed packages only, names checked; licences from machine-readable files,
    # through a doc directory that links to another package's.
    assert sorted(base) == ["dual", "libfoo", "libfoo-dev", "tool"]
    assert base["libfoo"] == {"name": "libfoo", "version": "1:2.0-1", "architecture": "arm64",
                              "source": "foo", "source_version": "2.0-1",
                              "license": "GPL-2.0-or-later"}  # fmt: skip
    assert recipes["base-rootfs"]["os"] == {"id": "debian", "version_id": "12"}
    assert base["libfoo-dev"]["license"] == "GPL-2.0-or-later"
    assert base["tool"]["license"] == "" and base["tool"]["source"] == "tool"
    assert base["dual"]["license"] == "BSD-3-Clause OR LicenseRef-Debian-custom"
    assert recipes["app-rootfs"]["contains"] == ["base-rootfs"]  # kernel: only a dependency
    assert len(recipes["app-rootfs"]["packages"]) == 5
    assert recipes["kernel"]["config"]["path"] == "boot/config"
    # Each package once, under the recipe that brings it in.
    debs = components.debs(manifest)
    assert [d.package.name for d in debs["app-rootfs"]] == ["app"]
    assert len(debs["base-rootfs"]) == 4 and components.package_count(manifest) == 5


def test_spdx_lists_packages_and_what_holds_them(built: tuple[Project, Path]) -> None:
    _, art = built
    path = art / "sbom.spdx.json"
    assert_valid_spdx(path)
    sbom = json.loads(path.read_text())
    by_id = {p["SPDXID"]: p for p in sbom["packages"]}
    relations = {(r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"])
                 for r in sbom["relationships"]}  # fmt: skip
    assert ("SPDXRef-Package-app-rootfs", "CONTAINS", "SPDXRef-Package-base-rootfs") in relations
    assert ("SPDXRef-Package-app-rootfs", "DEPENDS_ON", "SPDXRef-Package-kernel") in relations
    libfoo = by_id["SPDXRef-Deb-libfoo-arm64"]
    assert ("SPDXRef-Package-base-rootfs", "CONTAINS", libfoo["SPDXID"]) in relations
    assert libfoo["versionInfo"] == "1:2.0-1" and libfoo["licenseDeclared"] == "GPL-2.0-or-later"
    assert libfoo["externalRefs"] == [{
        "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
        "referenceLocator": "pkg:deb/debian/libfoo@1:2.0-1?arch=arm64&upstream=foo",
    }]  # fmt: skip
    assert by_id["SPDXRef-Deb-tool-arm64"]["licenseDeclared"] == "NOASSERTION"
    app = by_id["SPDXRef-Deb-app-arm64"]
    assert ("SPDXRef-Package-app-rootfs", "CONTAINS", app["SPDXID"]) in relations
    assert app["licenseDeclared"] == "MIT"
    refs = {r["licenseId"] for r in sbom["hasExtractedLicensingInfos"]}
    assert "LicenseRef-Debian-custom" in refs
    kernel = by_id["SPDXRef-Package-kernel"]
    (note,) = [a for a in kernel["annotations"] if a["annotationType"] == "OTHER"]
    assert note["comment"].startswith("configuration boot/config: sha256 ")


def _cdx(art: Path) -> dict[str, Any]:
    text = (art / "sbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    data: dict[str, Any] = json.loads(text)
    return data


def test_cyclonedx_nests_packages_in_their_root_file_system(built: tuple[Project, Path]) -> None:
    _, art = built
    bom = _cdx(art)
    assert bom["specVersion"] == "1.6" and bom["metadata"]["component"]["name"] == "app-rootfs"
    top = {c["bom-ref"]: c for c in bom["components"]}
    app = top["recipe:app-rootfs"]
    assert app["type"] == "operating-system"
    inner = {c["bom-ref"]: c for c in app["components"]}
    base = inner["recipe:base-rootfs"]  # held: nested in its holder
    assert {c["name"] for c in base["components"]} == {"dual", "libfoo", "libfoo-dev", "tool"}
    libfoo = next(c for c in base["components"] if c["name"] == "libfoo")
    assert libfoo["purl"] == "pkg:deb/debian/libfoo@1:2.0-1?arch=arm64&upstream=foo"
    assert libfoo["licenses"] == [{"expression": "GPL-2.0-or-later"}]
    assert "recipe:kernel" in top and "recipe:kernel" not in inner
    props = {p["name"]: p["value"] for p in top["recipe:kernel"]["properties"]}
    assert props["jailbake:config:boot/config"].startswith("sha256:")
    depends = {d["ref"]: d.get("dependsOn", []) for d in bom["dependencies"]}
    assert set(depends["recipe:app-rootfs"]) == {"recipe:base-rootfs", "recipe:kernel"}
    assert top["file:app-rootfs.tar"]["hashes"][0]["alg"] == "SHA-256"


def test_the_sboms_are_the_same_bytes_for_the_same_build(
    built: tuple[Project, Path], tmp_path: Path
) -> None:
    project, art = built
    again = tmp_path / "again"
    project.build("--provenance", artifacts=again)
    for name in ("sbom.spdx.json", "sbom.cdx.json", "manifest.json"):
        assert (again / name).read_bytes() == (art / name).read_bytes(), name


@pytest.mark.parametrize(
    ("config_file", "message"),
    [
        ("nowhere/config", "config_file: expected a file among the outputs (boot)"),
        ("boot/missing", "config_file: 'boot/missing' is not a file the step left"),
    ],
)
def test_a_config_file_that_is_not_an_output_is_one_line(
    tmp_path: Path, config_file: str, message: str
) -> None:
    project = Project(tmp_path / "p", tmp_path / "cache")
    project.recipe("kernel", script='mkdir -p "$OUT/boot"; echo x > "$OUT/boot/config"',
                   outputs=["boot"], config_file=config_file)  # fmt: skip
    art = tmp_path / "art"
    result = project.build("--target", "kernel", artifacts=art, check=False)
    assert result.rc == 2 and message in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("jailbake: error")]
    assert len(errors) == 1 and message in errors[0]
    assert not (art / "manifest.json").exists()
    assert not list((tmp_path / "cache").glob("trees/*")), "nothing of the step is kept"


def test_package_urls_of_recipes() -> None:
    def recipe(**source: str) -> dict[str, Any]:
        return {"name": "linux", "version": "5.4.16", "sources": [source]}

    archive = (
        "https://github.com/siemens/linux/archive/e569bd2d6d2d7b958973bb8c6e9db9cfc05c790b.tar.gz"
    )
    assert components.purl_of(recipe(url=archive, sha256="ab" * 32)) == (
        "pkg:github/siemens/linux@e569bd2d6d2d7b958973bb8c6e9db9cfc05c790b"
    )
    assert components.purl_of(recipe(git="https://github.com/siemens/jailhouse.git",
                                     commit="92db71f257fabd3c08fa4b99498fa61a41ea831d")) == (
        "pkg:github/siemens/jailhouse@92db71f257fabd3c08fa4b99498fa61a41ea831d"
    )  # fmt: skip
    generic = components.purl_of(recipe(url="https://busybox.net/downloads/busybox-1.35.0.tar.bz2",
                                        sha256="fa" * 32))  # fmt: skip
    assert generic.startswith("pkg:generic/linux@5.4.16?checksum=sha256:fafa")
    assert "download_url=https://busybox.net/downloads/busybox-1.35.0.tar.bz2" in generic
    assert components.purl_of({"name": "card", "version": "1", "sources": []}) == ""


def test_pinned_debs_give_download_location_and_checksum() -> None:
    url = "https://deb.debian.org/debian/pool/main/b/bash/bash_5.2.15-2+b13_arm64.deb"
    package = {"name": "bash", "version": "5.2.15-2+b13", "architecture": "arm64",
               "source": "bash", "license": "GPL-3.0-or-later"}  # fmt: skip
    manifest = {"recipes": [{"name": "rootfs", "sources": [{"url": url, "sha256": "cd" * 32}],
                             "packages": [package]}]}  # fmt: skip
    (deb,) = components.debs(manifest)["rootfs"]
    assert (deb.url, deb.sha256) == (url, "cd" * 32)


def test_licence_synopses_as_spdx_expressions() -> None:
    assert inventory.spdx_expression("GPL-2+ or Artistic") == (
        "GPL-2.0-or-later OR Artistic-1.0-Perl"
    )
    assert inventory.spdx_expression("LGPL-2.1+ and BSD-3-clause") == (
        "LGPL-2.1-or-later AND BSD-3-Clause"
    )
    assert inventory.spdx_expression("GPL-2 with OpenSSL exception") == ""
    assert inventory.spdx_expression("or GPL-2") == ""
    assert inventory.license_of("Files: *\nLicense: GPL-2\n") == ""  # no Format: line


def test_a_root_file_system_s_links_are_not_followed_to_this_machine(tmp_path: Path) -> None:
    """A tree whose /var, /usr or /etc is a link names the reader's own files: none of
    them is read."""
    root = tmp_path / "root"
    root.mkdir()
    for name in ("var", "usr", "etc"):
        (root / name).symlink_to(f"/{name}")
    assert inventory.of_dir(root) is None
    (root / "var").unlink()
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(STATUS + STATUS)  # each package twice
    found = inventory.of_dir(root)
    assert found is not None and found.os_id == ""  # /etc/os-release was not read
    assert [p.name for p in found.packages] == ["dual", "libfoo", "libfoo-dev", "tool"]
    assert all(p.license == "" for p in found.packages)  # /usr/share/doc was not read


def test_grouped_licences_are_not_guessed() -> None:
    assert inventory.spdx_expression("(GPL-2+ or MIT) and BSD-3-clause") == ""
    assert inventory.spdx_expression("*") == ""
