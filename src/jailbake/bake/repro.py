"""jailbake repro: each recipe built a second time from the same inputs, in a scratch
place and under varied conditions, its outputs compared file by file with the cached
result. Nothing of a rebuild is stored.

For each recipe: one rebuild with every chosen variation at once. If its outputs are
the cached ones, the recipe is reproducible under them. Otherwise a rebuild with no
variation tells whether the build is deterministic at all, and then one rebuild per
variation names which variation changes which files; diffoscope reports each
difference."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache.keys import tree_manifest
from ..cache.store import ActionResult
from ..core.errors import BuildError, JailbakeError
from ..executors import diffoscope
from ..executors.step import Vary
from ..model.recipe import Recipe
from .action import RecipeBuilder
from .build import schedule
from .checks import RESULTS
from .observe import Observer, Quiet
from .options import BuildOptions
from .plan import KeyInfo

log = logging.getLogger(__name__)

NONE = "none"  # the rebuild with no variation
ALL = "all"  # the rebuild with every chosen variation at once


@dataclass(frozen=True)
class Difference:
    """Files whose bytes differ between the cached result and one rebuild."""

    under: str  # a variation's name, NONE or ALL
    files: tuple[str, ...]
    html: str = ""  # diffoscope's reports, relative to the report directory
    text: str = ""
    note: str = ""


@dataclass
class Checked:
    recipe: str
    key: str
    varied: tuple[str, ...]  # the variations the rebuilds made
    skipped: dict[str, str]  # variations this executor cannot make, and why
    reproducible: bool = True
    deterministic: bool = True  # the same outputs with no variation at all
    differences: list[Difference] = field(default_factory=list)
    build_seconds: float = 0.0  # the build's own time, as the cache recorded it
    repro_seconds: float = 0.0
    error: str = ""  # a rebuild that failed

    @property
    def culprits(self) -> list[str]:
        return [d.under for d in self.differences if d.under not in (ALL, NONE)]

    def record(self) -> dict[str, object]:
        """What the manifest and the SBOM say of this check."""
        return {
            "reproducible": self.reproducible and not self.error,
            "varied": list(self.varied),
            "not_varied": sorted(self.skipped),
            "differs_under": self.culprits or ([NONE] if not self.deterministic else []),
            "checked": _now(),
        }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class ReproReport:
    checked: list[Checked]
    report_dir: Path
    seconds: float
    when: str  # the UTC time the check ended

    @property
    def ok(self) -> bool:
        return all(c.reproducible and not c.error for c in self.checked)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "when": self.when,
            "seconds": round(self.seconds, 3),
            "recipes": [
                {
                    "recipe": c.recipe,
                    "key": c.key,
                    "reproducible": c.reproducible and not c.error,
                    "deterministic": c.deterministic,
                    "varied": list(c.varied),
                    "skipped": c.skipped,
                    "culprits": c.culprits,
                    "differences": [d.__dict__ for d in c.differences],
                    "build_seconds": c.build_seconds,
                    "repro_seconds": round(c.repro_seconds, 3),
                    "error": c.error,
                }
                for c in self.checked
            ],
        }


def _inside(root: Path, rel: str) -> bool:
    """Whether root/rel exists with every directory on its way a real one (no link)."""
    path = root
    for part in Path(rel).parts:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
        path = path / part
        if not os.path.lexists(path):
            return False
    return True


def differing(cached: list[dict[str, Any]], rebuilt: list[dict[str, Any]]) -> list[str]:
    """Paths whose entries differ (content, type, executable bit, link target), or that
    only one side has."""
    left = {e["path"]: e for e in cached}
    right = {e["path"]: e for e in rebuilt}
    return sorted(p for p in left.keys() | right.keys() if left.get(p) != right.get(p))


@dataclass(frozen=True)
class _Subject:
    """A recipe to rebuild: its dependencies' results, its key, its cached result."""

    recipe: Recipe
    deps: Mapping[str, ActionResult]
    info: KeyInfo
    result: ActionResult


class Checker:
    """Rebuilds recipes of a scheduled build and compares them with their results."""

    def __init__(
        self,
        builder: RecipeBuilder,
        results: Mapping[str, ActionResult],
        report_dir: Path,
        vary: frozenset[Vary],
        *,
        say: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.builder = builder
        self.store = builder.store
        self.results = results
        self.report_dir = report_dir
        self.vary = vary
        self.say = say

    def check(self, recipe: Recipe) -> Checked:
        result = self.results[recipe.name]
        deps = {n: self.results[n] for n in recipe.depends}
        info, _ = self.builder.plan.lookup(recipe, deps)
        skipped = {v.value: why for v, why in self.builder.cannot_vary(recipe, self.vary).items()}
        varied = frozenset(v for v in self.vary if v.value not in skipped)
        checked = Checked(
            recipe.name, info.key, tuple(sorted(v.value for v in varied)), skipped,
            build_seconds=result.duration,
        )  # fmt: skip
        start = time.monotonic()
        try:
            self._check(_Subject(recipe, deps, info, result), varied, checked)
        except BuildError as exc:
            checked.error = exc.step
            checked.reproducible = False
        except (JailbakeError, OSError, ValueError) as exc:  # the rebuild could not run
            checked.error = f"{recipe.name}: the rebuild failed: {exc}"
            checked.reproducible = False
        checked.repro_seconds = time.monotonic() - start
        return checked

    def _check(self, subject: _Subject, varied: frozenset[Vary], checked: Checked) -> None:
        singles = sorted(varied, key=lambda v: v.value)
        try:
            first = self._rebuild(subject, varied, ALL if varied else NONE)
        except BuildError:
            # Which variation alone fails it, if one does (else the first failure stands).
            for vary in singles if len(singles) > 1 else ():
                self._rebuild(subject, frozenset({vary}), vary.value)
            raise
        if first is None:
            return
        checked.reproducible = False
        if not varied:  # the plain rebuild already differs
            checked.deterministic = False
            checked.differences.append(first)
            return
        control = self._rebuild(subject, frozenset(), NONE)
        if control is not None:
            checked.deterministic = False
            checked.differences.append(control)
            return
        for vary in singles:
            found = self._rebuild(subject, frozenset({vary}), vary.value)
            if found is not None:
                checked.differences.append(found)
        if not checked.culprits:  # only the variations together change it
            checked.differences.append(first)

    def _rebuild(self, subject: _Subject, vary: frozenset[Vary], under: str) -> Difference | None:
        """A Difference if the rebuild under vary differs from the result, else None."""
        recipe = subject.recipe
        self.say(f"{recipe.name}: rebuilding ({under})")
        with self.store.temp_dir(f"repro-{recipe.name}") as scratch:
            try:
                tree = self.builder.rebuild(recipe, subject.deps, subject.info, vary, scratch)
            except BuildError as exc:
                kept = self.report_dir / recipe.name / f"{under}.log"
                kept.parent.mkdir(parents=True, exist_ok=True)
                if exc.log_path is not None and exc.log_path.is_file():
                    shutil.copyfile(exc.log_path, kept)
                last = (exc.tail or "").strip().splitlines()[-1:] or [f"exit status {exc.rc}"]
                raise BuildError(
                    f"{recipe.name}: the rebuild ({under}) failed: {last[0]} (log: {kept})",
                    exc.rc,
                    kept,
                ) from None
            files = differing(subject.result.outputs, tree_manifest(tree))
            if not files:
                return None
            return self._report(recipe, under, files, subject.result, tree, scratch)

    def _report(
        self, recipe: Recipe, under: str, files: list[str], result: ActionResult, tree: Path,
        scratch: Path,
    ) -> Difference:  # fmt: skip
        """diffoscope on the differing files: copies of the cached ones in cached/, of
        the rebuilt ones in rebuilt/."""
        cached_tree = self.store.tree_path(result.output_digest)
        sides = {"cached": cached_tree, "rebuilt": tree}
        for side, root in sides.items():
            for rel in files:
                source, dest = root / rel, scratch / side / rel
                # Only through real directories: a step's link in a parent would make
                # this read (and diffoscope show) a file of the host's.
                if _inside(root, rel) and not stat.S_ISDIR(os.lstat(source).st_mode):
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, dest, follow_symlinks=False)
            (scratch / side).mkdir(exist_ok=True)
        rel_dir = Path(recipe.name)
        html = self.report_dir / rel_dir / f"{under}.html"
        text = self.report_dir / rel_dir / f"{under}.txt"
        host = self.builder.plan.host
        confined = bool(getattr(host, "confined", False))
        report = diffoscope.compare(scratch, "cached", "rebuilt", html, text, confined=confined)
        return Difference(
            under,
            tuple(files),
            str(html.relative_to(self.report_dir)) if report.html else "",
            str(text.relative_to(self.report_dir)) if report.text else "",
            report.note,
        )


def _fresh_report_dir(report_dir: Path) -> Path:
    """report_dir, absolute and empty: a directory that holds anything but an earlier
    report is refused, never emptied."""
    report_dir = report_dir.absolute()
    if report_dir.is_dir() and any(report_dir.iterdir()):
        if not (report_dir / RESULTS).is_file():
            raise JailbakeError(
                f"--report-dir {report_dir}: expected an empty directory or an earlier "
                f"report (with {RESULTS}); it holds other files"
            )
        shutil.rmtree(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    return report_dir


def repro(
    options: BuildOptions,
    recipes: tuple[str, ...],
    vary: frozenset[Vary],
    report_dir: Path,
    observer: Observer | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> ReproReport:
    """Build (or reuse) the options' targets, or the recipes given and what they need,
    then check those recipes (default: every recipe the targets need) as the module
    says; results in report_dir (repro.json and diffoscope's reports)."""
    start = time.monotonic()
    if recipes:  # only they and what they depend on are built
        from .context import Context, Settings

        known = Context(Settings.of_build(options)).graph(options.configs, ()).recipes
        unknown = sorted(set(recipes) - set(known))
        if unknown:
            raise JailbakeError(
                f"repro: {', '.join(unknown)} is not a recipe of this configuration; "
                f"its recipes: {', '.join(sorted(known))}"
            )
        options = dataclasses.replace(options, targets=recipes)
    done = schedule(options, observer or Quiet())
    graph = done.graph
    chosen = [n for n in graph.order if not recipes or n in recipes]
    report_dir = _fresh_report_dir(report_dir)
    results = {n: o.result for n, o in done.outcomes.items()}
    checker = Checker(done.builder, results, report_dir, vary, say=say)
    checked = [checker.check(graph.recipes[name]) for name in chosen]
    report = ReproReport(checked, report_dir, time.monotonic() - start, _now())
    tmp = report_dir / f".{RESULTS}.part"
    tmp.write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, report_dir / RESULTS)
    for found in checked:  # once the report that lists them is there
        if not found.error:  # a rebuild that failed says nothing of the result
            done.builder.history.record_check(found.key, found.record(), report_dir)
    return report
