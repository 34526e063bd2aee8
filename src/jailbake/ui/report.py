"""build-report.html: one self-contained page drawn from a build's trace (no network,
no external scripts): the timeline of recipes on their slots, the machine's CPU use
and memory beneath it on the same time axis, a table of recipes with their logs, and
the totals, critical path included."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..cache.history import REPORT_FIELD, differences
from . import trace
from .trace import RECIPE_KINDS, Tracer, write_atomic

REPORT = "build-report.html"
REPRO_INDEX = "index.html"  # jailbake repro's page in its report directory (reprohtml)
WIDTH = 1000  # of the drawing area, in SVG user units
LABEL = 130  # left margin for track names
ROW = 26
CHART = 90
COLOURS = {
    "built": "#3b78e7",
    "reused": "#a0a4a8",
    "downloaded": "#2e9d55",
    "failed": "#d93025",
    "fetch": "#f2a600",
    "image": "#8e44ad",
    "artifact": "#607d8b",
    "phase": "#1a3d7c",  # within a recipe: preparing sources, its step, storing, cleaning
}


def critical_path(
    seconds: Mapping[str, float], depends: Mapping[str, Sequence[str]]
) -> tuple[float, list[str]]:
    """The chain of dependencies whose recipes took longest together: what bounds the
    build's wall time however many cores it has."""
    best: dict[str, tuple[float, list[str]]] = {}

    def longest(name: str) -> tuple[float, list[str]]:
        if name not in best:
            chains = [longest(d) for d in depends.get(name, ()) if d in seconds]
            base = max(chains, key=lambda c: c[0], default=(0.0, []))
            best[name] = (base[0] + seconds[name], [*base[1], name])
        return best[name]

    ends = [longest(n) for n in sorted(seconds)]
    total, chain = max(ends, key=lambda c: c[0], default=(0.0, []))
    return round(total, 3), chain


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def _seconds(s: float) -> str:
    return f"{s:.2f} s" if s < 60 else f"{int(s // 60)} min {s % 60:.0f} s"


class _Axis:
    def __init__(self, wall_us: int) -> None:
        self.span = max(wall_us, 1)

    def x(self, us: float) -> float:
        return round(LABEL + (WIDTH - LABEL) * min(max(us, 0), self.span) / self.span, 2)

    def ticks(self) -> list[tuple[float, str]]:
        seconds = self.span / 1e6
        step = next(
            (s for s in (0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
             if seconds / s <= 10),
            7200,
        )  # fmt: skip
        count = int(seconds / step) + 1
        return [(self.x(i * step * 1e6), f"{i * step:g}s") for i in range(count)]


def _grid(axis: _Axis, top: float, height: float) -> list[str]:
    out = []
    for x, label in axis.ticks():
        out.append(f'<line class="tick" x1="{x}" x2="{x}" y1="{top}" y2="{top + height}"/>')
        out.append(f'<text class="tick-label" x="{x}" y="{top + height + 12}">{label}</text>')
    return out


def _timeline(doc: dict[str, Any], axis: _Axis) -> str:
    events = doc["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    spans = [e for e in events if e["ph"] == "X"]
    tracks = sorted({e["tid"] for e in spans} | {t for t in names if t != 0} or {1})
    if any(e["tid"] == 0 for e in spans):
        tracks = [0, *[t for t in tracks if t != 0]]
    row = {tid: i for i, tid in enumerate(tracks)}
    height = ROW * len(tracks)
    out = [
        f'<svg id="timeline" viewBox="0 0 {WIDTH} {height + 18}" width="100%" '
        f'role="img" aria-label="recipes on their slots over time">'
    ]
    out += _grid(axis, 0, height)
    for tid in tracks:
        y = row[tid] * ROW
        label = html.escape(names.get(tid, f"slot {tid}"))
        out.append(f'<text class="track" x="4" y="{y + 17}">{label}</text>')
    for e in spans:
        recipe = e["cat"] in RECIPE_KINDS
        x0 = axis.x(e["ts"])
        width = max(axis.x(e["ts"] + e["dur"]) - x0, 1.5)
        y = row[e["tid"]] * ROW + (3 if recipe else 16)
        h = 20 if recipe else 7
        colour = COLOURS.get(e["cat"], "#777")
        title = html.escape(
            f"{e['name']}: {e['cat']}, {_seconds(e['dur'] / 1e6)}"
            + (f", key {e['args']['key'][:12]}" if "key" in e["args"] else "")
        )
        name = html.escape(e["name"])
        kind = "bar" if recipe else "span"
        out.append(
            f'<g class="{kind} {html.escape(e["cat"])}" data-name="{name}">'
            f'<rect x="{x0}" y="{y}" width="{width:.2f}" height="{h}" rx="2" '
            f'fill="{colour}"><title>{title}</title></rect>'
        )
        if recipe and width > 7 * len(e["name"]):
            out.append(f'<text class="bar-label" x="{x0 + 3}" y="{y + 14}">{name}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def _chart(doc: dict[str, Any], axis: _Axis, counter: str, key: str, ident: str) -> str:
    samples = [e for e in doc["traceEvents"] if e["ph"] == "C" and e["name"] == counter]
    if counter == "memory":
        top = max((e["args"]["total MiB"] for e in samples), default=1.0) or 1.0
        caption = f"memory used (of {top / 1024:.1f} GiB)"
    else:
        top, caption = 100.0, "CPU busy, all cores"
    out = [
        f'<svg id="{ident}" class="chart" viewBox="0 0 {WIDTH} {CHART + 18}" width="100%" '
        f'role="img" aria-label="{caption}">'
    ]
    out += _grid(axis, 0, CHART)
    out.append(f'<text class="track" x="4" y="14">{caption}</text>')

    def y(e: dict[str, Any]) -> float:
        return round(CHART - CHART * min(float(e["args"][key]) / top, 1.0), 2)

    if counter == "CPU":  # each value holds from its sample until the next, as in Perfetto
        ends = [e["ts"] for e in samples[1:]] + [axis.span] if samples else []
        points = []
        for e, end in zip(samples, ends, strict=True):
            points += [(axis.x(e["ts"]), y(e)), (axis.x(end), y(e))]
    else:
        points = [(axis.x(e["ts"]), y(e)) for e in samples]
    if points:
        line = " ".join(f"{x:.2f},{y:.2f}" for x, y in points)
        area = f"{points[0][0]:.2f},{CHART} {line} {points[-1][0]:.2f},{CHART}"
        out.append(f'<polygon class="area" points="{area}"/>')
        out.append(f'<polyline class="line" points="{line}"/>')
    else:
        out.append(f'<text class="empty" x="{LABEL + 4}" y="{CHART / 2}">no samples</text>')
    out.append("</svg>")
    return "\n".join(out)


def _table(doc: dict[str, Any]) -> str:
    from urllib.parse import quote

    logs: dict[str, str] = doc["otherData"].get("logs", {})
    checks: dict[str, dict[str, Any]] = doc["otherData"].get("reproducibility", {})
    rows = []
    for e in sorted(
        (e for e in doc["traceEvents"] if e["ph"] == "X" and e["cat"] in RECIPE_KINDS),
        key=lambda e: (-e["dur"], e["name"]),
    ):
        args = e["args"]
        log = logs.get(e["name"])
        # Path(log).as_uri() of the absolute path, without a Path per row.
        link = f'<a href="file://{html.escape(quote(os.fsencode(log)))}">log</a>' if log else ""
        rows.append(
            f'<tr data-name="{html.escape(e["name"])}"><td>{html.escape(e["name"])}</td>'
            f'<td class="{html.escape(e["cat"])}">{html.escape(e["cat"])}</td>'
            f'<td class="num">{_seconds(e["dur"] / 1e6)}</td>'
            f"<td><code>{html.escape(args.get('key', '')[:12])}</code></td>"
            f'<td class="num">{_size(args.get("output_bytes", 0))}</td>'
            f"<td>{_reproducible(checks.get(e['name']))}</td><td>{link}</td></tr>"
        )
    return (
        '<table id="recipes"><thead><tr><th>recipe</th><th>outcome</th><th>time</th>'
        "<th>key</th><th>output</th><th>reproducible</th><th></th></tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>"
    )


def _reproducible(check: dict[str, Any] | None) -> str:
    """What `jailbake repro` last found of a recipe's result (History.check_record),
    linked to its report."""
    if not check:
        return ""
    good = check.get("reproducible") is True
    varied = check.get("varied")
    text = html.escape(
        f"yes, under {len(varied) if isinstance(varied, list) else 0} variations"
        if good
        else differences(check)
    )
    where = check.get(REPORT_FIELD)
    if isinstance(where, str) and os.path.isabs(where):
        text = f'<a href="{html.escape(Path(where, REPRO_INDEX).as_uri())}">{text}</a>'
    title = html.escape(f"checked {check.get('checked', '')}")
    return f'<span class="{"good" if good else "bad"}" title="{title}">{text}</span>'


def _totals(doc: dict[str, Any]) -> str:
    other = doc["otherData"]
    events = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    failed = sum(e["cat"] == "failed" for e in events)
    fetched = sum(e["args"].get("bytes", 0) for e in events if e["cat"] == "fetch")
    remote = sum(e["args"].get("output_bytes", 0) for e in events if e["cat"] == "downloaded")
    path = other.get("critical_path", {})
    items = [
        ("built", other.get("built", 0)),
        ("reused", other.get("reused", 0)),
        ("from the remote cache", other.get("downloaded", 0)),
        ("failed", failed),
        ("downloaded", f"{_size(fetched + remote)}"),
        ("wall time", _seconds(other.get("wall_seconds", 0.0))),
        ("critical path", _seconds(path.get("seconds", 0.0))),
    ]
    cells = "".join(
        f'<div class="total"><span class="value">{html.escape(str(v))}</span>'
        f'<span class="what">{html.escape(k)}</span></div>'
        for k, v in items
    )
    chain = " → ".join(html.escape(n) for n in path.get("recipes", []))
    return f'<div id="totals">{cells}</div><p class="chain">critical path: {chain or "-"}</p>'


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #202124; }
h1 { font-size: 20px; margin: 0 0 12px; }
#totals { display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 4px; }
.total { border: 1px solid #dadce0; border-radius: 6px; padding: 6px 12px; min-width: 90px; }
.total .value { display: block; font-size: 18px; font-weight: 600; }
.total .what { color: #5f6368; font-size: 12px; }
.chain { color: #5f6368; }
svg text { font-size: 11px; fill: #3c4043; }
.tick { stroke: #eceff1; } .tick-label { fill: #80868b; text-anchor: middle; }
.bar-label { fill: #fff; pointer-events: none; }
.chart .line { fill: none; stroke: #3b78e7; stroke-width: 1.5; }
.chart .area { fill: #3b78e733; }
#memory-chart .line { stroke: #2e9d55; } #memory-chart .area { fill: #2e9d5533; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
table { border-collapse: collapse; margin-top: 16px; }
td, th { padding: 3px 10px; border-bottom: 1px solid #eceff1; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.hover td, g.hover rect { outline: 2px solid #fbbc04; }
.good { color: #188038; } .bad { color: #c5221f; font-weight: 600; }
"""

SCRIPT = """
(function () {
  var bars = document.querySelectorAll('#timeline g.bar');
  var visible = 0;
  bars.forEach(function (g) {
    var box = g.querySelector('rect').getBoundingClientRect();
    if (box.width > 0 && box.height > 0) visible++;
  });
  function mark(name, on) {
    document.querySelectorAll('[data-name]').forEach(function (el) {
      if (el.getAttribute('data-name') === name) el.classList.toggle('hover', on);
    });
  }
  document.querySelectorAll('[data-name]').forEach(function (el) {
    var name = el.getAttribute('data-name');
    el.addEventListener('mouseenter', function () { mark(name, true); });
    el.addEventListener('mouseleave', function () { mark(name, false); });
  });
  document.body.setAttribute('data-visible-bars', String(visible));
  document.body.setAttribute('data-rendered', 'yes');
})();
"""


def render(doc: dict[str, Any]) -> str:
    other = doc["otherData"]
    wall_us = max(
        [round(other.get("wall_seconds", 0) * 1e6)]
        + [e["ts"] + e.get("dur", 0) for e in doc["traceEvents"] if e["ph"] in ("X", "C")]
    )
    axis = _Axis(wall_us)
    targets = ", ".join(other.get("targets", [])) or "all recipes"
    legend = "".join(f'<span><i style="background:{c}"></i>{k}</span>' for k, c in COLOURS.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>jailbake build: {html.escape(targets)}</title>
<style>{STYLE}</style></head>
<body>
<h1>jailbake build: {html.escape(targets)}</h1>
{_totals(doc)}
<p class="legend">{legend}</p>
{_timeline(doc, axis)}
{_chart(doc, axis, "CPU", "busy %", "cpu-chart")}
{_chart(doc, axis, "memory", "used MiB", "memory-chart")}
{_table(doc)}
<script>{SCRIPT}</script>
</body></html>
"""


def write(dest_dir: Path, doc: dict[str, Any]) -> Path:
    """Write build-report.html into dest_dir, atomically."""
    return write_atomic(dest_dir / REPORT, render(doc))


def write_with_trace(
    tracer: Tracer,
    dest_dir: Path,
    targets: Sequence[str],
    depends: Mapping[str, list[str]],
    logs: Mapping[str, str],
    **extra: Any,
) -> None:
    """build-trace.json and build-report.html of a build, beside its artifacts.
    depends: each recipe's dependencies; logs: where each recipe's log is kept; extra
    goes into the trace's otherData."""
    seconds = {e["name"]: e["dur"] / 1e6 for e in tracer.recipes()}
    total, chain = critical_path(seconds, depends)
    document = tracer.document(
        list(targets),
        critical_path={"seconds": total, "recipes": chain},
        depends=dict(depends),
        logs=dict(logs),
        **extra,
    )
    trace.write(dest_dir, document)
    write(dest_dir, document)
