"""The Raspberry Pi 4 card of layers/rpi4-jailhouse.yml, built and booted by `jailbake run`
under QEMU 10's raspi4b: TF-A as the armstub, the login prompt, then `jailhouse enable`
with rpi4.cell and the gic-demo cell.

Opt-in: it builds a kernel (about 20 minutes on 2 cores) and needs the sources of
Jailhouse and jailhouse-images, which only GitHub serves, plus the pinned kernel and
firmware, or the stand-ins of examples/rpi4-standin (docs/rpi4-qemu.md):

    JAILBAKE_RPI4_CONFIG=layers/rpi4-jailhouse.yml:examples/rpi4-standin/rpi4-standin.yml
    JAILBAKE_RPI4_MIRROR=DIR[:DIR...]   (where the sources GitHub serves are)
    JAILBAKE_RPI4_CACHE=DIR             (optional: a cache to reuse between runs)
    scripts/test tests/test_rpi4_jailhouse.py

Typed input reaches no UART of QEMU 10.0's raspi4b, so the commands a user would type
are given on the kernel command line (`systemd.run=`), their output on the console.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import ROOT, jailbake

CONFIG = os.environ.get("JAILBAKE_RPI4_CONFIG", "")
MIRRORS = [m for m in os.environ.get("JAILBAKE_RPI4_MIRROR", "").split(os.pathsep) if m]
pytestmark = [
    pytest.mark.usefixtures("docker_engine"),
    pytest.mark.slow,
    pytest.mark.skipif(not CONFIG, reason="opt-in: set JAILBAKE_RPI4_CONFIG"),
]

# jailhouse-images' cmdline.txt with the console on the PL011 (serial1): Linux's mini
# UART driver stalls in about half the boots under QEMU 10.0 (docs/rpi4-qemu.md).
CMDLINE = "console=serial1,115200 root=/dev/mmcblk0p2 rootwait mem=768M"
JAILHOUSE = "/usr/sbin/jailhouse"
GIC_DEMO = [
    f"{JAILHOUSE} enable /etc/jailhouse/rpi4.cell",
    f"{JAILHOUSE} cell create /etc/jailhouse/rpi4-inmate-demo.cell",
    f"{JAILHOUSE} cell load inmate-demo /usr/libexec/jailhouse/demos/gic-demo.bin",
    f"{JAILHOUSE} cell start inmate-demo",
]


def commands_at_boot(commands: list[str]) -> str:
    """A command line that runs commands once the card has booted (systemd's
    kernel-command-line.service), printing what they print on the console."""
    return " ".join(
        [
            CMDLINE,
            *(f'systemd.run="{command}"' for command in commands),
            "systemd.run_success_action=none",
            "systemd.run_failure_action=none",
            "systemd.default_standard_output=journal+console",
            "systemd.default_standard_error=journal+console",
        ]
    )


def mirror_args() -> list[str]:
    return [arg for mirror in MIRRORS for arg in ("--mirror", mirror)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return os.environ.get("JAILBAKE_RPI4_CACHE") or str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, cache: str) -> Path:
    art = tmp_path_factory.mktemp("artifacts")
    result = jailbake(
        "build", CONFIG, *mirror_args(),
        *("--cache-dir", cache, "--artifacts-dir", str(art), "-j", "2", "--json"),
        cwd=ROOT, timeout=7200,
    )  # fmt: skip
    assert result.rc == 0, result.stderr[-3000:]
    published = {a["path"] for a in json.loads(result.stdout.splitlines()[-1])["artifacts"]}
    assert {"Image", "bl31.bin", "jailhouse-rpi4.img", "rootfs.cpio.gz"} <= published
    return art


def run_card(
    artifacts: Path, cache: str, append: str, expect: list[str], *,
    timeout: int = 900, check: bool = True,
) -> str:  # fmt: skip
    """Boot the card with `jailbake run` until every expected line appeared (or the
    timeout passed, unless check); the console transcript."""
    result = jailbake(
        "run", CONFIG, *mirror_args(),
        *("--cache-dir", cache, "--artifacts-dir", str(artifacts), "--append", append),
        *(arg for line in expect for arg in ("--expect", line)),
        *("--timeout", str(timeout)),
        cwd=ROOT, timeout=timeout + 300,
    )  # fmt: skip
    if check:
        assert result.rc == 0, result.stdout[-6000:] + result.stderr
    return result.stdout


def test_the_card_boots_to_a_login_through_tf_a(artifacts: Path, cache: str) -> None:
    transcript = run_card(artifacts, cache, CMDLINE, ["jailhouse login:"])
    # TF-A v2.2 (the card's bl31.bin) gives Linux PSCI, and the CPUs start at EL2,
    # where Jailhouse's hypervisor will run.
    assert "psci: PSCIv1.1 detected in firmware." in transcript
    assert "CPU: All CPU(s) started at EL2" in transcript
    assert "mmcblk0: p1 p2" in transcript


def test_jailhouse_enables_and_runs_gic_demo(artifacts: Path, cache: str) -> None:
    transcript = run_card(artifacts, cache, commands_at_boot(GIC_DEMO), ["Timer fired"])
    # The hypervisor and the demo cell print on the mini UART, the root cell's Linux
    # on the PL011: run wires both to the terminal.
    assert "Initializing Jailhouse hypervisor v0.12 on CPU" in transcript
    assert "The Jailhouse is opening." in transcript
    # Jailhouse takes CPU 1 from Linux through TF-A's PSCI CPU_OFF.
    assert "psci: CPU1 killed" in transcript
    assert 'Created Jailhouse cell "inmate-demo"' in transcript


def test_a_linux_cell_boots_the_nonroot_initramfs(artifacts: Path, cache: str) -> None:
    """The tutorial's last step: `jailhouse cell linux` with the card's kernel and
    rootfs.cpio, its console on the mini UART."""
    linux = (
        f"/bin/sh -c '{JAILHOUSE} cell linux /etc/jailhouse/rpi4-linux-demo.cell "
        "/boot/vmlinuz-* -d /etc/jailhouse/dts/inmate-rpi4.dtb "
        "-i /usr/libexec/jailhouse/demos/rootfs.cpio -c console=ttyS0,115200'"
    )
    ready = "jailhouse non-root cell: ready"
    transcript = run_card(
        artifacts, cache, commands_at_boot([GIC_DEMO[0], linux]),
        ["Machine model: Jailhouse cell on Raspberry Pi 4", ready], timeout=600, check=False,
    )  # fmt: skip
    # The cell is made, takes CPUs 2 and 3 from Linux, and its kernel starts.
    assert 'Created Jailhouse cell "rpi4-linux-demo"' in transcript, transcript[-4000:]
    assert "psci: CPU3 killed" in transcript
    assert "Machine model: Jailhouse cell on Raspberry Pi 4" in transcript
    if ready not in transcript:
        # The expected stop under QEMU 10.0.13: the cell's Linux stalls on its first
        # CPU (RCU stalls) once its console, the mini UART, is open; here it went on
        # after 150 s in one boot and after 1,140 s in another. A QEMU that fixes the
        # stall turns this green.
        assert "rcu: INFO: rcu_preempt" in transcript, transcript[-4000:]
        pytest.xfail("QEMU 10.0 raspi4b: the non-root cell's Linux stalls (RCU) on the mini UART")
