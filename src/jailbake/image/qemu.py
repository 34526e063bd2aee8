"""Booting built images under qemu-system-aarch64 and watching the serial console."""

from __future__ import annotations

import os
import re
import selectors
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..core import paths, run
from ..core.errors import JailbakeError


@dataclass(frozen=True)
class Machine:
    """A QEMU arm64 machine; the defaults boot Linux on the `virt` board. A board with
    a fixed CPU, CPU count and memory (raspi4b) takes None for them."""

    kernel: Path | None
    initrd: Path | None = None
    append: str = "console=ttyAMA0 panic=-1"
    machine: str = "virt"
    cpu: str | None = "cortex-a57"
    smp: int | None = 1
    memory: str | None = "512M"
    drives: tuple[Path, ...] = ()
    dtb: Path | None = None
    sd: Path | None = None  # the SD card (raw, or a qcow2 overlay by its suffix)
    # Files QEMU's generic loader puts in memory at an address, as firmware would;
    # every CPU starts at the first one's address when no kernel is given.
    loaders: tuple[tuple[Path, int], ...] = ()
    console: int = 0  # the serial port that reads this terminal; earlier ones print too
    serials: int = 0  # the board's UARTs that print on this terminal (at least console + 1)
    # Ports other than the console that write to a file instead (boot() merges the
    # files into the transcript line by line, so two UARTs never mix within a line).
    port_files: tuple[tuple[int, Path], ...] = ()
    extra: tuple[str, ...] = field(default_factory=tuple)

    def argv(self) -> list[str]:
        argv = ["qemu-system-aarch64", "-M", self.machine]
        if self.cpu:
            argv += ["-cpu", self.cpu]
        if self.smp:
            argv += ["-smp", str(self.smp)]
        if self.memory:
            argv += ["-m", self.memory]
        argv += ["-nographic", "-nic", "none", "-no-reboot"]
        ports = max(self.console + 1, self.serials)
        if ports > 1:
            # Every port up to the console prints on this terminal (firmware or a
            # hypervisor may use another UART than Linux); what is typed goes to the
            # last one attached.
            argv += ["-chardev", "stdio,mux=on,id=console"]
            files = dict(self.port_files)
            for port in range(ports):
                if port in files and port != self.console:
                    argv += ["-chardev", f"file,id=port{port},path={_escaped(files[port])}"]
                    argv += ["-serial", f"chardev:port{port}"]
                else:
                    argv += ["-serial", "chardev:console"]
            argv += ["-mon", "chardev=console"]
        if self.kernel is not None:
            argv += ["-kernel", str(self.kernel), "-append", self.append]
        if self.initrd:
            argv += ["-initrd", str(self.initrd)]
        if self.dtb:
            argv += ["-dtb", str(self.dtb)]
        for i, drive in enumerate(self.drives):
            argv += [
                "-drive",
                f"if=none,format=raw,snapshot=on,file={_escaped(drive)},id=d{i}",
                "-device",
                f"virtio-blk-device,drive=d{i}",
            ]
        if self.sd:
            kind = "qcow2" if self.sd.suffix == ".qcow2" else "raw"
            argv += ["-drive", f"if=sd,format={kind},file={_escaped(self.sd)}"]
        for path, address in self.loaders:
            argv += ["-device", f"loader,file={_escaped(path)},addr={address:#x},force-raw=on"]
        return [*argv, *self.extra]


def _escaped(path: Path) -> str:
    return str(path).replace(",", ",,")  # a comma in a name starts no option


@dataclass(frozen=True)
class Transcript:
    text: str
    seconds: float
    found: bool


def boot(
    machine: Machine | Sequence[str],
    expect: Sequence[str],
    *,
    timeout: float = 120.0,
    send: Sequence[tuple[str, str]] = (),
    port_files: Sequence[Path] = (),
) -> Transcript:
    """Boot, wait until every string in expect has appeared on the console, then stop.

    machine: the machine, or the command that runs it (QEMU inside a sandbox, say).
    send: (prompt, line) pairs; line is typed once prompt has appeared.
    port_files: files other serial ports write to (Machine.port_files, as this side
    sees them): their lines join the transcript whole, between the console's lines.
    """
    start = time.monotonic()
    argv = machine.argv() if isinstance(machine, Machine) else list(machine)
    try:
        proc = run.spawn(argv)
    except FileNotFoundError:
        raise JailbakeError(
            "qemu-system-aarch64 is not installed (Debian: apt-get install qemu-system-arm)"
        ) from None
    assert proc.stdout is not None and proc.stdin is not None
    os.set_blocking(proc.stdout.fileno(), False)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    seen = bytearray()
    sides = _PortFiles(port_files)
    pending = list(send)
    since = 0  # where the next prompt is looked for: after the last line typed
    try:
        while time.monotonic() - start < timeout:
            text = seen.decode(errors="replace")
            if all(e in text for e in expect):
                return Transcript(text, time.monotonic() - start, True)
            if pending and pending[0][0] in seen[since:].decode(errors="replace"):
                proc.stdin.write(pending.pop(0)[1].encode() + b"\n")
                proc.stdin.flush()
                since = len(seen)
            if not sel.get_map():
                break  # QEMU closed its console: it has exited
            for key, _ in sel.select(timeout=0.2):
                chunk = proc.stdout.read()
                if chunk:
                    seen += chunk
                elif chunk == b"":
                    sel.unregister(key.fileobj)
            sides.merge_into(seen)
        sides.merge_into(seen, flush=True)
        return Transcript(seen.decode(errors="replace"), time.monotonic() - start, False)
    finally:
        proc.kill()
        proc.wait()


class _PortFiles:
    """Other serial ports' files, read as they grow: each complete line goes into the
    transcript where the console is at the start of a line."""

    PATIENCE = 1.0  # seconds a console's unfinished line holds the other ports' lines

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.offsets = [0] * len(self.paths)
        self.partial = [bytearray() for _ in self.paths]
        self.grew = [0.0] * len(self.paths)  # when each port last wrote
        self.held = bytearray()  # whole lines waiting for the console's line to end
        self.since = 0.0  # when the first of them arrived

    def merge_into(self, seen: bytearray, *, flush: bool = False) -> None:
        for i, path in enumerate(self.paths):
            try:
                with path.open("rb") as f:
                    f.seek(self.offsets[i])
                    chunk = f.read()
            except FileNotFoundError:
                continue
            now = time.monotonic()
            if chunk:
                self.grew[i] = now
            self.offsets[i] += len(chunk)
            self.partial[i] += chunk
            end = self.partial[i].rfind(b"\n") + 1
            if flush or now - self.grew[i] > self.PATIENCE:
                end = len(self.partial[i])  # a prompt that waits for input ends its line
            if end and not self.held:
                self.since = time.monotonic()
            self.held += self.partial[i][:end]
            del self.partial[i][:end]
        if not self.held:
            return
        if not seen or seen.endswith(b"\n"):
            seen += self.held
        elif flush or time.monotonic() - self.since > self.PATIENCE:
            seen += b"\n" + self.held  # a prompt waits for input: its line ends here
        else:
            return
        if not seen.endswith(b"\n"):
            seen += b"\n"
        self.held.clear()


QEMU_VARIABLES = {
    "kernel": "JAILBAKE_QEMU_KERNEL",
    "initrd": "JAILBAKE_QEMU_INITRD",
    "drive": "JAILBAKE_QEMU_DRIVE",
    "append": "JAILBAKE_QEMU_APPEND",
    "machine": "JAILBAKE_QEMU_MACHINE",
    "cpu": "JAILBAKE_QEMU_CPU",
    "smp": "JAILBAKE_QEMU_SMP",
    "memory": "JAILBAKE_QEMU_MEMORY",
}


# What a layer may say of the machine. QEMU reads what follows a comma as a property,
# and some properties read or write host files (dumpdtb=, dtb=, firmware=): a machine
# takes only the properties below, a CPU model only plain ones.
_WORD = r"[A-Za-z0-9][A-Za-z0-9._-]*"
MACHINE_PROPERTIES = (
    "gic-version", "virtualization", "secure", "highmem", "its", "iommu", "ras", "mte",
    "acpi", "usb", "accel", "mem-merge", "dump-guest-core",
)  # fmt: skip
_PATTERNS = {
    "machine": (
        re.compile(rf"{_WORD}(,(?:{'|'.join(MACHINE_PROPERTIES)})=[A-Za-z0-9._:-]+)*"),
        f"a machine name such as virt, with properties among {', '.join(MACHINE_PROPERTIES)}",
    ),
    "cpu": (re.compile(rf"{_WORD}(,{_WORD}={_WORD})*"), "a CPU model such as cortex-a57"),
    "smp": (re.compile(r"[0-9]{1,4}"), "a number of CPUs"),
    "memory": (re.compile(r"[0-9]{1,7}(\.[0-9]{1,3})?[KMGTkmgt]?"), "a size such as 512M"),
    "append": (re.compile(r"[^\x00-\x1f\x7f]*"), "a kernel command line of one line"),
}


def machine_from_layer(
    variables: dict[str, str],
    artifacts: Path,
    overrides: dict[str, str],
    *,
    kernel_needed: bool = True,
) -> Machine:
    """The machine a layer describes in its JAILBAKE_QEMU_* variables (paths in
    artifacts/). Without kernel_needed (firmware finds it on the card) it has none."""
    values = {k: overrides.get(k) or variables.get(v, "") for k, v in QEMU_VARIABLES.items()}
    if kernel_needed and not values["kernel"]:
        raise JailbakeError(f"run: the layer sets no {QEMU_VARIABLES['kernel']}; give --kernel")
    for key, pattern in _PATTERNS.items():
        if values[key] and not pattern[0].fullmatch(values[key]):
            where = f"--{key}" if overrides.get(key) else QEMU_VARIABLES[key]
            raise JailbakeError(f"run: {where}: expected {pattern[1]}, got {values[key]!r}")

    def artifact(key: str) -> Path:
        text = values[key]
        if overrides.get(key):  # the command line names any file
            path = Path(text) if Path(text).is_absolute() else artifacts / text
        else:  # a layer names a built artifact
            path = paths.check_inside(artifacts, text, origin=f"run: {QEMU_VARIABLES[key]}")
        if not path.is_file():
            raise JailbakeError(f"run: {path} does not exist; build the layer first")
        return path

    defaults = Machine(kernel=None)
    board = values["machine"] or defaults.machine
    if board.startswith("raspi"):  # its SoC fixes the CPUs and the memory
        defaults = replace(defaults, cpu=None, smp=None, memory=None)
    return Machine(
        kernel=artifact("kernel") if values["kernel"] else None,
        initrd=artifact("initrd") if values["initrd"] else None,
        drives=(artifact("drive"),) if values["drive"] else (),
        append=values["append"] or defaults.append,
        machine=board,
        cpu=values["cpu"] or defaults.cpu,
        smp=int(values["smp"]) if values["smp"] else defaults.smp,
        memory=values["memory"] or defaults.memory,
    )
