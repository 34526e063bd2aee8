"""A recipe's patches as git commits over its pinned sources, and back to patch files.

As devtool does: the unpacked sources are the first commit, each patch of the recipe
one commit after it (`git am` for a mail-formatted patch, so its author and message
stay; otherwise applied as the build applies it and committed under its file name).
Finishing turns the commits back into the recipe's `patches:` list: commits that are
still the ones first made keep their patch file; new or changed commits are written
with `git format-patch`; patches whose commits were dropped leave the list.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ..cache.keys import digest_of, path_digest
from ..core import gitcmd, paths, run
from ..model.recipe import Patch, Recipe
from .workspaces import PatchCommit, Workspace, WorkspaceError

BRANCH = "jailbake"
BASE_TAG = "jailbake-base"
PATCH_TRAILER = "Jailbake-Patch"
SAFE_PLAIN = re.compile(r"\A[A-Za-z0-9_./+-]+\Z")


def _identity(epoch: int) -> dict[str, str]:
    """Who made the commits jailbake makes, and when (fixed: equal sources, equal ids)."""
    when = f"@{epoch} +0000"
    return {
        "GIT_AUTHOR_NAME": "jailbake",
        "GIT_AUTHOR_EMAIL": "jailbake@localhost",
        "GIT_COMMITTER_NAME": "jailbake",
        "GIT_COMMITTER_EMAIL": "jailbake@localhost",
        "GIT_AUTHOR_DATE": when,
        "GIT_COMMITTER_DATE": when,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }


def git(repo: Path, *args: str, env: Mapping[str, str] | None = None, check: bool = True) -> str:
    cp = gitcmd.run(
        "-C",
        repo,
        *args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=False,
    )
    if check and cp.returncode != 0:
        lines = cp.stderr.decode(errors="replace").strip().splitlines()
        what = next(a for a in args if not a.startswith("-") and "=" not in a)
        raise WorkspaceError(f"{repo}: git {what} failed: {lines[-1] if lines else cp.returncode}")
    return cp.stdout.decode(errors="replace")


def _is_mail(text: bytes) -> bool:
    head = text.split(b"\n\n", 1)[0]
    return head.startswith(b"From ") and b"\nSubject:" in head


def start(repo: Path, recipe: Recipe, epoch: int) -> tuple[str, tuple[PatchCommit, ...]]:
    """Make repo (the unpacked, unpatched sources) a git repository: the sources as its
    first commit, then one commit per patch. Returns the first commit and the patches'."""
    env = _identity(epoch)
    if os.path.lexists(repo / ".git"):  # its configuration could name commands to run
        raise WorkspaceError(
            f"{recipe.file}: {recipe.name}: the unpacked sources hold a .git of their own; "
            "a workspace's repository is made by jailbake"
        )
    git(repo, "init", "-q", "-b", BRANCH, env=env)
    # Every file of the sources, whatever their own .gitignore files say.
    git(repo, "add", "-A", "-f", ".", env=env)
    message = (
        f"{recipe.name} {recipe.version}: the pinned sources\n\nAs {recipe.file.name} pins them"
    )
    git(repo, "commit", "-q", "--no-verify", "--allow-empty", "-m", message, env=env)
    git(repo, "tag", BASE_TAG, env=env)
    base = git(repo, "rev-parse", "HEAD").strip()
    commits = []
    for i, patch in enumerate(recipe.patches):
        before = git(repo, "rev-parse", "HEAD").strip()
        subject = _apply(repo, recipe, i, patch, env)
        made = tuple(git(repo, "rev-list", "--reverse", f"{before}..HEAD").split())
        commits.append(PatchCommit(patch.rel, made[-1], subject, made))
    return base, tuple(commits)


def pins(recipe: Recipe) -> str:
    """What the recipe's sources and patches are: a workspace finishes only onto these."""
    return digest_of(
        {
            "sources": [s.pin() for s in recipe.sources],
            "files": [path_digest(s.path) for s in recipe.sources if s.path is not None],
            "patches": [[p.rel, p.strip, p.dest, path_digest(p.path)] for p in recipe.patches],
        }
    )


def _apply(repo: Path, recipe: Recipe, i: int, patch: Patch, env: Mapping[str, str]) -> str:
    text = patch.path.read_bytes()
    if _is_mail(text):
        where = [f"--directory={patch.dest}"] if patch.dest else []
        am = ["am", "-q", "--keep-cr", "--committer-date-is-author-date", f"-p{patch.strip}"]
        cp = gitcmd.run(
            "-C",
            repo,
            *am,
            *where,
            "--",
            patch.path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
        if cp.returncode == 0:
            return git(repo, "log", "-1", "--format=%s").strip()
        git(repo, "am", "--abort", env=env, check=False)
    where_to = paths.check_inside(repo, patch.dest, origin=f"{recipe.name}: {patch.rel}: dest")
    cp = run.run(
        ["patch", f"-p{patch.strip}", "--batch", "--forward", "--no-backup-if-mismatch",
         "-d", where_to, "-i", patch.path],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )  # fmt: skip
    if cp.returncode != 0:
        detail = cp.stdout.decode(errors="replace").strip().splitlines()
        raise WorkspaceError(
            f"{recipe.where('patches')}: patches[{i}] {patch.rel} does not apply: "
            f"{detail[-1] if detail else 'patch failed'}"
        )
    subject = PurePosixPath(patch.rel).name
    git(repo, "add", "-A", "-f", ".", env=env)
    message = f"{subject}\n\n{PATCH_TRAILER}: {patch.rel}"
    git(repo, "commit", "-q", "--no-verify", "--allow-empty", "-m", message, env=env)
    return subject


@dataclass(frozen=True)
class Finished:
    recipe_file: Path  # the recipe file written (the recipe's own, or a later layer's)
    kept: tuple[str, ...]  # patch files left as they were
    written: tuple[str, ...]  # patch files written from commits
    dropped: tuple[str, ...]  # patches no longer in the list


def finish(
    ws: Workspace, recipe: Recipe, layer_dir: Path | None, used_elsewhere: set[Path]
) -> Finished:
    """Write the workspace's commits back as the recipe's patches: into the recipe's own
    file, or (layer_dir) into a copy of the recipe in a later layer, which overrides it."""
    repo = ws.dir
    if ws.pins and pins(recipe) != ws.pins:
        raise WorkspaceError(
            f"workspace of {ws.recipe}: {recipe.file} changed its sources or patches since "
            "the workspace began; finishing would undo that. Carry the commits over by hand "
            f"('jailbake workspace --reset {ws.recipe}', then start a new workspace)"
        )
    # Ignored files count: builds take every file of the workspace.
    status = ["status", "--porcelain", "--untracked-files=all", "--ignored=matching"]
    dirty = git(repo, *status).splitlines()
    if dirty:
        raise WorkspaceError(
            f"workspace of {ws.recipe}: {repo} has changes not committed "
            f"({dirty[0][3:]}{' and more' if len(dirty) > 1 else ''}); "
            "commit them (they become patches) or drop them first"
        )
    if not _ancestor(repo, ws.base):
        raise WorkspaceError(
            f"workspace of {ws.recipe}: HEAD does not descend from the pinned sources "
            f"({BASE_TAG}, {ws.base[:12]}); rebase the work onto it"
        )
    commits = git(repo, "rev-list", "--reverse", "--parents", f"{ws.base}..HEAD").splitlines()
    merges = [c.split()[0] for c in commits if len(c.split()) > 2]
    if merges:
        raise WorkspaceError(
            f"workspace of {ws.recipe}: merge commit {merges[0][:12]} cannot become a patch; "
            "make the history linear (git rebase)"
        )
    ids = [line.split()[0] for line in commits]
    by_first = {p.commits[0]: p for p in ws.patches if p.commits}
    existing = {p.rel: p for p in recipe.patches}
    home = layer_dir or recipe.layer_dir
    patch_dir = _patch_dir(recipe)
    entries: list[Patch] = []
    kept: list[str] = []
    written: dict[str, bytes] = {}
    n = 0
    while n < len(ids):
        original = by_first.get(ids[n])
        if (
            original is not None
            and original.rel in existing
            and tuple(ids[n : n + len(original.commits)]) == original.commits
        ):
            entries.append(existing[original.rel])
            kept.append(original.rel)
            n += len(original.commits)
            continue
        commit = ids[n]
        n += 1
        text = _format_patch(repo, commit, ws.recipe)
        subject = git(repo, "log", "-1", "--format=%s", commit).strip()
        taken = {e.rel for e in entries} | set(written) | set(kept)
        rel = _reused_name(ws, subject, ids, taken, home, used_elsewhere)
        if rel is None:
            rel = _fresh_name(home, patch_dir, n, subject, taken)
        written[rel] = text
        entries.append(Patch(path=home / rel, rel=rel))
    listed = {e.rel for e in entries}
    dropped = [p.rel for p in recipe.patches if p.rel not in listed]
    target = _recipe_target(recipe, layer_dir)
    new_text = _with_patches(recipe, target.parent, home, entries)
    for rel, text in written.items():
        path = home / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
    if layer_dir is not None:
        _copy_layer_files(recipe, layer_dir, [e for e in entries if e.rel not in written])
    if written or dropped or layer_dir is not None:  # else the recipe stays as it was written
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(new_text)
        os.replace(tmp, target)
    if layer_dir is None:
        for rel in dropped:
            path = recipe.layer_dir / rel
            if path.resolve() not in used_elsewhere and rel not in written:
                path.unlink(missing_ok=True)
    return Finished(target, tuple(kept), tuple(written), tuple(dropped))


def _ancestor(repo: Path, base: str) -> bool:
    cp = gitcmd.run(
        *("-C", repo, "merge-base", "--is-ancestor", "--end-of-options", base, "HEAD"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return cp.returncode == 0


def _format_patch(repo: Path, commit: str, recipe: str) -> bytes:
    text = git(
        repo,
        "-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false",
        "format-patch", "-1", commit, "--stdout", "--no-signature", "--zero-commit",
        "--no-renames", "--full-index",
    )  # fmt: skip
    if "GIT binary patch" in text or "\nBinary files " in text:
        raise WorkspaceError(
            f"workspace of {recipe}: commit {commit[:12]} changes a binary file; "
            "patches carry text only (make it a file source of the recipe instead)"
        )
    return text.encode()


def _reused_name(
    ws: Workspace,
    subject: str,
    commits: Sequence[str],
    taken: set[str],
    home: Path,
    used_elsewhere: set[Path],
) -> str | None:
    """An original patch's file name, for a commit that replaces it (amended within the
    same subject): a one-commit patch whose commit is gone, whose subject it has, and
    whose file no other recipe uses."""
    present = set(commits)
    for p in ws.patches:
        if (
            p.subject == subject
            and len(p.commits) == 1
            and p.commit not in present
            and p.rel not in taken
            and (home / p.rel).resolve() not in used_elsewhere
        ):
            return p.rel
    return None


def _fresh_name(home: Path, patch_dir: str, n: int, subject: str, taken: set[str]) -> str:
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", subject).strip("-.")[:52].rstrip("-.") or "change"
    stem = f"{n:04d}-{slug}"
    rel = f"{patch_dir}/{stem}.patch"
    count = 1
    while rel in taken or (home / rel).exists():
        count += 1
        rel = f"{patch_dir}/{stem}-{count}.patch"
    return rel


def _patch_dir(recipe: Recipe) -> str:
    """Where new patches go: beside the recipe's own patches when they share a
    directory, else files/<recipe>/."""
    dirs = {PurePosixPath(p.rel).parent.as_posix() for p in recipe.patches}
    if len(dirs) == 1:
        (only,) = dirs
        if only != ".":
            return only
    return f"files/{recipe.name}"


def _recipe_target(recipe: Recipe, layer_dir: Path | None) -> Path:
    if layer_dir is None:
        return recipe.file
    target = layer_dir / recipe.file.name
    if target.exists():
        data = yaml.safe_load(target.read_text())
        if not isinstance(data, dict) or data.get("name") != recipe.name:
            raise WorkspaceError(
                f"{target}: already holds another recipe; the copy of {recipe.name} cannot go there"
            )
    return target


def _entry(patch: Patch, recipe_dir: Path, home: Path) -> Any:
    path = os.path.relpath(home / patch.rel, recipe_dir)
    if patch.strip == 1 and not patch.dest:
        return path
    entry: dict[str, Any] = {"path": path, "strip": patch.strip}
    if patch.dest:
        entry["dest"] = patch.dest
    return entry


def _scalar(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    return value if SAFE_PLAIN.match(value) else json.dumps(value)


def _render(entries: Sequence[Any]) -> str:
    lines = ["patches:\n"]
    for e in entries:
        if isinstance(e, str):
            lines.append(f"  - {_scalar(e)}\n")
        else:
            inner = ", ".join(f"{k}: {_scalar(v)}" for k, v in e.items())
            lines.append(f"  - {{{inner}}}\n")
    return "".join(lines)


def _with_patches(recipe: Recipe, recipe_dir: Path, home: Path, patches: Sequence[Patch]) -> str:
    """The recipe's text with its patches: field replaced (other lines, comments
    included, stay as they are); checked by parsing it again."""
    text = recipe.file.read_text()
    data = yaml.safe_load(text)
    entries = [_entry(p, recipe_dir, home) for p in patches]
    block = _render(entries) if entries else ""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"patches\s*:", line)), None)
    if start is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(block)
    else:
        end = start + 1
        while end < len(lines) and (
            lines[end].startswith((" ", "\t", "-")) or not lines[end].strip()
        ):
            end += 1
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1
        lines[start:end] = [block]
    new = "".join(lines)
    want = {k: v for k, v in data.items() if k != "patches"}
    if entries:
        want["patches"] = entries
    if yaml.safe_load(new) != want:
        raise WorkspaceError(
            f"{recipe.file}: patches: the list could not be rewritten in place (it is "
            "written in a form jailbake does not edit); write these entries by hand: "
            + ", ".join(str(e) for e in entries)
        )
    return new


def _copy_layer_files(recipe: Recipe, layer_dir: Path, patches: Sequence[Patch]) -> None:
    """The files a copy of the recipe in layer_dir names: its file sources and the
    patches it keeps, at the same places relative to the recipe."""
    wanted: list[tuple[Path, str]] = [(p.path, p.rel) for p in patches]
    wanted += [(s.path, s.location) for s in recipe.sources if s.path is not None]
    for src, rel in wanted:
        dest = layer_dir / rel
        if dest.resolve() == src.resolve():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copyfile(src, dest)
