"""What the Raspberry Pi firmware reads from a card, as `jailbake run` reads it for
QEMU's raspi4b: config.txt, the MBR, the device tree changed for emulation."""

from __future__ import annotations

import os
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import JAILHOUSE_IMAGES_CONFIG_TXT
from jailbake.image import fdt, raspi

ASSETS = Path(os.environ.get("JAILBAKE_TEST_ASSETS", "/var/cache/jailbake-test"))


def test_jailhouse_images_config_txt() -> None:
    config = raspi.parse_config(JAILHOUSE_IMAGES_CONFIG_TXT, "config.txt")
    assert config.arm_64bit
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


def _image(size: int, text_offset: int = 0, image_size: int = 0) -> bytes:
    """An arm64 Image header (as Linux writes it) followed by size bytes."""
    header = bytearray(64)
    header[8:16] = text_offset.to_bytes(8, "little")
    header[16:24] = image_size.to_bytes(8, "little")
    header[56:60] = b"ARMd"
    return bytes(header) + bytes(size)


def test_the_firmware_places_kernel_device_tree_and_initramfs() -> None:
    tree = _tree()
    config = raspi.parse_config("arm_64bit=1\narmstub=bl31.bin", "config.txt")
    placed = raspi.place(
        tree, _image(100, image_size=30 << 20), 5 << 20, "console=ttyAMA0", config,
        stub_size=41072, dtb_origin="x.dtb",
    )  # fmt: skip
    assert placed.kernel == 0x200000  # no text_offset: 2 MiB
    assert placed.dtb % (2 << 20) == 0 and placed.dtb >= 0x200000 + (30 << 20)
    assert placed.initrd == placed.dtb + (8 << 20)
    chosen = tree.find("/chosen")
    assert chosen is not None
    assert chosen.properties["bootargs"] == fdt.string("console=ttyAMA0")
    assert chosen.properties["linux,initrd-start"] == fdt.cells(placed.initrd, size=2)
    assert chosen.properties["linux,initrd-end"] == fdt.cells(placed.initrd + (5 << 20), size=2)
    memory = tree.find("/memory@0")
    assert memory is not None
    # The root names no cell counts: 2 for addresses, 1 for sizes, as bcm2711.dtsi has.
    assert memory.properties["reg"] == fdt.cells(0, size=2) + fdt.cells(0x3C000000) + fdt.cells(
        0x40000000, size=2
    ) + fdt.cells(0x40000000)
    # A 5.4 kernel says where it goes: text_offset 0x80000 from 0.
    old = raspi.place(_tree(), _image(100, 0x80000), None, "", config, stub_size=4096,
                      dtb_origin="x.dtb")  # fmt: skip
    assert old.kernel == 0x80000


@pytest.mark.parametrize(
    ("config", "kernel", "stub", "expected"),
    [
        ("kernel_address=0x0", _image(10), 41072, "kernel_address: 0x0 expected page-aligned"),
        ("kernel_address=0x200001", _image(10), 4096, "kernel_address"),
        ("", _image(10, 0x80000), 0x90000, "text_offset: 0x80000"),
        ("", _image(10, image_size=2000 << 20), 4096, "more than lies below the GPU"),
    ],
)
def test_overlapping_or_oversized_images_are_refused(
    config: str, kernel: bytes, stub: int, expected: str
) -> None:
    parsed = raspi.parse_config(f"arm_64bit=1\narmstub=bl31.bin\n{config}", "config.txt")
    with pytest.raises(raspi.CardError, match=expected):
        raspi.place(_tree(), kernel, None, "", parsed, stub_size=stub, dtb_origin="x.dtb")


def test_a_device_tree_with_odd_cell_counts_is_refused() -> None:
    tree = _tree()
    tree.root.properties["#address-cells"] = fdt.cells(0xFFFFFFFF)
    config = raspi.parse_config("arm_64bit=1", "config.txt")
    with pytest.raises(raspi.CardError, match=r"x\.dtb: /#address-cells: expected 1 or 2"):
        raspi.place(tree, _image(10), None, "", config, stub_size=4096, dtb_origin="x.dtb")


def test_the_armstub_header_is_filled_in_as_the_firmware_does() -> None:
    stub = bytearray(0x400)
    stub[0xF0:0xF4] = raspi.STUB_MAGIC.to_bytes(4, "little")
    stub[0xF4:0xF8] = (7).to_bytes(4, "little")
    placed = raspi.Placement(kernel=0x200000, dtb=0x2600000, initrd=None)
    patched, done = raspi.patch_armstub(bytes(stub), placed)
    assert done and len(patched) == len(stub)
    assert patched[0xF0:0x100] == bytes.fromhex("00000000070000000000600200002000")
    assert patched[:0xF0] == stub[:0xF0] and patched[0x100:] == stub[0x100:]
    # Without the magic, the firmware leaves a stub as it is.
    assert raspi.patch_armstub(bytes(0x400), placed) == (bytes(0x400), False)


def test_only_reservations_inside_the_armstub_are_dropped() -> None:
    tree = _tree()
    tree.reserved = [(0, 0x1000), (0x7F000, 0x10000000), (0x3B400000, 0x400000)]
    notes = raspi.armstub_fixups(tree)
    assert tree.reserved == [(0x7F000, 0x10000000), (0x3B400000, 0x400000)]
    assert [n for n in notes if "memreserve" in n] == [
        "device tree: /memreserve/ 0x0+0x1000 dropped: the armstub reserves its own memory "
        "(as TF-A 2.6 and later do themselves)"
    ]


def test_settings_that_change_what_the_firmware_loads_are_refused() -> None:
    for line in ("os_prefix=klab/", "include extra.txt", "ramfsfile=initrd.img", "enable_gic=0"):
        with pytest.raises(raspi.CardError, match=line.split("=")[0].split()[0]):
            raspi.parse_config(f"arm_64bit=1\n{line}\n", "config.txt")


def test_a_node_name_that_is_not_utf8_is_kept() -> None:
    blob = fdt.dump(fdt.Tree(fdt.Node("", {}, [fdt.Node("ok")])))
    bad = blob.replace(b"ok\0", b"\xe9k\0")
    parsed = fdt.parse(bad, "x.dtb")
    assert [c.name for c in parsed.root.children] == ["\ufffdk"]


def test_nodes_nested_too_deep_are_refused() -> None:
    node = fdt.Node("leaf")
    for i in range(fdt.MAX_DEPTH + 1):
        node = fdt.Node(f"n{i}", {}, [node])
    blob = fdt.dump(fdt.Tree(fdt.Node("", {}, [node])))
    with pytest.raises(fdt.FdtError, match="deeper than"):
        fdt.parse(blob, "x.dtb")


def test_the_machine_qemu_gets_for_a_card() -> None:
    from jailbake.image.qemu import Machine

    machine = Machine(
        kernel=None, machine="raspi4b", cpu=None, smp=None, memory=None,
        sd=Path("/run/work/card.qcow2"), console=1,
        loaders=((Path("/run/work/armstub,1.bin"), 0), (Path("/run/work/k"), 0x200000)),
    )  # fmt: skip
    argv = machine.argv()
    assert "-kernel" not in argv and "-cpu" not in argv and "-m" not in argv
    assert argv[argv.index("-M") + 1] == "raspi4b"
    assert "if=sd,format=qcow2,file=/run/work/card.qcow2" in argv
    # A comma in a file name is doubled: it starts no option of the loader.
    assert "loader,file=/run/work/armstub,,1.bin,addr=0x0,force-raw=on" in argv
    assert "loader,file=/run/work/k,addr=0x200000,force-raw=on" in argv
    # Both UARTs print on the terminal; the console, attached last, reads it.
    serials = [argv[i + 1] for i, a in enumerate(argv) if a == "-serial"]
    assert serials == ["chardev:console", "chardev:console"]
    assert "stdio,mux=on,id=console" in argv
    # With the PL011 as the console, the mini UART (Jailhouse's) is wired up too.
    argv = replace(machine, console=0, serials=2).argv()
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-serial"] == serials
    assert [a for a in replace(machine, console=0).argv() if a == "-serial"] == []
    # Unattended, the port that is not the console writes to a file of its own.
    argv = replace(
        machine, console=0, serials=2, port_files=((1, Path("/run/work/serial1.log")),)
    ).argv()
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-serial"] == [
        "chardev:console", "chardev:port1"
    ]  # fmt: skip
    assert "file,id=port1,path=/run/work/serial1.log" in argv


def test_other_ports_lines_join_the_transcript_whole(tmp_path: Path) -> None:
    from jailbake.image.qemu import _PortFiles

    side = tmp_path / "serial1.log"
    files = _PortFiles([side])
    seen = bytearray(b"[ 1.0] console li")
    side.write_bytes(b"Initializing Jailhouse hyper")
    files.merge_into(seen)
    assert seen == b"[ 1.0] console li"  # nothing whole yet
    side.write_bytes(b"Initializing Jailhouse hypervisor v0.12\nTimer")
    files.merge_into(seen)
    assert seen == b"[ 1.0] console li"  # the console's line is not done
    seen += b"ne\r\n"
    files.merge_into(seen)
    assert seen == b"[ 1.0] console line\r\nInitializing Jailhouse hypervisor v0.12\n"
    # A prompt that waits for input does not hold the other port's lines for long.
    seen += b"jailhouse login: "
    side.write_bytes(b"Initializing Jailhouse hypervisor v0.12\nTimer fired\n")
    files.merge_into(seen)
    files.PATIENCE = 0.0
    files.merge_into(seen)
    assert seen.endswith(b"jailhouse login: \nTimer fired\n")
    # A prompt on the other port (a cell's shell) is not held back either.
    with side.open("ab") as f:
        f.write(b"/ # ")
    files.merge_into(seen)
    files.merge_into(seen)  # nothing more came: the prompt waits for input
    assert seen.endswith(b"Timer fired\n/ # \n")


def test_a_trees_sandbox_holds_only_what_it_is_given(tmp_path: Path) -> None:
    from jailbake.executors.host import tree_argv

    argv = tree_argv(
        tmp_path / "tree", {tmp_path / "art": "/run/artifacts"},
        writable={tmp_path / "work": "/run/work"}, as_root=True,
    )  # fmt: skip
    assert argv[1:4] == ["--ro-bind", str(tmp_path / "tree"), "/"]
    pairs = list(zip(argv, argv[1:], argv[2:], strict=False))
    assert ("--ro-bind", str(tmp_path / "art"), "/run/artifacts") in pairs
    assert ("--bind", str(tmp_path / "work"), "/run/work") in pairs
    binds = [a for a in argv if a in ("--bind", "--ro-bind")]
    assert len(binds) == 3  # the tree, the artifacts, the work directory: no host path else
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent", "--clearenv"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert "--unshare-user" in tree_argv(tmp_path, {}, as_root=False)
    with pytest.raises(ValueError, match="below /run"):
        tree_argv(tmp_path, {tmp_path: "/etc"}, as_root=True)
