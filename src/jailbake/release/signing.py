"""Signing a release's files, and checking their signatures, with the tools people
already keep keys for: OpenSSH (`ssh-keygen -Y`, the namespace jailbake-release; what
git signs with), minisign, or GnuPG. Offline, each; the key stays where it is (a file
or an agent) and nothing of it is written anywhere else.

A signature sits beside its file: FILE.sig (ssh), FILE.minisig, FILE.asc (gpg)."""

from __future__ import annotations

import enum
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..core import files, run
from ..core.errors import JailbakeError

NAMESPACE = "jailbake-release"  # ssh-keygen -Y's namespace: a git signature will not do


class SignatureError(JailbakeError):
    pass


class Scheme(enum.StrEnum):
    SSH = "ssh"
    MINISIGN = "minisign"
    GPG = "gpg"


SUFFIX = {Scheme.SSH: ".sig", Scheme.MINISIGN: ".minisig", Scheme.GPG: ".asc"}
TOOL = {Scheme.SSH: "ssh-keygen", Scheme.MINISIGN: "minisign", Scheme.GPG: "gpg"}
# What each tool needs of the caller's environment: its agent.
AGENT = {Scheme.SSH: ("SSH_AUTH_SOCK",), Scheme.MINISIGN: (), Scheme.GPG: ("GNUPGHOME",)}

_SSH_PUBLIC = re.compile(r"(?:ssh-|ecdsa-|sk-)[A-Za-z0-9@.-]+ [A-Za-z0-9+/]+={0,2}(?: [^\n]*)?")
_GPG_ID = re.compile(r"[0-9A-Fa-f]{8,40}|[^\s<>@-][^\s<>@]*@[^\s<>@]+|<[^\s<>@]+@[^\s<>@]+>")


@dataclass(frozen=True)
class SigningKey:
    scheme: Scheme
    ref: str  # a key file; for gpg also a key id, fingerprint or address in the keyring


@dataclass(frozen=True)
class PublicKey:
    scheme: Scheme
    path: Path
    text: str


def signature_path(path: Path, scheme: Scheme) -> Path:
    return path.with_name(path.name + SUFFIX[scheme])


def _scheme_of_text(head: str) -> Scheme | None:
    if head.startswith(("-----BEGIN OPENSSH PRIVATE KEY-----", "ssh-", "ecdsa-", "sk-")):
        return Scheme.SSH
    if head.startswith("untrusted comment:"):
        return Scheme.MINISIGN
    if head.startswith(("-----BEGIN PGP ", "\x99", "\x95", "\x97", "\xc5", "\xc6")):
        return Scheme.GPG
    return None


MAX_KEY = 1 << 20


def _head(path: Path, origin: str) -> str:
    return _key_bytes(path, origin)[:64].decode("latin-1")


def _key_bytes(path: Path, origin: str) -> bytes:
    try:
        return files.read_limited(path, MAX_KEY)
    except FileNotFoundError:
        raise SignatureError(f"{origin}: {path}: no such key file") from None
    except (OSError, ValueError) as exc:
        raise SignatureError(f"{origin}: {path}: cannot read the key: {exc}") from None


def signing_key(spec: str) -> SigningKey:
    """--sign's value: [ssh:|minisign:|gpg:]KEY, KEY a key file (for ssh a private key,
    or a public key whose private half is in ssh-agent), or for gpg a key in the
    keyring. Without a prefix the file's content says which."""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in Scheme.__members__.values():
        scheme: Scheme | None = Scheme(prefix)
        ref = rest
    else:
        scheme, ref = None, spec
    if not ref or ref.startswith("-") or "\n" in ref:
        raise SignatureError(f"--sign {spec!r}: expected [ssh:|minisign:|gpg:]KEY")
    path = Path(ref).expanduser()
    if scheme is Scheme.GPG and not path.is_file():
        if not _GPG_ID.fullmatch(ref):
            raise SignatureError(
                f"--sign {spec!r}: expected a key file, or a key id, fingerprint or "
                "address of the GnuPG keyring"
            )
        return SigningKey(scheme, ref)
    if not path.is_file():
        raise SignatureError(f"--sign {spec!r}: {path}: no such key file")
    found = _scheme_of_text(_head(path, "--sign"))
    if scheme is None:
        if found is None:
            raise SignatureError(
                f"--sign {spec!r}: {path}: not an OpenSSH, minisign or GnuPG key; "
                "say which with ssh:, minisign: or gpg:"
            )
        scheme = found
    return SigningKey(scheme, str(path.resolve()))


def public_key(path: Path) -> PublicKey:
    """--key's value: an OpenSSH public key (one line), a minisign public key, or a
    GnuPG public key (armoured or binary)."""
    content = _key_bytes(path, "--key")
    head = content[:64].decode("latin-1")
    scheme = _scheme_of_text(head)
    if scheme is None or head.startswith("-----BEGIN OPENSSH PRIVATE"):
        raise SignatureError(f"--key {path}: expected an OpenSSH, minisign or GnuPG public key")
    text = ""
    lines = content.decode(errors="replace").strip().splitlines()
    if scheme is Scheme.SSH:
        if len(lines) != 1 or not _SSH_PUBLIC.fullmatch(lines[0]):
            raise SignatureError(f"--key {path}: expected one OpenSSH public key line")
        text = lines[0]
    elif scheme is Scheme.MINISIGN:
        if len(lines) != 2 or "secret key" in lines[0]:
            raise SignatureError(f"--key {path}: expected a minisign public key")
    elif b"PRIVATE KEY" in content[:64]:
        raise SignatureError(f"--key {path}: a GnuPG private key; give the public key")
    return PublicKey(scheme, path.resolve(), text)


def _tool(scheme: Scheme) -> str:
    tool = shutil.which(TOOL[scheme])
    if tool is None:
        raise SignatureError(
            f"{TOOL[scheme]} is not installed (apt-get install "
            f"{ {'ssh-keygen': 'openssh-client'}.get(TOOL[scheme], TOOL[scheme]) })"
        )
    return tool


def _env(scheme: Scheme, **extra: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in AGENT[scheme] if k in os.environ}
    env.update(extra)
    return env


def _last_line(cp: subprocess.CompletedProcess[bytes]) -> str:
    text = (cp.stderr or b"").decode(errors="replace") + (cp.stdout or b"").decode(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {cp.returncode}"


@contextmanager
def _gnupg_home() -> Iterator[Path]:
    """A keyring of its own, removed afterwards with its agent."""
    with tempfile.TemporaryDirectory(prefix="jailbake-gnupg-") as home:
        try:
            yield Path(home)
        finally:
            run.run(["gpgconf", "--kill", "all"], env={"GNUPGHOME": home}, check=False,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def _run(
    argv: list[str | Path], env: dict[str, str] | None = None, data: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return run.run(argv, env=env, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                   check=False)  # fmt: skip


def sign(key: SigningKey, path: Path) -> Path:
    """Sign path with key; returns the signature's path."""
    path = path.resolve()  # absolute: never read as an option
    sig = signature_path(path, key.scheme)
    sig.unlink(missing_ok=True)  # ssh-keygen would ask before overwriting
    tool = _tool(key.scheme)
    env = _env(key.scheme)
    if key.scheme is Scheme.SSH:
        cp = _run([tool, "-Y", "sign", "-f", key.ref, "-n", NAMESPACE, path], env)
    elif key.scheme is Scheme.MINISIGN:
        comment = f"jailbake release: {path.name}"
        cp = _run([tool, "-S", "-s", key.ref, "-m", path, "-x", sig, "-t", comment], env)
    elif Path(key.ref).is_file():  # a secret key file: in a keyring of its own, for now
        with _gnupg_home() as home:
            env["GNUPGHOME"] = str(home)
            imported = _run([tool, "--batch", "--quiet", "--import", key.ref], env)
            if imported.returncode != 0:
                raise SignatureError(f"--sign {key.ref}: gpg --import: {_last_line(imported)}")
            cp = _run([tool, "--batch", "--yes", "--armor", "--detach-sign", "--output", sig,
                       path], env)  # fmt: skip
    else:
        cp = _run([tool, "--batch", "--yes", "--local-user", key.ref, "--armor",
                   "--detach-sign", "--output", sig, path], env)  # fmt: skip
    if cp.returncode != 0 or not sig.is_file():
        sig.unlink(missing_ok=True)
        raise SignatureError(f"signing {path.name} with {key.ref}: {_last_line(cp)}")
    sig.chmod(0o644)
    return sig


MAX_SIGNED = 256 << 20  # SHA256SUMS, a provenance, an SBOM


def verify(key: PublicKey, path: Path, sig: Path) -> None:
    """Raise SignatureError, one line, unless sig is key's good signature of path."""
    if not os.path.lexists(sig):
        raise SignatureError(f"{sig}: missing: {path.name} is not signed ({key.scheme})")
    try:  # the tools read them: regular files, not links or FIFOs, of bounded size
        data = files.read_limited(path, MAX_SIGNED)
        files.read_limited(sig, 1 << 20)
    except (OSError, ValueError) as exc:
        raise SignatureError(f"{path.name} or its signature: not read: {exc}") from None
    tool = _tool(key.scheme)
    with tempfile.TemporaryDirectory(prefix="jailbake-verify-") as tmp:
        if key.scheme is Scheme.SSH:
            allowed = Path(tmp) / "allowed_signers"
            allowed.write_text(f'{NAMESPACE} namespaces="{NAMESPACE}" {key.text}\n')
            argv: list[str | Path] = [tool, "-Y", "verify", "-f", allowed, "-I", NAMESPACE,
                                      "-n", NAMESPACE, "-s", sig]  # fmt: skip
            cp = _run(argv, data=data)
        elif key.scheme is Scheme.MINISIGN:
            cp = _run([tool, "-V", "-p", key.path, "-m", path, "-x", sig])
        else:
            keyring = Path(tmp) / "keyring.gpg"
            env = {"GNUPGHOME": tmp}
            if key.path.read_bytes().startswith(b"-----BEGIN"):
                made = _run([tool, "--batch", "--dearmor", "--output", keyring, key.path], env)
                if made.returncode != 0:
                    raise SignatureError(f"--key {key.path}: {_last_line(made)}")
            else:
                shutil.copyfile(key.path, keyring)
            cp = _run(["gpgv", "--keyring", keyring, sig, path], env)
    if cp.returncode != 0:
        raise SignatureError(
            f"{sig}: not a good signature of {path.name} by {key.path}: {_last_line(cp)}"
        )
