"""jailbake cve."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ...core.errors import JailbakeError
from .. import context, grammar

if TYPE_CHECKING:
    from ...release.vex import Statement

NAME = "cve"
HELP = (
    "match the built components (Debian packages, the kernel, sources pinned by commit) "
    "against a local OSV vulnerability database; report, and write an OpenVEX document"
)
VEX_VARIABLE = "JAILBAKE_VEX"


def add_arguments(sp: argparse.ArgumentParser) -> None:
    grammar.config(sp)
    sp.add_argument(
        "--db",
        required=True,
        type=Path,
        metavar="DIR",
        help="a directory of OSV JSON records (osv.dev's per-ecosystem all.zip, unpacked: "
        "Debian, Linux, ...)",
    )
    sp.add_argument(
        "--vex",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help=f"OpenVEX statements to apply, beside those the layer names in {VEX_VARIABLE} "
        "(repeatable)",
    )
    sp.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="where cve.json, index.html and vex.openvex.json go (default: ARTIFACTS_DIR/cve)",
    )
    grammar.artifacts_dir(sp)
    grammar.cache_dir(sp)
    sp.add_argument(
        "--json", action="store_true", help="end with the report as one JSON line on stdout"
    )


def _layer_statements(args: argparse.Namespace, built: list[str]) -> list[Statement]:
    """The VEX files the layer names, inside its top repository."""
    from ...core import paths
    from ...release.artifacts import layer_names
    from ...release.vex import read

    layer = context.context_of(args, reading=True).layers(context.configs(args.config))
    if layer_names(layer) != built:
        raise JailbakeError(
            f"cve: {args.artifacts_dir} holds a build of {':'.join(built)}, not of "
            f"{':'.join(layer_names(layer))}; build it first"
        )
    statements = []
    for rel in layer.variables().get(VEX_VARIABLE, "").split():
        origin = f"{layer.files[-1]}: env: {VEX_VARIABLE}"
        statements += read(paths.check_inside(layer.top_dir, rel, origin=origin))
    return statements


def run(args: argparse.Namespace) -> int:
    from ...cache.store import default_cache_dir
    from ...release import cve
    from ...release.publish import load_manifest
    from ...release.vex import document as vex_document
    from ...release.vex import read
    from ...sources.fetch import git_dir
    from ...ui import cvehtml
    from ...ui.trace import write_atomic

    start = time.monotonic()
    if not args.db.is_dir():
        raise JailbakeError(f"--db {args.db}: not a directory of OSV records")
    manifest = load_manifest(args.artifacts_dir)
    statements = _layer_statements(args, manifest.get("layers", [])) if args.config else []
    for path in args.vex:
        statements += read(path)
    cache = args.cache_dir or default_cache_dir()

    def cached_repo(url: str) -> Path | None:
        found = git_dir(cache, url)
        return found if found.is_dir() else None

    report, db = cve.scan(manifest, args.db, cached_repo, statements)
    for line in db.malformed:
        print(f"[jailbake] skipped {line}", file=sys.stderr)
    doc = cve.document(report, db, args.db, manifest)
    report_dir = args.report_dir or args.artifacts_dir / "cve"
    report_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(report_dir / "cve.json", json.dumps(doc, indent=1, sort_keys=True) + "\n")
    cvehtml.write(report_dir, doc)
    vex_doc = vex_document(
        cve.vex_statements(report),
        f"https://jailbake.dev/vex/{cve.report_id(manifest, db)}",
        doc["as_of"],
    )
    write_atomic(report_dir / "vex.openvex.json", json.dumps(vex_doc, indent=1) + "\n")
    _table(doc["findings"])
    print(
        f"[jailbake] cve: {doc['components']} components, {len(db.records)} records "
        f"({len(db.malformed)} skipped): {doc['affected']} affecting, "
        f"{len(doc['findings']) - doc['affected']} settled by VEX; {report_dir}/index.html "
        f"({time.monotonic() - start:.1f}s)",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(doc, sort_keys=True))
    return 1 if doc["affected"] else 0


def _table(findings: list[dict[str, object]]) -> None:
    if not findings:
        return
    columns = ("id", "recipe", "component", "version", "fixed", "status")
    rows: list[list[str]] = [[c.upper() for c in columns]]
    rows += [[str(f[k]) for k in columns] for f in findings]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
