"""Building one recipe: its sources prepared, its step run in the sandbox of its executor,
its result stored; the key and the lookup come from its plan (jailbake.bake.plan)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..cache.store import ActionResult
from ..core import paths, run
from ..core.errors import BuildError, JailbakeError, RecipeError
from ..core.files import remove_tree
from ..executors import engine
from ..executors.step import (
    VARIED_UMASK,
    Executor,
    ExecutorKind,
    Step,
    Vary,
    varied_jobs,
    write_script,
)
from ..model.recipe import LAYOUT_FILE, Recipe, SourceKind
from ..sources import licenses
from ..sources.fetch import Fetcher
from ..workspace.workspaces import Workspace
from .plan import KeyInfo, Outcome, Planner, Status, declared_outputs_ok

if TYPE_CHECKING:  # the remote cache's code loads only for --remote-cache
    from ..cache.remote import RemoteCache

log = logging.getLogger(__name__)
LOG_TAIL_LINES = 40
TAIL_BYTES = 64 << 10  # where the last lines are looked for
PRINTABLE_ONLY = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x1f\x7f-\x9f]")
MAX_ARG_STRLEN = 131072  # Linux: 32 pages
RAN_AT = ".jailbake-ran-at"  # in a kept work directory: where its step ran
DEP_COPIES = "dep-trees"  # in a workspace's build directory: its dependencies' outputs
ENV_RESERVE = 64 << 10  # room for the variables and arguments jailbake itself gives a step
# A work directory used this long is removed in the background (see Store.discard).
BACKGROUND_REMOVAL_SECONDS = 1.0


class RecipeBuilder:
    """Builds the recipes a Planner planned: prepares each step, runs it on its
    executor, and stores its result (or takes it from the cache)."""

    def __init__(
        self,
        plan: Planner,
        fetcher: Fetcher,
        *,
        remote: RemoteCache | None = None,
        force: frozenset[str] = frozenset(),
        on_step: Callable[[str, Path], None] | None = None,
        keep_failed: bool = False,
    ) -> None:
        self.plan = plan
        self.graph = plan.graph
        self.store = plan.store
        self.history = plan.history
        self.fetcher = fetcher
        # $JOBS of each step: its share of the cores, taken from one budget when it starts
        # (the first of two parallel steps gets what is free, the second at least one).
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        self._cores_held = 0
        self._cores_lock = threading.Lock()
        self.remote = remote
        self.force = force  # recipes built again even when their key is cached
        self.on_step = on_step  # told where each step's log can be read while it runs
        self.keep_failed = keep_failed  # a failed step's work directory is kept for a shell
        # Told of work within a step: (kind, name, start, recipe=..., **details).
        self.on_span: Callable[..., None] | None = None
        self._images: dict[str, str] = {}
        self._image_lock = threading.Lock()

    # -- building ---------------------------------------------------------------------
    def build(
        self, recipe: Recipe, deps: Mapping[str, ActionResult], info: KeyInfo | None = None
    ) -> Outcome:
        """The recipe's result: from the cache if its key is stored, else built now.

        info: the key already computed for these dependencies, if the caller has it.
        """
        start = time.monotonic()
        if info is None:
            info, hit = self.plan.lookup(recipe, deps)
        else:
            hit = self.plan.cached(recipe, info.key)
        if recipe.name in self.force:
            with self.store.lock(info.key):
                previous = self.plan.cached(recipe, info.key)
                result, _ = self._execute(recipe, deps, info, start)
                self.history.record_last(recipe.name, info.key)
            seconds = time.monotonic() - start
            return Outcome(
                recipe.name,
                Status.BUILT,
                result,
                seconds,
                previous.output_digest if previous else None,
            )
        if hit is None:
            with self.store.lock(info.key):
                hit = self.plan.cached(recipe, info.key)  # another build may have finished it
                # A workspace's results stay on this machine: built incrementally, from
                # sources nobody else has.
                remote = None if self.plan.workspace_of(recipe) else self.remote
                if hit is None and remote is not None:
                    sde = self.graph.layer.source_date_epoch
                    hit = remote.fetch(recipe.name, info.key, sde)
                    hit = hit and declared_outputs_ok(recipe, hit)
                    if hit is not None:
                        self.history.record_last(recipe.name, info.key)
                        seconds = time.monotonic() - start
                        return Outcome(recipe.name, Status.DOWNLOADED, hit, seconds)
                if hit is None:
                    result, origin = self._execute(recipe, deps, info, start)
                    self.history.record_last(recipe.name, info.key)
                    if remote is not None:
                        remote.upload(result)
                    seconds = time.monotonic() - start
                    return Outcome(recipe.name, Status.BUILT, result, seconds, origin=origin)
        self.history.record_last(recipe.name, info.key)
        return Outcome(recipe.name, Status.REUSED, hit, time.monotonic() - start)

    def image_for(self, recipe: Recipe) -> str | None:
        """The builder image recipe's step runs in (None on the host)."""
        return None if recipe.rootfs else self._image(recipe, self.plan.executor_for(recipe))

    def _image(self, recipe: Recipe, executor: Executor) -> str | None:
        if executor.kind is ExecutorKind.REMOTE:  # the workers' registry holds it
            return engine.image_tag(recipe.builder, self.plan.builder_identity(recipe)["image"])
        if executor.kind is not ExecutorKind.DOCKER:
            return None
        key = self.plan.builder_identity(recipe)["image"]
        with self._image_lock:
            if recipe.builder not in self._images:
                context = self.graph.builder_dir(recipe)
                assert context is not None
                client = getattr(executor, "client", None)
                mirrors = self.fetcher.mirrors
                start = time.monotonic()
                with self.store.lock(f"image-{key}"):
                    self._images[recipe.builder] = engine.ensure_image(
                        client,
                        context,
                        key,
                        load=lambda tag: _load_image(client, mirrors, tag),
                        offline=self.fetcher.offline,
                        fetch=self.fetcher.fetch_deb,
                    )
                if self.on_span is not None:
                    image = self._images[recipe.builder]
                    self.on_span("image", recipe.builder, start, recipe=recipe.name, tag=image)
            return self._images[recipe.builder]

    def prepare_step(
        self,
        recipe: Recipe,
        deps: Mapping[str, ActionResult],
        info: KeyInfo,
        work: Path,
        log_path: Path,
        jobs: int | None = None,
        *,
        incremental: bool = False,
    ) -> Step:
        """Lay out work as the recipe's step finds it (sources unpacked and patched, the
        script, an image's layout) and describe the step: its variables, dependencies,
        builder image and user. A recipe with a workspace finds the workspace's files in
        its sources; incremental: work is the workspace's build directory, whose other
        files (the last build's) stay."""
        executor = self.plan.executor_for(recipe)
        image = None if recipe.rootfs else self._image(recipe, executor)
        ws = self.plan.workspace_of(recipe)
        dep_trees = None
        if ws is None:
            self.prepare_sources(recipe, work / "src")
        else:
            synced = self.plan.workspaces.sync(ws, work / "src", keep=incremental)
            log.debug(
                "%s: sources from the workspace %s (%d files copied, %d kept, %d removed)",
                recipe.name, ws.dir, synced.copied, synced.kept, synced.removed,
            )  # fmt: skip
            licenses.check(recipe, work / "src", self.store)
            if incremental:
                dep_trees = self._dependency_copies(ws, deps, work)
        write_script(work, recipe.script)
        if recipe.image:
            layout = recipe.image.layout(self.graph.layer.source_date_epoch)
            (work / LAYOUT_FILE).write_text(json.dumps(layout, indent=2, sort_keys=True))
            from ..image import sdtool

            shutil.copyfile(Path(sdtool.__file__), work / "sdtool.py")
        return self.step_for(recipe, deps, info, work, log_path, image, jobs, dep_trees)

    def _dependency_copies(
        self, ws: Workspace, deps: Mapping[str, ActionResult], work: Path
    ) -> dict[str, Path]:
        """The dependencies' outputs copied into a workspace's build directory (beside
        the step's own, which is remade each time): unchanged files keep their times."""
        copies = work / DEP_COPIES
        copies.mkdir(exist_ok=True)  # _work_dir removed anything else of that name
        for gone in set(os.listdir(copies)) - set(deps):
            remove_tree(copies / gone)
        trees = {}
        for name, result in sorted(deps.items()):
            tree = self.store.tree_path(result.output_digest)
            self.plan.workspaces.sync_dependency(ws, name, tree, result.outputs, copies / name)
            trees[name] = copies / name
        return trees

    def step_for(
        self,
        recipe: Recipe,
        deps: Mapping[str, ActionResult],
        info: KeyInfo,
        work: Path,
        log_path: Path,
        image: str | None,
        jobs: int | None = None,
        dep_trees: Mapping[str, Path] | None = None,
    ) -> Step:
        """The step of recipe in an already laid out work directory; jobs is its $JOBS
        (default: the whole machine's cores, as for a step alone); dep_trees: where the
        dependencies' outputs are, if not in the store."""
        env = dict(recipe.environment)
        env.update(info.inputs["variables"])
        self._check_env_sizes(recipe, env)
        return Step(
            recipe=recipe.name,
            work=work,
            deps=tuple(
                (n, (dep_trees or {}).get(n) or self.store.tree_path(deps[n].output_digest))
                for n in sorted(recipe.depends)
            ),
            env=tuple(sorted(env.items())),
            log=log_path,
            image=image,
            jobs=jobs or self.cores,
            root=recipe.run_as_root,
            ccache=self.ccache_dir(recipe)
            if image and self.plan.executor_for(recipe).kind is ExecutorKind.DOCKER
            else None,
            dep_manifests=tuple(
                (n, tuple(deps[n].outputs))
                for n in sorted(recipe.depends)
                if n not in (dep_trees or {})  # copies of a workspace's build: not these
            ),
        )

    def _execute(
        self, recipe: Recipe, deps: Mapping[str, ActionResult], info: KeyInfo, start: float
    ) -> tuple[ActionResult, str]:
        """The recipe's step run and its outputs stored; and where the executor took the
        result from, if it did not run the step ('')."""
        executor = self.plan.executor_for(recipe)
        log_path = self.store.root / "logs" / f"{recipe.name}-{info.key[:16]}.log"
        log_path.unlink(missing_ok=True)
        ws = self.plan.workspace_of(recipe)
        with (
            self._work_dir(recipe, ws, info) as work,
            self._claim_cores() as cores,
        ):
            phase = time.monotonic()
            step = self.prepare_step(
                recipe, deps, info, work, log_path, cores, incremental=ws is not None
            )
            if recipe.name in self.force:
                step = dataclasses.replace(step, fresh=True)
            phase = self._phase("prepare", recipe, phase)
            try:
                if self.on_step is not None:
                    live = step.log if recipe.rootfs else executor.live_log(step)
                    self.on_step(recipe.name, live)
                rc = self._write_rootfs(recipe, step) if recipe.rootfs else executor.run(step)
                origin = "" if recipe.rootfs else executor.origin(step)
                phase = self._phase("step", recipe, phase)
                if rc != 0:
                    raise BuildError(recipe.name, rc, log_path, _tail(log_path))
                tree = self._collect_outputs(recipe, work, log_path)
            except BuildError as exc:
                if self.keep_failed and ws is None:  # a workspace's build directory stays
                    place = work if recipe.rootfs else executor.place(step)
                    raise self._keep(work, recipe, info, exc, place) from None
                raise
            try:
                # Hashing the tree also refuses device nodes and fifos, before it is stored.
                digest, manifest = self.store.add_tree(
                    tree, mtime=self.graph.layer.source_date_epoch
                )
            except ValueError as exc:
                raise BuildError(f"{recipe.name}: output {exc}", 1, log_path) from None
            phase = self._phase("store", recipe, phase)
        self._phase("clean", recipe, phase)  # the work directory removed
        log_digest = self.store.add_copy(log_path) if log_path.exists() else None
        result = ActionResult(
            key=info.key,
            recipe=recipe.name,
            version=recipe.version,
            inputs=info.inputs,
            outputs=manifest,
            output_digest=digest,
            duration=round(time.monotonic() - start, 3),
            log=log_digest,
        )
        self.store.put_result(result)
        return result, origin

    def rebuild(
        self,
        recipe: Recipe,
        deps: Mapping[str, ActionResult],
        info: KeyInfo,
        vary: frozenset[Vary],
        scratch: Path,
    ) -> Path:
        """The recipe's step run again from the same inputs, in scratch/work, with vary
        changed in its environment (jailbake repro); its output tree (scratch/work/tree),
        which is not stored. Its log is scratch/build.log. A workspace's recipe builds
        from the workspace's files as they are now."""
        executor = self.plan.executor_for(recipe)
        work, log_path = scratch / "work", scratch / "build.log"
        work.mkdir(parents=True)
        jobs = self.cores
        if Vary.NUM_CPUS in vary:
            jobs = varied_jobs(jobs, self.cores)
        step = self.prepare_step(recipe, deps, info, work, log_path, jobs)
        if Vary.UMASK in vary:
            write_script(work, recipe.script, umask=VARIED_UMASK)
        # No compiler cache: a hit would give the first build's objects back, whatever
        # the variation would have changed in them.
        step = dataclasses.replace(step, vary=vary, fresh=True, scratch=True, ccache=None)
        rc = self._write_rootfs(recipe, step) if recipe.rootfs else executor.run(step)
        if rc != 0:
            raise BuildError(recipe.name, rc, log_path, _tail(log_path))
        return self._collect_outputs(recipe, work, log_path)

    def cannot_vary(self, recipe: Recipe, vary: frozenset[Vary]) -> dict[Vary, str]:
        """The variations of vary the recipe's executor cannot make, and why."""
        if recipe.rootfs:  # written by jailbake itself, in this process
            return dict.fromkeys(vary, "jailbake writes this root file system itself")
        executor = self.plan.executor_for(recipe)
        why: dict[Vary, str] = {}
        if recipe.image and Vary.FILEORDERING in vary:
            why[Vary.FILEORDERING] = (
                "bmaptool maps an image's holes with SEEK_HOLE, which disorderfs lacks"
            )
        image = self.image_for(recipe)
        probe = Step(recipe.name, Path("/nonexistent"), (), (), Path("/nonexistent"), image=image,
                     root=recipe.run_as_root, vary=vary)  # fmt: skip
        return {**executor.cannot_vary(probe), **why}

    @contextlib.contextmanager
    def _work_dir(self, recipe: Recipe, ws: Workspace | None, info: KeyInfo) -> Iterator[Path]:
        """A fresh scratch directory; for a recipe with a workspace, the workspace's build
        directory, emptied but for the sources (and what the last build made in them).
        That directory belongs to every input of the key but the workspace's content and
        the dependencies' outputs, which make sees changing by their times (the
        dependencies are copied in, see _dependency_copies); other inputs (the recipe,
        variables, the builder) start a new one."""
        if ws is None:
            work = self.store.temp_path(recipe.name)
            work.mkdir()
            start = time.monotonic()
            try:
                yield work
            finally:
                # A recipe that took long left a large tree, as a kernel's does: it goes
                # while the next steps run (see Store.discard).
                long = time.monotonic() - start >= BACKGROUND_REMOVAL_SECONDS
                self.store.discard(work, background=long)
            return
        identity = {k: v for k, v in info.inputs.items() if k != "deps"}
        identity["files"] = {k: v for k, v in info.inputs["files"].items() if k != "workspace"}
        with self.store.lock(f"workspace-{ws.id}"):
            work = self.plan.workspaces.build_dir(ws, identity)
            for entry in os.listdir(work):
                kept = entry in ("src", DEP_COPIES)
                if not kept or not stat.S_ISDIR(os.lstat(work / entry).st_mode):
                    remove_tree(work / entry)
            try:
                yield work
            finally:
                for entry in ("out", "tree"):
                    if os.path.lexists(work / entry):
                        remove_tree(work / entry)

    def ccache_dir(self, recipe: Recipe) -> Path | None:
        """The compiler cache of the recipe's builder image, kept in the cache outside
        any key (a hit gives the bytes a miss would); None where a step goes without:
        root steps, written images and file systems, recipes that say ccache: false."""
        if not recipe.ccache or recipe.run_as_root or recipe.image or recipe.rootfs:
            return None
        image = self.plan.builder_identity(recipe).get("image")
        return self.store.root / "ccache" / f"{recipe.builder}-{image[:20]}" if image else None

    @contextlib.contextmanager
    def _claim_cores(self) -> Iterator[int]:
        """A step's share of the cores: what the running steps leave free, at least one."""
        with self._cores_lock:
            share = max(1, self.cores - self._cores_held)
            self._cores_held += share
        try:
            yield share
        finally:
            with self._cores_lock:
                self._cores_held -= share

    def _phase(self, name: str, recipe: Recipe, start: float) -> float:
        """Tell on_span how long a part of a recipe's build took (unpacking and patching
        its sources, its step, storing its outputs, removing its work directory); return
        the time now."""
        if self.on_span is not None:
            self.on_span("phase", name, start, recipe=recipe.name)
        return time.monotonic()

    def _keep(
        self, work: Path, recipe: Recipe, info: KeyInfo, exc: BuildError, place: Path
    ) -> BuildError:
        """Move a failed step's work directory out of the scratch space, for a shell."""
        kept = self.history.failed_dir(recipe.name, info.key)
        remove_tree(kept)
        kept.parent.mkdir(parents=True, exist_ok=True)
        # The step could leave anything under that name: a link to a file of the host's.
        remove_tree(work / RAN_AT)
        fd = os.open(work / RAN_AT, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(str(place))
        os.rename(work, kept)
        return BuildError(exc.step, exc.rc, exc.log_path, exc.tail, kept=kept, recipe=recipe.name)

    def _check_env_sizes(self, recipe: Recipe, env: Mapping[str, str]) -> None:
        """The kernel refuses to start a program with a variable over MAX_ARG_STRLEN, or
        with more than ARG_MAX bytes of arguments and environment together."""
        total = sum(len(k.encode()) + len(v.encode()) + 2 for k, v in env.items())
        limit = os.sysconf("SC_ARG_MAX") - ENV_RESERVE
        if total > limit:
            raise RecipeError(
                recipe.where("environment"),
                "environment",
                f"the step's variables hold {total} bytes; a program can be given at most "
                f"{limit} (the kernel's ARG_MAX, less what jailbake adds)",
            )
        for name, value in sorted(env.items()):
            size = len(name.encode()) + len(value.encode()) + 2
            if size <= MAX_ARG_STRLEN:
                continue
            if name in dict(recipe.environment):
                where, field = recipe.where("environment"), f"environment.{name}"
            else:
                where, field = str(self.graph.layer.files[-1]), f"env.{name}"
            raise RecipeError(
                where,
                field,
                f"{size} bytes; a variable can hold at most {MAX_ARG_STRLEN} bytes "
                "(the kernel's limit for one string given to a program)",
            )

    def _write_rootfs(self, recipe: Recipe, step: Step) -> int:
        """Assemble a declarative rootfs into its archive, in-process and without root."""
        from ..image.cpio import write_cpio_gz, write_newc
        from ..image.rootfs import assemble

        assert recipe.rootfs is not None
        entries = assemble(
            recipe.rootfs,
            dict(step.deps),
            self.graph.layer.source_date_epoch,
            recipe.where("rootfs"),
        )
        target = step.work / "out" / recipe.outputs[0].path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if target.name.endswith(".gz"):
                count = write_cpio_gz(entries, target)
            else:
                with target.open("wb") as f:
                    count = write_newc(entries, f)
        except ValueError as exc:
            raise JailbakeError(f"{recipe.where('rootfs')}: rootfs: {exc}") from None
        with step.log.open("a") as logf:
            print(f"wrote {target.name}: {count} entries, {target.stat().st_size} bytes", file=logf)
        return 0

    def prepare_sources(self, recipe: Recipe, src: Path, *, patches: bool = True) -> None:
        """Sources unpacked and patched into src (without patches: only unpacked). Every
        write stays inside src: a link that an earlier source put there is never followed
        (see paths)."""
        src.mkdir(parents=True, exist_ok=True)
        for i, source in enumerate(recipe.sources):
            origin = f"{recipe.where('sources')}: sources[{i}] {source.location}"
            dest = paths.directory(src, source.dest or ".", origin=f"{origin}: dest")
            if source.kind is SourceKind.URL:
                blob = self.fetcher.fetch_url(recipe.name, source)
                if source.is_archive:
                    from ..sources.unpack import extract_tar

                    extract_tar(None, blob, dest, strip=source.strip, origin=origin)
                else:
                    rel = PurePosixPath(source.dest or ".", source.filename)
                    shutil.copyfile(blob, paths.target(src, rel, origin=origin))
            elif source.kind is SourceKind.GIT:
                from ..sources.unpack import extract_tar, git_export

                git_dir = self.fetcher.fetch_git(recipe.name, source)
                if git_dir is None:
                    archive = self.fetcher.mirror_archive(source)
                    assert archive is not None
                    extract_tar(None, archive, dest, origin=origin)
                else:
                    git_export(git_dir, source.commit, dest, origin=origin)
            else:
                assert source.path is not None
                rel = PurePosixPath(source.dest or ".", source.path.name)
                paths.copy_into(source.path, src, rel, origin=origin)
        if not patches:
            return
        for i, patch in enumerate(recipe.patches):
            origin = f"{recipe.where('patches')}: patches[{i}] {patch.rel}: dest"
            where = paths.check_inside(src, patch.dest or ".", origin=origin)
            if not where.is_dir():
                raise JailbakeError(f"{origin}: {patch.dest!r} is not a directory of the sources")
            cp = run.run(
                [
                    "patch",
                    f"-p{patch.strip}",
                    "--batch",
                    "--forward",
                    "--no-backup-if-mismatch",
                    "-d",
                    where,
                    "-i",
                    patch.path,
                ],
                check=False,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            if cp.returncode != 0:
                detail = cp.stdout.decode(errors="replace").strip().splitlines()
                raise JailbakeError(
                    f"{recipe.where('patches')}: patches: {patch.rel} does not "
                    f"apply: {detail[-1] if detail else 'patch failed'}"
                )
        licenses.check(recipe, src, self.store)

    def _collect_outputs(self, recipe: Recipe, work: Path, log_path: Path) -> Path:
        """Move the declared outputs into a tree of their own (the store seals it)."""
        out, tree = work / "out", work / "tree"
        # The step owned its work directory: $OUT itself may have become a link, and a
        # "tree" it left would be taken for jailbake's own.
        if not stat.S_ISDIR(os.lstat(out).st_mode) or os.path.lexists(tree):
            raise BuildError(
                f"{recipe.name}: the step replaced $OUT or made $WORKDIR/tree; "
                "outputs are files and directories inside $OUT",
                1,
                log_path,
            )
        tree.mkdir()
        for output in recipe.outputs:
            # A step may leave links in $OUT; an output reached through one, or one that
            # is a link, would stand for files outside the step.
            try:
                produced = paths.check_inside(
                    out, output.path, origin=f"{recipe.name}: declared output"
                )
            except paths.UnsafePath as exc:
                raise BuildError(str(exc), 1, log_path) from None
            if not os.path.lexists(produced):
                raise BuildError(
                    f"{recipe.name}: declared output {output.path!r} was not produced",
                    1,
                    log_path,
                    _tail(log_path),
                )
            target = tree / output.path
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(produced, target)
        if recipe.config_file:
            config = paths.check_inside(tree, recipe.config_file, origin=f"{recipe.name}: config")
            if config.is_symlink() or not config.is_file():
                raise BuildError(
                    f"{recipe.where('config_file')}: config_file: {recipe.config_file!r} is "
                    "not a file the step left among its outputs",
                    1,
                    log_path,
                )
        return tree


def _load_image(client: Any, mirrors: list[str], tag: str) -> bool:
    from ..sources import builders

    return builders.load_image(client, mirrors, tag)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The log's last lines, read from its end (a log may hold gigabytes), as printable
    text: a step's escape sequences do not reach the user's terminal."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    kept = text.splitlines()[-lines:]
    return "\n".join(PRINTABLE_ONLY.sub("", line.expandtabs()) for line in kept)
