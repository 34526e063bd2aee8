"""Workspaces: a recipe's sources as a git repository that builds take them from,
rebuilt incrementally, and finished back into patch files."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import HTTPFiles, Project, make_tarball, sha256

MAKEFILE = (
    "all: out/a.txt out/b.txt\n"
    "out/%.txt: %.in\n"
    "\tmkdir -p out\n"
    "\ttr a-z A-Z < $< > $@\n"
    "\techo $< >> compiled.log\n"
)
SCRIPT = (
    "rm -f compiled.log\n"
    "make\n"
    'cp out/a.txt out/b.txt "$OUT/"\n'
    'touch compiled.log; cp compiled.log "$OUT/compiled.txt"\n'
)
MAIL_PATCH = """\
From 1111111111111111111111111111111111111111 Mon Sep 17 00:00:00 2001
From: Ada <ada@example.org>
Date: Tue, 14 Nov 2023 22:13:20 +0000
Subject: [PATCH] Say hello louder

---
 a.in | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/a.in b/a.in
--- a/a.in
+++ b/a.in
@@ -1,2 +1,2 @@
-hello
+hello there
 second line
--
2.39.5
"""
PLAIN_PATCH = """\
--- calc-1.0/b.in
+++ calc-1.0/b.in
@@ -1 +1 @@
-bee
+bumblebee
"""


def git(repo: Path, *args: str) -> str:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="Dev",
        GIT_AUTHOR_EMAIL="dev@example.org",
        GIT_COMMITTER_NAME="Dev",
        GIT_COMMITTER_EMAIL="dev@example.org",
    )
    cp = subprocess.run(["git", "-C", str(repo), *args], env=env, capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout


def calc_project(project: Project, http: HTTPFiles, **fields: object) -> Path:
    """A recipe 'calc' with a tarball source, a mail patch and a plain patch, built by a
    Makefile that records what it compiled."""
    files = {
        "Makefile": MAKEFILE,
        "a.in": "hello\nsecond line\n",
        "b.in": "bee\n",
        "sub/data.txt": "data\n",
        ".gitignore": "*.in\n",  # the workspace keeps every source file all the same
    }
    tarball = make_tarball(files, top="calc-1.0")
    url = http.add("calc-1.0.tar.gz", tarball)
    project.file("recipes/files/0001-louder.patch", MAIL_PATCH)
    project.file("recipes/files/fix-b.patch", PLAIN_PATCH)
    body: dict[str, object] = {
        "license": "MIT",
        "sources": [{"url": url, "sha256": sha256(tarball), "strip": 1}],
        "patches": ["files/0001-louder.patch", {"path": "files/fix-b.patch", "strip": 1}],
        "builder": "host",
        "script": SCRIPT,
        "outputs": [
            {"path": "a.txt", "publish": True},
            {"path": "b.txt", "publish": True},
            "compiled.txt",
        ],
    }
    body.update(fields)
    return project.recipe("calc", body)


def workspace(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    result = project.run("workspace", *args, "--cache-dir", str(project.cache))
    return subprocess.CompletedProcess(args, result.rc, result.stdout, result.stderr)


def build(project: Project, art: Path) -> dict[str, str]:
    """Build calc; the artifacts and what the step compiled, plus the report's lists."""
    report = project.build("--target", "calc", artifacts=art).report
    out = {name: (art / name).read_text() for name in ("a.txt", "b.txt")}
    manifest = json.loads((art / "manifest.json").read_text())
    key = next(r["key"] for r in manifest["recipes"] if r["name"] == "calc")
    out["built"] = ",".join(report["built"])
    out["key"] = key
    return out


def compiled_by(project: Project, key: str) -> list[str]:
    """What the build of key compiled, from its stored output."""
    result = json.loads((project.cache / "ac" / key[:2] / f"{key}.json").read_text())
    tree = project.cache / "trees" / result["output_digest"]
    return list((tree / "compiled.txt").read_text().split())


def test_a_workspace_builds_incrementally_and_finishes_into_patches(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    recipe_file = calc_project(project, http)
    art = tmp_path / "art"
    pinned = build(project, art)
    assert pinned["a.txt"] == "HELLO THERE\nSECOND LINE\n" and pinned["b.txt"] == "BUMBLEBEE\n"

    ws = tmp_path / "ws" / "calc"
    started = workspace(project, "layer.yml", "calc", str(ws))
    assert started.returncode == 0, started.stderr
    assert "2 patches as commits" in started.stderr
    subjects = git(ws, "log", "--format=%s%x09%an").splitlines()
    assert subjects == [
        "fix-b.patch\tjailbake",
        "Say hello louder\tAda",  # git am kept the mail's author and subject
        "calc 1: the pinned sources\tjailbake",
    ]
    assert git(ws, "status", "--porcelain") == ""
    assert (ws / "a.in").read_text() == "hello there\nsecond line\n"
    assert "a.in" in git(ws, "ls-files")  # tracked although .gitignore names it

    listed = workspace(project)
    assert listed.returncode == 0 and "calc" in listed.stdout and str(ws) in listed.stdout
    explained = project.explain("calc").stdout
    assert '"workspace":' in explained

    # The same sources as the pinned build: the same bytes, under a key of their own.
    first = build(project, art)
    assert (first["a.txt"], first["b.txt"]) == (pinned["a.txt"], pinned["b.txt"])
    assert first["key"] != pinned["key"] and first["built"] == "calc"
    assert compiled_by(project, first["key"]) == ["a.in", "b.in"]

    # One file edited: only it is compiled again; the build directory kept the rest.
    (ws / "a.in").write_text("hello there\nsecond line\nthird\n")
    second = build(project, art)
    assert second["a.txt"] == "HELLO THERE\nSECOND LINE\nTHIRD\n"
    assert compiled_by(project, second["key"]) == ["a.in"]

    # Nothing changed: nothing built.
    assert build(project, art)["built"] == ""

    # An edit that keeps the size and the modification time is seen all the same.
    before = (ws / "b.in").stat()
    (ws / "b.in").write_text("BUMBLEbee\n")
    os.utime(ws / "b.in", ns=(before.st_atime_ns, before.st_mtime_ns))
    third = build(project, art)
    assert third["b.txt"] == "BUMBLEBEE\n" and third["built"] == "calc"
    assert compiled_by(project, third["key"]) == ["b.in"]
    (ws / "b.in").write_text("bumblebee\n")

    # Commit the work, finish: a third patch beside the others, the workspace ends.
    git(ws, "commit", "-q", "-am", "Add a third line")
    last = build(project, art)
    finished = workspace(project, "--finish", "layer.yml", "calc")
    assert finished.returncode == 0, finished.stderr
    assert "2 kept; 1 written" in finished.stderr
    data = yaml.safe_load(recipe_file.read_text())
    assert data["patches"] == [
        "files/0001-louder.patch",
        "files/fix-b.patch",
        "files/0003-Add-a-third-line.patch",
    ]
    written = (recipe_file.parent / "files/0003-Add-a-third-line.patch").read_text()
    assert written.startswith("From 0000000000000000000000000000000000000000 ")
    assert "Subject: [PATCH] Add a third line" in written and "+third" in written
    assert (recipe_file.parent / "files/fix-b.patch").read_text() == PLAIN_PATCH
    assert workspace(project).stdout.strip() == "no active workspaces"

    # Built from the pinned sources and the patches again: the workspace's bytes.
    after = build(project, art)
    assert after["key"] != last["key"] and after["built"] == "calc"
    assert (after["a.txt"], after["b.txt"]) == (last["a.txt"], last["b.txt"])
    assert compiled_by(project, after["key"]) == ["a.in", "b.in"]  # a clean tree


def test_reset_goes_back_to_the_pinned_sources(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    calc_project(project, http)
    art = tmp_path / "art"
    pinned = build(project, art)
    ws = tmp_path / "calc-ws"
    assert workspace(project, "layer.yml", "calc", str(ws)).returncode == 0
    (ws / "b.in").write_text("wasp\n")
    assert build(project, art)["b.txt"] == "WASP\n"

    refused = workspace(project, "--finish", "layer.yml", "calc")
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "has changes not committed (b.in)" in line and "commit them" in line

    again = workspace(project, "layer.yml", "calc", str(tmp_path / "other"))
    assert again.returncode == 2 and f"already builds from {ws}" in again.stderr
    assert not (tmp_path / "other").exists()

    reset = workspace(project, "--reset", "layer.yml", "calc")
    assert reset.returncode == 0 and "is left as it is" in reset.stderr
    assert ws.is_dir()
    back = build(project, art)
    assert back["key"] == pinned["key"] and back["built"] == ""  # the cached result
    assert back["b.txt"] == "BUMBLEBEE\n"
    assert not list((project.cache / "workspace-builds").iterdir())


def test_amended_and_dropped_patches(project: Project, http: HTTPFiles, tmp_path: Path) -> None:
    recipe_file = calc_project(project, http)
    ws = tmp_path / "ws"
    assert workspace(project, "layer.yml", "calc", str(ws)).returncode == 0
    first, _ = git(ws, "rev-list", "--reverse", "jailbake-base..HEAD").split()
    # Drop the first patch, amend the second one (its subject stays).
    git(ws, "rebase", "-q", "--onto", "jailbake-base", first)
    (ws / "b.in").write_text("honeybee\n")
    git(ws, "commit", "-q", "-a", "--amend", "--no-edit")
    finished = workspace(project, "--finish", "layer.yml", "calc")
    assert finished.returncode == 0, finished.stderr
    assert "dropped (files/0001-louder.patch)" in finished.stderr
    data = yaml.safe_load(recipe_file.read_text())
    assert data["patches"] == ["files/fix-b.patch"]  # the amended commit kept its file
    assert "+honeybee" in (recipe_file.parent / "files/fix-b.patch").read_text()
    assert not (recipe_file.parent / "files/0001-louder.patch").exists()
    out = build(project, tmp_path / "art")
    assert out["a.txt"] == "HELLO\nSECOND LINE\n" and out["b.txt"] == "HONEYBEE\n"


def test_finish_into_a_later_layer(project: Project, http: HTTPFiles, tmp_path: Path) -> None:
    recipe_file = calc_project(project, http)
    original = recipe_file.read_text()
    (project.root / "local").mkdir()
    project.layer(
        "layer.yml",
        {
            "header": {"version": 14},
            "repos": {"this": {"layers": {"recipes": None, "local": None}}},
            "env": {"SOURCE_DATE_EPOCH": "1700000000"},
        },
    )
    ws = tmp_path / "ws"
    assert workspace(project, "layer.yml", "calc", str(ws)).returncode == 0
    (ws / "sub" / "data.txt").write_text("more data\n")
    git(ws, "commit", "-q", "-am", "More data")

    wrong = workspace(project, "--finish", "layer.yml", "calc", "--layer", str(tmp_path))
    assert wrong.returncode == 2 and "expected a recipe directory of this configuration" in (
        wrong.stderr
    )
    finished = workspace(project, "--finish", "layer.yml", "calc", "--layer", "local")
    assert finished.returncode == 0, finished.stderr
    assert recipe_file.read_text() == original
    copy = yaml.safe_load((project.root / "local" / "calc.yml").read_text())
    assert copy["patches"][-1] == "files/0003-More-data.patch"
    assert (project.root / "local/files/fix-b.patch").read_text() == PLAIN_PATCH
    listed = project.run("list", "layer.yml", "--cache-dir", str(project.cache), "--executor",
                         "host")  # fmt: skip
    assert "local/calc.yml" in listed.stdout and "overridden by a later layer" in listed.stderr


def test_workspace_refusals(project: Project, http: HTTPFiles, tmp_path: Path) -> None:
    calc_project(project, http)
    project.recipe("plain")  # a script and no sources
    unknown = workspace(project, "layer.yml", "calx")
    assert unknown.returncode == 2 and "unknown recipe 'calx'" in unknown.stderr
    nothing = workspace(project, "layer.yml", "plain", str(tmp_path / "p"))
    assert nothing.returncode == 2 and "has no sources to edit" in nothing.stderr
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    busy = workspace(project, "layer.yml", "calc", str(full))
    assert busy.returncode == 2 and "exists and is not empty" in busy.stderr
    assert sorted(os.listdir(full)) == ["x"]
    nothing_active = workspace(project, "--reset", "layer.yml", "calc")
    assert nothing_active.returncode == 2 and "has no active workspace" in nothing_active.stderr
    layer_alone = workspace(project, "layer.yml", "calc", "--layer", "x")
    assert layer_alone.returncode == 2 and "--layer goes with --finish" in layer_alone.stderr


def test_a_patch_that_does_not_apply_leaves_no_workspace(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    calc_project(project, http)
    project.file("recipes/files/fix-b.patch", PLAIN_PATCH.replace("-bee", "-wasp"))
    ws = tmp_path / "ws"
    failed = workspace(project, "layer.yml", "calc", str(ws))
    assert failed.returncode == 2
    (line,) = [x for x in failed.stderr.splitlines() if "error" in x]
    assert "patches[1] files/fix-b.patch does not apply" in line, failed.stderr
    assert not ws.exists()
    assert workspace(project).stdout.strip() == "no active workspaces"


def test_the_build_directory_never_writes_through_a_link_a_step_left(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    script = SCRIPT + f"rm -rf sub; ln -s {outside} sub\n"
    calc_project(project, http, script=script)
    ws = tmp_path / "ws"
    assert workspace(project, "layer.yml", "calc", str(ws)).returncode == 0
    build(project, tmp_path / "art")
    (ws / "sub" / "data.txt").write_text("changed\n")
    build(project, tmp_path / "art")
    assert list(outside.iterdir()) == []
    (build_dir,) = (project.cache / "workspace-builds").iterdir()
    assert (build_dir / "src" / "sub").is_symlink()  # the step made it again, after the sync


@pytest.mark.usefixtures("builder_images")
def test_a_workspace_in_a_builder_container(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    project.with_builders()
    calc_project(project, http, builder="debian-build")
    ws = tmp_path / "ws"
    assert workspace(project, "layer.yml", "calc", str(ws)).returncode == 0
    art = tmp_path / "art"

    def build_in_container() -> str:
        project.build("--target", "calc", executor="docker", artifacts=art)
        manifest = json.loads((art / "manifest.json").read_text())
        return str(next(r["key"] for r in manifest["recipes"] if r["name"] == "calc"))

    assert compiled_by(project, build_in_container()) == ["a.in", "b.in"]
    (ws / "b.in").write_text("hornet\n")
    key = build_in_container()
    # The container's user owns the build directory now: only the edited file is new.
    assert compiled_by(project, key) == ["b.in"]
    assert (art / "b.txt").read_text() == "HORNET\n"


SECOND_MAIL = """\
From 2222222222222222222222222222222222222222 Mon Sep 17 00:00:00 2001
From: Ada <ada@example.org>
Date: Tue, 14 Nov 2023 22:13:21 +0000
Subject: [PATCH] More data

---
 sub/data.txt | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/sub/data.txt b/sub/data.txt
--- a/sub/data.txt
+++ b/sub/data.txt
@@ -1 +1 @@
-data
+more data
--
2.39.5
"""


def test_a_file_of_several_mails_stays_one_patch(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    recipe_file = calc_project(project, http)
    project.file("recipes/files/0001-louder.patch", MAIL_PATCH + SECOND_MAIL)
    before = yaml.safe_load(recipe_file.read_text())["patches"]
    ws = tmp_path / "ws"
    assert workspace(project, "layer.yml", "calc", str(ws)).returncode == 0
    assert len(git(ws, "rev-list", "jailbake-base..HEAD").split()) == 3
    finished = workspace(project, "--finish", "layer.yml", "calc")
    assert finished.returncode == 0, finished.stderr
    assert "2 kept; 0 written" in finished.stderr
    assert yaml.safe_load(recipe_file.read_text())["patches"] == before
    assert sorted(p.name for p in (recipe_file.parent / "files").iterdir()) == [
        "0001-louder.patch",
        "fix-b.patch",
    ]


def test_finish_refuses_ignored_files_and_a_changed_recipe(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    calc_project(project, http)
    ws = tmp_path / "ws"
    assert workspace(project, "layer.yml", "calc", str(ws)).returncode == 0
    (ws / "c.in").write_text("new\n")  # the sources' .gitignore names *.in
    ignored = workspace(project, "--finish", "layer.yml", "calc")
    assert ignored.returncode == 2 and "changes not committed (c.in)" in ignored.stderr
    (ws / "c.in").unlink()
    project.file("recipes/files/fix-b.patch", PLAIN_PATCH.replace("bumblebee", "hornet"))
    changed = workspace(project, "--finish", "layer.yml", "calc")
    assert changed.returncode == 2
    assert "changed its sources or patches since the workspace began" in changed.stderr
    assert "hornet" in (project.root / "recipes/files/fix-b.patch").read_text()


def test_a_changed_dependency_is_rebuilt_from_in_the_build_directory(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    calc_project(
        project,
        http,
        depends=["words"],
        script=SCRIPT.replace("make\n", 'make\ncp "$DEPS/words/w.txt" w.txt; make out/w.up\n'),
    )
    project.recipe("words", script='mkdir -p "$OUT"; echo "$WORD" > "$OUT/w.txt"',
                   environment={"WORD": "one"}, outputs=["w.txt"])  # fmt: skip
    makefile_rule = "out/w.up: w.txt\n\ttr a-z A-Z < $< > $@\n\techo w >> compiled.log\n"
    ws = tmp_path / "ws"
    assert workspace(project, "layer.yml", "calc", str(ws)).returncode == 0
    (ws / "Makefile").write_text((ws / "Makefile").read_text() + makefile_rule)
    art = tmp_path / "art"
    first = build(project, art)
    assert compiled_by(project, first["key"]) == ["a.in", "b.in", "w"]
    project.recipe("words", script='mkdir -p "$OUT"; echo "$WORD" > "$OUT/w.txt"',
                   environment={"WORD": "two"}, outputs=["w.txt"])  # fmt: skip
    second = build(project, art)
    assert second["built"] == "words,calc"
    assert compiled_by(project, second["key"]) == ["w"]
    (build_dir,) = (project.cache / "workspace-builds").iterdir()
    assert (build_dir / "src" / "out" / "w.up").read_text() == "TWO\n"


def test_sync_checks_what_it_copies_and_never_removes_through_a_link(tmp_path: Path) -> None:
    from jailbake.workspace.workspaces import WorkspaceChanged, scan, sync

    src, dest, outside = tmp_path / "ws", tmp_path / "build", tmp_path / "outside"
    (src / "a").mkdir(parents=True)
    (src / "a" / "f.c").write_text("one\n")
    (src / "g.c").write_text("g\n")
    record = tmp_path / "record.json"
    sync(scan(src, tmp_path / "memo.json"), src, dest, record)
    assert (dest / "a" / "f.c").read_text() == "one\n"

    # Changed after the scan that made the key: refused, not copied.
    scanned = scan(src, tmp_path / "memo.json")
    (src / "g.c").write_text("G\n")
    (dest / "g.c").write_text("stale\n")
    with pytest.raises(WorkspaceChanged, match=r"g\.c changed while the build ran"):
        sync(scanned, src, dest, record)
    assert not (dest / "g.c").exists()

    # A build replaced a/ by a link; a/ then left the workspace: nothing behind the link goes.
    outside.mkdir()
    (outside / "f.c").write_text("keep me\n")
    import shutil

    shutil.rmtree(dest / "a")
    (dest / "a").symlink_to(outside)
    shutil.rmtree(src / "a")
    sync(scan(src, tmp_path / "memo.json"), src, dest, record)
    assert (outside / "f.c").read_text() == "keep me\n"
