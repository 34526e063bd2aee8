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

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.+_-]*$")
VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HOST_BUILDER = "host"

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
    "environment": False,
    "variables": False,
    "script": False,
    "rootfs": False,
    "outputs": True,
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
    if ("script" in data) == ("rootfs" in data):
        raise ctx.error("script", "expected either a build 'script' or a declarative 'rootfs'")
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
    if rootfs:
        depends += tuple(sorted({c.recipe for c in rootfs.contents} - set(depends)))
    outputs = _outputs(ctx, data["outputs"])
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
        script=ctx.string(data["script"], "script") if "script" in data else "",
        outputs=outputs,
        file=ctx.file,
        layer_dir=ctx.layer_dir,
        lines=tuple(sorted(ctx.lines.items())),
        rootfs=rootfs,
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
    contents = []
    for i, item in enumerate(ctx.seq(data.get("contents") or [], "rootfs.contents")):
        field = f"rootfs.contents[{i}]"
        item = item if isinstance(item, dict) else {"recipe": item}
        ctx.only(item, {"recipe", "path", "dest"}, field)
        dest = ctx.string(item.get("dest", "/"), f"{field}.dest")
        contents.append(
            Content(
                recipe=ctx.string(item.get("recipe"), f"{field}.recipe"),
                path=ctx.relpath(item.get("path", ""), f"{field}.path", allow_empty=True),
                dest="" if dest == "/" else tree_path(dest, ctx.where(field), f"{field}.dest"),
            )
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
        mode_text = ctx.string(item.get("mode", "0644"), f"{field}.mode")
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
