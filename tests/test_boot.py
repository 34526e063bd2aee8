"""busybox cross-compiled in a container, offline from a mirror, and booted under QEMU.

The mirror holds the real busybox-1.35.0.tar.bz2 (Debian's orig tarball is the
same bytes); scripts/test-assets collects it and Debian's arm64 kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (
    SRC,
    artifact_names,
    copy_checkout,
    jailbake,
    render_in_chromium,
    screenshot_path,
)
from jailbake.image.qemu import Machine, boot

pytestmark = [pytest.mark.usefixtures("builder_images"), pytest.mark.slow]

ASSETS = Path(os.environ.get("JAILBAKE_TEST_ASSETS", "/var/cache/jailbake-test"))
LAYER = "layers/busybox-initramfs.yml"
ARTIFACTS = [
    "busybox-sdcard.img",
    "busybox-sdcard.img.bmap",
    "busybox-sdcard.img.zst",
    "manifest.json",
    "rootfs.cpio.gz",
    "sbom.spdx.json",
]


@pytest.fixture(scope="module")
def assets() -> Path:
    if (
        not (ASSETS / "mirror" / "busybox-1.35.0.tar.bz2").is_file()
        or not (ASSETS / "kernel" / "vmlinuz").is_file()
    ):
        if os.environ.get("CI"):
            pytest.fail(f"test assets missing in {ASSETS}; scripts/test-assets collects them")
        pytest.skip(f"test assets missing in {ASSETS} (run scripts/test-assets)")
    return ASSETS


def build(checkout: Path, cache: Path, art: Path, assets: Path, umask: str, tz: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(SRC), TZ=tz)
    cmd = 'umask "$1"; shift; exec "$@"'
    subprocess.run(
        [
            "bash",
            "-c",
            cmd,
            "bash",
            umask,
            sys.executable,
            "-m",
            "jailbake.cli",
            "build",
            LAYER,
            "--offline",
            "--mirror",
            str(assets / "mirror"),
            "--cache-dir",
            str(cache),
            "--artifacts-dir",
            str(art),
            "-j",
            "2",
        ],
        cwd=checkout,
        env=env,
        check=True,
    )


@pytest.fixture(scope="module")
def two_builds(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    outs = []
    for i, (umask, tz) in enumerate([("022", "UTC"), ("077", "Pacific/Auckland")]):
        tmp = tmp_path_factory.mktemp(f"build{i}")
        checkout = copy_checkout(tmp / "src" / f"checkout-{i}")
        build(checkout, tmp / "cache", tmp / "artifacts", assets, umask, tz)
        outs.append(tmp / "artifacts")
    return outs


def test_busybox_initramfs_and_card_are_byte_identical(two_builds: list[Path]) -> None:
    first, second = two_builds
    assert artifact_names(first) == ARTIFACTS
    for name in ARTIFACTS:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_build_report_of_the_layer_renders_in_chromium(
    two_builds: list[Path], tmp_path: Path
) -> None:
    art = two_builds[0]
    manifest = json.loads((art / "manifest.json").read_text())
    recipes = sorted(r["name"] for r in manifest["recipes"])
    page = render_in_chromium(
        art / "build-report.html", screenshot_path("busybox-report.png", tmp_path)
    )
    assert page.rendered and sorted(page.bars) == recipes and page.visible_bars == len(recipes)
    assert sorted(page.rows) == recipes
    # busybox compiles for tens of seconds: the CPU chart has a point per second of it.
    assert page.charts["cpu-chart"] >= 20 and page.charts["memory-chart"] >= 10
    assert 'class="span artifact" data-name="rootfs.cpio.gz"' in page.dom


def test_initramfs_boots_to_a_shell(two_builds: list[Path], assets: Path, tmp_path: Path) -> None:
    initrd = shutil.copy(two_builds[0] / "rootfs.cpio.gz", tmp_path / "rootfs.cpio.gz")
    transcript = boot(
        Machine(kernel=assets / "kernel" / "vmlinuz", initrd=Path(initrd)),
        expect=["jailbake initramfs: ready", "machine: aarch64", "shell says 42"],
        send=[("machine: aarch64", "echo shell says $((6*7))")],
        timeout=180,
    )
    assert transcript.found, transcript.text[-3000:]
    assert "Run /init as init process" in transcript.text


def test_run_command_boots_the_layer(two_builds: list[Path], assets: Path) -> None:
    checkout = two_builds[0].parent / "src" / "checkout-0"
    result = jailbake(
        "run",
        LAYER,
        "--artifacts-dir",
        str(two_builds[0]),
        "--kernel",
        str(assets / "kernel" / "vmlinuz"),
        "--expect",
        "machine: aarch64",
        "--expect",
        "run says 42",
        "--send",
        "machine: aarch64=>echo run says $((6*7))",
        "--timeout",
        "180",
        cwd=checkout,
    )
    assert result.rc == 0, result.stdout[-3000:] + result.stderr
    assert "jailbake initramfs: ready" in result.stdout
    assert "all expected output seen" in result.stderr


def test_card_holds_the_initramfs_and_busybox(two_builds: list[Path], tmp_path: Path) -> None:
    img = two_builds[0] / "busybox-sdcard.img"
    boot_part = tmp_path / "boot.img"
    with img.open("rb") as f, boot_part.open("wb") as out:
        f.seek(1 << 20)
        out.write(f.read(64 << 20))
    listing = subprocess.run(
        ["mdir", "-b", "-i", str(boot_part), "::/"], check=True, capture_output=True, text=True
    ).stdout.split()
    assert listing == ["::/rootfs.cpio.gz"]
    extracted = subprocess.run(
        ["mtype", "-i", str(boot_part), "::/rootfs.cpio.gz"], check=True, capture_output=True
    ).stdout
    assert extracted == (two_builds[0] / "rootfs.cpio.gz").read_bytes()


def test_boot_returns_when_qemu_exits(tmp_path: Path) -> None:
    if not shutil.which("qemu-system-aarch64"):
        pytest.skip("qemu-system-aarch64 is not installed")
    missing = tmp_path / "no-such-kernel"
    transcript = boot(Machine(kernel=missing), expect=["never printed"], timeout=300)
    assert not transcript.found
    assert "could not load kernel" in transcript.text
    # QEMU stops at once without a kernel; boot() must notice instead of waiting it out.
    assert transcript.seconds < 300
