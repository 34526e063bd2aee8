"""A build answered from the record of the last one like it.

Each successful build leaves a record in the cache, named after its command: layer
files, targets, options and working directory. It notes everything the outcome rested
on. A later build of the same command whose record still holds is answered from it:
each recipe is reported reused, the trace and the report are written again, and the
artifacts are left as they are. Nothing is parsed, no key is computed, and neither kas
nor doit is loaded.

The record holds when, now as then:
- jailbake's own modules are the same files (size and times), under the same Python
  and zlib (which the image writers' keys name);
- the variables of the layer's env: section and every JAILBAKE_* variable have the
  same values;
- the directories kas read hold the same configuration files, by content, under the
  same repository markers, and the kas patches of remote repositories hash the same;
- each recipe directory lists the same recipe files, each with the same bytes (a recipe
  file whose size, times or inode changed is not read: the build runs);
- each layer file a recipe names (file sources, patches, rootfs files, device tables),
  of every recipe read, the build's or not, hashes the same;
- each path as written (layer files, repositories, layer directories) leads through
  its links to the same place;
- each builder's context hashes to the same image key, found in the same docker/
  directory, and each repository's docker/ directory exists or not as it did;
- no workspace is active, and no layer repository floats on a branch or tag;
- the cache holds each result as the same file, with its output tree, and holds the
  recipes' licence texts or lacks them as it did (manifest.json quotes their SHA1);
- each artifact, manifest.json and the SPDX document is the file the build left
  (size, modification and change times, inode);
- no `jailbake repro` has checked a result since (manifest.json and the SPDX
  document say what the checks found).

Otherwise the build runs as usual, and leaves a new record. --force and --offline
builds always run (--offline checks every source, cached or not). Output trees are not
checked against their digests here: nothing reads them. A build that uses one (a
step's dependency, a copy into the artifacts directory) checks it first.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import os
import sys
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..cache.history import History
from ..cache.keys import path_digest
from ..cache.seal import path_stamp, tree_stamp
from ..cache.store import WORKSPACES, Store
from ..model.scan import ConfigScan, bytes_digest, recipe_names
from ..release.artifacts import Artifact
from .checks import checks_of
from .observe import Finished, Observer, Quiet
from .options import SAME_OUTCOME, BuildOptions, BuildReport

if TYPE_CHECKING:
    from ..cache.store import ActionResult
    from ..model.graph import Graph
    from .action import RecipeBuilder

log = logging.getLogger(__name__)
FORMAT = 4
RECORDS = "replay"  # under the cache directory
VARIABLE_PREFIX = "JAILBAKE_"


def _identity(options: BuildOptions) -> str:
    """The command a record answers: every field of its options (what it builds, how,
    from where, and into where) but those marked as not changing the outcome."""
    command: list[Any] = [FORMAT, __version__, os.getcwd()]
    for f in dataclasses.fields(options):
        if f.metadata.get(SAME_OUTCOME):
            continue
        command.append([f.name, _plain(getattr(options, f.name))])
    return hashlib.sha256(json.dumps(command).encode()).hexdigest()[:32]


def _plain(value: object) -> object:
    """An option's value as JSON: paths resolved, enums by value, sequences as lists."""
    if isinstance(value, Path):
        return str(value.resolve())
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"BuildOptions: no record form for {type(value).__name__}")


def _record_path(options: BuildOptions) -> Path:
    return options.cache_dir / RECORDS / f"{_identity(options)}.json"


def _code_stamp() -> list[list[Any]]:
    """jailbake's own modules, as the file system describes them, the interpreter, and
    the zlib that deflates what the image writers make (it enters their keys)."""
    package = Path(__file__).parent.parent  # the jailbake package
    stamp: list[list[Any]] = [[sys.version, zlib.ZLIB_RUNTIME_VERSION]]
    for dirpath, dirnames, filenames in os.walk(package):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                stamp.append([path, *path_stamp(path, follow=True)])
    return stamp


def _environ(names: Sequence[str]) -> dict[str, str | None]:
    """The values of the layer's variables and of every JAILBAKE_* variable, by their
    sha256 (a record in the cache keeps no token a variable may hold)."""
    wanted = {*names, *(k for k in os.environ if k.startswith(VARIABLE_PREFIX))}
    return {k: _value_digest(os.environ.get(k)) for k in sorted(wanted)}


def _value_digest(value: str | None) -> str | None:
    return None if value is None else hashlib.sha256(os.fsencode(value)).hexdigest()


def _no_workspaces(cache_dir: Path) -> bool:
    try:
        return not any(n.endswith(".json") for n in os.listdir(cache_dir / WORKSPACES))
    except FileNotFoundError:
        return True


# -- writing ---------------------------------------------------------------------------
def record(
    options: BuildOptions,
    graph: Graph,
    builder: RecipeBuilder,
    results: Mapping[str, ActionResult],
    artifacts: Sequence[Artifact],
) -> None:
    """Leave the record of a successful build, if a later one can be answered from it."""
    layer = graph.layer
    path = _record_path(options)
    if (
        options.force
        or options.offline  # never answered from a record
        or layer.floating
        or layer.scan is None
        or builder.plan.workspaces.all()
        or not set(graph.order) <= set(builder.plan.key_infos)
    ):
        path.unlink(missing_ok=True)
        return
    try:
        _write(path, options, graph, builder, results, artifacts)
    except (OSError, ValueError) as exc:  # the next build runs in full
        log.warning("cache: the record of this build was not kept: %s", exc)
        path.unlink(missing_ok=True)


def _write(
    path: Path,
    options: BuildOptions,
    graph: Graph,
    builder: RecipeBuilder,
    results: Mapping[str, ActionResult],
    artifacts: Sequence[Artifact],
) -> None:
    layer = graph.layer
    assert layer.scan is not None
    from ..release.artifacts import MANIFEST
    from ..release.spdx import SBOM
    from .plan import layer_file_paths

    store = builder.store
    known: dict[str, str] = {}  # layer file -> digest, as the keys took them
    builders: list[list[str]] = []
    probes = [[p, "dir", exists] for p, exists in layer.probes]
    for name in graph.order:
        recipe = graph.recipes[name]
        info = builder.plan.key_infos[name]
        digests = info.inputs["files"]
        for label, file in layer_file_paths(recipe).items():
            known[str(file)] = digests[label]
        probes += [
            [store.blob_location(f.sha256), "file", store.has_blob(f.sha256)]
            for f in recipe.license_files  # their SHA1 goes into manifest.json and the SBOM
        ]
        identity = info.inputs["builder"]
        if identity.get("executor") == "docker":
            context = graph.builder_dir(recipe)
            assert context is not None
            builders.append([str(context), identity["image"]])
            probes += [
                [str(f), "file", f.is_file()]
                for f in (d / recipe.builder / "Dockerfile" for d in layer.docker_dirs)
            ]
    published: list[list[Any]] = []
    for name in graph.order:
        for output in graph.recipes[name].outputs:
            if output.publish is not None:
                dest = options.artifacts_dir / output.publish
                published.append(
                    ["tree", str(dest), tree_stamp(dest)]
                    if dest.is_dir() and not dest.is_symlink()
                    else ["file", str(dest), path_stamp(dest)]
                )
    for extra in (MANIFEST, SBOM):
        published.append(["file", str(options.artifacts_dir / extra),
                          path_stamp(options.artifacts_dir / extra)])  # fmt: skip
    # The layer files every recipe read names (a recipe outside this build's graph is
    # validated all the same), and those the configuration names; and the links on the
    # way to them and to the layer directories.
    found = {f for _, f in graph.layer_refs}
    layer_files = [[f, known.get(f) or _layer_file_digest(f)] for f in sorted(found)]
    layer_files += [[f, digest] for f, digest in layer.read_files]
    resolved = [[w, f] for w, f in (*layer.resolved, *graph.layer_refs)]
    scan = layer.scan
    content = {
        "code": _code_stamp(),
        "environ": _environ(layer.env_names),
        "config": {
            "first": str(layer.files[0]),
            "dirs": list(scan.dirs),
            "fingerprint": scan.fingerprint,
            "repositories": list(scan.repositories),
        },
        "recipe_dirs": {str(d): recipe_names(d) for d in layer.recipe_dirs},
        "recipe_files": dict(graph.recipe_files),
        "recipe_stats": [[f, path_stamp(f)] for f, _ in graph.recipe_files],
        "layer_files": layer_files,
        "resolved": resolved,
        "builders": sorted(set(map(tuple, builders))),
        "probes": probes,
        # What jailbake repro found of each result (manifest.json and the SBOM say it).
        "checks": [
            [str(p), path_stamp(p) if p.is_file() else None]
            for p in (builder.history.check_path(results[n].key) for n in graph.order)
        ],
        "results": [
            [
                name,
                results[name].key,
                path_stamp(store.result_location(results[name].key)),
                results[name].output_digest,
                sum(e.get("size", 0) for e in results[name].outputs if e["type"] == "file"),
                sorted(graph.recipes[name].depends),
                store.blob_location(kept.hash) if (kept := results[name].log) else None,
            ]
            for name in graph.order
        ],
        "targets": list(graph.targets),
        "published": published,
        "artifacts": [[a.path, a.sha256, a.recipe] for a in artifacts],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(content))
    os.replace(tmp, path)


def _layer_file_digest(file: str) -> str:
    """path_digest of a layer file no key of this build hashed (a recipe outside the
    graph names it); ValueError for what is neither a file nor a directory (a fifo
    would block the read)."""
    if not (os.path.isfile(file) or os.path.isdir(file)):
        raise ValueError(f"{file}: neither a file nor a directory")
    return path_digest(Path(file))


# -- answering ---------------------------------------------------------------------------
def _change(record: dict[str, Any], options: BuildOptions, store: Store) -> str | None:
    """What differs from what the recorded build rested on (see above); None if nothing."""
    if record["code"] != _code_stamp():
        return "jailbake's modules"
    environ: dict[str, str | None] = record["environ"]
    for name, value in environ.items():
        if _value_digest(os.environ.get(name)) != value:
            return f"the variable {name}"
    for name in os.environ:
        if name.startswith(VARIABLE_PREFIX) and name not in environ:
            return f"the variable {name}"
    if not _no_workspaces(options.cache_dir):
        return "a workspace is active"
    for file, stat_key in record["recipe_stats"]:  # an edited recipe, before any is read
        if path_stamp(file) != stat_key:
            return str(file)
    config = record["config"]
    scan = ConfigScan(tuple(config["dirs"]), config["fingerprint"], tuple(config["repositories"]))
    if not scan.holds(Path(config["first"])):
        return "the layer configuration"
    files: dict[str, str] = record["recipe_files"]
    for directory, names in record["recipe_dirs"].items():
        if recipe_names(Path(directory)) != names:
            return f"the recipe files of {directory}"
        for name in names:
            file = os.path.join(directory, name)
            with open(file, "rb") as f:
                if files.get(file) != bytes_digest(f.read()):
                    return str(file)
    for written, found in record["resolved"]:
        if not os.path.exists(written) or os.path.realpath(written) != found:
            return str(written)
    for file, digest in record["layer_files"]:
        if path_digest(Path(file)) != digest:
            return str(file)
    for path, kind, exists in record["probes"]:
        if (os.path.isdir(path) if kind == "dir" else os.path.isfile(path)) != exists:
            return str(path)
    for path, stamp in record.get("checks", []):
        if (path_stamp(path) if os.path.isfile(path) else None) != stamp:
            return f"the reproducibility check {path}"
    if record["builders"]:
        from ..executors.engine import image_key

        for context, key in record["builders"]:
            if image_key(Path(context)) != key:
                return str(context)
    for name, key, stat_key, digest, *_ in record["results"]:
        if path_stamp(store.result_location(key)) != stat_key:
            return f"the cached result of {name}"
        if not os.path.isdir(store.tree_location(digest)):
            return f"the cached output of {name}"
    for kind, path, stamp in record["published"]:
        now = tree_stamp(Path(path)) if kind == "tree" else path_stamp(path)
        if now != stamp:
            return str(path)
    return None


def answer(options: BuildOptions, observer: Observer | None = None) -> BuildReport | None:
    """The build's report, answered from its record if the record holds; None if the
    build has to run."""
    start = time.monotonic()
    if options.force or options.offline:  # --offline checks every source, cached or not
        return None
    try:
        text = _record_path(options).read_bytes()
    except FileNotFoundError:
        log.debug("no record of an earlier build of this command")
        return None
    except OSError as exc:
        log.debug("the build runs: its record cannot be read: %s", exc)
        return None
    try:
        record = json.loads(text)
        store = Store(options.cache_dir)
        change = _change(record, options, store)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        change = str(exc)
    if change is not None:
        log.debug("the build runs: changed since the last one: %s", change)
        return None
    observer = observer or Quiet()
    observer.begin()
    depends: dict[str, list[str]] = {}
    logs: dict[str, str] = {}
    keys: dict[str, str] = {}
    history = History(store)
    for name, key, _, _, output_bytes, deps, log_path in record["results"]:
        history.record_last(name, key)  # written only if another command built it since
        observer.reused(name, key, output_bytes)
        depends[name] = deps
        if log_path is not None:
            logs[name] = log_path
        keys[name] = key
    history.save_last()
    history.remember_executor(options.configs, str(options.executor))
    done = Finished(
        options.artifacts_dir, record["targets"], depends, logs, from_record=True,
        checks=checks_of(history, keys),
    )  # fmt: skip
    observer.finished(done)
    names = [r[0] for r in record["results"]]
    artifacts = [Artifact(p, sha, recipe) for p, sha, recipe in record["artifacts"]]
    return BuildReport([], names, artifacts, time.monotonic() - start)
