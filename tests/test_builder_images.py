"""Builder images made of pinned packages: the lock is validated by kind, the shipped
Dockerfiles install nothing unpinned, and a builder made twice from its lock (the
engine emptied between) has the same file system, offline, from a mirror."""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, Project
from jailbake.core.errors import EngineError
from jailbake.executors import debs
from test_mirror import in_new_netns

ASSETS = Path(os.environ.get("JAILBAKE_TEST_ASSETS", "/var/cache/jailbake-test"))
DOCKER = ROOT / "docker"
SHIPPED = sorted(p.parent for p in DOCKER.glob("*/Dockerfile"))
BASE_LOCK = DOCKER / debs.BASE_DIR / debs.LOCK
GOOD_DEB = {
    "name": "zstd",
    "version": "1.5.4+dfsg2-5",
    "architecture": "amd64",
    "path": "pool/main/libz/libzstd/zstd_1.5.4+dfsg2-5_amd64.deb",
    "sha256": "0" * 64,
}


def write(path: Path, lock: dict[str, object]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(lock, sort_keys=False))
    return path


def a_lock(**changes: object) -> dict[str, object]:
    lock: dict[str, object] = {
        "suite": "bookworm",
        "architecture": "amd64",
        "epoch": 1796601600,
        "base": "a" * 64,
        "packages": [dict(GOOD_DEB)],
    }
    lock.update(changes)
    return lock


def test_a_written_lock_reads_back_the_same(tmp_path: Path) -> None:
    lock = debs.read_lock(BASE_LOCK)
    debs.write_lock(tmp_path / debs.LOCK, lock)
    assert debs.read_lock(tmp_path / debs.LOCK) == lock
    assert lock.digest == debs.read_lock(tmp_path / debs.LOCK).digest


@pytest.mark.parametrize(
    ("field", "change", "expected"),
    [
        ("path", {"path": "pool/main/z/zstd/../../../../etc/passwd.deb"}, "Debian's pool"),
        ("path", {"path": "/etc/shadow"}, "Debian's pool"),
        ("path", {"path": "pool/main/z/zstd/zstd_1.deb --force-all"}, "Debian's pool"),
        ("sha256", {"sha256": "abc"}, "64 lower-case hex"),
        ("name", {"name": "-oAPT::Foo=1"}, "package name"),
        ("version", {"version": "1 2"}, "Debian version"),
        ("architecture", {"architecture": "arm64"}, "amd64 or all"),
    ],
)
def test_a_package_value_of_the_wrong_kind_is_refused(
    tmp_path: Path, field: str, change: dict[str, str], expected: str
) -> None:
    lock = a_lock(packages=[{**GOOD_DEB, **change}])
    path = write(tmp_path / debs.LOCK, lock)
    with pytest.raises(EngineError) as caught:
        debs.read_lock(path)
    message = str(caught.value)
    assert message.count("\n") == 0, message
    assert f"{path}: packages[0].{field}: expected" in message and expected in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"epoch": "yesterday"}, "epoch: expected seconds since 1970"),
        ({"base": "../base"}, "base: expected the sha256"),
        ({"suite": "Bookworm; rm -rf /"}, "suite: expected a Debian suite"),
        ({"packages": []}, "packages: expected a list of pinned packages"),
        ({"mirror": "http://example.org"}, "mirror: unknown key"),
        ({"packages": [GOOD_DEB, GOOD_DEB]}, "packages[1].name: zstd is pinned twice"),
        ({"packages": [{"name": "zstd"}]}, "packages[0]: expected a mapping of exactly"),
        (
            {"packages": [GOOD_DEB, {**GOOD_DEB, "name": "zstd-again"}]},
            "packages[1].path: expected a file name no other entry has",
        ),
    ],
)
def test_a_lock_of_the_wrong_shape_is_refused(
    tmp_path: Path, change: dict[str, object], expected: str
) -> None:
    path = write(tmp_path / debs.LOCK, a_lock(**change))
    with pytest.raises(EngineError, match=re.escape(expected)) as caught:
        debs.read_lock(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_a_package_name_list_refuses_options(tmp_path: Path) -> None:
    (tmp_path / "packages").write_text("# tools\nzstd make\n--allow-unauthenticated\n")
    with pytest.raises(EngineError, match=r"packages:3: expected a Debian package name"):
        debs.requested(tmp_path)


@pytest.mark.parametrize("context", SHIPPED, ids=lambda p: p.name)
def test_a_shipped_builder_installs_only_its_pinned_packages(context: Path) -> None:
    """No download at image build time: no apt, no curl, no pip, no ADD of a URL. The
    packages come from packages.lock, resolved on the base image the lock names."""
    text = (context / "Dockerfile").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    for pattern in (r"\bapt(-get)?\s+(install|update|upgrade)", r"\b(curl|wget|pip3?)\b",
                    r"^\s*ADD\s+\S*://", r"\bdpkg\s+-i\b"):  # fmt: skip
        assert not re.search(pattern, code, re.M | re.I), f"{context.name}: {pattern}"
    assert re.search(r"^ARG JAILBAKE_PACKAGES=", text, re.M) and "FROM ${JAILBAKE_PACKAGES}" in text
    lock = debs.read_lock(context / debs.LOCK)
    base = debs.read_lock(BASE_LOCK)
    assert lock.base == base.digest, f"{context.name}: resolved on another base; lock again"
    pinned = {d.name for d in lock.packages} | {d.name for d in base.packages}
    assert set(debs.requested(context) or []) <= pinned


def test_the_base_image_root_file_system_is_the_same_twice(tmp_path: Path) -> None:
    """mmdebstrap from the lock's .debs, offline, under the lock's epoch: the same tar,
    byte for byte (the engine imports it as the same layer digest)."""
    import shutil

    from jailbake.executors import pinned

    if shutil.which("mmdebstrap") is None or shutil.which("apt-ftparchive") is None:
        pytest.skip("needs mmdebstrap and apt-utils (scripts/test installs them)")
    if os.geteuid() != 0:
        pytest.skip("mmdebstrap makes the base image as root")
    lock = debs.read_lock(BASE_LOCK)

    def fetch(deb: debs.Deb) -> Path:
        path = ASSETS / "mirror" / deb.filename
        assert hashlib.sha256(path.read_bytes()).hexdigest() == deb.sha256
        return path

    digests = []
    for i in range(2):
        tar = pinned.base_tarball(lock, fetch, tmp_path / str(i))
        digests.append(hashlib.sha256(tar.read_bytes()).hexdigest())
        tar.unlink()
    assert digests[0] == digests[1]


def tiny_builder(project: Project, marker: str) -> Path:
    """docker/tiny: the base image and zstd's .deb, pinned as image-tools pins it."""
    image_tools = debs.read_lock(DOCKER / "image-tools" / debs.LOCK)
    (zstd,) = [d for d in image_tools.packages if d.name == "zstd"]
    context = project.root / "docker" / "tiny"
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text(
        "ARG JAILBAKE_PACKAGES=localhost/debian-base:bookworm\nFROM ${JAILBAKE_PACKAGES}\n"
        f"LABEL org.jailbake.test={marker}\n"
    )
    (context / "packages").write_text("zstd\n")
    debs.write_lock(
        context / debs.LOCK,
        debs.Lock(
            image_tools.suite, image_tools.architecture, image_tools.epoch,
            image_tools.base, (zstd,),
        ),
    )  # fmt: skip
    project.recipe(
        "zipped",
        builder="tiny",
        script='mkdir -p "$OUT"; echo hello | zstd -q --no-progress > "$OUT/hello.zst"',
        outputs=[{"path": "hello.zst", "publish": True}],
    )
    return context


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_a_builder_made_twice_offline_from_its_lock_has_the_same_files(
    project: Project, tmp_path: Path
) -> None:
    from jailbake.executors import engine, pinned

    context = tiny_builder(project, uuid.uuid4().hex)
    client = engine.connect()
    lock = debs.read_lock(context / debs.LOCK)
    tag = engine.image_tag("tiny", engine.image_key(context))
    packages = f"localhost/jailbake-tiny-packages:{lock.digest[:20]}"
    listings = []
    try:
        for i in range(2):
            for image in (tag, packages):  # the engine holds neither
                if engine.labelled(client, image) is not None:
                    client.images.remove(image, force=True)
            built = in_new_netns(
                project, "build", "layer.yml", "--offline", "--mirror", str(ASSETS / "mirror"),
                "--cache-dir", str(tmp_path / f"cache{i}"),
                "--artifacts-dir", str(tmp_path / f"art{i}"),
            )  # fmt: skip
            assert built.rc == 0, built.stderr
            assert (tmp_path / f"art{i}" / "hello.zst").read_bytes().startswith(b"\x28\xb5\x2f\xfd")
            assert engine.labelled(client, packages) == lock.digest
            listings.append(pinned.filesystem_listing(client, tag))
    finally:
        for image in (tag, packages):
            if engine.labelled(client, image) is not None:
                client.images.remove(image, force=True)
    assert listings[0] == listings[1]
    assert any(line.startswith("usr/bin/zstd ") for line in listings[0])
    epoch = str(lock.epoch)
    assert all(line.split()[4] in (epoch, "0") or int(line.split()[4]) < lock.epoch
               for line in listings[0]), "a time after the lock's epoch"  # fmt: skip


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_a_pinned_package_that_does_not_match_fails_the_builder(
    project: Project, tmp_path: Path
) -> None:
    """A .deb in the mirror whose bytes are not the lock's: one line naming the package,
    no image made."""
    from jailbake.executors import engine

    context = tiny_builder(project, uuid.uuid4().hex)
    lock = debs.read_lock(context / debs.LOCK)
    (zstd,) = lock.packages
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / zstd.filename).write_bytes(b"not a deb\n")
    client = engine.connect()
    packages = f"localhost/jailbake-tiny-packages:{lock.digest[:20]}"
    if engine.labelled(client, packages) is not None:
        client.images.remove(packages, force=True)
    built = in_new_netns(
        project, "build", "layer.yml", "--offline", "--mirror", str(mirror),
        "--cache-dir", str(tmp_path / "cache"), "--artifacts-dir", str(tmp_path / "art"),
    )  # fmt: skip
    assert built.rc != 0
    assert f"builder package zstd: {zstd.url} (sha256 {zstd.sha256}) is not" in built.stderr
    assert engine.labelled(client, packages) is None
    assert not (tmp_path / "art" / "hello.zst").exists()
