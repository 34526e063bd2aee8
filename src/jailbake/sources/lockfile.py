"""jailbake lock, as `kas lock`: the commit of every remote layer repository written
into the first layer file's lock file (`<name>.lock.yml`, kas's format:
`overrides: repos: NAME: commit: ...`), which kas and jailbake then read with it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from ..model.layer import load_layers
from .layerrepos import LayerRepos


def lock_path(config: Path) -> Path:
    return config.parent / f"{config.stem}.lock{config.suffix}"


def write_lock(
    files: Sequence[Path], repos: LayerRepos, *, update: bool = False
) -> tuple[Path, dict[str, str]]:
    """Pin every remote repository of the layer files: at the commits their lock file
    already holds, or (update, or none yet) at the newest commit of each branch or tag."""
    layer = load_layers(files, repos=repos, use_lock=not update)
    pins = {name: commit for name, _, commit in sorted(layer.repos)}
    dest = lock_path(layer.files[0])
    document = {"header": {"version": 14}, "overrides": {"repos": {
        name: {"commit": commit} for name, commit in pins.items()}}}  # fmt: skip
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    tmp.write_text(
        "# Written by jailbake lock: the commit of each remote layer repository.\n"
        + yaml.safe_dump(document, sort_keys=False)
    )
    os.replace(tmp, dest)
    return dest, pins
