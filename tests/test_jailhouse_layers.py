"""The Raspberry Pi 4 and QEMU arm64 Jailhouse layers: kas files, exact pins, overrides.

Their kernel, firmware and Jailhouse sources live on GitHub, which these
machines cannot reach, so here the layers are loaded, listed and overridden;
building them needs the sources in a mirror (see docs/jailhouse.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import ROOT, copy_checkout, jailbake
from jailbake.bake.plan import Planner
from jailbake.cache.store import Store
from jailbake.executors.host import HostExecutor
from jailbake.model.graph import build_graph
from jailbake.model.layer import load_layers

PINS = {
    "jailhouse-images": {
        "git": "https://github.com/siemens/jailhouse-images",
        "commit": "9e57d07c806a4e80ddd0913d894c1c54bb9223fe",
    },
    "linux": {
        "url": "https://github.com/siemens/linux/archive/"
        "e569bd2d6d2d7b958973bb8c6e9db9cfc05c790b.tar.gz",
        "sha256": "53de4d966d6072302fdc87ddce3ec94a22132638bcb8bf2c0944e0159d8db611",
    },
    "arm-trusted-firmware": {
        "url": "https://github.com/ARM-software/arm-trusted-firmware/archive/v2.2.tar.gz",
        "sha256": "07e3c058ae2d95c7d516a46fc93565b797e912c3271ddbf29df523b1ab1ee911",
    },
    "jailhouse": {
        "git": "https://github.com/siemens/jailhouse",
        "commit": "92db71f257fabd3c08fa4b99498fa61a41ea831d",
    },
    "rpi-firmware": {
        "url": "https://github.com/raspberrypi/firmware/archive/1.20190925.tar.gz",
        "sha256": "b3c5c9d3cda1f77caf317b8d1f0496cd7ca791ddaeec8207a5a1940111483509",
    },
}
# What both machines' images are made of besides kernel, firmware and hypervisor.
IMAGE_RECIPES = {"busybox", "jailhouse-nonroot-initramfs", "debian-rootfs", "jailhouse-rootfs"}
# jailhouse-images v0.12 builds qemu-arm64 with linux-jailhouse 5.4.17, not the RPi tree.
QEMU_LINUX = {
    "url": "https://github.com/siemens/linux/archive/6d9ce684e169f54e4cdf19f4e785600cac603fd8.tar.gz",
    "sha256": "55cbeb4ba845f191006c4cd1611c13fbbc7b7248efeee374165d76306204d648",
}
VERSIONS = {
    "jailhouse-images": "0.12",
    "linux": "5.4.16",
    "arm-trusted-firmware": "2.2",
    "jailhouse": "0.12",
    "rpi-firmware": "1.20190925",
}


def listing(config: str, tmp_path: Path, cwd: Path = ROOT) -> dict[str, dict[str, Any]]:
    result = jailbake(
        "list", config, "--json", "--cache-dir", str(tmp_path / "cache"), cwd=cwd, check=True
    )
    return {e["name"]: e for e in json.loads(result.stdout)}


def test_rpi4_layer_lists_every_pin(tmp_path: Path) -> None:
    recipes = listing("layers/rpi4-jailhouse.yml", tmp_path)
    assert set(recipes) == {
        *PINS,
        *IMAGE_RECIPES,
        "rpi4-boot",
        "jailhouse-rpi4",
    }
    for name, pin in PINS.items():
        assert recipes[name]["version"] == VERSIONS[name]
        assert recipes[name]["sources"] == [pin], name
    assert recipes["rpi4-boot"]["depends"] == [
        "arm-trusted-firmware",
        "jailhouse-images",
        "linux",
        "rpi-firmware",
    ]


STANDIN = "layers/rpi4-jailhouse.yml:examples/rpi4-standin/rpi4-standin.yml"


def test_the_rpi4_stand_ins_replace_only_what_cannot_be_downloaded(tmp_path: Path) -> None:
    """examples/rpi4-standin swaps the kernel and firmware for Debian's, and nothing
    else: Jailhouse, ATF, busybox and the root file system keep their pins."""
    shipped = listing("layers/rpi4-jailhouse.yml", tmp_path)
    standin = listing(STANDIN, tmp_path)
    assert set(standin) == set(shipped)
    changed = {name for name in shipped if standin[name] != shipped[name]}
    # rpi4-boot and the card are the same recipes; only their inputs' keys differ.
    assert {n for n in changed if standin[n]["sources"] != shipped[n]["sources"]} == {
        "linux",
        "rpi-firmware",
    }
    for source in standin["linux"]["sources"] + standin["rpi-firmware"]["sources"]:
        assert source.get("file") or source["url"].startswith("https://deb.debian.org/debian/pool/")
    assert standin["linux"]["file"].endswith("examples/rpi4-standin/recipes/linux.yml")


def test_qemu_layer_shares_the_stack(tmp_path: Path) -> None:
    recipes = listing("layers/qemu-arm64-jailhouse.yml", tmp_path)
    assert set(recipes) == {
        *IMAGE_RECIPES,
        "jailhouse",
        "jailhouse-images",
        "linux",
        "jailhouse-qemu-arm64",
    }
    assert recipes["jailhouse-nonroot-initramfs"]["depends"] == ["busybox", "jailhouse"]
    assert recipes["linux"]["sources"] == [QEMU_LINUX]
    assert recipes["linux"]["version"] == "5.4.17"
    for name in ("jailhouse", "jailhouse-images"):
        assert recipes[name]["sources"] == [PINS[name]]


def test_both_kernels_are_built_the_same_way(tmp_path: Path) -> None:
    """The QEMU kernel recipe differs from the RPi one in its pin and words only."""
    rpi4 = (ROOT / "recipes/linux.yml").read_text().splitlines()
    qemu = (ROOT / "recipes/qemu-arm64/linux.yml").read_text().splitlines()
    qemu = [line for line in qemu if not line.startswith("#")]
    differ = [(a, b) for a, b in zip(rpi4, qemu, strict=True) if a != b]
    assert [a.split(":")[0].strip() for a, _ in differ] == [
        "version", "summary", "- url", "sha256", "filename"
    ]  # fmt: skip


def test_debian_packages_are_pinned_one_by_one(tmp_path: Path) -> None:
    """The root file system installs exactly the locked .debs, each from Debian's pool
    with its sha256, so a rebuild gets the same packages."""
    rootfs = listing("layers/rpi4-jailhouse.yml", tmp_path)["debian-rootfs"]
    sources = rootfs["sources"]
    names = {s["url"].rsplit("/", 1)[-1].split("_", 1)[0] for s in sources}
    assert {"python3", "systemd-sysv", "kmod", "udev", "base-files", "dpkg"} <= names
    assert len(names) == len(sources), "one version of each package"
    for source in sources:
        assert source["url"].startswith("https://deb.debian.org/debian/pool/main/")
        assert source["url"].endswith((".deb",)) and len(source["sha256"]) == 64


def linux_key(config: str, tmp_path: Path) -> str:
    graph = build_graph(load_layers([ROOT / config], environ={}))
    store = Store(tmp_path / "cache")
    plan = Planner(graph, store, HostExecutor())
    # The key of linux given some jailhouse-images output: only the layer differs.
    return plan.key_info(graph.recipes["linux"], {"jailhouse-images": "0" * 64}).key


def test_each_machine_builds_its_own_kernel(tmp_path: Path) -> None:
    rpi4 = load_layers([ROOT / "layers/rpi4-jailhouse.yml"], environ={}).variables()
    qemu = load_layers([ROOT / "layers/qemu-arm64-jailhouse.yml"], environ={}).variables()
    assert rpi4["KERNEL_DEFCONFIG"] == "rpi4_defconfig_5.4"
    assert qemu["KERNEL_DEFCONFIG"] == "arm64_defconfig_5.4"
    assert qemu["JAILBAKE_QEMU_SMP"] == "16"
    assert linux_key("layers/rpi4-jailhouse.yml", tmp_path) != linux_key(
        "layers/qemu-arm64-jailhouse.yml", tmp_path
    )


def test_a_user_layer_overrides_the_kernel_source(tmp_path: Path) -> None:
    checkout = copy_checkout(tmp_path / "jailbake")
    mine = checkout / "my-layer"
    mine.mkdir()
    (mine / "linux.yml").write_text(
        (checkout / "recipes" / "linux.yml")
        .read_text()
        .replace('version: "5.4.16"', 'version: "5.4.16-local"')
        .replace(
            "  - url: https://github.com/siemens/linux/archive/"
            "e569bd2d6d2d7b958973bb8c6e9db9cfc05c790b.tar.gz\n"
            "    sha256: 53de4d966d6072302fdc87ddce3ec94a22132638bcb8bf2c0944e0159d8db611\n"
            "    filename: linux-e569bd2d6d2d7b958973bb8c6e9db9cfc05c790b.tar.gz\n",
            "  - git: file:///home/me/src/linux\n"
            "    commit: 0123456789abcdef0123456789abcdef01234567\n",
        )
    )
    (checkout / "my.yml").write_text(
        "header:\n  version: 14\nrepos:\n  mine:\n    path: my-layer\n    layers:\n      .:\n"
    )
    recipes = listing("layers/rpi4-jailhouse.yml:my.yml", tmp_path, cwd=checkout)
    assert recipes["linux"]["version"] == "5.4.16-local"
    assert recipes["linux"]["sources"] == [
        {"git": "file:///home/me/src/linux", "commit": "0123456789abcdef0123456789abcdef01234567"}
    ]
    assert recipes["linux"]["file"] == "my-layer/linux.yml"
    assert recipes["arm-trusted-firmware"]["sources"] == [PINS["arm-trusted-firmware"]]


def test_offline_build_names_the_sources_to_mirror(tmp_path: Path) -> None:
    result = jailbake(
        "build",
        "layers/rpi4-jailhouse.yml",
        "--offline",
        "--executor",
        "host",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--artifacts-dir",
        str(tmp_path / "art"),
        cwd=ROOT,
    )
    assert result.rc == 2
    line = result.stderr.strip().splitlines()[-1]
    debs = len(listing("layers/rpi4-jailhouse.yml", tmp_path)["debian-rootfs"]["sources"])
    assert f"{6 + debs} source(s) are neither cached nor in a mirror" in line
    for pin in PINS.values():
        assert (pin.get("sha256") or pin["commit"]) in line


def test_the_default_config_is_the_rpi4_card(tmp_path: Path) -> None:
    result = jailbake("list", "--json", "--cache-dir", str(tmp_path / "cache"), cwd=ROOT)
    assert result.rc == 0, result.stderr
    names = [e["name"] for e in json.loads(result.stdout)]
    assert "jailhouse-rpi4" in names and "jailhouse-qemu-arm64" not in names
