"""--executor remote: steps as Remote Execution API actions, against an in-process
service (tests/reapi_fake.py) that runs them on this machine."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import HTTPFiles, Project, make_tarball, sha256
from reapi_fake import FakeREAPI, wait_for


@pytest.fixture
def fake() -> Iterator[FakeREAPI]:
    service = FakeREAPI()
    yield service
    service.stop()


def two_steps(project: Project, http: HTTPFiles, big: int = 0) -> None:
    """lib (a tarball source) and app (from lib's output), in the debian-build builder."""
    files: dict[str, str | bytes] = {"words.txt": "alpha\nbeta\n"}
    if big:
        files["big.bin"] = bytes(range(256)) * (big // 256)
    tarball = make_tarball(files, top="lib-1.0")
    url = http.add("lib-1.0.tar.gz", tarball)
    project.with_builders()
    project.recipe(
        "lib",
        builder="debian-build",
        sources=[{"url": url, "sha256": sha256(tarball), "strip": 1}],
        environment={"ZED": "last", "ALPHA": "first"},
        script='mkdir -p "$OUT/share"; tr a-z A-Z < words.txt > "$OUT/share/WORDS"\n'
        'ln -s WORDS "$OUT/share/link"; echo "$ALPHA $ZED" > "$OUT/share/env"\n'
        '[ ! -e big.bin ] || cp big.bin "$OUT/share/big.bin"',
        outputs=["share"],
    )
    project.recipe(
        "app",
        builder="debian-build",
        depends=["lib"],
        script='mkdir -p "$OUT"\n'
        'cat "$DEPS/lib/share/WORDS" "$DEPS/lib/share/env" > "$OUT/app.txt"',
        outputs=[{"path": "app.txt", "publish": True}],
    )


def remote_build(project: Project, fake: FakeREAPI, art: Path, *args: str) -> dict[str, str]:
    result = project.build(
        "--target", "app", "--remote-executor", fake.url, *args,
        executor="remote", artifacts=art, check=False,
    )  # fmt: skip
    assert result.rc == 0, result.stderr
    manifest = json.loads((art / "manifest.json").read_text())
    return {r["name"]: r["output_digest"] for r in manifest["recipes"]}


@pytest.mark.usefixtures("builder_images")
def test_steps_run_remotely_with_the_keys_of_containers(
    project: Project, http: HTTPFiles, fake: FakeREAPI, tmp_path: Path
) -> None:
    two_steps(project, http)
    remote = remote_build(project, fake, tmp_path / "art")
    assert (tmp_path / "art" / "app.txt").read_text() == "ALPHA\nBETA\nfirst last\n"
    assert len(fake.seen.actions) == 2
    lib_command = fake.seen.commands[0]
    names = [v.name for v in lib_command.environment_variables]
    assert names == sorted(names) and {"ALPHA", "ZED", "SOURCE_DATE_EPOCH"} <= set(names)
    assert list(lib_command.output_paths) == ["out"]
    props = {p.name: p.value for p in fake.seen.actions[0].platform.properties}
    assert props["container-image"].startswith("docker://localhost/jailbake-debian-build:")

    # The docker executor finds the same keys in the cache: nothing to build.
    again = project.build("--target", "app", executor="docker", artifacts=tmp_path / "art2")
    assert again.report["built"] == [] and sorted(again.report["reused"]) == ["app", "lib"]

    # Built in containers from an empty cache: the same bytes.
    local = Project(tmp_path / "proj", tmp_path / "cache-local")
    built = local.build("--target", "app", executor="docker", artifacts=tmp_path / "art3")
    assert sorted(built.report["built"]) == ["app", "lib"]
    manifest = json.loads((tmp_path / "art3" / "manifest.json").read_text())
    assert {r["name"]: r["output_digest"] for r in manifest["recipes"]} == remote


def test_large_blobs_go_over_bytestream(
    project: Project, http: HTTPFiles, fake: FakeREAPI, tmp_path: Path
) -> None:
    fake.knobs.batch_limit = 64 * 1024
    two_steps(project, http, big=300 * 1024)
    remote_build(project, fake, tmp_path / "art")
    assert fake.seen.bytestream_writes >= 1  # the source's big.bin
    assert fake.seen.bytestream_reads >= 1  # lib's output big.bin
    (tree,) = project.cache.glob("trees/*/share/big.bin")
    assert tree.read_bytes() == bytes(range(256)) * (300 * 1024 // 256)
    assert (tree.parent / "link").readlink() == Path("WORDS")


def test_a_broken_stream_is_resumed_and_lost_inputs_sent_again(
    project: Project, http: HTTPFiles, fake: FakeREAPI, tmp_path: Path
) -> None:
    fake.knobs.drop_stream_once = True
    fake.knobs.lose_input_once = True
    two_steps(project, http)
    remote_build(project, fake, tmp_path / "art")
    assert fake.seen.wait_executions == 1
    assert (tmp_path / "art" / "app.txt").read_text().startswith("ALPHA")


def test_a_failing_remote_step(
    project: Project, http: HTTPFiles, fake: FakeREAPI, tmp_path: Path
) -> None:
    project.with_builders()
    project.recipe("app", builder="debian-build", script="echo about to fail; exit 3",
                   outputs=["x"])  # fmt: skip
    result = project.build("--target", "app", "--remote-executor", fake.url,
                           executor="remote", check=False)  # fmt: skip
    assert result.rc != 0
    assert "about to fail" in result.stderr and "exit" in result.stderr
    assert not list(project.cache.glob("ac/*/*.json"))


def test_a_refused_platform_property(
    project: Project, http: HTTPFiles, fake: FakeREAPI, tmp_path: Path
) -> None:
    two_steps(project, http)
    layer = project.root / "layer.yml"
    layer.write_text(
        layer.read_text().replace(
            "env:\n", "env:\n  JAILBAKE_REMOTE_PROPERTIES: pool=arm64 OSFamily=linux\n"
        )
    )
    fake.knobs.refuse_property = "pool"
    result = project.build("--target", "app", "--remote-executor", fake.url,
                           executor="remote", artifacts=tmp_path / "art", check=False)  # fmt: skip
    assert result.rc != 0
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("jailbake: error")]
    assert "FAILED_PRECONDITION" in line and "no worker offers platform property pool" in line
    props = {p.name: p.value for p in fake.seen.actions[0].platform.properties}
    assert props["pool"] == "arm64" and props["OSFamily"] == "linux"
    assert not (tmp_path / "art" / "app.txt").exists()


def test_corrupt_outputs_are_refused(
    project: Project, http: HTTPFiles, fake: FakeREAPI, tmp_path: Path
) -> None:
    fake.knobs.corrupt_outputs = True
    two_steps(project, http)
    result = project.build("--target", "app", "--remote-executor", fake.url,
                           executor="remote", check=False)  # fmt: skip
    assert result.rc != 0
    assert "came back as" in result.stderr
    assert not list(project.cache.glob("ac/*/*.json"))


def test_where_each_recipe_runs(project: Project, fake: FakeREAPI) -> None:
    project.with_builders()
    project.recipe("remote-step", builder="debian-build")
    project.recipe("root-step", builder="debian-build", run_as="root")
    project.recipe("host-step", builder="host")
    listed = project.run("list", "layer.yml", "--executor", "remote", "--remote-executor",
                         fake.url, "--cache-dir", str(project.cache), check=True)  # fmt: skip
    lines = listed.stdout.splitlines()
    runs = {lines[i].split()[0]: lines[i + 1].strip() for i in range(len(lines) - 1)
            if lines[i + 1].strip().startswith("runs")}  # fmt: skip
    assert runs["remote-step"] == f"runs on {fake.url}"
    assert runs["root-step"].startswith("runs here: a root step")
    assert runs["host-step"].startswith("runs here: a host step")


def test_a_service_url_must_be_grpc(project: Project) -> None:
    project.with_builders()
    project.recipe("app", builder="debian-build")
    result = project.build("--remote-executor", "http://x:1", executor="remote", check=False)
    assert result.rc != 0
    assert "expected grpc://HOST:PORT or grpcs://HOST:PORT" in result.stderr
    nothing = project.build(executor="remote", check=False)
    assert nothing.rc != 0 and "no service named" in nothing.stderr


def test_an_interrupt_cancels_the_remote_operation(
    project: Project, fake: FakeREAPI, tmp_path: Path
) -> None:
    project.with_builders()
    project.recipe("slow", builder="debian-build", script="sleep 60", outputs=["x"])
    build = project.start(
        "--target", "slow", "--executor", "remote", "--remote-executor", fake.url,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_for(lambda: fake.seen.running)
    started = time.monotonic()
    build.send_signal(signal.SIGINT)
    _, err = build.communicate(timeout=30)
    assert build.returncode != 0
    assert time.monotonic() - started < 20
    assert fake.seen.cancelled == fake.seen.running, err


def test_the_hello_example_remotely(fake: FakeREAPI, tmp_path: Path) -> None:
    """Every kind of step: compiled, rendered, written by jailbake, and the card image,
    whose step runs the layout tool beside build.sh."""
    from conftest import ROOT, jailbake

    art = tmp_path / "art"
    result = jailbake(
        "build", "examples/hello/hello.yml", "--executor", "remote", "--remote-executor",
        fake.url, "--cache-dir", str(tmp_path / "cache"), "--artifacts-dir", str(art),
        cwd=ROOT,
    )  # fmt: skip
    assert result.rc == 0, result.stderr
    assert (art / "hello-sdcard.img").stat().st_size > 0
    images = {
        p.value
        for a in fake.seen.actions
        for p in a.platform.properties
        if p.name == "container-image"
    }
    assert any("jailbake-image-tools" in i for i in images)
    assert any("jailbake-debian-build" in i for i in images)


def test_root_steps_go_to_the_workers_the_layer_names(
    project: Project, fake: FakeREAPI, tmp_path: Path
) -> None:
    project.with_builders()
    project.recipe("root-step", builder="debian-build", run_as="root")
    project.recipe("plain", builder="debian-build", depends=["root-step"])
    layer = project.root / "layer.yml"
    layer.write_text(
        layer.read_text().replace(
            "env:\n", "env:\n  JAILBAKE_REMOTE_ROOT_PROPERTIES: pool=privileged\n"
        )
    )
    listed = project.run("list", "layer.yml", "--executor", "remote", "--remote-executor",
                         fake.url, "--cache-dir", str(project.cache), check=True)  # fmt: skip
    assert f"runs on {fake.url} (the root-step workers)" in listed.stdout
    project.build("--target", "plain", "--remote-executor", fake.url, executor="remote")
    props = [{p.name: p.value for p in a.platform.properties} for a in fake.seen.actions]
    pools = [p.get("pool") for p in props]
    assert pools == ["privileged", None]


def test_an_action_no_worker_takes(project: Project, fake: FakeREAPI, tmp_path: Path) -> None:
    fake.knobs.never_assign = True
    project.with_builders()
    project.recipe("app", builder="debian-build")
    layer = project.root / "layer.yml"
    layer.write_text(
        layer.read_text().replace("env:\n", "env:\n  JAILBAKE_REMOTE_QUEUE_TIMEOUT: '2'\n")
    )
    started = time.monotonic()
    result = project.build("--remote-executor", fake.url, executor="remote", check=False)
    assert result.rc != 0 and time.monotonic() - started < 30
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("jailbake: error")]
    assert "no worker took the action in" in line and "platform properties" in line
    assert fake.seen.cancelled == ["operations/1"]


def test_a_stored_tree_enters_the_input_root_from_its_manifest(tmp_path: Path) -> None:
    """A dependency's tree is described from the manifest the store recorded, without
    hashing its files again: the same directories, digests and blobs as hashing gives."""
    from jailbake.cache.keys import tree_manifest
    from jailbake.executors.remote.tree import InputRoot

    tree = tmp_path / "tree"
    (tree / "share" / "empty").mkdir(parents=True)
    (tree / "share" / "WORDS").write_text("ALPHA\n")
    (tree / "bin").mkdir()
    (tree / "bin" / "tool").write_text("#!/bin/sh\n")
    (tree / "bin" / "tool").chmod(0o755)
    (tree / "share" / "link").symlink_to("WORDS")
    (tree / "share" / "again").write_text("ALPHA\n")  # the same blob twice

    hashed, described = InputRoot(), InputRoot()
    hashed.add_tree("deps/lib", tree)
    described.add_manifest("deps/lib", tree, tree_manifest(tree))
    assert described.digest() == hashed.digest()
    assert sorted(b.digest.hash for b in described.blobs()) == sorted(
        b.digest.hash for b in hashed.blobs()
    )
    for blob in described.blobs():  # each file's blob is read from the tree, if sent
        assert hashlib.sha256(blob.read()).hexdigest() == blob.digest.hash
