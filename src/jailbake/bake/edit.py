"""The workspace command: start editing a recipe's sources, list, finish, reset."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..cache.store import Store
from ..core.files import remove_tree
from ..model.graph import Graph
from ..workspace import patchstack
from ..workspace.workspaces import Workspace, WorkspaceError, Workspaces
from .action import RecipeBuilder

DEFAULT_DIR = "workspace"  # workspace/RECIPE, relative to the current directory


def list_workspaces(store: Store) -> list[str]:
    workspaces = Workspaces(store.root).all()
    if not workspaces:
        return ["no active workspaces"]
    return [f"{w.recipe:24} {w.dir}  (replaces the sources of {w.recipe_file})" for w in workspaces]


def start_workspace(graph: Graph, builder: RecipeBuilder, name: str, dest: str | None) -> str:
    """Unpack and patch name's sources into dest (default: workspace/NAME) as a git
    repository; the builder's fetcher says where its sources come from (mirrors, offline)."""
    recipe = graph.recipes[name]
    if recipe.rootfs or recipe.image or not recipe.sources:
        raise WorkspaceError(
            f"workspace: {name} ({recipe.file}) has no sources to edit; a workspace holds "
            "the unpacked sources of a recipe that names some"
        )
    current = builder.plan.workspace_of(recipe)
    if current is not None:
        raise WorkspaceError(
            f"workspace: {name} already builds from {current.dir}; "
            f"'jailbake workspace --finish {name}' or '--reset {name}' ends it first"
        )
    where = Path(dest) if dest else Path(DEFAULT_DIR) / name
    where = where.absolute()
    if where.exists() and (not where.is_dir() or any(where.iterdir())):
        raise WorkspaceError(f"workspace: {where} exists and is not empty; name another DIR")
    made = not where.exists()
    where.mkdir(parents=True, exist_ok=True)
    try:
        with builder.store.temp_dir(f"workspace-{name}") as work:
            unpacked = work / "src"
            builder.prepare_sources(recipe, unpacked, patches=False)
            for entry in sorted(os.listdir(unpacked)):  # the cache may be on another disk
                shutil.move(unpacked / entry, where / entry)
        base, commits = patchstack.start(where, recipe, graph.layer.source_date_epoch)
    except BaseException:
        if made:
            remove_tree(where)
        else:
            for entry in os.listdir(where):
                remove_tree(where / entry)
        raise
    ws = Workspace(name, recipe.file.resolve(), where, base, commits, patchstack.pins(recipe))
    builder.plan.workspaces.add(ws)
    patches = f", {len(commits)} patches as commits" if commits else ""
    return (
        f"[jailbake] workspace {name}: sources in {where} (git branch "
        f"{patchstack.BRANCH}, {patchstack.BASE_TAG} = the pinned sources{patches}); "
        f"builds take {name}'s sources from there until 'jailbake workspace --finish {name}'"
    )


def _active(builder: RecipeBuilder, graph: Graph, name: str) -> Workspace:
    recipe = graph.recipes[name]
    ws = builder.plan.workspace_of(recipe)
    if ws is None:
        raise WorkspaceError(f"workspace: {name} ({recipe.file}) has no active workspace")
    return ws


def reset_workspace(builder: RecipeBuilder, name: str) -> str:
    ws = _active(builder, builder.graph, name)
    builder.plan.workspaces.remove(ws)
    return (
        f"[jailbake] workspace {name} ended: builds use the pinned sources and patches "
        f"again; {ws.dir} is left as it is"
    )


def finish_workspace(graph: Graph, builder: RecipeBuilder, name: str, layer: Path | None) -> str:
    ws = _active(builder, graph, name)
    recipe = graph.recipes[name]
    layer_dir = None
    if layer is not None:
        layer_dir = layer.resolve()
        dirs = list(graph.layer.recipe_dirs)
        if layer_dir not in dirs or dirs.index(layer_dir) <= dirs.index(recipe.layer_dir):
            later = [str(d) for d in dirs[dirs.index(recipe.layer_dir) + 1 :]]
            raise WorkspaceError(
                f"workspace: --layer {layer}: expected a recipe directory of this "
                f"configuration after {recipe.layer_dir}, whose recipe would override "
                f"{recipe.file.name}; "
                + (f"these are: {', '.join(later)}" if later else "there is none")
            )
    used = {
        p.path.resolve()
        for other in graph.recipes.values()
        if other.name != name
        for p in other.patches
    }
    done = patchstack.finish(ws, recipe, layer_dir, used)
    builder.plan.workspaces.remove(ws)
    parts = [f"{len(done.kept)} kept", f"{len(done.written)} written"]
    if done.dropped:
        parts.append(f"{len(done.dropped)} dropped ({', '.join(done.dropped)})")
    return (
        f"[jailbake] workspace {name} finished: {done.recipe_file} lists "
        f"{len(done.kept) + len(done.written)} patches ({'; '.join(parts)}); "
        f"{ws.dir} is left as it is"
    )
