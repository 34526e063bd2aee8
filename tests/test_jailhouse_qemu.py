"""The whole qemu-arm64 Jailhouse image, built and booted: `jailhouse enable` with the
QEMU root cell, then gic-demo in a cell. Opt-in: it builds a Linux 5.4 kernel
(about 11 minutes on 2 cores) from sources this machine cannot download.

    JAILBAKE_JAILHOUSE_CONFIG=layers/qemu-arm64-jailhouse.yml[:local/override.yml]
    JAILBAKE_JAILHOUSE_MIRROR=DIR      (optional: where the pinned sources are)
    JAILBAKE_JAILHOUSE_CACHE=DIR       (optional: a cache to reuse between runs)
    scripts/test tests/test_jailhouse_qemu.py

README ("Trying it under QEMU") says how to fill the mirror or override the kernel.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import ROOT, jailbake

CONFIG = os.environ.get("JAILBAKE_JAILHOUSE_CONFIG", "")
pytestmark = [
    pytest.mark.usefixtures("docker_engine"),
    pytest.mark.slow,
    pytest.mark.skipif(not CONFIG, reason="opt-in: set JAILBAKE_JAILHOUSE_CONFIG"),
]
PROMPT = "root@jailhouse:~#"
COMMANDS = [
    "jailhouse enable /etc/jailhouse/qemu-arm64.cell",
    "jailhouse cell create /etc/jailhouse/qemu-arm64-inmate-demo.cell",
    "jailhouse cell load inmate-demo /usr/libexec/jailhouse/demos/gic-demo.bin",
    "jailhouse cell start inmate-demo",
]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    art = tmp_path_factory.mktemp("artifacts")
    cache = os.environ.get("JAILBAKE_JAILHOUSE_CACHE") or str(tmp_path_factory.mktemp("cache"))
    mirror = os.environ.get("JAILBAKE_JAILHOUSE_MIRROR")
    result = jailbake(
        "build",
        CONFIG,
        *(["--mirror", mirror] if mirror else []),
        *("--cache-dir", cache, "--artifacts-dir", str(art), "-j", "2", "--json"),
        cwd=ROOT,
        timeout=7200,
    )
    assert result.rc == 0, result.stderr[-3000:]
    published = {a["path"] for a in json.loads(result.stdout.splitlines()[-1])["artifacts"]}
    assert {"Image", "jailhouse-qemu-arm64.img", "rootfs.cpio.gz"} <= published
    return art


def run_on_console(artifacts: Path, expect: str, send: list[str]) -> str:
    """Boot the built image with `jailbake run`, typing send; the console transcript."""
    result = jailbake(
        "run",
        CONFIG,
        "--artifacts-dir",
        str(artifacts),
        "--expect",
        expect,
        *(arg for line in send for arg in ("--send", line)),
        "--timeout",
        "900",
        cwd=ROOT,
        timeout=1000,
    )
    assert result.rc == 0, result.stdout[-4000:] + result.stderr
    return result.stdout


def test_jailhouse_enables_and_runs_gic_demo(artifacts: Path) -> None:
    send = ["login:=>root", "Password:=>root"]
    send += [f"{PROMPT}=>{command}" for command in COMMANDS]
    transcript = run_on_console(artifacts, "Timer fired", send)
    assert "The Jailhouse is opening." in transcript
    assert 'Created cell "inmate-demo"' in transcript


def test_a_linux_cell_boots_the_nonroot_initramfs(artifacts: Path) -> None:
    """The tutorial's last step: `jailhouse cell linux` with the kernel and rootfs.cpio."""
    linux = (
        "jailhouse cell linux /etc/jailhouse/qemu-arm64-linux-demo.cell /boot/vmlinuz-* "
        "-d /etc/jailhouse/dts/inmate-qemu-arm64.dtb "
        "-i /usr/libexec/jailhouse/demos/rootfs.cpio -c console=ttyAMA0"
    )
    send = ["login:=>root", "Password:=>root", f"{PROMPT}=>{COMMANDS[0]}", f"{PROMPT}=>{linux}"]
    run_on_console(artifacts, "jailhouse non-root cell: ready (aarch64, 2 CPU)", send)
