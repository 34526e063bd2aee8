"""The Debian arm64 root file system: mmdebstrap in a container as uid 0, offline,
from the pinned .debs only, identical when built twice.

scripts/test-assets copies the pinned .debs from this machine's Debian mirror into
an offline mirror; scripts/setup-binfmt lets arm64 maintainer scripts run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from conftest import SRC, assert_valid_spdx, copy_checkout

pytestmark = [pytest.mark.usefixtures("builder_images"), pytest.mark.slow]

ASSETS = Path(os.environ.get("JAILBAKE_TEST_ASSETS", "/var/cache/jailbake-test"))
LAYER = "layers/qemu-arm64-jailhouse.yml"


@pytest.fixture(scope="module")
def ready() -> None:
    problems = []
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").is_file():
        problems.append("no qemu-aarch64 binfmt handler (run scripts/setup-binfmt)")
    if not list((ASSETS / "mirror").glob("*_arm64.deb")):
        problems.append(f"no pinned .debs in {ASSETS}/mirror (run scripts/test-assets)")
    if problems:
        if os.environ.get("CI"):
            pytest.fail("; ".join(problems))
        pytest.skip("; ".join(problems))


def start(checkout: Path, cache: Path, art: Path, umask: str, tz: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(SRC), TZ=tz)
    argv = [
        *("bash", "-c", 'umask "$1"; shift; exec "$@"', "bash", umask),
        *(sys.executable, "-m", "jailbake.cli", "build", LAYER, "--target", "debian-rootfs"),
        *("--offline", "--mirror", str(ASSETS / "mirror")),
        *("--cache-dir", str(cache), "--artifacts-dir", str(art), "--json", "--provenance"),
    ]
    return subprocess.Popen(
        argv, cwd=checkout, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def output_tree(art: Path, cache: Path) -> Path:
    manifest = json.loads((art / "manifest.json").read_text())
    entry = next(r for r in manifest["recipes"] if r["name"] == "debian-rootfs")
    return cache / "trees" / str(entry["output_digest"])


@pytest.mark.usefixtures("ready")
def test_debian_rootfs_builds_offline_and_identically_twice(tmp_path: Path) -> None:
    runs = []
    for i, (umask, tz) in enumerate((("022", "UTC"), ("077", "Pacific/Auckland"))):
        checkout = copy_checkout(tmp_path / f"jailbake{i}")
        cache, art = tmp_path / f"cache{i}", tmp_path / f"art{i}"
        runs.append((start(checkout, cache, art, umask, tz), cache, art))
    trees = []
    for proc, cache, art in runs:
        out, err = proc.communicate(timeout=1200)
        assert proc.returncode == 0, err[-3000:]
        assert json.loads(out.splitlines()[-1])["built"] == ["debian-rootfs"]
        trees.append(output_tree(art, cache))
    first, second = (t / "rootfs.tar" for t in trees)
    assert first.read_bytes() == second.read_bytes(), "two builds differ"

    with tarfile.open(first) as tar:
        members = {m.name: m for m in tar.getmembers()}
        hostname = tar.extractfile("./etc/hostname")
        assert hostname is not None and hostname.read() == b"debian\n"
    for path in ("./usr/bin/python3", "./usr/sbin/modprobe", "./usr/lib/systemd/systemd"):
        assert path in members, path
    assert members["./dev/null"].ischr() and members["./usr/bin/su"].mode & 0o4000
    assert members["./etc/shadow"].gid == 42 and members["./etc/shadow"].mode == 0o640
    # Maintainer scripts copy /dev/null to make empty files; in a step that could not
    # create device nodes it was a plain file collecting what others wrote to it.
    assert members["./etc/apparmor.d/local/sbin.dhclient"].size == 0
    # Package files keep their own times; nothing is newer than SOURCE_DATE_EPOCH.
    assert max(m.mtime for m in members.values()) == 1580515200

    # The SBOMs list every installed package, each with the .deb it came from.
    status = tar_text(first, "./var/lib/dpkg/status")
    installed = {
        p.split("\n", 1)[0].removeprefix("Package: ")
        for p in status.split("\n\n")
        if "Status: install ok installed" in p
    }
    art = runs[0][2]
    manifest = json.loads((art / "manifest.json").read_text())
    (rootfs,) = [r for r in manifest["recipes"] if r["name"] == "debian-rootfs"]
    assert {p["name"] for p in rootfs["packages"]} == installed and len(installed) > 100
    sbom = json.loads((art / "sbom.spdx.json").read_text())
    debs = [p for p in sbom["packages"] if p["SPDXID"].startswith("SPDXRef-Deb-")]
    assert len(debs) == len(installed)
    assert all(p["downloadLocation"].startswith("https://deb.debian.org/debian/pool/")
               and p["checksums"][0]["algorithm"] == "SHA256" for p in debs)  # fmt: skip
    licensed = [p for p in debs if p["licenseDeclared"] != "NOASSERTION"]
    assert len(licensed) > len(debs) // 2, "most copyright files are machine-readable"
    assert_valid_spdx(art / "sbom.spdx.json")
    cdx = (art / "sbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(cdx) is None


def tar_text(path: Path, name: str) -> str:
    with tarfile.open(path) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read().decode()
