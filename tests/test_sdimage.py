"""SD card images, checked by tools jailbake does not contain."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import Project, copy_checkout, jailbake
from jailbake.core.errors import RecipeError
from jailbake.image.sdimage import parse_size
from jailbake.model.recipe import load_recipe

MIB = 1 << 20


@pytest.fixture(scope="module")
def hello_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("hello")
    checkout = copy_checkout(tmp / "jailbake")
    art = tmp / "art"
    jailbake(
        "build",
        "examples/hello/hello.yml",
        "--executor",
        "host",
        "--cache-dir",
        str(tmp / "cache"),
        "--artifacts-dir",
        str(art),
        cwd=checkout,
        check=True,
    )
    return art


def tool(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def debugfs_stat(image: Path, path: str) -> str:
    return tool("debugfs", "-R", f"stat {path}", str(image))


def partition(img: Path, start: int, size: int, dest: Path) -> Path:
    with img.open("rb") as f, dest.open("wb") as out:
        f.seek(start * 512)
        out.write(f.read(size * 512))
    return dest


def test_partition_table(hello_images: Path) -> None:
    table = json.loads(tool("sfdisk", "-J", str(hello_images / "hello-sdcard.img")))
    pt = table["partitiontable"]
    assert pt["label"] == "dos" and pt["id"] == "0x6a62616b"
    parts = [(p["start"], p["size"], p["type"], p.get("bootable", False)) for p in pt["partitions"]]
    assert parts == [(2048, 64 * 2048, "c", False), (2048 + 64 * 2048, 16 * 2048, "83", True)]


def test_file_systems_are_clean_and_hold_the_files(hello_images: Path, tmp_path: Path) -> None:
    img = hello_images / "hello-sdcard.img"
    boot = partition(img, 2048, 64 * 2048, tmp_path / "boot.img")
    root = partition(img, 2048 + 64 * 2048, 16 * 2048, tmp_path / "root.img")
    subprocess.run(["fsck.vfat", "-n", str(boot)], check=True, capture_output=True)
    subprocess.run(["e2fsck", "-fn", str(root)], check=True, capture_output=True)
    listing = tool("mdir", "-b", "-i", str(boot), "::/")
    assert sorted(listing.split()) == ["::/cmdline.txt", "::/config.txt"]
    assert "Volume Serial Number is 4A42-4F54" in tool("mdir", "-i", str(boot), "::/")
    assert tool("mtype", "-i", str(boot), "::/cmdline.txt").startswith("console=serial0")
    ls = tool("debugfs", "-R", "ls -l /usr/bin", str(root))
    assert " hello" in ls
    hello = tool("debugfs", "-R", "stat /usr/bin/hello", str(root))
    assert "User:     0   Group:     0" in hello
    assert "ctime: 0x6553f100" in hello and "mtime: 0x6553f100" in hello
    assert "6a61696c-6261-4b65-8000-000000000001" in tool("dumpe2fs", "-h", str(root))


def test_bmap_flashes_the_same_bytes(hello_images: Path, tmp_path: Path) -> None:
    target = tmp_path / "card.img"
    subprocess.run(
        [
            "bmaptool",
            "copy",
            "--bmap",
            str(hello_images / "hello-sdcard.img.bmap"),
            str(hello_images / "hello-sdcard.img"),
            str(target),
        ],
        check=True,
        capture_output=True,
    )
    assert target.read_bytes() == (hello_images / "hello-sdcard.img").read_bytes()


def test_compressed_copies(hello_images: Path) -> None:
    img = (hello_images / "hello-sdcard.img").read_bytes()
    assert (
        subprocess.run(
            ["zstd", "-dc", str(hello_images / "hello-sdcard.img.zst")],
            check=True,
            capture_output=True,
        ).stdout
        == img
    )
    assert (
        subprocess.run(
            ["xz", "-dc", str(hello_images / "hello-sdcard.img.xz")],
            check=True,
            capture_output=True,
        ).stdout
        == img
    )


@pytest.mark.parametrize(
    ("text", "size"), [("64M", 64 * MIB), ("1G", 1 << 30), ("512KiB", 512 << 10), ("1048576", MIB)]
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"partitions": []}, "image.partitions", "1 to 4"),
    (
        {"partitions": [{"label": "b", "fs": "ntfs", "size": "64M"}]},
        "image.partitions[0].fs",
        "fat32, fat16 or ext4",
    ),
    (
        {"partitions": [{"label": "b", "fs": "fat32", "size": "32M"}]},
        "image.partitions[0].size",
        "at least 64M",
    ),
    (
        {"partitions": [{"label": "b", "fs": "ext4", "size": "1500K"}]},
        "image.partitions[0].size",
        "whole number of MiB",
    ),
    (
        {"partitions": [{"label": "b", "fs": "ext4", "size": "12M", "uuid": "nope"}]},
        "image.partitions[0].uuid",
        "lower-case UUID",
    ),
    (
        {"partitions": [{"label": "b", "fs": "fat16", "size": "12M", "volume_id": "xyz"}]},
        "image.partitions[0].volume_id",
        "8 hex digits",
    ),
    (
        {"disk_id": "0x123", "partitions": [{"label": "b", "fs": "fat16", "size": "12M"}]},
        "image.disk_id",
        "8 hex digits",
    ),
    (
        {"partitions": [{"label": "much-too-long-label", "fs": "fat16", "size": "12M"}]},
        "image.partitions[0].label",
        "up to 11",
    ),
    (
        {"compress": ["rar"], "partitions": [{"label": "b", "fs": "fat16", "size": "12M"}]},
        "image.compress[0]",
        "zst or xz",
    ),
    (
        {
            "partitions": [
                {
                    "label": "b",
                    "fs": "fat16",
                    "size": "12M",
                    "contents": [{"recipe": "x", "dest": "../up"}],
                }
            ]
        },
        "image.partitions[0].contents[0].dest",
        "absolute path",
    ),
    (
        {
            "partitions": [
                {
                    "label": "b",
                    "fs": "ext4",
                    "size": "12M",
                    "contents": [{"recipe": "x", "path": "a", "archive": "a.tar"}],
                }
            ]
        },
        "image.partitions[0].contents[0].archive",
        "either path or archive",
    ),
    (
        {
            "partitions": [
                {
                    "label": "b",
                    "fs": "ext4",
                    "size": "12M",
                    "contents": [{"recipe": "x", "archive": "../a.tar"}],
                }
            ]
        },
        "image.partitions[0].contents[0].archive",
        "relative path inside the tree",
    ),
]


@pytest.mark.parametrize(("image", "field", "message"), BAD)
def test_bad_layouts_fail_at_load(
    tmp_path: Path, image: dict[str, Any], field: str, message: str
) -> None:
    (tmp_path / "r.yml").write_text(
        yaml.safe_dump({"name": "card", "version": "1", "image": image})
    )
    with pytest.raises(RecipeError) as exc:
        load_recipe(tmp_path / "r.yml", tmp_path)
    assert f": {field}: " in str(exc.value) and message in str(exc.value)


def test_image_recipe_key_follows_the_layout(project: Project, tmp_path: Path) -> None:
    project.with_builders()
    project.recipe("files", script='mkdir -p "$OUT/b"; echo x > "$OUT/b/x.txt"', outputs=["b"])

    def card(size: str) -> None:
        project.recipe(
            "card",
            {
                "image": {
                    "partitions": [
                        {
                            "label": "boot",
                            "fs": "fat16",
                            "size": size,
                            "contents": [{"recipe": "files", "path": "b"}],
                        }
                    ]
                }
            },
            script=None,
            outputs=None,
        )

    card("12M")
    first = project.build(artifacts=tmp_path / "art")
    assert sorted(first.report["built"]) == ["card", "files"]
    assert {a["path"] for a in first.report["artifacts"]} == {
        "card.img",
        "card.img.bmap",
        "manifest.json",
    }
    card("13M")
    second = project.build(artifacts=tmp_path / "art")
    assert second.report["built"] == ["card"]
    assert (tmp_path / "art" / "card.img").stat().st_size == 14 * MIB


def ext4_card(project: Project, contents: list[dict[str, str]]) -> None:
    """A card recipe with one 8M ext4 partition of these contents, made on the host."""
    partition = {"label": "root", "fs": "ext4", "size": "8M", "contents": contents}
    project.recipe(
        "card",
        {"image": {"partitions": [partition]}},
        script=None,
        outputs=None,
        builder="host",
    )


def test_partition_contents_never_write_through_links(project: Project, tmp_path: Path) -> None:
    project.with_builders()
    outside = tmp_path / "outside"
    outside.mkdir()
    project.recipe(
        "links", script=f'mkdir -p "$OUT/a"; ln -s {outside} "$OUT/a/etc"', outputs=["a"]
    )
    project.recipe(
        "files", script='mkdir -p "$OUT/b/etc"; echo x > "$OUT/b/etc/passwd"', outputs=["b"]
    )
    ext4_card(project, [{"recipe": "links", "path": "a"}, {"recipe": "files", "path": "b"}])
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc == 2
    assert "etc is a directory in one content, a link in another" in result.stderr
    assert list(outside.iterdir()) == []


def _tar(entries: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info in entries:
            content = data.get(info.name)
            if content is not None:
                info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return buf.getvalue()


def _entry(
    name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0, **kw: Any
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = kind, mode, uid, gid
    for key, value in kw.items():
        setattr(info, key, value)
    return info


def _archive_card(project: Project, tar: bytes) -> None:
    project.with_builders()
    project.file("recipes/files/root.tar", tar)
    project.recipe(
        "sysroot",
        sources=[{"file": "files/root.tar"}],
        script='mkdir -p "$OUT"; cp "$SRC/root.tar" "$OUT/root.tar"',
        outputs=["root.tar"],
    )
    project.recipe(
        "extra",
        script='mkdir -p "$OUT/t/etc" "$OUT/t/root/.ssh"; echo ours > "$OUT/t/etc/motd"; '
        'echo key > "$OUT/t/root/.ssh/authorized_keys"',
        outputs=["t"],
    )
    ext4_card(
        project, [{"recipe": "sysroot", "archive": "root.tar"}, {"recipe": "extra", "path": "t"}]
    )


def test_archive_contents_keep_owners_modes_links_and_devices(
    project: Project, tmp_path: Path
) -> None:
    """A root file system made as root (mmdebstrap) reaches the card with its owners,
    set-id bits and device nodes, though the image is made by an ordinary user."""
    tar = _tar(
        [
            _entry(".", tarfile.DIRTYPE, 0o755),
            _entry("./root", tarfile.DIRTYPE, 0o700),
            _entry("./usr", tarfile.DIRTYPE, 0o755),
            _entry("./usr/bin", tarfile.DIRTYPE, 0o755),
            _entry("./usr/bin/su", tarfile.REGTYPE, 0o4755),
            _entry("./usr/bin/su2", tarfile.LNKTYPE, 0o4755, linkname="./usr/bin/su"),
            _entry("./bin", tarfile.SYMTYPE, 0o777, linkname="usr/bin"),
            _entry("./etc", tarfile.DIRTYPE, 0o755),
            _entry("./etc/shadow", tarfile.REGTYPE, 0o640, 0, 42),
            _entry("./etc/motd", tarfile.REGTYPE, 0o600, 7, 7),
            # systemd escapes unit names so: the backslash must survive debugfs.
            _entry("./etc/system-a\\x2db.slice", tarfile.REGTYPE, 0o600, 3, 3),
            _entry("./dev", tarfile.DIRTYPE, 0o755),
            _entry("./dev/null", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=3),
            _entry("./dev/initctl", tarfile.FIFOTYPE, 0o600),
            _entry("./home", tarfile.DIRTYPE, 0o755),
            _entry("./home/user", tarfile.DIRTYPE, 0o750, 1000, 1000),
            _entry("./home/user/tool", tarfile.REGTYPE, 0o4750, 1000, 1000),
            _entry(
                "./home/user/z-tool",
                tarfile.LNKTYPE,
                0o4750,
                1000,
                1000,
                linkname="./home/user/tool",
            ),
        ],
        {
            "./usr/bin/su": b"#!/bin/sh\n",
            "./etc/shadow": b"root:x:1::::::\n",
            "./etc/motd": b"t",
            "./home/user/tool": b"x",
        },
    )
    _archive_card(project, tar)
    project.build(artifacts=tmp_path / "art")
    root = partition(tmp_path / "art" / "card.img", 2048, 8 * 2048, tmp_path / "root.img")
    subprocess.run(["e2fsck", "-fn", str(root)], check=True, capture_output=True)

    assert "Mode:  04755" in debugfs_stat(root, "/usr/bin/su") and "Links: 2" in debugfs_stat(
        root, "/usr/bin/su"
    )
    assert "User:     0   Group:    42" in debugfs_stat(
        root, "/etc/shadow"
    ) and "Mode:  0640" in debugfs_stat(root, "/etc/shadow")
    # /root keeps its mode though a directory content adds /root/.ssh below it.
    assert "Type: directory" in debugfs_stat(root, "/root") and "Mode:  0700" in debugfs_stat(
        root, "/root"
    )
    # Two names of one inode: one owner, the set-id bit kept for that owner only.
    for name in ("/home/user/tool", "/home/user/z-tool"):
        tool_stat = debugfs_stat(root, name)
        assert "User:  1000   Group:  1000" in tool_stat and "Mode:  04750" in tool_stat
    assert "User:  1000   Group:  1000" in debugfs_stat(
        root, "/home/user"
    ) and "Mode:  0750" in debugfs_stat(root, "/home/user")
    null = debugfs_stat(root, "/dev/null")
    assert "Type: character special" in null and "Mode:  0666" in null
    assert "Device major/minor number: 01:03" in null
    assert "Type: FIFO" in debugfs_stat(root, "/dev/initctl")
    assert "User:     3   Group:     3" in debugfs_stat(root, "/etc/system-a\\x2db.slice")
    assert 'Fast link dest: "usr/bin"' in debugfs_stat(root, "/bin")
    # A directory content laid over the archive replaces its file, owned by root.
    motd = debugfs_stat(root, "/etc/motd")
    assert "User:     0   Group:     0" in motd and "Mode:  0644" in motd
    assert tool("debugfs", "-R", "cat /etc/motd", str(root)) == "ours\n"


@pytest.mark.parametrize(
    "entry",
    [
        _entry("../escape", tarfile.REGTYPE, 0o644),
        _entry("/abs", tarfile.REGTYPE, 0o644),
        _entry("./hard", tarfile.LNKTYPE, 0o644, linkname="../../etc/passwd"),
        _entry("./hard", tarfile.LNKTYPE, 0o644, linkname="./via/passwd"),
    ],
    ids=["dotdot", "absolute", "hardlink-out", "hardlink-through-link"],
)
def test_archive_contents_cannot_leave_the_tree(
    project: Project, tmp_path: Path, entry: tarfile.TarInfo
) -> None:
    via = _entry("./via", tarfile.SYMTYPE, 0o777, linkname="/etc")
    _archive_card(project, _tar([_entry(".", tarfile.DIRTYPE, 0o755), via, entry], {}))
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc != 0
    assert "partition root: root.tar:" in result.stderr
    assert not (tmp_path / "art" / "card.img").exists()


def test_archive_contents_do_not_write_through_their_links(
    project: Project, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    tar = _tar(
        [
            _entry("./etc", tarfile.SYMTYPE, 0o777, linkname=str(outside)),
            _entry("./etc/passwd", tarfile.REGTYPE, 0o644),
        ],
        {"./etc/passwd": b"x\n"},
    )
    _archive_card(project, tar)
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc != 0 and "goes through a symbolic link" in result.stderr
    assert list(outside.iterdir()) == []


def test_archive_contents_without_parent_directory_entries(
    project: Project, tmp_path: Path
) -> None:
    """`tar -czf t.tar.gz pkg/file` holds no entry for pkg/: tar makes it, so does the card
    (root's, 0755); links and device nodes below such directories too."""
    tar = _tar(
        [
            _entry("pkg/sub/file", tarfile.REGTYPE, 0o640, 5, 5),
            _entry("pkg/links/to-file", tarfile.SYMTYPE, 0o777, linkname="../sub/file"),
            _entry("pkg/hard/again", tarfile.LNKTYPE, 0o640, 5, 5, linkname="pkg/sub/file"),
            _entry("dev2/sub/null", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=3),
        ],
        {"pkg/sub/file": b"deep\n"},
    )
    _archive_card(project, tar)
    project.build(artifacts=tmp_path / "art")
    root = partition(tmp_path / "art" / "card.img", 2048, 8 * 2048, tmp_path / "root.img")
    subprocess.run(["e2fsck", "-fn", str(root)], check=True, capture_output=True)

    for implicit in ("/pkg", "/pkg/sub", "/pkg/links", "/dev2/sub"):
        made = debugfs_stat(root, implicit)
        assert "Type: directory" in made and "Mode:  0755" in made, implicit
        assert "User:     0   Group:     0" in made, implicit
    assert tool("debugfs", "-R", "cat /pkg/sub/file", str(root)) == "deep\n"
    assert "User:     5   Group:     5" in debugfs_stat(root, "/pkg/sub/file")
    assert "Links: 2" in debugfs_stat(root, "/pkg/hard/again")
    assert 'Fast link dest: "../sub/file"' in debugfs_stat(root, "/pkg/links/to-file")
    assert "Type: character special" in debugfs_stat(root, "/dev2/sub/null")
