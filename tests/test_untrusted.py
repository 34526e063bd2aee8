"""What a layer, a recipe or a hand-edited record says is validated by kind before it
reaches git's argument list or a file jailbake writes: it is never read as an option,
and it never starts a second line."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SDE, SRC, Project

COMMIT = "a" * 40


def hostile_urls(marker: Path) -> list[str]:
    """Strings that git would act on if they reached it as they are."""
    return [
        f"--upload-pack=touch {marker}",
        f"-u touch {marker}",
        f"--config=core.sshCommand=touch {marker}",
        f"ext::sh -c touch% {marker}",
        "fd::0",
        f"ssh://-oProxyCommand=touch {marker}/x",
        f"ssh://user@-oProxyCommand=touch%20{marker}/x",
        "git@example.org:scp/like.git",  # git reads it as ssh; only URLs are taken
        "file:relative/path",
        "relative/path",
        "https://example.org/x.git\n--upload-pack=touch",
        "https://example.org/x y.git",
        "ftp://example.org/x.git",
        "http://[::1/x.git",
        f"ssh://[-oProxyCommand=touch {marker}]/y",
    ]


def one_error_line(stderr: str) -> str:
    """The one line of the error (progress lines aside), with no traceback."""
    lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith("[jailbake]")]
    assert len(lines) == 1 and lines[0].startswith("jailbake: error: "), stderr
    return lines[0]


def test_a_recipe_git_source_is_never_an_option(project: Project, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    for url in hostile_urls(marker):
        project.recipe("r", sources=[{"git": url, "commit": COMMIT}])
        for command in (("list", "layer.yml"), ("fetch", "layer.yml")):
            result = project.run(*command, "--cache-dir", str(project.cache))
            assert result.rc != 0, (url, command)
            line = one_error_line(result.stderr)
            assert "r.yml" in line and "sources[0].git" in line, line
        result = project.build(check=False)
        assert result.rc != 0, url
        assert "sources[0].git" in one_error_line(result.stderr)
        assert not marker.exists(), url
    assert not (project.cache / "git").exists() or not list((project.cache / "git").iterdir())


def test_a_layer_repository_url_is_never_an_option(project: Project, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    for url in hostile_urls(marker):
        for pin in ({"commit": COMMIT}, {"branch": "main"}):
            project.layer(
                "layer.yml",
                {
                    "header": {"version": 14},
                    "repos": {"bsp": {"url": url, **pin, "layers": {"recipes": None}}},
                    "env": {"SOURCE_DATE_EPOCH": str(SDE)},
                },
            )
            result = project.build(check=False)
            assert result.rc != 0, url
            line = one_error_line(result.stderr)
            assert "layer.yml" in line and "repos.bsp.url" in line, line
            assert not marker.exists(), url


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "ok\n"}, "name"),
        ({"environment": {"KEY\n": "v"}}, "environment"),
        ({"variables": ["VAR\n"]}, "variables[0]"),
        ({"version": "1\nfake  line"}, "version"),
        ({"outputs": ["a\nb.txt"]}, "outputs[0].path"),
        ({"outputs": [{"path": "a.txt", "publish": "x\n1234  evil"}]}, "outputs[0].publish"),
        ({"outputs": ["a\x1b[2Jb.txt"]}, "outputs[0].path"),
        ({"depends": ["x\n"]}, "depends[0]"),
        ({"sources": [{"git": "https://example.org/x", "commit": COMMIT + "\n"}]}, "commit"),
        ({"sources": [{"url": "https://example.org/x", "sha256": "0" * 64 + "\n"}]}, "sha256"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_names_and_paths_are_one_line(
    project: Project, fields: dict[str, object], field: str
) -> None:
    """A trailing newline is not accepted by a pattern's `$`, nor is any control
    character by a name or path field."""
    project.recipe("r", fields)
    result = project.run("list", "layer.yml", "--cache-dir", str(project.cache))
    assert result.rc != 0
    line = one_error_line(result.stderr)
    assert "r.yml" in line and field in line, line


def test_a_manifest_path_cannot_add_a_line_to_sha256sums(project: Project, tmp_path: Path) -> None:
    art = tmp_path / "art"
    project.recipe("a", outputs=[{"path": "a.txt", "publish": True}])
    project.build(artifacts=art)
    manifest = json.loads((art / "manifest.json").read_text())
    (entry,) = manifest["artifacts"]
    (art / "a.txt\n0000  evil").write_text((art / "a.txt").read_text())
    entry["path"] = "a.txt\n0000  evil"
    (art / "manifest.json").write_text(json.dumps(manifest))
    result = project.run("publish", "--artifacts-dir", str(art), "--to", str(tmp_path / "rel"))
    assert result.rc != 0
    assert "manifest.json" in one_error_line(result.stderr)
    assert not (tmp_path / "rel").exists()
    assert not (art / "SHA256SUMS").exists()


@pytest.mark.skipif(not shutil.which("bwrap"), reason="needs bubblewrap")
def test_a_recipe_environment_never_picks_a_host_program(project: Project, tmp_path: Path) -> None:
    """A step's PATH, with a program of its sources named like the sandbox's, chooses
    what runs inside the sandbox, not what jailbake runs on the host to make it."""
    marker = tmp_path / "ran-on-the-host"
    for name in ("bwrap", "bash"):
        project.file(f"recipes/files/{name}", f"#!/bin/sh\ntouch {marker}\n").chmod(0o755)
    project.recipe(
        "r",
        sources=[{"file": "files/bwrap"}, {"file": "files/bash"}],
        environment={"PATH": ":.:/usr/bin:/bin", "BASH_ENV": "/nonexistent"},
        script='mkdir -p "$OUT"; echo "$PATH" > "$OUT/r.txt"',
        outputs=[{"path": "r.txt", "publish": True}],
    )
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc == 0, result.stderr
    assert "unconfined" not in result.stderr  # the build ran in the real sandbox
    assert not marker.exists()
    assert (tmp_path / "art" / "r.txt").read_text() == ":.:/usr/bin:/bin\n"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("JAILBAKE_QEMU_MACHINE", "virt,dumpdtb={marker}", "a machine name"),
        ("JAILBAKE_QEMU_MACHINE", "virt,,dumpdtb={marker}", "a machine name"),
        ("JAILBAKE_QEMU_CPU", "max,x={marker}", "a CPU model"),
        ("JAILBAKE_QEMU_MEMORY", "1G,maxmem=2G", "a size"),
        ("JAILBAKE_QEMU_SMP", "2,sockets=2", "a number of CPUs"),
        ("JAILBAKE_QEMU_APPEND", "console=ttyAMA0\ninit=/bin/sh", "one line"),
        ("JAILBAKE_QEMU_KERNEL", "../../../etc/hostname", "leaves the tree"),
        ("JAILBAKE_QEMU_KERNEL", "/etc/hostname", "leaves the tree"),
        ("JAILBAKE_QEMU_DRIVE", "link.img", "symbolic link"),
    ],
)
def test_a_layer_machine_reads_and_writes_no_host_file(
    project: Project, tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    """`jailbake run` takes the machine from the layer: what QEMU would read as another
    option, or a file outside the artifacts, is refused before QEMU starts."""
    marker = tmp_path / "written"
    art = tmp_path / "art"
    art.mkdir()
    (art / "Image").write_bytes(b"kernel")
    (art / "link.img").symlink_to("/etc/hostname")
    qemu = {"JAILBAKE_QEMU_KERNEL": "Image", variable: value.format(marker=marker)}
    project.layer(
        "layer.yml",
        {"header": {"version": 14}, "repos": {"this": {"layers": {"recipes": None}}}, "env": qemu},
    )
    result = project.run("run", "layer.yml", "--artifacts-dir", str(art), "--expect", "x",
                         "--timeout", "5")  # fmt: skip
    assert result.rc != 0
    line = one_error_line(result.stderr)
    assert variable in line and expected in line, line
    assert not marker.exists()


def test_a_kept_work_directory_writes_through_no_link(project: Project, tmp_path: Path) -> None:
    """A failed step leaves a link where jailbake notes where it ran: the note replaces
    the link, and the file it pointed at is untouched."""
    victim = tmp_path / "victim"
    victim.write_text("mine\n")
    project.recipe("bad", script=f'ln -s {victim} "$WORKDIR/.jailbake-ran-at"; exit 3')
    result = project.build("--keep-failed", artifacts=tmp_path / "art", check=False)
    assert result.rc != 0
    assert victim.read_text() == "mine\n"
    (kept,) = (project.cache / "failed").rglob(".jailbake-ran-at")
    assert not kept.is_symlink() and kept.read_text().startswith("/")


@pytest.mark.parametrize("ends", ["built", "failed"])
def test_a_step_that_prints_a_lot_is_not_held_in_memory(
    project: Project, tmp_path: Path, ends: str
) -> None:
    """A step's output goes to its log on disk; jailbake stores it and shows its last
    lines without reading all of it (here 400 MB, against a 150 MB ceiling)."""
    exit_with = "0" if ends == "built" else "1"
    project.recipe(
        "loud",
        script=f'yes "a line of output" | head -c 400M; mkdir -p "$OUT"; echo x > "$OUT/loud.txt"; '
        f"exit {exit_with}",
    )
    probe = (
        "import resource, subprocess, sys\n"
        "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
        "stderr=subprocess.DEVNULL).returncode\n"
        "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    argv = [sys.executable, "-c", probe, sys.executable, "-m", "jailbake.cli", "build",
            "layer.yml", "--executor", "host", "--cache-dir", str(project.cache)]  # fmt: skip
    out = subprocess.run(
        argv, cwd=project.root, env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    rc, max_rss_kib = (int(v) for v in out.stdout.split())
    assert (rc == 0) == (ends == "built"), out.stderr
    assert max_rss_kib < 150 * 1024, f"{max_rss_kib} KiB"
    (log,) = (project.cache / "logs").glob("loud-*.log")
    assert log.stat().st_size >= 400 << 20


def _special(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    else:
        try:
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # as /dev/null
        except PermissionError:
            pytest.skip("making a device needs root with CAP_MKNOD")


@pytest.mark.parametrize("kind", ["fifo", "device"])
@pytest.mark.parametrize("where", ["the source", "inside a directory source"])
def test_a_special_file_source_is_refused_without_waiting(
    project: Project, tmp_path: Path, kind: str, where: str
) -> None:
    files = project.root / "recipes" / "files"
    (files / "dir").mkdir(parents=True)
    (files / "dir" / "ok.txt").write_text("ok\n")
    special = files / "special" if where == "the source" else files / "dir" / "special"
    _special(special, kind)
    named = "files/special" if where == "the source" else "files/dir"
    project.recipe("r", sources=[{"file": named}])
    for command in ("list", "build"):
        argv = [command, "layer.yml", "--cache-dir", str(project.cache)]
        if command == "build":
            argv += ["--executor", "host", "--artifacts-dir", str(tmp_path / "art")]
        result = project.run(*argv)  # a wait on the fifo would end in the test's timeout
        assert result.rc != 0
        line = one_error_line(result.stderr)
        assert "r.yml" in line and "sources" in line and "special" in line, line
    assert not (tmp_path / "art").exists()


def test_file_names_that_are_not_utf8_are_keyed_stored_and_reused(
    project: Project, tmp_path: Path
) -> None:
    """Source and output names are bytes on Linux: a name that is not UTF-8 is kept
    as it is, keyed by its bytes, and its tree is reused like any other."""
    files = project.root / "recipes" / "files" / "dir"
    files.mkdir(parents=True)
    (Path(os.fsdecode(bytes(files) + b"/caf\xe9.txt"))).write_text("latin-1 name\n")
    project.recipe(
        "r",
        sources=[{"file": "files/dir", "dest": "in"}],
        script='mkdir -p "$OUT/d"; cp in/dir/* "$OUT/d/"; printf x > "$OUT/d/$(printf "\\377")"',
        outputs=["d"],
    )
    first = project.build(artifacts=tmp_path / "art")
    assert first.report["built"] == ["r"]
    again = project.build(artifacts=tmp_path / "art")
    assert again.report["reused"] == ["r"]
    (tree,) = (project.cache / "trees").glob("*/d")
    assert sorted(os.listdir(os.fsencode(tree))) == [b"caf\xe9.txt", b"\xff"]
    (files / "other.txt").write_text("changed\n")
    assert project.build(artifacts=tmp_path / "art").report["built"] == ["r"]


@pytest.mark.parametrize(
    "repo_tags",
    [["localhost/debian-base:bookworm"], ["localhost/jailbake-x:0123", "other:1"], None],
)
def test_a_mirror_image_archive_names_only_its_own_image(
    tmp_path: Path, repo_tags: list[str] | None
) -> None:
    """An image archive in a mirror directory is loaded only if it tags the one image
    asked for: it could otherwise replace the base image or another builder."""
    import io
    import tarfile

    from jailbake.core.errors import FetchError
    from jailbake.sources.builders import image_file, load_image

    tag = "localhost/jailbake-x:0123"
    archive = tmp_path / image_file(tag)
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w") as tar:
        if repo_tags is not None:
            data = json.dumps([{"Config": "c.json", "RepoTags": repo_tags, "Layers": []}]).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(FetchError, match="expected an image archive of"):
        load_image(None, [str(tmp_path)], tag)  # refused before the engine is asked


def test_no_archive_member_is_named_like_the_newc_trailer() -> None:
    """A member named TRAILER!!! would end the archive for the kernel and cpio, and
    every member sorted after it would be lost."""
    import io

    from jailbake.image.cpio import Entry, write_newc

    entries = [
        Entry("TRAILER!!!", stat.S_IFREG | 0o644, data=b"x"),
        Entry("bin", stat.S_IFDIR | 0o755),
    ]
    with pytest.raises(ValueError, match="would end the archive"):
        write_newc(entries, io.BytesIO())


def test_a_workspace_record_names_commits_only(tmp_path: Path) -> None:
    """The commits a workspace record keeps reach git's argument list."""
    from jailbake.workspace.workspaces import Workspace

    record = {"recipe": "r", "recipe_file": "/x/r.yml", "dir": "/x/ws", "patches": []}
    for base in ("--output=/tmp/x", "a" * 40 + "\n", "HEAD"):
        with pytest.raises(ValueError, match="40-hex commit"):
            Workspace.from_dict({**record, "base": base})
    assert Workspace.from_dict({**record, "base": "a" * 40}).base == "a" * 40


@pytest.mark.skipif(not shutil.which("bwrap"), reason="needs bubblewrap")
def test_a_steps_variables_are_in_no_command_line(project: Project, tmp_path: Path) -> None:
    """A secret in a step's variables reaches the step, and no process's command line
    (which every user of the machine may read)."""
    secret = "s3cr3t-" + os.urandom(6).hex()
    project.recipe(
        "r",
        environment={"TOKEN": secret},
        script='touch "$WORKDIR/started"; sleep 3; mkdir -p "$OUT"; echo "$TOKEN" > "$OUT/r.txt"',
        outputs=[{"path": "r.txt", "publish": True}],
    )
    proc = project.start("--executor", "host", "--artifacts-dir", str(tmp_path / "art"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list((project.cache / "tmp").glob("*-r-*/started")):
            assert time.monotonic() < deadline and proc.poll() is None, "the step never started"
            time.sleep(0.05)
        seen = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                if secret.encode() in cmdline.read_bytes():
                    seen.append(cmdline)
        assert seen == []
    finally:
        assert proc.wait(timeout=120) == 0
    assert (tmp_path / "art" / "r.txt").read_text() == secret + "\n"
