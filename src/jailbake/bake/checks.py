"""What `jailbake repro` last found of each recipe's result, for a build's trace and
report: the cache's check records (History.check_record), each with where its report
is, while the report there still lists that result."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ..cache.history import REPORT_FIELD, History
from ..core.files import read_limited

RESULTS = "repro.json"  # in a repro report's directory: what it checked, by key
RESULTS_LIMIT = 64 * 1024 * 1024


def checks_of(history: History, keys: Mapping[str, str]) -> dict[str, dict[str, object]]:
    """recipe -> the last repro check of its result (keys: recipe -> key). A check keeps
    where its report is only while that directory's repro.json lists the key: a later
    repro into the same directory, or one cut short, leaves the check unlinked."""
    listed: dict[str, frozenset[str]] = {}
    found: dict[str, dict[str, object]] = {}
    for name, key in keys.items():
        check = history.check_record(key)
        if check is None:
            continue
        where = check.pop(REPORT_FIELD, None)
        if isinstance(where, str):
            if where not in listed:
                listed[where] = _keys_listed(Path(where) / RESULTS)
            if key in listed[where]:
                check[REPORT_FIELD] = where
        found[name] = check
    return found


def without_report(check: Mapping[str, object]) -> dict[str, object]:
    """A check as manifest.json and the SPDX document say it: without where its report
    is, a path of this machine."""
    return {k: v for k, v in check.items() if k != REPORT_FIELD}


def _keys_listed(results: Path) -> frozenset[str]:
    """The keys of the results a repro.json says it checked (not those whose rebuild
    failed: they have no check), or none if it is not there or not one."""
    try:
        doc = json.loads(read_limited(results, RESULTS_LIMIT))
    except (OSError, ValueError, RecursionError):
        return frozenset()
    entries = doc.get("recipes") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return frozenset()
    return frozenset(
        e["key"]
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("key"), str) and not e.get("error")
    )
