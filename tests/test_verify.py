"""Cached bytes are checked where they are used: a changed output tree or download is
never published or built upon, and `jailbake verify` checks the whole cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import HTTPFiles, Project, make_tarball, sha256


def two_recipes(project: Project) -> None:
    project.recipe(
        "a",
        script='mkdir -p "$OUT"; echo good > "$OUT/a.txt"',
        outputs=[{"path": "a.txt", "publish": True}],
    )
    project.recipe(
        "b",
        depends=["a"],
        script='mkdir -p "$OUT"; cat "$DEPS/a/a.txt" > "$OUT/b.txt"',
        outputs=[{"path": "b.txt", "publish": True}],
    )


def lib_from_tarball(project: Project, http: HTTPFiles, output: str) -> bytes:
    """A recipe 'lib' unpacking a served tarball, publishing data.txt as output (a file,
    or a directory holding it); returns the tarball."""
    tarball = make_tarball({"data.txt": "data\n"})
    place = '"$OUT/"' if output == "data.txt" else f'"$OUT/{output}/"'
    mkdir = '"$OUT"' if output == "data.txt" else f'"$OUT/{output}"'
    project.recipe(
        "lib",
        sources=[{"url": http.add("lib.tar.gz", tarball), "sha256": sha256(tarball)}],
        script=f"mkdir -p {mkdir}; cp data.txt {place}",
        outputs=[{"path": output, "publish": True}],
    )
    return tarball


def tree_file(project: Project, art: Path, recipe: str, name: str) -> Path:
    manifest = json.loads((art / "manifest.json").read_text())
    digest = next(r["output_digest"] for r in manifest["recipes"] if r["name"] == recipe)
    return project.cache / "trees" / str(digest) / name


def flip_byte(path: Path) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_corrupted_output_tree_is_rebuilt_not_published(project: Project, tmp_path: Path) -> None:
    two_recipes(project)
    project.build(artifacts=tmp_path / "art1")
    cached = tree_file(project, tmp_path / "art1", "a", "a.txt")
    flip_byte(cached)
    os.utime(cached, (1700000000, 1700000000))  # mtime put back: only the ctime tells

    result = project.build(artifacts=tmp_path / "art2")
    assert result.report["built"] == ["a"], result.stderr
    assert result.report["reused"] == ["b"]  # same bytes again: b's key is unchanged
    assert "no longer hashes to its digest" in result.stderr
    assert (tmp_path / "art2" / "a.txt").read_text() == "good\n"
    listed = {a["path"]: a["sha256"] for a in result.report["artifacts"]}
    assert listed["a.txt"] == sha256(b"good\n")


def test_a_corrupted_dependency_is_rebuilt_before_a_step_reads_it(
    project: Project, tmp_path: Path
) -> None:
    """Trees are checked where a build reads them: here a dependency (not published) of
    a recipe that has to be built again."""
    project.recipe("a", script='mkdir -p "$OUT"; echo good > "$OUT/a.txt"', outputs=["a.txt"])
    project.recipe(
        "b",
        depends=["a"],
        script='mkdir -p "$OUT"; cat "$DEPS/a/a.txt" > "$OUT/b.txt"',
        outputs=[{"path": "b.txt", "publish": True}],
    )
    project.build(artifacts=tmp_path / "art1")
    manifest = json.loads((tmp_path / "art1" / "manifest.json").read_text())
    digest = next(r["output_digest"] for r in manifest["recipes"] if r["name"] == "a")
    cached = project.cache / "trees" / str(digest) / "a.txt"
    flip_byte(cached)
    os.utime(cached, (1700000000, 1700000000))
    # Unread, the tree is left as it is: b's result is reused, a's is not needed.
    quiet = project.build(artifacts=tmp_path / "art2")
    assert quiet.report["built"] == [] and "no longer hashes" not in quiet.stderr
    # b changes: its step reads a, which is checked first and built again.
    project.recipe(
        "b",
        depends=["a"],
        script='mkdir -p "$OUT"; cat "$DEPS/a/a.txt" "$DEPS/a/a.txt" > "$OUT/b.txt"',
        outputs=[{"path": "b.txt", "publish": True}],
    )
    result = project.build(artifacts=tmp_path / "art3")
    assert "no longer hashes to its digest" in result.stderr
    assert result.report["built"] == ["a", "b"], result.stderr
    assert (tmp_path / "art3" / "b.txt").read_text() == "good\ngood\n"


def test_a_step_cannot_change_its_dependencies_in_the_cache(
    project: Project, tmp_path: Path
) -> None:
    """Host executor: the dependency's tree is read-only for the step (bubblewrap), and
    even a change made behind jailbake's back is caught before the tree is used again."""
    project.recipe(
        "a",
        script='mkdir -p "$OUT"; echo good > "$OUT/a.txt"',
        outputs=[{"path": "a.txt", "publish": True}],
    )
    project.recipe(
        "evil",
        depends=["a"],
        script='mkdir -p "$OUT"\n'
        'if chmod u+w "$DEPS/a/a.txt" 2>/dev/null && echo bad > "$DEPS/a/a.txt"; then\n'
        '  echo wrote > "$OUT/evil.txt"\n'
        "else\n"
        '  echo refused > "$OUT/evil.txt"\n'
        "fi",
        outputs=[{"path": "evil.txt", "publish": True}],
    )
    result = project.build(artifacts=tmp_path / "art")
    assert (tmp_path / "art" / "evil.txt").read_text() == "refused\n", result.stderr
    assert (tmp_path / "art" / "a.txt").read_text() == "good\n"
    assert "UNCONFINED" not in result.stderr


def test_a_corrupted_download_is_fetched_again(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    tarball = lib_from_tarball(project, http, "data.txt")
    project.run("fetch", "layer.yml", "--cache-dir", str(project.cache), check=True)
    blob = project.cache / "cas" / sha256(tarball)[:2] / sha256(tarball)
    flip_byte(blob)
    result = project.build(artifacts=tmp_path / "art")
    assert "does not hash to its name" in result.stderr
    assert http.served.requests == ["/lib.tar.gz", "/lib.tar.gz"]
    assert (tmp_path / "art" / "data.txt").read_text() == "data\n"


def test_verify_finds_and_repairs_every_kind_of_damage(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    tarball = lib_from_tarball(project, http, "d")
    two_recipes(project)
    project.layer(
        "layer.yml",
        {
            "header": {"version": 14},
            "repos": {"this": {"layers": {"recipes": None}}},
            "env": {"SOURCE_DATE_EPOCH": "1700000000"},
            "target": ["lib", "b"],
        },
    )
    art = tmp_path / "art"
    project.build(artifacts=art)
    clean = project.run("verify", "--cache-dir", str(project.cache))
    assert clean.rc == 0 and ": 0 problems" in clean.stderr, clean.stderr

    flip_byte(project.cache / "cas" / sha256(tarball)[:2] / sha256(tarball))
    flip_byte(tree_file(project, art, "lib", "d/data.txt"))
    extra = tree_file(project, art, "b", "")
    extra.chmod(0o755)
    (extra / "planted.txt").write_text("x")  # a file the tree never had
    broken = project.run("verify", "--cache-dir", str(project.cache))
    assert broken.rc == 1
    problems = broken.stdout.splitlines()
    assert any(p.startswith(f"blob {sha256(tarball)}") for p in problems), problems
    assert sum(p.startswith("tree ") for p in problems) == 2, problems
    assert sum(p.startswith("result ") for p in problems) == 2, problems

    repaired = project.run("verify", "--repair", "--cache-dir", str(project.cache))
    assert repaired.rc == 0 and "5 problems, 5 removed" in repaired.stderr, repaired.stderr
    again = project.run("verify", "--cache-dir", str(project.cache))
    assert again.rc == 0 and ": 0 problems" in again.stderr
    rebuilt = project.build(artifacts=art)
    assert sorted(rebuilt.report["built"]) == ["b", "lib"]
    assert (art / "d" / "data.txt").read_text() == "data\n"


def test_a_cached_result_whose_output_is_a_link_is_built_again(
    project: Project, tmp_path: Path
) -> None:
    """Results stored before outputs that are links were refused (or offered by a remote
    cache) are consistent with their digests, and still never published."""
    from jailbake.cache.store import ActionResult, Store

    project.recipe(
        "a",
        script='mkdir -p "$OUT"; echo good > "$OUT/a.txt"',
        outputs=[{"path": "a.txt", "publish": True}],
    )
    art = tmp_path / "art"
    project.build(artifacts=art)
    store = Store(project.cache)
    record = next((project.cache / "ac").rglob("*.json"))
    old = ActionResult.from_json(record.read_bytes())
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "a.txt").symlink_to("/etc/passwd")
    digest, manifest = store.add_tree(forged, mtime=0)
    record.chmod(0o644)
    store.put_result(ActionResult(**{**old.__dict__, "outputs": manifest, "output_digest": digest}))
    result = project.build(artifacts=tmp_path / "art2")
    assert result.report["built"] == ["a"]
    assert "the cached result's output a.txt is not a file or directory" in result.stderr
    assert not (tmp_path / "art2" / "a.txt").is_symlink()
    assert (tmp_path / "art2" / "a.txt").read_text() == "good\n"


def _system_python() -> str | None:
    """An interpreter an ordinary user may run (the test's own may live in /root)."""
    python = "/usr/bin/python3"
    if not os.access(python, os.X_OK):
        return None
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
    ).stdout.strip()
    return python if version == str(sys.version_info[:2]) else None


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="switches user")
def test_an_ordinary_user_stores_and_evicts_trees(
    project: Project, tmp_path: Path, user_packages: str
) -> None:
    """Read-only trees move into place and out again without root's rights."""
    python = _system_python()
    if python is None:
        pytest.skip("no system python3 of this test's version for an ordinary user")
    two_recipes(project)
    home = Path(tempfile.mkdtemp(prefix="jailbake-user-", dir="/var/tmp"))
    try:
        shutil.copytree(project.root, home / "proj")
        subprocess.run(["chown", "-R", "nobody:nogroup", str(home)], check=True)
        home.chmod(0o755)

        def build(art: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    *("setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"),
                    *(python, "-m", "jailbake.cli", "build", "layer.yml"),
                    *("--executor", "host", "--cache-dir", str(home / "cache")),
                    *("--artifacts-dir", str(home / art), "--json"),
                ],
                cwd=home / "proj",
                env={**os.environ, "PYTHONPATH": user_packages, "HOME": str(home)},
                capture_output=True,
                text=True,
                timeout=300,
            )

        first = build("art1")
        assert first.returncode == 0, first.stderr
        cached = next((home / "cache" / "trees").glob("*/a.txt"))
        subprocess.run(
            [*("setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"),
             "sh", "-c", f'chmod u+w "{cached}" && echo bad > "{cached}"'],
            check=True,
        )  # fmt: skip
        second = build("art2")
        assert second.returncode == 0, second.stderr
        assert "no longer hashes to its digest" in second.stderr
        assert (home / "art2" / "a.txt").read_text() == "good\n"
    finally:
        shutil.rmtree(home)


REMOVALS = {
    "at once": "from jailbake.core.files import remove_tree; remove_tree(tree)",
    # rm cannot empty a read-only directory as an ordinary user: settle finishes.
    "in the background": "store.discard(tree, background=True); store.settle()",
}


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="switches user")
@pytest.mark.parametrize("how", REMOVALS)
def test_an_ordinary_user_removes_a_tree_with_read_only_directories(
    how: str, user_packages: str
) -> None:
    """Stored trees keep their directories read-only, and so may a step's sources:
    removing one (eviction, clean, a kept or finished work directory) needs no root's
    rights, however deep they are."""
    python = _system_python()
    if python is None:
        pytest.skip("no system python3 of this test's version for an ordinary user")
    home = Path(tempfile.mkdtemp(prefix="jailbake-user-", dir="/var/tmp"))
    try:
        tree = home / "cache" / "tmp" / "1-work-0"  # a work directory's place
        (tree / "ro" / "deeper").mkdir(parents=True)
        (tree / "ro" / "deeper" / "f").write_text("x\n")
        (tree / "rw").mkdir()
        (tree / "rw" / "g").write_text("y\n")
        subprocess.run(["chown", "-R", "nobody:nogroup", str(home)], check=True)
        for directory in (tree / "ro" / "deeper", tree / "ro", tree):
            directory.chmod(0o555)
        code = (
            "import sys; from pathlib import Path; from jailbake.cache.store import Store; "
            "tree = Path(sys.argv[1]); store = Store(tree.parent.parent); " + REMOVALS[how]
        )
        run = subprocess.run(
            [*("setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"),
             python, "-c", code, str(tree)],
            env={**os.environ, "PYTHONPATH": user_packages},
            capture_output=True,
            text=True,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert list(tree.parent.iterdir()) == []
    finally:
        shutil.rmtree(home)
