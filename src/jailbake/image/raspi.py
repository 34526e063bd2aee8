"""What the Raspberry Pi 4's GPU firmware reads from a card, for booting it under QEMU.

QEMU's raspi4b loads no firmware: what start4.elf would do, reading `config.txt` and
`cmdline.txt` from the card's FAT boot partition and loading the kernel, the device
tree, an initramfs and the armstub, is done here from the same files. Everything read
from the card is checked by kind before it names a file or reaches QEMU's arguments.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import JailbakeError
from . import fdt

SECTOR = 512
# Partition types the firmware reads its boot files from: FAT12, FAT16 (<32M, >=32M),
# FAT32 (CHS, LBA), FAT16 LBA.
FAT_TYPES = frozenset({0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E})

# A file the firmware loads: a plain name in the partition, or one in a folder of it.
_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,63}(/[A-Za-z0-9_][A-Za-z0-9._+-]{0,63}){0,3}")
_NUMBER = re.compile(r"(0x[0-9a-fA-F]{1,8}|[0-9]{1,9})")
# Section filters a Raspberry Pi 4 Model B passes; every other model filter fails.
_PI4 = frozenset({"all", "pi4", "board-type=0x11", "board-type=17"})
_MODELS = frozenset({"none", "pi0", "pi0w", "pi02", "pi1", "pi2", "pi3", "pi3+", "pi400",
                     "pi5", "pi500", "cm4", "cm4s", "cm5"})  # fmt: skip


class CardError(JailbakeError):
    """A card the firmware could not boot from, said as the firmware's reader sees it."""


@dataclass(frozen=True)
class Partition:
    index: int  # 1-based, as /dev/mmcblk0pN
    kind: int
    offset: int  # bytes
    size: int  # bytes


def partitions(card: Path) -> list[Partition]:
    """The primary partitions of a card's MBR (the Pi 4's firmware reads no GPT)."""
    with card.open("rb") as f:
        sector = f.read(SECTOR)
    if len(sector) < SECTOR or sector[510:512] != b"\x55\xaa":
        raise CardError(f"{card}: no MBR partition table (expected 55 aa at byte 510)")
    found = []
    for i in range(4):
        entry = sector[446 + 16 * i : 462 + 16 * i]
        kind = entry[4]
        start, count = struct.unpack_from("<II", entry, 8)
        if kind == 0xEE:
            raise CardError(f"{card}: a GPT card; the Raspberry Pi 4's firmware reads an MBR")
        if kind and count:
            found.append(Partition(i + 1, kind, start * SECTOR, count * SECTOR))
    return found


def boot_partition(card: Path) -> Partition:
    """The first FAT partition: where the firmware looks for config.txt."""
    for part in partitions(card):
        if part.kind in FAT_TYPES:
            return part
    raise CardError(f"{card}: no FAT partition for the firmware to read config.txt from")


@dataclass(frozen=True)
class BootConfig:
    """What config.txt tells the firmware of a 64-bit Raspberry Pi 4B."""

    kernel: str = "kernel8.img"
    device_tree: str = "bcm2711-rpi-4-b.dtb"
    armstub: str | None = None
    initramfs: str | None = None
    cmdline: str = "cmdline.txt"
    arm_64bit: bool = False
    kernel_address: int | None = None
    overlays: tuple[str, ...] = ()  # dtoverlay names (the firmware's, not applied here)
    ignored: tuple[str, ...] = ()  # settings that change nothing QEMU emulates


# The settings read; every other one is listed in BootConfig.ignored.
_FILES = {"kernel", "device_tree", "armstub", "cmdline"}
_FLAGS = {"arm_64bit", "enable_gic"}
# Settings that change which files the firmware loads or how, and are not emulated:
# a card using them is refused rather than booted differently.
_REFUSED = {"include", "os_prefix", "ramfsfile", "ramfsaddr", "device_tree_address",
            "kernel_old", "arm_peri_high"}  # fmt: skip


def parse_config(text: str, origin: str) -> BootConfig:
    """config.txt as the firmware of a Raspberry Pi 4 Model B reads it: conditional
    sections ([pi4], [all], [none], other models) applied, the last value of a setting
    winning. origin names the file in errors."""
    values: dict[str, str] = {}
    ignored: list[str] = []
    overlays: list[str] = []
    applies = True
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{origin}:{number}"
        if line.startswith("["):
            if not line.endswith("]"):
                raise CardError(f"{where}: expected a section filter such as [pi4], got {line!r}")
            name = line[1:-1].strip().lower()
            if name in _PI4:  # a model filter replaces the one before it
                applies = True
            elif name in _MODELS:
                applies = False
            # Filters on things QEMU has none of (HDMI, EDID, GPIO, serial numbers)
            # leave the state as it is, as a board without them would.
            continue
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not eq and line.split()[0] in ("initramfs", "include"):
            key, _, value = line.partition(" ")
            value = value.strip()
        elif not eq:
            raise CardError(f"{where}: expected name=value, got {line!r}")
        if not applies:
            continue
        if key in _REFUSED:
            raise CardError(f"{where}: {key}: not emulated; boot a card without it")
        if key == "initramfs":
            name, _, where_to = value.partition(" ")
            if where_to.strip() not in ("", "followkernel"):
                raise CardError(
                    f"{where}: initramfs: only 'followkernel' is emulated, got {where_to!r}"
                )
            values["initramfs"] = name
        elif key in _FILES or key in _FLAGS or key == "kernel_address":
            values[key] = value
        elif key == "dtoverlay":
            overlays.append(value.split(",", 1)[0].strip())
            ignored.append(key)
        else:
            ignored.append(key)
    for key in _FILES | {"initramfs"}:
        if (key in values and not _FILE.fullmatch(values[key])) or ".." in values.get(key, ""):
            raise CardError(
                f"{origin}: {key}: expected a file name in the boot partition, got {values[key]!r}"
            )
    for key in _FLAGS:
        if key in values and values[key] not in ("0", "1"):
            raise CardError(f"{origin}: {key}: expected 0 or 1, got {values[key]!r}")
    if values.get("enable_gic") == "0":
        raise CardError(
            f"{origin}: enable_gic=0: the legacy interrupt controller is not emulated; "
            "raspi4b boots with the GIC-400"
        )
    address = values.get("kernel_address")
    if address is not None and not _NUMBER.fullmatch(address):
        raise CardError(f"{origin}: kernel_address: expected a number, got {address!r}")
    defaults = BootConfig()
    return BootConfig(
        kernel=values.get("kernel", defaults.kernel),
        device_tree=values.get("device_tree", defaults.device_tree),
        armstub=values.get("armstub"),
        initramfs=values.get("initramfs"),
        cmdline=values.get("cmdline", defaults.cmdline),
        arm_64bit=values.get("arm_64bit") == "1",
        kernel_address=int(address, 0) if address is not None else None,
        overlays=tuple(o for o in overlays if o),
        ignored=tuple(dict.fromkeys(ignored)),
    )


def parse_cmdline(text: str, origin: str) -> str:
    """cmdline.txt: the kernel's command line, its first line."""
    line = text.split("\n", 1)[0].strip()
    if re.search(r"[\x00-\x1f\x7f]", line):
        raise CardError(f"{origin}: expected a kernel command line of one line")
    return line


# Settings that change nothing under QEMU and need no mention (display, audio, UART
# clocks); others ignored are listed when the card boots.
NOT_EMULATED_QUIETLY = frozenset({
    "dtparam", "dtoverlay", "max_framebuffers", "enable_uart", "gpu_mem", "disable_overscan",
    "hdmi_force_hotplug", "hdmi_group", "hdmi_mode", "disable_splash", "boot_delay",
    "uart_2ndstage", "start_x", "camera_auto_detect", "display_auto_detect",
    "arm_boost", "over_voltage", "arm_freq", "core_freq", "avoid_warnings",
})  # fmt: skip

# What raspi4b does not model, found on QEMU 10: the always-on block that holds the
# HDMI controllers and their I2C buses (0x7ef00000-0x7ef0ffff) answers nothing and
# the kernel's probe of it panics; the Wi-Fi chip's power sequence on the second SD
# controller never completes, and the SD probe waits for it forever.
ALWAYS_ON = (0x7EF00000, 0x7EF10000)
SDIO_WIFI = "/soc/mmc@7e300000"


def emulation_fixups(tree: fdt.Tree) -> list[str]:
    """Change a Raspberry Pi 4 device tree (a copy) for what raspi4b lacks; each
    change, said as one line."""
    notes = []
    for path, node in tree.walk():
        address = node.unit_address
        if (
            address is not None
            and ALWAYS_ON[0] <= address < ALWAYS_ON[1]
            and node.properties.get("status") != fdt.string("disabled")
        ):
            node.properties["status"] = fdt.string("disabled")
            notes.append(f"device tree: {path} disabled (QEMU does not model it)")
    mmc = tree.find(SDIO_WIFI)
    if mmc is not None and "mmc-pwrseq" in mmc.properties:
        del mmc.properties["mmc-pwrseq"]
        notes.append(f"device tree: {SDIO_WIFI} mmc-pwrseq removed (no Wi-Fi chip to power up)")
    return notes


def sd_size(size: int) -> int:
    """The size QEMU's SD card model takes for a card of size bytes: a power of two."""
    power = 1 << 20
    while power < size:
        power <<= 1
    return power


# Overlays that give the PL011 back to serial0 (Bluetooth then has the mini UART or none).
_PL011_OVERLAYS = frozenset({"disable-bt", "miniuart-bt", "pi3-disable-bt", "pi3-miniuart-bt"})


# QEMU's raspi boards wire their first -serial to the PL011 (ttyAMA0), the second to
# the mini UART, the one 16550 of the SoC (ttyS0 in the Raspberry Pi kernels, ttyS1 in
# mainline's naming, which follows the device tree's aliases).
def uart_port(device: str) -> int | None:
    if device == "ttyAMA0":
        return 0
    if re.fullmatch(r"ttyS[0-9]", device):
        return 1
    return None


def firmware_cmdline(cmdline: str, config: BootConfig) -> tuple[str, int]:
    """The command line as the firmware hands it to the kernel, console=serial0 and
    serial1 made the Pi 4's device names (serial0 is the mini UART ttyS0 while the
    PL011 serves Bluetooth), and the QEMU serial port of its last console."""
    pl011_first = bool(set(config.overlays) & _PL011_OVERLAYS)
    names = {
        "serial0": "ttyAMA0" if pl011_first else "ttyS0",
        "serial1": "ttyS0" if pl011_first else "ttyAMA0",
    }
    words = []
    port = 0
    for word in cmdline.split():
        if word.startswith("console="):
            device, comma, rest = word[len("console=") :].partition(",")
            device = names.get(device, device)
            word = f"console={device}{comma}{rest}"
            found = uart_port(device)
            port = port if found is None else found
        words.append(word)
    return " ".join(words), port


# The board QEMU's raspi4b models: 2 GiB, the GPU's share at 0x3c000000-0x3fffffff.
RAM = ((0x0, 0x3C000000), (0x40000000, 0x40000000))
KERNEL_ADDRESS = 0x200000  # where the Pi 4's firmware loads a 64-bit kernel
# Nodes QEMU's raspi4b does not model, which QEMU disables itself in a -dtb it is given
# (raspi4_modify_dtb); a device tree handed to an armstub needs them disabled here.
UNMODELLED = (
    "/scb/pcie@7d500000",
    "/scb/ethernet@7d580000",
    "/soc/rng@7e104000",
    "/soc/avs-monitor@7d5d2000/thermal",
)
# The armstub header the firmware fills in (TF-A's rpi4 armstub8 header, Raspberry
# Pi's own armstubs): a magic it clears, then the device tree's and the kernel's address.
STUB_MAGIC = 0x5AFE570B
STUB_MAGIC_AT, STUB_DTB_AT, STUB_KERNEL_AT = 0xF0, 0xF8, 0xFC
STUB_END = 0x80000  # what TF-A's rpi4 port reserves for itself
_MB = 1 << 20


@dataclass(frozen=True)
class Placement:
    """Where the firmware puts what it loads."""

    kernel: int
    dtb: int
    initrd: int | None
    initrd_size: int = 0


def _align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


def kernel_size(image: bytes) -> int:
    """The memory an arm64 Image needs: its header's image_size (text to the end of
    BSS), or its file size for an Image without one."""
    if len(image) >= 64 and image[56:60] == b"ARMd":
        size = int.from_bytes(image[16:24], "little")
        if size:
            return max(size, len(image))
    return len(image)


def kernel_address(image: bytes) -> int:
    """Where the firmware loads an arm64 Image without kernel_address: its header's
    text_offset from 0 (0x80000 for Linux before 5.8), else 2 MiB."""
    if len(image) >= 64 and image[56:60] == b"ARMd":
        offset = int.from_bytes(image[8:16], "little")
        if offset:
            return offset
    return KERNEL_ADDRESS


def _cells(tree: fdt.Tree, name: str, default: int, origin: str) -> int:
    value = tree.root.properties.get(name, fdt.cells(default))
    count = int.from_bytes(value, "big") if len(value) == 4 else 0
    if count not in (1, 2):
        raise CardError(f"{origin}: /{name}: expected 1 or 2 cells, got {value.hex()}")
    return count


def place(
    tree: fdt.Tree,
    kernel: bytes,
    initrd_size: int | None,
    cmdline: str,
    config: BootConfig,
    *,
    stub_size: int,
    dtb_origin: str,
) -> Placement:
    """Choose where kernel, device tree and initramfs go, and tell the device tree (a
    copy) what the firmware tells it: memory, command line and initramfs. The device
    tree goes 2 MiB-aligned after the kernel with room for an armstub to grow it (TF-A
    maps 4 MiB from there), the initramfs after that; none may overlap the armstub,
    which the firmware puts at 0."""
    if config.kernel_address is not None:
        at, field = config.kernel_address, "config.txt: kernel_address"
    else:
        at, field = kernel_address(kernel), f"{config.kernel}: its header's text_offset"
    if at < stub_size or at % 4096:
        raise CardError(
            f"{field}: {at:#x} expected page-aligned and above the {stub_size}-byte armstub "
            "the firmware loads at 0"
        )
    dtb = _align(at + kernel_size(kernel), 2 * _MB) + 2 * _MB
    initrd = dtb + 8 * _MB if initrd_size is not None else None
    end = (initrd or dtb) + (initrd_size or _MB)
    if end > RAM[0][1]:
        raise CardError(
            f"{config.kernel}, {config.device_tree} and {config.initramfs or 'no initramfs'} "
            f"need {end >> 20} MiB from {at:#x}, more than lies below the GPU's memory at "
            f"{RAM[0][1]:#x}"
        )
    addr_cells = _cells(tree, "#address-cells", 2, dtb_origin)
    size_cells = _cells(tree, "#size-cells", 1, dtb_origin)
    memory = next(
        (n for n in tree.root.children if n.name == "memory" or n.name.startswith("memory@")),
        None,
    ) or tree.node("/memory@0")
    memory.properties["device_type"] = fdt.string("memory")
    memory.properties["reg"] = b"".join(
        fdt.cells(base, size=addr_cells) + fdt.cells(length, size=size_cells)
        for base, length in RAM
    )
    chosen = tree.node("/chosen")
    chosen.properties["bootargs"] = fdt.string(cmdline)
    if initrd is not None and initrd_size is not None:
        chosen.properties["linux,initrd-start"] = fdt.cells(initrd, size=2)
        chosen.properties["linux,initrd-end"] = fdt.cells(initrd + initrd_size, size=2)
    if len(fdt.dump(tree)) > 2 * _MB:
        raise CardError(f"{dtb_origin}: more than 2 MiB, the room left for it")
    return Placement(at, dtb, initrd, initrd_size or 0)


def armstub_fixups(tree: fdt.Tree) -> list[str]:
    """What a device tree handed to an armstub needs beyond emulation_fixups: the nodes
    QEMU would disable in a -dtb of its own, and no /memreserve/ over the stub, which
    TF-A reserves as a whole (0x0-0x80000) and Linux could not while it stands."""
    notes = []
    for path in UNMODELLED:
        node = tree.find(path)
        if node is not None and node.properties.get("status") != fdt.string("disabled"):
            node.properties["status"] = fdt.string("disabled")
            notes.append(f"device tree: {path} disabled (QEMU does not model it)")
    kept = [(a, n) for a, n in tree.reserved if a + n > STUB_END]
    for address, size in sorted(set(tree.reserved) - set(kept)):
        notes.append(
            f"device tree: /memreserve/ {address:#x}+{size:#x} dropped: the armstub "
            "reserves its own memory (as TF-A 2.6 and later do themselves)"
        )
    tree.reserved = kept
    return notes


def patch_armstub(stub: bytes, placed: Placement) -> tuple[bytes, bool]:
    """The armstub as the firmware leaves it in memory: with its header's magic
    cleared and the device tree's and kernel's addresses written; (stub, False) when it
    has no such header (the firmware then changes nothing)."""
    if len(stub) < 0x100 or int.from_bytes(stub[STUB_MAGIC_AT : STUB_MAGIC_AT + 4], "little") != (
        STUB_MAGIC
    ):
        return stub, False
    header = (0).to_bytes(4, "little") + stub[0xF4:0xF8]
    header += placed.dtb.to_bytes(4, "little") + placed.kernel.to_bytes(4, "little")
    return stub[:STUB_MAGIC_AT] + header + stub[0x100:], True
