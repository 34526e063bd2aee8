"""`fetch` and `mirror`: every source of a graph in the cache or in a mirror directory,
and builds from that mirror with no network at all (in a new network namespace)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import SRC, HTTPFiles, Project, Result, make_tarball, sha256
from jailbake.cache.store import Store
from test_fetch import git_repo


def sources_project(project: Project, http: HTTPFiles, tmp_path: Path) -> dict[str, Any]:
    one, two = make_tarball({"a.txt": "one\n"}), make_tarball({"b.txt": "two\n"})
    commit = git_repo(tmp_path / "upstream")
    project.recipe(
        "one",
        sources=[{"url": http.add("dl/one-1.0.tar.gz", one), "sha256": sha256(one)}],
        script='mkdir -p "$OUT"; cp a.txt "$OUT/one.txt"',
        builder="host",
        outputs=[{"path": "one.txt", "publish": True}],
    )
    project.recipe(
        "two",
        sources=[
            {"url": http.add("dl/two-1.0.tar.gz", two), "sha256": sha256(two)},
            {"git": f"file://{tmp_path / 'upstream'}", "commit": commit, "dest": "repo"},
        ],
        depends=["one"],
        script='mkdir -p "$OUT"; cat b.txt repo/README > "$OUT/two.txt"',
        builder="host",
        outputs=[{"path": "two.txt", "publish": True}],
    )
    return {"one": sha256(one), "two": sha256(two), "commit": commit}


def in_new_netns(project: Project, *args: str) -> Result:
    """jailbake in a network namespace of its own: nothing but loopback, and that down."""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    cp = subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "jailbake.cli", *args],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return Result(cp.returncode, cp.stdout, cp.stderr)


def test_fetch_puts_every_source_in_the_cache(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    pins = sources_project(project, http, tmp_path)
    result = project.run("fetch", "layer.yml", "--cache-dir", str(project.cache), "-j", "3")
    assert result.rc == 0, result.stderr
    assert sorted(http.served.requests) == ["/dl/one-1.0.tar.gz", "/dl/two-1.0.tar.gz"]
    store = Store(project.cache)
    assert store.has_blob(pins["one"]) and store.has_blob(pins["two"])
    # Everything is there: an offline build with no network needs nothing else.
    http.close()
    built = in_new_netns(
        project, "build", "layer.yml", "--offline", "--executor", "host",
        "--cache-dir", str(project.cache), "--artifacts-dir", str(tmp_path / "art"), "--json",
    )  # fmt: skip
    assert built.rc == 0, built.stderr
    assert (tmp_path / "art" / "two.txt").read_text() == "two\nhello from git\n"


def test_mirror_directory_serves_an_offline_build_without_network(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    pins = sources_project(project, http, tmp_path)
    mirror = tmp_path / "mirror"
    first = project.run(
        "mirror", "layer.yml", str(mirror), "--no-images", "--cache-dir", str(project.cache)
    )
    assert first.rc == 0, first.stderr
    archive = f"upstream-{pins['commit']}.tar"
    for name in (
        "one-1.0.tar.gz",
        f"sha256/{pins['one']}",
        "two-1.0.tar.gz",
        f"sha256/{pins['two']}",
        archive,
    ):
        assert (mirror / name).is_file(), name
    assert sha256((mirror / "sha256" / pins["two"]).read_bytes()) == pins["two"]
    assert (mirror / "sha256" / pins["two"]).stat().st_ino == (
        mirror / "two-1.0.tar.gz"
    ).stat().st_ino
    index = json.loads((mirror / "index.json").read_text())
    by_path = {e["path"]: e for e in index["entries"]}
    assert by_path["one-1.0.tar.gz"]["kind"] == "url" and by_path[archive]["kind"] == "git"
    assert by_path[archive]["used_by"] == "two"
    assert by_path[archive]["sha256"] == sha256((mirror / archive).read_bytes())
    assert "5 files" in first.stderr and "(5 added)" in first.stderr
    # Again: nothing new to add, nothing downloaded again.
    requests = len(http.served.requests)
    again = project.run(
        "mirror", "layer.yml", str(mirror), "--no-images", "--cache-dir", str(project.cache)
    )
    assert again.rc == 0 and "(0 added)" in again.stderr
    assert len(http.served.requests) == requests

    http.close()
    built = in_new_netns(
        project, "build", "layer.yml", "--offline", "--mirror", str(mirror),
        "--executor", "host", "--cache-dir", str(tmp_path / "empty-cache"),
        "--artifacts-dir", str(tmp_path / "art"), "--json",
    )  # fmt: skip
    assert built.rc == 0, built.stderr
    assert sorted(json.loads(built.stdout.splitlines()[-1])["built"]) == ["one", "two"]


def test_a_corrupted_mirror_file_is_named_and_never_used(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    pins = sources_project(project, http, tmp_path)
    mirror = tmp_path / "mirror"
    project.run(
        "mirror", "layer.yml", str(mirror), "--no-images", "--cache-dir", str(project.cache)
    )
    # Both names were one file (a hard link): replace each with other bytes.
    for rel, data in ((f"sha256/{pins['one']}", b"corrupted"), ("one-1.0.tar.gz", b"swapped")):
        (mirror / rel).unlink()
        (mirror / rel).write_bytes(data)
    built = in_new_netns(
        project, "build", "layer.yml", "--offline", "--mirror", str(mirror),
        "--executor", "host", "--cache-dir", str(tmp_path / "empty-cache"),
        "--artifacts-dir", str(tmp_path / "art"),
    )  # fmt: skip
    assert built.rc == 2
    line = built.stderr.strip().splitlines()[-1]
    assert f"{mirror / 'one-1.0.tar.gz'} has sha256 {sha256(b'swapped')}" in line
    assert f"{mirror / 'sha256' / pins['one']} has sha256 {sha256(b'corrupted')}" in line
    assert not (tmp_path / "art" / "one.txt").exists()
    assert not list((tmp_path / "empty-cache" / "trees").glob("*"))


@pytest.mark.usefixtures("docker_engine")
def test_builder_images_come_from_the_mirror(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    from jailbake.executors import engine

    sources_project(project, http, tmp_path)
    # A builder of its own, so that removing its image disturbs nothing else.
    context = project.root / "docker" / "tiny"
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text(
        f"FROM localhost/debian-base:bookworm\nLABEL org.jailbake.test={uuid.uuid4().hex}\n"
    )
    project.recipe(
        "boxed",
        builder="tiny",
        script='mkdir -p "$OUT"; echo boxed > "$OUT/boxed.txt"',
        outputs=[{"path": "boxed.txt", "publish": True}],
    )
    mirror = tmp_path / "mirror"
    made = project.run("mirror", "layer.yml", str(mirror), "--cache-dir", str(project.cache))
    assert made.rc == 0, made.stderr
    tag = engine.image_tag("tiny", engine.image_key(context))
    saved = f"images/{tag.rsplit('/', 1)[-1].replace(':', '-')}.tar"
    assert (mirror / saved).is_file()
    # The base image is made from its lock's .debs, which the mirror holds, never loaded.
    assert not (mirror / "images/debian-base-bookworm.tar").exists()
    client = engine.connect()
    client.images.remove(tag, force=True)

    built = in_new_netns(
        project, "build", "layer.yml", "--offline", "--mirror", str(mirror),
        "--cache-dir", str(tmp_path / "empty-cache"), "--artifacts-dir", str(tmp_path / "art"),
        "--json",
    )  # fmt: skip
    try:
        assert built.rc == 0, built.stderr
        assert f"loading image {tag}" in built.stderr
        assert (tmp_path / "art" / "boxed.txt").read_text() == "boxed\n"
    finally:
        client.images.remove(tag, force=True)

    # Without the image in engine or mirror, an offline build says so instead of
    # trying to build it (apt would need the network).
    shutil.rmtree(mirror / "images")
    missing = in_new_netns(
        project, "build", "layer.yml", "--offline", "--mirror", str(mirror),
        "--cache-dir", str(tmp_path / "cache3"), "--artifacts-dir", str(tmp_path / "art3"),
    )  # fmt: skip
    assert missing.rc != 0
    line = missing.stderr.strip().splitlines()[-1]
    assert f"builder image {tag} is neither in the engine nor in a mirror" in line
    assert "jailbake builders CONFIG" in line
    assert not (tmp_path / "art3" / "boxed.txt").exists()

    # `jailbake builders`, online, makes it; then the same offline build needs nothing else.
    made = project.run("builders", "layer.yml")
    try:
        assert made.rc == 0, made.stderr
        assert made.stdout.splitlines() == [f"tiny: {tag}"]
        client.images.get(tag)
        again = in_new_netns(
            project, "build", "layer.yml", "--offline", "--mirror", str(mirror),
            "--cache-dir", str(tmp_path / "cache3"), "--artifacts-dir", str(tmp_path / "art3"),
        )  # fmt: skip
        assert again.rc == 0, again.stderr
        assert (tmp_path / "art3" / "boxed.txt").read_text() == "boxed\n"
    finally:
        client.images.remove(tag, force=True)
