"""Recipe files: YAML validated once, at load, into frozen dataclasses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from .errors import RecipeError
from .image.devtable import parse_device_table, tree_path
from .image.rootfs import Content, ExtraFile, RootfsSpec, Symlink
from .image.sdimage import (
    FAT16_MIN,
    FAT32_MIN,
    IMAGE_BUILDER,
    MIB,
    Compression,
    FsType,
    ImageSpec,
    Partition,
    derived_hex,
    derived_uuid,
    parse_size,
)

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.+_-]*$")
VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HOST_BUILDER = "host"
IMAGE_SCRIPT = 'python3 "$WORKDIR/sdtool.py" "$WORKDIR/layout.json"'
LAYOUT_FILE = "layout.json"

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


class SourceKind(StrEnum):
    URL = "url"
    GIT = "git"
    FILE = "file"


@dataclass(frozen=True)
class Source:
    """One pinned input: a download, a git commit, or a file in the layer."""

    kind: SourceKind
    location: str  # URL, git URL, or the layer-relative path of a file source
    sha256: str = ""
    commit: str = ""
    path: Path | None = None  # absolute path of a file source
    dest: str = ""
    strip: int = 0
    unpack: bool = True
    filename: str = ""

    def pin(self) -> dict[str, Any]:
        """What identifies this source's content, for keys and listings."""
        if self.kind is SourceKind.URL:
            pin: dict[str, Any] = {"url": self.location, "sha256": self.sha256}
            pin.update(unpack=self.unpack, strip=self.strip, dest=self.dest, filename=self.filename)
            return pin
        if self.kind is SourceKind.GIT:
            return {"git": self.location, "commit": self.commit, "dest": self.dest}
        return {"file": self.location, "dest": self.dest}

    @property
    def is_archive(self) -> bool:
        return self.unpack and self.filename.endswith(ARCHIVE_SUFFIXES)


@dataclass(frozen=True)
class Patch:
    path: Path
    rel: str
    strip: int = 1
    dest: str = ""


@dataclass(frozen=True)
class Output:
    path: str
    publish: str | None = None  # the artifact's name, when published


@dataclass(frozen=True)
class Recipe:
    """A component: pinned sources, a build script, declared outputs."""

    name: str
    version: str
    summary: str
    license: str
    sources: tuple[Source, ...]
    patches: tuple[Patch, ...]
    depends: tuple[str, ...]
    builder: str
    environment: tuple[tuple[str, str], ...]
    variables: tuple[str, ...]
    script: str
    outputs: tuple[Output, ...]
    file: Path
    layer_dir: Path
    lines: tuple[tuple[str, int], ...] = ()
    rootfs: RootfsSpec | None = None
    image: ImageSpec | None = None
    run_as_root: bool = False

    def where(self, field: str) -> str:
        """'file:line' of a top-level field, for error messages."""
        return _where(self.file, dict(self.lines), field)

    def definition(self) -> dict[str, Any]:
        """The normalized content that decides what gets built (no paths, no prose)."""
        return {
            "name": self.name,
            "version": self.version,
            "sources": [s.pin() for s in self.sources],
            "patches": [{"path": p.rel, "strip": p.strip, "dest": p.dest} for p in self.patches],
            "depends": sorted(self.depends),
            "builder": self.builder,
            "environment": dict(self.environment),
            "variables": sorted(self.variables),
            "script": self.script,
            "outputs": [{"path": o.path, "publish": o.publish} for o in self.outputs],
            "rootfs": self.rootfs.definition() if self.rootfs else None,
            "image": self.image.definition() if self.image else None,
            "run_as": "root" if self.run_as_root else "builder",
        }


_KEYS = {
    "name": True,
    "version": True,
    "summary": False,
    "license": False,
    "sources": False,
    "patches": False,
    "depends": False,
    "builder": False,
    "run_as": False,
    "environment": False,
    "variables": False,
    "script": False,
    "rootfs": False,
    "image": False,
    "outputs": False,
}
_URL_KEYS = {"url", "sha256", "dest", "strip", "unpack", "filename"}
_GIT_KEYS = {"git", "commit", "dest"}
_FILE_KEYS = {"file", "dest"}


class _Ctx:
    """Where the recipe being validated lives, to name it in errors."""

    def __init__(self, file: Path, layer_dir: Path, lines: dict[str, int]) -> None:
        self.file = file
        self.layer_dir = layer_dir
        self.lines = lines

    def where(self, field: str) -> str:
        return _where(self.file, self.lines, field)

    def error(self, field: str, message: str) -> RecipeError:
        return RecipeError(self.where(field), field, message)

    def string(self, value: Any, field: str, *, allow_empty: bool = False) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(field, f"expected a string, got {_kind(value)}")
        text = str(value)
        if not text and not allow_empty:
            raise self.error(field, "expected a non-empty string")
        return text

    def relpath(self, value: Any, field: str, *, allow_empty: bool = False) -> str:
        text = self.string(value, field, allow_empty=allow_empty)
        if not text:
            return ""
        pure = PurePosixPath(text)
        if pure.is_absolute() or ".." in pure.parts:
            raise self.error(field, f"expected a relative path inside the tree, got {text!r}")
        return str(pure)

    def layer_file(self, value: Any, field: str) -> tuple[Path, str]:
        """A path relative to the recipe's file that must stay inside its layer."""
        text = self.string(value, field)
        path = (self.file.parent / text).resolve()
        layer = self.layer_dir.resolve()
        if PurePosixPath(text).is_absolute() or not path.is_relative_to(layer):
            raise self.error(field, f"path {text!r} escapes the layer {self.layer_dir}")
        if not path.exists():
            raise self.error(field, f"file {text!r} does not exist")
        return path, path.relative_to(layer).as_posix()

    def mapping(self, value: Any, field: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.error(field, f"expected a mapping, got {_kind(value)}")
        return value

    def seq(self, value: Any, field: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.error(field, f"expected a list, got {_kind(value)}")
        return value

    def only(self, data: Mapping[str, Any], allowed: set[str], field: str) -> None:
        for key in data:
            if key not in allowed:
                expected = ", ".join(sorted(allowed))
                where = f"{field}.{key}" if field else str(key)
                raise self.error(where, f"unknown key; expected one of: {expected}")


def _where(file: Path, lines: Mapping[str, int], field: str) -> str:
    line = lines.get(field.split(".")[0].split("[")[0])
    return f"{file}:{line}" if line else str(file)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _top_lines(text: str) -> dict[str, int]:
    try:
        node = yaml.compose(
            text, Loader=yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
        )
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): k.start_mark.line + 1 for k, _ in node.value}


def load_recipe(file: Path, layer_dir: Path) -> Recipe:
    """Load and validate one recipe file that lives in layer_dir."""
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(file, "", f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    loader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
    try:
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else str(file)
        raise RecipeError(where, "", f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    ctx = _Ctx(file, layer_dir, _top_lines(text))
    if not isinstance(data, dict):
        raise ctx.error("", f"expected a mapping of recipe fields, got {_kind(data)}")
    for key, required in _KEYS.items():
        if required and key not in data:
            raise ctx.error(key, "missing; every recipe needs it")
    ctx.only(data, set(_KEYS), "")
    kinds = [k for k in ("script", "rootfs", "image") if k in data]
    if len(kinds) != 1:
        raise ctx.error(
            kinds[1] if len(kinds) > 1 else "script",
            "expected exactly one of a build 'script', a declarative 'rootfs' or a disk 'image'",
        )
    if "rootfs" in data and "builder" in data:
        raise ctx.error(
            "builder", "a rootfs recipe is written by jailbake itself; remove 'builder'"
        )
    if "image" in data and "outputs" in data:
        raise ctx.error(
            "outputs",
            "an image recipe's outputs follow from image.name, image.bmap and image.compress",
        )
    if "image" not in data and "outputs" not in data:
        raise ctx.error("outputs", "missing; every recipe needs it")
    return _build(ctx, data)


def _build(ctx: _Ctx, data: Mapping[str, Any]) -> Recipe:
    name = ctx.string(data["name"], "name")
    if not NAME_RE.match(name):
        raise ctx.error("name", f"expected lower-case letters, digits and .+_-, got {name!r}")
    builder = ctx.string(data.get("builder", HOST_BUILDER), "builder")
    if not NAME_RE.match(builder):
        raise ctx.error(
            "builder", f"expected 'host' or a directory name under docker/, got {builder!r}"
        )
    environment = ctx.mapping(data.get("environment") or {}, "environment")
    env: list[tuple[str, str]] = []
    for key, value in sorted(environment.items()):
        if not VAR_RE.match(str(key)):
            raise ctx.error(f"environment.{key}", "expected a variable name")
        env.append((str(key), ctx.string(value, f"environment.{key}", allow_empty=True)))
    variables = tuple(
        ctx.string(v, f"variables[{i}]")
        for i, v in enumerate(ctx.seq(data.get("variables") or [], "variables"))
    )
    for i, var in enumerate(variables):
        if not VAR_RE.match(var):
            raise ctx.error(f"variables[{i}]", f"expected a variable name, got {var!r}")
    depends = tuple(
        ctx.string(d, f"depends[{i}]")
        for i, d in enumerate(ctx.seq(data.get("depends") or [], "depends"))
    )
    if len(set(depends)) != len(depends):
        raise ctx.error("depends", "expected each dependency once")
    rootfs = _rootfs(ctx, data["rootfs"]) if "rootfs" in data else None
    image = _image(ctx, data["image"], name) if "image" in data else None
    contents = rootfs.contents if rootfs else ()
    if image:
        contents = tuple(c for p in image.partitions for c in p.contents)
        builder = ctx.string(data.get("builder", IMAGE_BUILDER), "builder")
    depends += tuple(sorted({c.recipe for c in contents} - set(depends)))
    outputs = (
        tuple(Output(path=n, publish=n) for n in image.output_names())
        if image
        else _outputs(ctx, data["outputs"])
    )
    if rootfs and (len(outputs) != 1 or not outputs[0].path.endswith((".cpio", ".cpio.gz"))):
        raise ctx.error(
            "outputs",
            "a rootfs recipe declares one output, its archive (name.cpio or name.cpio.gz)",
        )
    return Recipe(
        name=name,
        version=ctx.string(data["version"], "version"),
        summary=ctx.string(data.get("summary", ""), "summary", allow_empty=True),
        license=ctx.string(data.get("license", ""), "license", allow_empty=True),
        sources=tuple(
            _source(ctx, s, f"sources[{i}]")
            for i, s in enumerate(ctx.seq(data.get("sources") or [], "sources"))
        ),
        patches=tuple(
            _patch(ctx, p, f"patches[{i}]")
            for i, p in enumerate(ctx.seq(data.get("patches") or [], "patches"))
        ),
        depends=depends,
        builder=builder,
        environment=tuple(env),
        variables=variables,
        script=ctx.string(data["script"], "script")
        if "script" in data
        else (IMAGE_SCRIPT if image else ""),
        outputs=outputs,
        file=ctx.file,
        layer_dir=ctx.layer_dir,
        lines=tuple(sorted(ctx.lines.items())),
        rootfs=rootfs,
        image=image,
        run_as_root=_run_as(ctx, data.get("run_as", "builder")),
    )


def _source(ctx: _Ctx, raw: Any, field: str) -> Source:
    data = ctx.mapping(raw, field)
    dest = ctx.relpath(data.get("dest", ""), f"{field}.dest", allow_empty=True)
    if "url" in data:
        ctx.only(data, _URL_KEYS, field)
        url = ctx.string(data["url"], f"{field}.url")
        if "sha256" not in data:
            raise ctx.error(f"{field}.sha256", "missing; a url source is pinned by its sha256")
        sha = ctx.string(data["sha256"], f"{field}.sha256")
        if not SHA256_RE.match(sha):
            raise ctx.error(f"{field}.sha256", f"expected 64 lower-case hex digits, got {sha!r}")
        filename = ctx.string(
            data.get("filename") or url.rstrip("/").rsplit("/", 1)[-1], f"{field}.filename"
        )
        if "/" in filename or filename in (".", ".."):
            raise ctx.error(f"{field}.filename", f"expected a plain file name, got {filename!r}")
        unpack = data.get("unpack", True)
        if not isinstance(unpack, bool):
            raise ctx.error(f"{field}.unpack", f"expected true or false, got {_kind(unpack)}")
        strip = data.get("strip", 1 if filename.endswith(ARCHIVE_SUFFIXES) else 0)
        if isinstance(strip, bool) or not isinstance(strip, int) or strip < 0:
            raise ctx.error(f"{field}.strip", f"expected a number >= 0, got {strip!r}")
        return Source(
            SourceKind.URL,
            url,
            sha256=sha,
            dest=dest,
            strip=strip,
            unpack=unpack,
            filename=filename,
        )
    if "git" in data:
        ctx.only(data, _GIT_KEYS, field)
        url = ctx.string(data["git"], f"{field}.git")
        if "commit" not in data:
            raise ctx.error(f"{field}.commit", "missing; a git source is pinned by a full commit")
        commit = ctx.string(data["commit"], f"{field}.commit")
        if not COMMIT_RE.match(commit):
            raise ctx.error(
                f"{field}.commit", f"expected a full 40-hex-digit commit id, got {commit!r}"
            )
        return Source(SourceKind.GIT, url, commit=commit, dest=dest)
    if "file" in data:
        ctx.only(data, _FILE_KEYS, field)
        path, rel = ctx.layer_file(data["file"], f"{field}.file")
        return Source(SourceKind.FILE, rel, path=path, dest=dest)
    raise ctx.error(field, "expected one of 'url' (with sha256), 'git' (with commit) or 'file'")


def _patch(ctx: _Ctx, raw: Any, field: str) -> Patch:
    if not isinstance(raw, dict):
        raw = {"path": raw}
    ctx.only(raw, {"path", "strip", "dest"}, field)
    if "path" not in raw:
        raise ctx.error(f"{field}.path", "missing")
    path, rel = ctx.layer_file(raw["path"], f"{field}.path")
    strip = raw.get("strip", 1)
    if isinstance(strip, bool) or not isinstance(strip, int) or strip < 0:
        raise ctx.error(f"{field}.strip", f"expected a number >= 0, got {strip!r}")
    dest = ctx.relpath(raw.get("dest", ""), f"{field}.dest", allow_empty=True)
    return Patch(path=path, rel=rel, strip=strip, dest=dest)


def _outputs(ctx: _Ctx, raw: Any) -> tuple[Output, ...]:
    items = ctx.seq(raw, "outputs")
    if not items:
        raise ctx.error("outputs", "expected at least one declared output")
    outputs: list[Output] = []
    for i, item in enumerate(items):
        field = f"outputs[{i}]"
        data = item if isinstance(item, dict) else {"path": item}
        ctx.only(data, {"path", "publish"}, field)
        path = ctx.relpath(data.get("path"), f"{field}.path")
        publish = data.get("publish", False)
        name: str | None
        if publish is True:
            name = PurePosixPath(path).name
        elif publish is False or publish is None:
            name = None
        else:
            name = ctx.relpath(publish, f"{field}.publish")
            if name in ("", "."):
                raise ctx.error(f"{field}.publish", "expected true, false or a file name")
        outputs.append(Output(path=path, publish=name))
    paths = [o.path for o in outputs]
    if len(set(paths)) != len(paths):
        raise ctx.error("outputs", "expected each output path once")
    for a in paths:
        for b in paths:
            if b.startswith(a + "/"):
                raise ctx.error("outputs", f"{b!r} lies inside {a!r}; declare one of them")
    return tuple(outputs)


def _rootfs(ctx: _Ctx, raw: Any) -> RootfsSpec:
    data = ctx.mapping(raw, "rootfs")
    ctx.only(data, {"contents", "directories", "files", "symlinks", "device_table"}, "rootfs")
    contents = _contents(ctx, data.get("contents"), "rootfs.contents")
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


def _contents(ctx: _Ctx, raw: Any, field: str) -> tuple[Content, ...]:
    contents = []
    for i, item in enumerate(ctx.seq(raw or [], field)):
        where = f"{field}[{i}]"
        item = item if isinstance(item, dict) else {"recipe": item}
        ctx.only(item, {"recipe", "path", "dest"}, where)
        dest = ctx.string(item.get("dest", "/"), f"{where}.dest")
        contents.append(
            Content(
                recipe=ctx.string(item.get("recipe"), f"{where}.recipe"),
                path=ctx.relpath(item.get("path", ""), f"{where}.path", allow_empty=True),
                dest="" if dest == "/" else tree_path(dest, ctx.where(where), f"{where}.dest"),
            )
        )
    return tuple(contents)


def _hex_id(ctx: _Ctx, raw: Any, field: str, default: str) -> str:
    if raw is None:
        return default
    text = ctx.string(raw, field).lower().removeprefix("0x")
    if not re.fullmatch(r"[0-9a-f]{8}", text):
        raise ctx.error(field, f"expected 8 hex digits, got {raw!r}")
    return text


def _image(ctx: _Ctx, raw: Any, recipe: str) -> ImageSpec:
    data = ctx.mapping(raw, "image")
    ctx.only(data, {"name", "disk_id", "partitions", "bmap", "compress"}, "image")
    name = ctx.string(data.get("name", f"{recipe}.img"), "image.name")
    if "/" in name or name in (".", ".."):
        raise ctx.error("image.name", f"expected a plain file name, got {name!r}")
    bmap = data.get("bmap", True)
    if not isinstance(bmap, bool):
        raise ctx.error("image.bmap", f"expected true or false, got {_kind(bmap)}")
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
            raise ctx.error(f"{field}.bootable", f"expected true or false, got {_kind(bootable)}")
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
                contents=_contents(ctx, p.get("contents"), f"{field}.contents"),
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


def _run_as(ctx: _Ctx, raw: Any) -> bool:
    if raw not in ("builder", "root"):
        raise ctx.error(
            "run_as",
            f"expected 'builder' (an unprivileged user, the default) or "
            f"'root' (uid 0 in the container), got {raw!r}",
        )
    return bool(raw == "root")
