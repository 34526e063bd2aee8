"""What the Raspberry Pi firmware reads from a card, as `jailbake run` reads it for
QEMU's raspi4b: config.txt, the MBR, the device tree changed for emulation."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from jailbake.image import fdt, raspi

ASSETS = Path(os.environ.get("JAILBAKE_TEST_ASSETS", "/var/cache/jailbake-test"))
JAILHOUSE_IMAGES_CONFIG = """dtparam=audio=on

[pi4]
dtoverlay=vc4-fkms-v3d
max_framebuffers=2

[all]
enable_uart=1
arm_64bit=1
enable_gic=1
armstub=bl31.bin
"""


def test_jailhouse_images_config_txt() -> None:
    config = raspi.parse_config(JAILHOUSE_IMAGES_CONFIG, "config.txt")
    assert config.arm_64bit and config.enable_gic
    assert config.armstub == "bl31.bin"
    assert config.kernel == "kernel8.img"  # the firmware's name for a 64-bit kernel
    assert config.device_tree == "bcm2711-rpi-4-b.dtb"
    assert config.initramfs is None
    assert set(config.ignored) == {"dtparam", "dtoverlay", "max_framebuffers", "enable_uart"}


def test_sections_for_other_models_do_not_apply() -> None:
    text = (
        "kernel=a.img\n[pi3]\nkernel=b.img\n[pi4]\narmstub=s.bin\n[cm4]\nkernel=c.img\n"
        "[all]\ninitramfs rootfs.cpio.gz followkernel\n[none]\nkernel=d.img\n"
    )
    config = raspi.parse_config(text, "config.txt")
    assert (config.kernel, config.armstub, config.initramfs) == ("a.img", "s.bin", "rootfs.cpio.gz")


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("kernel=../../etc/passwd", "kernel"),
        ("kernel=/abs.img", "kernel"),
        ("armstub=-o.bin", "armstub"),
        ("device_tree=a b.dtb", "device_tree"),
        ("initramfs ../x followkernel", "initramfs"),
        ("arm_64bit=yes", "arm_64bit"),
        ("kernel_address=0x8000000000", "kernel_address"),
        ("initramfs rootfs.cpio 0x2000000", "initramfs"),
        ("[pi4", "section filter"),
        ("just words", "name=value"),
    ],
)
def test_a_bad_setting_is_one_error_naming_it(line: str, field: str) -> None:
    with pytest.raises(raspi.CardError, match=field) as info:
        raspi.parse_config(f"arm_64bit=1\n{line}\n", "card.img, partition 1: config.txt")
    assert str(info.value).startswith("card.img, partition 1: config.txt")


def test_cmdline_is_its_first_line() -> None:
    line = "console=serial0,115200 root=/dev/mmcblk0p2 rootwait mem=768M"
    assert raspi.parse_cmdline(line + "\nignored\n", "cmdline.txt") == line
    with pytest.raises(raspi.CardError, match=r"cmdline\.txt"):
        raspi.parse_cmdline("console=ttyAMA0\x1b[2J", "cmdline.txt")


def _mbr(entries: list[tuple[int, int, int]]) -> bytes:
    sector = bytearray(512)
    for i, (kind, start, count) in enumerate(entries):
        struct.pack_into("<B3xB3xII", sector, 446 + 16 * i, 0, kind, start, count)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def test_the_boot_partition_is_the_first_fat_one(tmp_path: Path) -> None:
    card = tmp_path / "card.img"
    card.write_bytes(_mbr([(0x83, 2048, 100), (0x0C, 8192, 65536)]))
    part = raspi.boot_partition(card)
    assert (part.index, part.offset, part.size) == (2, 8192 * 512, 65536 * 512)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\0" * 512, "no MBR"),
        (_mbr([(0xEE, 1, 1000)]), "GPT"),
        (_mbr([(0x83, 2048, 100)]), "no FAT partition"),
    ],
)
def test_a_card_the_firmware_cannot_read(tmp_path: Path, content: bytes, expected: str) -> None:
    card = tmp_path / "card.img"
    card.write_bytes(content)
    with pytest.raises(raspi.CardError, match=expected):
        raspi.boot_partition(card)


def test_sd_sizes_are_powers_of_two() -> None:
    assert raspi.sd_size(1 << 30) == 1 << 30
    assert raspi.sd_size((1 << 30) + 1) == 1 << 31
    assert raspi.sd_size(1_090_519_040) == 1 << 31  # the Jailhouse card: 32M + 1G + 8M


def _tree() -> fdt.Tree:
    soc = fdt.Node(
        "soc",
        {"#address-cells": fdt.cells(1), "#size-cells": fdt.cells(1)},
        [
            fdt.Node("hdmi@7ef00700", {"status": fdt.string("okay")}),
            fdt.Node("clock@7ef00000", {"compatible": fdt.string("brcm,brcm2711-dvp")}),
            fdt.Node("serial@7e201000", {"status": fdt.string("okay")}),
            fdt.Node("mmc@7e300000", {"mmc-pwrseq": fdt.cells(7), "bus-width": fdt.cells(4)}),
        ],
    )
    return fdt.Tree(fdt.Node("", {"model": fdt.string("Raspberry Pi 4")}, [soc]), [(0, 4096)])


def test_a_device_tree_survives_being_written_and_read() -> None:
    tree = _tree()
    blob = fdt.dump(tree)
    again = fdt.parse(blob, "x.dtb")
    assert again == tree
    assert fdt.dump(again) == blob


def test_the_emulation_fixups_are_said_one_by_one() -> None:
    tree = _tree()
    notes = raspi.emulation_fixups(tree)
    assert notes == [
        "device tree: /soc/hdmi@7ef00700 disabled (QEMU does not model it)",
        "device tree: /soc/clock@7ef00000 disabled (QEMU does not model it)",
        "device tree: /soc/mmc@7e300000 mmc-pwrseq removed (no Wi-Fi chip to power up)",
    ]
    serial = tree.find("/soc/serial@7e201000")
    assert serial is not None and serial.properties["status"] == fdt.string("okay")
    assert raspi.emulation_fixups(tree) == []  # a second pass has nothing left to change


def test_the_kernels_own_raspberry_pi_4_device_tree() -> None:
    dtb = ASSETS / "kernel" / "bcm2711-rpi-4-b.dtb"
    if not dtb.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{dtb} missing; scripts/test-assets collects it")
        pytest.skip(f"{dtb} missing (run scripts/test-assets)")
    tree = fdt.parse(dtb.read_bytes(), str(dtb))
    assert fdt.parse(fdt.dump(tree), "copy") == tree
    notes = raspi.emulation_fixups(tree)
    disabled = sorted(n.split()[2] for n in notes if "disabled" in n)
    assert disabled == [
        "/soc/clock@7ef00000",
        "/soc/hdmi@7ef00700",
        "/soc/hdmi@7ef05700",
        "/soc/i2c@7ef04500",
        "/soc/i2c@7ef09500",
        "/soc/interrupt-controller@7ef00100",
    ]
    assert any("mmc-pwrseq" in n for n in notes)


@pytest.mark.parametrize(
    ("blob", "expected"),
    [
        (b"", "shorter than its header"),
        (b"\xd0\x0d\xfe\xee" + bytes(36), "magic"),
        (fdt.dump(_tree())[:-20], "outside the file|version"),
    ],
)
def test_a_broken_device_tree_is_one_error(blob: bytes, expected: str) -> None:
    with pytest.raises(fdt.FdtError, match=expected):
        fdt.parse(blob, "card.img: bcm2711-rpi-4-b.dtb")


@pytest.mark.parametrize(
    ("config", "cmdline", "expected"),
    [
        (
            "arm_64bit=1",
            "console=serial0,115200 root=/dev/mmcblk0p2",
            ("console=ttyS0,115200 root=/dev/mmcblk0p2", 1),
        ),
        ("dtoverlay=disable-bt", "console=serial0,115200", ("console=ttyAMA0,115200", 0)),
        ("arm_64bit=1", "console=tty1 console=serial1", ("console=tty1 console=ttyAMA0", 0)),
        ("arm_64bit=1", "console=ttyAMA0 rdinit=/init", ("console=ttyAMA0 rdinit=/init", 0)),
        ("arm_64bit=1", "console=ttyS1,115200", ("console=ttyS1,115200", 1)),
    ],
)
def test_the_firmware_names_the_serial_console(
    config: str, cmdline: str, expected: tuple[str, int]
) -> None:
    parsed = raspi.parse_config(config, "config.txt")
    assert raspi.firmware_cmdline(cmdline, parsed) == expected
