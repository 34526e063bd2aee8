"""A Raspberry Pi 4 card booted under QEMU 10's raspi4b by `jailbake run`.

QEMU comes from recipes/qemu-system.yml (pinned Debian trixie packages, built offline
from the test mirror and run in a sandbox); the kernel, device tree, initramfs and
command line are read from the card's FAT partition as the GPU firmware reads them.
The cards here hold Debian's arm64 kernel, its bcm2711-rpi-4-b.dtb and Debian's TF-A
bl31.bin for the rpi4 (scripts/test-assets collects them), and the busybox initramfs:
one boots as jailhouse-images' config.txt asks (TF-A as the armstub, PSCI for Linux),
one with the firmware's own stub (CPUs on a spin table).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import JAILHOUSE_IMAGES_CONFIG_TXT, SRC, copy_checkout

pytestmark = [pytest.mark.usefixtures("builder_images"), pytest.mark.slow]

ASSETS = Path(os.environ.get("JAILBAKE_TEST_ASSETS", "/var/cache/jailbake-test"))

LAYER = """\
header:
  version: 14
repos:
  jailbake:
    layers:
      recipes:
      rpi4-test:
target:
  - rpi4-test-card
  - rpi4-test-card-nostub
env:
  SOURCE_DATE_EPOCH: "1580515200"
  JAILBAKE_QEMU_SYSTEM: qemu-system
  JAILBAKE_QEMU_FIRMWARE: raspberrypi
  JAILBAKE_QEMU_MACHINE: raspi4b
  JAILBAKE_QEMU_DRIVE: rpi4-test-card.img
artifacts:
  rpi4-test-card: rpi4-test-card.img
  rpi4-test-card-nostub: rpi4-test-card-nostub.img
"""

NOSTUB_LAYER = """\
header:
  version: 14
  includes:
    - rpi4-test.yml
env:
  JAILBAKE_QEMU_DRIVE: rpi4-test-card-nostub.img
"""

BOOT = """\
name: rpi4-test-boot{suffix}
version: "1.0"
summary: A Raspberry Pi 4 boot partition with Debian's kernel and the busybox initramfs
license: GPL-2.0-only
depends: [initramfs]
builder: host
sources:
  - file: files/vmlinuz
  - file: files/bcm2711-rpi-4-b.dtb
  - file: files/bl31.bin
  - file: files/config{suffix}.txt
  - file: files/cmdline.txt
script: |
  mkdir -p "$OUT/boot"
  cp vmlinuz "$OUT/boot/kernel8.img"
  cp config{suffix}.txt "$OUT/boot/config.txt"
  cp bcm2711-rpi-4-b.dtb bl31.bin cmdline.txt "$OUT/boot/"
  cp "$DEPS/initramfs/rootfs.cpio.gz" "$OUT/boot/"
outputs:
  - boot
"""

CARD = """\
name: rpi4-test-card{suffix}
version: "1.0"
summary: The card
license: GPL-2.0-only
image:
  name: rpi4-test-card{suffix}.img
  disk_id: "6a707434"
  partitions:
    - label: boot
      fs: fat32
      size: 64M
      volume_id: "6a707431"
      contents:
        - recipe: rpi4-test-boot{suffix}
          path: boot
    - label: root
      fs: ext4
      size: 16M
      uuid: 6a61696c-6261-4b65-8000-727069340002
      contents:
        - recipe: busybox
          path: rootfs
"""

# jailhouse-images' config.txt, with the busybox initramfs.
CONFIG = JAILHOUSE_IMAGES_CONFIG_TXT + "initramfs rootfs.cpio.gz followkernel\n"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    needed = [
        ASSETS / "kernel" / "vmlinuz",
        ASSETS / "kernel" / "bcm2711-rpi-4-b.dtb",
        ASSETS / "kernel" / "bl31-rpi4.bin",
        ASSETS / "mirror" / "busybox-1.35.0.tar.bz2",
    ]
    missing = [str(p) for p in needed if not p.is_file()]
    if not list((ASSETS / "mirror").glob("qemu-system-arm_*_amd64.deb")):
        missing.append(f"{ASSETS}/mirror/qemu-system-arm_*.deb")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"test assets missing: {missing}; scripts/test-assets collects them")
        pytest.skip(f"test assets missing: {missing} (run scripts/test-assets)")
    root = copy_checkout(tmp_path_factory.mktemp("rpi4") / "jailbake")
    layer = root / "rpi4-test"
    (layer / "files").mkdir(parents=True)
    for name in ("vmlinuz", "bcm2711-rpi-4-b.dtb"):
        shutil.copy(ASSETS / "kernel" / name, layer / "files" / name)
    shutil.copy(ASSETS / "kernel" / "bl31-rpi4.bin", layer / "files" / "bl31.bin")
    (layer / "files" / "config.txt").write_text(CONFIG)
    (layer / "files" / "config-nostub.txt").write_text(CONFIG.replace("armstub=", "#armstub="))
    # serial1 is the PL011 on a Pi 4 (serial0, the mini UART, is jailhouse-images'
    # console): under QEMU 10.0's raspi4b, Linux's 8250 driver stalls opening the
    # mini UART in about half the boots, and typed input reaches neither UART
    # (docs/rpi4-qemu.md), so the boot is checked by what it prints.
    (layer / "files" / "cmdline.txt").write_text("console=serial1,115200 panic=-1\n")
    for suffix in ("", "-nostub"):
        (layer / f"rpi4-test-boot{suffix}.yml").write_text(BOOT.format(suffix=suffix))
        (layer / f"rpi4-test-card{suffix}.yml").write_text(CARD.format(suffix=suffix))
    (root / "rpi4-test.yml").write_text(LAYER)
    (root / "rpi4-test-nostub.yml").write_text(NOSTUB_LAYER)
    built = jailbake(root, "build", "rpi4-test.yml", *common(root))
    assert built.returncode == 0, built.stderr[-3000:]
    return root


def jailbake(root: Path, *args: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jailbake.cli", *args],
        cwd=root,
        env=dict(os.environ, PYTHONPATH=str(SRC)),
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def common(root: Path) -> list[str]:
    return [
        *("--cache-dir", str(root.parent / "cache")),
        *("--artifacts-dir", str(root / "artifacts")),
        *("--offline", "--mirror", str(ASSETS / "mirror")),
    ]


def run(root: Path, layer: str, artifacts: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["run", layer, *common(root)]
    if artifacts is not None:
        argv += ["--artifacts-dir", str(artifacts)]
    return jailbake(
        root, *argv, "--expect", "jailbake initramfs: ready", "--expect", "machine: aarch64",
        "--timeout", "300",
    )  # fmt: skip


def test_the_card_boots_through_tf_a_as_on_the_board(checkout: Path) -> None:
    card = checkout / "artifacts" / "rpi4-test-card.img"
    before = card.read_bytes()
    result = run(checkout, "rpi4-test.yml")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    console = result.stdout
    # TF-A ran at EL3 from where the firmware puts the armstub and gave Linux PSCI.
    assert "NOTICE:  BL31: v2." in console
    assert "Machine model: Raspberry Pi 4 Model B" in console
    assert "psci: PSCIv1.1 detected in firmware" in console
    assert "smp: Brought up 1 node, 4 CPUs" in console
    assert "CPU: All CPU(s) started at EL2" in console
    # The firmware names serial1 as the Pi 4 does: the PL011.
    assert "Kernel command line: console=ttyAMA0,115200 panic=-1" in console
    # Each change emulation needs is said, and the card is not changed.
    notes = result.stderr
    for said in (
        "device tree: /soc/hdmi@7ef00700 disabled",
        "device tree: /scb/pcie@7d500000 disabled",
        "mmc-pwrseq removed",
        "SD card of 128 MiB",
        "firmware: bl31.bin at 0x0, kernel8.img at 0x200000",
    ):
        assert said in notes, said
    assert card.read_bytes() == before


def test_the_card_boots_with_the_firmwares_own_stub(checkout: Path) -> None:
    result = run(checkout, "rpi4-test-nostub.yml")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    console = result.stdout
    assert "BL31" not in console and "psci: PSCI" not in console  # a spin table
    assert "smp: Brought up 1 node, 4 CPUs" in console
    assert "machine: aarch64" in console


def test_a_card_without_a_64_bit_kernel_is_one_error(checkout: Path, tmp_path: Path) -> None:
    config = checkout / "rpi4-test" / "files" / "config-nostub.txt"
    original = config.read_text()
    art = tmp_path / "artifacts"
    try:
        config.write_text(original.replace("arm_64bit=1", "arm_64bit=0"))
        built = jailbake(
            checkout, "build", "rpi4-test.yml", *common(checkout), "--artifacts-dir", str(art)
        )
        assert built.returncode == 0, built.stderr[-3000:]
        result = run(checkout, "rpi4-test-nostub.yml", art)
    finally:
        config.write_text(original)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        "jailbake: error: run: rpi4-test-card-nostub.img, partition 1: config.txt: "
        "arm_64bit=1 expected; QEMU's raspi4b runs 64-bit kernels only"
    )
