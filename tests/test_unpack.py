"""Archives are unpacked only when every member stays inside the tree."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from jailbake.errors import UnpackError
from jailbake.unpack import extract_tar


def tar_with(tmp: Path, *members: tarfile.TarInfo, data: bytes = b"x") -> Path:
    out = tmp / "archive.tar"
    with tarfile.open(out, mode="w") as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(data) if m.isfile() else None)
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


@pytest.mark.parametrize(("label", "members", "message"), BAD, ids=[b[0] for b in BAD])
def test_refused(tmp_path: Path, label: str, members: list[tarfile.TarInfo], message: str) -> None:
    archive = tar_with(tmp_path, *members)
    with pytest.raises(UnpackError, match=message):
        extract_tar(None, archive, tmp_path / "dest", strip=0, origin="test")
    assert not (tmp_path / "evil").exists()
    assert not Path("/etc/evil").exists()


def test_links_chained_through_the_disk_are_refused(tmp_path: Path) -> None:
    # Each name looks harmless, but a/b resolves to <dest>/.. once a -> . exists on disk.
    archive = tar_with(
        tmp_path,
        member("a", tarfile.SYMTYPE, "."),
        member("a/b", tarfile.SYMTYPE, ".."),
        member("h", tarfile.LNKTYPE, "b/victim"),
        member("h"),
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
