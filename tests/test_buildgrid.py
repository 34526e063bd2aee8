"""--executor remote against a real Remote Execution API service: BuildGrid 0.9.1 (its
own Python 3.13, its scheduler on PostgreSQL) with tests/remote_worker.py taking its
leases and running each action in the builder image through Podman. Artifacts must be
the bytes a build in local containers gives.

scripts/test prepares BuildGrid (scripts/setup-buildgrid); without it these tests are
skipped, and fail under CI."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import buildgrid_service
from conftest import ROOT, jailbake

pytestmark = pytest.mark.usefixtures("builder_images")

ASSETS = Path(os.environ.get("JAILBAKE_TEST_ASSETS", "/var/cache/jailbake-test"))


@pytest.fixture(scope="module")
def buildgrid() -> Iterator[str]:
    reason = buildgrid_service.missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with buildgrid_service.running(workers=2) as url:
        yield url


def _artifacts(config: str, tmp: Path, name: str, *args: str) -> dict[str, str]:
    art = tmp / f"art-{name}"
    result = jailbake(
        "build", config, "--cache-dir", str(tmp / f"cache-{name}"), "--artifacts-dir", str(art),
        *args, cwd=ROOT, timeout=1800,
    )  # fmt: skip
    assert result.rc == 0, result.stderr[-3000:]
    manifest = json.loads((art / "manifest.json").read_text())
    return {a["path"]: a["sha256"] for a in manifest["artifacts"]}


def test_hello_through_buildgrid_gives_the_bytes_of_local_containers(
    buildgrid: str, tmp_path: Path
) -> None:
    config = "examples/hello/hello.yml"
    remote = _artifacts(config, tmp_path, "remote", "--executor", "remote",
                        "--remote-executor", buildgrid)  # fmt: skip
    local = _artifacts(config, tmp_path, "local", "--executor", "docker")
    assert remote == local
    assert {"hello", "hello-rootfs.cpio.gz", "hello-sdcard.img"} <= set(remote)


@pytest.mark.slow
def test_the_busybox_layer_through_buildgrid(buildgrid: str, tmp_path: Path) -> None:
    if not (ASSETS / "mirror" / "busybox-1.35.0.tar.bz2").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"test assets missing in {ASSETS}; scripts/test-assets collects them")
        pytest.skip(f"test assets missing in {ASSETS} (run scripts/test-assets)")
    offline = ("--offline", "--mirror", str(ASSETS / "mirror"))
    config = "layers/busybox-initramfs.yml"
    remote = _artifacts(config, tmp_path, "remote", "--executor", "remote",
                        "--remote-executor", buildgrid, *offline)  # fmt: skip
    local = _artifacts(config, tmp_path, "local", "--executor", "docker", *offline)
    assert remote == local
    assert "rootfs.cpio.gz" in remote
