"""The provenance of a build, written when asked (build --provenance): what the
manifest says was built from what, and how this invocation ran (see
jailbake.release.provenance)."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

from ..cache.keys import file_sha256
from ..core import gitcmd
from ..core.errors import JailbakeError
from ..executors.step import ExecutorKind
from ..release import cdx, provenance
from ..release.artifacts import MANIFEST
from ..release.cdx import CDX
from ..release.spdx import SBOM
from .options import BuildOptions

log = logging.getLogger(__name__)


def checkout_of(configs: tuple[Path, ...]) -> provenance.Checkout | None:
    """The git checkout holding the first layer file, if it is in one."""
    state = gitcmd.checkout_state(configs[0].resolve()) if configs else None
    return provenance.Checkout(*state) if state else None


def endpoint_of(options: BuildOptions) -> str:
    if options.executor is ExecutorKind.REMOTE:
        instance = f"#{options.remote_instance}" if options.remote_instance else ""
        return f"{options.remote_executor or ''}{instance}"
    if options.executor is ExecutorKind.DOCKER:
        from ..executors import engine

        return next(iter(engine.engine_urls()), "")
    return ""


def image_digests(options: BuildOptions, manifest: dict[str, object]) -> dict[str, str]:
    """The engine's ids of the builder images the manifest names (none if no engine
    answers: the provenance then names them by key only)."""
    builders = manifest.get("builders")
    tags = {
        str(b["name"]): str(b["tag"])
        for b in (builders if isinstance(builders, list) else [])
        if isinstance(b, dict) and "tag" in b
    }
    if not tags or options.executor is not ExecutorKind.DOCKER:
        return {}
    from ..executors import engine

    try:
        client = engine.connect()
    except JailbakeError as exc:
        log.warning("provenance: builder image ids not recorded: %s", exc)
        return {}
    try:
        return engine.image_digests(client, tags)
    finally:
        client.close()


def attest(options: BuildOptions, started: datetime, finished: datetime, builder_id: str) -> Path:
    """Write provenance.intoto.json for the build just made into its artifacts dir."""
    art = options.artifacts_dir
    manifest = json.loads((art / MANIFEST).read_text())
    run = provenance.Run(
        builder_id=builder_id,
        executor=options.executor.value,
        endpoint=endpoint_of(options),
        started=started,
        finished=finished,
        image_digests=image_digests(options, manifest),
        checkout=checkout_of(options.configs),
    )
    cdx.write(art, manifest)  # the provenance vouches for both SBOMs
    subjects = [(a["path"], a["sha256"]) for a in manifest["artifacts"]]
    subjects += [(name, file_sha256(art / name)) for name in (MANIFEST, SBOM, CDX)]
    return provenance.write(art, MANIFEST, sorted(subjects), run)
