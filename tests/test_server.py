"""`jailbake server`: commands run in a fork of a resident process, as if run here."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from conftest import ROOT, Project, Result
from jailbake.store import process_alive as alive

BUILD_PY = [sys.executable, str(ROOT / "build.py")]


class Resident:
    """A server in a runtime directory of the test's own, and commands sent to it."""

    def __init__(self, runtime: Path, launcher: list[str]) -> None:
        self.runtime = runtime
        self.launcher = launcher
        self.env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
        for name in (
            "JAILBAKE_SERVER",
            "PYTHONDONTWRITEBYTECODE",
            "PYTHONIOENCODING",
            "PYTHONUNBUFFERED",
            "LC_ALL",
            "LC_CTYPE",
        ):
            self.env.pop(name, None)
        self.env["LANG"] = "C.UTF-8"  # not the C locale: under it Python runs in UTF-8 mode
        self.pids: list[int] = []  # of the servers started, to stop them whatever happens

    @property
    def dir(self) -> Path:
        return self.runtime / "jailbake"

    def run(
        self, *args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None
    ) -> Result:
        cp = self.raw(*args, cwd=cwd, env=env)
        return Result(cp.returncode, cp.stdout.decode(), cp.stderr.decode())

    def raw(
        self, *args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*self.launcher, *args],
            cwd=cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            timeout=300,
        )

    def start(self, *args: str) -> None:
        started = self.run("server", "start", *args)
        found = re.search(r"server started \(pid (\d+)\)", started.stderr)
        if found:
            self.pids.append(int(found.group(1)))
        assert started.rc == 0, started.stderr
        assert (self.dir / "server.sock").exists()

    def served(self) -> int | None:
        """How many commands the running server took; None if none runs."""
        try:
            state = json.loads((self.dir / "server.json").read_text())
        except FileNotFoundError:
            return None
        return int(state["served"])

    def shutdown(self) -> None:
        """Stop the servers started, and kill one that has not gone within seconds."""
        if self.dir.is_dir():  # a server whose directory is not private is not stopped
            self.dir.chmod(0o700)
        self.run("server", "stop")
        for pid in self.pids:
            if not wait_for(lambda: not alive(pid), timeout=10):  # noqa: B023
                with contextlib.suppress(ProcessLookupError):  # gone since
                    os.kill(pid, signal.SIGKILL)

    def build(self, project: Project, *args: str, **kw: object) -> Result:
        argv = ["build", "layer.yml", "--executor", "host", "--cache-dir", str(project.cache)]
        return self.run(*argv, "--json", *args, cwd=project.root, **kw)  # type: ignore[arg-type]


@pytest.fixture
def resident(tmp_path: Path) -> Iterator[Resident]:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    server = Resident(runtime, BUILD_PY)
    yield server
    server.shutdown()


def greeting_project(project: Project) -> Project:
    """Two recipes; the second's output says $GREETING (a layer variable)."""
    project.layer(
        "layer.yml",
        {
            "header": {"version": 14},
            "repos": {"this": {"layers": {"recipes": None}}},
            "env": {"SOURCE_DATE_EPOCH": "1700000000", "GREETING": "hello"},
        },
    )
    project.recipe("base")
    project.recipe(
        "greet",
        depends=["base"],
        variables=["GREETING"],
        script='mkdir -p "$OUT"; echo "$GREETING" > "$OUT/greet.txt"',
        outputs=[{"path": "greet.txt", "publish": "greet.txt"}],
    )
    return project


def test_a_served_build_is_the_build_run_here(resident: Resident, project: Project) -> None:
    greeting_project(project)
    resident.start()
    served = resident.build(project, "--artifacts-dir", "served")
    assert served.rc == 0, served.stderr
    assert resident.served() == 1
    report = json.loads(served.stdout)
    assert report["ok"] and sorted(report["built"]) == ["base", "greet"]
    assert (project.root / "served" / "greet.txt").read_text() == "hello\n"

    here = resident.build(project, "--artifacts-dir", "here", env={"JAILBAKE_SERVER": "off"})
    assert here.rc == 0, here.stderr
    assert resident.served() == 1  # not sent
    assert sorted(json.loads(here.stdout)["reused"]) == ["base", "greet"]
    for name in ("greet.txt", "manifest.json", "sbom.spdx.json"):
        assert (project.root / "served" / name).read_bytes() == (
            project.root / "here" / name
        ).read_bytes()

    # The sender's environment is the command's: a new value is a new build. (Python's
    # bytecode caching is not the command's business: it may differ.)
    other = resident.build(
        project,
        "--artifacts-dir",
        "served",
        env={"GREETING": "bye", "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert other.rc == 0, other.stderr
    assert json.loads(other.stdout)["built"] == ["greet"]
    assert (project.root / "served" / "greet.txt").read_text() == "bye\n"
    assert resident.served() == 2


def test_a_failure_reads_the_same_served_or_not(resident: Resident, project: Project) -> None:
    project.recipe("bad", script="echo compiling; exit 3")
    resident.start()
    served = resident.build(project)
    here = resident.build(project, env={"JAILBAKE_SERVER": "off"})
    assert resident.served() == 1
    assert served.rc == here.rc != 0
    assert served.stderr.splitlines()[-1] == here.stderr.splitlines()[-1]
    assert "bad" in served.stderr.splitlines()[-1]
    assert json.loads(served.stdout) == json.loads(here.stdout)
    assert not json.loads(served.stdout)["ok"]

    usage = resident.run("build", "--jobs", "many", cwd=project.root)
    assert usage.rc == 2 and "invalid int value: 'many'" in usage.stderr
    assert resident.served() == 2


def sleeping_project(project: Project, seconds: str) -> None:
    project.recipe(
        "slow", script=f'echo started; sleep {seconds}; mkdir -p "$OUT"; : > "$OUT/slow.txt"'
    )


def step_running(seconds: str) -> bool:
    return subprocess.run(["pgrep", "-f", f"sleep {seconds}"], capture_output=True).returncode == 0


def wait_for(predicate: object, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("how", ["ctrl-c", "killed"])
def test_a_stopped_sender_stops_its_command(resident: Resident, project: Project, how: str) -> None:
    """Ctrl-C reaches the command and its step as in a terminal; a sender that is
    killed takes its command with it. Either way the step stops, and the server serves
    the next command."""
    seconds = "41.25" if how == "ctrl-c" else "42.25"
    sleeping_project(project, seconds)
    resident.start()
    argv = ["build", "layer.yml", "--executor", "host", "--cache-dir", str(project.cache)]
    sender = subprocess.Popen(
        [*resident.launcher, *argv],
        cwd=project.root,
        env=resident.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert wait_for(lambda: step_running(seconds)), "the step never started"
    assert resident.served() == 1
    sender.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
    _, err = sender.communicate(timeout=60)
    if how == "ctrl-c":
        assert sender.returncode == 130, err
        assert "jailbake: interrupted" in err.splitlines()  # the step's FAILED line may follow
    assert wait_for(lambda: not step_running(seconds)), "the step outlived its command"
    assert resident.served() == 1 and alive(resident.pids[0])  # still serving
    project.recipe("slow")  # quick now
    again = resident.build(project)
    assert again.rc == 0, again.stderr
    assert resident.served() == 2
    # The next build clears what the stopped one left (its process is gone).
    assert not any((project.cache / "tmp").iterdir())


def test_an_edited_module_is_never_run_from_memory(tmp_path: Path, project: Project) -> None:
    """A server whose modules changed on disk refuses the command, which runs in its
    sender with the new code, and stops."""
    copy = tmp_path / "install"
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__"))
    launch = copy / "launch.py"
    launch.write_text(
        f"import sys\nsys.path.insert(0, {str(copy / 'src')!r})\n"
        "from jailbake.client import main\nsys.exit(main())\n"
    )
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    resident = Resident(runtime, [sys.executable, str(launch)])
    project.recipe("r")
    try:
        resident.start()
        assert resident.build(project).rc == 0
        assert resident.served() == 1
        # Another installation (here: build.py of the checkout) is not served by it.
        other = Resident(runtime, BUILD_PY).build(project)
        assert other.rc == 0, other.stderr
        assert resident.served() == 1

        init = copy / "src" / "jailbake" / "__init__.py"
        init.write_text(init.read_text().replace('__version__ = "', '__version__ = "edited-', 1))
        edited = resident.run("--version")
        assert edited.rc == 0, edited.stderr
        assert edited.stdout.startswith("jailbake edited-")  # the new code ran
        assert resident.served() in (1, None)  # refused
        assert wait_for(lambda: resident.served() is None), "the server did not stop"
        assert not (resident.dir / "server.sock").exists()
        assert "a module changed" in (resident.dir / "server.log").read_text()
    finally:
        resident.shutdown()


def test_only_a_private_directory_holds_the_socket(tmp_path: Path, project: Project) -> None:
    runtime = tmp_path / "runtime"
    (runtime / "jailbake").mkdir(parents=True)
    (runtime / "jailbake").chmod(0o755)
    resident = Resident(runtime, BUILD_PY)
    refused = resident.run("server", "start")
    if refused.rc == 0:
        os.kill(int(json.loads((runtime / "jailbake" / "server.json").read_text())["pid"]), 9)
    assert refused.rc != 0
    assert refused.stderr.strip().splitlines() == [
        f"jailbake: error: {runtime / 'jailbake'}: not a private directory (expected a "
        f"directory owned by uid {os.getuid()} with mode 0700); the server's socket is "
        "kept there"
    ]
    assert not (runtime / "jailbake" / "server.sock").exists()
    project.recipe("r")
    assert resident.build(project).rc == 0  # runs here


@pytest.mark.skipif(
    os.getuid() != 0 or not shutil.which("setpriv") or not os.path.exists("/usr/bin/python3"),
    reason="switches user",
)
def test_another_user_is_refused_even_where_the_socket_is_reachable() -> None:
    runtime = Path(tempfile.mkdtemp(prefix="jailbake-runtime-", dir="/var/tmp"))
    resident = Resident(runtime, BUILD_PY)
    try:
        resident.start()
        # Open what the private directory keeps closed, and try as nobody.
        runtime.chmod(0o711)
        resident.dir.chmod(0o711)
        (resident.dir / "server.sock").chmod(0o777)
        probe = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
            "s.connect(sys.argv[1])\n"
            "print(s.recv(64).decode())\n"  # refused before anything is read
        )
        answer = subprocess.run(
            [*("setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"),
             "/usr/bin/python3", "-c", probe, str(resident.dir / "server.sock")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.strip() == "no"
        assert resident.served() == 0
        log = (resident.dir / "server.log").read_text()
        assert f"uid {pwd.getpwnam('nobody').pw_uid} is not this server's" in log
    finally:
        resident.shutdown()
        shutil.rmtree(runtime, ignore_errors=True)


def test_a_server_stops_when_idle_and_runs_once(resident: Resident, project: Project) -> None:
    resident.start("--idle-timeout", "0.02")  # 1.2 s
    second = resident.run("server", "start")
    assert second.rc != 0
    assert "a jailbake server runs already (pid" in second.stderr
    status = resident.run("server", "status")
    assert status.rc == 0 and "0 commands served" in status.stderr
    assert wait_for(lambda: resident.served() is None, timeout=20)
    assert not (resident.dir / "server.sock").exists()
    gone = resident.run("server", "status")
    assert gone.rc == 1 and "no server runs" in gone.stderr
    project.recipe("r")
    assert resident.build(project).rc == 0  # runs here


def test_many_short_commands_in_a_row(resident: Resident) -> None:
    """Commands that end as their senders close, one after another, as a script's
    loop sends them."""
    resident.start()
    for _ in range(40):
        version = resident.run("--version")
        assert version.rc == 0 and version.stdout.startswith("jailbake "), version.stderr
    assert resident.served() == 40
    assert "Traceback" not in (resident.dir / "server.log").read_text()


def test_a_command_runs_once_even_when_the_server_cannot_note_it(resident: Resident) -> None:
    resident.start()
    state = resident.dir / "server.json"
    state.unlink()
    state.mkdir()  # the server's state file cannot be written any more
    version = resident.run("--version")
    assert version.rc == 0, version.stderr
    assert version.stdout.splitlines() == [version.stdout.splitlines()[0]]  # once, not twice
    assert "jailbake " in version.stdout
    assert alive(resident.pids[0])
    state.rmdir()
    assert resident.run("--version").rc == 0
    assert resident.served() == 2  # noted again


def test_the_sender_s_python_settings_hold(resident: Resident, project: Project) -> None:
    """What the sender's own Python would have set up: its streams' encoding and
    error handling (PYTHONIOENCODING, the locale), and the heartbeat interval read at
    run time. (Under LC_ALL=C Python runs in UTF-8 mode: another interpreter mode,
    which the server does not take.)"""
    resident.start()
    missing = "layers/café.yml"
    for env in ({"PYTHONIOENCODING": "latin-1"}, {"LC_ALL": "C.UTF-8"}, {"PYTHONUNBUFFERED": "1"}):
        served = resident.raw("build", missing, cwd=project.root, env=env)
        here = resident.raw(
            "build", missing, cwd=project.root, env={**env, "JAILBAKE_SERVER": "off"}
        )
        assert served.returncode == here.returncode == 2
        assert served.stderr == here.stderr, env
    assert b"caf\xe9.yml" in resident.raw("build", missing, env={"PYTHONIOENCODING": "latin-1"},
                                          cwd=project.root).stderr  # fmt: skip
    assert resident.served() == 4

    project.recipe("slow", script='echo working; sleep 2.5; mkdir -p "$OUT"; : > "$OUT/slow.txt"')
    beats = resident.build(project, env={"JAILBAKE_HEARTBEAT_SECONDS": "1"})
    assert beats.rc == 0, beats.stderr
    assert "slow: still building after" in beats.stderr
    assert resident.served() == 5


def test_a_signal_the_sender_ignores_is_ignored_by_its_command(
    resident: Resident, project: Project
) -> None:
    """Under nohup a hang-up leaves the build running, served or not."""
    sleeping_project(project, "2.75")
    resident.start()
    nohup = [sys.executable, "-c",
             "import os, signal, sys\n"
             "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
             "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"]  # fmt: skip
    argv = ["build", "layer.yml", "--executor", "host", "--cache-dir", str(project.cache)]
    sender = subprocess.Popen(
        [*nohup, *BUILD_PY[1:], *argv],
        cwd=project.root,
        env=resident.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert wait_for(lambda: step_running("2.75")), "the step never started"
    sender.send_signal(signal.SIGHUP)
    _, err = sender.communicate(timeout=60)
    assert sender.returncode == 0, err
    assert "slow: built in" in err
    assert resident.served() == 1


def test_a_server_in_the_background_lets_go_of_its_starter(resident: Resident) -> None:
    """A descriptor the starter passed on (a pipe a CI step reads to its end) is not
    held open by the server."""
    read_end, write_end = os.pipe()
    started = subprocess.run(
        [*resident.launcher, "server", "start"],
        env=resident.env,
        pass_fds=(write_end,),
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"server started \(pid (\d+)\)", started.stderr)
    if found:
        resident.pids.append(int(found.group(1)))
    os.close(write_end)
    assert started.returncode == 0, started.stderr
    ready, _, _ = select.select([read_end], [], [], 10)
    assert ready and os.read(read_end, 1) == b"", "the server holds the pipe"
    os.close(read_end)
    assert alive(resident.pids[0])
