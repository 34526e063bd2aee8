"""The command line's grammar: the top level, and the options commands share.

Each command's own flags are in its module under commands/ (add_arguments); the
command-line reference and the man page are generated from this grammar
(jailbake.cli.manual)."""

from __future__ import annotations

import argparse
import functools
import importlib
from pathlib import Path
from types import ModuleType

from .. import __version__

COMMANDS = (
    "build",
    "fetch",
    "builders",
    "mirror",
    "publish",
    "verify-release",
    "cve",
    "list",
    "explain",
    "graph",
    "dump",
    "lock",
    "legal-info",
    "log",
    "shell",
    "workspace",
    "clean",
    "run",
    "verify",
    "repro",
    "base-image",
    "lock-builders",
)
EXECUTORS = ("docker", "host", "remote")
EXECUTOR_HELP = (
    "where steps run: fresh containers, or this machine: under bubblewrap where it "
    "works, otherwise UNCONFINED with your rights (root's, for root), or a Remote "
    "Execution API service (--remote-executor)"
)
CONFIG_HELP = (
    "layer file(s), colon-separated, later files overriding earlier ones "
    "(default: layers/rpi4-jailhouse.yml)"
)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, but not the empty ones (None, [], False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, [], False, argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def _subparser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
) -> argparse.ArgumentParser:
    sp = sub.add_parser(
        name, help=text, description=text, allow_abbrev=False, formatter_class=_Formatter
    )
    # Global options are accepted after the command too.
    sp.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="debug logging, and the traceback of an unexpected error",
    )
    return sp


def config(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("config", nargs="?", metavar="CONFIG", help=CONFIG_HELP)


def targets(sp: argparse.ArgumentParser, what: str) -> None:
    sp.add_argument("--target", action="append", default=[], metavar="NAME", help=what)


def cache_dir(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache directory (default: $JAILBAKE_CACHE_DIR, else ~/.cache/jailbake)",
    )


def executor(sp: argparse.ArgumentParser, *, remembered: bool) -> None:
    cache_dir(sp)
    sp.add_argument(
        "--remote-executor",
        metavar="URL",
        help="with --executor remote: grpc://HOST:PORT or grpcs://HOST:PORT of a Remote "
        "Execution API service (default: the layer's JAILBAKE_REMOTE_EXECUTOR)",
    )
    sp.add_argument(
        "--remote-instance",
        metavar="NAME",
        help="the service's instance name (default: the layer's JAILBAKE_REMOTE_INSTANCE)",
    )
    sp.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=None if remembered else "docker",
        help=EXECUTOR_HELP
        + (
            " (default: the one the last build of this configuration used, else docker)"
            if remembered
            else ""
        ),
    )


def mirrors(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="DIR|URL",
        help="look for sources here first, by sha256 and by file name (repeatable)",
    )


def offline(sp: argparse.ArgumentParser) -> None:
    """--offline for commands that fetch: only the cache and the mirrors."""
    sp.add_argument(
        "--offline", action="store_true", help="never download: only the cache and mirrors"
    )


def artifacts_dir(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--artifacts-dir",
        type=Path,
        default=Path("artifacts"),
        help="where built artifacts and manifest.json go",
    )


def provenance(sp: argparse.ArgumentParser, *, optional: bool = True) -> None:
    """--provenance (for build) and --builder-id."""
    from ..release.provenance import DEFAULT_BUILDER

    if optional:
        sp.add_argument(
            "--provenance",
            action="store_true",
            help="write provenance.intoto.json (in-toto, SLSA Provenance v1) into the "
            "artifacts directory: what was built from what, and how this run went",
        )
    sp.add_argument(
        "--builder-id",
        default=DEFAULT_BUILDER,
        metavar="URI",
        help="who ran the build, as the provenance names it (a CI job's URL, say)",
    )


def sources(sp: argparse.ArgumentParser) -> None:
    """The options of commands that fetch sources: fetch, mirror, legal-info."""
    sp.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME",
        help="only the sources these recipes need (repeatable; default: the layer's target)",
    )
    sp.add_argument("-j", "--jobs", type=int, default=4, help="downloads at a time")
    mirrors(sp)
    cache_dir(sp)


def command(name: str) -> ModuleType:
    """The module of a command: NAME, HELP, add_arguments and run."""
    if name not in COMMANDS:
        raise KeyError(name)
    return importlib.import_module(f"{__package__}.commands.{name.replace('-', '_')}")


@functools.cache
def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; only: just that command's part of it (all that parsing
    its arguments needs). Parsing does not change it."""
    p = argparse.ArgumentParser(
        prog="jailbake",
        description="Reproducible image builds from kas layer files and declarative recipes. "
        "Without a command, 'build' is meant.",
        allow_abbrev=False,
        formatter_class=_Formatter,
    )
    p.add_argument("--version", action="version", version=f"jailbake {__version__}")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging, and the traceback of an unexpected error",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS if only is None else (only,):
        module = command(name)
        module.add_arguments(_subparser(sub, module.NAME, module.HELP))
    return p
