"""Whole builds with the host executor: keys, cache reuse, early cutoff, crashes, concurrency."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (
    ROOT,
    SRC,
    HTTPFiles,
    Project,
    artifact_names,
    copy_checkout,
    jailbake,
    make_tarball,
    path_without,
    sha256,
)
from jailbake.executors.host import HostExecutor


def keys_of(project: Project) -> dict[str, str]:
    result = jailbake(
        "list",
        "layer.yml",
        "--json",
        "--executor",
        "host",
        "--cache-dir",
        str(project.cache),
        cwd=project.root,
        check=True,
    )
    return {e["name"]: e["key"] for e in json.loads(result.stdout)}


def lib_and_app(project: Project, http: HTTPFiles, patch: str) -> None:
    tarball = make_tarball({"data.txt": "data\n", "notes.txt": "notes\n"})
    url = http.add("lib-1.0.tar.gz", tarball)
    project.file("recipes/files/lib.patch", patch)
    project.recipe(
        "lib",
        sources=[{"url": url, "sha256": sha256(tarball)}],
        patches=["files/lib.patch"],
        script='mkdir -p "$OUT"; cp data.txt "$OUT/"',
        outputs=["data.txt"],
    )
    project.recipe(
        "app",
        depends=["lib"],
        script='mkdir -p "$OUT"; cat "$DEPS/lib/data.txt" > "$OUT/app.txt"',
        outputs=[{"path": "app.txt", "publish": True}],
    )


def patch_for(name: str, old: str, new: str) -> str:
    return f"--- a/{name}\n+++ b/{name}\n@@ -1 +1 @@\n-{old}\n+{new}\n"


def test_same_inputs_in_two_checkouts_give_the_same_keys(tmp_path: Path, http: HTTPFiles) -> None:
    first = Project(tmp_path / "one" / "checkout", tmp_path / "cache1")
    lib_and_app(first, http, patch_for("notes.txt", "notes", "more notes"))
    second = Project(tmp_path / "two" / "elsewhere", tmp_path / "cache2")
    shutil.copytree(first.root, second.root, dirs_exist_ok=True)
    # Before anything is built, only keys without dependencies are known.
    assert keys_of(first) == keys_of(second)
    assert keys_of(first)["app"] is None
    first.build(artifacts=tmp_path / "art1")
    second.build(artifacts=tmp_path / "art2")
    assert keys_of(first) == keys_of(second)
    assert all(keys_of(first).values())


def test_comments_and_formatting_do_not_change_keys(project: Project, http: HTTPFiles) -> None:
    lib_and_app(project, http, patch_for("notes.txt", "notes", "more notes"))
    before = keys_of(project)
    recipe = project.root / "recipes" / "lib.yml"
    text = recipe.read_text()
    recipe.write_text("# a comment\n" + text.replace(": ", ":    ") + "\n\n# trailing\n")
    assert keys_of(project) == before


def test_noop_rebuild_executes_nothing(project: Project, http: HTTPFiles, tmp_path: Path) -> None:
    lib_and_app(project, http, patch_for("notes.txt", "notes", "more notes"))
    first = project.build(artifacts=tmp_path / "art")
    assert sorted(first.report["built"]) == ["app", "lib"]
    logs = sorted((project.cache / "logs").iterdir())
    second = project.build(artifacts=tmp_path / "art")
    assert second.report["built"] == []
    assert sorted(second.report["reused"]) == ["app", "lib"]
    assert second.report["artifacts"] == first.report["artifacts"]
    assert sorted((project.cache / "logs").iterdir()) == logs
    assert "lib: reused" in second.stderr and "building" not in second.stderr
    assert len(http.served.requests) == 1


def test_patch_change_rebuilds_dependents_only_when_outputs_change(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    lib_and_app(project, http, patch_for("notes.txt", "notes", "more notes"))
    project.build(artifacts=tmp_path / "art")

    # A patch that does not change lib's output bytes: lib rebuilds, app is reused.
    project.file("recipes/files/lib.patch", patch_for("notes.txt", "notes", "other notes"))
    result = project.build(artifacts=tmp_path / "art")
    assert result.report["built"] == ["lib"]
    assert result.report["reused"] == ["app"]

    # A patch that changes lib's output: both rebuild.
    project.file("recipes/files/lib.patch", patch_for("data.txt", "data", "patched data"))
    result = project.build(artifacts=tmp_path / "art")
    assert result.report["built"] == ["lib", "app"]
    assert (tmp_path / "art" / "app.txt").read_text() == "patched data\n"

    explained = project.explain("lib")
    assert "unchanged since the last build" in explained.stdout


def test_explain_names_the_changed_input(project: Project, http: HTTPFiles, tmp_path: Path) -> None:
    lib_and_app(project, http, patch_for("notes.txt", "notes", "more notes"))
    project.build(artifacts=tmp_path / "art")
    project.file("recipes/files/lib.patch", patch_for("notes.txt", "notes", "changed"))
    explained = project.explain("lib")
    assert "changed since the last build" in explained.stdout
    assert "files.patches/files/lib.patch" in explained.stdout


def test_failed_step_prints_log_tail_and_stores_nothing(project: Project, tmp_path: Path) -> None:
    project.recipe("bad", script="set +x; for i in $(seq 100); do echo line$i; done; exit 7")
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc == 2
    assert "line100" in result.stderr and "line61" in result.stderr
    assert "line60\n" not in result.stderr
    assert "bad: build failed with exit status 7 (log: " in result.stderr
    assert not list((project.cache / "ac").rglob("*.json"))
    assert not list((project.cache / "tmp").iterdir())


def test_a_long_steps_work_directory_is_gone_when_the_build_ends(
    project: Project, tmp_path: Path
) -> None:
    """A work directory used for a second or more is removed while the build goes on,
    and never outlives the command, whether its step succeeded or failed."""
    fill = "mkdir many && (cd many && seq 1 20000 | xargs touch) && sleep 1.1"
    project.recipe("slow", script=f'{fill}; mkdir -p "$OUT"; echo x > "$OUT/slow.txt"')
    project.recipe("fails", depends=["slow"], script=f"{fill}; exit 3")
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc == 2 and "fails: build failed with exit status 3" in result.stderr
    assert list((project.cache / "ac").rglob("*.json"))  # slow's result
    assert not list((project.cache / "tmp").iterdir())


def test_undeclared_output_is_an_error(project: Project, tmp_path: Path) -> None:
    project.recipe("x", script="true", outputs=["missing.bin"])
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc == 2
    assert "declared output 'missing.bin' was not produced" in result.stderr


def test_step_environment(project: Project, tmp_path: Path) -> None:
    project.recipe(
        "env",
        script='mkdir -p "$OUT"; umask > "$OUT/env.txt"; '
        'echo "$SOURCE_DATE_EPOCH $TZ $LC_ALL" >> "$OUT/env.txt"; '
        'echo "${SECRET_TOKEN:-unset}" >> "$OUT/env.txt"',
        outputs=[{"path": "env.txt", "publish": True}],
    )
    project.build(artifacts=tmp_path / "art", env={"SECRET_TOKEN": "leak", "TZ": "Asia/Tokyo"})
    assert (tmp_path / "art" / "env.txt").read_text().splitlines() == [
        "0022",
        "1700000000 UTC C.UTF-8",
        "unset",
    ]


def run_umask(args: list[str], cwd: Path, umask: str, tz: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(SRC), TZ=tz)
    cmd = f'umask {umask} && exec "$0" -m jailbake.cli "$@"'
    subprocess.run(
        ["bash", "-c", cmd, sys.executable, *args],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
    )


def test_two_checkouts_build_identical_bytes(tmp_path: Path) -> None:
    outs = []
    for i, (umask, tz) in enumerate([("022", "UTC"), ("077", "America/New_York")]):
        checkout = copy_checkout(tmp_path / f"checkout{i}" / "jailbake")
        art = tmp_path / f"art{i}"
        run_umask(
            [
                "build",
                "examples/hello/hello.yml",
                "--executor",
                "host",
                "--cache-dir",
                str(tmp_path / f"cache{i}"),
                "--artifacts-dir",
                str(art),
            ],
            checkout,
            umask,
            tz,
        )
        outs.append(art)
    names = artifact_names(outs[0])
    assert names == [
        "hello",
        "hello-rootfs.cpio.gz",
        "hello-rootfs.tar",
        "hello-sdcard.img",
        "hello-sdcard.img.bmap",
        "hello-sdcard.img.xz",
        "hello-sdcard.img.zst",
        "manifest.json",
        "sbom.spdx.json",
    ]
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    hello = subprocess.run([str(outs[0] / "hello")], capture_output=True, text=True, check=True)
    assert hello.stdout == "Hello from jailbake\n"


def test_kill_9_leaves_nothing_complete_and_the_next_build_resumes(
    project: Project, tmp_path: Path, visible_dir: Path
) -> None:
    # Host steps see the host read-only, /tmp empty, and write only their work directory.
    gate = visible_dir / "slow"
    gate.touch()
    project.recipe("first")
    project.recipe(
        "second",
        depends=["first"],
        script=f'touch "$WORKDIR/started"; if [ -e {gate} ]; then sleep 120; fi; '
        'mkdir -p "$OUT"; echo done > "$OUT/second.txt"',
    )
    proc = project.start(
        "--executor",
        "host",
        "--artifacts-dir",
        str(tmp_path / "art"),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not list((project.cache / "tmp").glob("*-second-*/started")):
            assert time.monotonic() < deadline, "the slow step never started"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group may be gone with it
            os.killpg(proc.pid, signal.SIGKILL)
    results = [json.loads(p.read_text())["recipe"] for p in (project.cache / "ac").rglob("*.json")]
    assert results == ["first"]
    assert not (tmp_path / "art").exists()
    gate.unlink()
    result = project.build(artifacts=tmp_path / "art")
    assert result.report["reused"] == ["first"]
    assert result.report["built"] == ["second"]
    # The killed build's scratch space is gone once a later build has started.
    assert not list((project.cache / "tmp").iterdir())


def test_two_concurrent_builds_build_each_recipe_once(project: Project, tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        project.recipe(name, script=f'sleep 1; mkdir -p "$OUT"; echo {name} > "$OUT/{name}.txt"')
    project.recipe("top", depends=["a", "b", "c"])
    procs = [
        project.start(
            "-j",
            "2",
            "--executor",
            "host",
            "--json",
            "--artifacts-dir",
            str(tmp_path / f"art{i}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    built = sorted(reports[0]["built"] + reports[1]["built"])
    assert built == ["a", "b", "c", "top"]
    for report in reports:
        assert sorted(report["built"] + report["reused"]) == ["a", "b", "c", "top"]


def test_parallel_jobs_overlap(project: Project, tmp_path: Path) -> None:
    # Each step notes when it ran; with -j 2 the two runs overlap.
    for me in ("a", "b"):
        project.recipe(
            me,
            script='mkdir -p "$OUT"; start=$(date +%s.%N); sleep 1.5; '
            f'echo "$start $(date +%s.%N)" > "$OUT/{me}.txt"',
            outputs=[{"path": f"{me}.txt", "publish": True}],
        )
    result = project.build("-j", "2", artifacts=tmp_path / "art")
    assert sorted(result.report["built"]) == ["a", "b"]
    spans = [
        [float(t) for t in (tmp_path / "art" / f"{me}.txt").read_text().split()] for me in "ab"
    ]
    assert max(s[0] for s in spans) < min(s[1] for s in spans), spans


@pytest.mark.parametrize("command", ["build", "list"])
def test_build_py_wrapper_speaks_the_same_cli(command: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "build.py"), command, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "--cache-dir" in result.stdout


def test_output_behind_a_symlink_is_refused(project: Project, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host file")
    project.recipe(
        "sneaky", script=f'mkdir -p "$OUT"; ln -s {outside} "$OUT/a"', outputs=["a/secret"]
    )
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc == 2
    assert "declared output: 'a' is a symbolic link" in result.stderr
    assert (outside / "secret").read_text() == "host file"


def test_same_artifact_name_twice_fails_before_any_work(project: Project, tmp_path: Path) -> None:
    project.recipe("one", outputs=[{"path": "one.txt", "publish": "same"}])
    project.recipe("two", outputs=[{"path": "two.txt", "publish": "same"}])
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc == 2
    assert "artifact 'same' is also published by one" in result.stderr
    assert "building" not in result.stderr


@pytest.mark.parametrize("change", ["filename", "patch dest", "exec bit"])
def test_every_input_that_shapes_the_sandbox_is_in_the_key(
    project: Project, http: HTTPFiles, change: str
) -> None:
    data = b"payload"
    url = http.add("data.bin", data)
    project.file("recipes/files/p.patch", patch_for("x.txt", "x", "y"))
    tool = project.file("recipes/files/tool.sh", "#!/bin/sh\n")

    def write(filename: str, dest: str) -> None:
        project.recipe(
            "r",
            sources=[
                {"url": url, "sha256": sha256(data), "filename": filename},
                {"file": "files/tool.sh"},
            ],
            patches=[{"path": "files/p.patch", "dest": dest}],
        )

    write("data.bin", "one")
    before = keys_of(project)["r"]
    if change == "filename":
        write("renamed.bin", "one")
    elif change == "patch dest":
        write("data.bin", "two")
    else:
        tool.chmod(0o755)
    assert keys_of(project)["r"] != before


def test_manifest_lists_recipes_keys_pins_and_artifacts(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    lib_and_app(project, http, patch_for("notes.txt", "notes", "more notes"))
    report = project.build(artifacts=tmp_path / "art").report
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert [r["name"] for r in manifest["recipes"]] == ["lib", "app"]
    assert {r["name"]: r["key"] for r in manifest["recipes"]} == keys_of(project)
    lib = manifest["recipes"][0]
    assert lib["sources"][0]["url"].endswith("/lib-1.0.tar.gz")
    assert len(lib["sources"][0]["sha256"]) == 64
    listed = {a["path"]: a["sha256"] for a in report["artifacts"]}
    assert manifest["artifacts"] == [
        {"path": "app.txt", "sha256": listed["app.txt"], "recipe": "app"}
    ]
    assert listed["manifest.json"] == sha256((tmp_path / "art" / "manifest.json").read_bytes())
    assert manifest["layers"] == ["layer.yml"]


def test_unchanged_artifacts_are_not_copied_again(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    lib_and_app(project, http, patch_for("notes.txt", "notes", "more notes"))
    art = tmp_path / "art"
    project.build(artifacts=art)
    before = (art / "app.txt").stat()
    project.build(artifacts=art)
    after = (art / "app.txt").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # A file changed by hand is put back.
    (art / "app.txt").write_text("edited\n")
    result = project.build(artifacts=art)
    assert result.report["built"] == []
    assert (art / "app.txt").read_text() == "data\n"
    assert sorted(p.name for p in art.iterdir()) == [
        "app.txt",
        "build-report.html",
        "build-trace.json",
        "manifest.json",
        "sbom.spdx.json",
    ]


def test_special_files_in_outputs_are_refused(project: Project, tmp_path: Path) -> None:
    project.recipe("fifo", script='mkdir -p "$OUT"; mkfifo "$OUT/pipe"', outputs=["pipe"])
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc == 2
    assert "fifo: output pipe: not a file, directory or symbolic link" in result.stderr
    assert not list((project.cache / "trees").iterdir())
    assert not list((project.cache / "ac").rglob("*.json"))


def test_layer_artifacts_are_checked_after_the_build(project: Project, tmp_path: Path) -> None:
    for name in ("a", "b"):
        project.recipe(name, outputs=[{"path": f"{name}.txt", "publish": True}])

    def layer(artifacts: dict[str, str]) -> None:
        project.layer(
            "layer.yml",
            {
                "header": {"version": 14},
                "repos": {"this": {"layers": {"recipes": None}}},
                "target": ["a", "b"],
                "artifacts": artifacts,
            },
        )

    layer({"a": "a.txt", "b": "b.img"})
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc == 2
    assert "layer.yml: artifacts.b: expected 'b.img' among the published artifacts" in (
        result.stderr
    )
    # Building one target checks the entries of the recipes built, not the others.
    assert project.build("--target", "a", artifacts=tmp_path / "art").rc == 0
    layer({"a": "a.img", "b": "b.txt"})
    result = project.build("--target", "a", artifacts=tmp_path / "art", check=False)
    assert result.rc == 2 and "artifacts.a: expected 'a.img'" in result.stderr


def test_a_recipe_without_builder_never_runs_on_the_host_unasked(
    project: Project, tmp_path: Path
) -> None:
    marker = tmp_path / "ran-on-host"
    path = project.recipe("a", script=f'touch {marker}; mkdir -p "$OUT"; echo a > "$OUT/a.txt"')
    result = project.build(executor="docker", artifacts=tmp_path / "art", check=False)
    assert result.rc == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"jailbake: error: {path}:")
    assert ": builder: missing" in result.stderr and "'builder: host'" in result.stderr
    assert not marker.exists()
    # Said explicitly, it runs here, without a container engine.
    project.recipe("a", builder="host", script='mkdir -p "$OUT"; echo a > "$OUT/a.txt"')
    built = project.build(executor="docker", artifacts=tmp_path / "art")
    assert built.report["built"] == ["a"]


def test_host_steps_are_confined_or_say_they_are_not(project: Project, tmp_path: Path) -> None:
    if not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed (Debian: bubblewrap)")
    host_file = tmp_path / "host-file"
    host_file.write_text("x")
    # Where service sockets live (an engine's, a session bus): a socket on a read-only
    # mount would still connect.
    runtime = Path(tempfile.mkdtemp(prefix="jailbake-test-", dir="/run"))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(runtime / "service.sock"))
    project.recipe(
        "probe",
        script='mkdir -p "$OUT"\n'
        "{\n"
        "  echo net=$(awk -F: 'NR > 2 {print $1}' /proc/net/dev | tr -d ' ')\n"
        '  touch /etc/jailbake-probe 2>/dev/null && echo "etc=writable" || echo "etc=read-only"\n'
        f'  [ -e {host_file} ] && echo "tmp=shared" || echo "tmp=private"\n'
        f'  [ -e {runtime}/service.sock ] && echo "run=shared" || echo "run=hidden"\n'
        '} > "$OUT/probe.txt"',
        outputs=[{"path": "probe.txt", "publish": True}],
    )
    try:
        confined = project.build(artifacts=tmp_path / "art")
    finally:
        sock.close()
        shutil.rmtree(runtime)
    probe = (tmp_path / "art" / "probe.txt").read_text().split()
    assert probe == ["net=lo", "etc=read-only", "tmp=private", "run=hidden"], probe
    assert "UNCONFINED" not in confined.stderr
    assert not Path("/etc/jailbake-probe").exists()

    # Without bubblewrap on PATH the step still runs, and the build says how.
    project.recipe("probe", script='mkdir -p "$OUT"; echo free > "$OUT/probe.txt"')
    free = project.build(artifacts=tmp_path / "art2", env={"PATH": path_without("bwrap", tmp_path)})
    assert "host steps run UNCONFINED" in free.stderr
    assert "bubblewrap (bwrap) is not installed" in free.stderr


def test_the_bubblewrap_probe_started_ahead_is_the_one_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build starts the probe before its first host step; the step takes that probe's
    answer instead of running bwrap again."""
    bin_dir = Path(path_without("bwrap", tmp_path))
    runs = tmp_path / "bwrap-runs"
    fake = bin_dir / "bwrap"
    fake.write_text(f"#!/bin/sh\necho run >> {runs}\necho 'bwrap: not here' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    host = HostExecutor()
    host.start_probe()
    for _ in range(100):  # the probe finishes on its own, whether or not it is asked
        if runs.exists():
            break
        time.sleep(0.05)
    assert host.confined is False and host.confined is False
    assert runs.read_text() == "run\n"


def test_a_bubblewrap_that_cannot_confine_here_is_said_once(
    project: Project, tmp_path: Path
) -> None:
    """bwrap is installed, but this machine does not let it make namespaces: the
    build names its complaint and runs the host steps unconfined."""
    bin_dir = Path(path_without("bwrap", tmp_path))
    fake = bin_dir / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    for name in ("a", "b"):
        project.recipe(name, script=f'mkdir -p "$OUT"; echo {name} > "$OUT/{name}.txt"')
    result = project.build(env={"PATH": str(bin_dir)})
    assert result.report["built"] == ["a", "b"]
    said = "bwrap does not work here: bwrap: No permissions to create new namespace"
    assert result.stderr.count(said) == 1, result.stderr
