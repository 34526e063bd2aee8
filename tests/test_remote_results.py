"""A remote executor's answers are checked as a remote cache's are: a hostile or
broken service (tests/reapi_fake.py with its knobs) ends the build with one error line,
stores nothing, writes nothing outside the step's output, and never hangs it."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Project
from jailbake.executors.remote._protos.build.bazel.remote.execution.v2 import (
    remote_execution_pb2 as pb,
)
from reapi_fake import FakeREAPI


@pytest.fixture
def fake() -> Iterator[FakeREAPI]:
    service = FakeREAPI()
    yield service
    service.stop()


def one_step(project: Project, script: str = "") -> None:
    project.with_builders()
    project.recipe(
        "app",
        builder="debian-build",
        script=script or 'mkdir -p "$OUT/d"; echo hello > "$OUT/d/app.txt"',
        outputs=["d"],
    )


def build(project: Project, fake: FakeREAPI, tmp_path: Path, *env: str) -> tuple[int, str]:
    layer = project.root / "layer.yml"
    if env:
        layer.write_text(layer.read_text().replace("env:\n", "env:\n" + "".join(env)))
    result = project.build("--remote-executor", fake.url, executor="remote",
                           artifacts=tmp_path / "art", check=False)  # fmt: skip
    return result.rc, result.stderr


def refused(rc: int, stderr: str, project: Project, expected: str) -> None:
    """One error line saying expected, no line of gRPC's own, nothing stored."""
    assert rc != 0, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("jailbake: error")]
    assert len(errors) == 1, stderr
    assert re.search(expected, errors[0]), errors[0]
    assert stderr.count(errors[0].removeprefix("jailbake: error: ")) == 1, stderr
    assert not [ln for ln in stderr.splitlines() if re.match(r"[IWEF]\d{4} ", ln)], stderr
    assert not list(project.cache.glob("ac/*/*.json"))


def _tree_of(fake: FakeREAPI, response: pb.ExecuteResponse) -> pb.Tree:
    (out,) = response.result.output_directories
    return pb.Tree.FromString(fake.blobs[out.tree_digest.hash])


def _set_tree(fake: FakeREAPI, response: pb.ExecuteResponse, tree: pb.Tree) -> None:
    (out,) = response.result.output_directories
    out.tree_digest.CopyFrom(fake.put(tree.SerializeToString(deterministic=True)))


def link_out(target: str) -> Callable[[FakeREAPI, pb.ExecuteResponse], None]:
    def tamper(fake: FakeREAPI, response: pb.ExecuteResponse) -> None:
        tree = _tree_of(fake, response)
        tree.root.symlinks.add(name="escape", target=target)
        _set_tree(fake, response, tree)

    return tamper


def nested(levels: int, names: tuple[str, ...]) -> Callable[[FakeREAPI, pb.ExecuteResponse], None]:
    """levels Directory messages, each naming the next under every one of names."""

    def tamper(fake: FakeREAPI, response: pb.ExecuteResponse) -> None:
        children = []
        child = pb.Directory()
        for _ in range(levels):
            children.append(child)
            digest = fake.put(child.SerializeToString(deterministic=True))
            child = pb.Directory(
                directories=[pb.DirectoryNode(name=n, digest=digest) for n in names]
            )
        _set_tree(fake, response, pb.Tree(root=child, children=children))

    return tamper


def deep(levels: int) -> Callable[[FakeREAPI, pb.ExecuteResponse], None]:
    """A chain of directories levels deep (each named once: no cycle is possible when
    children are keyed by the digests jailbake computes, so depth is what is bounded)."""
    return nested(levels, ("d",))


def wide(levels: int) -> Callable[[FakeREAPI, pb.ExecuteResponse], None]:
    """Each directory names the next twice: 2**levels directories from levels messages."""
    return nested(levels, ("a", "b"))


def lie_about_size(delta: int) -> Callable[[FakeREAPI, pb.ExecuteResponse], None]:
    def tamper(fake: FakeREAPI, response: pb.ExecuteResponse) -> None:
        tree = _tree_of(fake, response)
        (node,) = tree.children[0].files
        node.digest.size_bytes += delta
        tree.root.directories[0].digest.CopyFrom(
            fake.put(tree.children[0].SerializeToString(deterministic=True))
        )
        _set_tree(fake, response, tree)

    return tamper


HOSTILE = {
    "link-up": (link_out("../../../etc/passwd"), "points outside the output"),
    "link-absolute": (link_out("/etc/passwd"), "points outside the output"),
    "deep": (deep(400), "deeper than 256 directories"),
    "smaller-than-said": (lie_about_size(-3), "came back as .* or more"),
    "larger-than-said": (lie_about_size(+3), "came back as"),
    "huge-tree": (
        lambda fake, r: r.result.output_directories[0].tree_digest.__setattr__(
            "size_bytes", 1 << 40
        ),
        "expected at most",
    ),
}


@pytest.mark.parametrize("attack", HOSTILE)
def test_a_hostile_result_is_refused(
    project: Project, fake: FakeREAPI, tmp_path: Path, attack: str
) -> None:
    tamper, expected = HOSTILE[attack]
    fake.knobs.tamper = tamper
    if "said" in attack:
        fake.knobs.batch_limit = 16  # every blob over ByteStream, which serves all it has
    one_step(project)
    rc, stderr = build(project, fake, tmp_path)
    refused(rc, stderr, project, expected)
    assert not (tmp_path / "art").exists()


def test_a_tree_naming_one_directory_from_many_places_is_bounded(
    fake: FakeREAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """25 messages would make 2**25 directories: the entries written are counted (the
    bound made small here: the real one is millions)."""
    from jailbake.executors.remote import reapi
    from jailbake.executors.remote import tree as remotetree

    response = pb.ExecuteResponse()
    response.result.output_directories.add(path="out")
    wide(25)(fake, response)
    monkeypatch.setattr(remotetree, "MAX_ENTRIES", 1000)
    client = reapi.Client(fake.url)
    out = tmp_path / "out"
    with pytest.raises(reapi.RemoteExecutionError, match="more than 1000 entries"):
        remotetree.write_tree(client, response.result.output_directories[0].tree_digest, out)
    assert sum(1 for _ in out.rglob("*")) <= 1000
    client.close()


def test_an_operation_for_another_action_is_refused(
    project: Project, fake: FakeREAPI, tmp_path: Path
) -> None:
    fake.knobs.foreign_action = True
    one_step(project)
    rc, stderr = build(project, fake, tmp_path)
    refused(rc, stderr, project, r"is for action [0-9a-f]{64}/\d+, not ")


def test_a_step_that_never_ends_is_stopped_at_its_deadline(
    project: Project, fake: FakeREAPI, tmp_path: Path
) -> None:
    fake.knobs.run_forever = True
    one_step(project)
    started = time.monotonic()
    # 2 s to run: jailbake stops waiting 2.2 + 5 s after the worker took it
    rc, stderr = build(
        project, fake, tmp_path,
        "  JAILBAKE_REMOTE_TIMEOUT: '2'\n", "  JAILBAKE_REMOTE_QUEUE_TIMEOUT: '1'\n",
    )  # fmt: skip
    refused(rc, stderr, project, "did not finish in")
    assert time.monotonic() - started < 120
    assert fake.seen.cancelled


def test_without_a_timeout_the_service_decides_and_jailbake_waits_6_hours(
    project: Project, fake: FakeREAPI, tmp_path: Path
) -> None:
    """Services cap an action's timeout (BuildGrid refuses one above its maximum): none
    is sent unless the layer sets one, and jailbake's own wait is bounded anyway."""
    from jailbake.executors.remote.executor import DEFAULT_WAIT, RemoteSettings

    one_step(project)
    rc, stderr = build(project, fake, tmp_path)
    assert rc == 0, stderr
    assert not fake.seen.actions[0].HasField("timeout")
    assert RemoteSettings(url="grpc://h:1").wait_limit == DEFAULT_WAIT
    assert RemoteSettings(url="grpc://h:1", timeout=100).wait_limit == 115


def test_a_large_output_log_is_left_on_the_executor(
    project: Project, fake: FakeREAPI, tmp_path: Path
) -> None:
    """The step's stdout over the limit is not fetched: the log says where it is."""
    from jailbake.executors.remote.executor import LOG_LIMIT

    def big_stdout(fake: FakeREAPI, response: pb.ExecuteResponse) -> None:
        response.result.stdout_digest.CopyFrom(
            pb.Digest(hash=response.result.stdout_digest.hash, size_bytes=LOG_LIMIT + 1)
        )

    fake.knobs.tamper = big_stdout
    one_step(project)
    rc, stderr = build(project, fake, tmp_path)
    assert rc == 0, stderr
    (log,) = (project.cache / "logs").glob("app-*.log")
    assert f"{LOG_LIMIT + 1} bytes of output left on the executor" in log.read_text()


def test_a_result_from_the_executors_cache_says_so(
    project: Project, fake: FakeREAPI, tmp_path: Path
) -> None:
    fake.knobs.tamper = lambda fake, response: setattr(response, "cached_result", True)
    one_step(project)
    rc, stderr = build(project, fake, tmp_path)
    assert rc == 0, stderr
    assert re.search(r"app: from the remote executor's cache in \d+\.\ds", stderr), stderr
    assert not fake.seen.skipped_cache
    assert project.build("--force", "app", "--remote-executor", fake.url, executor="remote")
    assert fake.seen.skipped_cache == [True]


def test_the_service_going_away_is_one_line(
    project: Project, fake: FakeREAPI, tmp_path: Path
) -> None:
    fake.knobs.run_forever = True
    one_step(project)

    def stop_when_running() -> None:
        deadline = time.monotonic() + 60
        while not fake.done and time.monotonic() < deadline:
            time.sleep(0.05)
        fake.stop()

    import threading

    stopper = threading.Thread(target=stop_when_running)
    stopper.start()
    rc, stderr = build(project, fake, tmp_path)
    stopper.join()
    refused(rc, stderr, project, "remote executor")
