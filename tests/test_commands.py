"""The commands a user lives in: keep-going, force, clean, log, and the small things of
the command line (pipes, --json, unknown words, abbreviations, help)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import SRC, Project

FAIL = 'echo "about to fail"; exit 3'


def test_keep_going_builds_everything_a_failure_does_not_block(
    project: Project, tmp_path: Path
) -> None:
    project.recipe("bad", script=FAIL)
    project.recipe("after-bad", depends=["bad"])
    project.recipe("good")
    project.recipe("worse", script=FAIL)
    result = project.build(
        "-k", "-j", "1", "--target", "bad", "--target", "after-bad", "--target", "good",
        "--target", "worse", artifacts=tmp_path / "art", check=False,
    )  # fmt: skip
    assert result.rc == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("jailbake: error: 2 failed: bad (log: ")
    assert "worse (log: " in last and "not built because of them: after-bad" in last
    assert re.search(r"\[jailbake\] bad: FAILED after \d+\.\ds \(log: ", result.stderr)
    assert json.loads(result.stdout.strip().splitlines()[-1])["ok"] is False
    again = project.build("--target", "good", artifacts=tmp_path / "art")
    assert again.report["reused"] == ["good"]


def test_targets_start_in_the_order_given(project: Project, tmp_path: Path) -> None:
    project.recipe("bad", script=FAIL)
    project.recipe("good")
    result = project.build(
        "-j", "1", "--target", "good", "--target", "bad", artifacts=tmp_path / "art", check=False
    )
    assert result.rc == 2
    assert "[jailbake] good: built in" in result.stderr
    assert result.stderr.index("good: building") < result.stderr.index("bad: building")


def test_force_builds_again_and_compares(project: Project, tmp_path: Path) -> None:
    project.recipe("same")
    project.recipe("clock", script='mkdir -p "$OUT"; date +%s%N > "$OUT/clock.txt"')
    project.build(artifacts=tmp_path / "art")
    result = project.build("--force", "same", "--force", "clock", artifacts=tmp_path / "art")
    assert sorted(result.report["built"]) == ["clock", "same"]
    assert "same: built in" in result.stderr
    assert "output identical to the cached one" in result.stderr
    assert (
        "clock: built in" in result.stderr and "output DIFFERS from the cached one" in result.stderr
    )
    unknown = project.build("--force", "nope", artifacts=tmp_path / "art", check=False)
    assert unknown.rc == 2 and "--force: nope is not a recipe" in unknown.stderr


def test_every_recipe_line_says_what_happened_and_how_long(
    project: Project, tmp_path: Path
) -> None:
    project.recipe("a")
    project.build(artifacts=tmp_path / "art")
    again = project.build(artifacts=tmp_path / "art")
    assert "[jailbake] a: reused in 0.0s (" in again.stderr
    assert "[jailbake] 1 recipe: 0 built, 1 reused, 1 artifact in" in again.stderr


def test_clean_removes_one_recipes_result(project: Project, tmp_path: Path) -> None:
    project.recipe("base")
    project.recipe("top", depends=["base"])
    project.build(artifacts=tmp_path / "art")
    cleaned = project.run("clean", "layer.yml", "top", "--executor", "host",
                          "--cache-dir", str(project.cache))  # fmt: skip
    assert cleaned.rc == 0, cleaned.stderr
    assert "removed 1 result, 1 tree" in cleaned.stderr
    rebuilt = project.build(artifacts=tmp_path / "art")
    assert rebuilt.report["built"] == ["top"] and rebuilt.report["reused"] == ["base"]
    wrong = project.run("clean", "layer.yml", "nope", "--cache-dir", str(project.cache))
    assert wrong.rc == 2 and "unknown recipe 'nope'; the layers have: base, top" in wrong.stderr


def test_clean_all_keeps_only_what_the_graph_uses(project: Project, tmp_path: Path) -> None:
    project.recipe("a", script='mkdir -p "$OUT"; head -c 300000 /dev/zero > "$OUT/a.txt"')
    project.build(artifacts=tmp_path / "art")
    project.recipe("a", script='mkdir -p "$OUT"; echo small > "$OUT/a.txt"')
    project.build(artifacts=tmp_path / "art")
    assert len(list((project.cache / "trees").iterdir())) == 2
    gc = project.run("clean", "--all", "layer.yml", "--cache-dir", str(project.cache))
    assert gc.rc == 0, gc.stderr
    assert "removed 1 result, 1 tree" in gc.stderr and "KiB freed" in gc.stderr
    assert len(list((project.cache / "trees").iterdir())) == 1
    again = project.build(artifacts=tmp_path / "art")
    assert again.report["built"] == []


def test_log_prints_the_last_build_log(project: Project, tmp_path: Path) -> None:
    project.recipe(
        "talk", script='echo "hello from the step"; mkdir -p "$OUT"; touch "$OUT/talk.txt"'
    )
    project.build(artifacts=tmp_path / "art")
    shown = project.run("log", "layer.yml", "talk", "--cache-dir", str(project.cache))
    assert shown.rc == 0 and "hello from the step" in shown.stdout
    path = project.run("log", "layer.yml", "talk", "--path", "--cache-dir", str(project.cache))
    assert Path(path.stdout.strip()).read_text() == shown.stdout
    never = project.run("log", "layer.yml", "talk", "--cache-dir", str(tmp_path / "empty"))
    assert never.rc == 2 and "has no build log" in never.stderr


def test_list_into_a_closed_pipe_is_quiet(project: Project) -> None:
    for i in range(200):
        project.recipe(f"r{i:03}")
    cp = subprocess.run(
        f"{sys.executable} -m jailbake.cli list layer.yml --executor host "
        f"--cache-dir {project.cache} | head -1",
        shell=True,
        cwd=project.root,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert cp.stdout.startswith("r000")
    assert cp.stderr == ""


def test_json_ends_with_a_json_line_on_failure(project: Project, tmp_path: Path) -> None:
    project.recipe("bad", script=FAIL)
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc == 2
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] is False and "bad: build failed with exit status 3" in report["error"]
    project.recipe("bad")
    assert project.build(artifacts=tmp_path / "art").report["ok"] is True


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["buidl", "layer.yml"], "unknown command 'buidl'; did you mean 'build'?"),
        (["list", "layer.yml", "--exec", "host"], "unrecognized arguments: --exec"),
        (["frobnicate"], "unknown command 'frobnicate'"),
    ],
)
def test_mistyped_words_are_refused(project: Project, argv: list[str], expect: str) -> None:
    result = project.run(*argv)
    assert result.rc == 2
    assert expect in result.stderr


def test_verbose_is_accepted_after_the_command(project: Project) -> None:
    project.recipe("a")
    result = project.run("list", "layer.yml", "-v", "--executor", "host")
    assert result.rc == 0 and "[jailbake]" in result.stderr  # debug lines


def test_list_and_explain_use_the_executor_of_the_last_build(
    project: Project, tmp_path: Path
) -> None:
    project.recipe("a")
    project.build(artifacts=tmp_path / "art")  # --executor host
    explained = project.run("explain", "layer.yml", "a", "--cache-dir", str(project.cache))
    assert explained.rc == 0, explained.stderr
    assert "unchanged since the last build" in explained.stdout
    listed = project.run("list", "layer.yml", "--cache-dir", str(project.cache))
    assert " cached " in listed.stdout
    fresh = project.run("list", "layer.yml", "--cache-dir", str(tmp_path / "other"))
    assert "keys for the docker executor" in fresh.stderr


def test_every_option_has_help() -> None:
    from jailbake.cli.grammar import parser

    def actions(p: Any) -> list[Any]:
        found = []
        for action in p._actions:
            if action.choices and isinstance(action.choices, dict):
                for sub in action.choices.values():
                    found += actions(sub)
            elif action.dest not in ("help", "command"):
                found.append((p.prog, action))
        return found

    missing = [f"{prog} {a.dest}" for prog, a in actions(parser()) if not a.help]
    assert missing == []


def test_publish_compares_layer_files_by_path(project: Project, tmp_path: Path) -> None:
    project.recipe("a", outputs=[{"path": "a.txt", "publish": True}])
    (project.root / "other").mkdir()
    project.layer(
        "other/layer.yml",
        {
            "header": {"version": 14},
            "repos": {"this": {"layers": {"recipes": None}}},
            "env": {"SOURCE_DATE_EPOCH": "1700000000"},
        },
    )
    project.build(artifacts=tmp_path / "art")
    result = project.run(
        "publish", "other/layer.yml", "--artifacts-dir", str(tmp_path / "art"),
        "--to", str(tmp_path / "rel"),
    )  # fmt: skip
    assert result.rc == 2
    assert "holds a build of layer.yml, not of other/layer.yml" in result.stderr


def test_publish_does_not_retry_what_a_server_cannot_do(project: Project, tmp_path: Path) -> None:
    puts: list[str] = []

    class NoPut(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_error(404)

        def do_PUT(self) -> None:
            puts.append(self.path)
            self.send_error(501)

    server = ThreadingHTTPServer(("127.0.0.1", 0), NoPut)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        project.recipe("a", outputs=[{"path": "a.txt", "publish": True}])
        project.build(artifacts=tmp_path / "art")
        url = f"http://127.0.0.1:{server.server_address[1]}/rel"
        result = project.run("publish", "--artifacts-dir", str(tmp_path / "art"), "--to", url)
    finally:
        server.shutdown()
    assert result.rc == 2 and "HTTP 501" in result.stderr
    assert len(puts) == 1


def test_keep_going_past_a_recipe_whose_key_cannot_be_computed(
    project: Project, tmp_path: Path
) -> None:
    fifo_dir = project.root / "recipes" / "files" / "fdir"
    fifo_dir.mkdir(parents=True)
    os.mkfifo(fifo_dir / "pipe")
    path = project.recipe("f", sources=[{"file": "files/fdir"}])
    project.recipe("e")
    result = project.build("-k", "--target", "f", "--target", "e", artifacts=tmp_path / "art",
                           check=False)  # fmt: skip
    assert result.rc == 2
    assert "[jailbake] e: built in" in result.stderr
    assert result.stderr.count("f: FAILED") == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"jailbake: error: 1 failed: f ({path}:") and "sources:" in last
    alone = project.build("--target", "f", artifacts=tmp_path / "art", check=False)
    assert alone.rc == 2 and "a layer file cannot be hashed" in alone.stderr


def test_log_shows_the_last_attempt_even_a_failed_one(project: Project, tmp_path: Path) -> None:
    project.recipe("c", script='echo first-run; mkdir -p "$OUT"; touch "$OUT/c.txt"')
    project.build(artifacts=tmp_path / "art")
    project.recipe("c", script="echo second-run-fails; exit 1")
    project.build(artifacts=tmp_path / "art", check=False)
    shown = project.run("log", "layer.yml", "c", "--cache-dir", str(project.cache))
    assert "second-run-fails" in shown.stdout and "first-run" not in shown.stdout


def test_commands_know_recipes_outside_the_layer_target(project: Project, tmp_path: Path) -> None:
    project.layer(
        "layer.yml",
        {
            "header": {"version": 14},
            "repos": {"this": {"layers": {"recipes": None}}},
            "env": {"SOURCE_DATE_EPOCH": "1700000000"},
            "target": ["a"],
        },
    )
    project.recipe("a")
    project.recipe("e", script='echo from-e; mkdir -p "$OUT"; touch "$OUT/e.txt"')
    project.build("--target", "e", artifacts=tmp_path / "art")
    cache = ("--cache-dir", str(project.cache))
    assert "from-e" in project.run("log", "layer.yml", "e", *cache).stdout
    assert project.run("explain", "layer.yml", "e", *cache).rc == 0
    assert project.run("shell", "layer.yml", "e", "-c", "true", *cache).rc == 0
    assert "removed 1 result" in project.run("clean", "layer.yml", "e", *cache).stderr


@pytest.mark.parametrize(
    "argv",
    [["log", "nonexistent", "a"], ["explain", "missing.yml", "a"]],
)
def test_a_missing_layer_file_before_a_recipe_is_one_line(
    project: Project, argv: list[str]
) -> None:
    result = project.run(*argv)
    assert result.rc == 2
    assert result.stderr.strip().splitlines() == [
        f"jailbake: error: {argv[1]}: layer file not found"
    ]


def test_json_line_even_for_bad_arguments(project: Project) -> None:
    result = project.run("build", "layer.yml", "--json", "--jobs", "many")
    assert result.rc == 2
    assert json.loads(result.stdout.strip().splitlines()[-1])["ok"] is False
    result = project.run("bogus", "--json")
    assert result.rc == 2 and json.loads(result.stdout.strip())["ok"] is False


def test_fit_counts_terminal_columns() -> None:
    from jailbake.ui.progress import fit

    assert fit("a\tbcdef", 6) == "a   bc"
    assert fit("漢字漢字", 5) == "漢字"
    assert fit("plain", 10) == "plain"


def test_explain_knows_what_a_failed_build_built_before_it_failed(
    project: Project, tmp_path: Path
) -> None:
    """The last-built keys are kept once per build, failed and interrupted ones too."""
    project.recipe("base")
    project.recipe("top", depends=["base"], script=FAIL)
    assert project.build("-j", "1", artifacts=tmp_path / "art", check=False).rc == 2
    explained = project.explain("base")
    assert explained.rc == 0, explained.stderr
    assert "unchanged since the last build" in explained.stdout


def test_builds_sharing_a_cache_keep_each_others_last_keys(project: Project) -> None:
    """Two commands on one cache each save what they built; neither loses the other's,
    and the later record of a recipe wins, whichever command saves last."""
    from jailbake.cache.history import History
    from jailbake.cache.store import Store

    first, second = History(Store(project.cache)), History(Store(project.cache))
    first.record_last("a", "1" * 64)
    second.record_last("b", "2" * 64)
    first.save_last()
    second.save_last()
    again = History(Store(project.cache))
    assert (again.last_key("a"), again.last_key("b")) == ("1" * 64, "2" * 64)

    # first still believes a is "1": its later reuse of that key must still count.
    second.record_last("a", "3" * 64)
    second.save_last()
    first.record_last("a", "1" * 64)
    first.save_last()
    assert History(Store(project.cache)).last_key("a") == "1" * 64

    # A record made earlier but saved later loses to the other command's later one.
    first.record_last("a", "5" * 64)
    second.record_last("a", "6" * 64)
    second.save_last()
    first.save_last()
    assert History(Store(project.cache)).last_key("a") == "6" * 64


def test_last_keys_are_saved_while_a_long_build_runs(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build killed without a chance to clean up keeps what it recorded up to the last
    periodic save (every LAST_SAVE_NS; here at once)."""
    from jailbake.cache import history
    from jailbake.cache.store import Store

    monkeypatch.setattr(history, "LAST_SAVE_NS", 0)
    running = history.History(Store(project.cache))
    running.record_last("a", "7" * 64)  # and no save_last: the process is killed here
    assert history.History(Store(project.cache)).last_key("a") == "7" * 64


def test_a_damaged_last_keys_file_is_one_warning(project: Project, tmp_path: Path) -> None:
    project.recipe("a")
    project.build(artifacts=tmp_path / "art")
    (project.cache / "last.json").write_text("{not json")
    project.recipe("a", script='mkdir -p "$OUT"; echo again > "$OUT/a.txt"')
    result = project.build(artifacts=tmp_path / "art")
    assert "last.json cannot be read" in result.stderr
    assert "unchanged since the last build" in project.explain("a").stdout


def test_last_keys_of_a_cache_from_before_the_single_file_are_read(project: Project) -> None:
    """A cache that kept one file per recipe under last/ keeps its answers for explain."""
    from jailbake.cache.history import History
    from jailbake.cache.store import Store

    (project.cache / "last").mkdir(parents=True)
    (project.cache / "last" / "a").write_text("4" * 64 + "\n")
    store = History(Store(project.cache))
    assert store.last_key("a") == "4" * 64
    store.record_last("b", "5" * 64)
    store.save_last()
    assert History(Store(project.cache)).last_key("a") == "4" * 64
