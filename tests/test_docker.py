"""The docker executor against a real engine (Podman's Docker API on these machines)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    Project,
    Result,
    copy_checkout,
    jailbake,
    render_in_chromium,
    screenshot_path,
)
from jailbake.executors import debs, engine

pytestmark = pytest.mark.usefixtures("docker_engine")


def test_hello_example_builds_in_containers(tmp_path: Path) -> None:
    checkout = copy_checkout(tmp_path / "jailbake")
    art = tmp_path / "art"

    def build(*more: str) -> Result:
        return jailbake(
            "build",
            "examples/hello/hello.yml",
            "--cache-dir",
            str(tmp_path / "c"),
            "--artifacts-dir",
            str(art),
            "--json",
            *more,
            cwd=checkout,
            check=True,
        )

    result = build()
    assert sorted(result.report["built"]) == [
        "hello",
        "hello-boot",
        "hello-initramfs",
        "hello-motd",
        "hello-rootfs",
        "hello-sdcard",
    ]
    run = subprocess.run([str(art / "hello")], capture_output=True, text=True, check=True)
    assert run.stdout == "Hello from jailbake\n"
    shot = screenshot_path("hello-report.png", tmp_path)
    page = render_in_chromium(art / "build-report.html", shot)
    assert page.rendered and sorted(page.bars) == sorted(result.report["built"])
    assert page.visible_bars == 6 and page.charts["cpu-chart"] > 0
    # The source tarball's download and the builder image are drawn within their steps.
    assert 'class="span fetch" data-name="hello-1.0.tar.gz"' in page.dom
    assert 'class="span image" data-name="debian-build"' in page.dom
    again = build("--provenance")
    assert again.report["built"] == []
    # The manifest names the builder image by key with its pinned packages; the
    # provenance adds the engine's image id.
    manifest = json.loads((art / "manifest.json").read_text())
    (builder,) = [b for b in manifest["builders"] if b["name"] == "debian-build"]
    lock = debs.read_lock(checkout / "docker/debian-build/packages.lock")
    assert builder["lock"] == lock.digest and len(builder["packages"]) == len(lock.packages)
    assert {r["name"]: r.get("runs_in") for r in manifest["recipes"]}["hello"] == "debian-build"
    document = json.loads((art / "provenance.intoto.json").read_text())
    deps = document["predicate"]["buildDefinition"]["resolvedDependencies"]
    (image,) = [d for d in deps if d.get("name") == "builder:debian-build"]
    client = engine.connect()
    try:
        assert "sha256:" + image["digest"]["sha256"] == client.images.get(builder["tag"]).id
    finally:
        client.close()
    debs_of_builder = [d for d in deps if d.get("annotations", {}).get("builder") == "debian-build"]
    assert len(debs_of_builder) == len(lock.packages)
    assert all(d["uri"].startswith("pkg:deb/debian/") for d in debs_of_builder)
    executor = document["predicate"]["runDetails"]["builder"]["builderDependencies"]
    assert executor[0]["name"] == "executor:docker" and executor[0]["uri"].startswith("unix://")


def test_container_contract(project: Project, tmp_path: Path) -> None:
    project.with_builders()
    project.recipe("dep", builder="host")
    project.recipe("other", builder="host")
    project.recipe(
        "probe",
        builder="debian-build",
        depends=["dep"],
        script="""
        set +e
        mkdir -p "$OUT"
        {
          echo "uid=$(id -u)"
          echo "host=$(hostname)"
          echo "net=$(ls /sys/class/net | tr '\\n' ' ')"
          echo "deps=$(ls "$DEPS" | tr '\\n' ' ')"
          echo "dep=$(cat "$DEPS/dep/dep.txt")"
          touch "$DEPS/dep/new" 2>/dev/null && echo "deps-writable" || echo "deps-read-only"
          echo "caps=$(grep CapEff /proc/self/status | tr -d '\\t')"
          echo "umask=$(umask) tz=$TZ sde=$SOURCE_DATE_EPOCH"
          echo "pwd=$(pwd)"
        } > "$OUT/probe.txt"
    """,
        outputs=[{"path": "probe.txt", "publish": True}],
    )
    project.build("--target", "probe", executor="docker", artifacts=tmp_path / "art")
    probe = dict(
        line.split("=", 1)
        for line in (tmp_path / "art" / "probe.txt").read_text().splitlines()
        if "=" in line
    )
    lines = (tmp_path / "art" / "probe.txt").read_text()
    assert probe["uid"] != "0"
    assert probe["host"] == "jailbake"
    assert probe["net"].split() == ["lo"]
    assert probe["deps"].split() == ["dep"]
    assert probe["dep"] == "dep"
    assert "deps-read-only" in lines
    assert probe["caps"] == "CapEff:0000000000000000"
    assert "umask=0022 tz=UTC sde=1700000000" in lines
    assert probe["pwd"] == "/work/src"


def test_container_failure_prints_the_log_tail(project: Project, tmp_path: Path) -> None:
    project.with_builders()
    project.recipe(
        "fails",
        builder="debian-build",
        script="set +x; echo compiling; echo 'error: no such file' >&2; exit 3",
    )
    result = project.build(executor="docker", artifacts=tmp_path / "art", check=False)
    assert result.rc == 2
    assert "error: no such file" in result.stderr
    assert "fails: build failed with exit status 3" in result.stderr
    assert not list((project.cache / "ac").rglob("*.json"))


def test_no_engine_is_one_line_with_how_to_start_one(project: Project, tmp_path: Path) -> None:
    project.with_builders()
    project.recipe("c", builder="debian-build")
    result = project.build(
        executor="docker",
        artifacts=tmp_path / "art",
        check=False,
        env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"},
    )
    assert result.rc == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "no container engine answers" in lines[0]
    assert "podman" in lines[0].lower() and "docker" in lines[0].lower()


def start_slow_step(
    project: Project, tmp_path: Path, stderr: int
) -> tuple[subprocess.Popen[str], Callable[[], list[Any]]]:
    """A build whose one step sleeps in its container, returned once that container
    exists, with a function listing the build's step containers."""
    project.with_builders()
    project.recipe("slow", builder="debian-build", script='sleep 300; mkdir -p "$OUT"')
    proc = project.start(
        "--artifacts-dir", str(tmp_path / "art"), stdout=subprocess.DEVNULL, stderr=stderr
    )
    client = engine.connect()

    def step_containers() -> list[Any]:
        found: list[Any] = client.containers.list(
            all=True, filters={"label": [f"org.jailbake.pid={proc.pid}"]}
        )
        return found

    deadline = time.monotonic() + 120
    while not step_containers():
        assert time.monotonic() < deadline, "the step's container never started"
        assert proc.poll() is None, "the build ended before its step started"
        time.sleep(0.2)
    return proc, step_containers


def test_kill_9_during_a_container_step(project: Project, tmp_path: Path) -> None:
    proc, step_containers = start_slow_step(project, tmp_path, subprocess.DEVNULL)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert step_containers(), "the orphaned container is still there until the next build"

    project.recipe(
        "slow", builder="debian-build", script='mkdir -p "$OUT"; echo ok > "$OUT/slow.txt"'
    )
    result = project.build(executor="docker", artifacts=tmp_path / "art")
    assert result.report["built"] == ["slow"]
    assert step_containers() == []
    assert not list((project.cache / "tmp").iterdir())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_build_stops_its_containers(
    project: Project, tmp_path: Path, sig: signal.Signals
) -> None:
    """Step containers are not jailbake's children: an interrupted build removes them
    itself rather than leave them compiling."""
    proc, step_containers = start_slow_step(project, tmp_path, subprocess.PIPE)
    os.kill(proc.pid, sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in stderr
    assert step_containers() == []
    assert not (project.cache / "ac").exists() or not list((project.cache / "ac").rglob("*"))


def test_root_steps_are_uid_0_in_their_container(project: Project, tmp_path: Path) -> None:
    project.with_builders()
    project.recipe(
        "asroot",
        builder="debian-build",
        run_as="root",
        script="""
        set +e
        mkdir -p "$OUT/tree"
        touch "$OUT/tree/owned"
        chown 123:456 "$OUT/tree/owned" && echo chown-ok > "$OUT/report.txt"
        echo "uid=$(id -u)" >> "$OUT/report.txt"
        echo "net=$(ls /sys/class/net | tr '\\n' ' ')" >> "$OUT/report.txt"
        # Unpacking a root file system makes its device nodes (they stay in a tar).
        mknod "$WORKDIR/null" c 1 3 && echo mknod-ok >> "$OUT/report.txt"
        # ...but nothing lets it use a device it was not given.
        mknod "$WORKDIR/disk" b 8 0 && head -c1 "$WORKDIR/disk" >/dev/null \
          || echo disk-denied >> "$OUT/report.txt"
    """,
        outputs=[{"path": "report.txt", "publish": True}, "tree"],
    )
    project.build(executor="docker", artifacts=tmp_path / "art")
    report = (tmp_path / "art" / "report.txt").read_text().split("\n")
    assert report[:5] == ["chown-ok", "uid=0", "net=lo ", "mknod-ok", "disk-denied"]


def test_an_engine_older_than_the_pinned_api_is_asked_its_version(tmp_path: Path) -> None:
    """jailbake speaks Docker API 1.41 without asking; an engine that refuses it (Docker
    before 20.10, which cannot run here: a small HTTP server plays it) is asked."""
    import json as json_
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class OldEngine(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.path)
            if self.path.startswith("/v1.41/"):
                refusal = "client version 1.41 is too new. Maximum supported API version is 1.40"
                body, status = json_.dumps({"message": refusal}).encode(), 400
            elif self.path.endswith("/version"):
                body, status = json_.dumps({"ApiVersion": "1.40", "Version": "19.03"}).encode(), 200
            else:
                body, status = b"OK", 200
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), OldEngine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"tcp://127.0.0.1:{server.server_address[1]}"
        client = engine._client(url)
        assert client.api.api_version == "1.40"
        assert seen[0] == "/v1.41/_ping" and "/version" in seen and seen[-1] == "/v1.40/_ping"
    finally:
        server.shutdown()
        server.server_close()


def test_a_current_engine_is_not_asked_its_version() -> None:
    client = engine.connect()
    assert client.api.api_version == engine.API_VERSION
