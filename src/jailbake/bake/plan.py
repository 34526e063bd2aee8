"""Planning a recipe's build before anything runs: the executor its step runs on, the
identity of its builder, its key and what went into it, and the result the cache holds
under that key. list, explain, graph and clean need nothing more; a build adds the step
(jailbake.bake.action)."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..cache.history import History
from ..cache.keys import digest_of, path_digest, step_key, step_key_inputs
from ..cache.store import ActionResult, Store
from ..core.errors import RecipeError
from ..executors import engine
from ..executors.docker import ROOT_STEP_PRIVILEGES
from ..executors.step import Executor, ExecutorKind
from ..model.graph import Graph
from ..model.recipe import HOST_BUILDER, NO_BUILDER, Recipe, SourceKind
from ..workspace.workspaces import Workspace, Workspaces

log = logging.getLogger(__name__)


class Status(StrEnum):
    BUILT = "built"
    REUSED = "reused"
    DOWNLOADED = "downloaded"  # from the remote cache


@dataclass(frozen=True)
class Outcome:
    recipe: str
    status: Status
    result: ActionResult
    seconds: float
    previous: str | None = None  # forced: the output digest the cache held before
    origin: str = ""  # built, but not here: where the executor took the result from


@dataclass(frozen=True)
class KeyInfo:
    key: str
    inputs: dict[str, Any]


class Planner:
    """Keys and cache lookups of one graph's recipes in one store, for one executor."""

    def __init__(
        self,
        graph: Graph,
        store: Store,
        executor: Executor,
        *,
        host: Executor | None = None,
        local: Executor | None = None,
        history: History | None = None,
    ) -> None:
        self.graph = graph
        self.store = store
        self.executor = executor
        self.host = host
        # Where steps that a remote executor cannot take run (root steps): containers here.
        self.local = local
        self.workspaces = Workspaces(store.root)
        self.history = history or History(store)  # each recipe's last key, its log
        self._image_keys: dict[str, str] = {}
        # The last key computed for each recipe, with what went into it.
        self.key_infos: dict[str, KeyInfo] = {}

    def executor_for(self, recipe: Recipe) -> Executor:
        if recipe.builder == HOST_BUILDER and self.host is not None:
            return self.host
        if self.executor.kind is ExecutorKind.REMOTE and self.local_reason(recipe):
            assert self.local is not None
            return self.local
        return self.executor

    def runs(self, recipe: Recipe) -> str | None:
        """With a remote executor, where the recipe's step runs and why (None otherwise)."""
        if self.executor.kind is not ExecutorKind.REMOTE:
            return None
        reason = self.local_reason(recipe)
        if reason:
            return f"here: {reason}"
        pool = " (the root-step workers)" if recipe.run_as_root else ""
        return f"on {getattr(self.executor, 'url', 'remote')}{pool}"

    def local_reason(self, recipe: Recipe) -> str:
        """Why a step stays here although the executor is remote ('' if it does not)."""
        if recipe.rootfs:
            return "written by jailbake itself"
        if recipe.builder == HOST_BUILDER:
            return "a host step"
        if recipe.run_as_root and not getattr(self.executor, "takes_root_steps", False):
            return "a root step (JAILBAKE_REMOTE_ROOT_PROPERTIES names no workers for it)"
        return ""

    def builder_identity(self, recipe: Recipe) -> dict[str, str]:
        if recipe.rootfs is not None:
            return {"executor": "jailbake", "writer": writer_digest()}
        writer = {"writer": writer_digest()} if recipe.image else {}
        if self.executor_for(recipe).kind is ExecutorKind.HOST:
            return {"executor": "host", **writer}
        if recipe.builder == NO_BUILDER:
            raise RecipeError(
                recipe.where("builder"),
                "builder",
                "missing: with the docker executor a recipe names its builder (a directory "
                "under docker/), or says 'builder: host' to run on this machine unconfined",
            )
        context = self.graph.builder_dir(recipe)
        assert context is not None
        if recipe.builder not in self._image_keys:
            self._image_keys[recipe.builder] = engine.image_key(context)
        # What a root step may do changes what it makes (mmdebstrap without CAP_MKNOD
        # leaves a plain file as /dev/null for maintainer scripts to write into).
        privileges = {"privileges": ROOT_STEP_PRIVILEGES} if recipe.run_as_root else {}
        return {
            "executor": "docker",
            "image": self._image_keys[recipe.builder],
            **privileges,
            **writer,
        }

    def key_info(self, recipe: Recipe, dep_digests: Mapping[str, str]) -> KeyInfo:
        try:
            files = _layer_file_digests(recipe)
        except (ValueError, OSError) as exc:  # a fifo or device in a file source, say
            raise RecipeError(
                recipe.where("sources"), "sources", f"a layer file cannot be hashed: {exc}"
            ) from None
        ws = self.workspace_of(recipe)
        if ws is not None:  # the sources, as the user has edited them
            files["workspace"] = self.workspaces.scan(ws).digest
        variables = dict(self.graph.layer.variables())
        wanted = {"SOURCE_DATE_EPOCH", *recipe.variables}
        inputs = step_key_inputs(
            recipe.definition(),
            files,
            {k: v for k, v in variables.items() if k in wanted},
            {d: dep_digests[d] for d in sorted(recipe.depends)},
            self.builder_identity(recipe),
        )
        info = KeyInfo(step_key(inputs), inputs)
        self.key_infos[recipe.name] = info
        return info

    def workspace_of(self, recipe: Recipe) -> Workspace | None:
        """The workspace whose directory replaces the recipe's sources, if one is active."""
        if recipe.rootfs or recipe.image:
            return None
        return self.workspaces.of(recipe.file)

    def lookup(
        self, recipe: Recipe, deps: Mapping[str, ActionResult], *, check_tree: bool = True
    ) -> tuple[KeyInfo, ActionResult | None]:
        """The recipe's key, and its stored result if there is one. Without check_tree,
        the result's output tree is not checked against its digest (Store.check_tree)."""
        info = self.key_info(recipe, {n: r.output_digest for n, r in deps.items()})
        return info, self.cached(recipe, info.key, check_tree=check_tree)

    def cached(self, recipe: Recipe, key: str, *, check_tree: bool = True) -> ActionResult | None:
        result = self.store.get_result(key, check_tree=check_tree)
        return result and declared_outputs_ok(recipe, result)


def layer_file_paths(recipe: Recipe) -> dict[str, Path]:
    """The layer's own files a recipe uses, by their name in its key: file sources,
    patches, rootfs files."""
    files = {
        f"sources/{s.location}": s.path
        for s in recipe.sources
        if s.kind is SourceKind.FILE and s.path
    }
    files.update({f"patches/{p.rel}": p.path for p in recipe.patches})
    if recipe.rootfs:
        files.update({f"rootfs/{f.rel}": f.source for f in recipe.rootfs.files})
        if recipe.rootfs.device_table:
            table = recipe.layer_dir / recipe.rootfs.device_table
            files[f"rootfs/{recipe.rootfs.device_table}"] = table
    return files


def _layer_file_digests(recipe: Recipe) -> dict[str, str]:
    """Digests of the layer's own files a recipe uses (see layer_file_paths)."""
    return {label: path_digest(path) for label, path in layer_file_paths(recipe).items()}


def declared_outputs_ok(recipe: Recipe, result: ActionResult) -> ActionResult | None:
    """The result, if each declared output in it is a file or directory: results stored
    before links were refused, or offered by a remote cache, may hold one that is a link."""
    types = {e.get("path"): e.get("type") for e in result.outputs}
    bad = [o.path for o in recipe.outputs if types.get(o.path) not in ("file", "dir")]
    if bad:
        log.warning(
            "%s: the cached result's output %s is not a file or directory; built again",
            recipe.name,
            bad[0],
        )
        return None
    return result


_WRITER_DIGEST: list[str] = []
# The modules that write images in jailbake's own process: their code enters the keys of
# rootfs and image recipes (image/qemu.py only boots images; __init__.py holds no code).
IMAGE_WRITERS = (
    "cpio.py",
    "devtable.py",
    "layouts.py",
    "rootfs.py",
    "sdimage.py",
    "sdtool.py",
)
# The other modules of image/: they boot or read images and write none, so a change
# to them rebuilds nothing. Every module is in one list or the other (a test checks).
IMAGE_READERS = ("__init__.py", "fdt.py", "qemu.py", "raspi.py")


def writer_digest() -> str:
    """Identity of jailbake's in-process image writers: the digest of their source."""
    if not _WRITER_DIGEST:
        here = Path(__file__).parent.parent / "image"
        sources: dict[str, str] = {name: path_digest(here / name) for name in IMAGE_WRITERS}
        # gzip output depends on the zlib that deflates it, not only on jailbake's code.
        sources["zlib"] = zlib.ZLIB_RUNTIME_VERSION
        _WRITER_DIGEST.append(digest_of(sources))
    return _WRITER_DIGEST[0]
