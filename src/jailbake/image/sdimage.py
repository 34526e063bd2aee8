"""Declarative SD card layouts: an MBR disk of FAT and ext4 partitions, made without root.

The layout is validated when the recipe loads; `sdtool.py` carries it out inside the
recipe's builder (a container with e2fsprogs, dosfstools, mtools, fdisk and
bmap-tools, or the host).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .rootfs import Content

MIB = 1 << 20
SIZE_RE = re.compile(r"\A(\d+)\s*([KMG]i?B?|)\Z", re.I)
FAT32_MIN = 64 * MIB  # below this mkfs.vfat leaves too few clusters for FAT32
FAT16_MIN = 9 * MIB  # mkfs.vfat -F 16 refuses smaller file systems
IMAGE_BUILDER = "image-tools"


class FsType(StrEnum):
    FAT32 = "fat32"
    FAT16 = "fat16"
    EXT4 = "ext4"

    @property
    def mbr_type(self) -> str:
        return {"fat32": "c", "fat16": "e", "ext4": "83"}[self.value]


class Compression(StrEnum):
    ZST = "zst"
    XZ = "xz"


@dataclass(frozen=True)
class Partition:
    label: str
    fs: FsType
    size: int  # bytes, a multiple of 1 MiB
    contents: tuple[Content, ...]
    bootable: bool = False
    volume_id: str = ""  # FAT: 8 hex digits
    uuid: str = ""  # ext4


@dataclass(frozen=True)
class ImageSpec:
    name: str  # file name of the disk image
    disk_id: str  # MBR disk identifier, 8 hex digits
    partitions: tuple[Partition, ...]
    bmap: bool = True
    compress: tuple[Compression, ...] = ()

    def output_names(self) -> list[str]:
        names = [self.name]
        if self.bmap:
            names.append(f"{self.name}.bmap")
        names += [f"{self.name}.{c.value}" for c in self.compress]
        return names

    def definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "disk_id": self.disk_id,
            "bmap": self.bmap,
            "compress": [c.value for c in self.compress],
            "partitions": [
                {
                    "label": p.label,
                    "fs": p.fs.value,
                    "size": p.size,
                    "bootable": p.bootable,
                    "volume_id": p.volume_id,
                    "uuid": p.uuid,
                    "contents": [c.definition() for c in p.contents],
                }
                for p in self.partitions
            ],
        }

    def layout(self, source_date_epoch: int) -> dict[str, Any]:
        """What sdtool.py reads: the definition plus the timestamp to use."""
        return {**self.definition(), "source_date_epoch": source_date_epoch}


def parse_size(text: str) -> int:
    """'64M', '1G', '512KiB', '1048576' -> bytes."""
    m = SIZE_RE.match(text.strip())
    if not m:
        raise ValueError(f"expected a size like 64M or 1G, got {text!r}")
    unit = m.group(2)[:1].upper()
    return int(m.group(1)) * {"": 1, "K": 1 << 10, "M": MIB, "G": 1 << 30}[unit]


def derived_hex(*parts: str) -> str:
    """A fixed 32-bit id derived from names, for ids the layout does not give."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]


def derived_uuid(*parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()[:16]
    return str(uuid.UUID(bytes=digest, version=4))
