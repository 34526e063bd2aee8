"""What earlier builds left in a cache, beside their results: each recipe's last key
(last.json), the executor each configuration was built with, the durations and logs of
the last builds, and where a failed step's work directory is kept."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..core.files import read_limited
from .store import ActionResult, Store

log = logging.getLogger(__name__)
LAST_FILE = "last.json"  # each recipe's key when it was last built or reused
LAST_SAVE_NS = 10 * 1_000_000_000  # at most this long between two saves of LAST_FILE
CHECK_LIMIT = 1024 * 1024  # a check record is a few hundred bytes
REPORT_FIELD = "report_dir"  # in a repro check's file: where its report went


class History:
    """The history of the builds that used a store; one per command, shared by its
    threads."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._last: dict[str, tuple[str, int]] | None = None  # LAST_FILE, read once
        self._last_pending: dict[str, tuple[str, int]] = {}  # recorded, not yet saved
        self._last_saved = time.time_ns()
        self._last_lock = threading.Lock()

    # -- what each recipe was built from last ------------------------------------
    # One file for every recipe: recipe -> [key, when it was recorded (ns since the
    # epoch)], read once per command and saved every LAST_SAVE_NS and when scheduling
    # ends. The later record of a recipe wins, whichever command saves last.
    def _read_last(self) -> dict[str, tuple[str, int]]:
        path = self.store.root / LAST_FILE
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return self._read_last_files()
        except (OSError, ValueError) as exc:
            log.warning("cache: %s cannot be read (%s); the last builds are forgotten", path, exc)
            return {}
        entries: dict[str, tuple[str, int]] = {}
        for recipe, entry in data.items() if isinstance(data, dict) else ():
            if isinstance(entry, str):  # as first written, without the time
                entries[recipe] = (entry, 0)
            elif isinstance(entry, list) and len(entry) == 2:
                key, when = entry
                if isinstance(key, str) and isinstance(when, int):
                    entries[recipe] = (key, when)
        return entries

    def _read_last_files(self) -> dict[str, tuple[str, int]]:
        """The keys of a cache written before LAST_FILE: a file per recipe in last/."""
        entries = {}
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.store.root / "last"):
                with contextlib.suppress(OSError), open(entry.path) as f:
                    if key := f.read().strip():
                        entries[entry.name] = (key, 0)
        return entries

    def _last_entries(self) -> dict[str, tuple[str, int]]:
        """This command's view (call with _last_lock held)."""
        if self._last is None:
            self._last = self._read_last()
        return self._last

    def record_last(self, recipe: str, key: str) -> None:
        """Note that recipe was built, reused or downloaded under key just now."""
        now = time.time_ns()
        with self._last_lock:
            self._last_entries()[recipe] = self._last_pending[recipe] = (key, now)
            due = now - self._last_saved >= LAST_SAVE_NS
            if due:
                self._last_saved = now
        if due:  # a build killed without a word keeps what it recorded until then
            try:
                self.save_last()
            except OSError as exc:  # tried again at the next save
                log.warning("cache: the last-built keys were not saved: %s", exc)

    def save_last(self) -> None:
        """Write the records made since the last save where they are later than what
        the file holds for a different key; nothing when every key is already there."""
        with self._last_lock:
            pending, self._last_pending = self._last_pending, {}
            self._last_saved = time.time_ns()
        if not pending:
            return
        try:
            with self.store.lock("last"):
                saved = self._read_last()
                changed = {
                    recipe: (key, when)
                    for recipe, (key, when) in pending.items()
                    if recipe not in saved or (saved[recipe][0] != key and when > saved[recipe][1])
                }
                saved.update(changed)
                if changed:
                    tmp = self.store.temp_path("last")
                    data = {recipe: list(entry) for recipe, entry in sorted(saved.items())}
                    try:
                        tmp.write_text(json.dumps(data, separators=(",", ":")))
                        os.replace(tmp, self.store.root / LAST_FILE)
                    finally:
                        tmp.unlink(missing_ok=True)
        except OSError:
            with self._last_lock:  # kept for the next save
                self._last_pending = {**pending, **self._last_pending}
            raise
        with self._last_lock:
            self._last = {**saved, **self._last_pending}

    def _config_state(self, configs: Sequence[Path]) -> Path:
        names = "\n".join(str(Path(c).resolve()) for c in configs)
        return self.store.root / "configs" / hashlib.sha256(names.encode()).hexdigest()[:24]

    def remember_executor(self, configs: Sequence[Path], executor: str) -> None:
        """Note which executor built these layer files, for list and explain."""
        if self.remembered_executor(configs) == executor:
            return
        tmp = self.store.temp_path("config")
        tmp.write_text(executor)
        os.replace(tmp, self._config_state(configs))

    def remembered_executor(self, configs: Sequence[Path]) -> str | None:
        try:
            return self._config_state(configs).read_text().strip() or None
        except OSError:
            return None

    def failed_dir(self, recipe: str, key: str) -> Path:
        """Where build --keep-failed keeps a failed step's work directory."""
        return self.store.root / "failed" / f"{recipe}-{key[:16]}"

    def last_duration(self, recipe: str) -> float | None:
        """Seconds the recipe's last build took, as its result records."""
        key = self.last_key(recipe)
        try:
            duration = (
                json.loads(self.store.result_path(key).read_bytes())["duration"] if key else None
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return float(duration) if isinstance(duration, int | float) else None

    def log_path(self, recipe: str) -> Path | None:
        """The log of the recipe's last build, failed ones included: the newest in logs/,
        else the copy its last result keeps."""
        name = re.compile(re.escape(recipe) + r"-[0-9a-f]{16}\.log")
        logs = [p for p in (self.store.root / "logs").iterdir() if name.fullmatch(p.name)]
        if logs:
            return max(logs, key=lambda p: p.stat().st_mtime_ns)
        key = self.last_key(recipe)
        if key is None:
            return None
        try:
            result = ActionResult.from_json(self.store.result_path(key).read_bytes())
        except (OSError, ValueError, TypeError):
            return None
        if result.log is not None and self.store.has_blob(result.log.hash):
            return self.store.blob_path(result.log.hash)
        return None

    # -- what jailbake repro found ---------------------------------------------------
    def record_check(self, key: str, check: dict[str, object], report_dir: Path) -> None:
        """What `jailbake repro` found of the result under key: reproducible or not,
        under which variations, and when (the manifest and the SBOM say it), and where
        its report went (for the build's trace and report only: a path of this
        machine)."""
        path = self.check_path(key)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{key}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**check, REPORT_FIELD: str(report_dir)}, sort_keys=True) + "\n")
        os.replace(tmp, path)

    def check_path(self, key: str) -> Path:
        return self.store.root / "checks" / f"{key}.json"

    def check_record(self, key: str) -> dict[str, object] | None:
        """The last repro check of the result under key, with where its report went (an
        absolute path, if the record names one): only the fields repro writes, each of
        its kind; None if there is none, or it is not one."""
        if not re.fullmatch(r"[0-9a-f]{64}", key):
            return None
        try:
            return _valid_check(json.loads(read_limited(self.check_path(key), CHECK_LIMIT)))
        except (OSError, ValueError, RecursionError):
            return None

    def last_key(self, recipe: str) -> str | None:
        with self._last_lock:
            entry = self._last_entries().get(recipe)
        return entry[0] if entry else None


def differences(check: Mapping[str, object]) -> str:
    """What the rebuilds of a check that is not reproducible differed under, in words."""
    under = check.get("differs_under")
    names = [str(n) for n in under] if isinstance(under, list) else []
    if names == ["none"]:  # the rebuild with no variation differed
        return "differs with no variation (not deterministic)"
    if not names:
        return "differs under all variations at once, under none alone"
    return f"differs under {', '.join(names)}"


_VARIATION = re.compile(r"[a-z_]{1,32}")  # a variation's name, 'all' or 'none'
_CHECKED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def _valid_check(found: object) -> dict[str, object] | None:
    """A check record as record_check writes it, from a file anyone with the cache could
    have changed: its fields checked by kind, nothing else kept."""
    if not isinstance(found, dict) or not isinstance(found.get("reproducible"), bool):
        return None
    checked = found.get("checked")
    if not isinstance(checked, str) or not _CHECKED.fullmatch(checked):
        return None
    check: dict[str, object] = {"reproducible": found["reproducible"], "checked": checked}
    for name in ("varied", "not_varied", "differs_under"):
        names = found.get(name)
        if not isinstance(names, list) or not all(
            isinstance(n, str) and _VARIATION.fullmatch(n) for n in names
        ):
            return None
        check[name] = list(names)
    where = found.get(REPORT_FIELD)
    if isinstance(where, str) and os.path.isabs(where) and where.isprintable():
        check[REPORT_FIELD] = os.path.normpath(where)  # printable: no lone surrogates
    return check
