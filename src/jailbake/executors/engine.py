"""The container engine: finding one, builder images, the base image."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..cache.keys import digest_of, tree_manifest
from ..core.errors import EngineError
from . import debs, pinned

log = logging.getLogger(__name__)

BASE_IMAGE = "localhost/debian-base"
_CANDIDATE_SOCKETS = (
    "/var/run/docker.sock",
    "/run/podman/podman.sock",
    "/run/podman-api.sock",
)
HOW_TO_START = (
    "start Docker (sudo systemctl start docker) or Podman's API service "
    "(sudo scripts/setup-engine, then export DOCKER_HOST=unix:///run/podman-api.sock), "
    "or build with --executor host"
)


def engine_urls() -> list[str]:
    """Where to look for an engine: DOCKER_HOST first, then the usual sockets."""
    if os.environ.get("DOCKER_HOST"):
        return [os.environ["DOCKER_HOST"]]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    sockets = [*_CANDIDATE_SOCKETS, *([f"{runtime}/podman/podman.sock"] if runtime else [])]
    return [f"unix://{s}" for s in sockets if Path(s).exists()]


# The Docker API version jailbake speaks: Docker 20.10 and later, Podman 3 and later.
# Asking the engine instead costs a request per connection (~0.2 s on Podman 4.3).
API_VERSION = "1.41"


def _client(url: str) -> Any:
    """A client at the pinned API version, or at the engine's own when it speaks an
    older one (it refuses the pinned version with an error naming it)."""
    from docker.client import DockerClient
    from docker.errors import APIError

    client = DockerClient(base_url=url, version=API_VERSION, timeout=600)
    try:
        client.ping()
    except APIError as exc:
        if "version" not in str(exc).lower():
            raise
        client.close()
        client = DockerClient(base_url=url, version="auto", timeout=600)
        client.ping()
    return client


def connect() -> Any:
    """A Docker SDK client for the first engine that answers."""
    from docker.errors import DockerException

    tried = engine_urls()
    for url in tried:
        try:
            return _client(url)
        except (DockerException, OSError) as exc:
            log.debug("no engine at %s: %s", url, exc)
    where = ", ".join(tried) if tried else "DOCKER_HOST is unset and no engine socket exists"
    raise EngineError(f"no container engine answers ({where}): {HOW_TO_START}")


def image_key(context_dir: Path) -> str:
    """A builder image's key: its Dockerfile and build context, nothing of the host."""
    return digest_of({"builder": context_dir.name, "context": tree_manifest(context_dir)})


def image_tag(name: str, key: str) -> str:
    return f"localhost/jailbake-{name}:{key[:20]}"


def image_digests(client: Any, tags: Mapping[str, str]) -> dict[str, str]:
    """The engine's image id (sha256:...) of each tag it holds, by name."""
    from docker.errors import DockerException

    found = {}
    for name, tag in sorted(tags.items()):
        try:
            found[name] = str(client.images.get(tag).id)
        except DockerException as exc:
            log.debug("%s: no image id: %s", tag, exc)
    return found


def base_images(context_dir: Path) -> list[str]:
    """The images a Dockerfile starts FROM (an ARG's default stands for the ARG)."""
    text = (context_dir / "Dockerfile").read_text()
    defaults = dict(re.findall(r"^\s*ARG\s+(\w+)=(\S+)", text, re.M | re.I))
    froms = re.findall(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)", text, re.M | re.I)
    return [
        re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), base)
        for base in froms
    ]


LABEL_KEY = "org.jailbake.key"
PACKAGES_ARG = "JAILBAKE_PACKAGES"  # the Dockerfile's FROM: the base with the pinned packages


def labelled(client: Any, tag: str) -> str | None:
    from docker.errors import ImageNotFound

    try:
        return str((client.images.get(tag).labels or {}).get(LABEL_KEY))
    except ImageNotFound:
        return None


def debian_architecture() -> str:
    """This machine's Debian architecture (the builders run natively)."""
    import platform

    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def base_tag(suite: str) -> str:
    return f"{BASE_IMAGE}:{suite}"


def ensure_base(client: Any, lock: debs.Lock, where: str) -> str:
    """The pinned base image lock was resolved on, in the engine (labelled with the base
    lock's digest: jailbake base-image made it from its .debs)."""
    tag = base_tag(lock.suite)
    label = labelled(client, tag)
    if label == lock.base:
        return tag
    if label is None:
        raise EngineError(
            f"{where}: base image {tag} is not in the engine; make it with: jailbake "
            "base-image (offline: --offline --mirror DIR)"
        )
    raise EngineError(
        f"{where}: base image {tag} is not the one this lock was resolved on (it is "
        f"labelled {label!r}, the lock's base is {lock.base}); make it from "
        "docker/debian-base/packages.lock with: jailbake base-image --force"
    )


def ensure_image(
    client: Any,
    context_dir: Path,
    key: str,
    *,
    load: Callable[[str], bool] | None = None,
    offline: bool = False,
    fetch: debs.FetchDeb | None = None,
) -> str:
    """The tag of the builder image: in the engine, or made from docker/<name>/. A
    builder with a packages.lock is made of exactly those .debs (fetch gives each, from
    the cache, a mirror or Debian's pool, sha256 checked) on the pinned base image,
    offline; a mirror's saved image of it is never loaded (its label would be its own
    word). One without a lock is loaded by load (from a mirror) or builds its
    Dockerfile as it is, which needs the network for anything it downloads."""
    from docker.errors import BuildError

    name = context_dir.name
    lock_file = debs.lock_path(context_dir)
    if lock_file is not None:
        load = None

    def present(tag: str) -> bool:
        return labelled(client, tag) is not None or (load is not None and load(tag))

    tag = image_tag(name, key)
    if present(tag):
        label = labelled(client, tag)
        if label != key:  # the tag holds 20 digits of the key
            raise EngineError(
                f"docker/{name}/: image {tag} is labelled as builder "
                f"{label!r}, not {key}; remove it (podman rmi {tag})"
            )
        return tag
    buildargs: dict[str, str] = {}
    if lock_file is not None:
        lock = debs.read_lock(lock_file)
        if lock.architecture != debian_architecture():
            raise EngineError(
                f"{lock_file}: architecture: pins {lock.architecture} packages, but this "
                f"machine runs {debian_architecture()}; lock them here with: jailbake "
                "lock-builders"
            )
        if fetch is None:
            raise EngineError(f"docker/{name}/: its pinned packages cannot be fetched here")
        base = ensure_base(client, lock, f"{lock_file}")
        packages = f"localhost/jailbake-{name}-packages:{lock.digest[:20]}"
        if labelled(client, packages) != lock.digest:
            log.info("installing the pinned packages of %s", lock_file)
            pinned.install_packages(client, base, lock, fetch, packages, {LABEL_KEY: lock.digest})
        buildargs = {PACKAGES_ARG: packages, "SOURCE_DATE_EPOCH": str(lock.epoch)}
    else:
        if offline:
            raise EngineError(
                f"docker/{name}/: builder image {tag} is neither in the engine nor "
                "in a mirror, its packages are not pinned (no packages.lock), and "
                "--offline forbids building it; make it while online with 'jailbake "
                "builders CONFIG', or give a mirror that holds it (jailbake mirror saves it)"
            )
        for base in base_images(context_dir):
            # The base image is made from its lock, never loaded from a mirror.
            if not (labelled(client, base) is not None if base.startswith(BASE_IMAGE)
                    else present(base)):  # fmt: skip
                hint = (
                    " (create it with: jailbake base-image)" if base.startswith(BASE_IMAGE) else ""
                )
                raise EngineError(
                    f"docker/{name}/Dockerfile: base image {base} is not in the engine{hint}"
                )
    log.info("building builder image %s", tag)
    try:
        client.images.build(
            path=str(context_dir),
            tag=tag,
            rm=True,
            pull=False,
            labels={LABEL_KEY: key},
            buildargs=buildargs,
        )
    except BuildError as exc:
        lines = [str(c.get("stream", c.get("error", ""))).rstrip() for c in exc.build_log]
        tail = "\n".join(line for line in lines if line)[-4000:]
        raise EngineError(
            f"docker/{name}/Dockerfile: image build failed: {exc.msg}\n{tail}"
        ) from None
    return tag


def apt_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses (never written into the repository)."""
    for path in sorted(sources_dir.glob("sources.list.d/*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    main = sources_dir / "sources.list"
    if main.is_file():
        for line in main.read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[2] if parts[1].startswith("[") else parts[1]
    return "http://deb.debian.org/debian"


def make_base_image(client: Any, lock_file: Path, fetch: debs.FetchDeb, workdir: Path) -> str:
    """BASE_IMAGE:suite made by mmdebstrap from exactly the .debs lock_file pins,
    offline, labelled with the lock's digest (the base every builder lock names)."""
    lock = debs.read_lock(lock_file)
    if lock.base:
        raise EngineError(f"{lock_file}: base: expected '' in the base image's own lock")
    tag = base_tag(lock.suite)
    tarball = pinned.base_tarball(lock, fetch, workdir)
    with tarball.open("rb") as f:
        reply = client.api.import_image_from_data(
            f, repository=tag, changes=[f"LABEL {LABEL_KEY}={lock.digest}"]
        )
    image_id = re.search(r'"id"\s*:\s*"([^"]+)"', str(reply))
    if image_id:  # engines that ignore a tag given with the repository name
        client.images.get(image_id.group(1)).tag(BASE_IMAGE, lock.suite)
    if labelled(client, tag) != lock.digest:
        raise EngineError(f"base-image: the engine did not keep the label of {tag}")
    return tag
