"""Releases a receiver can verify: the provenance (in-toto Statement, SLSA Provenance v1)
a build and publish write, signatures by OpenSSH, minisign and GnuPG keys, and
`jailbake verify-release` finding each kind of tampering in one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement

from conftest import Result, copy_checkout, jailbake
from jailbake.cache.keys import file_sha256

HELLO = "examples/hello/hello.yml"
BUILDER = "https://ci.example.org/jobs/42"


def git(checkout: Path, *args: str) -> str:
    cp = subprocess.run(
        ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@example.org",
         *args],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return cp.stdout.strip()


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed checkout with examples/hello built with --provenance."""
    tmp = tmp_path_factory.mktemp("release")
    repo = copy_checkout(tmp / "jailbake")
    (repo / ".gitignore").write_text("/art*/\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "layers")
    jailbake(
        "build", HELLO, "--executor", "host", "--cache-dir", str(tmp / "cache"),
        "--artifacts-dir", str(repo / "art"), "--provenance", "--builder-id", BUILDER,
        cwd=repo, check=True,
    )  # fmt: skip
    return repo


def cache_of(checkout: Path) -> Path:
    return checkout.parent / "cache"


def copy_art(checkout: Path, tmp_path: Path) -> Path:
    art = tmp_path / "art"
    shutil.copytree(checkout / "art", art)
    return art


def ssh_key(where: Path, name: str = "signer") -> Path:
    (where / "keys").mkdir(exist_ok=True)
    key = where / "keys" / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                   check=True)  # fmt: skip
    return key


def publish(checkout: Path, art: Path, dest: Path | str, *more: str) -> Result:
    return jailbake("publish", HELLO, "--artifacts-dir", str(art), "--to", str(dest), *more,
                    cwd=checkout)  # fmt: skip


def verify(checkout: Path, release: Path, key: Path, *config: str) -> Result:
    return jailbake("verify-release", str(release), *config, "--key", str(key),
                    "--cache-dir", str(cache_of(checkout)), cwd=checkout)  # fmt: skip


@pytest.fixture
def signed(checkout: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A release of hello signed with a new ssh key: (release directory, public key)."""
    key = ssh_key(tmp_path)
    release = tmp_path / "release"
    result = publish(checkout, copy_art(checkout, tmp_path), release, "--sign", str(key))
    assert result.rc == 0, result.stderr
    return release, key.with_suffix(".pub")


def test_build_provenance_names_what_was_built_from_what(checkout: Path) -> None:
    art = checkout / "art"
    document = json.loads((art / "provenance.intoto.json").read_text())
    # It is an in-toto Statement v1 with a SLSA Provenance v1 predicate, by their schemas.
    statement = Statement.copy_from_pb(json_format.ParseDict(document, statement_pb2.Statement()))
    statement.validate()
    predicate = json_format.ParseDict(document["predicate"], provenance_pb2.Provenance())
    assert document["predicateType"] == "https://slsa.dev/provenance/v1"

    manifest = json.loads((art / "manifest.json").read_text())
    subjects = {s["name"]: s["digest"]["sha256"] for s in document["subject"]}
    expected = {a["path"]: a["sha256"] for a in manifest["artifacts"]}
    expected |= {n: file_sha256(art / n) for n in ("manifest.json", "sbom.spdx.json",
                                                    "sbom.cdx.json")}  # fmt: skip
    assert subjects == expected and "hello-sdcard.img" in subjects

    definition = document["predicate"]["buildDefinition"]
    configuration = definition["externalParameters"]["configuration"]
    assert configuration["files"] == [{"path": HELLO, "sha256": file_sha256(checkout / HELLO)}]
    assert configuration["repository"] == {"commit": git(checkout, "rev-parse", "HEAD"),
                                           "dirty": False}  # fmt: skip
    assert definition["externalParameters"]["targets"] == manifest["targets"]
    deps = definition["resolvedDependencies"]
    hello = [d for d in deps if d.get("annotations", {}).get("recipe") == "hello"]
    assert hello == [{
        "uri": "https://downloads.jailbake.invalid/hello/hello-1.0.tar.gz",
        "digest": {"sha256": manifest["recipes"][[r["name"] for r in manifest["recipes"]]
                                                 .index("hello")]["sources"][0]["sha256"]},
        "annotations": {"recipe": "hello"},
    }]  # fmt: skip
    (itself,) = [d for d in deps if d.get("name") == "jailbake"]
    assert itself["uri"].startswith("pkg:pypi/jailbake@") and len(itself["digest"]["sha256"]) == 64

    run = predicate.run_details
    assert run.builder.id == BUILDER
    assert [d.name for d in run.builder.builder_dependencies] == ["executor:host"]
    started, finished = run.metadata.started_on.ToDatetime(), run.metadata.finished_on.ToDatetime()
    assert started <= finished and finished.year >= datetime.now().year
    assert run.metadata.invocation_id


def test_a_no_op_build_writes_its_own_run_and_sees_a_dirty_checkout(
    checkout: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "dirty"
    shutil.copytree(checkout, repo, symlinks=True)
    (repo / "notes.txt").write_text("not committed\n")
    result = jailbake(
        "build", HELLO, "--executor", "host", "--cache-dir", str(cache_of(checkout)),
        "--artifacts-dir", str(repo / "art"), "--provenance", "--json", cwd=repo, check=True,
    )  # fmt: skip
    assert result.report["built"] == []
    document = json.loads((repo / "art" / "provenance.intoto.json").read_text())
    configuration = document["predicate"]["buildDefinition"]["externalParameters"]["configuration"]
    assert configuration["repository"]["dirty"] is True
    before = json.loads((checkout / "art" / "provenance.intoto.json").read_text())
    ids = [d["predicate"]["runDetails"]["metadata"]["invocationId"] for d in (before, document)]
    assert ids[0] != ids[1]
    assert document["subject"] == before["subject"]


def test_a_signed_release_verifies_against_its_checkout(
    checkout: Path, signed: tuple[Path, Path]
) -> None:
    release, pub = signed
    names = {p.name for p in release.iterdir()}
    assert {"SHA256SUMS.sig", "provenance.intoto.json.sig", "sbom.spdx.json.sig",
            "sbom.cdx.json.sig"} <= names  # fmt: skip
    listed = {line.split("  ", 1)[1] for line in (release / "SHA256SUMS").read_text().splitlines()}
    assert "provenance.intoto.json" in listed and not any(n.endswith(".sig") for n in listed)
    result = verify(checkout, release, pub, HELLO)
    assert result.rc == 0, result.stdout + result.stderr
    assert result.stdout == "" and "4 signatures (ssh): good" in result.stderr
    # The build's run details were kept: the builder id given to the build.
    document = json.loads((release / "provenance.intoto.json").read_text())
    assert document["predicate"]["runDetails"]["builder"]["id"] == BUILDER


def _tamper_artifact(release: Path, tmp_path: Path, checkout: Path) -> None:
    with (release / "hello-sdcard.img").open("r+b") as f:
        f.seek(4096)
        f.write(b"\xff")


def _swap_provenance(release: Path, tmp_path: Path, checkout: Path) -> None:
    """The provenance (and its good signature, same key) of another release."""
    other_art = tmp_path / "other-art"
    jailbake("build", HELLO, "--target", "hello-rootfs", "--executor", "host",
             "--cache-dir", str(cache_of(checkout)), "--artifacts-dir", str(other_art),
             "--provenance", cwd=checkout, check=True)  # fmt: skip
    other = tmp_path / "other"
    key = tmp_path / "keys" / "signer"
    jailbake("publish", "--artifacts-dir", str(other_art), "--to", str(other), "--sign", str(key),
             cwd=checkout, check=True)  # fmt: skip
    for name in ("provenance.intoto.json", "provenance.intoto.json.sig"):
        shutil.copyfile(other / name, release / name)


def _missing_signature(release: Path, tmp_path: Path, checkout: Path) -> None:
    (release / "sbom.spdx.json.sig").unlink()


def _extra_file(release: Path, tmp_path: Path, checkout: Path) -> None:
    (release / "hello-sdcard.img.orig").write_bytes(b"left over\n")


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (_tamper_artifact, ["hello-sdcard.img: sha256"]),
        (_swap_provenance, ["provenance.intoto.json: sha256", "subject"]),
        (_missing_signature, ["sbom.spdx.json.sig: missing"]),
        (_extra_file, ["hello-sdcard.img.orig: not listed in SHA256SUMS"]),
    ],
    ids=["tampered-artifact", "swapped-provenance", "missing-signature", "extra-file"],
)
def test_each_tampering_is_found_in_one_line(
    checkout: Path, signed: tuple[Path, Path], tmp_path: Path, tamper: object, expected: list[str]
) -> None:
    release, pub = signed
    assert callable(tamper)
    tamper(release, tmp_path, checkout)
    result = verify(checkout, release, pub)
    assert result.rc == 1
    lines = result.stdout.splitlines()
    for part in expected:
        assert any(part in line for line in lines), (part, result.stdout)
    if tamper is not _swap_provenance:  # one change, one line
        assert len(lines) == 1, result.stdout
        assert result.stderr.splitlines()[-1].endswith(": 1 problem")
    else:
        assert result.stderr.splitlines()[-1].endswith(f": {len(lines)} problems")


def test_a_wrong_key_fails_every_signature(
    checkout: Path, signed: tuple[Path, Path], tmp_path: Path
) -> None:
    release, _ = signed
    stranger = ssh_key(tmp_path, "stranger").with_suffix(".pub")
    result = verify(checkout, release, stranger)
    assert result.rc == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and all("not a good signature" in line for line in lines), lines


def test_a_checkout_that_moved_on_does_not_match(
    checkout: Path, signed: tuple[Path, Path], tmp_path: Path
) -> None:
    release, pub = signed
    repo = tmp_path / "moved"
    shutil.copytree(checkout, repo, symlinks=True)
    recipe = repo / "examples/hello/recipes/hello.yml"
    text = recipe.read_text()
    old = json.loads((release / "manifest.json").read_text())["recipes"]
    pin = next(r for r in old if r["name"] == "hello")["sources"][0]["sha256"]
    recipe.write_text(text.replace(pin, "ab" * 32))
    git(repo, "commit", "-q", "-am", "another hello")
    result = jailbake("verify-release", str(release), HELLO, "--key", str(pub),
                      "--cache-dir", str(tmp_path / "c"), cwd=repo)  # fmt: skip
    assert result.rc == 1
    lines = result.stdout.splitlines()
    assert any("built from commit" in line for line in lines), lines
    assert any(line.endswith("is not pinned by the checkout") and pin in line for line in lines)
    assert any("the checkout pins" in line and "ab" * 32 in line for line in lines)


def _key_material(path: Path) -> list[bytes]:
    """The secret parts of a key file: its base64 lines (no headers or comments), and
    the bytes they decode to (a key copied in binary form, a keyring, shows those)."""
    import base64
    import re

    lines = path.read_bytes().splitlines()
    body = [line for line in lines if len(line) >= 40 and re.fullmatch(rb"[A-Za-z0-9+/=]+", line)]
    joined = b"".join(body)
    decoded = base64.b64decode(joined[: len(joined) // 4 * 4])
    # Slices of the packet past its public part: where a secret key's bytes are.
    chunks = [decoded[i : i + 24] for i in range(len(decoded) // 2, len(decoded) - 24, 24)]
    return body + [c for c in chunks if len(set(c)) > 16]  # not padding: key bytes


def _nowhere_but_the_key(secret: list[bytes], *dirs: Path) -> None:
    for d in dirs:
        for path in d.rglob("*"):
            assert path.name not in ("private-keys-v1.d", "pubring.kbx", "secring.gpg"), path
            if path.is_file():
                data = path.read_bytes()
                assert not any(s in data for s in secret), path


def test_minisign_keys_sign_and_verify(checkout: Path, tmp_path: Path) -> None:
    secret, pub = tmp_path / "release.key", tmp_path / "release.pub"
    subprocess.run(["minisign", "-G", "-W", "-p", str(pub), "-s", str(secret)], check=True,
                   capture_output=True)  # fmt: skip
    release = tmp_path / "release"
    result = publish(checkout, copy_art(checkout, tmp_path), release, "--sign", str(secret))
    assert result.rc == 0, result.stderr
    assert (release / "SHA256SUMS.minisig").is_file()
    assert verify(checkout, release, pub, HELLO).rc == 0
    _nowhere_but_the_key(_key_material(secret), release, cache_of(checkout))
    (release / "SHA256SUMS").write_text((release / "SHA256SUMS").read_text() + "\n")
    result = verify(checkout, release, pub)
    assert result.rc == 1 and "SHA256SUMS.minisig: not a good signature" in result.stdout


def test_gnupg_keys_sign_and_verify(checkout: Path, tmp_path: Path) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    quiet = {"check": True, "capture_output": True, "env": env}
    subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                    "--quick-gen-key", "Release <release@example.org>", "ed25519", "sign",
                    "never"], **quiet)  # type: ignore[call-overload]  # fmt: skip
    secret, pub = tmp_path / "release.sec.asc", tmp_path / "release.pub.asc"
    for flag, dest in (("--export-secret-keys", secret), ("--export", pub)):
        out = subprocess.run(["gpg", "--batch", "--armor", "--pinentry-mode", "loopback",
                              "--passphrase", "", flag], **quiet)  # type: ignore[call-overload]  # fmt: skip
        dest.write_bytes(out.stdout)
    try:
        # A key file, imported for the signing only; and the key in the user's keyring.
        for spec, release in ((str(secret), tmp_path / "r1"),
                              ("gpg:release@example.org", tmp_path / "r2")):  # fmt: skip
            art = tmp_path / f"art-{release.name}"
            shutil.copytree(checkout / "art", art)
            result = jailbake("publish", HELLO, "--artifacts-dir", str(art), "--to",
                              str(release), "--sign", spec, cwd=checkout,
                              env={"GNUPGHOME": str(home)})  # fmt: skip
            assert result.rc == 0, result.stderr
            assert (release / "provenance.intoto.json.asc").is_file()
            good = verify(checkout, release, pub, HELLO)
            assert good.rc == 0, good.stdout + good.stderr
            _nowhere_but_the_key(_key_material(secret), release, cache_of(checkout), art)
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, check=False)


def test_a_key_in_ssh_agent_signs(checkout: Path, tmp_path: Path) -> None:
    key = ssh_key(tmp_path)
    agent = subprocess.run(["ssh-agent", "-s"], check=True, capture_output=True, text=True)
    env = dict(
        line.split(";", 1)[0].split("=", 1) for line in agent.stdout.splitlines() if "=" in line
    )
    try:
        subprocess.run(["ssh-add", "-q", str(key)], check=True, env={**os.environ, **env},
                       capture_output=True)  # fmt: skip
        key.unlink()  # only the agent holds it now
        release = tmp_path / "release"
        result = jailbake("publish", HELLO, "--artifacts-dir", str(copy_art(checkout, tmp_path)),
                          "--to", str(release), "--sign", str(key.with_suffix(".pub")),
                          cwd=checkout, env={"SSH_AUTH_SOCK": env["SSH_AUTH_SOCK"]})  # fmt: skip
        assert result.rc == 0, result.stderr
        assert verify(checkout, release, key.with_suffix(".pub")).rc == 0
    finally:
        os.kill(int(env["SSH_AGENT_PID"]), signal.SIGTERM)


def test_publish_without_the_builds_provenance_says_so(checkout: Path, tmp_path: Path) -> None:
    art = tmp_path / "art"
    jailbake("build", HELLO, "--executor", "host", "--cache-dir", str(cache_of(checkout)),
             "--artifacts-dir", str(art), cwd=checkout, check=True)  # fmt: skip
    assert not (art / "provenance.intoto.json").exists()
    release = tmp_path / "release"
    result = publish(checkout, art, release)
    assert result.rc == 0 and "no run details" in result.stderr
    document = json.loads((release / "provenance.intoto.json").read_text())
    run = document["predicate"]["runDetails"]
    assert "startedOn" not in run.get("metadata", {})
    assert run["builder"]["builderDependencies"] == [{"name": "executor:unrecorded"}]
    repository = document["predicate"]["buildDefinition"]["externalParameters"]["configuration"]
    assert repository["repository"]["commit"] == git(checkout, "rev-parse", "HEAD")
    # Unsigned, it still checks against its checksums; a key finds no signature.
    key = ssh_key(tmp_path).with_suffix(".pub")
    result = verify(checkout, release, key)
    assert result.rc == 1 and len(result.stdout.splitlines()) == 4
    assert all(": missing: " in line for line in result.stdout.splitlines())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{tmp}/nothing", "no such key file"),
        ("{tmp}/plain.txt", "not an OpenSSH, minisign or GnuPG key"),
        ("-oProxyCommand=x", "expected [ssh:|minisign:|gpg:]KEY"),
        ("gpg:--homedir", "expected [ssh:|minisign:|gpg:]KEY"),
        ("gpg:not an id!", "expected a key file, or a key id"),
    ],
)
def test_a_bad_signing_key_is_one_line_and_nothing_is_published(
    checkout: Path, tmp_path: Path, spec: str, message: str
) -> None:
    (tmp_path / "plain.txt").write_text("hello\n")
    release = tmp_path / "release"
    result = publish(checkout, copy_art(checkout, tmp_path), release,
                     f"--sign={spec.format(tmp=tmp_path)}")  # fmt: skip
    assert result.rc != 0
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not release.exists()


def test_a_private_key_is_refused_as_the_public_one(
    checkout: Path, signed: tuple[Path, Path], tmp_path: Path
) -> None:
    release, pub = signed
    result = verify(checkout, release, pub.with_suffix(""))
    assert result.rc != 0 and "expected an OpenSSH, minisign or GnuPG public key" in (result.stderr)


def test_a_fifo_or_a_link_for_sha256sums_is_one_line(
    checkout: Path, signed: tuple[Path, Path], tmp_path: Path
) -> None:
    release, pub = signed
    outside = tmp_path / "elsewhere"
    outside.write_bytes((release / "SHA256SUMS").read_bytes())
    (release / "SHA256SUMS").unlink()
    (release / "SHA256SUMS").symlink_to(outside)
    result = verify(checkout, release, pub)
    assert result.rc == 1 and "SHA256SUMS: not read: a symbolic link" in result.stdout
    (release / "SHA256SUMS").unlink()
    os.mkfifo(release / "SHA256SUMS")
    result = verify(checkout, release, pub)  # returns: nothing waits on the FIFO
    assert result.rc == 1 and "SHA256SUMS: not read: not a regular file" in result.stdout
    assert len(result.stdout.splitlines()) == 1


def test_a_provenance_of_the_wrong_shape_is_one_line(
    checkout: Path, signed: tuple[Path, Path]
) -> None:
    """Signed and listed, but not what jailbake writes: a problem, not a traceback."""
    release, pub = signed
    path = release / "provenance.intoto.json"
    document = json.loads(path.read_text())
    document["predicate"]["buildDefinition"]["externalParameters"]["targets"] = "hello"
    path.write_text(json.dumps(document))
    result = verify(checkout, release, pub, HELLO)
    assert result.rc == 1 and "Traceback" not in result.stderr
    assert any("externalParameters.targets: expected a list of names" in line
               for line in result.stdout.splitlines()), result.stdout  # fmt: skip


def test_one_key_of_each_kind_and_no_stale_signatures(checkout: Path, tmp_path: Path) -> None:
    art = copy_art(checkout, tmp_path)
    release = tmp_path / "release"
    a, b = ssh_key(tmp_path, "a"), ssh_key(tmp_path, "b")
    twice = publish(checkout, art, release, "--sign", str(a), "--sign", str(b))
    assert twice.rc == 2 and "one key of each kind" in twice.stderr and not release.exists()
    assert publish(checkout, art, release, "--sign", str(a)).rc == 0
    secret, pub = tmp_path / "m.key", tmp_path / "m.pub"
    subprocess.run(["minisign", "-G", "-W", "-p", str(pub), "-s", str(secret)], check=True,
                   capture_output=True)  # fmt: skip
    assert publish(checkout, art, release, "--sign", str(secret)).rc == 0
    # The ssh signatures of the earlier publish would vouch for other bytes: gone.
    assert not list(release.glob("*.sig")) and not list(art.glob("*.sig"))
    assert verify(checkout, release, pub).rc == 0


def test_publish_keeps_only_a_builds_run_details(checkout: Path, tmp_path: Path) -> None:
    art = tmp_path / "art"
    jailbake("build", HELLO, "--executor", "host", "--cache-dir", str(cache_of(checkout)),
             "--artifacts-dir", str(art), cwd=checkout, check=True)  # fmt: skip
    for n, builder in enumerate(("https://ci.example.org/a", "https://ci.example.org/b")):
        result = publish(checkout, art, tmp_path / f"r{n}", "--builder-id", builder)
        assert result.rc == 0 and "no run details" in result.stderr
        document = json.loads((tmp_path / f"r{n}" / "provenance.intoto.json").read_text())
        assert document["predicate"]["runDetails"]["builder"]["id"] == builder
