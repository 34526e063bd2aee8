"""The cve report's page (index.html beside cve.json): each finding with its
component, version, severity, the fixed version and what the layer's VEX says of it.
Self-contained, like build-report.html."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from .report import STYLE
from .trace import write_atomic

INDEX = "index.html"
_OSV = "https://osv.dev/vulnerability/"


def _row(f: dict[str, Any]) -> str:
    ident = html.escape(f["id"])
    status = html.escape(f["status"])
    cls = "failed" if f["status"] in ("affected", "under_investigation") else "ok"
    note = " ".join(x for x in (f["justification"], f["impact"]) if x)
    component = html.escape(f["component"])
    if f["binaries"] and f["binaries"] != [f["component"]]:
        component += f' <span class="dim">({html.escape(", ".join(f["binaries"]))})</span>'
    return (
        f'<tr><td><a href="{_OSV}{html.escape(f["id"], quote=True)}">{ident}</a></td>'
        f"<td>{html.escape(f['recipe'])}</td><td>{component}</td>"
        f"<td>{html.escape(f['version'])}</td><td>{html.escape(f['severity'])}</td>"
        f'<td>{html.escape(f["fixed"])}</td><td class="{cls}">{status}</td>'
        f"<td>{html.escape(note)}</td><td>{html.escape(f['summary'])}</td></tr>"
    )


def render(doc: dict[str, Any]) -> str:
    rows = "\n".join(_row(f) for f in doc["findings"])
    db = doc["database"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>jailbake cve</title>
<style>{STYLE}
td.ok {{ color: #2e7d32; }} td.failed {{ color: #d93025; }} .dim {{ color: #777; }}</style>
</head><body>
<h1>jailbake cve: {doc["affected"]} affecting, {len(doc["findings"])} found</h1>
<p>{doc["components"]} components of {html.escape(", ".join(doc["targets"]))} against
{db["records"]} records ({db["files"]} files, {len(db["malformed"])} skipped) in
{html.escape(db["dir"])}, as of {html.escape(doc["as_of"])}. Statuses other than affected
come from the VEX statements of the layer and of --vex.</p>
<table>
<tr><th>id</th><th>recipe</th><th>component</th><th>version</th><th>severity</th>
<th>fixed in</th><th>status</th><th>why</th><th>summary</th></tr>
{rows}
</table>
</body></html>
"""


def write(report_dir: Path, doc: dict[str, Any]) -> Path:
    return write_atomic(report_dir / INDEX, render(doc))
