"""Storing output trees: one sealing walk gives what the separate passes gave (modes,
times, manifest, stamp), on one thread or several."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from jailbake.cache import seal
from jailbake.cache.keys import digest_of, file_sha256, tree_manifest
from jailbake.cache.seal import tree_stamp
from jailbake.cache.store import Store

SDE = 1_580_000_000


def _step_output(root: Path) -> Path:
    """A tree as a step leaves it: modes and times of its own, links, empty directories."""
    root.mkdir()
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    (root / "bin" / "tool").chmod(0o700)
    (root / "lib" / "deep" / "er").mkdir(parents=True)
    (root / "lib" / "deep" / "er" / "data.bin").write_bytes(bytes(range(256)) * 800)
    (root / "lib" / "secret").write_text("private\n")
    (root / "lib" / "secret").chmod(0o600)
    (root / "lib" / "deep").chmod(0o700)
    (root / "empty").mkdir()
    (root / "données.txt").write_text("é\n")
    (root / "zero").write_bytes(b"")
    os.link(root / "zero", root / "lib" / "zero-again")  # one file, two names
    (root / "bin" / "alias").symlink_to("tool")
    (root / "dangling").symlink_to("../nowhere")
    return root


def _store_tree(tmp_path: Path) -> tuple[Store, str, list[dict[str, object]]]:
    store = Store(tmp_path / "cache")
    tree = _step_output(store.temp_path("out"))
    digest, manifest = store.add_tree(tree, mtime=SDE)
    assert not tree.exists()
    return store, digest, manifest


def test_a_stored_tree_is_normalized_and_its_manifest_and_stamp_are_its_own(
    tmp_path: Path,
) -> None:
    store, digest, manifest = _store_tree(tmp_path)
    dest = store.tree_path(digest)
    assert manifest == tree_manifest(dest)
    assert digest == digest_of(tree_manifest(dest))
    modes = {}
    for entry in [dest, *sorted(dest.rglob("*"))]:
        st = entry.lstat()
        assert st.st_mtime == SDE, entry
        if not entry.is_symlink():
            modes[entry.relative_to(dest).as_posix()] = st.st_mode & 0o7777
    assert modes == {
        ".": 0o555,
        "bin": 0o555,
        "bin/tool": 0o555,
        "empty": 0o555,
        "lib": 0o555,
        "lib/deep": 0o555,
        "lib/deep/er": 0o555,
        "lib/deep/er/data.bin": 0o444,
        "lib/secret": 0o444,
        "données.txt": 0o444,
        "zero": 0o444,
        "lib/zero-again": 0o444,
    }
    by_path = {e["path"]: e for e in manifest}
    assert by_path["bin/tool"]["exec"] is True and by_path["lib/secret"]["exec"] is False
    assert by_path["bin/alias"] == {"path": "bin/alias", "type": "symlink", "target": "tool"}
    # The stamp written while sealing is the one a later check compares against.
    recorded = json.loads((store.root / "stamps" / f"{digest}.json").read_text())
    assert recorded == tree_stamp(dest)
    assert Store(store.root).verify_tree(digest)


def test_hashing_on_threads_gives_the_same_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, one_thread, manifest = _store_tree(tmp_path / "a")
    monkeypatch.setattr(seal, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(seal, "MAX_THREADS", 8)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    threads: set[str] = set()
    real = file_sha256

    def watched(path: str, **kwargs: bool) -> str:
        import threading

        threads.add(threading.current_thread().name)
        return real(path, **kwargs)

    monkeypatch.setattr(seal, "file_sha256", watched)
    _, several, again = _store_tree(tmp_path / "b")
    assert several == one_thread and again == manifest
    assert threads and all(t.startswith("jailbake-hash") for t in threads)  # the pool hashed


def test_the_same_tree_stored_twice_is_kept_once(tmp_path: Path) -> None:
    store, digest, _ = _store_tree(tmp_path)
    second = _step_output(store.temp_path("out"))
    assert store.add_tree(second, mtime=SDE)[0] == digest
    assert not second.exists()
    assert [p.name for p in (store.root / "trees").iterdir()] == [digest]


def test_a_fifo_in_an_output_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    tree = _step_output(store.temp_path("out"))
    os.mkfifo(tree / "lib" / "pipe")
    with pytest.raises(ValueError, match="lib/pipe: not a file, directory or symbolic link"):
        store.add_tree(tree, mtime=SDE)
    assert list((store.root / "trees").iterdir()) == []
    assert list((store.root / "stamps").iterdir()) == []


def _scratch(store: Store) -> Path:
    work = store.temp_path("work")
    (work / "src" / "deep").mkdir(parents=True)
    for i in range(200):
        (work / "src" / "deep" / f"{i}.c").write_text(f"int x{i};\n")
    return work


def test_a_tree_discarded_in_the_background_is_gone_at_once_and_settled(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    work = _scratch(store)
    store.discard(work, background=True)
    assert not work.exists()
    store.settle()
    assert list((store.root / "tmp").iterdir()) == []


def test_without_rm_a_background_removal_happens_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "cache")
    work = _scratch(store)
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # rm cannot be started
    store.discard(work, background=True)
    assert list((store.root / "tmp").iterdir()) == []


def test_an_interrupted_build_leaves_its_removals_to_finish_alone(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    store.discard(_scratch(store), background=True)
    store.settle(wait=False)  # returns at once; rm goes on
    deadline = time.monotonic() + 30
    while list((store.root / "tmp").iterdir()):
        assert time.monotonic() < deadline, "the removal never finished"
        time.sleep(0.05)
