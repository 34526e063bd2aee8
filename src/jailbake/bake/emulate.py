"""Booting a layer's built image under QEMU (`jailbake run`).

The machine is what the layer's JAILBAKE_QEMU_* variables describe. QEMU is the
host's, or, when the layer names a recipe in JAILBAKE_QEMU_SYSTEM, the one that
recipe makes from pinned packages: built or reused like any recipe, run inside a
sandbox with its tree as the root and nothing of the host but the files the boot
reads. With JAILBAKE_QEMU_FIRMWARE=raspberrypi the card itself is booted: what the
Raspberry Pi's GPU firmware would do with it is done first (image.raspi).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..core import run
from ..core.errors import JailbakeError
from ..executors.host import tree_argv
from ..image import fdt, qemu, raspi
from .observe import Observer
from .options import BuildOptions

SYSTEM = "JAILBAKE_QEMU_SYSTEM"
FIRMWARE = "JAILBAKE_QEMU_FIRMWARE"
FIRMWARES = ("raspberrypi",)
_RECIPE = re.compile(r"[a-z0-9][a-z0-9._+-]*")
QEMU_BINARY = "usr/bin/qemu-system-aarch64"
# The most the firmware would load: a text file, and anything below the GPU's memory.
TEXT_LIMIT = 64 << 10
IMAGE_LIMIT = raspi.RAM[0][1]
# Inside the sandbox: the run's own files, and the artifacts it boots.
WORK, ARTIFACTS = "/run/work", "/run/artifacts"


@dataclass
class Boot:
    """A QEMU command ready to start (inside a sandbox when QEMU is a recipe's), and
    what was changed for emulation, to be said before it starts."""

    argv: list[str]
    notes: list[str] = field(default_factory=list)
    port_files: list[Path] = field(default_factory=list)  # qemu.boot() merges them


@dataclass(frozen=True)
class Emulator:
    """Where QEMU comes from: the host, or a recipe's tree run in a sandbox."""

    tree: Path | None = None

    def wrap(self, argv: list[str], work: Path, artifacts: Path) -> list[str]:
        if self.tree is None:
            return argv
        sandbox = tree_argv(
            self.tree,
            {artifacts.resolve(): ARTIFACTS},
            writable={work: WORK},
            as_root=os.getuid() == 0,
        )
        return [*sandbox, *argv]

    def inside(self, path: Path, work: Path, artifacts: Path) -> Path:
        """Where a file of the run or an artifact is seen by QEMU."""
        if self.tree is None:
            return path
        for host, seen in ((work, WORK), (artifacts.resolve(), ARTIFACTS)):
            if path.resolve().is_relative_to(host.resolve()):
                return Path(seen) / path.resolve().relative_to(host.resolve())
        raise JailbakeError(f"run: {path} is neither an artifact nor a file of this run")

    def tool(self, argv: list[str], work: Path, artifacts: Path, what: str) -> str:
        """Run a program of the emulator's tree (mtools, qemu-img); its output."""
        done = run.run(
            self.wrap(argv, work, artifacts),
            check=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        if done.returncode != 0:
            detail = (err or out).strip().splitlines()
            raise JailbakeError(
                f"run: {what} failed ({done.returncode}): {detail[-1] if detail else ''}"
            )
        return out


def emulator(
    variables: Mapping[str, str], options: BuildOptions, observer: Observer | None = None
) -> Emulator:
    """The host's QEMU, or the tree of the recipe the layer names, built if need be
    (observer: told of that build)."""
    name = variables.get(SYSTEM, "")
    if not name:
        return Emulator()
    if not _RECIPE.fullmatch(name):
        raise JailbakeError(f"run: {SYSTEM}: expected a recipe name, got {name!r}")
    from .build import make_tool

    tree = make_tool(options, name, observer)
    if not (tree / QEMU_BINARY).is_file():
        raise JailbakeError(
            f"run: {SYSTEM}: recipe {name} made no {QEMU_BINARY} in its output "
            f"(expected one output directory holding a file system with QEMU)"
        )
    return Emulator(tree)


def prepare(
    variables: Mapping[str, str],
    artifacts: Path,
    overrides: dict[str, str],
    emu: Emulator,
    work: Path,
    *,
    unattended: bool = False,
) -> Boot:
    """The QEMU command for the layer's machine; files the boot needs go to work.
    unattended (output is read by qemu.boot, nobody types): serial ports other than
    the console write to files in work, so their lines never mix with the console's."""
    firmware = variables.get(FIRMWARE, "")
    if firmware and firmware not in FIRMWARES:
        raise JailbakeError(
            f"run: {FIRMWARE}: expected one of {', '.join(FIRMWARES)}, got {firmware!r}"
        )
    notes: list[str] = []
    if firmware:
        machine, notes = _raspberrypi(variables, artifacts, overrides, emu, work)
    else:
        machine = qemu.machine_from_layer(dict(variables), artifacts, overrides)

    def seen(p: Path) -> Path:
        return emu.inside(p, work, artifacts)

    machine = replace(
        machine,
        kernel=seen(machine.kernel) if machine.kernel else None,
        initrd=seen(machine.initrd) if machine.initrd else None,
        drives=tuple(seen(d) for d in machine.drives),
        dtb=seen(machine.dtb) if machine.dtb else None,
        sd=seen(machine.sd) if machine.sd else None,
        loaders=tuple((seen(p), at) for p, at in machine.loaders),
    )
    files = [
        (port, work / f"serial{port}.log")
        for port in range(max(machine.console + 1, machine.serials))
        if unattended and port != machine.console
    ]
    machine = replace(machine, port_files=tuple((port, seen(path)) for port, path in files))
    argv = emu.wrap(machine.argv(), work, artifacts)
    return Boot(argv, notes, [path for _, path in files])


def _card_file(emu: Emulator, card: Path, part: raspi.Partition, name: str, dest: Path,
               work: Path, artifacts: Path, *, limit: int) -> Path:  # fmt: skip
    """One file of the card's boot partition, copied out with mtools, at most limit bytes."""
    image = f"{emu.inside(card, work, artifacts)}@@{part.offset}"
    inside = emu.inside(dest, work, artifacts)
    emu.tool(
        ["mcopy", "-n", "-i", image, f"::{name}", str(inside)],
        work,
        artifacts,
        f"reading {name} from the card's boot partition",
    )
    if dest.is_symlink() or not dest.is_file():
        raise raspi.CardError(f"{card.name}, partition {part.index}: {name}: not a file")
    if dest.stat().st_size > limit:
        raise raspi.CardError(
            f"{card.name}, partition {part.index}: {name}: more than {limit >> 10} KiB, "
            "more than the firmware would load"
        )
    return dest


def _raspberrypi(
    variables: Mapping[str, str],
    artifacts: Path,
    overrides: dict[str, str],
    emu: Emulator,
    work: Path,
) -> tuple[qemu.Machine, list[str]]:
    """What the GPU firmware of a Raspberry Pi 4 does with the card, done for QEMU."""
    base = qemu.machine_from_layer(dict(variables), artifacts, overrides, kernel_needed=False)
    if len(base.drives) != 1:
        raise JailbakeError(f"run: {FIRMWARE}: the layer names no card in JAILBAKE_QEMU_DRIVE")
    if emu.tree is None:
        raise JailbakeError(
            f"run: {FIRMWARE}: the layer names no QEMU recipe in {SYSTEM}; the card is read "
            "with that recipe's tools, in its sandbox"
        )
    taken = [v for k, v in qemu.QEMU_VARIABLES.items() if k in ("kernel", "initrd")]
    if set(taken) & set(variables):
        raise JailbakeError(
            f"run: {FIRMWARE}: the card's config.txt names kernel and initramfs; "
            f"the layer sets {' and '.join(sorted(set(taken) & set(variables)))}"
        )
    card = base.drives[0].resolve()
    if "@@" in str(card):
        raise JailbakeError(f"run: {card}: a card's path cannot hold '@@' (mtools' offset)")
    part = raspi.boot_partition(card)
    origin = f"{card.name}, partition {part.index}"
    boot = work / "boot"
    boot.mkdir()
    notes: list[str] = []
    config_txt = _card_file(
        emu, card, part, "config.txt", boot / "config.txt", work, artifacts, limit=TEXT_LIMIT
    )
    config = raspi.parse_config(config_txt.read_text(errors="replace"), f"{origin}: config.txt")
    if not config.arm_64bit:
        raise JailbakeError(
            f"run: {origin}: config.txt: arm_64bit=1 expected; QEMU's raspi4b runs 64-bit "
            "kernels only"
        )

    def fetch(name: str, role: str, limit: int = IMAGE_LIMIT) -> Path:
        """The card's file name, copied to a file named by its role (two settings may
        name the same file; the copies never share a name)."""
        return _card_file(emu, card, part, name, boot / role, work, artifacts, limit=limit)

    # The layer's JAILBAKE_QEMU_APPEND, like --append, replaces cmdline.txt.
    append = overrides.get("append") or variables.get(qemu.QEMU_VARIABLES["append"], "")
    cmdline, console = raspi.firmware_cmdline(
        append
        or raspi.parse_cmdline(
            fetch(config.cmdline, "cmdline.txt", TEXT_LIMIT).read_text(errors="replace"),
            f"{origin}: {config.cmdline}",
        ),
        config,
    )
    # Both UARTs print here, whichever one the kernel's console is: firmware, TF-A and
    # Jailhouse's hypervisor and cells may write to the other.
    notes.append(
        "console: the mini UART, as the command line asks; the PL011 prints here too"
        if console
        else "console: the PL011, as the command line asks; the mini UART prints here too"
    )
    kernel = _unpacked(fetch(config.kernel, "kernel"), f"{origin}: {config.kernel}")
    dtb_origin = f"{origin}: {config.device_tree}"
    tree = fdt.parse(
        fetch(config.device_tree, "device-tree", fdt.MAX_SIZE).read_bytes(), dtb_origin
    )
    notes += raspi.emulation_fixups(tree)
    dtb = work / "device-tree.dtb"
    initrd = fetch(config.initramfs, "initramfs") if config.initramfs else None
    overlay = work / "card.qcow2"  # its backing file: the card's absolute path
    size = raspi.sd_size(card.stat().st_size)
    emu.tool(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
         "-b", str(emu.inside(card, work, artifacts)),
         str(emu.inside(overlay, work, artifacts)), str(size)],
        work, artifacts, "making the card's overlay",
    )  # fmt: skip
    if size != card.stat().st_size:
        notes.append(
            f"the card is given as an SD card of {size >> 20} MiB (QEMU's are a power of "
            f"two bytes), its writes kept in an overlay; {card.name} is not changed"
        )
    ignored = [k for k in config.ignored if k not in raspi.NOT_EMULATED_QUIETLY]
    if ignored:
        notes.append(f"config.txt settings QEMU has nothing for: {', '.join(ignored)}")
    if config.armstub is None:
        # The firmware's own stub: CPUs 1-3 wait on a spin table, as QEMU's does, and
        # QEMU places the kernel itself.
        if config.kernel_address is not None:
            notes.append("config.txt: kernel_address is not emulated without an armstub")
        dtb.write_bytes(fdt.dump(tree))
        machine = replace(
            base, kernel=kernel, initrd=initrd, dtb=dtb, append=cmdline, drives=(), sd=overlay,
            console=console, serials=2,
        )  # fmt: skip
        return machine, notes
    armstub = fetch(config.armstub, "armstub", raspi.STUB_END)
    image = kernel.read_bytes()
    placed = raspi.place(
        tree, image, initrd.stat().st_size if initrd else None, cmdline, config,
        stub_size=armstub.stat().st_size, dtb_origin=dtb_origin,
    )  # fmt: skip
    notes += raspi.armstub_fixups(tree)
    dtb.write_bytes(fdt.dump(tree))
    stub, patched = raspi.patch_armstub(armstub.read_bytes(), placed)
    if not patched:
        notes.append(
            f"{config.armstub} has no armstub header the firmware fills in: loaded as it is"
        )
    loaded = work / "armstub.bin"
    loaded.write_bytes(stub)
    loaders = [(loaded, 0), (kernel, placed.kernel), (dtb, placed.dtb)]
    if initrd is not None and placed.initrd is not None:
        loaders.append((initrd, placed.initrd))
    # Every CPU starts at 0 in EL3, as on the board. TF-A hands the GIC-400's interrupts
    # to the non-secure side, which QEMU's GIC model does only with its security
    # extensions (the board's GIC has them).
    notes.append(
        f"firmware: {config.armstub} at 0x0, {config.kernel} at {placed.kernel:#x}, "
        f"{config.device_tree} at {placed.dtb:#x}"
        + (f", {config.initramfs} at {placed.initrd:#x}" if placed.initrd else "")
    )
    machine = replace(
        base, kernel=None, initrd=None, append="", drives=(), sd=overlay,
        loaders=tuple(loaders), console=console, serials=2,
        extra=(*base.extra, "-global", "arm_gic.has-security-extensions=on"),
    )  # fmt: skip
    return machine, notes


def _unpacked(path: Path, origin: str) -> Path:
    """The kernel as the firmware runs it: a gzip'd Image is unpacked first."""
    with path.open("rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return path
    out = path.with_name(path.name + ".unpacked")
    try:
        with gzip.open(path, "rb") as src, out.open("wb") as dst:
            copied = 0
            while chunk := src.read(1 << 20):
                copied += len(chunk)
                if copied > IMAGE_LIMIT:
                    raise raspi.CardError(f"{origin}: unpacks to more than {IMAGE_LIMIT >> 20} MiB")
                dst.write(chunk)
    except (EOFError, OSError, zlib.error) as exc:
        raise raspi.CardError(f"{origin}: a gzip'd kernel that cannot be unpacked: {exc}") from None
    return out


def remove(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
