"""A shared remote cache over the HTTP cache protocol of Bazel's remote caches.

GET/PUT <url>/ac/<key> hold result records (the same JSON as the local cache's
ac/), GET/PUT <url>/cas/<sha256> hold the files of output trees and build logs.
bazel-remote, nginx with WebDAV, or any server that stores what is PUT serves it.

Nothing from the server is trusted: a record must be for the key asked, its file
list must hash to its output digest, every blob must hash to its name, and the
rebuilt tree must hash to the output digest again. Anything else is refused,
reported, and the recipe is built locally. A server that cannot be reached is
reported once and not asked again during the build. Uploads put the blobs
first and the record last, so a reader never finds a record whose files are
missing.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ..core import net
from ..core.files import remove_tree
from .keys import digest_of, file_sha256
from .store import ActionResult, Store

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)


class Refused(Exception):
    """The server's answer cannot be used."""


class RemoteCache:
    def __init__(self, url: str, store: Store, *, readonly: bool = False) -> None:
        self.base = url.rstrip("/")
        self.store = store
        self.readonly = readonly
        self._session: requests.Session | None = None
        self._lock = threading.Lock()
        self.unreachable: str | None = None
        self.hits = 0
        self.uploads = 0

    # -- HTTP ---------------------------------------------------------------------
    def _http(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                import requests

                session = requests.Session()
                session.headers["User-Agent"] = "jailbake"
                self._session = session
            return self._session

    def _gone(self, exc: Exception) -> None:
        with self._lock:
            if self.unreachable is None:
                self.unreachable = str(exc)
                log.warning(
                    "remote cache %s unreachable or misbehaving (%s); building locally without it",
                    self.base,
                    exc,
                )

    def _available(self) -> bool:
        return self.unreachable is None

    def _get(self, path: str, dest: Path | None = None, size: int | None = None) -> bytes | None:
        """The body at path (written to dest, a new file, when given: size bytes of it);
        None if the server lacks it or is unusable. Records are capped at net.RECORD's
        limit; every answer has a deadline and a floor rate (net.Bounds)."""
        import requests

        bounds = net.CACHE_RECORD if size is None else net.blob_bounds(size)
        try:
            with net.request(self._http(), "GET", f"{self.base}/{path}", bounds) as resp:
                if resp.status_code == 404:
                    return None
                if resp.status_code != 200:
                    raise Refused(f"GET {path}: HTTP {resp.status_code}")
                if dest is None:
                    return net.read_all(resp, bounds)
                with dest.open("xb") as out:
                    net.save(resp, out, bounds)
                return b""
        except net.TooLarge as exc:
            raise Refused(str(exc)) from None
        except (requests.RequestException, net.NetError) as exc:
            self._gone(exc)
            return None

    def _has(self, path: str) -> bool:
        with net.request(self._http(), "HEAD", f"{self.base}/{path}", net.CACHE_RECORD) as resp:
            return resp.status_code == 200

    def _put(self, path: str, source: Path | bytes) -> None:
        url = f"{self.base}/{path}"
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        bounds = net.blob_bounds(size)
        if isinstance(source, bytes):
            resp = net.request(self._http(), "PUT", url, bounds, data=source)
        else:
            with source.open("rb") as f:
                resp = net.request(self._http(), "PUT", url, bounds, data=f)
        resp.close()
        if resp.status_code not in (200, 201, 204):
            raise Refused(f"PUT {path}: HTTP {resp.status_code} {resp.reason}")

    # -- reading --------------------------------------------------------------------
    def fetch(self, recipe: str, key: str, source_date_epoch: int) -> ActionResult | None:
        """The result for key, stored locally from the server; None if it has none or
        what it has cannot be used."""
        if not self._available():
            return None
        try:
            raw = self._get(f"ac/{key}")
            if raw is None:
                return None
            result = self._check_record(key, raw)
            self._fetch_tree(result, source_date_epoch)
            if result.log is not None and not self.store.has_blob(result.log.hash):
                self._fetch_blob(result.log.hash, size=result.log.size_bytes)
            for sha256 in _license_texts(result):
                if not self.store.has_blob(sha256):
                    self._fetch_blob(sha256)
        except Refused as exc:
            log.warning("remote cache: %s: refused %s; building it locally", recipe, exc)
            return None
        if not self._available():
            return None
        self.store.put_result(result)
        with self._lock:
            self.hits += 1
        return result

    @staticmethod
    def _check_record(key: str, raw: bytes) -> ActionResult:
        """The record, if it is one for key whose file list is a well-formed tree: each
        path relative and new, inside a directory the list itself declares."""
        try:
            result = ActionResult.from_json(raw)
            outputs = list(result.outputs)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise Refused(f"ac/{key}: not a result record ({exc})") from None
        if result.key != key:
            raise Refused(f"ac/{key}: a record for another key ({str(result.key)[:16]})")
        if digest_of(outputs) != result.output_digest:
            raise Refused(f"ac/{key}: its file list does not hash to its output digest")
        seen: dict[str, str] = {}
        for entry in outputs:
            if not isinstance(entry, dict) or entry.get("type") not in ("dir", "file", "symlink"):
                raise Refused(f"ac/{key}: not a file list entry: {str(entry)[:80]}")
            path = PurePosixPath(str(entry.get("path", "")))
            rel = path.as_posix()
            if path.is_absolute() or ".." in path.parts or not path.parts or rel in seen:
                raise Refused(f"ac/{key}: output path {rel!r} leaves the tree or repeats")
            parent = path.parent.as_posix()
            if parent != "." and seen.get(parent) != "dir":
                raise Refused(f"ac/{key}: {rel!r} is not inside a directory of the list")
            if entry["type"] == "file" and not (
                isinstance(entry.get("sha256"), str)
                and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
                and isinstance(entry.get("size"), int)
            ):
                raise Refused(f"ac/{key}: {rel!r} has no valid sha256 and size")
            if entry["type"] == "symlink" and not isinstance(entry.get("target"), str):
                raise Refused(f"ac/{key}: {rel!r} has no link target")
            seen[rel] = entry["type"]
        if result.log is not None and not (
            re.fullmatch(r"[0-9a-f]{64}", str(result.log.hash))
            and isinstance(result.log.size_bytes, int)
            and result.log.size_bytes >= 0
        ):
            raise Refused(f"ac/{key}: the log digest is not a sha256 and size")
        return result

    def _fetch_blob(self, sha256: str, dest: Path | None = None, size: int | None = None) -> Path:
        target = dest or self.store.temp_path("remote-blob")
        try:
            if self._get(f"cas/{sha256}", target, size=size) is None:
                if not self._available():
                    raise Refused("the server went away")
                raise Refused(f"cas/{sha256}: missing")
            actual = file_sha256(target)
            if actual != sha256:
                raise Refused(f"cas/{sha256}: its content has sha256 {actual}")
        except BaseException:  # refused, cut off or interrupted: nothing half-read stays
            target.unlink(missing_ok=True)
            raise
        if dest is None:
            self.store.add_blob(target, sha256)
            return self.store.blob_path(sha256)
        return target

    def _fetch_tree(self, result: ActionResult, source_date_epoch: int) -> None:
        if self.store.tree_path(result.output_digest).is_dir():
            if self.store.verify_tree(result.output_digest):
                return
            self.store.evict_tree(result.output_digest)  # damaged here: take the server's
        tree = self.store.temp_path("remote-tree")
        tree.mkdir()
        try:
            # Sorted, checked list: each parent is a directory made here before its
            # entries, so nothing is written through a link; files are created new.
            for entry in result.outputs:
                path = tree / entry["path"]
                if entry["type"] == "dir":
                    path.mkdir()
                elif entry["type"] == "symlink":
                    path.symlink_to(entry["target"])
                else:
                    self._fetch_blob(entry["sha256"], path, entry["size"])
                    path.chmod(0o755 if entry.get("exec") else 0o644)
            digest, _ = self.store.add_tree(tree, mtime=source_date_epoch)  # moves it away
        except OSError as exc:
            raise Refused(f"ac/{result.key}: its files cannot be laid out ({exc})") from None
        finally:
            if tree.exists() or tree.is_symlink():
                remove_tree(tree)
        if digest != result.output_digest:  # cannot happen after the checks above
            raise Refused(f"ac/{result.key}: the files make tree {digest[:16]}")

    # -- writing --------------------------------------------------------------------
    def upload(self, result: ActionResult) -> None:
        """Offer a locally built result to the team: blobs first, the record last."""
        if self.readonly or not self._available():
            return
        import requests

        tree = self.store.tree_path(result.output_digest)
        try:
            blobs: dict[str, Path] = {}
            for entry in result.outputs:
                if entry["type"] == "file":
                    blobs[entry["sha256"]] = tree / entry["path"]
            if result.log is not None and self.store.has_blob(result.log.hash):
                blobs[result.log.hash] = self.store.blob_path(result.log.hash)
            for sha256 in _license_texts(result):  # the build checked and kept them
                if self.store.has_blob(sha256):
                    blobs[sha256] = self.store.blob_path(sha256)
            for sha256, path in sorted(blobs.items()):
                if not self._has(f"cas/{sha256}"):
                    self._put(f"cas/{sha256}", path)
            self._put(f"ac/{result.key}", result.to_json())
        except (requests.RequestException, net.NetError) as exc:
            self._gone(exc)
            return
        except Refused as exc:
            log.warning("remote cache: %s: upload failed: %s", result.recipe, exc)
            return
        with self._lock:
            self.uploads += 1


def _license_texts(result: ActionResult) -> list[str]:
    """The sha256 of the licence texts its recipe pins (the SBOM quotes them): they
    travel with the result, checked against their pins."""
    recipe = result.inputs.get("recipe") if isinstance(result.inputs, dict) else None
    pins = recipe.get("license_files") if isinstance(recipe, dict) else None
    return sorted(
        str(p["sha256"])
        for p in (pins if isinstance(pins, list) else [])
        if isinstance(p, dict) and re.fullmatch(r"[0-9a-f]{64}", str(p.get("sha256")))
    )
