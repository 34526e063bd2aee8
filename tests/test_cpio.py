"""The newc writer and declarative rootfs recipes, checked with GNU cpio."""

from __future__ import annotations

import gzip
import random
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import Project
from jailbake.core.errors import RecipeError
from jailbake.image.cpio import Entry, write_cpio_gz, write_newc
from jailbake.image.devtable import parse_device_table
from jailbake.model.recipe import load_recipe

SDE = 1700000000


def sample_entries(tmp_path: Path) -> list[Entry]:
    content = tmp_path / "busybox"
    content.write_bytes(b"\x7fELF" + bytes(range(256)) * 10)
    return [
        Entry("bin", stat.S_IFDIR | 0o755, mtime=SDE),
        Entry("bin/busybox", stat.S_IFREG | 0o755, mtime=SDE, source=content),
        Entry("bin/sh", stat.S_IFLNK | 0o777, mtime=SDE, link="busybox"),
        Entry("init", stat.S_IFREG | 0o755, mtime=SDE, data=b"#!/bin/sh\necho hi\n"),
        Entry("dev", stat.S_IFDIR | 0o755, mtime=SDE),
        Entry("dev/console", stat.S_IFCHR | 0o600, mtime=SDE, rdev=(5, 1)),
        Entry("dev/null", stat.S_IFCHR | 0o666, mtime=SDE, rdev=(1, 3)),
        Entry("etc", stat.S_IFDIR | 0o755, mtime=SDE),
        Entry("etc/a", stat.S_IFREG | 0o644, mtime=SDE, data=b"same", hardlink_group="g"),
        Entry("etc/b", stat.S_IFREG | 0o644, mtime=SDE, data=b"same", hardlink_group="g"),
        Entry("etc/group", stat.S_IFREG | 0o600, uid=0, gid=42, mtime=SDE, data=b"root:x:0:\n"),
    ]


def cpio_list(archive: Path) -> list[str]:
    out = subprocess.run(
        ["cpio", "-itvn", "--quiet", "-F", str(archive)],
        check=True,
        capture_output=True,
        text=True,
        env={"TZ": "UTC", "LC_ALL": "C"},
    )
    return out.stdout.splitlines()


def member_name(line: str) -> str:
    return line.split(" -> ")[0].split()[-1]


def test_gnu_cpio_unpacks_it(tmp_path: Path) -> None:
    archive = tmp_path / "root.cpio"
    with archive.open("wb") as f:
        assert write_newc(sample_entries(tmp_path), f) == 11
    listing = cpio_list(archive)
    assert [member_name(line) for line in listing] == [
        "bin",
        "bin/busybox",
        "bin/sh",
        "dev",
        "dev/console",
        "dev/null",
        "etc",
        "etc/a",
        "etc/b",
        "etc/group",
        "init",
    ]
    console = next(line for line in listing if line.endswith("dev/console"))
    assert console.startswith("crw-------") and "5,   1" in console
    assert next(line for line in listing if "bin/sh" in line).endswith("bin/sh -> busybox")
    assert " 42 " in next(line for line in listing if line.endswith("etc/group"))

    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(
        ["cpio", "-idm", "--quiet", "--no-absolute-filenames", "-F", str(archive)],
        cwd=dest,
        check=True,
        capture_output=True,
    )
    assert (dest / "bin/busybox").read_bytes() == (tmp_path / "busybox").read_bytes()
    assert (dest / "init").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (dest / "init").stat().st_mode & 0o777 == 0o755
    assert (dest / "init").stat().st_mtime == SDE
    assert (dest / "etc/a").stat().st_ino == (dest / "etc/b").stat().st_ino
    assert (dest / "etc/a").read_bytes() == b"same"


def test_same_entries_same_bytes_and_a_bare_gzip_header(tmp_path: Path) -> None:
    a, b = tmp_path / "a.cpio.gz", tmp_path / "b.cpio.gz"
    write_cpio_gz(sample_entries(tmp_path), a)
    write_cpio_gz(list(reversed(sample_entries(tmp_path))), b)
    assert a.read_bytes() == b.read_bytes()
    head = a.read_bytes()[:10]
    assert head[3] & 0x08 == 0  # FNAME flag: no file name stored
    assert head[4:8] == b"\0\0\0\0"  # mtime 0
    raw = gzip.decompress(a.read_bytes())
    assert raw.startswith(b"070701") and b"TRAILER!!!" in raw
    assert len(raw) % 4 == 0


def test_parallel_deflate_gives_the_same_bytes_on_any_number_of_threads(
    tmp_path: Path,
) -> None:
    """The archive is deflated in 128 KiB blocks on several threads; its bytes must not
    depend on how many, and gzip, GNU cpio and Python's gzip must all read it."""
    rng = random.Random(7)
    tree = tmp_path / "tree"
    tree.mkdir()
    entries = [Entry("data", stat.S_IFDIR | 0o755, mtime=SDE)]
    for i in range(12):  # 3.5 MiB: some compressible, some not, odd sizes across blocks
        data = rng.randbytes(200_003 * i) if i % 3 else b"text %d\n" % i * (40_001 * i)
        (tree / f"f{i}").write_bytes(data)
        entries.append(Entry(f"data/f{i}", stat.S_IFREG | 0o644, mtime=SDE, source=tree / f"f{i}"))
    outs = {}
    for threads in (1, 2, 8):
        outs[threads] = tmp_path / f"t{threads}.cpio.gz"
        write_cpio_gz(entries, outs[threads], threads=threads)
    assert outs[1].read_bytes() == outs[2].read_bytes() == outs[8].read_bytes()
    subprocess.run(["gzip", "-t", str(outs[8])], check=True)
    with outs[8].open("rb") as f:
        plain = gzip.decompress(f.read())
    with (tmp_path / "plain.cpio").open("wb") as f:
        write_newc(entries, f)
    assert plain == (tmp_path / "plain.cpio").read_bytes()
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(f"gzip -dc {outs[2]} | cpio -idm --quiet", shell=True, cwd=dest, check=True)
    for i in range(12):
        assert (dest / f"data/f{i}").read_bytes() == (tree / f"f{i}").read_bytes()


def test_duplicate_members_are_refused(tmp_path: Path) -> None:
    e = Entry("x", stat.S_IFREG | 0o644, data=b"")
    with pytest.raises(ValueError, match="duplicate"):
        write_newc([e, e], (tmp_path / "x").open("wb"))


BAD_TABLES = [
    ("/dev/x c 600 0 0 5000 1 - - -", "major: 5000 is out of range"),
    ("/dev/x c 600 0 0 5 99999999 - - -", "minor: 99999999 is out of range"),
    ("/dev/x c 600 0 0 - 1 - - -", "needs a major and a minor"),
    ("/dev/x q 600 0 0 1 1 - - -", "type: expected one of"),
    ("/dev/../../x c 600 0 0 1 1 - - -", "escapes the image tree"),
    ("dev/x c 600 0 0 1 1 - - -", "expected an absolute path"),
    ("/dev/x c 999 0 0 1 1 - - -", "mode: expected octal"),
    ("/dev/x c 600 0 0 1 1", "expected 10 columns"),
]


@pytest.mark.parametrize(("line", "message"), BAD_TABLES)
def test_bad_device_table_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    table = tmp_path / "devices.txt"
    table.write_text(f"# comment\n/dev d 755 0 0 - - - - -\n{line}\n")
    with pytest.raises(RecipeError) as exc:
        parse_device_table(table)
    assert str(exc.value).startswith(f"{table}:3: rootfs.device_table: ")
    assert message in str(exc.value)


def test_device_series(tmp_path: Path) -> None:
    table = tmp_path / "devices.txt"
    table.write_text("/dev/tty c 666 0 0 4 0 0 1 3\n")
    assert [(d.path, d.minor) for d in parse_device_table(table)] == [
        ("dev/tty0", 0),
        ("dev/tty1", 1),
        ("dev/tty2", 2),
    ]


def rootfs_project(project: Project) -> None:
    project.recipe(
        "payload",
        script='mkdir -p "$OUT/root/bin" "$OUT/root/etc"; '
        'printf "#!/bin/sh\\n" > "$OUT/root/bin/tool"; chmod 755 "$OUT/root/bin/tool"; '
        'echo conf > "$OUT/root/etc/conf"; ln "$OUT/root/etc/conf" "$OUT/root/etc/conf2"',
        outputs=["root"],
    )
    project.file("recipes/files/init", "#!/bin/sh\necho banner\n")
    project.file(
        "recipes/files/devices.txt",
        "/dev d 755 0 0 - - - - -\n/dev/console c 600 0 0 5 1 - - -\n"
        "/dev/null c 666 0 0 1 3 - - -\n/etc/conf f 600 0 5 - - - - -\n",
    )
    project.recipe(
        "initramfs",
        {
            "rootfs": {
                "contents": [{"recipe": "payload", "path": "root"}],
                "directories": ["/proc", "/sys"],
                "files": [{"path": "/init", "source": "files/init", "mode": "0755"}],
                "symlinks": [{"path": "/bin/sh", "target": "tool"}],
                "device_table": "files/devices.txt",
            },
            "outputs": [{"path": "initramfs.cpio.gz", "publish": True}],
        },
        script=None,
    )


def test_rootfs_recipe(project: Project, tmp_path: Path) -> None:
    rootfs_project(project)
    result = project.build(artifacts=tmp_path / "art")
    assert sorted(result.report["built"]) == ["initramfs", "payload"]
    archive = tmp_path / "art" / "initramfs.cpio.gz"
    raw = tmp_path / "raw.cpio"
    raw.write_bytes(gzip.decompress(archive.read_bytes()))
    listing = cpio_list(raw)
    names = [member_name(line) for line in listing]
    assert names == [
        "bin",
        "bin/sh",
        "bin/tool",
        "dev",
        "dev/console",
        "dev/null",
        "etc",
        "etc/conf",
        "etc/conf2",
        "init",
        "proc",
        "sys",
    ]
    conf = next(line for line in listing if line.endswith("etc/conf"))
    assert conf.split()[:4] == ["-rw-------", "2", "0", "5"]
    assert all(" Nov 14  2023 " in line for line in listing)  # SOURCE_DATE_EPOCH


def test_rootfs_key_follows_its_files(project: Project, tmp_path: Path) -> None:
    rootfs_project(project)
    project.build(artifacts=tmp_path / "art")
    project.file("recipes/files/init", "#!/bin/sh\necho other banner\n")
    result = project.build(artifacts=tmp_path / "art")
    assert result.report["built"] == ["initramfs"]


@pytest.mark.parametrize(
    ("rootfs", "field", "message"),
    [
        (
            {"files": [{"path": "/../x", "source": "files/init"}]},
            "rootfs.files[0].path",
            "escapes the image tree",
        ),
        (
            {"files": [{"path": "/init", "source": "files/missing"}]},
            "rootfs.files[0].source",
            "does not exist",
        ),
        (
            {"symlinks": [{"path": "bin/sh", "target": "x"}]},
            "rootfs.symlinks[0].path",
            "absolute path",
        ),
        ({"bogus": 1}, "rootfs.bogus", "unknown key"),
    ],
)
def test_bad_rootfs_entries_fail_at_load(
    tmp_path: Path, rootfs: dict[str, object], field: str, message: str
) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "init").write_text("x")
    import yaml

    (tmp_path / "r.yml").write_text(
        yaml.safe_dump({"name": "r", "version": "1", "rootfs": rootfs, "outputs": ["r.cpio.gz"]})
    )
    with pytest.raises(RecipeError) as exc:
        load_recipe(tmp_path / "r.yml", tmp_path)
    assert f": {field}: " in str(exc.value) and message in str(exc.value)


def test_fields_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    big = Entry("x", stat.S_IFREG | 0o644, uid=1 << 32, data=b"")
    with pytest.raises(ValueError, match="uid 4294967296 does not fit"):
        write_newc([big], (tmp_path / "x").open("wb"))


def test_contents_reached_through_a_link_are_refused(project: Project, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("host secret")
    # An output that is a link is refused when it is stored; one inside an output
    # directory is kept as a link, and must not pull the host's files into an image.
    project.recipe("evil", script=f'mkdir -p "$OUT/d"; ln -s {secret} "$OUT/d/root"', outputs=["d"])
    project.recipe(
        "img",
        {
            "rootfs": {"contents": [{"recipe": "evil", "path": "d/root"}]},
            "outputs": ["img.cpio.gz"],
        },
        script=None,
    )
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc == 2
    assert "rootfs.contents[0].path: 'd/root' of evil leads out of its output" in result.stderr


def test_a_directory_with_entries_is_not_replaced(project: Project, tmp_path: Path) -> None:
    project.recipe(
        "tree", script='mkdir -p "$OUT/t/bin"; echo x > "$OUT/t/bin/tool"', outputs=["t"]
    )
    project.recipe(
        "img",
        {
            "rootfs": {
                "contents": [{"recipe": "tree", "path": "t"}],
                "symlinks": [{"path": "/bin", "target": "usr/bin"}],
            },
            "outputs": ["img.cpio.gz"],
        },
        script=None,
    )
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc == 2
    assert "'bin' would replace a directory that has entries" in result.stderr


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        (
            {"rootfs": {"files": [{"path": "/init", "source": "files/init", "mode": 644}]}},
            "rootfs.files[0].mode",
            "quoted octal mode",
        ),
        ({"rootfs": {}, "builder": "debian-build"}, "builder", "written by jailbake itself"),
    ],
)
def test_rootfs_fields_that_would_mislead(
    tmp_path: Path, extra: dict[str, object], field: str, message: str
) -> None:
    import yaml

    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "init").write_text("x")
    (tmp_path / "r.yml").write_text(
        yaml.safe_dump({"name": "r", "version": "1", "outputs": ["r.cpio.gz"], **extra})
    )
    with pytest.raises(RecipeError) as exc:
        load_recipe(tmp_path / "r.yml", tmp_path)
    assert f": {field}: " in str(exc.value) and message in str(exc.value)
