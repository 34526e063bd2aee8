"""jailbake publish."""

from __future__ import annotations

import argparse
import sys

from ...core.errors import JailbakeError
from .. import context, grammar

NAME = "publish"
HELP = (
    "publish the built artifacts with SHA256SUMS, manifest.json, an SPDX SBOM and their "
    "provenance, signed with --sign"
)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    grammar.config(sp)
    sp.add_argument(
        "--to", required=True, metavar="DIR|URL", help="a directory, or a URL to PUT to"
    )
    sp.add_argument(
        "--sign",
        action="append",
        default=[],
        metavar="KEY",
        help="sign SHA256SUMS, the provenance and the SBOM: [ssh:|minisign:|gpg:]KEY, a key "
        "file (an OpenSSH public key whose private key is in ssh-agent will do) or a GnuPG "
        "key id; repeatable",
    )
    grammar.provenance(sp, optional=False)
    grammar.artifacts_dir(sp)


def run(args: argparse.Namespace) -> int:
    from ...bake.attest import checkout_of
    from ...release.provenance import Run
    from ...release.publish import load_manifest, publish_release
    from ...release.signing import signing_key

    keys = [signing_key(spec) for spec in args.sign]  # every key checked before any work
    checkout = None
    if args.config:
        from ...release.artifacts import layer_names

        configs = context.configs(args.config)
        wanted = layer_names(context.context_of(args, reading=True).layers(configs))
        built = load_manifest(args.artifacts_dir).get("layers", [])
        if wanted != built:
            raise JailbakeError(
                f"publish: {args.artifacts_dir} holds a build of {':'.join(built)}, "
                f"not of {':'.join(wanted)}; build it first"
            )
        checkout = checkout_of(configs)
    # Used only if the build left no run details (build --provenance records them).
    # No times and no invocation: the same release, published again, is the same bytes.
    fallback = Run(
        builder_id=args.builder_id,
        executor="unrecorded",
        invocation="",
        checkout=checkout,
        written_by="publish",
    )
    files, sent, from_build = publish_release(args.artifacts_dir, args.to, fallback, keys)
    if not from_build:
        print(
            "[jailbake] provenance: the build left no run details (build --provenance "
            "records them); the provenance has no start and end times",
            file=sys.stderr,
        )
    print(
        f"[jailbake] published {len(files)} files to {args.to} ({sent} sent, "
        f"{len(files) - sent} already there)",
        file=sys.stderr,
    )
    return 0
