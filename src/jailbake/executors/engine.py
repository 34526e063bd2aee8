"""The container engine: finding one, builder images, the base image."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..cache.keys import digest_of, tree_manifest
from ..core import run
from ..core.errors import EngineError

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


def base_images(context_dir: Path) -> list[str]:
    """The images a Dockerfile starts FROM."""
    text = (context_dir / "Dockerfile").read_text()
    return re.findall(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)", text, re.M | re.I)


def ensure_image(
    client: Any,
    context_dir: Path,
    key: str,
    *,
    load: Callable[[str], bool] | None = None,
    offline: bool = False,
) -> str:
    """The tag of the builder image: in the engine, loaded by load (from a mirror), or
    built from docker/<name>/ (which needs the network, for apt)."""
    from docker.errors import BuildError, ImageNotFound

    def present(tag: str) -> bool:
        try:
            client.images.get(tag)
            return True
        except ImageNotFound:
            return load is not None and load(tag)

    tag = image_tag(context_dir.name, key)
    if present(tag):
        labels = client.images.get(tag).labels or {}
        if labels.get("org.jailbake.key") != key:  # the tag holds 20 digits of the key
            raise EngineError(
                f"docker/{context_dir.name}/: image {tag} is labelled as builder "
                f"{labels.get('org.jailbake.key')!r}, not {key}; remove it (podman rmi {tag})"
            )
        return tag
    if offline:
        raise EngineError(
            f"docker/{context_dir.name}/: builder image {tag} is neither in the engine nor "
            "in a mirror, and --offline forbids building it; make it while online with "
            "'jailbake builders CONFIG', or give a mirror that holds it (jailbake mirror saves it)"
        )
    for base in base_images(context_dir):
        if not present(base):
            hint = " (create it with: jailbake base-image)" if base.startswith(BASE_IMAGE) else ""
            raise EngineError(
                f"docker/{context_dir.name}/Dockerfile: base image {base} is not "
                f"in the engine{hint}"
            )
    log.info("building builder image %s", tag)
    try:
        client.images.build(
            path=str(context_dir), tag=tag, rm=True, pull=False, labels={"org.jailbake.key": key}
        )
    except BuildError as exc:
        lines = [str(c.get("stream", c.get("error", ""))).rstrip() for c in exc.build_log]
        tail = "\n".join(line for line in lines if line)[-4000:]
        raise EngineError(
            f"docker/{context_dir.name}/Dockerfile: image build failed: {exc.msg}\n{tail}"
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


def make_base_image(client: Any, suite: str, mirror: str, workdir: Path) -> str:
    """Create BASE_IMAGE:suite with mmdebstrap and import it through the engine API."""
    if not re.fullmatch(r"[a-z][a-z0-9.-]*", suite):
        raise EngineError(f"--suite: expected a Debian suite such as bookworm, got {suite!r}")
    if not re.fullmatch(r"(mirror\+)?(https?|file)://[^\s]+", mirror):
        raise EngineError(
            f"base-image: the Debian mirror (--mirror, else this machine's apt sources): "
            f"expected an http(s):// or file:// URL, got {mirror!r}"
        )
    tag = f"{BASE_IMAGE}:{suite}"
    tarball = workdir / f"{suite}.tar"
    run.run(
        [
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            "--include=ca-certificates",
            "--",
            suite,
            tarball,
            mirror,
        ]
    )
    with tarball.open("rb") as f:
        reply = client.api.import_image_from_data(f, repository=tag)
    image_id = re.search(r'"id"\s*:\s*"([^"]+)"', str(reply))
    if image_id:  # engines that ignore a tag given with the repository name
        client.images.get(image_id.group(1)).tag(BASE_IMAGE, suite)
    client.images.get(tag)
    return tag
