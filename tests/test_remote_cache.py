"""--remote-cache against nginx with WebDAV on 127.0.0.1, as a team would share one:
a second machine executes nothing, poisoned entries are refused, a read-only client
uploads nothing, and a server that goes away mid-build costs nothing but time."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from conftest import Project, Result, WebDAV, artifact_names, copy_checkout, jailbake

HELLO = ["hello", "hello-motd", "hello-rootfs", "hello-boot", "hello-initramfs", "hello-sdcard"]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    return copy_checkout(tmp_path / "jailbake")


def hello(checkout: Path, tmp_path: Path, name: str, *extra: str) -> Result:
    return jailbake(
        "build", "examples/hello/hello.yml", "--executor", "host", "--json",
        "--cache-dir", str(tmp_path / f"cache-{name}"),
        "--artifacts-dir", str(tmp_path / f"art-{name}"), *extra,
        cwd=checkout,
    )  # fmt: skip


def report(result: Result) -> dict[str, list[str]]:
    assert result.rc == 0, result.stderr
    data: dict[str, list[str]] = json.loads(result.stdout.splitlines()[-1])
    return data


def same_artifacts(a: Path, b: Path) -> None:
    names = artifact_names(a)
    assert names == artifact_names(b)
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_a_second_machine_executes_nothing(checkout: Path, tmp_path: Path, webdav: WebDAV) -> None:
    url = f"{webdav.url}/cache"
    first = report(hello(checkout, tmp_path, "a", "--remote-cache", url))
    assert sorted(first["built"]) == sorted(HELLO)
    # Blobs first, the record last, for every recipe.
    puts = [path for method, path, _ in webdav.requests() if method == "PUT"]
    assert sum(p.startswith("/cache/ac/") for p in puts) == len(HELLO)
    for i, path in enumerate(puts):
        if path.startswith("/cache/cas/"):
            assert any(p.startswith("/cache/ac/") for p in puts[i:]), "a blob after its record"

    second = report(hello(checkout, tmp_path, "b", "--remote-cache", url))
    assert second["built"] == [] and sorted(second["downloaded"]) == sorted(HELLO)
    same_artifacts(tmp_path / "art-a", tmp_path / "art-b")
    # The downloaded results are local now: a third build needs no server.
    webdav.stop()
    third = report(hello(checkout, tmp_path, "b", "--remote-cache", url))
    assert sorted(third["reused"]) == sorted(HELLO)


def test_poisoned_entries_are_refused_and_built_locally(
    checkout: Path, tmp_path: Path, webdav: WebDAV
) -> None:
    url = f"{webdav.url}/cache"
    report(hello(checkout, tmp_path, "a", "--remote-cache", url))
    manifest = json.loads((tmp_path / "art-a" / "manifest.json").read_text())
    keys = {r["name"]: r["key"] for r in manifest["recipes"]}
    cas = webdav.docroot / "cache" / "cas"
    ac = webdav.docroot / "cache" / "ac"
    # A blob replaced: the file of hello-motd's output.
    record = json.loads((ac / keys["hello-motd"]).read_text())
    blob = next(e["sha256"] for e in record["outputs"] if e["type"] == "file")
    (cas / blob).write_bytes(b"poisoned\n")
    # A record rewritten to point at other files: hello-boot's.
    record = json.loads((ac / keys["hello-boot"]).read_text())
    record["output_digest"] = "0" * 64
    (ac / keys["hello-boot"]).write_text(json.dumps(record))

    result = hello(checkout, tmp_path, "b", "--remote-cache", url)
    got = report(result)
    # Every record naming the poisoned blob is refused (hello-motd's file may be in
    # other outputs too); the rest still comes from the server.
    assert {"hello-boot", "hello-motd"} <= set(got["built"])
    assert set(got["built"]) | set(got["downloaded"]) == set(HELLO) and got["downloaded"]
    assert f"cas/{blob}: its content has sha256" in result.stderr
    assert f"ac/{keys['hello-boot']}: its file list does not hash" in result.stderr
    same_artifacts(tmp_path / "art-a", tmp_path / "art-b")


def test_a_readonly_client_uploads_nothing(checkout: Path, tmp_path: Path, webdav: WebDAV) -> None:
    url = f"{webdav.url}/cache"
    got = report(hello(checkout, tmp_path, "a", "--remote-cache", url, "--remote-cache-readonly"))
    assert sorted(got["built"]) == sorted(HELLO)
    methods = {method for method, _, _ in webdav.requests()}
    assert methods == {"GET"}
    assert not (webdav.docroot / "cache").exists()


def test_the_server_going_away_mid_build(project: Project, tmp_path: Path, webdav: WebDAV) -> None:
    """The server stops while the first recipe builds; the build finishes locally and
    says so once."""
    project.recipe(
        "first",
        script='touch "$WORKDIR/started"; sleep 3; mkdir -p "$OUT"; echo 1 > "$OUT/first.txt"',
    )
    project.recipe("second", depends=["first"])
    project.recipe("third", depends=["second"])

    def stop_when_first_starts() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if list((project.cache / "tmp").glob("*-first-*/started")):
                webdav.stop()
                return
            time.sleep(0.05)

    stopper = threading.Thread(target=stop_when_first_starts)
    stopper.start()
    result = project.build("--remote-cache", f"{webdav.url}/cache", artifacts=tmp_path / "art")
    stopper.join()
    assert sorted(result.report["built"]) == ["first", "second", "third"]
    assert result.stderr.count("unreachable") == 1


@pytest.mark.parametrize(
    "attack", ["through-link", "not-a-record", "no-type", "repeated", "oversize-log", "short-log"]
)
def test_hostile_records_are_refused_without_writing_anything(
    project: Project, tmp_path: Path, webdav: WebDAV, attack: str
) -> None:
    """A server may answer anything: a record whose file list writes through a link it
    declares, or is no record at all, is refused and the recipe built locally."""
    from jailbake.cache.keys import digest_of

    url = f"{webdav.url}/cache"
    project.recipe("one")
    project.build("--remote-cache", url, artifacts=tmp_path / "art")
    (record_path,) = (webdav.docroot / "cache" / "ac").iterdir()
    record = json.loads(record_path.read_text())
    blob = next(e for e in record["outputs"] if e["type"] == "file")
    outside = tmp_path / "outside"
    outside.mkdir()
    outputs: object
    if attack == "through-link":
        outputs = [
            {"path": "a", "type": "symlink", "target": str(outside)},
            {**blob, "path": "a/planted"},
        ]
    elif attack == "not-a-record":
        record_path.write_text("[]")
        outputs = None
    elif attack in ("oversize-log", "short-log"):
        # The log's blob is not what the record says: more bytes than declared, or fewer.
        log_blob = webdav.docroot / "cache" / "cas" / record["log"]["hash"]
        log_blob.write_bytes(log_blob.read_bytes() * 2000 if attack == "oversize-log" else b"")
        record_path.write_text(json.dumps(record))
        outputs = None
    elif attack == "no-type":
        outputs = [{"path": "x"}]
    else:
        outputs = [{"path": "d", "type": "dir"}, {"path": "d", "type": "dir"}]
    if outputs is not None:
        record["outputs"] = outputs
        record["output_digest"] = digest_of(outputs)
        record_path.write_text(json.dumps(record))

    fresh = Project(project.root, tmp_path / "fresh-cache")
    result = fresh.build("--remote-cache", url, artifacts=tmp_path / "art2")
    assert result.report["built"] == ["one"]
    assert "refused" in result.stderr
    assert list(outside.iterdir()) == []
    assert not list((tmp_path / "fresh-cache" / "tmp").iterdir())
