"""Which known vulnerabilities a build's components carry (jailbake cve): the
components of its manifest matched against a local OSV database, with the layer's
VEX statements applied.

- Debian packages of each root file system, by source package and version, against
  the ecosystem Debian:<VERSION_ID> (as osv.dev names it);
- a recipe that names its product (`cve_product: {ecosystem: Linux, name: Kernel}`)
  by its version;
- a source pinned by commit (git, or a GitHub archive of a commit) against GIT ranges
  of the same repository: by ancestry where the cache holds its history, otherwise
  only where the commit is one a range names."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import gitcmd
from . import components, osv
from .vex import Statement

_HEX = re.compile(r"[0-9a-f]{7,64}")
_GITHUB_ARCHIVE = re.compile(
    r"(https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)/archive/([0-9a-f]{40})\.tar\.gz"
)


@dataclass(frozen=True)
class Component:
    ref: str  # recipe:NAME, or debsrc:RECIPE:SOURCE
    recipe: str
    name: str
    version: str
    purl: str
    ecosystem: str = ""  # matched by package: (ecosystem, package) at version
    package: str = ""
    repo: str = ""  # matched by GIT ranges: the repository and commit
    commit: str = ""
    git_dir: Path | None = None  # a repository holding its history, if the cache has one
    binaries: tuple[tuple[str, str], ...] = ()  # a Debian source's binary packages, versions

    def named_by(self, product: str) -> bool:
        """Whether a VEX statement's product names this component: recipe:NAME for a
        recipe's own component, or a package URL of it (or, for a Debian source
        package, of one of its binary packages), with or without version; qualifiers
        are not compared."""
        if product.startswith("recipe:"):
            return not self.binaries and product == f"recipe:{self.recipe}"
        wanted = _purl(product)
        if wanted is None:
            return False
        candidates = [(_purl(self.purl), self.version)]
        candidates += [(_purl(f"pkg:deb/debian/{name}"), version)
                       for name, version in self.binaries]  # fmt: skip
        for purl, version in candidates:
            if purl is not None and (purl.type, purl.namespace, purl.name) == (
                wanted.type, wanted.namespace, wanted.name
            ) and wanted.version in (None, version):  # fmt: skip
                return True
        return False


def _purl(text: str) -> Any:
    from packageurl import PackageURL

    try:
        return PackageURL.from_string(text) if text.startswith("pkg:") else None
    except ValueError:
        return None


@dataclass
class Finding:
    record: osv.Record
    component: Component
    fixed: str = ""
    status: str = "affected"
    justification: str = ""
    impact: str = ""
    statement_source: str = ""
    how: str = ""  # version range, listed version, commit ancestry, named commit

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.record.id,
            "aliases": list(self.record.aliases),
            "summary": self.record.summary,
            "severity": self.record.severity,
            "record": self.record.file,
            "recipe": self.component.recipe,
            "component": self.component.name,
            "version": self.component.version,
            "purl": self.component.purl,
            "binaries": [name for name, _ in self.component.binaries],
            "fixed": self.fixed,
            "status": self.status,
            "justification": self.justification,
            "impact": self.impact,
            "vex": self.statement_source,
            "how": self.how,
        }


@dataclass
class Report:
    components: list[Component]
    findings: list[Finding] = field(default_factory=list)
    unevaluated: int = 0  # GIT ranges of a component whose history is not at hand

    @property
    def affected(self) -> list[Finding]:
        return [f for f in self.findings if f.status in ("affected", "under_investigation")]


def components_of(
    manifest: Mapping[str, Any], git_dir: Callable[[str], Path | None]
) -> list[Component]:
    """What the manifest's build holds that a database can name.
    git_dir(url): the cached repository of a git source (None if there is none)."""
    from packageurl import PackageURL

    found: list[Component] = []
    debs = components.debs(manifest)
    for recipe in manifest.get("recipes", []):
        name = str(recipe["name"])
        purl = components.purl_of(recipe)
        product = recipe.get("cve_product")
        if isinstance(product, dict):
            found.append(Component(
                f"recipe:{name}", name, name, str(recipe["version"]), purl,
                ecosystem=str(product["ecosystem"]), package=str(product["name"]),
            ))  # fmt: skip
        for source in recipe.get("sources", []):
            repo, commit, where = "", "", None
            if "git" in source:
                repo, commit = str(source["git"]), str(source["commit"])
                where = git_dir(repo)
            elif m := _GITHUB_ARCHIVE.fullmatch(str(source.get("url", ""))):
                repo, commit = m[1], m[2]
            if repo and _HEX.fullmatch(commit):
                found.append(Component(f"recipe:{name}", name, name, str(recipe["version"]),
                                       purl, repo=repo, commit=commit, git_dir=where))  # fmt: skip
        os_info = recipe.get("os") or {}
        if os_info.get("id") != "debian" or not os_info.get("version_id"):
            continue
        ecosystem = f"Debian:{os_info['version_id']}"
        sources: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for deb in debs.get(name, []):
            p = deb.package
            sources.setdefault((p.source, p.source_version or p.version), []).append(
                (p.name, p.version)
            )
        for (source_name, version), binaries in sorted(sources.items()):
            source_purl = PackageURL("deb", "debian", source_name, version, {"arch": "source"})
            found.append(Component(
                f"debsrc:{name}:{source_name}", name, source_name, version,
                str(source_purl.to_string()), ecosystem=ecosystem, package=source_name,
                binaries=tuple(sorted(binaries)),
            ))  # fmt: skip
    return found


def _is_ancestor(git_dir: Path, older: str, newer: str) -> bool | None:
    """Whether older is an ancestor of (or is) newer; None if git cannot tell."""
    if older == newer:
        return True
    cp = gitcmd.run("--git-dir", git_dir, "merge-base", "--is-ancestor", older, newer,
                    check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return {0: True, 1: False}.get(cp.returncode)


def git_affected(component: Component, r: osv.Range) -> tuple[bool, str] | None:
    """(affected, how) of a GIT range; None when it cannot be told."""
    events = [(e, v.lower()) for e, v in r.events]
    if not all(v == "0" or _HEX.fullmatch(v) for _, v in events):
        return None  # not commits: nothing to hand to git
    x = component.commit
    if component.git_dir is None:
        if any(v == x for e, v in events if e in ("fixed", "limit")):
            return False, "named commit"
        if any(v == x for e, v in events if e in ("introduced", "last_affected")):
            return True, "named commit"
        return None
    git_dir = component.git_dir

    def before(commit: str) -> bool:
        return commit == "0" or bool(_is_ancestor(git_dir, commit, x))

    introduced = any(before(v) for e, v in events if e == "introduced")
    fixed = any(v != "0" and before(v) for e, v in events if e in ("fixed", "limit"))
    past_last = any(v != x and before(v) for e, v in events if e == "last_affected")
    return introduced and not fixed and not past_last, "commit ancestry"


def match(db: osv.Database, found: Sequence[Component]) -> Report:
    report = Report(list(found))
    seen: set[tuple[str, str]] = set()

    def add(finding: Finding) -> None:
        if (finding.record.id, finding.component.ref) not in seen:
            seen.add((finding.record.id, finding.component.ref))
            report.findings.append(finding)

    by_repo: dict[str, list[tuple[osv.Record, osv.Range]]] = {}
    for record, _, r in db.git:
        by_repo.setdefault(osv.normalize_repo(r.repo), []).append((record, r))
    for component in found:
        if component.ecosystem:
            for record, affected in db.by_package.get((component.ecosystem, component.package), []):
                hit, fixed = osv.version_affected(affected, component.version)
                if hit:
                    how = "listed version" if component.version in affected.versions else "range"
                    add(Finding(record, component, fixed=fixed, how=how))
        if component.repo:
            for record, r in by_repo.get(osv.normalize_repo(component.repo), []):
                verdict = git_affected(component, r)
                if verdict is None:
                    report.unevaluated += 1
                elif verdict[0]:
                    add(Finding(record, component, how=verdict[1]))
    report.findings.sort(key=lambda f: (f.component.recipe, f.component.name, f.record.id))
    return report


def apply_vex(report: Report, statements: Sequence[Statement]) -> int:
    """Apply the statements that name a finding's vulnerability (by id or alias) and
    its component; of several, the last one given counts (OpenVEX: the latest
    statement wins), so --vex files override the layer's. Returns how many findings
    a statement set."""
    settled = 0
    for finding in report.findings:
        names = finding.record.names
        matching = [
            s for s in statements
            if s.vulnerabilities & names and any(finding.component.named_by(p) for p in s.products)
        ]  # fmt: skip
        if matching:
            statement = matching[-1]
            finding.status = statement.status
            finding.justification = statement.justification
            finding.impact = statement.impact
            finding.statement_source = statement.source
            settled += 1
    return settled


def vex_statements(report: Report) -> list[dict[str, Any]]:
    """Every finding as an OpenVEX statement."""
    statements = []
    for f in report.findings:
        entry: dict[str, Any] = {
            "vulnerability": {"name": f.record.id, **({"aliases": list(f.record.aliases)}
                                                    if f.record.aliases else {})},
            "products": [{"@id": f.component.purl or f.component.ref}],
            "status": f.status,
        }  # fmt: skip
        if f.justification:
            entry["justification"] = f.justification
        if f.impact:
            entry["impact_statement"] = f.impact
        if f.status == "affected":
            entry["action_statement"] = (
                f"update to {f.fixed} or later" if f.fixed else "no fixed version is known"
            )
        statements.append(entry)
    return statements


def report_id(manifest: Mapping[str, Any], db: osv.Database) -> str:
    """The same build against the same records: the same id."""
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode())
    for ident, modified in sorted((r.id, r.modified) for r in db.records):
        digest.update(f"{ident}\0{modified}\n".encode())
    return digest.hexdigest()[:32]


def as_of(db: osv.Database, manifest: Mapping[str, Any]) -> str:
    """When the findings were true: the newest record's modification time (the
    build's SOURCE_DATE_EPOCH for a database whose records say none)."""
    newest = max((r.modified for r in db.records if r.modified), default="")
    if newest:
        return newest.split(".", 1)[0].removesuffix("Z") + "Z"
    from datetime import UTC, datetime

    sde = int(manifest.get("source_date_epoch", 0))
    return datetime.fromtimestamp(sde, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scan(
    manifest: Mapping[str, Any],
    db_dir: Path,
    git_dir: Callable[[str], Path | None],
    statements: Sequence[Statement] = (),
) -> tuple[Report, osv.Database]:
    """The manifest's components against the database under db_dir, VEX applied."""
    found = components_of(manifest, git_dir)
    wanted = {(c.ecosystem, c.package) for c in found if c.ecosystem}
    db = osv.load(db_dir, lambda ecosystem, name: (ecosystem, name) in wanted)
    report = match(db, found)
    apply_vex(report, statements)
    return report, db


def document(
    report: Report, db: osv.Database, db_dir: Path, manifest: Mapping[str, Any]
) -> dict[str, Any]:
    """cve.json: the database read, the components matched, every finding; the same
    build against the same database gives the same document."""
    return {
        "as_of": as_of(db, manifest),
        "targets": list(manifest.get("targets", [])),
        "database": {
            "dir": str(db_dir),
            "files": db.files,
            "records": len(db.records),
            "malformed": list(db.malformed),
        },
        "components": len(report.components),
        "git_ranges_not_evaluated": report.unevaluated,
        "affected": len(report.affected),
        "findings": [f.to_dict() for f in report.findings],
    }
