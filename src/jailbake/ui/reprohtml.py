"""The repro report's page (index.html beside repro.json): each recipe checked, under
which variations, reproducible or which files differ under which variation, with
diffoscope's reports linked. Self-contained, like build-report.html."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from .report import REPRO_INDEX as INDEX
from .report import STYLE
from .trace import write_atomic


def _link(href: str, text: str) -> str:
    return f'<a href="{html.escape(href, quote=True)}">{html.escape(text)}</a>' if href else ""


def _row(entry: dict[str, Any]) -> str:
    name = html.escape(entry["recipe"])
    if entry["error"]:
        verdict = f'<td class="failed">rebuild failed</td><td>{html.escape(entry["error"])}</td>'
    elif entry["reproducible"]:
        verdict = '<td class="ok">reproducible</td><td></td>'
    else:
        parts = []
        for d in entry["differences"]:
            under = {"none": "with no variation", "all": "only all variations together"}.get(
                d["under"], f"under {d['under']}"
            )
            files = ", ".join(html.escape(f) for f in d["files"][:20])
            more = f" and {len(d['files']) - 20} more" if len(d["files"]) > 20 else ""
            links = " ".join(x for x in (_link(d["html"], "HTML"), _link(d["text"], "text")) if x)
            note = f" ({html.escape(d['note'])})" if d["note"] else ""
            parts.append(f"<li>{html.escape(under)}: {files}{more} {links}{note}</li>")
        verdict = f'<td class="failed">differs</td><td><ul>{"".join(parts)}</ul></td>'
    varied = html.escape(", ".join(entry["varied"]) or "none")
    skipped = "; ".join(f"{html.escape(k)}: {html.escape(v)}" for k, v in entry["skipped"].items())
    seconds = f"{entry['build_seconds']:.1f} s / {entry['repro_seconds']:.1f} s"
    return (
        f"<tr><td>{name}</td>{verdict}<td>{varied}</td><td>{skipped}</td>"
        f'<td class="num">{seconds}</td></tr>'
    )


def render(doc: dict[str, Any]) -> str:
    rows = "\n".join(_row(e) for e in doc["recipes"])
    good = sum(1 for e in doc["recipes"] if e["reproducible"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>jailbake repro</title>
<style>{STYLE}
td.ok {{ color: #2e7d32; }} td.failed {{ color: #d93025; }} ul {{ margin: 0; }}</style></head>
<body>
<h1>jailbake repro: {good} of {len(doc["recipes"])} recipes reproducible</h1>
<p>Checked {html.escape(doc["when"])} in {doc["seconds"]:.1f} s. Each recipe was built
again from the same inputs under the variations listed and compared with its cached
result file by file.</p>
<table>
<tr><th>recipe</th><th>result</th><th>differences</th><th>varied</th>
<th>not varied here</th><th>build / repro</th></tr>
{rows}
</table>
</body></html>
"""


def write(report_dir: Path, doc: dict[str, Any]) -> Path:
    return write_atomic(report_dir / INDEX, render(doc))
