"""BuildGrid 0.9.1 as a running Remote Execution API service, for tests and benchmarks:
PostgreSQL 15 on 127.0.0.1 for its scheduler, the server, and test workers
(tests/remote_worker.py) running actions through Podman's API at $DOCKER_HOST."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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
    # Look for new jobs and finished ones every 0.1 s rather than every second.
    poll-interval: 0.1
    job-assignment-interval: 0.1
    bot-poll-interval: 0.1
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


def missing() -> str:
    """Why BuildGrid cannot run here ('' if it can)."""
    python = BUILDGRID / "bin" / "python"
    if not python.exists():
        return (
            f"BuildGrid is not installed in {BUILDGRID} (scripts/setup-buildgrid needs "
            "Python 3.13 and makes it)"
        )
    if not sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return "PostgreSQL is not installed (apt-get install postgresql)"
    if not os.environ.get("DOCKER_HOST", "").startswith("unix://"):
        return "the test worker runs steps through Podman's API at $DOCKER_HOST"
    return ""


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.getuid() == 0 else argv


@contextlib.contextmanager
def running(workers: int = 2) -> Iterator[str]:
    """The service's grpc:// URL while it runs, with this many workers."""
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
        for name in (f"worker-{n}" for n in range(1, workers + 1)):
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
