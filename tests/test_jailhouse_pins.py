"""Every per-machine pin of the Jailhouse layers against jailhouse-images v0.12's own
recipes, read from its pinned source (opt-in: it comes from GitHub):

    JAILBAKE_JAILHOUSE_MIRROR=DIR scripts/test tests/test_jailhouse_pins.py

DIR holds jailhouse-images-<commit>.tar (`git archive --format=tar <commit>`), as an
offline mirror does (docs/jailhouse.md, "Without internet").
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, jailbake

COMMIT = "9e57d07c806a4e80ddd0913d894c1c54bb9223fe"  # recipes/jailhouse-images.yml


@pytest.fixture(scope="module")
def bitbake() -> dict[str, str]:
    """jailhouse-images' recipe files (*.bb, *.inc) by path."""
    mirror = os.environ.get("JAILBAKE_JAILHOUSE_MIRROR")
    archive = Path(mirror or "/nonexistent") / f"jailhouse-images-{COMMIT}.tar"
    if not archive.is_file():
        pytest.skip(f"opt-in: set JAILBAKE_JAILHOUSE_MIRROR to a directory with {archive.name}")
    files = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith((".bb", ".inc")):
                data = tar.extractfile(member)
                assert data is not None
                files[member.name.lstrip("./")] = io.TextIOWrapper(data).read()
    return files


def field(text: str, name: str) -> str:
    match = re.search(rf'^{re.escape(name)}\s*\??=\s*"([^"]*)"', text, re.M)
    assert match, name
    return match.group(1)


def listing(config: str, tmp_path: Path) -> dict[str, dict[str, Any]]:
    result = jailbake("list", config, "--json", "--cache-dir", str(tmp_path), cwd=ROOT, check=True)
    return {e["name"]: e for e in json.loads(result.stdout)}


@pytest.mark.parametrize(
    ("layer", "kernel"),
    [
        ("layers/rpi4-jailhouse.yml", "recipes-kernel/linux/linux-jailhouse-rpi_5.4.16.bb"),
        ("layers/qemu-arm64-jailhouse.yml", "recipes-kernel/linux/linux-jailhouse_5.4.17.bb"),
    ],
)
def test_each_layer_pins_what_jailhouse_images_pins_for_its_machine(
    bitbake: dict[str, str], layer: str, kernel: str, tmp_path: Path
) -> None:
    recipes = listing(layer, tmp_path)
    linux = recipes["linux"]
    (source,) = linux["sources"]
    srcrev = field(bitbake[kernel], "SRCREV")
    assert source["url"] == f"https://github.com/siemens/linux/archive/{srcrev}.tar.gz"
    assert source["sha256"] == field(bitbake[kernel], "SRC_URI[sha256sum]")
    assert linux["version"] == kernel.rsplit("_", 1)[1].removesuffix(".bb")

    jailhouse = bitbake["recipes-jailhouse/jailhouse/jailhouse_0.12.bb"]
    assert recipes["jailhouse"]["sources"][0]["commit"] == field(jailhouse, "SRCREV")
    if "rpi4" in layer:
        atf = bitbake["recipes-bsp/arm-trusted-firmware/arm-trusted-firmware_2.2.inc"]
        (atf_source,) = recipes["arm-trusted-firmware"]["sources"]
        assert atf_source["sha256"] == field(atf, "SRC_URI[atf.sha256sum]")
        firmware = bitbake["recipes-bsp/rpi-firmware/rpi-firmware_1.20190925.bb"]
        (fw_source,) = recipes["rpi-firmware"]["sources"]
        assert fw_source["sha256"] == field(firmware, "SRC_URI[sha256sum]")
    else:  # QEMU's board boots without them
        assert "arm-trusted-firmware" not in recipes and "rpi-firmware" not in recipes
