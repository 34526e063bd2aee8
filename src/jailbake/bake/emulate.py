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
MAX_KERNEL = 256 << 20  # a gzip'd kernel is unpacked up to this size, as the firmware does
# Inside the sandbox: the run's own files, and the artifacts it boots.
WORK, ARTIFACTS = "/run/work", "/run/artifacts"


@dataclass
class Boot:
    """A QEMU command ready to start: its argv (inside a sandbox when prefix is
    set), and what was changed for emulation, to be said before it starts."""

    argv: list[str]
    notes: list[str] = field(default_factory=list)


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
) -> Boot:
    """The QEMU command for the layer's machine; files the boot needs go to work."""
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
    return Boot(emu.wrap(machine.argv(), work, artifacts), notes)


def _card_file(emu: Emulator, card: Path, part: raspi.Partition, name: str, dest: Path,
               work: Path, artifacts: Path) -> Path:  # fmt: skip
    """One file of the card's boot partition, copied out with mtools."""
    image = f"{emu.inside(card, work, artifacts)}@@{part.offset}"
    inside = emu.inside(dest, work, artifacts)
    emu.tool(
        ["mcopy", "-n", "-i", image, f"::{name}", str(inside)],
        work,
        artifacts,
        f"reading {name} from the card's boot partition",
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
    card = base.drives[0]
    part = raspi.boot_partition(card)
    origin = f"{card.name}, partition {part.index}"
    boot = work / "boot"
    boot.mkdir()
    notes: list[str] = []
    config_txt = _card_file(emu, card, part, "config.txt", boot / "config.txt", work, artifacts)
    config = raspi.parse_config(config_txt.read_text(errors="replace"), f"{origin}: config.txt")
    if not config.arm_64bit:
        raise JailbakeError(
            f"run: {origin}: config.txt: arm_64bit=1 expected; QEMU's raspi4b runs 64-bit "
            "kernels only"
        )

    def fetch(name: str) -> Path:
        return _card_file(emu, card, part, name, boot / name.replace("/", "_"), work, artifacts)

    cmdline, console = raspi.firmware_cmdline(
        overrides.get("append")
        or raspi.parse_cmdline(
            fetch(config.cmdline).read_text(errors="replace"), f"{origin}: {config.cmdline}"
        ),
        config,
    )
    if console:
        notes.append("console: the mini UART, as the command line asks; the PL011 prints here too")
    kernel = _unpacked(fetch(config.kernel), f"{origin}: {config.kernel}")
    tree = fdt.parse(fetch(config.device_tree).read_bytes(), f"{origin}: {config.device_tree}")
    notes += raspi.emulation_fixups(tree)
    dtb = work / "device-tree.dtb"
    initrd = fetch(config.initramfs) if config.initramfs else None
    overlay = work / "card.qcow2"
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
        # The firmware's own stub: CPUs 1-3 wait on a spin table, as QEMU's does.
        dtb.write_bytes(fdt.dump(tree))
        machine = replace(
            base, kernel=kernel, initrd=initrd, dtb=dtb, append=cmdline, drives=(), sd=overlay,
            console=console,
        )  # fmt: skip
        return machine, notes
    armstub = fetch(config.armstub)
    image = kernel.read_bytes()
    placed = raspi.place(tree, image, initrd.stat().st_size if initrd else None, cmdline, config)
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
        loaders=tuple(loaders), console=console,
        extra=(*base.extra, "-global", "arm_gic.has-security-extensions=on"),
    )  # fmt: skip
    return machine, notes


def _unpacked(path: Path, origin: str) -> Path:
    """The kernel as the firmware runs it: a gzip'd Image is unpacked first."""
    with path.open("rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return path
    out = path.with_name(path.name + ".unpacked")
    with gzip.open(path, "rb") as src, out.open("wb") as dst:
        copied = 0
        while chunk := src.read(1 << 20):
            copied += len(chunk)
            if copied > MAX_KERNEL:
                raise JailbakeError(f"run: {origin}: unpacks to more than {MAX_KERNEL >> 20} MiB")
            dst.write(chunk)
    return out


def remove(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
