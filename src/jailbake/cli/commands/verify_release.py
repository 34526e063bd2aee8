"""jailbake verify-release."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import context, grammar

if TYPE_CHECKING:
    from ...release.verify import Expected

NAME = "verify-release"
HELP = (
    "check a published release: signatures, every file against SHA256SUMS, the "
    "provenance against the files and, given CONFIG, against the layer checkout"
)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("release", type=Path, metavar="DIR", help="the release directory")
    sp.add_argument(
        "config",
        nargs="?",
        metavar="CONFIG",
        help="the layer file(s) of the checkout the release claims to be built from: "
        "their digests, the commit and every source pin must be the provenance's",
    )
    sp.add_argument(
        "--key",
        required=True,
        type=Path,
        metavar="PUB",
        help="the public key: OpenSSH (one line), minisign, or GnuPG",
    )
    grammar.cache_dir(sp)


def run(args: argparse.Namespace) -> int:
    from ...release.signing import public_key
    from ...release.verify import targets_of, verify_release

    key = public_key(args.key)
    expected = None
    if args.config:
        expected = _expected(args, targets_of(args.release))
    found = verify_release(args.release, key, expected)
    for problem in found.problems:
        print(problem)
    for note in found.notes:
        print(f"[jailbake] note: {note}", file=sys.stderr)
    count = len(found.problems)
    verdict = "good" if not count else f"{count} problem{'s' if count > 1 else ''}"
    print(
        f"[jailbake] verify-release {args.release}: {found.files} files, "
        f"{found.signatures} signatures ({key.scheme}): {verdict}",
        file=sys.stderr,
    )
    return 1 if found.problems else 0


def _expected(args: argparse.Namespace, targets: list[str]) -> Expected:
    from ...bake.attest import checkout_of
    from ...cache.keys import file_sha256
    from ...release.artifacts import layer_names
    from ...release.provenance import source_dependency
    from ...release.verify import Expected

    configs = context.configs(args.config)
    graph = context.context_of(args, reading=True).graph(configs, tuple(targets))
    names = layer_names(graph.layer)
    checkout = checkout_of(configs)
    deps = [
        dep
        for name in graph.order
        for source in graph.recipes[name].sources
        if (dep := source_dependency(name, source.pin())) is not None
    ]
    return Expected(
        configuration=[
            {"path": n, "sha256": file_sha256(f)}
            for n, f in zip(names, graph.layer.files, strict=True)
        ],
        commit=checkout.commit if checkout else None,
        dependencies=deps,
    )
