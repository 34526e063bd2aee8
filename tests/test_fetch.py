"""Fetching from a real HTTP server on 127.0.0.1, mirrors, git, offline mode."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import HTTPFiles, Project, make_tarball, sha256
from jailbake.cache.store import Store
from jailbake.core.errors import ChecksumError, FetchError
from jailbake.model.recipe import Source, SourceKind
from jailbake.sources.fetch import Fetcher, git_archive_name


def url_source(url: str, data: bytes) -> Source:
    return Source(SourceKind.URL, url, sha256=sha256(data), filename=url.rsplit("/", 1)[-1])


def test_download_is_verified_and_stored(tmp_path: Path, http: HTTPFiles) -> None:
    data = b"payload" * 1000
    src = url_source(http.add("a.bin", data), data)
    store = Store(tmp_path / "cache")
    path = Fetcher(store, progress=False).fetch_url("r", src)
    assert path.read_bytes() == data
    assert path == store.blob_path(sha256(data))
    Fetcher(store, progress=False).fetch_url("r", src)
    assert http.served.requests == ["/a.bin"]  # the second fetch came from the cache


def test_checksum_mismatch_names_everything_and_stores_nothing(
    tmp_path: Path, http: HTTPFiles
) -> None:
    url = http.add("a.bin", b"tampered")
    expected = sha256(b"original")
    src = Source(SourceKind.URL, url, sha256=expected, filename="a.bin")
    store = Store(tmp_path / "cache")
    with pytest.raises(ChecksumError) as exc:
        Fetcher(store, progress=False).fetch_url("myrecipe", src)
    msg = str(exc.value)
    assert "myrecipe" in msg and url in msg and expected in msg and sha256(b"tampered") in msg
    assert not any(p.is_file() for p in (store.root / "cas").rglob("*"))
    assert not any(p.is_file() for p in (store.root / "tmp").rglob("*"))


def test_retries_server_errors(tmp_path: Path, http: HTTPFiles) -> None:
    data = b"x" * 100
    src = url_source(http.add("a.bin", data), data)
    http.served.fail_next["/a.bin"] = 503
    path = Fetcher(Store(tmp_path / "c"), progress=False).fetch_url("r", src)
    assert path.read_bytes() == data
    assert http.served.requests == ["/a.bin", "/a.bin"]


def test_resumes_a_broken_download(tmp_path: Path, http: HTTPFiles) -> None:
    data = bytes(range(256)) * 4096
    src = url_source(http.add("big.bin", data), data)
    http.served.cut_next["/big.bin"] = 300_000
    path = Fetcher(Store(tmp_path / "c"), progress=False).fetch_url("r", src)
    assert path.read_bytes() == data
    # One ranged request picked up after what the first response delivered.
    assert len(http.served.ranges) == 1
    resumed_at = int(http.served.ranges[0].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 300_000


def test_unreachable_upstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("jailbake.sources.fetch.BACKOFF", 0.01)
    src = Source(
        SourceKind.URL, "http://127.0.0.1:9/nothing.tar", sha256="0" * 64, filename="nothing.tar"
    )
    fetcher = Fetcher(Store(tmp_path / "c"), progress=False)
    with pytest.raises(FetchError, match=r"127\.0\.0\.1:9"):
        fetcher.fetch_url("r", src)


def test_mirror_directory_by_name_and_by_sha(tmp_path: Path, http: HTTPFiles) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "sha256").mkdir(parents=True)
    a, b = b"by name", b"by sha"
    (mirror / "a.tar").write_bytes(a)
    (mirror / "sha256" / sha256(b)).write_bytes(b)
    fetcher = Fetcher(Store(tmp_path / "c"), [str(mirror)], offline=True, progress=False)
    assert fetcher.fetch_url("r", url_source(f"{http.url}/a.tar", a)).read_bytes() == a
    assert fetcher.fetch_url("r", url_source(f"{http.url}/b.tar", b)).read_bytes() == b
    assert http.served.requests == []


def test_mirror_url_is_tried_before_upstream(
    tmp_path: Path, http: HTTPFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("jailbake.sources.fetch.BACKOFF", 0.01)
    data = b"mirrored"
    http.add("mirror/pkg.tar", data)
    src = url_source("http://127.0.0.1:9/upstream/pkg.tar", data)
    fetcher = Fetcher(Store(tmp_path / "c"), [f"{http.url}/mirror"], progress=False)
    assert fetcher.fetch_url("r", src).read_bytes() == data
    assert http.served.requests[-1] == "/mirror/pkg.tar"


def test_swapped_mirror_file_is_named_and_never_used(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "pkg.tar").write_bytes(b"something else")
    src = url_source("http://127.0.0.1:9/pkg.tar", b"the real thing")
    store = Store(tmp_path / "c")
    fetcher = Fetcher(store, [str(mirror)], offline=True, progress=False)
    with pytest.raises(FetchError) as exc:
        fetcher.fetch_url("r", src)
    assert f"{mirror / 'pkg.tar'} has sha256 {sha256(b'something else')}" in str(exc.value)
    assert not any(p.is_file() for p in (store.root / "cas").rglob("*"))


def test_a_same_named_file_in_one_mirror_falls_through_to_the_next(tmp_path: Path) -> None:
    first, second = tmp_path / "m1", tmp_path / "m2"
    first.mkdir()
    second.mkdir()
    (first / "v1.0.tar.gz").write_bytes(b"another project's v1.0")
    (second / "v1.0.tar.gz").write_bytes(b"ours")
    src = url_source("http://127.0.0.1:9/v1.0.tar.gz", b"ours")
    fetcher = Fetcher(
        Store(tmp_path / "c"), [str(first), str(second)], offline=True, progress=False
    )
    assert fetcher.fetch_url("r", src).read_bytes() == b"ours"


def git_repo(path: Path) -> str:
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "README").write_text("hello from git\n")
    env = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "-C", str(path), "add", "."], check=True)
    subprocess.run(["git", "-C", str(path), *env, "commit", "-qm", "one"], check=True)
    return subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_git_source_is_exported_at_its_commit(project: Project, tmp_path: Path) -> None:
    commit = git_repo(tmp_path / "upstream")
    (tmp_path / "upstream" / "README").write_text("later change\n")
    subprocess.run(
        [
            "git",
            "-C",
            str(tmp_path / "upstream"),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qam",
            "two",
        ],
        check=True,
    )
    project.recipe(
        "g",
        sources=[{"git": f"file://{tmp_path / 'upstream'}", "commit": commit, "dest": "repo"}],
        script='mkdir -p "$OUT"; cp repo/README "$OUT/README"',
        outputs=["README"],
    )
    project.build(artifacts=tmp_path / "art")
    tree = next((project.cache / "trees").iterdir())
    assert (tree / "README").read_text() == "hello from git\n"


def test_git_mirror_archive_offline(project: Project, tmp_path: Path) -> None:
    commit = git_repo(tmp_path / "upstream")
    url = "https://git.example.invalid/upstream.git"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    subprocess.run(
        [
            "git",
            "-C",
            str(tmp_path / "upstream"),
            "archive",
            "--format=tar",
            "-o",
            str(mirror / git_archive_name(url, commit)),
            commit,
        ],
        check=True,
    )
    project.recipe(
        "g",
        sources=[{"git": url, "commit": commit}],
        script='mkdir -p "$OUT"; cp README "$OUT/README"',
        outputs=["README"],
    )
    result = project.build("--offline", "--mirror", str(mirror))
    assert result.report["built"] == ["g"]


def test_offline_lists_every_missing_source_and_opens_no_connection(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    one, two = make_tarball({"a": "1"}), make_tarball({"b": "2"})
    u1, u2 = http.add("one.tar.gz", one), http.add("two.tar.gz", two)
    project.recipe("first", sources=[{"url": u1, "sha256": sha256(one)}])
    project.recipe("second", sources=[{"url": u2, "sha256": sha256(two)}], depends=["first"])
    result = project.build("--offline", artifacts=tmp_path / "art", check=False)
    assert result.rc == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "2 source(s)" in lines[0]
    assert f"first: {u1} sha256 {sha256(one)}" in lines[0]
    assert f"second: {u2} sha256 {sha256(two)}" in lines[0]
    assert http.served.requests == []
    assert not (tmp_path / "art").exists()


def test_checksum_mismatch_in_a_build_leaves_no_artifact(
    project: Project, http: HTTPFiles, tmp_path: Path
) -> None:
    real = make_tarball({"a": "1"})
    url = http.add("pkg.tar.gz", make_tarball({"a": "evil"}))
    project.recipe("pkg", sources=[{"url": url, "sha256": sha256(real)}])
    result = project.build(artifacts=tmp_path / "art", check=False)
    assert result.rc == 2
    assert f"pkg: sha256 mismatch for {url}: expected {sha256(real)}" in result.stderr
    assert not any(p.is_file() for p in (project.cache / "cas").rglob("*"))
    assert not list((project.cache / "ac").rglob("*.json"))
    assert not list((project.cache / "trees").iterdir())
    assert not list((project.cache / "tmp").iterdir())
    assert not (tmp_path / "art").exists() or not list((tmp_path / "art").iterdir())


def test_offline_reads_sources_on_this_machine(project: Project, tmp_path: Path) -> None:
    """A local repository or file is not a network source: --offline reads it where it
    is, as a build with network would; one that is not there is named."""
    commit = git_repo(tmp_path / "upstream")
    tarball = make_tarball({"data.txt": "local\n"})
    (tmp_path / "pkg.tar.gz").write_bytes(tarball)
    project.recipe(
        "local",
        sources=[
            {"git": f"file://{tmp_path / 'upstream'}", "commit": commit, "dest": "repo"},
            {"url": f"file://{tmp_path / 'pkg.tar.gz'}", "sha256": sha256(tarball)},
        ],
        script='mkdir -p "$OUT"; cat repo/README data.txt > "$OUT/local.txt"',
    )
    result = project.build("--offline", artifacts=tmp_path / "art")
    assert result.report["built"] == ["local"]
    assert (tmp_path / "art").exists()
    tree = next((project.cache / "trees").iterdir())
    assert (tree / "local.txt").read_text() == "hello from git\nlocal\n"

    project.recipe(
        "gone",
        sources=[{"git": f"file://{tmp_path / 'nowhere'}", "commit": commit}],
    )
    result = project.build("--offline", "--target", "gone", check=False)
    assert result.rc == 2
    assert f"gone: file://{tmp_path / 'nowhere'} commit {commit}" in result.stderr
