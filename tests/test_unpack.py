"""Archives are unpacked only when every member stays inside the tree."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from jailbake.core.errors import UnpackError
from jailbake.sources.unpack import extract_tar

COMPRESSIONS = ("tar", "gzip", "xz", "bzip2", "zstd")


def compress(data: bytes, how: str) -> bytes:
    if how == "zstd":
        if not shutil.which("zstd"):
            pytest.skip("no zstd here")
        return subprocess.run(
            ["zstd", "-q", "-c"], input=data, capture_output=True, check=True
        ).stdout
    compressors: dict[str, Callable[[bytes], bytes]] = {
        "tar": bytes,
        "gzip": gzip.compress,
        "xz": lzma.compress,
        "bzip2": bz2.compress,
    }
    return compressors[how](data)


def tar_with(
    tmp: Path, *members: tarfile.TarInfo, data: bytes = b"x", compression: str = "tar"
) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(data) if m.isfile() else None)
    out = tmp / f"archive.{compression}"
    out.write_bytes(compress(buf.getvalue(), compression))
    return out


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = 1 if kind == tarfile.REGTYPE else 0
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info


BAD = [
    ("absolute", [member("/etc/evil")], "absolute path"),
    ("dotdot", [member("pkg/../../evil")], "escapes the tree"),
    ("symlink out", [member("pkg/link", tarfile.SYMTYPE, "../../etc/passwd")], "points outside"),
    ("absolute symlink", [member("pkg/link", tarfile.SYMTYPE, "/etc/passwd")], "points outside"),
    (
        "hardlink out",
        [member("pkg/a"), member("pkg/h", tarfile.LNKTYPE, "../../etc/passwd")],
        "points outside",
    ),
    ("char device", [member("pkg/null", tarfile.CHRTYPE)], "device"),
    ("block device", [member("pkg/sda", tarfile.BLKTYPE)], "device"),
    ("fifo", [member("pkg/fifo", tarfile.FIFOTYPE)], "fifo"),
]


@pytest.mark.parametrize("compression", ["tar", "xz"])
@pytest.mark.parametrize(("label", "members", "message"), BAD, ids=[b[0] for b in BAD])
def test_refused(
    tmp_path: Path, label: str, members: list[tarfile.TarInfo], message: str, compression: str
) -> None:
    archive = tar_with(tmp_path, *members, compression=compression)
    with pytest.raises(UnpackError, match=message):
        extract_tar(None, archive, tmp_path / "dest", strip=0, origin="test")
    assert not (tmp_path / "evil").exists()
    assert not Path("/etc/evil").exists()


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_links_chained_through_the_disk_are_refused(tmp_path: Path, compression: str) -> None:
    # Each name looks harmless, but a/b resolves to <dest>/.. once a -> . exists on disk.
    archive = tar_with(
        tmp_path,
        member("a", tarfile.SYMTYPE, "."),
        member("a/b", tarfile.SYMTYPE, ".."),
        member("h", tarfile.LNKTYPE, "b/victim"),
        member("h"),
        compression=compression,
    )
    (tmp_path / "victim").write_text("safe")
    with pytest.raises(UnpackError):
        extract_tar(None, archive, tmp_path / "dest", origin="test")
    assert (tmp_path / "victim").read_text() == "safe"


def test_strip_and_links_inside(tmp_path: Path) -> None:
    archive = tar_with(
        tmp_path,
        member("pkg-1.0/a/file"),
        member("pkg-1.0/b", tarfile.SYMTYPE, "a/file"),
        member("pkg-1.0/c", tarfile.LNKTYPE, "pkg-1.0/a/file"),
    )
    dest = tmp_path / "dest"
    extract_tar(None, archive, dest, strip=1, origin="test")
    assert (dest / "a" / "file").read_bytes() == b"x"
    assert (dest / "b").is_symlink() and (dest / "b").read_bytes() == b"x"
    assert (dest / "c").stat().st_ino == (dest / "a" / "file").stat().st_ino


def test_not_an_archive(tmp_path: Path) -> None:
    bogus = tmp_path / "x.tar.gz"
    bogus.write_bytes(b"not a tarball")
    with pytest.raises(UnpackError, match="cannot unpack"):
        extract_tar(None, bogus, tmp_path / "d", origin="test")


def tree(root: Path) -> list[tuple[str, int, str]]:
    """Each entry: its path, mode and content (a link's target)."""
    out = []
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        content = os.readlink(path) if path.is_symlink() else (
            path.read_text() if path.is_file() else "")  # fmt: skip
        out.append((str(path.relative_to(root)), st.st_mode, content))
    return out


@pytest.mark.parametrize("compression", COMPRESSIONS[1:])
def test_a_compressed_tar_unpacks_the_same_with_its_tool_or_without(
    tmp_path: Path, compression: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tool decompresses on another core where it is installed; without it (and
    for zstd, which Python cannot read) tarfile does, or says it cannot."""
    exe = member("pkg-1.0/bin/run.sh")
    exe.mode = 0o755
    archive = tar_with(
        tmp_path,
        member("pkg-1.0/a/file"),
        exe,
        member("pkg-1.0/b", tarfile.SYMTYPE, "a/file"),
        member("pkg-1.0/c", tarfile.LNKTYPE, "pkg-1.0/a/file"),
        compression=compression,
    )
    with_tool = tmp_path / "with"
    extract_tar(None, archive, with_tool, strip=1, origin="test")
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    without = tmp_path / "without"
    if compression == "zstd":
        with pytest.raises(UnpackError, match="cannot unpack"):
            extract_tar(None, archive, without, strip=1, origin="test")
        return
    extract_tar(None, archive, without, strip=1, origin="test")
    assert tree(with_tool) == tree(without)
    assert [e[0] for e in tree(with_tool)] == ["a", "a/file", "b", "bin", "bin/run.sh", "c"]


@pytest.mark.parametrize("compression", ["gzip", "xz", "bzip2", "zstd"])
def test_a_stream_cut_after_the_last_member_is_refused(tmp_path: Path, compression: str) -> None:
    """The tar inside is whole but the compressed stream ends early (its checksum is
    missing): the tool says so, and nothing is taken as unpacked."""
    if not shutil.which(compression):
        pytest.skip(f"no {compression} here: tarfile reads what the archive holds")
    archive = tar_with(tmp_path, member("pkg/a"), compression=compression)
    whole = archive.read_bytes()
    archive.write_bytes(whole[: len(whole) - 4])
    with pytest.raises(UnpackError, match="cannot unpack"):
        extract_tar(None, archive, tmp_path / "dest", origin="test")


def with_mode(info: tarfile.TarInfo, mode: int) -> tarfile.TarInfo:
    info.mode = mode
    return info


def varied_members() -> list[tarfile.TarInfo]:
    """Files, directories and links of every mode and order an archive may hold."""
    members = [
        with_mode(member("top", tarfile.DIRTYPE), 0o777),
        with_mode(member("top/setuid"), 0o4755),
        with_mode(member("top/group-writable"), 0o664),
        with_mode(member("top/private"), 0o600),
        with_mode(member("top/not-readable"), 0o000),
        with_mode(member("top/exec-only"), 0o100),
        with_mode(member("top/others-exec"), 0o611),
        member("deep/a/b/c/file"),  # its directories are not members
        member("late/file"),
        with_mode(member("late", tarfile.DIRTYPE), 0o700),  # after what it holds
        member("top/sub", tarfile.DIRTYPE),
        member("top/lnk", tarfile.SYMTYPE, "sub"),
        member("top/lnk/through"),  # lands in top/sub
        member("top/flink", tarfile.SYMTYPE, "setuid"),
        member("top/hard", tarfile.LNKTYPE, "top/private"),
        member("again/x"),
        member("again/x"),  # a second copy of a name replaces the first
    ]
    for i, info in enumerate(members):
        info.mtime = 1_600_000_000 + i
    return members


def test_members_unpack_as_tarfiles_data_filter_unpacks_them(tmp_path: Path) -> None:
    """The members whose paths need no resolving on disk get the same modes, times
    and contents as tarfile's "data" filter gives them."""
    archive = tar_with(tmp_path, *varied_members(), data=b"data")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    extract_tar(None, archive, ours, origin="test")
    with tarfile.open(archive) as tar:
        tar.extractall(theirs, filter="data")
    assert tree(ours) == tree(theirs)

    def file_times(root: Path) -> list[tuple[Path, int]]:  # directories' change as they fill
        files = (p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink())
        return [(p.relative_to(root), p.stat().st_mtime_ns) for p in files]

    assert file_times(ours) == file_times(theirs)
    assert len(file_times(ours)) == 11
    assert (ours / "top/sub/through").read_text() == "d"  # each member holds one byte
    assert not (ours / "top/setuid").stat().st_mode & 0o6000


@pytest.mark.parametrize(
    "name", ["out/file", "out/new/file", "out", "rel/file", "inner/out/file", "inner/out"]
)
@pytest.mark.parametrize("kind", [tarfile.REGTYPE, tarfile.DIRTYPE])
def test_links_already_in_the_destination_are_not_followed_out(
    tmp_path: Path, name: str, kind: bytes
) -> None:
    """A link another source left in the destination: a member under it (or named
    like it) that would land outside is refused, whatever its directories' state."""
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    (dest / "inner").mkdir(parents=True)
    outside.mkdir()
    (dest / "out").symlink_to(outside)
    (dest / "rel").symlink_to("../outside")
    (dest / "inner" / "out").symlink_to(outside)
    archive = tar_with(tmp_path, member("inner/ok"), member(name, kind))
    with pytest.raises(UnpackError, match="refused member"):
        extract_tar(None, archive, dest, origin="test")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("strip", [0, 1])
def test_a_directory_member_over_a_file_does_not_open_a_way_out(tmp_path: Path, strip: int) -> None:
    """tarfile keeps a file that a directory member of the same name meets; a link
    that later takes the name and changes meaning once another link exists must
    still be resolved for the members under it."""
    prefix = "pkg/" if strip else ""
    archive = tar_with(
        tmp_path,
        member(f"{prefix}f"),
        member(f"{prefix}f", tarfile.DIRTYPE),
        member(f"{prefix}f", tarfile.SYMTYPE, "s/.."),  # the root itself, while s is absent
        member(f"{prefix}s", tarfile.SYMTYPE, "."),  # from now on f is the root's parent
        member(f"{prefix}f/escaped"),
    )
    dest = tmp_path / "dest"
    with pytest.raises(UnpackError, match="refused member"):
        extract_tar(None, archive, dest, strip=strip, origin="test")
    assert not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("target_exists", [False, True])
def test_a_hard_link_to_a_symbolic_link_is_refused(tmp_path: Path, target_exists: bool) -> None:
    """tarfile would remake the symbolic link at the hard link's place with the same
    relative target, which from there points outside the tree."""
    archive = tar_with(
        tmp_path,
        member("a/b/c/x", tarfile.SYMTYPE, "../../../tmp"),  # <dest>/tmp: inside
        member("h", tarfile.LNKTYPE, "a/b/c/x"),
    )
    dest = tmp_path / "dest"
    if target_exists:
        (dest / "tmp").mkdir(parents=True)
    with pytest.raises(UnpackError, match="names a symbolic link"):
        extract_tar(None, archive, dest, origin="test")
    assert not (dest / "h").is_symlink()
