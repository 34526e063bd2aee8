"""Layer repositories named by URL, served by a real `git daemon` on 127.0.0.1: pinned
by commit, floating on a branch, locked, and built offline from the cache."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import SDE, Project

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]


class Served:
    def __init__(self, root: Path, port: int) -> None:
        self.work = root / "work"
        self.url = f"git://127.0.0.1:{port}/bsp.git"
        self.bare = root / "bsp.git"

    def commit(self, greeting: str) -> str:
        """A commit on main whose recipe prints greeting, pushed to the server."""
        recipe = self.work / "recipes" / "app.yml"
        recipe.parent.mkdir(parents=True, exist_ok=True)
        recipe.write_text(
            "name: app\nversion: '1'\n"
            f'script: mkdir -p "$OUT"; echo {greeting} > "$OUT/app.txt"\n'
            "outputs: [{path: app.txt, publish: true}]\n"
        )
        subprocess.run([*GIT, "-C", str(self.work), "add", "."], check=True)
        subprocess.run([*GIT, "-C", str(self.work), "commit", "-qm", greeting], check=True)
        subprocess.run([*GIT, "-C", str(self.work), "push", "-q", str(self.bare), "main"],
                       check=True)  # fmt: skip
        return subprocess.run(
            ["git", "-C", str(self.work), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "server"
    root.mkdir()
    subprocess.run([*GIT, "init", "-q", "--bare", str(root / "bsp.git")], check=True)
    subprocess.run([*GIT, "init", "-q", str(root / "work")], check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={root}",
         "--listen=127.0.0.1", f"--port={port}", str(root)],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    try:
        yield Served(root, port)
    finally:
        daemon.terminate()
        daemon.wait()


def layer(project: Project, url: str, **pin: str) -> None:
    project.layer(
        "layer.yml",
        {
            "header": {"version": 14},
            "repos": {"bsp": {"url": url, **pin, "layers": {"recipes": None}}},
            "env": {"SOURCE_DATE_EPOCH": str(SDE)},
        },
    )


def built_text(project: Project, tmp_path: Path, *args: str) -> tuple[list[str], str, str]:
    art = tmp_path / "art"
    result = project.build(*args, artifacts=art)
    manifest = json.loads((art / "manifest.json").read_text())
    (repo,) = manifest["layer_repos"]
    return list(result.report["built"]), (art / "app.txt").read_text().strip(), repo["commit"]


def test_a_remote_layer_pinned_by_commit(project: Project, served: Served, tmp_path: Path) -> None:
    one = served.commit("one")
    two = served.commit("two")
    layer(project, served.url, commit=one)
    assert built_text(project, tmp_path) == (["app"], "one", one)
    assert built_text(project, tmp_path) == ([], "one", one)
    # Another commit changes the recipe: its key follows.
    layer(project, served.url, commit=two)
    assert built_text(project, tmp_path) == (["app"], "two", two)
    listed = project.run("list", "layer.yml", "--json", "--executor", "host", "--cache-dir",
                         str(project.cache), check=True)  # fmt: skip
    (app,) = json.loads(listed.stdout)
    assert app["file"].endswith("recipes/app.yml")
    dumped = project.run("dump", "layer.yml", "--cache-dir", str(project.cache), check=True)
    assert yaml.safe_load(dumped.stdout)["repos"]["bsp"]["commit"] == two

    # A commit the server does not have: one line.
    layer(project, served.url, commit="f" * 40)
    result = project.build(check=False)
    assert result.rc != 0
    (line,) = result.stderr.strip().splitlines()
    assert "repos.bsp" in line and "f" * 40 in line


def test_a_floating_branch_is_said_and_locked(
    project: Project, served: Served, tmp_path: Path
) -> None:
    one = served.commit("one")
    layer(project, served.url, branch="main")
    result = project.build(artifacts=tmp_path / "art")
    assert "branch main floats" in result.stderr and one in result.stderr
    assert built_text(project, tmp_path)[1:] == ("one", one)

    dumped = project.run("dump", "layer.yml", "--resolve-refs", "--cache-dir",
                         str(project.cache), check=True)  # fmt: skip
    repo = yaml.safe_load(dumped.stdout)["repos"]["bsp"]
    assert repo["branch"] == "main" and repo["commit"] == one
    as_lock = project.run("dump", "layer.yml", "--lock", "--cache-dir", str(project.cache),
                          check=True)  # fmt: skip
    locked = project.run("lock", "layer.yml", "--cache-dir", str(project.cache), check=True)
    assert locked.stdout.strip() == f"bsp: {one}"
    lock = yaml.safe_load((project.root / "layer.lock.yml").read_text())
    assert lock["overrides"]["repos"]["bsp"]["commit"] == one
    assert yaml.safe_load(as_lock.stdout) == lock

    two = served.commit("two")  # the branch moves on; the lock holds
    result = project.build(artifacts=tmp_path / "art")
    assert "floats" not in result.stderr
    assert built_text(project, tmp_path) == ([], "one", one)
    updated = project.run("lock", "layer.yml", "--update", "--cache-dir", str(project.cache),
                          check=True)  # fmt: skip
    assert updated.stdout.strip() == f"bsp: {two}"
    assert built_text(project, tmp_path) == (["app"], "two", two)


def test_remote_layers_build_offline_from_the_cache(
    project: Project, served: Served, tmp_path: Path
) -> None:
    one = served.commit("one")
    layer(project, served.url, commit=one)
    built_text(project, tmp_path)
    subprocess.run(["rm", "-rf", str(served.bare)], check=True)  # the server has nothing now
    project.run("clean", "layer.yml", "app", "--cache-dir", str(project.cache), check=True)
    assert built_text(project, tmp_path, "--offline") == (["app"], "one", one)


def test_a_mirror_holds_remote_layers_for_a_machine_without_network(
    project: Project, served: Served, tmp_path: Path
) -> None:
    one = served.commit("one")
    layer(project, served.url, commit=one)
    mirror = tmp_path / "mirror"
    project.run("mirror", "layer.yml", str(mirror), "--no-images", "--cache-dir",
                str(tmp_path / "online-cache"), check=True)  # fmt: skip
    assert (mirror / f"bsp-{one}.tar").is_file()
    subprocess.run(["rm", "-rf", str(served.bare)], check=True)
    # A new machine: an empty cache, no server, the mirror.
    assert built_text(project, tmp_path, "--offline", "--mirror", str(mirror)) == (
        ["app"], "one", one
    )  # fmt: skip


def test_kas_patches_on_a_remote_layer(project: Project, served: Served, tmp_path: Path) -> None:
    one = served.commit("one")
    project.file(
        "patches/greet.patch",
        "--- a/recipes/app.yml\n+++ b/recipes/app.yml\n@@ -1,3 +1,3 @@\n name: app\n"
        ' version: \'1\'\n-script: mkdir -p "$OUT"; echo one > "$OUT/app.txt"\n'
        '+script: mkdir -p "$OUT"; echo ONE > "$OUT/app.txt"\n',
    )
    patches = {"greet": {"repo": "this", "path": "patches/greet.patch"}}
    project.layer(
        "layer.yml",
        {
            "header": {"version": 14},
            "repos": {
                "this": {},
                "bsp": {"url": served.url, "commit": one, "patches": patches,
                        "layers": {"recipes": None}},
            },
            "env": {"SOURCE_DATE_EPOCH": str(SDE)},
        },
    )  # fmt: skip
    assert built_text(project, tmp_path) == (["app"], "ONE", one)
    assert built_text(project, tmp_path) == ([], "ONE", one)
    # The patch edited: the same command builds again (its record does not hold).
    project.file(
        "patches/greet.patch",
        "--- a/recipes/app.yml\n+++ b/recipes/app.yml\n@@ -1,3 +1,3 @@\n name: app\n"
        ' version: \'1\'\n-script: mkdir -p "$OUT"; echo one > "$OUT/app.txt"\n'
        '+script: mkdir -p "$OUT"; echo TWO > "$OUT/app.txt"\n',
    )
    assert built_text(project, tmp_path) == (["app"], "TWO", one)
    # A patch that does not apply: one line naming it.
    project.file("patches/greet.patch", "--- a/recipes/app.yml\n+++ b/recipes/app.yml\n"
                 "@@ -1 +1 @@\n-nothing like this\n+x\n")  # fmt: skip
    result = project.build(check=False)
    assert result.rc != 0
    (line,) = result.stderr.strip().splitlines()
    assert "repos.bsp.patches" in line and "greet.patch does not apply" in line


def test_reading_a_layer_runs_no_network_command(
    project: Project, served: Served, tmp_path: Path
) -> None:
    """list, explain, graph and dump read remote layer repositories from the cache only;
    fetch (or build) is what asks the server."""
    one = served.commit("one")
    for pin in ({"commit": one}, {"branch": "main"}):
        layer(project, served.url, **pin)
        for command in (("list",), ("explain", "app"), ("graph",), ("dump",)):
            config = ["layer.yml"] if command[0] != "explain" else ["layer.yml", "app"]
            result = project.run(command[0], *config, "--cache-dir", str(project.cache))
            assert result.rc != 0, command
            errors = [ln for ln in result.stderr.splitlines() if not ln.startswith("[jailbake]")]
            assert len(errors) == 1 and "reading a layer fetches nothing" in errors[0], errors
            assert not list(project.cache.glob("git/*.git")), command  # nothing was fetched
    fetched = project.run("fetch", "layer.yml", "--cache-dir", str(project.cache))
    assert fetched.rc == 0, fetched.stderr
    listed = project.run("list", "layer.yml", "--cache-dir", str(project.cache), "--executor",
                         "host")  # fmt: skip
    assert listed.rc == 0 and "app" in listed.stdout, listed.stderr
    resolved = project.run("dump", "layer.yml", "--resolve-refs", "--cache-dir", str(project.cache))
    assert resolved.rc == 0, resolved.stderr
