"""Carries out an SD card layout inside a build step: `python3 sdtool.py layout.json`.

Standalone on purpose (standard library only): it runs in the image builder
container, where jailbake itself is not installed. Every id and time is fixed:
FAT volume ids, ext4 UUIDs and hash seeds, the MBR disk id, and all timestamps
(SOURCE_DATE_EPOCH), so two runs give the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

SECTOR = 512
ALIGN = 1 << 20  # the first partition starts at 1 MiB, as every partition tool does
CHUNK = 1 << 20
UNSAFE_NAME_CHARS = ('"', "\n", "\r")  # debugfs' command parser cannot quote these


def sh(argv: list[str], *, env: dict[str, str] | None = None, stdin: str | None = None) -> None:
    print("+ " + " ".join(argv), flush=True)
    subprocess.run(
        argv,
        check=True,
        input=stdin,
        text=True,
        env={**os.environ, "TZ": "UTC", "LC_ALL": "C.UTF-8", **(env or {})},
    )


def fail(message: str) -> NoReturn:
    sys.exit(f"sdtool: {message}")


@dataclass(frozen=True)
class Owned:
    """Owner and mode of an entry unpacked from an archive, set in the image later."""

    uid: int
    gid: int
    mode: int  # permission bits, set-id and sticky bits included
    device: tuple[str, int, int] | None = None  # ("c"|"b"|"p", major, minor): made by debugfs


def unpack(archive: Path, dest: Path, label: str, owned: dict[str, Owned], prefix: str) -> None:
    """Unpack a tar file into dest as an ordinary user, remembering owners, modes and
    special files, which the file system gets afterwards (mke2fs -d, then debugfs)."""
    with tarfile.open(archive) as tar:
        for member in tar:
            name = member.name.removeprefix("./").rstrip("/")
            parts = Path(name).parts
            if not name or name == ".":
                owned[prefix] = Owned(member.uid, member.gid, member.mode & 0o7777)
                continue
            if any(c in name for c in UNSAFE_NAME_CHARS):
                fail(f"partition {label}: debugfs cannot name {name!r}")
            if name.startswith("/") or ".." in parts:
                fail(f"partition {label}: {archive.name}: {member.name!r} leads out of the tree")
            target = dest / name
            for i in range(1, len(parts)):
                parent = dest / Path(*parts[:i])
                if parent.is_symlink():
                    fail(
                        f"partition {label}: {archive.name}: {member.name!r} "
                        "goes through a symbolic link"
                    )
                # Archives often hold no entries for parent directories (tar -czf t.tgz
                # pkg/file): they are made as tar makes them, root's, mode 0755.
                if not parent.exists():
                    parent.mkdir(0o755)
                elif not parent.is_dir():
                    fail(f"partition {label}: {archive.name}: {member.name!r} is below a file")
            rel = f"{prefix}/{name}".lstrip("/")
            if target.is_symlink() or target.is_file():
                target.unlink()
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                target.chmod(0o755)
            elif member.issym():
                target.symlink_to(member.linkname)
            elif member.islnk():
                link = member.linkname.removeprefix("./").rstrip("/")
                lparts = Path(link).parts
                if (
                    not link
                    or link.startswith("/")
                    or ".." in lparts
                    or any((dest / Path(*lparts[:i])).is_symlink() for i in range(1, len(lparts)))
                    or not os.path.lexists(dest / link)
                ):
                    fail(
                        f"partition {label}: {archive.name}: {member.name!r} links out of the tree"
                    )
                os.link(dest / link, target, follow_symlinks=False)
                # Both names are one inode: they must get the same owner and mode.
                first = owned.get(f"{prefix}/{link}".lstrip("/"))
                if first is None:
                    owned.pop(rel, None)
                else:
                    owned[rel] = first
                continue
            elif member.isfile():
                with tar.extractfile(member) as fin, target.open("wb") as fout:  # type: ignore[union-attr]
                    shutil.copyfileobj(fin, fout, CHUNK)
                target.chmod(0o755 if member.mode & 0o111 else 0o644)
            elif member.ischr() or member.isblk() or member.isfifo():
                kind = "c" if member.ischr() else "b" if member.isblk() else "p"
                owned[rel] = Owned(
                    member.uid,
                    member.gid,
                    member.mode & 0o7777,
                    (kind, member.devmajor, member.devminor),
                )
                continue
            else:
                fail(f"partition {label}: {archive.name}: {member.name!r} has an unknown type")
            owned[rel] = Owned(member.uid, member.gid, member.mode & 0o7777)


def merge(src: Path, dest: Path, label: str) -> None:
    """Copy the tree src into dest without following links already in dest, and without
    extended attributes (mke2fs -d would copy the host's into the image)."""
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        target_dir = dest / rel
        if target_dir.is_symlink():
            fail(f"partition {label}: {rel} is a directory in one content, a link in another")
        target_dir.mkdir(parents=True, exist_ok=True)
        for name in sorted(dirnames + filenames):
            s = Path(dirpath) / name
            d = target_dir / name
            if s.is_dir() and not s.is_symlink():
                continue  # os.walk goes there next
            if d.is_symlink() or d.is_file():
                d.unlink()
            elif d.is_dir():
                fail(f"partition {label}: {rel / name} is a directory in one content only")
            if s.is_symlink():
                d.symlink_to(os.readlink(s))
            else:
                shutil.copyfile(s, d)
                d.chmod(0o755 if os.access(s, os.X_OK) else 0o644)


def stage(part: dict[str, Any], deps: Path, root: Path, sde: int) -> dict[str, Owned]:
    """Copy the partition's contents into root with fixed modes and times; return the
    owners and modes that archives give their entries."""
    root.mkdir(parents=True)
    owned: dict[str, Owned] = {}
    for recipe, sub, dest, *flags in part["contents"]:
        tree = os.path.realpath(deps / recipe)
        src = deps / recipe / sub
        real = os.path.realpath(src)
        if real != tree and not real.startswith(tree + os.sep):
            fail(f"partition {part['label']}: {sub!r} of {recipe} leads out of its output")
        into = os.path.realpath(root / dest)
        if into != os.path.realpath(root) and not into.startswith(os.path.realpath(root) + os.sep):
            fail(f"partition {part['label']}: {dest!r} leads out of the partition")
        if "archive" in flags:
            if not src.is_file():
                fail(f"partition {part['label']}: {recipe} has no file {sub!r} in its output")
            (root / dest).mkdir(parents=True, exist_ok=True)
            unpack(src, root / dest, part["label"], owned, dest)
            continue
        if not src.is_dir():
            fail(
                f"partition {part['label']}: {recipe} has no directory {sub or '.'!r} in its output"
            )
        merge(src, root / dest, part["label"])
        # Files and links a directory content puts in place are root's, with the usual
        # modes; directories it only passes through keep what an archive gave them.
        for dirpath, dirnames, filenames in os.walk(src):
            rel = Path(dest, Path(dirpath).relative_to(src))
            links = [d for d in dirnames if (Path(dirpath) / d).is_symlink()]
            for name in [*links, *filenames]:
                owned.pop((rel / name).as_posix().lstrip("/").removeprefix("./"), None)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in [*filenames, *dirnames]:
            p = Path(dirpath) / name
            if any(c in name for c in UNSAFE_NAME_CHARS):
                fail(f"partition {part['label']}: debugfs cannot name {name!r}")
            if not p.is_symlink():
                p.chmod(0o755 if p.is_dir() or p.stat().st_mode & 0o111 else 0o644)
            os.utime(p, (sde, sde), follow_symlinks=False)
    root.chmod(0o755)
    os.utime(root, (sde, sde))
    return owned


def sorted_tree(root: Path) -> tuple[list[str], list[str]]:
    """Directories (parents first) and other entries, by byte order of their paths."""
    dirs: list[str] = []
    others: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            p = Path(dirpath) / name
            (others if p.is_symlink() else dirs).append(p.relative_to(root).as_posix())
        others += [(Path(dirpath) / n).relative_to(root).as_posix() for n in filenames]
    return sorted(dirs), sorted(others)


def make_ext4(
    part: dict[str, Any], tree: Path, img: Path, sde: int, owned: dict[str, Owned]
) -> None:
    fake = {"E2FSPROGS_FAKE_TIME": str(sde)}
    with img.open("wb") as f:
        f.truncate(part["size"])
    sh(
        [
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-d",
            str(tree),
            "-L",
            part["label"],
            "-U",
            part["uuid"],
            "-E",
            f"hash_seed={part['uuid']},root_owner=0:0",
            str(img),
        ],
        env=fake,
    )
    # mke2fs copies owners and change times from the staging tree; reset them, and
    # give archive entries their owners, modes and special files.
    dirs, others = sorted_tree(tree)
    commands = []
    devices = sorted((rel, o) for rel, o in owned.items() if o.device)
    for rel, o in devices:
        kind, major, minor = o.device or ("p", 0, 0)
        parent, _, name = rel.rpartition("/")
        # debugfs' mknod takes a name in its working directory, not a path.
        commands.append(f'cd "/{parent}"')
        commands.append(f'mknod "{name}" {kind}' + ("" if kind == "p" else f" {major} {minor}"))
        commands.append("cd /")
    type_bits = {"c": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
    for rel in ["", *dirs, *others, "lost+found", *(rel for rel, _ in devices)]:
        spec = f'"/{rel}"' if rel else "<2>"
        fields = [("uid", "0"), ("gid", "0")]
        entry = owned.get(rel)
        if entry is not None:
            if entry.device:
                kind_bits = type_bits[entry.device[0]]
            else:
                kind_bits = stat.S_IFMT((tree / rel).lstat().st_mode)
            fields = [
                ("uid", str(entry.uid)),
                ("gid", str(entry.gid)),
                ("mode", f"0{kind_bits | entry.mode:o}"),
            ]
        for field, value in (
            *fields,
            ("ctime", f"@{sde}"),
            ("atime", f"@{sde}"),
            ("mtime", f"@{sde}"),
            ("crtime", f"@{sde}"),
        ):
            commands.append(f"set_inode_field {spec} {field} {value}")
    cmds = img.with_suffix(".debugfs")
    cmds.write_text("\n".join(commands) + "\n")
    done = subprocess.run(
        ["debugfs", "-w", "-f", str(cmds), str(img)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **fake},
    )
    # debugfs exits 0 even when commands fail; all it prints then is the complaint.
    errors = [line for line in done.stderr.splitlines() if not line.startswith("debugfs 1.")]
    if errors:
        fail(f"partition {part['label']}: debugfs: {errors[0]}")
    cmds.unlink()


def make_fat(part: dict[str, Any], tree: Path, img: Path, sde: int) -> None:
    with img.open("wb") as f:
        f.truncate(part["size"])
    bits = "32" if part["fs"] == "fat32" else "16"
    sh(
        [
            "mkfs.vfat",
            "-F",
            bits,
            "--invariant",
            "-i",
            part["volume_id"],
            "-n",
            part["label"],
            str(img),
        ]
    )
    dirs, others = sorted_tree(tree)
    for rel in others:
        if (tree / rel).is_symlink():
            sys.exit(
                f"sdtool: partition {part['label']}: FAT cannot hold the symbolic link {rel!r}"
            )
    # Entries go in one at a time in sorted order: FAT keeps insertion order, and a
    # recursive copy would follow the host's directory order.
    empty = img.with_suffix(".empty")
    for rel in dirs:
        holder = empty / Path(rel).name
        holder.mkdir(parents=True)
        os.utime(holder, (sde, sde))
        parent = Path(rel).parent.as_posix()
        sh(
            [
                "mcopy",
                "-s",
                "-m",
                "-i",
                str(img),
                str(holder),
                "::/" if parent == "." else f"::/{parent}/",
            ]
        )
        shutil.rmtree(empty)
    by_dir: dict[str, list[str]] = {}
    for rel in others:
        by_dir.setdefault(Path(rel).parent.as_posix(), []).append(rel)
    for parent in sorted(by_dir):
        target = "::/" if parent == "." else f"::/{parent}/"
        sh(["mcopy", "-m", "-i", str(img), *(str(tree / r) for r in by_dir[parent]), target])


def copy_sparse(src: Path, dest: Path, offset: int) -> None:
    """Copy src into dest at offset, keeping src's holes as holes (what bmap maps)."""
    with src.open("rb") as fin, dest.open("r+b") as fout:
        fd = fin.fileno()
        end = os.fstat(fd).st_size
        pos = 0
        while pos < end:
            try:
                data_at = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break  # only holes remain
            hole_at = os.lseek(fd, data_at, os.SEEK_HOLE)
            fin.seek(data_at)
            fout.seek(offset + data_at)
            left = hole_at - data_at
            while left:
                chunk = fin.read(min(CHUNK, left))
                fout.write(chunk)
                left -= len(chunk)
            pos = hole_at


def main(layout_path: str) -> None:
    layout = json.loads(Path(layout_path).read_text())
    work = Path(os.environ["WORKDIR"])
    out = Path(os.environ["OUT"])
    deps = Path(os.environ["DEPS"])
    sde = int(layout["source_date_epoch"])
    out.mkdir(parents=True, exist_ok=True)
    disk = out / layout["name"]
    parts = layout["partitions"]
    total = ALIGN + sum(p["size"] for p in parts)
    with disk.open("wb") as f:
        f.truncate(total)
    table = [f"label: dos\nlabel-id: 0x{layout['disk_id']}\nunit: sectors\n"]
    start = ALIGN
    for i, part in enumerate(parts, 1):
        tree = work / f"part{i}"
        img = work / f"part{i}.img"
        owned = stage(part, deps, tree, sde)
        if part["fs"] == "ext4":
            make_ext4(part, tree, img, sde, owned)
        else:
            make_fat(part, tree, img, sde)
        copy_sparse(img, disk, start)
        img.unlink()
        boot = ", bootable" if part["bootable"] else ""
        mbr_type = {"fat32": "c", "fat16": "e", "ext4": "83"}[part["fs"]]
        table.append(
            f"start={start // SECTOR}, size={part['size'] // SECTOR}, type={mbr_type}{boot}\n"
        )
        start += part["size"]
    sh(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(disk)], stdin="".join(table))
    if layout["bmap"]:
        sh(["bmaptool", "create", "-o", f"{disk}.bmap", str(disk)])
    for kind in layout["compress"]:
        if kind == "zst":
            sh(["zstd", "-q", "-f", "-T0", "-10", str(disk), "-o", f"{disk}.zst"])
        else:
            with Path(f"{disk}.xz").open("wb") as f:
                print(f"+ xz -T1 -6 -c {disk}", flush=True)
                subprocess.run(["xz", "-T1", "-6", "-c", str(disk)], check=True, stdout=f)


if __name__ == "__main__":
    main(sys.argv[1])
