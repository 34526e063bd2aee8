"""Recipe files: YAML validated once, at load, into frozen dataclasses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..core import gitcmd, yamlfile
from ..core.fields import Fields, kind_of, where_of

if TYPE_CHECKING:  # the image modules load only for recipes that describe one
    from ..image.rootfs import RootfsSpec
    from ..image.sdimage import ImageSpec

SHA256_RE = re.compile(r"\A[0-9a-f]{64}\Z")
COMMIT_RE = re.compile(r"\A[0-9a-f]{40}\Z")
NAME_RE = re.compile(r"\A[a-z0-9][a-z0-9.+_-]*\Z")
VAR_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")
HOST_BUILDER = "host"
# No builder named: the recipe runs only where the executor is the host (--executor host);
# the docker executor refuses it rather than run it on the host unasked.
NO_BUILDER = ""
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
class LicenseFile:
    """A licence text in the recipe's prepared sources, pinned like a source."""

    path: str  # relative to the step's source directory ($SRC)
    sha256: str
    license: str = ""  # the SPDX expression the file states, where known

    def pin(self) -> dict[str, str]:
        return {"path": self.path, "sha256": self.sha256, "license": self.license}


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
    license_files: tuple[LicenseFile, ...] = ()
    redistribute: bool = True  # False: legal-info ships no sources (binary blobs)
    ccache: bool = True  # False: the step compiles without the builder's compiler cache
    # An output file holding the configuration it was built with (a kernel's .config):
    # the SBOM records its digest. Not part of the key: it says nothing of the build.
    config_file: str = ""
    # How vulnerability databases name it (OSV: ecosystem and package), as Yocto's
    # CVE_PRODUCT does; matched with its version. Not part of the key either.
    cve_product: tuple[str, str] | None = None
    # The layer files it names, as written (links unresolved) and as found (see replay).
    layer_refs: tuple[tuple[str, str], ...] = ()

    @property
    def publishes(self) -> bool:
        """Whether an output of this recipe goes into the artifacts directory."""
        return any(o.publish is not None for o in self.outputs)

    def where(self, field: str) -> str:
        """'file:line' of a top-level field, for error messages."""
        return where_of(self.file, dict(self.lines), field)

    def definition(self) -> dict[str, Any]:
        """The normalized content that decides what gets built (no paths, no prose)."""
        checked = {"license_files": [f.pin() for f in self.license_files]}
        return {
            **(checked if self.license_files else {}),  # the build checks them
            **({} if self.ccache else {"ccache": False}),  # built another way
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
    "license_files": False,
    "redistribute": False,
    "ccache": False,
    "config_file": False,
    "cve_product": False,
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


def load_recipe(file: Path, layer_dir: Path, memo: yamlfile.ParseMemo | None = None) -> Recipe:
    """Load and validate one recipe file that lives in layer_dir."""
    data, lines = (memo or yamlfile.ParseMemo(None)).parse(file)
    ctx = Fields(file, layer_dir, lines)
    if not isinstance(data, dict):
        raise ctx.error("", f"expected a mapping of recipe fields, got {kind_of(data)}")
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


def _build(ctx: Fields, data: Mapping[str, Any]) -> Recipe:
    name = ctx.string(data["name"], "name")
    if not NAME_RE.match(name):
        raise ctx.error("name", f"expected lower-case letters, digits and .+_-, got {name!r}")
    builder = ctx.string(data.get("builder", NO_BUILDER), "builder", allow_empty=True)
    if builder != NO_BUILDER and not NAME_RE.match(builder):
        raise ctx.error(
            "builder", f"expected 'host' or a directory name under docker/, got {builder!r}"
        )
    environment = ctx.mapping(data.get("environment") or {}, "environment")
    env: list[tuple[str, str]] = []
    for key, value in sorted(environment.items()):
        if not VAR_RE.match(str(key)):
            raise ctx.error("environment", f"expected variable names, got {str(key)!r}")
        env.append(
            (str(key), ctx.string(value, f"environment.{key}", allow_empty=True, lines=True))
        )
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
    rootfs: RootfsSpec | None = None
    image: ImageSpec | None = None
    if "rootfs" in data or "image" in data:
        from ..image.layouts import parse_image, parse_rootfs

        rootfs = parse_rootfs(ctx, data["rootfs"]) if "rootfs" in data else None
        image = parse_image(ctx, data["image"], name) if "image" in data else None
    contents = rootfs.contents if rootfs else ()
    if image:
        contents = tuple(c for p in image.partitions for c in p.contents)
        from ..image.sdimage import IMAGE_BUILDER

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
    # These name layer files: ctx.refs is complete once they are read.
    sources = tuple(
        _source(ctx, s, f"sources[{i}]")
        for i, s in enumerate(ctx.seq(data.get("sources") or [], "sources"))
    )
    patches = tuple(
        _patch(ctx, p, f"patches[{i}]")
        for i, p in enumerate(ctx.seq(data.get("patches") or [], "patches"))
    )
    license_files = tuple(
        _license_file(ctx, f, f"license_files[{i}]")
        for i, f in enumerate(ctx.seq(data.get("license_files") or [], "license_files"))
    )
    return Recipe(
        name=name,
        version=ctx.string(data["version"], "version"),
        summary=ctx.string(data.get("summary", ""), "summary", allow_empty=True, lines=True),
        license=ctx.string(data.get("license", ""), "license", allow_empty=True),
        sources=sources,
        patches=patches,
        depends=depends,
        builder=builder,
        environment=tuple(env),
        variables=variables,
        script=ctx.string(data["script"], "script", lines=True)
        if "script" in data
        else (IMAGE_SCRIPT if image else ""),
        outputs=outputs,
        file=ctx.file,
        layer_dir=ctx.layer_dir,
        lines=tuple(sorted(ctx.lines.items())),
        rootfs=rootfs,
        image=image,
        run_as_root=_run_as(ctx, data.get("run_as", "builder")),
        license_files=license_files,
        redistribute=_bool(ctx, data.get("redistribute", True), "redistribute"),
        ccache=_bool(ctx, data.get("ccache", True), "ccache"),
        config_file=_config_file(ctx, data.get("config_file"), outputs),
        cve_product=_cve_product(ctx, data.get("cve_product")),
        layer_refs=tuple(ctx.refs),
    )


def _config_file(ctx: Fields, value: Any, outputs: tuple[Output, ...]) -> str:
    """config_file: a file path that is, or lies inside, one of the declared outputs."""
    if value is None:
        return ""
    path = ctx.relpath(value, "config_file")
    if not any(path == o.path or path.startswith(o.path + "/") for o in outputs):
        raise ctx.error(
            "config_file",
            f"expected a file among the outputs ({', '.join(o.path for o in outputs)}), "
            f"got {path!r}",
        )
    return path


_PRODUCT_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:/+-]{0,99}")


def _cve_product(ctx: Fields, value: Any) -> tuple[str, str] | None:
    """cve_product: {ecosystem: Linux, name: Kernel}, each one line of plain words."""
    if value is None:
        return None
    data = ctx.mapping(value, "cve_product")
    ctx.only(data, {"ecosystem", "name"}, "cve_product")
    parts = []
    for key in ("ecosystem", "name"):
        part = data.get(key)
        if not isinstance(part, str) or not _PRODUCT_PART.fullmatch(part):
            raise ctx.error(
                f"cve_product.{key}",
                "expected a name as the vulnerability database writes it (OSV: an "
                "ecosystem like Linux or Debian:12, a package like Kernel)",
            )
        parts.append(part)
    return parts[0], parts[1]


def _bool(ctx: Fields, value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise ctx.error(field, f"expected true or false, got {kind_of(value)}")
    return value


def _license_file(ctx: Fields, raw: Any, field: str) -> LicenseFile:
    data = ctx.mapping(raw, field)
    ctx.only(data, {"path", "sha256", "license"}, field)
    for key in ("path", "sha256"):
        if key not in data:
            raise ctx.error(f"{field}.{key}", "missing; a licence file is pinned by its sha256")
    sha = ctx.string(data["sha256"], f"{field}.sha256")
    if not SHA256_RE.match(sha):
        raise ctx.error(f"{field}.sha256", f"expected 64 lower-case hex digits, got {sha!r}")
    return LicenseFile(
        path=ctx.relpath(data["path"], f"{field}.path"),
        sha256=sha,
        license=ctx.string(data.get("license", ""), f"{field}.license", allow_empty=True),
    )


def _source(ctx: Fields, raw: Any, field: str) -> Source:
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
            raise ctx.error(f"{field}.unpack", f"expected true or false, got {kind_of(unpack)}")
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
        problem = gitcmd.url_problem(url)
        if problem:
            raise ctx.error(f"{field}.git", problem)
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


def _patch(ctx: Fields, raw: Any, field: str) -> Patch:
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


def _outputs(ctx: Fields, raw: Any) -> tuple[Output, ...]:
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


def _run_as(ctx: Fields, raw: Any) -> bool:
    if raw not in ("builder", "root"):
        raise ctx.error(
            "run_as",
            f"expected 'builder' (an unprivileged user, the default) or "
            f"'root' (uid 0 in the container), got {raw!r}",
        )
    return bool(raw == "root")
