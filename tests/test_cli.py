"""What a user sees when something is wrong: one line and an exit status, never a
traceback (unless -v asks for it)."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import HTTPFiles, Project, make_tarball, sha256


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("[jailbake]")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_a_variable_over_the_kernels_limit_names_its_field(project: Project) -> None:
    project.layer(
        "layer.yml",
        {
            "header": {"version": 14},
            "repos": {"this": {"layers": {"recipes": None}}},
            "env": {"SOURCE_DATE_EPOCH": "1700000000", "HUGE": "x" * 200_000},
        },
    )
    project.recipe("a", variables=["HUGE"])
    result = project.build(check=False)
    assert result.rc == 2
    line = one_line(result.stderr)
    assert f"{project.root.resolve() / 'layer.yml'}: env.HUGE: 200006 bytes" in line


def test_a_recipe_environment_over_arg_max_names_its_field(project: Project) -> None:
    env = {f"V{i}": "y" * 100_000 for i in range(40)}
    path = project.recipe("a", environment=env)
    result = project.build(check=False)
    assert result.rc == 2
    line = one_line(result.stderr)
    assert f"{path}:" in line and ": environment: the step's variables hold" in line


def test_a_corrupt_archive_under_a_correct_checksum_is_one_line(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    tarball = make_tarball({"a.txt": "a\n" * 5000})
    broken = tarball[: len(tarball) // 2]  # a gzip stream cut short
    project.recipe(
        "a",
        sources=[{"url": http.add("a.tar.gz", broken), "sha256": sha256(broken)}],
    )
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc == 2
    line = one_line(result.stderr)
    assert "a.tar.gz: cannot unpack:" in line
    assert not (tmp_path / "art").exists()
    garbage = gzip.compress(b"not a tar" * 100)[:40] + b"\xff" * 200
    project.recipe("a", sources=[{"url": http.add("g.tar.gz", garbage), "sha256": sha256(garbage)}])
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc == 2 and "cannot unpack" in one_line(result.stderr)


def test_an_environment_failure_is_one_line_and_exit_1(project: Project, tmp_path: Path) -> None:
    project.recipe("a", outputs=[{"path": "a.txt", "publish": True}])
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = project.build(artifacts=blocker / "art", check=False)
    assert result.rc == 1
    assert one_line(result.stderr).startswith("jailbake: error: Not a directory: ")
    verbose = project.run(
        "-v", "build", "layer.yml", "--executor", "host", "--cache-dir", str(project.cache),
        "--artifacts-dir", str(blocker / "art"),
    )  # fmt: skip
    assert verbose.rc == 1 and "Traceback" in verbose.stderr


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("mount"), reason="mounts a tmpfs")
def test_a_full_disk_is_one_line_and_stores_nothing(project: Project, tmp_path: Path) -> None:
    cache = tmp_path / "small"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(cache)], check=True)
    try:
        # The step fills the disk and ends well; jailbake's own writes then find no room.
        project.recipe(
            "a",
            script='mkdir -p "$OUT"; echo a > "$OUT/a.txt"; '
            'dd if=/dev/zero of="$OUT/fill" bs=64k 2>/dev/null || true',
            outputs=["a.txt", "fill"],
        )
        result = project.run(
            "build", "layer.yml", "--executor", "host", "--cache-dir", str(cache / "c"),
            "--artifacts-dir", str(tmp_path / "art"),
        )  # fmt: skip
        assert result.rc == 1, result.stderr
        assert "No space left on device" in one_line(result.stderr)
        assert not list((cache / "c" / "ac").rglob("*.json"))
        assert not (tmp_path / "art" / "manifest.json").exists()
    finally:
        subprocess.run(["umount", str(cache)], check=True)


@pytest.mark.parametrize(
    "manifest",
    ["[1, 2]", '{"artifacts": [{"path": "a.txt"}]}', '{"artifacts": "x"}', "not json"],
)
def test_a_damaged_manifest_is_one_line_for_publish(
    project: Project, tmp_path: Path, manifest: str
) -> None:
    art = tmp_path / "art"
    art.mkdir()
    (art / "manifest.json").write_text(manifest)
    result = project.run("publish", "--artifacts-dir", str(art), "--to", str(tmp_path / "rel"))
    assert result.rc == 2
    assert "manifest.json" in one_line(result.stderr)
    assert not (tmp_path / "rel").exists()


def test_a_damaged_mirror_index_is_one_line(project: Project, tmp_path: Path) -> None:
    project.recipe("a")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "index.json").write_text('{"entries": [{"path": "x", "bogus": 1}]}')
    result = project.run(
        "mirror", "layer.yml", str(mirror), "--no-images", "--cache-dir", str(project.cache)
    )
    assert result.rc == 2
    assert "index.json: not a jailbake mirror index" in one_line(result.stderr)
