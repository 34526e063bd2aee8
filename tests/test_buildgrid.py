"""--executor remote against a real Remote Execution API service: BuildGrid 0.9.1 (its
own Python 3.13, its scheduler on PostgreSQL) with tests/remote_worker.py taking its
leases and running each action in the builder image through Podman. Artifacts must be
the bytes a build in local containers gives.

scripts/test prepares BuildGrid (scripts/setup-buildgrid); without it these tests are
skipped, and fail under CI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, jailbake

pytestmark = pytest.mark.usefixtures("builder_images")

ASSETS = Path(os.environ.get("JAILBAKE_TEST_ASSETS", "/var/cache/jailbake-test"))
BUILDGRID = Path(os.environ.get("JAILBAKE_BUILDGRID", ASSETS / "buildgrid"))
CONFIG = """\
server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
connections:
  - !sql-connection &sql
    connection-string: postgresql://bgd@127.0.0.1:{pg_port}/bgd
storages:
  - !lru-storage &storage
    size: 2048M
caches:
  - !lru-action-cache &cache
    storage: *storage
    max-cached-refs: 4096
    allow-updates: true
    cache-failed-actions: false
schedulers:
  - !sql-scheduler &scheduler
    sql: *sql
    storage: *storage
    action-cache: *cache
    property-set: !dynamic-property-set
      match-property-keys: [OSFamily]
      wildcard-property-keys: [container-image]
instances:
  - name: ""
    services:
      - !action-cache
        cache: *cache
      - !execution
        scheduler: *scheduler
      - !cas
        storage: *storage
      - !bytestream
        storage: *storage
      - !bots
        scheduler: *scheduler
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"exited ({proc.returncode}): {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port}: {log.read_text()[-2000:]}")


def _missing() -> str:
    python = BUILDGRID / "bin" / "python"
    if not python.exists():
        return (
            f"BuildGrid is not installed in {BUILDGRID} (scripts/setup-buildgrid needs "
            "Python 3.13 and makes it)"
        )
    if not sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return "PostgreSQL is not installed (apt-get install postgresql-15)"
    if not os.environ.get("DOCKER_HOST", "").startswith("unix://"):
        return "the test worker runs steps through Podman's API at $DOCKER_HOST"
    return ""


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.getuid() == 0 else argv


@pytest.fixture(scope="module")
def buildgrid() -> Iterator[str]:
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="jailbake-buildgrid-", dir="/var/tmp"))
    procs: list[subprocess.Popen[bytes]] = []
    pg_bin = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    data = base / "pg"
    if os.getuid() == 0:
        shutil.chown(base, "postgres")
    pg_port = _free_port()
    try:
        subprocess.run(_as_postgres([str(pg_bin / "initdb"), "-D", str(data), "-U", "bgd",
                                     "--auth=trust", "-E", "UTF8"]),
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run(_as_postgres([str(pg_bin / "pg_ctl"), "-D", str(data), "-w", "-l",
                                     str(base / "pg.log"), "-o",
                                     f"-h 127.0.0.1 -p {pg_port} -k {base}", "start"]),
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run([str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(pg_port),
                        "-U", "bgd", "bgd"], check=True, capture_output=True)  # fmt: skip
        bgd = str(BUILDGRID / "bin" / "bgd")
        subprocess.run([bgd, "migrate", "apply", f"postgresql://bgd@127.0.0.1:{pg_port}/bgd"],
                       check=True, capture_output=True)  # fmt: skip
        port = _free_port()
        config = base / "buildgrid.yml"
        config.write_text(CONFIG.format(port=port, pg_port=pg_port))
        server_log = base / "server.log"
        with server_log.open("wb") as log:
            procs.append(subprocess.Popen([bgd, "server", "start", str(config)],
                                          stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        _wait_port(port, procs[0], server_log)
        for name in ("worker-1", "worker-2"):
            with (base / f"{name}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [str(BUILDGRID / "bin" / "python"), str(ROOT / "tests/remote_worker.py"),
                         "--server", f"127.0.0.1:{port}", "--name", name,
                         "--podman-url", os.environ["DOCKER_HOST"]],
                        stdout=log, stderr=subprocess.STDOUT,
                    )
                )  # fmt: skip
        yield f"grpc://127.0.0.1:{port}"
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(_as_postgres([str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast",
                                     "stop"]), capture_output=True)  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


def _artifacts(config: str, tmp: Path, name: str, *args: str) -> dict[str, str]:
    art = tmp / f"art-{name}"
    result = jailbake(
        "build", config, "--cache-dir", str(tmp / f"cache-{name}"), "--artifacts-dir", str(art),
        *args, cwd=ROOT, timeout=1800,
    )  # fmt: skip
    assert result.rc == 0, result.stderr[-3000:]
    manifest = json.loads((art / "manifest.json").read_text())
    return {a["path"]: a["sha256"] for a in manifest["artifacts"]}


def test_hello_through_buildgrid_gives_the_bytes_of_local_containers(
    buildgrid: str, tmp_path: Path
) -> None:
    config = "examples/hello/hello.yml"
    remote = _artifacts(config, tmp_path, "remote", "--executor", "remote",
                        "--remote-executor", buildgrid)  # fmt: skip
    local = _artifacts(config, tmp_path, "local", "--executor", "docker")
    assert remote == local
    assert {"hello", "hello-rootfs.cpio.gz", "hello-sdcard.img"} <= set(remote)


@pytest.mark.slow
def test_the_busybox_layer_through_buildgrid(buildgrid: str, tmp_path: Path) -> None:
    if not (ASSETS / "mirror" / "busybox-1.35.0.tar.bz2").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"test assets missing in {ASSETS}; scripts/test-assets collects them")
        pytest.skip(f"test assets missing in {ASSETS} (run scripts/test-assets)")
    offline = ("--offline", "--mirror", str(ASSETS / "mirror"))
    config = "layers/busybox-initramfs.yml"
    remote = _artifacts(config, tmp_path, "remote", "--executor", "remote",
                        "--remote-executor", buildgrid, *offline)  # fmt: skip
    local = _artifacts(config, tmp_path, "local", "--executor", "docker", *offline)
    assert remote == local
    assert "rootfs.cpio.gz" in remote
