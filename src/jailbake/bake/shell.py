"""`jailbake shell`: stepping into a recipe's build environment."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..cache.store import ActionResult
from ..core.errors import JailbakeError
from ..model.graph import Graph
from .action import RAN_AT, RecipeBuilder
from .query import cached_results


def dependency_results(graph: Graph, builder: RecipeBuilder, name: str) -> dict[str, ActionResult]:
    """The cached results of name's dependencies, which its step mounts."""
    _, results = cached_results(graph, builder.plan, until=name)
    deps = {d: results.get(d) for d in graph.recipes[name].depends}
    missing = sorted(d for d, r in deps.items() if r is None)
    if missing:
        raise JailbakeError(
            f"shell: {name} needs {', '.join(missing)} built first "
            f"(jailbake build CONFIG --target {missing[0]})"
        )
    return {d: r for d, r in deps.items() if r is not None}


def open_shell(
    graph: Graph,
    builder: RecipeBuilder,
    name: str,
    *,
    command: str | None = None,
    workdir: Path | None = None,
) -> int:
    """Run command, or an interactive shell, where name's step runs: its builder, its
    sources unpacked and patched (or a kept failed step's directory), its dependencies
    read-only, its variables, no network. Returns the shell's exit status."""
    recipe = graph.recipes[name]
    if recipe.rootfs is not None:
        raise JailbakeError(
            f"shell: {name} is a rootfs recipe, assembled by jailbake itself: it has no step"
        )
    deps = dependency_results(graph, builder, name)
    info = builder.plan.key_info(recipe, {n: r.output_digest for n, r in deps.items()})
    executor = builder.plan.executor_for(recipe)
    log_path = builder.store.root / "logs" / f"{name}-shell.log"
    if workdir is not None:
        workdir = workdir.resolve()
        kept = (builder.store.root / "failed").resolve()
        if (
            workdir.parent != kept
            or not workdir.name.startswith(f"{name}-")
            or not (workdir / "build.sh").is_file()
        ):
            raise JailbakeError(
                f"shell: --workdir {workdir} is not a work directory of {name} that build "
                f"--keep-failed kept in {kept}"
            )
        image = builder.image_for(recipe)
        step = builder.step_for(recipe, deps, info, workdir, log_path, image)
        ran_at = workdir / RAN_AT
        if ran_at.is_file() and not ran_at.is_symlink():
            step = dataclasses.replace(step, ran_at=Path(ran_at.read_text().strip()))
        return executor.shell(step, command)
    with builder.store.temp_dir(f"shell-{name}") as work:
        step = builder.prepare_step(recipe, deps, info, work, log_path)
        return executor.shell(step, command)
