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
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

SECTOR = 512
ALIGN = 1 << 20  # the first partition starts at 1 MiB, as every partition tool does
CHUNK = 1 << 20
UNSAFE_NAME_CHARS = ('"', "\\", "\n")  # debugfs' command parser cannot quote these


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


def stage(part: dict[str, Any], deps: Path, root: Path, sde: int) -> None:
    """Copy the partition's contents into root with fixed modes and times."""
    root.mkdir(parents=True)
    for recipe, sub, dest in part["contents"]:
        tree = os.path.realpath(deps / recipe)
        src = deps / recipe / sub
        real = os.path.realpath(src)
        if real != tree and not real.startswith(tree + os.sep):
            fail(f"partition {part['label']}: {sub!r} of {recipe} leads out of its output")
        if not src.is_dir():
            fail(
                f"partition {part['label']}: {recipe} has no directory {sub or '.'!r} in its output"
            )
        merge(src, root / dest, part["label"])
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


def make_ext4(part: dict[str, Any], tree: Path, img: Path, sde: int) -> None:
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
    # mke2fs copies owners and change times from the staging tree; reset them.
    dirs, others = sorted_tree(tree)
    commands = []
    for rel in ["", *dirs, *others, "lost+found"]:
        spec = f'"/{rel}"' if rel else "<2>"
        for field, value in (
            ("uid", "0"),
            ("gid", "0"),
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
        stage(part, deps, tree, sde)
        if part["fs"] == "ext4":
            make_ext4(part, tree, img, sde)
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
