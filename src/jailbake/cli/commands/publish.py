"""jailbake publish."""

from __future__ import annotations

import argparse
import sys

from ...core.errors import JailbakeError
from .. import context, grammar

NAME = "publish"
HELP = "publish the built artifacts with SHA256SUMS, manifest.json and an SPDX SBOM"


def add_arguments(sp: argparse.ArgumentParser) -> None:
    grammar.config(sp)
    sp.add_argument(
        "--to", required=True, metavar="DIR|URL", help="a directory, or a URL to PUT to"
    )
    grammar.artifacts_dir(sp)


def run(args: argparse.Namespace) -> int:
    from ...release.publish import load_manifest, publish_release

    if args.config:
        from ...release.artifacts import layer_names

        wanted = layer_names(
            context.context_of(args, reading=True).layers(context.configs(args.config))
        )
        built = load_manifest(args.artifacts_dir).get("layers", [])
        if wanted != built:
            raise JailbakeError(
                f"publish: {args.artifacts_dir} holds a build of {':'.join(built)}, "
                f"not of {':'.join(wanted)}; build it first"
            )
    files, sent = publish_release(args.artifacts_dir, args.to)
    print(
        f"[jailbake] published {len(files)} files to {args.to} ({sent} sent, "
        f"{len(files) - sent} already there)",
        file=sys.stderr,
    )
    return 0
