"""The SHA1 of a stored file, remembered by its sha256 (SPDX wants both)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from .store import Store


def sha1_of(store: Store, path: Path, sha256: str) -> str:
    """The SHA1 of a file whose sha256 is known (SPDX wants both), remembered by
    sha256 so that a build with nothing changed does not read its images again."""
    memo = store.root / "sha1" / sha256
    try:
        known = memo.read_text().strip()
    except OSError:
        known = ""
    if re.fullmatch(r"[0-9a-f]{40}", known):
        return known
    digest = hashlib.sha1()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = store.temp_path("sha1")
    tmp.write_text(digest.hexdigest())
    os.replace(tmp, memo)
    return digest.hexdigest()
