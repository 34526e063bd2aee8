"""`jailbake cve`: a build's components against a local OSV database (records in the
shape osv.dev publishes, invented ids), with the layer's VEX statements applied."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import Project
from jailbake.release import osv

STATUS = """\
Package: libfoo
Status: install ok installed
Architecture: arm64
Source: foo (2.0-1)
Version: 2.0-1+b1

Package: bar
Status: install ok installed
Architecture: all
Version: 3.1-2
"""

ROOTFS_SCRIPT = r"""
root="$WORKDIR/root"
mkdir -p "$root/var/lib/dpkg" "$root/etc"
cp "$SRC/status" "$root/var/lib/dpkg/status"
printf 'ID=debian\nVERSION_ID="12"\n' > "$root/etc/os-release"
mkdir -p "$OUT"
tar -C "$root" --sort=name --numeric-owner --mtime=@0 -cf "$OUT/rootfs.tar" .
"""

VEX = {
    "@context": "https://openvex.dev/ns/v0.2.0",
    "@id": "https://example.org/vex/1",
    "author": "the layer's maintainers",
    "timestamp": "2026-01-01T00:00:00Z",
    "version": 1,
    "statements": [{
        "vulnerability": {"name": "CVE-2099-3000"},
        "products": [{"@id": "recipe:kernel"}],
        "status": "not_affected",
        "justification": "vulnerable_code_not_present",
        "impact_statement": "the driver is not in the kernel's configuration",
    }],
}  # fmt: skip


def git(repo: Path, *args: str) -> str:
    cp = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c",
                         "user.email=t@example.org", *args],
                        check=True, capture_output=True, text=True)  # fmt: skip
    return cp.stdout.strip()


def record(ident: str, ecosystem: str, name: str, events: list[dict[str, str]],
           kind: str = "ECOSYSTEM", **more: Any) -> dict[str, Any]:  # fmt: skip
    rng: dict[str, Any] = {"type": kind, "events": events}
    if "repo" in more:
        rng["repo"] = more.pop("repo")
    return {
        "schema_version": "1.6.0",
        "id": ident,
        "modified": "2026-01-01T00:00:00Z",
        "summary": f"{ident} in {name}",
        "affected": [{"package": {"ecosystem": ecosystem, "name": name}, "ranges": [rng]}],
        **more,
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("cve")
    upstream = tmp / "upstream"
    upstream.mkdir()
    git(upstream, "init", "-q", "-b", "main")
    commits = []
    for n in range(3):
        (upstream / "file.txt").write_text(f"{n}\n")
        git(upstream, "add", "file.txt")
        git(upstream, "commit", "-q", "-m", f"commit {n}")
        commits.append(git(upstream, "rev-parse", "HEAD"))
    a, b, c = commits

    project = Project(tmp / "p", tmp / "cache")
    project.file("recipes/files/status", STATUS)
    project.file("vex/kernel.openvex.json", json.dumps(VEX))
    project.recipe("rootfs", sources=[{"file": "files/status"}], script=ROOTFS_SCRIPT,
                   outputs=["rootfs.tar"])  # fmt: skip
    project.recipe("kernel", version="5.4.16",
                   cve_product={"ecosystem": "Linux", "name": "Kernel"})  # fmt: skip
    project.recipe("tool", sources=[{"git": f"file://{upstream}", "commit": b, "dest": "src"}])
    project.layer("layer.yml", {
        "header": {"version": 14}, "repos": {"this": {"layers": {"recipes": None}}},
        "env": {"SOURCE_DATE_EPOCH": "1700000000", "JAILBAKE_VEX": "vex/kernel.openvex.json"},
        "target": ["rootfs", "kernel", "tool"],
    })  # fmt: skip
    art = tmp / "art"
    project.build(artifacts=art)

    db = tmp / "db"
    records = [
        ("Debian:12", record("DEBIAN-CVE-2099-0001", "Debian:12", "foo",
                             [{"introduced": "0"}, {"fixed": "2.0-2"}])),
        ("Debian:12", record("DEBIAN-CVE-2099-0002", "Debian:12", "foo",
                             [{"introduced": "0"}, {"fixed": "2.0-1"}])),
        ("Debian:11", record("DEBIAN-CVE-2099-0003", "Debian:11", "foo",
                             [{"introduced": "0"}])),
        ("Debian:12", record("DEBIAN-CVE-2099-0004", "Debian:12", "bar",
                             [{"introduced": "3.0-1"}, {"last_affected": "3.1-2"}])),
        ("Linux", record("JB-LINUX-0001", "Linux", "Kernel",
                         [{"introduced": "5.4.0"}, {"fixed": "5.4.20"}],
                         aliases=["CVE-2099-1000"])),
        ("Linux", record("JB-LINUX-0002", "Linux", "Kernel",
                         [{"introduced": "5.5"}, {"fixed": "5.6"}])),
        ("Linux", record("JB-LINUX-0003", "Linux", "Kernel",
                         [{"introduced": "0"}, {"fixed": "5.4.20"}],
                         aliases=["CVE-2099-3000"])),
        ("GIT", record("JB-GIT-0001", "", "", [{"introduced": a}, {"fixed": c}], "GIT",
                       repo=f"file://{upstream}.git")),
        ("GIT", record("JB-GIT-0002", "", "", [{"introduced": a}, {"fixed": b}], "GIT",
                       repo=f"file://{upstream}")),
    ]  # fmt: skip
    for folder, data in records:
        path = db / folder / f"{data['id']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
    (db / "Linux" / "BROKEN.json").write_text('{"id": "JB-BROKEN", "affected": [')
    bogus = record("JB-BOGUS", "Linux", "Kernel", [{"introduced": "0"}], "BOGUS")
    (db / "Linux" / "BOGUS.json").write_text(json.dumps(bogus))
    return {"project": project, "art": art, "db": db, "commits": commits}


def cve(setup: dict[str, Any], *more: str) -> Any:
    project: Project = setup["project"]
    return project.run("cve", "layer.yml", "--db", str(setup["db"]), "--artifacts-dir",
                       str(setup["art"]), "--cache-dir", str(project.cache), *more)  # fmt: skip


def test_components_are_matched_by_version_range_and_commit(setup: dict[str, Any]) -> None:
    result = cve(setup)
    assert result.rc == 1, result.stderr  # something affects the build
    doc = json.loads((setup["art"] / "cve" / "cve.json").read_text())
    found = {f["id"]: f for f in doc["findings"]}
    assert set(found) == {"DEBIAN-CVE-2099-0001", "DEBIAN-CVE-2099-0004", "JB-LINUX-0001",
                          "JB-LINUX-0003", "JB-GIT-0001"}  # fmt: skip
    foo = found["DEBIAN-CVE-2099-0001"]  # by the source package, at its version
    assert (foo["component"], foo["version"], foo["fixed"]) == ("foo", "2.0-1", "2.0-2")
    assert foo["binaries"] == ["libfoo"] and foo["status"] == "affected"
    assert found["JB-LINUX-0001"]["fixed"] == "5.4.20" and found["JB-LINUX-0001"]["aliases"] == [
        "CVE-2099-1000"
    ]
    assert found["JB-GIT-0001"]["how"] == "commit ancestry"
    # The layer's VEX settles the one it names, by its alias.
    settled = found["JB-LINUX-0003"]
    assert settled["status"] == "not_affected"
    assert settled["justification"] == "vulnerable_code_not_present"
    assert doc["affected"] == 4
    # Each malformed record is one line; the rest are read.
    skipped = [ln for ln in result.stderr.splitlines() if ln.startswith("[jailbake] skipped")]
    assert len(skipped) == 2 and any("BROKEN.json" in line for line in skipped)
    assert any("BOGUS.json" in line and "type: expected one of" in line for line in skipped)
    assert doc["database"]["records"] == 9
    # The table on the terminal, the page, and the OpenVEX document.
    assert "JB-GIT-0001" in result.stdout and "DEBIAN-CVE-2099-0002" not in result.stdout
    page = (setup["art"] / "cve" / "index.html").read_text()
    assert "4 affecting, 5 found" in page and "DEBIAN-CVE-2099-0004" in page
    vex = json.loads((setup["art"] / "cve" / "vex.openvex.json").read_text())
    statuses = {s["vulnerability"]["name"]: s for s in vex["statements"]}
    assert statuses["JB-LINUX-0003"]["status"] == "not_affected"
    assert statuses["DEBIAN-CVE-2099-0001"]["action_statement"] == "update to 2.0-2 or later"
    assert statuses["DEBIAN-CVE-2099-0001"]["products"] == [
        {"@id": "pkg:deb/debian/foo@2.0-1?arch=source"}
    ]


def test_settled_findings_only_exit_zero(setup: dict[str, Any], tmp_path: Path) -> None:
    db = tmp_path / "db"
    (db / "Linux").mkdir(parents=True)
    (db / "Linux" / "JB-LINUX-0003.json").write_bytes(
        (setup["db"] / "Linux" / "JB-LINUX-0003.json").read_bytes()
    )
    project: Project = setup["project"]
    result = project.run("cve", "layer.yml", "--db", str(db), "--artifacts-dir", str(setup["art"]),
                         "--report-dir", str(tmp_path / "r"), "--json")  # fmt: skip
    assert result.rc == 0, result.stderr
    assert result.report["affected"] == 0 and len(result.report["findings"]) == 1


def test_without_the_repository_only_named_commits_count(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    """A cache that lacks the source's history cannot tell ancestry: only a range
    naming the pinned commit itself is decided."""
    project: Project = setup["project"]
    empty = tmp_path / "cache"
    result = project.run("cve", "--db", str(setup["db"]), "--artifacts-dir", str(setup["art"]),
                         "--cache-dir", str(empty), "--report-dir", str(tmp_path / "r"),
                         "--json")  # fmt: skip
    found = {f["id"] for f in result.report["findings"]}
    assert "JB-GIT-0001" not in found and result.report["git_ranges_not_evaluated"] == 1
    # JB-GIT-0002 names the pinned commit as fixed: decided without history.
    assert "JB-GIT-0002" not in found


@pytest.mark.parametrize(
    ("vex", "message"),
    [
        ("{", "not a JSON file"),
        ('{"@context": "https://openvex.dev/ns/v0.2.0", "statements": [{"vulnerability": '
         '{"name": "CVE-1", "aliases": "CVE-2"}, "products": [{"@id": "recipe:kernel"}], '
         '"status": "fixed"}]}', "vulnerability.aliases: expected a list of ids"),
        ('{"@context": "https://openvex.dev/ns/v0.2.0", "statements": [{"vulnerability": '
         '{"name": "CVE-1"}, "products": [{"@id": "recipe:kernel"}], "status": "not_affected"}]}',
         "needs a justification or an impact_statement"),
        ('{"@context": "https://openvex.dev/ns/v0.2.0", "statements": [{"vulnerability": '
         '{"name": "CVE-1"}, "products": [{"@id": "recipe:kernel"}], "status": "maybe"}]}',
         "statements[0].status: expected one of"),
    ],
)  # fmt: skip
def test_a_bad_vex_file_is_one_line(
    setup: dict[str, Any], tmp_path: Path, vex: str, message: str
) -> None:
    bad = tmp_path / "bad.openvex.json"
    bad.write_text(vex)
    result = cve(setup, "--vex", str(bad), "--report-dir", str(tmp_path / "r"))
    assert result.rc == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("a", "b", "sign"),
    [("1.0~rc1", "1.0", -1), ("1:0.1", "2.0", 1), ("2.0-1", "2.0-1+b1", -1),
     ("2.0-1+deb12u1", "2.0-1", 1), ("0.9", "0.10", -1), ("1.0", "1.0-0", 0),
     ("5.2.15-2+b13", "5.2.15-2", 1)],
)  # fmt: skip
def test_debian_versions_order_as_dpkg_orders_them(a: str, b: str, sign: int) -> None:
    got = osv.debian_compare(a, b)
    assert (got > 0) - (got < 0) == sign
    op = {-1: "lt", 0: "eq", 1: "gt"}[sign]
    assert subprocess.run(["dpkg", "--compare-versions", a, op, b]).returncode == 0


def test_ranges_as_osv_evaluates_them() -> None:
    n = osv.numeric_compare
    events = [("introduced", "1.0"), ("fixed", "1.5"), ("introduced", "2.0"), ("fixed", "2.3")]
    assert [osv.in_range(v, events, n) for v in ("0.9", "1.2", "1.7", "2.1", "2.3")] == [
        False, True, False, True, False
    ]  # fmt: skip
    assert osv.in_range("5.4.16", [("introduced", "0"), ("last_affected", "5.4.16")], n)
    assert not osv.in_range("5.4.17", [("introduced", "0"), ("last_affected", "5.4.16")], n)
    assert not osv.in_range("5.10.1", [("introduced", "5.4.0"), ("limit", "5.5")], n)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": "JB-1", "affected": [], "severity": 5}', "severity: expected a list"),
        ('{"id": "JB-1", "affected": [{"package": {"ecosystem": "Linux", "name": "Kernel"}, '
         '"ranges": 5}]}', "ranges: expected a list"),
        ("[" * 100000 + "]" * 100000, "recursion"),
        ('{"id": "JB-1", "affected": [{"package": {"ecosystem": "Linux", "name": "Kernel"}, '
         '"ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.\\u00b2"}]}]}]}',
         "introduced: expected a version or a commit"),
        ('{"id": "JB-1", "affected": [{"package": {"ecosystem": "Linux", "name": "Kernel"}, '
         '"ranges": [{"type": "ECOSYSTEM", "events": [{"fixed": "\\u001b]0;x\\u0007"}]}]}]}',
         "fixed: expected a version or a commit"),
        ('{"id": "JB-1", "aliases": "CVE-1", "affected": []}', "aliases: expected a list"),
    ],
    ids=["severity", "ranges", "nesting", "unicode-digit", "escape", "aliases"],
)  # fmt: skip
def test_each_malformed_record_is_one_line_and_the_rest_are_read(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "bad.json").write_text(text)
    good = record("JB-GOOD", "Linux", "Kernel", [{"introduced": "0"}])
    (tmp_path / "good.json").write_text(json.dumps(good))
    db = osv.load(tmp_path)
    assert [r.id for r in db.records] == ["JB-GOOD"]
    (line,) = db.malformed
    assert "bad.json" in line and message in line.lower() and "\n" not in line


def test_a_fifo_or_a_link_in_the_database_is_skipped(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "link.json").symlink_to("/etc/hostname")
    db = osv.load(tmp_path)
    assert db.records == [] and len(db.malformed) == 2


def test_pre_releases_come_before_their_release() -> None:
    n = osv.numeric_compare
    assert n("6.8-rc1", "6.8") < 0 < n("6.8", "6.8-rc7") and n("1.0.0-alpha", "1.0.0-beta") < 0
    assert osv.in_range("6.8-rc1", [("introduced", "0"), ("fixed", "6.8")], n)


def test_vex_names_components_by_package_url_or_recipe(setup: dict[str, Any]) -> None:
    from jailbake.release import cve as cve_module
    from jailbake.release.vex import Statement

    manifest = json.loads((setup["art"] / "manifest.json").read_text())
    found = {c.ref: c for c in cve_module.components_of(manifest, lambda url: None)}
    foo = found["debsrc:rootfs:foo"]
    assert foo.named_by("pkg:deb/debian/foo@2.0-1")  # versioned, no qualifiers
    assert foo.named_by("pkg:deb/debian/libfoo")  # one of its binary packages
    assert foo.named_by("pkg:deb/debian/libfoo@2.0-1+b1?arch=arm64")
    assert not foo.named_by("pkg:deb/debian/foo@9.9-1")
    assert not foo.named_by("recipe:rootfs"), "a recipe's name is not its packages'"
    assert found["recipe:kernel"].named_by("recipe:kernel")
    # The last statement given wins: --vex after the layer's.
    report = cve_module.Report([foo])
    db = osv.load(setup["db"])
    report = cve_module.match(db, [foo])
    layer = Statement(frozenset({"DEBIAN-CVE-2099-0001"}), frozenset({"pkg:deb/debian/foo"}),
                      "not_affected", "component_not_present")  # fmt: skip
    later = Statement(frozenset({"DEBIAN-CVE-2099-0001"}), frozenset({"pkg:deb/debian/libfoo"}),
                      "affected")  # fmt: skip
    cve_module.apply_vex(report, [layer, later])
    (finding,) = [f for f in report.findings if f.record.id == "DEBIAN-CVE-2099-0001"]
    assert finding.status == "affected"


def test_the_report_is_the_same_for_the_same_build_and_database(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    outputs = []
    for n in range(2):
        cve(setup, "--report-dir", str(tmp_path / f"r{n}"))
        outputs.append([(tmp_path / f"r{n}" / name).read_bytes()
                        for name in ("cve.json", "vex.openvex.json", "index.html")])  # fmt: skip
    assert outputs[0] == outputs[1]
    doc = json.loads(outputs[0][0])
    assert doc["as_of"] == "2026-01-01T00:00:00Z"
