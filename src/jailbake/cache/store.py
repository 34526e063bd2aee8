"""The local cache: blobs by sha256 (CAS), results by key (action cache), output trees.

Everything enters through a temporary path under tmp/ and a rename, so a killed
build leaves nothing that looks complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.files import process_alive, remove_tree
from .keys import canonical_json, digest_of, file_sha256, tree_manifest
from .seal import seal_tree, stamp_of, tree_stamp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Digest:
    """A blob's identity, named as in the Remote Execution API."""

    hash: str
    size_bytes: int


@dataclass(frozen=True)
class ActionResult:
    """What a recipe's build left behind, stored under its key."""

    key: str
    recipe: str
    version: str
    inputs: dict[str, Any]
    outputs: list[dict[str, Any]]
    output_digest: str
    duration: float
    log: Digest | None = None

    def to_json(self) -> bytes:
        # dataclasses.asdict would deep-copy the inputs and the output manifest first.
        return canonical_json(
            ascii=True,
            obj={
                "key": self.key,
                "recipe": self.recipe,
                "version": self.version,
                "inputs": self.inputs,
                "outputs": self.outputs,
                "output_digest": self.output_digest,
                "duration": self.duration,
                "log": None
                if self.log is None
                else {"hash": self.log.hash, "size_bytes": self.log.size_bytes},
            },
        )

    @staticmethod
    def from_json(data: bytes) -> ActionResult:
        raw = json.loads(data)
        log = Digest(**raw.pop("log")) if raw.get("log") else None
        raw.pop("log", None)
        return ActionResult(log=log, **raw)


WORKSPACES = "workspaces"  # the active workspaces' records (see workspace)
SUBDIRS = (
    "cas",
    "ac",
    "trees",
    "stamps",
    "tmp",
    "locks",
    "git",
    "logs",
    "configs",
    "published",
)


def default_cache_dir() -> Path:
    env = os.environ.get("JAILBAKE_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "jailbake"


class Store:
    """A cache directory shared safely by concurrent builds."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        for sub in SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._verified: set[str] = set()
        self._verified_lock = threading.Lock()
        self._discarding: list[tuple[subprocess.Popen[bytes], Path]] = []  # see discard
        self._discard_lock = threading.Lock()
        self._clean_stale_tmp()

    # -- temporary space -------------------------------------------------
    def _clean_stale_tmp(self) -> None:
        for entry in (self.root / "tmp").iterdir():
            pid = entry.name.split("-", 1)[0]
            if (pid.isascii() and pid.isdigit()) and not process_alive(int(pid)):
                with contextlib.suppress(OSError):
                    remove_tree(entry)

    @contextlib.contextmanager
    def temp_dir(self, label: str) -> Iterator[Path]:
        """A fresh directory removed on exit, whatever happens."""
        path = self.temp_path(label)
        path.mkdir()
        try:
            yield path
        finally:
            remove_tree(path)

    def discard(self, path: Path, *, background: bool = False) -> None:
        """Remove a scratch tree. In the background, it is first moved aside under tmp/
        (so it is gone from where it was at once) and removed by an rm of its own while
        the build goes on; settle waits for those."""
        if not background or not os.path.lexists(path):
            remove_tree(path)
            return
        from ..core import run

        trash = self.temp_path("discarded")
        try:
            os.rename(path, trash)
        except OSError:  # outside tmp/, a read-only directory cannot change parents
            remove_tree(path)
            return
        try:  # its own session: an interrupted build leaves it to finish
            rm = run.start(["rm", "-rf", "--", trash], output=subprocess.DEVNULL, new_session=True)
        except OSError:  # no rm to start
            remove_tree(trash)
            return
        with self._discard_lock:
            self._discarding = [  # reaped; what rm left stays for settle
                (p, t) for p, t in self._discarding if p.poll() is None or os.path.lexists(t)
            ]
            self._discarding.append((rm, trash))

    def settle(self, *, wait: bool = True) -> None:
        """Wait for the trees discarded in the background, and remove what rm could not
        (a read-only directory, for an ordinary user). Without wait (an interrupted
        build), the removals go on by themselves, and the next build removes what they
        leave."""
        with self._discard_lock:
            waiting, self._discarding = self._discarding, []
        for rm, trash in waiting if wait else ():
            rm.wait()
            if os.path.lexists(trash):
                with contextlib.suppress(OSError):
                    remove_tree(trash)

    def temp_path(self, label: str) -> Path:
        return self.root / "tmp" / f"{os.getpid()}-{label}-{os.urandom(4).hex()}"

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock shared between processes using this cache."""
        path = self.root / "locks" / f"{name}.lock"
        with path.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- content-addressed blobs -------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return Path(self.blob_location(sha256))

    # The *_location methods give paths as strings, for many at once without a Path each.
    def blob_location(self, sha256: str) -> str:
        return f"{self.root}/cas/{sha256[:2]}/{sha256}"

    def result_location(self, key: str) -> str:
        return f"{self.root}/ac/{key[:2]}/{key}.json"

    def tree_location(self, output_digest: str) -> str:
        return f"{self.root}/trees/{output_digest}"

    def has_blob(self, sha256: str) -> bool:
        return self.blob_path(sha256).is_file()

    def verify_blob(self, sha256: str) -> bool:
        """Whether the blob is stored with the right content; a wrong one is removed."""
        path = self.blob_path(sha256)
        if not path.is_file():
            return False
        if file_sha256(path) == sha256:
            return True
        log.warning("cache: %s does not hash to its name (changed on disk); removed", path)
        path.unlink(missing_ok=True)
        return False

    def add_blob(self, tmp: Path, sha256: str | None = None) -> Digest:
        """Move a finished temporary file into the CAS under its digest."""
        actual = file_sha256(tmp)
        if sha256 is not None and actual != sha256:
            tmp.unlink()
            raise ValueError(f"blob digest {actual} is not {sha256}")
        dest = self.blob_path(actual)
        dest.parent.mkdir(exist_ok=True)
        size = tmp.stat().st_size
        tmp.chmod(0o444)
        os.replace(tmp, dest)
        return Digest(actual, size)

    def add_bytes(self, data: bytes) -> Digest:
        tmp = self.temp_path("blob")
        try:
            tmp.write_bytes(data)
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk leaves no partial blob behind
            raise
        return self.add_blob(tmp)

    def add_copy(self, src: Path) -> Digest:
        """A copy of the file src as a blob, streamed (a step's log may be gigabytes)."""
        tmp = self.temp_path("blob")
        try:
            shutil.copyfile(src, tmp, follow_symlinks=False)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        return self.add_blob(tmp)

    # -- output trees ----------------------------------------------------------
    def tree_path(self, output_digest: str) -> Path:
        return Path(self.tree_location(output_digest))

    def add_tree(self, tmp: Path, *, mtime: int) -> tuple[str, list[dict[str, Any]]]:
        """Seal a finished output tree (every time set to mtime, modes read-only by the
        executable bit; see seal) and move it into place; returns its digest and manifest.
        ValueError names an entry that is not a file, directory or link."""
        sealed = seal_tree(str(tmp), mtime)
        manifest = sealed.manifest
        digest = digest_of(manifest)
        dest = self.tree_path(digest)
        with self.lock(f"tree-{digest}"):
            if dest.is_dir():
                if self.verify_tree(digest):  # another build stored the same tree
                    remove_tree(tmp)
                    return digest, manifest
                self.evict_tree(digest)
            # Moving a directory to another parent needs write access to it: the top
            # becomes read-only once it is in place.
            stamp = sealed.finish()
            os.rename(tmp, dest)
            dest.chmod(0o555)
            stamp["."] = stamp_of(os.lstat(dest))
            self._save_stamp(digest, stamp)
        with self._verified_lock:
            self._verified.add(digest)
        return digest, manifest

    # -- checking trees against their digests -------------------------------------------
    def _stamp_path(self, digest: str) -> Path:
        return self.root / "stamps" / f"{digest}.json"

    def _write_stamp(self, digest: str) -> None:
        self._save_stamp(digest, tree_stamp(self.tree_path(digest)))

    def _save_stamp(self, digest: str, stamp: dict[str, list[int]]) -> None:
        tmp = self.temp_path("stamp")
        tmp.write_text(json.dumps(stamp, sort_keys=True))
        os.replace(tmp, self._stamp_path(digest))

    def verify_tree(self, digest: str, *, full: bool = False) -> bool:
        """Whether the stored tree still hashes to its digest. Cheap when its stamp (see
        tree_stamp) is unchanged; otherwise, or with full, every file is hashed again."""
        with self._verified_lock:
            if digest in self._verified and not full:
                return True
        tree = self.tree_path(digest)
        if not tree.is_dir():
            return False
        if not full:
            try:
                recorded = json.loads(self._stamp_path(digest).read_text())
            except (OSError, ValueError):
                recorded = None
            try:
                now = tree_stamp(tree) if recorded is not None else None
            except OSError:  # evicted meanwhile by another build
                now = None
            if now is not None and recorded == now:
                with self._verified_lock:
                    self._verified.add(digest)
                return True
        try:
            good = digest_of(tree_manifest(tree)) == digest
        except (OSError, ValueError):
            good = False
        if good:
            self._write_stamp(digest)
            with self._verified_lock:
                self._verified.add(digest)
        return good

    def evict_tree(self, digest: str) -> None:
        """Remove a tree (and its stamp); results that name it become misses."""
        with self._verified_lock:
            self._verified.discard(digest)
        self._stamp_path(digest).unlink(missing_ok=True)
        tree = self.tree_path(digest)
        if os.path.lexists(tree):
            # Out of the way first, in one rename: no reader sees half a tree.
            if tree.is_dir() and not tree.is_symlink():
                tree.chmod(0o755)  # a directory moves only with write access to it
            doomed = self.temp_path("evicted")
            os.rename(tree, doomed)
            remove_tree(doomed)

    # -- action cache --------------------------------------------------------
    def result_path(self, key: str) -> Path:
        """Where the result stored under key is kept."""
        return Path(self.result_location(key))

    def get_result(self, key: str, *, check_tree: bool = True) -> ActionResult | None:
        """The stored result for key, if it and its output tree are complete (and, with
        check_tree, the tree still hashes to its digest: see check_tree)."""
        try:  # os, not pathlib: a build looks up every recipe's key
            with open(self.result_location(key), "rb") as f:
                result = ActionResult.from_json(f.read())
        except (OSError, ValueError, TypeError):
            return None
        if not os.path.isdir(self.tree_location(result.output_digest)):
            return None
        if check_tree and not self.check_tree(result):
            return None
        return result

    def check_tree(self, result: ActionResult) -> bool:
        """Whether the result's output tree still hashes to its digest; one that does not
        is removed (with a warning), and the result's key is a miss from then on."""
        digest = result.output_digest
        if not self.verify_tree(digest):
            with self.lock(f"tree-{digest}"):
                if self.verify_tree(digest, full=True):
                    return True  # replaced by a good copy meanwhile
                log.warning(
                    "cache: %s: the output tree %s no longer hashes to its digest (changed "
                    "on disk); removed, it is built again",
                    result.recipe,
                    digest[:16],
                )
                self.evict_tree(digest)
            return False
        return True

    def put_result(self, result: ActionResult) -> None:
        path = self.result_path(result.key)
        path.parent.mkdir(exist_ok=True)
        tmp = self.temp_path("ac")
        tmp.write_bytes(result.to_json())
        os.replace(tmp, path)
