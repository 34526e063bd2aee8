"""`jailbake shell`: a recipe's build environment to step into, fresh or as a failed
step left it, on the host and in its builder container."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, Project, in_pty

PROBE = (
    'cat from-layer.txt; cat "$DEPS/dep/dep.txt"; echo "greeting=$GREETING"; '
    "echo net=$(awk -F: 'NR > 2 {print $1}' /proc/net/dev | tr -d ' '); "
    'echo "pwd=$(pwd)"; touch "$DEPS/dep/planted" 2>/dev/null && echo deps=writable '
    "|| echo deps=read-only; echo umask=$(umask)"
)


def shell_project(project: Project, builder: str) -> None:
    project.file("recipes/files/from-layer.txt", "a file source\n")
    project.recipe("dep", builder=builder)
    project.recipe(
        "r",
        builder=builder,
        depends=["dep"],
        sources=[{"file": "files/from-layer.txt"}],
        environment={"GREETING": "hello"},
    )


def shell(project: Project, *args: str, executor: str = "host") -> tuple[int, str, str]:
    result = project.run(
        "shell", "layer.yml", *args, "--executor", executor, "--cache-dir", str(project.cache)
    )
    return result.rc, result.stdout, result.stderr


def check_probe(out: str, workdir_pattern: str) -> None:
    lines = out.splitlines()
    assert lines[:3] == ["a file source", "dep", "greeting=hello"], out
    assert "net=lo" in lines
    assert re.fullmatch(r"pwd=" + workdir_pattern, lines[4]), lines[4]
    assert "deps=read-only" in lines and "umask=0022" in lines


def test_a_command_in_the_host_environment(project: Project, tmp_path: Path) -> None:
    shell_project(project, "host")
    rc, _, err = shell(project, "r", "-c", PROBE)
    assert rc == 2 and "shell: r needs dep built first" in err
    project.build("--target", "dep", artifacts=tmp_path / "art")
    rc, out, err = shell(project, "r", "-c", PROBE)
    assert rc == 0, err
    # Confined, the shell sees the work directory where steps see theirs; unconfined,
    # where it is.
    check_probe(out, r"(/var/tmp/jailbake-step|.*/tmp/\d+-shell-r-\w+)/src")
    rc, _, _ = shell(project, "r", "-c", "exit 7")
    assert rc == 7
    assert not list((project.cache / "tmp").iterdir())  # the scratch space is gone


def test_an_interactive_shell_on_a_terminal(project: Project, tmp_path: Path) -> None:
    shell_project(project, "host")
    project.build("--target", "dep", artifacts=tmp_path / "art")
    argv = [sys.executable, "-m", "jailbake.cli", "shell", "layer.yml", "r", "--executor",
            "host", "--cache-dir", str(project.cache)]  # fmt: skip
    rc, pieces = in_pty(
        argv,
        cwd=project.root,
        env={**os.environ, "PYTHONPATH": str(SRC), "TERM": "xterm"},
        send=[
            ("[jailbake r]", "cat from-layer.txt; echo says-$((6*7))\r"),
            ("says-42", "echo after-$((1+1))\r"),
            ("after-2", "exit 5\r"),
        ],
        timeout=40,
    )
    text = "".join(pieces)
    assert "a file source" in text and "says-42" in text, text
    assert "after-2" in text, text
    assert rc == 5


def test_keep_failed_keeps_the_step_to_step_into(project: Project, tmp_path: Path) -> None:
    project.recipe(
        "bad", builder="host", script="echo half-done > made-before.txt; pwd > ran-in.txt; exit 4"
    )
    result = project.build("--keep-failed", artifacts=tmp_path / "art", check=False)
    assert result.rc == 2
    command = re.search(
        r"    (jailbake shell layer\.yml bad --workdir (\S+) --executor host --cache-dir \S+)",
        result.stderr,
    )
    assert command, result.stderr
    kept = Path(command.group(2))
    assert (kept / "src" / "made-before.txt").read_text() == "half-done\n"
    rc, out, err = shell(project, "bad", "--workdir", str(kept), "-c", "cat made-before.txt")
    assert rc == 0 and out == "half-done\n", err
    # The shell finds it where the step ran: absolute paths the build wrote still hold.
    rc, out, err = shell(project, "bad", "--workdir", str(kept), "-c", 'pwd; echo "$SRC"')
    ran_in = (kept / "src" / "ran-in.txt").read_text()
    assert rc == 0 and out == ran_in * 2, (out, ran_in, err)
    assert not ran_in.startswith(str(kept))
    elsewhere = tmp_path / "bad-elsewhere"
    shutil.copytree(kept, elsewhere, symlinks=True)
    rc, _, err = shell(project, "bad", "--workdir", str(elsewhere), "-c", "true")
    assert rc == 2 and "is not a work directory of bad that build --keep-failed kept" in err
    # Without --keep-failed nothing is kept.
    project.recipe("bad", builder="host", script="echo other > made-before.txt; exit 4")
    project.build(artifacts=tmp_path / "art", check=False)
    assert len(list((project.cache / "failed").iterdir())) == 1


@pytest.mark.usefixtures("docker_engine")
def test_a_command_and_a_terminal_in_the_builder_container(
    project: Project, tmp_path: Path
) -> None:
    project.with_builders()
    shell_project(project, "debian-build")
    project.build("--target", "dep", executor="docker", artifacts=tmp_path / "art")
    rc, out, err = shell(project, "r", "-c", PROBE + "; id -u; cat /etc/debian_version",
                         executor="docker")  # fmt: skip
    assert rc == 0, err
    check_probe(out, "/work/src")
    assert out.splitlines()[-2] in ("1000", str(os.getuid()))
    piped = subprocess.run(
        [sys.executable, "-m", "jailbake.cli", "shell", "layer.yml", "r", "--executor",
         "docker", "--cache-dir", str(project.cache)],
        input="echo from-a-pipe-$((2*3))\nexit 4\n", capture_output=True, text=True,
        cwd=project.root, env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=120,
    )  # fmt: skip
    assert "from-a-pipe-6" in piped.stdout and piped.returncode == 4, piped.stderr

    argv = [sys.executable, "-m", "jailbake.cli", "shell", "layer.yml", "r", "--executor",
            "docker", "--cache-dir", str(project.cache)]  # fmt: skip
    rc, pieces = in_pty(
        argv,
        cwd=project.root,
        env={**os.environ, "PYTHONPATH": str(SRC), "TERM": "xterm"},
        send=[("[jailbake r]", "hostname; echo says-$((6*7))\r"), ("says-42", "exit 3\r")],
        timeout=120,
    )
    text = "".join(pieces)
    assert "jailbake" in text and "says-42" in text, text
    assert rc == 3
