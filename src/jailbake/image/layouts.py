"""Parsing the declarative parts of recipes: root file system trees and disk layouts."""

from __future__ import annotations

import re
from typing import Any

from ..core.fields import Fields, kind_of
from .devtable import parse_device_table, tree_path
from .rootfs import Content, ExtraFile, RootfsSpec, Symlink
from .sdimage import (
    FAT16_MIN,
    FAT32_MIN,
    MIB,
    Compression,
    FsType,
    ImageSpec,
    Partition,
    derived_hex,
    derived_uuid,
    parse_size,
)


def parse_rootfs(ctx: Fields, raw: Any) -> RootfsSpec:
    data = ctx.mapping(raw, "rootfs")
    ctx.only(data, {"contents", "directories", "files", "symlinks", "device_table"}, "rootfs")
    contents = parse_contents(ctx, data.get("contents"), "rootfs.contents")
    for i, content in enumerate(contents):
        if content.archive:
            raise ctx.error(
                f"rootfs.contents[{i}].archive",
                "archives are unpacked into image partitions only; give a directory as path",
            )
    directories = tuple(
        tree_path(
            ctx.string(d, f"rootfs.directories[{i}]"),
            ctx.where("rootfs"),
            f"rootfs.directories[{i}]",
        )
        for i, d in enumerate(ctx.seq(data.get("directories") or [], "rootfs.directories"))
    )
    files = []
    for i, item in enumerate(ctx.seq(data.get("files") or [], "rootfs.files")):
        field = f"rootfs.files[{i}]"
        item = ctx.mapping(item, field)
        ctx.only(item, {"path", "source", "mode"}, field)
        source, rel = ctx.layer_file(item.get("source"), f"{field}.source")
        if not source.is_file():
            raise ctx.error(f"{field}.source", f"expected a file, {rel!r} is not one")
        raw_mode = item.get("mode", "0644")
        if not isinstance(raw_mode, str):
            # YAML reads 0644 as a number: only a quoted mode means what it looks like.
            raise ctx.error(
                f"{field}.mode", f'expected a quoted octal mode like "0755", got {raw_mode!r}'
            )
        mode_text = raw_mode
        try:
            mode = int(mode_text, 8)
        except ValueError:
            raise ctx.error(f"{field}.mode", f"expected octal digits, got {mode_text!r}") from None
        files.append(
            ExtraFile(
                path=tree_path(
                    ctx.string(item.get("path"), f"{field}.path"), ctx.where(field), f"{field}.path"
                ),
                source=source,
                rel=rel,
                mode=mode & 0o7777,
            )
        )
    symlinks = []
    for i, item in enumerate(ctx.seq(data.get("symlinks") or [], "rootfs.symlinks")):
        field = f"rootfs.symlinks[{i}]"
        item = ctx.mapping(item, field)
        ctx.only(item, {"path", "target"}, field)
        symlinks.append(
            Symlink(
                path=tree_path(
                    ctx.string(item.get("path"), f"{field}.path"), ctx.where(field), f"{field}.path"
                ),
                target=ctx.string(item.get("target"), f"{field}.target"),
            )
        )
    devices: list[Any] = []
    table_rel = ""
    if data.get("device_table"):
        table, table_rel = ctx.layer_file(data["device_table"], "rootfs.device_table")
        devices = parse_device_table(table)
    return RootfsSpec(
        tuple(contents), directories, tuple(files), tuple(symlinks), tuple(devices), table_rel
    )


def parse_contents(ctx: Fields, raw: Any, field: str) -> tuple[Content, ...]:
    contents = []
    for i, item in enumerate(ctx.seq(raw or [], field)):
        where = f"{field}[{i}]"
        item = item if isinstance(item, dict) else {"recipe": item}
        ctx.only(item, {"recipe", "path", "archive", "dest"}, where)
        if "path" in item and "archive" in item:
            raise ctx.error(f"{where}.archive", "expected either path or archive, not both")
        dest = ctx.string(item.get("dest", "/"), f"{where}.dest")
        archive = "archive" in item
        contents.append(
            Content(
                recipe=ctx.string(item.get("recipe"), f"{where}.recipe"),
                path=ctx.relpath(
                    item.get("archive" if archive else "path", ""),
                    f"{where}.{'archive' if archive else 'path'}",
                    allow_empty=not archive,
                ),
                dest="" if dest == "/" else tree_path(dest, ctx.where(where), f"{where}.dest"),
                archive=archive,
            )
        )
    return tuple(contents)


def _hex_id(ctx: Fields, raw: Any, field: str, default: str) -> str:
    if raw is None:
        return default
    text = ctx.string(raw, field).lower().removeprefix("0x")
    if not re.fullmatch(r"[0-9a-f]{8}", text):
        raise ctx.error(field, f"expected 8 hex digits, got {raw!r}")
    return text


def parse_image(ctx: Fields, raw: Any, recipe: str) -> ImageSpec:
    data = ctx.mapping(raw, "image")
    ctx.only(data, {"name", "disk_id", "partitions", "bmap", "compress"}, "image")
    name = ctx.string(data.get("name", f"{recipe}.img"), "image.name")
    if "/" in name or name in (".", ".."):
        raise ctx.error("image.name", f"expected a plain file name, got {name!r}")
    bmap = data.get("bmap", True)
    if not isinstance(bmap, bool):
        raise ctx.error("image.bmap", f"expected true or false, got {kind_of(bmap)}")
    compress: list[Compression] = []
    for i, c in enumerate(ctx.seq(data.get("compress") or [], "image.compress")):
        try:
            kind = Compression(c)
        except ValueError:
            raise ctx.error(f"image.compress[{i}]", f"expected zst or xz, got {c!r}") from None
        if kind in compress:
            raise ctx.error(f"image.compress[{i}]", f"{c!r} is listed twice")
        compress.append(kind)
    raw_parts = ctx.seq(data.get("partitions"), "image.partitions")
    if not 1 <= len(raw_parts) <= 4:
        raise ctx.error("image.partitions", "expected 1 to 4 partitions (MBR primaries)")
    parts = []
    for i, item in enumerate(raw_parts):
        field = f"image.partitions[{i}]"
        p = ctx.mapping(item, field)
        ctx.only(p, {"label", "fs", "size", "contents", "bootable", "volume_id", "uuid"}, field)
        label = ctx.string(p.get("label"), f"{field}.label")
        try:
            fs = FsType(str(p.get("fs")))
        except ValueError:
            raise ctx.error(
                f"{field}.fs", f"expected fat32, fat16 or ext4, got {p.get('fs')!r}"
            ) from None
        limit = 16 if fs is FsType.EXT4 else 11
        if len(label) > limit or not re.fullmatch(r"[A-Za-z0-9_-]+", label):
            raise ctx.error(f"{field}.label", f"expected up to {limit} letters, digits, _ or -")
        try:
            size = parse_size(ctx.string(p.get("size"), f"{field}.size"))
        except ValueError as exc:
            raise ctx.error(f"{field}.size", str(exc)) from None
        if size <= 0 or size % MIB:
            raise ctx.error(f"{field}.size", "expected a whole number of MiB")
        if fs is FsType.FAT32 and size < FAT32_MIN:
            raise ctx.error(f"{field}.size", "FAT32 needs at least 64M; use fat16 below that")
        if fs is FsType.FAT16 and size < FAT16_MIN:
            raise ctx.error(f"{field}.size", "FAT16 needs at least 9M")
        bootable = p.get("bootable", False)
        if not isinstance(bootable, bool):
            raise ctx.error(f"{field}.bootable", f"expected true or false, got {kind_of(bootable)}")
        if fs is FsType.EXT4 and "volume_id" in p:
            raise ctx.error(f"{field}.volume_id", "only FAT partitions have a volume id")
        if fs is not FsType.EXT4 and "uuid" in p:
            raise ctx.error(f"{field}.uuid", "only ext4 partitions have a UUID")
        part_uuid = ""
        if fs is FsType.EXT4:
            part_uuid = ctx.string(p.get("uuid", derived_uuid(recipe, label)), f"{field}.uuid")
            if not re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", part_uuid):
                raise ctx.error(f"{field}.uuid", f"expected a lower-case UUID, got {part_uuid!r}")
        volume_id = ""
        if fs is not FsType.EXT4:
            volume_id = _hex_id(
                ctx, p.get("volume_id"), f"{field}.volume_id", derived_hex(recipe, label)
            )
        parts.append(
            Partition(
                label=label,
                fs=fs,
                size=size,
                contents=parse_contents(ctx, p.get("contents"), f"{field}.contents"),
                bootable=bootable,
                volume_id=volume_id,
                uuid=part_uuid,
            )
        )
    return ImageSpec(
        name=name,
        disk_id=_hex_id(ctx, data.get("disk_id"), "image.disk_id", derived_hex(recipe)),
        partitions=tuple(parts),
        bmap=bmap,
        compress=tuple(compress),
    )
