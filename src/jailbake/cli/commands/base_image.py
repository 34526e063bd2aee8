"""jailbake base-image."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "base-image"
HELP = (
    "create the builders' Debian base image with mmdebstrap and import it into the "
    "engine (needs root)"
)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--suite", default="bookworm", help="Debian suite")
    sp.add_argument("--mirror", default=None, help="Debian mirror (default: this machine's)")
    sp.add_argument("--force", action="store_true", help="recreate it even if present")


def run(args: argparse.Namespace) -> int:
    import tempfile

    from ...executors import engine

    client = engine.connect()
    tag = f"{engine.BASE_IMAGE}:{args.suite}"
    if not args.force:
        try:
            client.images.get(tag)
            print(f"{tag} is present")
            return 0
        except Exception:
            pass
    with tempfile.TemporaryDirectory(prefix="jailbake-base-") as tmp:
        engine.make_base_image(client, args.suite, args.mirror or engine.apt_mirror(), Path(tmp))
    print(f"created {tag}")
    return 0
