"""A local vulnerability database in OSV format (https://ossf.github.io/osv-schema/):
a directory of OSV JSON records, as osv.dev publishes them per ecosystem (its
`Debian/all.zip` or `Linux/all.zip`, unpacked), read offline.

Records are data from outside: each is checked for the fields matching needs (id,
affected packages, ranges and events of the kinds the schema names) and one that
does not pass is skipped with one line naming its file; the rest are still read.
Version ranges are evaluated as the schema says: ECOSYSTEM ranges with the
ecosystem's own ordering (dpkg's for Debian, numeric for Linux and others), SEMVER
numerically, GIT by commit ancestry in a repository's history when one is at hand."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import files

log = logging.getLogger(__name__)

MAX_RECORD = 16 << 20
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,99}")
# A version or commit in an event or a versions list: printable ASCII of versions only
# (it is compared, printed and handed to git).
_VERSION = re.compile(r"[A-Za-z0-9.+~:_-]{1,200}")
_NAME = re.compile(r"[^\x00-\x1f\x7f]{0,300}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z")
_DIGITS = frozenset("0123456789")
_TEXT_LIMIT = 4096
RANGE_TYPES = ("ECOSYSTEM", "SEMVER", "GIT")
EVENTS = ("introduced", "fixed", "last_affected", "limit")


@dataclass(frozen=True)
class Range:
    kind: str  # ECOSYSTEM, SEMVER or GIT
    events: tuple[tuple[str, str], ...]  # (event, version or commit), in record order
    repo: str = ""  # GIT: the repository's URL


@dataclass(frozen=True)
class Affected:
    ecosystem: str
    name: str
    ranges: tuple[Range, ...]
    versions: frozenset[str]


@dataclass(frozen=True)
class Record:
    id: str
    aliases: tuple[str, ...]  # and the upstream ids it stands for (Debian's CVE ids)
    summary: str
    severity: str  # a CVSS vector or a database's own word, '' if none
    affected: tuple[Affected, ...]
    file: str
    modified: str = ""

    @property
    def names(self) -> set[str]:
        """The ids a VEX statement may name it by."""
        return {self.id, *self.aliases}


@dataclass
class Database:
    records: list[Record] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)  # one line each
    files: int = 0
    by_package: dict[tuple[str, str], list[tuple[Record, Affected]]] = field(default_factory=dict)
    git: list[tuple[Record, Affected, Range]] = field(default_factory=list)


class RecordError(ValueError):
    pass


def _text(value: Any, where: str, *, limit: int = _TEXT_LIMIT) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RecordError(f"{where}: expected a string")
    return value[:limit]


def _range(raw: Any, where: str) -> Range:
    if not isinstance(raw, dict):
        raise RecordError(f"{where}: expected an object")
    kind = raw.get("type")
    if kind not in RANGE_TYPES:
        raise RecordError(f"{where}.type: expected one of {', '.join(RANGE_TYPES)}")
    events = raw.get("events")
    if not isinstance(events, list) or not events:
        raise RecordError(f"{where}.events: expected a list of events")
    parsed = []
    for i, event in enumerate(events):
        if not isinstance(event, dict) or len(event) != 1:
            raise RecordError(f"{where}.events[{i}]: expected one of {', '.join(EVENTS)}")
        ((name, value),) = event.items()
        if name not in EVENTS:
            raise RecordError(f"{where}.events[{i}]: expected one of {', '.join(EVENTS)}")
        if not isinstance(value, str) or not _VERSION.fullmatch(value):
            raise RecordError(f"{where}.events[{i}].{name}: expected a version or a commit")
        parsed.append((name, value))
    repo = _text(raw.get("repo"), f"{where}.repo", limit=500)
    if kind == "GIT" and not repo:
        raise RecordError(f"{where}.repo: a GIT range names its repository")
    return Range(str(kind), tuple(parsed), repo)


def _severity(data: Mapping[str, Any]) -> str:
    severity = data.get("severity") or []
    if not isinstance(severity, list):
        raise RecordError("severity: expected a list")
    for entry in severity:
        if isinstance(entry, dict) and isinstance(entry.get("score"), str):
            return str(entry["score"])[:200]
    for affected in data.get("affected") or []:
        specific = affected.get("ecosystem_specific") if isinstance(affected, dict) else None
        if isinstance(specific, dict) and isinstance(specific.get("urgency"), str):
            return str(specific["urgency"])[:40]
    specific = data.get("database_specific")
    if isinstance(specific, dict) and isinstance(specific.get("severity"), str):
        return str(specific["severity"])[:40]
    return ""


def parse(data: Any, file: str) -> Record:
    """One OSV record, checked; RecordError names what is wrong."""
    if not isinstance(data, dict):
        raise RecordError("expected an OSV record (a JSON object)")
    ident = data.get("id")
    if not isinstance(ident, str) or not _ID.fullmatch(ident):
        raise RecordError("id: expected an OSV id like CVE-2024-1234 or DSA-5555-1")
    aliases = []
    for key in ("aliases", "upstream"):
        ids = data.get(key) or []
        if not isinstance(ids, list) or not all(isinstance(a, str) and _ID.fullmatch(a)
                                                for a in ids):  # fmt: skip
            raise RecordError(f"{key}: expected a list of ids")
        aliases += [a for a in ids if a not in aliases]
    modified = data.get("modified")
    if modified is not None and not (isinstance(modified, str) and _TIME.fullmatch(modified)):
        raise RecordError("modified: expected a UTC time like 2026-01-01T00:00:00Z")
    raw = data.get("affected")
    if not isinstance(raw, list):
        raise RecordError("affected: expected a list")
    affected = []
    for i, entry in enumerate(raw):
        where = f"affected[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("package"), dict):
            raise RecordError(f"{where}.package: expected an object")
        package = entry["package"]
        ecosystem = _text(package.get("ecosystem"), f"{where}.package.ecosystem", limit=100)
        name = _text(package.get("name"), f"{where}.package.name", limit=300)
        if not (_NAME.fullmatch(ecosystem) and _NAME.fullmatch(name)):
            raise RecordError(f"{where}.package: expected names without control characters")
        raw_ranges = entry.get("ranges") or []
        if not isinstance(raw_ranges, list):
            raise RecordError(f"{where}.ranges: expected a list")
        ranges = tuple(_range(r, f"{where}.ranges[{j}]") for j, r in enumerate(raw_ranges))
        versions = entry.get("versions") or []
        if not isinstance(versions, list) or not all(
            isinstance(v, str) and _VERSION.fullmatch(v) for v in versions
        ):
            raise RecordError(f"{where}.versions: expected a list of versions")
        affected.append(Affected(ecosystem, name, ranges, frozenset(versions)))
    return Record(
        id=ident,
        aliases=tuple(aliases),
        summary=_text(data.get("summary") or data.get("details"), "summary", limit=300),
        severity=_severity(data),
        affected=tuple(affected),
        file=file,
        modified=str(modified or ""),
    )


def _files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):  # links are not followed
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(".json"):
                yield Path(dirpath) / name


def load(root: Path, wanted: Callable[[str, str], bool] | None = None) -> Database:
    """Every record under root; wanted(ecosystem, name): which packages to index (GIT
    ranges are always kept). A record that cannot be read is one line in malformed."""
    db = Database()
    for path in _files(root):
        db.files += 1
        rel = str(path.relative_to(root))
        try:
            data = json.loads(files.read_limited(path, MAX_RECORD))
            record = parse(data, rel)
        except (OSError, ValueError, RecursionError) as exc:  # RecordError: a ValueError
            line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            db.malformed.append(f"{path}: {line}")
            continue
        db.records.append(record)
        for affected in record.affected:
            if wanted is None or wanted(affected.ecosystem, affected.name):
                db.by_package.setdefault((affected.ecosystem, affected.name), []).append(
                    (record, affected)
                )
            db.git += [(record, affected, r) for r in affected.ranges if r.kind == "GIT"]
    return db


# -- version orderings ---------------------------------------------------------------


def _digit(c: str) -> bool:
    return c in _DIGITS


def _order(c: str) -> int:
    if _digit(c):
        return 0
    if c.isascii() and c.isalpha():
        return ord(c)
    if c == "~":
        return -1
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    """dpkg's comparison of an upstream version or a revision."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not _digit(a[i])) or (j < len(b) and not _digit(b[j])):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and _digit(a[i]) and j < len(b) and _digit(b[j]):
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and _digit(a[i]):
            return 1
        if j < len(b) and _digit(b[j]):
            return -1
        if first_diff:
            return first_diff
    return 0


def _split_debian(version: str) -> tuple[int, str, str]:
    epoch, _, rest = version.partition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return (int(epoch) if epoch and all(map(_digit, epoch)) else 0), upstream, revision


def debian_compare(a: str, b: str) -> int:
    """dpkg --compare-versions: negative, zero or positive."""
    ea, ua, ra = _split_debian(a)
    eb, ub, rb = _split_debian(b)
    if ea != eb:
        return ea - eb
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)


def _numeric_parts(v: str) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if all(map(_digit, p)) else (1, p)
            for p in re.split(r"[.+~_]", v) if p]  # fmt: skip


def _parts_compare(a: str, b: str) -> int:
    pa, pb = _numeric_parts(a), _numeric_parts(b)
    for x, y in zip(pa, pb, strict=False):
        if x != y:
            return -1 if x < y else 1
    return (len(pa) > len(pb)) - (len(pa) < len(pb))


def numeric_compare(a: str, b: str) -> int:
    """Numbers numerically, words as text, part by part: 5.4.16 < 5.4.100 < 5.10; a
    pre-release (6.8-rc1, 1.0.0-beta) before its release, as SemVer orders them."""

    def split(v: str) -> tuple[str, str]:
        main, sep, pre = v.removeprefix("v").partition("-")
        return (main, pre) if sep and pre[:1].isalpha() else (v.removeprefix("v"), "")

    (ma, pa), (mb, pb) = split(a), split(b)
    main = _parts_compare(ma.replace("-", "."), mb.replace("-", "."))
    if main or pa == pb:
        return main
    if not pa or not pb:
        return 1 if not pa else -1  # the release after its pre-releases
    return _parts_compare(pa.replace("-", "."), pb.replace("-", "."))


def comparator(ecosystem: str) -> Callable[[str, str], int]:
    return debian_compare if ecosystem.split(":", 1)[0] in ("Debian", "Ubuntu") else numeric_compare


Compare = Callable[[str, str], int]


def in_range(version: str, events: Sequence[tuple[str, str]], compare: Compare) -> bool:
    """Whether version lies in the range the events describe (OSV's evaluation: events
    sorted by version, introduced '0' first; introduced opens, fixed and limit close at
    their version, last_affected after it)."""

    def key(event: tuple[str, str]) -> tuple[int, str]:
        return (0, "") if event[1] == "0" else (1, event[1])

    def cmp(x: tuple[str, str], y: tuple[str, str]) -> int:
        kx, ky = key(x), key(y)
        if kx[0] != ky[0]:
            return kx[0] - ky[0]
        return 0 if kx[0] == 0 else compare(x[1], y[1])

    affected = False
    for name, value in sorted(events, key=functools.cmp_to_key(cmp)):
        at = value == "0" or compare(version, value) >= 0
        if name == "introduced" and at:
            affected = True
        elif name != "introduced" and value != "0":
            after = compare(version, value)
            if after > 0 or (after == 0 and name != "last_affected"):
                affected = False
    return affected


def version_affected(affected: Affected, version: str) -> tuple[bool, str]:
    """(affected, the first fixed version after it, if the record names one)."""
    if version in affected.versions:
        return True, _fixed(affected, version)
    compare = comparator(affected.ecosystem)
    for r in affected.ranges:
        if r.kind in ("ECOSYSTEM", "SEMVER") and in_range(version, r.events, compare):
            return True, _fixed(affected, version)
    return False, ""


def _fixed(affected: Affected, version: str) -> str:
    compare = comparator(affected.ecosystem)
    fixes = [v for r in affected.ranges if r.kind != "GIT" for e, v in r.events
             if e == "fixed" and compare(v, version) > 0]  # fmt: skip
    if not fixes:
        return ""
    return min(fixes, key=functools.cmp_to_key(compare))


def normalize_repo(url: str) -> str:
    """A repository URL as records and recipes may both write it."""
    url = url.strip().lower().rstrip("/").removesuffix(".git")
    return re.sub(r"^(?:git\+)?(?:https?|git|ssh)://(?:git@)?", "", url)
