"""Nothing jailbake writes leaves its tree through a link: sources and patches, outputs,
the artifacts directory and publish destinations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import HTTPFiles, Project, make_tarball, sha256
from jailbake.core import paths


def linked_sources(project: Project, outside: Path) -> None:
    """A file source that is a directory holding a link to an outside directory."""
    (project.root / "recipes" / "files" / "d").mkdir(parents=True)
    (project.root / "recipes" / "files" / "d" / "esc").symlink_to(outside)


@pytest.mark.parametrize(
    "second",
    ["archive-dest", "url-file-dest", "file-dest", "dir-over-link", "patch-dest"],
)
def test_sources_never_write_through_a_link_they_bring(
    project: Project, http: HTTPFiles, tmp_path: Path, second: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    linked_sources(project, outside)
    tarball, plain = make_tarball({"a.txt": "a\n"}), b"plain\n"
    project.file("recipes/files/x.txt", "x\n")
    # Another directory named d, whose d/esc/ would be copied into the first one's link.
    project.file("recipes/files/other/d/esc/planted.txt", "planted\n")
    project.file("recipes/files/p.patch", "--- a/new.txt\n+++ b/new.txt\n@@ -0,0 +1 @@\n+x\n")
    later: dict[str, dict[str, Any]] = {
        "archive-dest": {
            "url": http.add("t.tar.gz", tarball),
            "sha256": sha256(tarball),
            "dest": "d/esc/unpacked",
        },
        "url-file-dest": {
            "url": http.add("plain.txt", plain),
            "sha256": sha256(plain),
            "dest": "d/esc",
        },
        "file-dest": {"file": "files/x.txt", "dest": "d/esc"},
        "dir-over-link": {"file": "files/other/d"},
    }
    sources: list[dict[str, Any]] = [{"file": "files/d"}]
    patches = None
    if second == "patch-dest":
        patches = [{"path": "files/p.patch", "dest": "d/esc"}]
    else:
        sources.append(later[second])
    project.recipe("leaky", sources=sources, patches=patches)
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("jailbake: error: ") and "symbolic link" in line, line
    assert "leaky.yml" in line
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "art" / "leaky.txt").exists()


def test_an_output_that_is_a_link_is_refused(project: Project, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret\n")
    project.recipe(
        "sneaky",
        script=f'mkdir -p "$OUT"; ln -s {secret} "$OUT/sneaky.txt"',
        outputs=[{"path": "sneaky.txt", "publish": True}],
    )
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc == 2
    assert "'sneaky.txt' is a symbolic link" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "art" / "sneaky.txt").exists()
    assert not list((project.cache / "trees").iterdir())


def test_publishing_never_follows_a_link_in_the_artifacts_directory(
    project: Project, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    art = tmp_path / "art"
    art.mkdir()
    (art / "sub").symlink_to(elsewhere)
    project.recipe(
        "pub",
        script='mkdir -p "$OUT"; echo pub > "$OUT/pub.txt"',
        outputs=[{"path": "pub.txt", "publish": "sub/pub.txt"}],
    )
    result = project.build(artifacts=art, check=False)
    assert result.rc == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "'sub' is a symbolic link" in line and "outputs: publish" in line
    assert list(elsewhere.iterdir()) == []

    # A link where the artifact itself goes is replaced, not written through.
    (art / "sub").unlink()
    (art / "top.txt").symlink_to(elsewhere / "victim.txt")
    project.recipe(
        "pub",
        script='mkdir -p "$OUT"; echo pub > "$OUT/pub.txt"',
        outputs=[{"path": "pub.txt", "publish": "top.txt"}],
    )
    project.build(artifacts=art)
    assert not (art / "top.txt").is_symlink() and (art / "top.txt").read_text() == "pub\n"
    assert list(elsewhere.iterdir()) == []


def test_publish_to_a_directory_never_follows_its_links(project: Project, tmp_path: Path) -> None:
    project.recipe(
        "pub",
        script='mkdir -p "$OUT/sub"; echo pub > "$OUT/sub/pub.txt"',
        outputs=[{"path": "sub", "publish": True}],
    )
    art = tmp_path / "art"
    project.build(artifacts=art)
    dest, elsewhere = tmp_path / "release", tmp_path / "elsewhere"
    dest.mkdir()
    elsewhere.mkdir()
    (dest / "sub").symlink_to(elsewhere)
    result = project.run("publish", "--artifacts-dir", str(art), "--to", str(dest))
    assert result.rc == 2
    assert "'sub' is a symbolic link" in result.stderr.strip().splitlines()[-1]
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    ("rel", "problem"),
    [("../x", "leaves the tree"), ("/etc/x", "leaves the tree"), ("a/link/x", "symbolic link")],
)
def test_target_refuses_every_way_out(tmp_path: Path, rel: str, problem: str) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "link").symlink_to("/etc")
    with pytest.raises(paths.UnsafePath, match=problem):
        paths.target(tmp_path, rel, origin="test")


def test_a_step_that_replaces_out_with_a_link_moves_nothing_of_the_host(
    project: Project, tmp_path: Path, visible_dir: Path
) -> None:
    (visible_dir / "id_rsa").write_text("host key\n")
    project.recipe(
        "thief",
        script=f'rm -rf "$WORKDIR/out"; ln -s {visible_dir} "$WORKDIR/out"',
        outputs=[{"path": "id_rsa", "publish": True}],
    )
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc == 2
    assert "the step replaced $OUT" in result.stderr.strip().splitlines()[-1]
    assert (visible_dir / "id_rsa").read_text() == "host key\n"
    assert not (tmp_path / "art" / "id_rsa").exists()
