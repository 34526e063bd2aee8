"""Workspaces: a recipe's sources as a directory the user edits, taken by builds.

`jailbake workspace` unpacks and patches a recipe's sources into a git repository
(see patchstack). While it is active, the recipe builds from that directory:

- its content (every file but `.git`) enters the recipe's key, hashed with a memo of
  each file's size, times and inode so that an unchanged tree is not read again;
- it is synced into a build directory kept between builds, as Buildroot's
  OVERRIDE_SRCDIR is: files that changed are copied (with a new time, so make rebuilds
  them), files that went away are removed, and what the last build made stays, so the
  step recompiles only what changed.

The state of each workspace lives in the cache (workspaces/<id>.json), named after
the recipe file it replaces the sources of.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache.keys import digest_of, file_sha256, tree_manifest
from ..cache.store import WORKSPACES
from ..core.errors import JailbakeError
from ..core.files import copy_hashed, remove_tree
from ..model.recipe import COMMIT_RE

STATE_DIR = WORKSPACES
BUILD_DIR = "workspace-builds"
# A file changed within this many nanoseconds of a scan may change again within the same
# tick of the file system's clock, unseen by its times: it is hashed again next time.
RACY_NS = 2_000_000_000
VCS_DIR = ".git"


def _commit(value: Any) -> str:
    """A commit id from a workspace record: it reaches git's argument list."""
    text = str(value)
    if not COMMIT_RE.fullmatch(text):
        raise ValueError(f"expected a 40-hex commit id, got {text!r}")
    return text


class WorkspaceError(JailbakeError):
    """A workspace cannot be made, used or ended as asked."""


@dataclass(frozen=True)
class PatchCommit:
    """One of the recipe's patches as the workspace first applied it."""

    rel: str  # the patch's path in its layer, as the recipe names it
    commit: str  # the last commit it made
    subject: str
    commits: tuple[str, ...] = ()  # every commit it made (a file of several mails: more)


@dataclass(frozen=True)
class Workspace:
    recipe: str
    recipe_file: Path  # the recipe whose sources the directory replaces
    dir: Path
    base: str  # the commit holding the pinned sources, before any patch
    patches: tuple[PatchCommit, ...] = ()
    pins: str = ""  # digest of the recipe's sources and patches when the workspace began

    @property
    def id(self) -> str:
        return hashlib.sha256(str(self.recipe_file).encode()).hexdigest()[:24]

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "recipe_file": str(self.recipe_file),
            "dir": str(self.dir),
            "base": self.base,
            "patches": [
                {"rel": p.rel, "commit": p.commit, "subject": p.subject, "commits": p.commits}
                for p in self.patches
            ],
            "pins": self.pins,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Workspace:
        return cls(
            recipe=str(data["recipe"]),
            recipe_file=Path(data["recipe_file"]),
            dir=Path(data["dir"]),
            base=_commit(data["base"]),
            patches=tuple(
                PatchCommit(
                    str(p["rel"]),
                    _commit(p["commit"]),
                    str(p["subject"]),
                    tuple(_commit(c) for c in p.get("commits") or [p["commit"]]),
                )
                for p in data.get("patches", [])
            ),
            pins=str(data.get("pins", "")),
        )


@dataclass(frozen=True)
class Scan:
    """A workspace directory's content, as keys see trees (see keys.tree_manifest)."""

    entries: tuple[dict[str, Any], ...]
    digest: str


@dataclass
class SyncStats:
    copied: int = 0
    removed: int = 0
    kept: int = 0
    changed: list[str] = field(default_factory=list)  # the first few copied paths


class Workspaces:
    """The active workspaces of one cache."""

    def __init__(self, cache_root: Path) -> None:
        self.root = cache_root / STATE_DIR
        self.builds = cache_root / BUILD_DIR
        self._all: dict[Path, Workspace] | None = None
        self._scans: dict[str, Scan] = {}
        self._lock = threading.RLock()

    def all(self) -> list[Workspace]:
        return sorted(self._load().values(), key=lambda w: (w.recipe, str(w.recipe_file)))

    def _load(self) -> dict[Path, Workspace]:
        with self._lock:
            if self._all is None:
                found: dict[Path, Workspace] = {}
                for path in sorted(self.root.glob("*.json")):
                    try:
                        ws = Workspace.from_dict(json.loads(path.read_text()))
                    except (OSError, ValueError, KeyError, TypeError) as exc:
                        raise WorkspaceError(
                            f"{path}: not a workspace record ({exc}); "
                            "remove it to drop that workspace"
                        ) from None
                    found[ws.recipe_file] = ws
                self._all = found
            return self._all

    def of(self, recipe_file: Path) -> Workspace | None:
        """The workspace that replaces the sources of this recipe file, if any."""
        active = self._load()
        return active.get(recipe_file.resolve()) if active else None

    def add(self, ws: Workspace) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{ws.id}.tmp"
        tmp.write_text(json.dumps(ws.to_dict(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.root / f"{ws.id}.json")
        self._load()[ws.recipe_file] = ws

    def remove(self, ws: Workspace) -> None:
        """Forget the workspace and its build directory; its sources stay where they are."""
        (self.root / f"{ws.id}.json").unlink(missing_ok=True)
        (self.root / "memo" / f"{ws.id}.stat.json").unlink(missing_ok=True)
        (self.root / "memo" / f"{ws.id}.sync.json").unlink(missing_ok=True)
        for build in self.builds.glob(f"{ws.id}-*"):
            _remove(build)
        self._load().pop(ws.recipe_file, None)

    def scan(self, ws: Workspace) -> Scan:
        """The workspace's content now (once per process: a build sees one state)."""
        with self._lock:
            return self._scan(ws)

    def _scan(self, ws: Workspace) -> Scan:
        if ws.id not in self._scans:
            if not ws.dir.is_dir():
                raise WorkspaceError(
                    f"workspace of {ws.recipe}: {ws.dir} is gone; "
                    f"'jailbake workspace --reset {ws.recipe}' builds from the pinned sources again"
                )
            self._scans[ws.id] = scan(ws.dir, self.root / "memo" / f"{ws.id}.stat.json")
        return self._scans[ws.id]

    def build_dir(self, ws: Workspace, identity: Mapping[str, Any]) -> Path:
        """Where the workspace's builds run, kept between builds of the same recipe
        definition and builder; older ones of the workspace are removed."""
        name = f"{ws.id}-{digest_of(dict(identity))[:16]}"
        self.builds.mkdir(parents=True, exist_ok=True)
        for old in self.builds.glob(f"{ws.id}-*"):
            if old.name != name:
                _remove(old)
                for record in (self.root / "memo").glob(f"{ws.id}.*sync.json"):
                    record.unlink()
        path = self.builds / name
        path.mkdir(exist_ok=True)
        return path

    def sync(self, ws: Workspace, dest: Path, *, keep: bool) -> SyncStats:
        """Bring dest to the workspace's content: with keep, dest is a build directory
        whose other files stay; without, dest is new and everything is copied."""
        record = self.root / "memo" / f"{ws.id}.sync.json" if keep else None
        if record is not None:
            record.parent.mkdir(parents=True, exist_ok=True)
        return sync(self.scan(ws), ws.dir, dest, record)

    def sync_dependency(
        self, ws: Workspace, name: str, tree: Path, manifest: list[dict[str, Any]], dest: Path
    ) -> SyncStats:
        """A dependency's stored tree, copied into the build directory so that files it
        changed since the last build have a new time there (stored trees all have one)."""
        record = self.root / "memo" / f"{ws.id}.dep-{name}.sync.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        return sync(Scan(tuple(manifest), ""), tree, dest, record)


def scan(root: Path, memo_path: Path) -> Scan:
    """root's manifest (as keys.tree_manifest gives it, without the top .git) and digest;
    files whose size, times and inode are as the memo recorded are not read again."""
    try:
        memo: dict[str, list[Any]] = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    fresh: dict[str, list[Any]] = {}
    now = time.time_ns()

    def hash_file(rel: str, path: str, st: os.stat_result) -> str:
        seen = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        known = memo.get(rel)
        sha = str(known[4]) if known and known[:4] == seen else file_sha256(path)
        if max(st.st_mtime_ns, st.st_ctime_ns) < now - RACY_NS:
            fresh[rel] = [*seen, sha]
        return sha

    try:  # a worktree's .git is a file
        entries = tree_manifest(root, hash_file=hash_file, skip={VCS_DIR})
    except (OSError, ValueError) as exc:  # a fifo, a directory it cannot read
        raise WorkspaceError(f"{root}: {exc}") from None
    if fresh != memo:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_path.with_name(f".{memo_path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(fresh, separators=(",", ":")))
        os.replace(tmp, memo_path)
    return Scan(tuple(entries), digest_of(entries))


def _same(entry: Mapping[str, Any], was: list[Any] | None, st: os.stat_result | None) -> bool:
    """Whether dest still holds what the last sync put there for this entry. A build
    step's own writes change a file's mtime; ownership changes (the container's user)
    change only its ctime, which is therefore not compared."""
    if was is None or st is None or was[0] != _identity(entry):
        return False
    kind = entry["type"]
    if kind == "dir":
        return stat.S_ISDIR(st.st_mode)
    if kind == "symlink":
        return stat.S_ISLNK(st.st_mode)
    return stat.S_ISREG(st.st_mode) and was[1:] == [st.st_size, st.st_mtime_ns, st.st_ino]


def _identity(entry: Mapping[str, Any]) -> str:
    if entry["type"] == "file":
        return f"file:{entry['sha256']}:{int(entry['exec'])}"
    if entry["type"] == "symlink":
        return f"symlink:{entry['target']}"
    return "dir"


def sync(scanned: Scan, source: Path, dest: Path, record: Path | None) -> SyncStats:
    """Make dest hold scanned's entries (read from source). Nothing below dest is
    followed: a link or file the build left where a directory belongs is replaced."""
    try:
        before: dict[str, list[Any]] = json.loads(record.read_text()) if record else {}
    except (OSError, ValueError):
        before = {}
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        _remove(dest)  # a build step may have replaced its source directory
    dest.mkdir(parents=True, exist_ok=True)
    stats = SyncStats()
    after: dict[str, list[Any]] = {}
    for entry in scanned.entries:
        rel = entry["path"]
        target = dest / rel
        try:
            st: os.stat_result | None = target.lstat()
        except FileNotFoundError:
            st = None
        if _same(entry, before.get(rel), st):
            stats.kept += 1
            after[rel] = before[rel]
            continue
        kind = entry["type"]
        if kind == "dir":
            if st is not None and not stat.S_ISDIR(st.st_mode):
                _remove(target)
                st = None
            if st is None:
                target.mkdir()
            after[rel] = [_identity(entry)]
            continue
        if st is not None:
            _remove(target)
        if kind == "symlink":
            os.symlink(entry["target"], target)
            after[rel] = [_identity(entry)]
        else:
            mode = 0o755 if entry["exec"] else 0o644
            _copy_checked(source / rel, target, mode, entry["sha256"], rel)
            st = target.lstat()
            after[rel] = [_identity(entry), st.st_size, st.st_mtime_ns, st.st_ino]
        stats.copied += 1
        if len(stats.changed) < 5:
            stats.changed.append(rel)
    for rel in sorted(set(before) - set(after), reverse=True):  # children first
        gone = dest / rel
        if not _real_parents(dest, rel):
            continue  # the build put a link on the way: what is behind it is not ours
        try:
            if stat.S_ISDIR(gone.lstat().st_mode):
                gone.rmdir()  # only if the build left nothing in it
            else:
                gone.unlink()
            stats.removed += 1
        except OSError:
            pass
    if record is not None:
        tmp = record.with_name(f".{record.name}.{os.getpid()}")
        tmp.write_text(json.dumps(after, separators=(",", ":")))
        os.replace(tmp, record)
    return stats


def _copy_checked(src: Path, dest: Path, mode: int, sha256: str, rel: str) -> None:
    """Copy src to the new file dest, checking that the bytes are those the key hashed:
    the workspace may have changed since it was scanned."""
    try:
        copied = copy_hashed(src, dest)
    except OSError as exc:
        raise WorkspaceChanged(rel, exc.strerror or str(exc)) from None
    os.chmod(dest, mode)
    if copied != sha256:
        dest.unlink()
        raise WorkspaceChanged(rel, "its content changed")


class WorkspaceChanged(WorkspaceError):
    def __init__(self, rel: str, detail: str) -> None:
        super().__init__(
            f"workspace: {rel} changed while the build ran ({detail}); build again to "
            "build what it holds now"
        )


def _real_parents(root: Path, rel: str) -> bool:
    """Whether every directory between root and rel is a real directory, not a link."""
    path = root
    for part in Path(rel).parts[:-1]:
        path = path / part
        try:
            if not stat.S_ISDIR(path.lstat().st_mode):
                return False
        except OSError:
            return False
    return True


def _remove(path: Path) -> None:
    """Remove a file, link or tree without following links."""
    remove_tree(path)
