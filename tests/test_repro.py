"""jailbake repro: every recipe built again under varied conditions and compared with
its cached result. The layer examples/unreproducible has one recipe that leaks each
variation (and one that leaks randomness, one that leaks nothing): each must be caught
by exactly its variation, on the host, docker and remote executors, with diffoscope
naming the file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, jailbake
from reapi_fake import FakeREAPI

LAYER = "examples/unreproducible/unreproducible.yml"
# recipe -> (the variation that catches it, the file it leaks into)
LEAKS = {
    "leaks-date": ("time", "built-in.txt"),
    "leaks-build-path": ("build_path", "where.txt"),
    "leaks-timezone": ("timezone", "zone.txt"),
    "leaks-umask": ("umask", "modes.txt"),
    "leaks-locale": ("locales", "locale.txt"),
    "leaks-hostname": ("domain_host", "host.txt"),
    "leaks-uid": ("user_group", "builder.txt"),
    "leaks-cpus": ("num_cpus", "cpus.txt"),
    "leaks-file-order": ("fileordering", "listing.txt"),
}


def needs_tools() -> None:
    for tool in ("bwrap", "faketime", "disorderfs", "diffoscope"):
        if shutil.which(tool) is None:
            if os.environ.get("CI"):
                pytest.fail(f"{tool} is missing; scripts/test installs it")
            pytest.skip(f"needs {tool} (scripts/test installs it)")


def has_varied_locale() -> bool:
    from jailbake.executors.step import LOCALE_PROBE

    return subprocess.run(["sh", "-c", LOCALE_PROBE], check=False).returncode == 0


def needs_host_locale() -> None:
    if not has_varied_locale():
        if os.environ.get("CI"):
            pytest.fail("fr_CH.UTF-8 is not installed; scripts/test makes it")
        pytest.skip("needs the fr_CH.UTF-8 locale (scripts/test makes it)")


def repro(tmp_path: Path, *args: str, cache: Path | None = None) -> tuple[int, dict[str, Any], str]:
    art = tmp_path / "art"
    result = jailbake(
        "repro", LAYER, *args, "--cache-dir", str(cache or tmp_path / "cache"),
        "--artifacts-dir", str(art), "--json", cwd=ROOT, timeout=900,
    )  # fmt: skip
    assert result.stdout.strip(), result.stderr
    # The summary on stdout, before the JSON line; progress on stderr.
    return (
        result.rc,
        json.loads(result.stdout.strip().splitlines()[-1]),
        result.stdout + result.stderr,
    )


def by_recipe(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["recipe"]: entry for entry in doc["recipes"]}


def assert_each_leak_caught_by_its_variation(
    doc: dict[str, Any], report_dir: Path, leaks: dict[str, tuple[str, str]]
) -> None:
    entries = by_recipe(doc)
    for recipe, (vary, leaked) in leaks.items():
        entry = entries[recipe]
        assert not entry["reproducible"] and entry["deterministic"], entry
        assert entry["culprits"] == [vary], (recipe, entry)
        (found,) = [d for d in entry["differences"] if d["under"] == vary]
        assert found["files"] == [leaked]
        text = (report_dir / found["text"]).read_text()
        assert f"cached/{leaked}" in text and f"rebuilt/{leaked}" in text, text
        assert (report_dir / found["html"]).read_text().startswith("<!DOCTYPE html>")
    random = entries["leaks-random"]
    assert not random["deterministic"] and [d["under"] for d in random["differences"]] == ["none"]
    assert entries["reproducible"]["reproducible"] and entries["reproducible"]["differences"] == []


def test_each_leak_is_caught_by_exactly_its_variation_on_the_host(tmp_path: Path) -> None:
    needs_tools()
    needs_host_locale()
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("num_cpus can only take CPUs away from a process that may use two or more")
    rc, doc, stderr = repro(tmp_path, "--executor", "host")
    assert rc == 1, stderr
    report_dir = tmp_path / "art" / "repro"
    assert_each_leak_caught_by_its_variation(doc, report_dir, LEAKS)
    assert by_recipe(doc)["reproducible"]["skipped"] == {}  # every variation was made
    assert json.loads((report_dir / "repro.json").read_text()) == doc
    index = (report_dir / "index.html").read_text()
    assert "1 of 11 recipes reproducible" in index and 'href="leaks-umask/umask.html"' in index
    assert "leaks-umask: DIFFERS under umask: modes.txt [" in stderr
    # Rebuilds are not stored: the cache holds the eleven results and trees the build made.
    cache = tmp_path / "cache"
    assert len([p for p in (cache / "ac").rglob("*") if p.is_file()]) == 11
    assert len(os.listdir(cache / "trees")) == 11


@pytest.mark.docker
@pytest.mark.usefixtures("builder_images")
def test_each_leak_is_caught_by_exactly_its_variation_in_containers(tmp_path: Path) -> None:
    needs_tools()
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("num_cpus can only take CPUs away from a process that may use two or more")
    rc, doc, stderr = repro(tmp_path, "--executor", "docker")
    assert rc == 1, stderr
    assert_each_leak_caught_by_its_variation(doc, tmp_path / "art" / "repro", LEAKS)


@pytest.mark.docker
@pytest.mark.usefixtures("builder_images")
def test_an_image_without_the_varied_locale_or_faketime_says_it_varies_neither(
    tmp_path: Path,
) -> None:
    """The base image has neither faketime nor any locale but C: a step in it could only
    change $LANG, not the locale's rules, so repro names both as not varied, and the
    shipped builder image (which has them) as varying both."""
    from jailbake.executors import debs, engine
    from jailbake.executors.docker import DockerExecutor
    from jailbake.executors.step import Step, Vary

    base = engine.base_tag(debs.read_lock(ROOT / "docker/debian-base/packages.lock").suite)
    executor = DockerExecutor(engine.connect)

    def cannot(image: str) -> dict[Vary, str]:
        return executor.cannot_vary(Step(
            recipe="probe", work=tmp_path, deps=(), env=(), log=tmp_path / "log",
            image=image, vary=frozenset({Vary.LOCALES, Vary.TIME, Vary.UMASK}),
        ))  # fmt: skip

    assert cannot(base) == {
        Vary.LOCALES: f"the builder image {base} has no fr_CH.UTF-8 locale",
        Vary.TIME: f"the builder image {base} has no faketime",
    }
    builder = ROOT / "docker/debian-build"
    assert cannot(engine.image_tag(builder.name, engine.image_key(builder))) == {}


def test_the_remote_executor_rebuilds_without_its_action_cache(tmp_path: Path) -> None:
    """The control rebuild is the very action the build ran: answered from the service's
    action cache it would hide the random number. Variations the workers decide are
    named as not made."""
    needs_tools()
    fake = FakeREAPI()
    fake.knobs.action_cache = True
    try:
        rc, doc, stderr = repro(
            tmp_path, "leaks-random", "leaks-umask", "leaks-timezone", "reproducible",
            "--executor", "remote", "--remote-executor", fake.url,
        )  # fmt: skip
    finally:
        fake.stop()
    assert rc == 1, stderr
    entries = by_recipe(doc)
    assert sorted(entries) == ["leaks-random", "leaks-timezone", "leaks-umask", "reproducible"]
    assert entries["leaks-umask"]["culprits"] == ["umask"]
    assert entries["leaks-timezone"]["culprits"] == ["timezone"]
    assert not entries["leaks-random"]["deterministic"]
    assert entries["reproducible"]["reproducible"]
    assert entries["reproducible"]["varied"] == ["locales", "timezone", "umask"]
    assert entries["reproducible"]["skipped"]["build_path"] == (
        "the remote executor's workers decide it"
    )
    built, rebuilds = fake.seen.actions[:4], fake.seen.actions[4:]  # the four builds first
    assert not any(a.do_not_cache for a in built)
    assert rebuilds and all(a.do_not_cache for a in rebuilds)
    assert fake.seen.skipped_cache.count(True) == len(rebuilds)


def test_a_host_without_the_varied_locale_says_it_does_not_vary_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without fr_CH.UTF-8 on the machine (here: without `locale` to list it), a host
    step could only change $LANG: the executor names locales as not varied, and why.
    With it (scripts/test makes it), locales is varied."""
    from conftest import path_without
    from jailbake.executors import host
    from jailbake.executors.step import Step, Vary

    needs_tools()
    step = Step(
        recipe="probe", work=tmp_path, deps=(), env=(), log=tmp_path / "log",
        vary=frozenset({Vary.LOCALES, Vary.UMASK}),
    )  # fmt: skip
    with_locale, installed = host.HostExecutor().cannot_vary(step), has_varied_locale()
    monkeypatch.setenv("PATH", path_without("locale", tmp_path))
    host._has_varied_locale.cache_clear()
    try:
        without = host.HostExecutor().cannot_vary(step)
    finally:
        host._has_varied_locale.cache_clear()
    assert without == {Vary.LOCALES: "the fr_CH.UTF-8 locale is not installed here"}
    assert with_locale == ({} if installed else without)


@pytest.mark.parametrize(
    ("listed", "found"),
    [("fr_CH.utf8", True), ("fr_CH.UTF-8", True), ("FR_ch.Utf8", True),
     ("fr_FR.utf8", False), ("fr_CH", False), ("fr_CH.ISO-8859-1", False),
     ("de_CH.utf8", False)],
)  # fmt: skip
def test_the_locale_probe_knows_the_names_locale_lists(
    listed: str, found: bool, tmp_path: Path
) -> None:
    """`locale -a` names fr_CH.UTF-8 as glibc spells it (fr_CH.utf8) or as it was asked
    for; other locales, and fr_CH in another charset, are not it."""
    from jailbake.executors.step import LOCALE_PROBE

    fake = tmp_path / "locale"
    fake.write_text(f"#!/bin/sh\nprintf 'C\\nC.utf8\\nPOSIX\\n{listed}\\n'\n")
    fake.chmod(0o755)
    probe = subprocess.run(
        ["sh", "-c", LOCALE_PROBE], env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, check=False
    )
    assert (probe.returncode == 0) is found


def test_chosen_recipes_and_variations(tmp_path: Path) -> None:
    needs_tools()
    rc, doc, stderr = repro(tmp_path, "leaks-umask", "reproducible", "--vary", "timezone,umask",
                            "--executor", "host")  # fmt: skip
    assert rc == 1, stderr
    assert [e["recipe"] for e in doc["recipes"]] == ["leaks-umask", "reproducible"]
    assert by_recipe(doc)["leaks-umask"]["varied"] == ["timezone", "umask"]
    # Left out of every variation, the umask leaks nowhere: the recipe is reproducible.
    rc, doc, stderr = repro(tmp_path, "leaks-umask", "--vary=-umask", "--executor", "host")
    assert rc == 0, stderr
    assert "umask" not in by_recipe(doc)["leaks-umask"]["varied"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--vary", "clock"], "--vary: unknown variation 'clock'; known: all, build_path"),
        (["no-such-recipe"], "repro: no-such-recipe is not a recipe of this configuration"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    result = jailbake(
        "repro", LAYER, *args, "--executor", "host", "--cache-dir", str(tmp_path / "cache"),
        "--artifacts-dir", str(tmp_path / "art"), cwd=ROOT,
    )  # fmt: skip
    assert result.rc == 2
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("jailbake: error:")]
    assert expected in line


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.usefixtures("builder_images")
@pytest.mark.parametrize("layer", ["examples/hello/hello.yml", "layers/busybox-initramfs.yml"])
def test_the_shipped_layers_are_reproducible(layer: str, tmp_path: Path) -> None:
    """Every recipe of the busybox layer (busybox compiled, its initramfs and card) and
    of the hello example, rebuilt in containers under every variation they allow."""
    needs_tools()
    assets = Path(os.environ.get("JAILBAKE_TEST_ASSETS", "/var/cache/jailbake-test"))
    result = jailbake(
        "repro", layer, "--offline", "--mirror", str(assets / "mirror"),
        "--cache-dir", str(tmp_path / "cache"), "--artifacts-dir", str(tmp_path / "art"),
        "--json", cwd=ROOT, timeout=1800,
    )  # fmt: skip
    summary = result.stdout.strip().splitlines()
    assert result.rc == 0, "\n".join(summary[:-1]) + result.stderr[-2000:]
    doc = json.loads(summary[-1])
    for entry in doc["recipes"]:
        if not entry["skipped"] or "jailbake writes" not in next(iter(entry["skipped"].values())):
            assert {"time", "build_path", "umask", "user_group"} & set(entry["varied"]), entry


def test_the_manifest_and_the_sbom_say_what_was_checked(tmp_path: Path) -> None:
    """A build after repro (the same keys) records each check in manifest.json and as an
    SPDX review of the recipe's package; a recipe not checked has none."""
    from conftest import assert_valid_spdx

    needs_tools()
    cache = tmp_path / "cache"
    rc, _, out = repro(tmp_path, "leaks-umask", "reproducible", "--vary", "umask,timezone",
                       "--executor", "host", cache=cache)  # fmt: skip
    assert rc == 1, out
    art = tmp_path / "art"
    built = jailbake("build", LAYER, "--executor", "host", "--cache-dir", str(cache),
                     "--artifacts-dir", str(art), cwd=ROOT)  # fmt: skip
    assert built.rc == 0, built.stderr
    manifest = json.loads((art / "manifest.json").read_text())
    recipes = {r["name"]: r for r in manifest["recipes"]}
    good, bad = (
        recipes["reproducible"]["reproducibility"],
        recipes["leaks-umask"]["reproducibility"],
    )
    assert good["reproducible"] and good["varied"] == ["timezone", "umask"]
    assert not bad["reproducible"] and bad["differs_under"] == ["umask"]
    assert good["checked"].endswith("Z") and "reproducibility" not in recipes["leaks-date"]
    sbom = json.loads((art / "sbom.spdx.json").read_text())
    packages = {p["name"]: p for p in sbom["packages"]}
    (review,) = packages["reproducible"]["annotations"]
    assert review["annotationType"] == "REVIEW"
    assert review["comment"].startswith(
        "jailbake repro: reproducible: rebuilt under timezone, umask"
    )
    assert "differs under umask" in packages["leaks-umask"]["annotations"][0]["comment"]
    assert "annotations" not in packages["leaks-date"]
    assert_valid_spdx(art / "sbom.spdx.json")
    assert "report_dir" not in good  # the manifest names nothing of this machine
    # build-report.html says it per recipe, linked to the repro report; so does the
    # report of the next build, answered from its record.
    index = (art / "repro" / "index.html").as_uri()
    for report in (art / "build-report.html").read_text(), rebuilt_report(cache, art):
        rows = {r.split('"', 1)[0]: r for r in report.split('<tr data-name="')[1:]}
        assert f'<a href="{index}">yes, under 2 variations</a>' in rows["reproducible"]
        assert f'<a href="{index}">differs under umask</a>' in rows["leaks-umask"]
        assert "variations" not in rows["leaks-date"] and "differs" not in rows["leaks-date"]


def test_check_records_are_read_as_untrusted_and_linked_only_to_their_report(
    tmp_path: Path,
) -> None:
    """A check record of the wrong kind in the cache is no check: the build goes on, and
    neither its manifest nor its report say anything of it. A check whose report
    directory a later repro reused is still said, but no longer linked there."""
    needs_tools()
    cache, art = tmp_path / "cache", tmp_path / "art"
    rc, first, out = repro(
        tmp_path, "leaks-umask", "leaks-timezone", "reproducible", "--vary", "umask,timezone",
        "--executor", "host", cache=cache,
    )  # fmt: skip
    assert rc == 1, out
    key = {e["recipe"]: e["key"] for e in first["recipes"]}["leaks-umask"]
    rc, _, out = repro(tmp_path, "reproducible", "--vary", "umask", "--executor", "host",
                       cache=cache)  # fmt: skip
    assert rc == 0, out
    index = (art / "repro" / "index.html").as_uri()
    good = {"reproducible": False, "varied": ["umask"], "not_varied": [],
            "differs_under": ["umask"], "checked": "2026-12-07T10:00:00Z"}  # fmt: skip
    for bad in (
        {**good, "reproducible": "false"},
        {**good, "varied": 3},
        {**good, "differs_under": ["<script>"]},
        {**good, "checked": "<b>yesterday</b>"},
        [good],
    ):
        (cache / "checks" / f"{key}.json").write_text(json.dumps(bad))
        built = jailbake("build", LAYER, "--executor", "host", "--cache-dir", str(cache),
                         "--artifacts-dir", str(art), cwd=ROOT)  # fmt: skip
        assert built.rc == 0, (bad, built.stderr)
        recipes = {r["name"]: r for r in json.loads((art / "manifest.json").read_text())["recipes"]}
        assert "reproducibility" not in recipes["leaks-umask"], bad
        report = (art / "build-report.html").read_text()
        rows = {r.split('"', 1)[0]: r for r in report.split('<tr data-name="')[1:]}
        assert "differs" not in rows["leaks-umask"], (bad, rows["leaks-umask"])
        assert "script&gt;" not in report and "<script>" not in rows["leaks-umask"], bad
        assert "differs under timezone</span>" in rows["leaks-timezone"]  # not linked
        assert f'<a href="{index}">yes, under 1 variations</a>' in rows["reproducible"]
    # A report place that is no path of this machine's is not linked; the check stays.
    (cache / "checks" / f"{key}.json").write_text(json.dumps({**good, "report_dir": "/tmp/\udcff"}))
    built = jailbake("build", LAYER, "--executor", "host", "--cache-dir", str(cache),
                     "--artifacts-dir", str(art), cwd=ROOT)  # fmt: skip
    assert built.rc == 0, built.stderr
    report = (art / "build-report.html").read_text()
    rows = {r.split('"', 1)[0]: r for r in report.split('<tr data-name="')[1:]}
    assert (
        '<span class="bad" title="checked 2026-12-07T10:00:00Z">differs under umask</span>'
        in (rows["leaks-umask"])
    )


def test_a_check_is_linked_to_a_report_only_while_it_lists_the_result(tmp_path: Path) -> None:
    """Not when the report's rebuild of that result failed (a failure records no check),
    nor when the report is gone or is not one; a record's fields of another kind, or
    a deep or special file where the record should be, are no check at all."""
    from jailbake.bake.checks import RESULTS, checks_of
    from jailbake.cache.history import History, differences
    from jailbake.cache.store import Store

    history = History(Store(tmp_path / "cache"))
    key, report = "a" * 64, tmp_path / "report"
    report.mkdir()
    record: dict[str, object] = {
        "reproducible": True, "varied": ["umask"], "not_varied": [], "differs_under": [],
        "checked": "2026-12-07T10:00:00Z",
    }  # fmt: skip
    history.record_check(key, record, report)
    for listed, linked in (
        ({"recipes": [{"key": key, "error": ""}]}, True),
        ({"recipes": [{"key": key, "error": "build failed"}]}, False),
        ({"recipes": {"key": key}}, False),
        ([key], False),
        (None, False),
    ):
        results = report / RESULTS
        results.unlink(missing_ok=True)
        if listed is not None:
            results.write_text(json.dumps(listed))
        found = checks_of(history, {"r": key})
        assert found["r"] == ({**record, "report_dir": str(report)} if linked else record)
    history.check_path(key).write_text("[" * 100_000)
    assert checks_of(history, {"r": key}) == {}
    history.check_path(key).unlink()
    os.mkfifo(history.check_path(key))  # read as it is, it would never end
    assert checks_of(history, {"r": key}) == {}
    assert differences({"differs_under": ["umask", "time"]}) == "differs under umask, time"
    assert differences({"differs_under": ["none"]}) == (
        "differs with no variation (not deterministic)"
    )
    assert differences({"differs_under": []}) == (
        "differs under all variations at once, under none alone"
    )


def rebuilt_report(cache: Path, art: Path) -> str:
    again = jailbake("build", LAYER, "--executor", "host", "--cache-dir", str(cache),
                     "--artifacts-dir", str(art), cwd=ROOT)  # fmt: skip
    assert again.rc == 0 and "0 built" in again.stderr, again.stderr
    assert json.loads((art / "build-trace.json").read_text())["otherData"]["from_record"]
    return (art / "build-report.html").read_text()


def test_a_report_directory_holding_other_files_is_refused(tmp_path: Path) -> None:
    """--report-dir is emptied before a new report: only an earlier report may be."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me\n")
    result = jailbake(
        "repro", LAYER, "reproducible", "--executor", "host", "--report-dir", str(mine),
        "--cache-dir", str(tmp_path / "cache"), "--artifacts-dir", str(tmp_path / "art"),
        cwd=ROOT,
    )  # fmt: skip
    assert result.rc == 2
    assert f"--report-dir {mine}: expected an empty directory or an earlier report" in (
        result.stderr
    )
    assert (mine / "thesis.tex").read_text() == "keep me\n"


def test_a_file_reached_through_a_link_is_never_copied_for_diffoscope(tmp_path: Path) -> None:
    """A rebuild's tree may hold a link where the cached one has a directory: the file
    below it is the host's, not the step's, and stays out of the reports."""
    from jailbake.bake.repro import _inside

    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "file").write_text("x\n")
    (tmp_path / "link").symlink_to("/etc")
    assert _inside(tmp_path, "real/file")
    assert not _inside(tmp_path, "link/passwd")
    assert not _inside(tmp_path, "real/missing")
