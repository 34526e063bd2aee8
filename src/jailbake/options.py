"""The command line's grammar: every command, option, default and help text."""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

from . import __version__

COMMANDS = (
    "build",
    "fetch",
    "builders",
    "mirror",
    "publish",
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
    "base-image",
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


def _config(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("config", nargs="?", metavar="CONFIG", help=CONFIG_HELP)


def _targets(sp: argparse.ArgumentParser, what: str) -> None:
    sp.add_argument("--target", action="append", default=[], metavar="NAME", help=what)


def _cache_dir(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache directory (default: $JAILBAKE_CACHE_DIR, else ~/.cache/jailbake)",
    )


def _executor(sp: argparse.ArgumentParser, *, remembered: bool) -> None:
    _cache_dir(sp)
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


def _mirrors(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="DIR|URL",
        help="look for sources here first, by sha256 and by file name (repeatable)",
    )


def _artifacts_dir(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--artifacts-dir",
        type=Path,
        default=Path("artifacts"),
        help="where built artifacts and manifest.json go",
    )


@functools.cache
def parser() -> argparse.ArgumentParser:
    """The whole command line; parsing does not change it."""
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

    b = _subparser(sub, "build", "build the targets of a layer configuration (the default)")
    _config(b)
    b.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME",
        help="recipe to build, in this order (repeatable; default: the layer's target)",
    )
    b.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="recipes built in parallel, and $JOBS inside each step",
    )
    b.add_argument(
        "-k",
        "--keep-going",
        action="store_true",
        help="after a failure, build everything that does not depend on it; "
        "list every failure at the end",
    )
    b.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="NAME",
        help="build this recipe again even if its result is cached, and say whether the "
        "new output is identical (repeatable)",
    )
    b.add_argument(
        "--keep-failed",
        action="store_true",
        help="keep a failed step's work directory and print the 'jailbake shell' command "
        "that opens it",
    )
    _artifacts_dir(b)
    _mirrors(b)
    b.add_argument(
        "--offline",
        action="store_true",
        help="never open a connection; fail listing every missing source",
    )
    b.add_argument(
        "--remote-cache",
        metavar="URL",
        help="a shared cache speaking Bazel's HTTP cache protocol (/ac/, /cas/)",
    )
    b.add_argument(
        "--remote-cache-readonly",
        action="store_true",
        help="use the remote cache's results but never upload (untrusted builds)",
    )
    b.add_argument(
        "--json",
        action="store_true",
        help='end with one JSON line on stdout: the report, or {"ok": false, "error": ...}',
    )
    _executor(b, remembered=False)

    def sources(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--target",
            action="append",
            default=[],
            metavar="NAME",
            help="only the sources these recipes need (repeatable; default: the layer's target)",
        )
        sp.add_argument("-j", "--jobs", type=int, default=4, help="downloads at a time")
        _mirrors(sp)
        _cache_dir(sp)

    fe = _subparser(sub, "fetch", "download every source of the graph into the cache")
    _config(fe)
    sources(fe)

    bu = _subparser(
        sub,
        "builders",
        "make every builder image the configurations use (build, or load from a mirror), "
        "so that later builds need no network for them",
    )
    bu.add_argument(
        "configs",
        nargs="*",
        metavar="CONFIG",
        help="one or more layer configurations, each may be colon-separated "
        "(default: layers/rpi4-jailhouse.yml)",
    )
    bu.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="DIR",
        help="load saved images from this mirror directory instead of building (repeatable)",
    )

    mi = _subparser(
        sub, "mirror", "write every source and builder image of the graph into a directory"
    )
    mi.add_argument("args", nargs="+", metavar="[CONFIG] DIR", help="configuration and mirror")
    mi.add_argument(
        "--no-images", action="store_true", help="sources only, no builder or base images"
    )
    sources(mi)

    pu = _subparser(
        sub,
        "publish",
        "publish the built artifacts with SHA256SUMS, manifest.json and an SPDX SBOM",
    )
    _config(pu)
    pu.add_argument(
        "--to", required=True, metavar="DIR|URL", help="a directory, or a URL to PUT to"
    )
    _artifacts_dir(pu)

    du = _subparser(
        sub,
        "dump",
        "the layer files' merged configuration as YAML (as kas dump), and where each "
        "recipe comes from",
    )
    _config(du)
    _targets(du, "only the recipes these need (repeatable; default: the layer's target)")
    du.add_argument(
        "--resolve-refs",
        action="store_true",
        help="name the commit each remote layer repository's branch or tag resolved to",
    )
    du.add_argument(
        "--lock", action="store_true", help="print the lock file instead (as kas dump --lock)"
    )
    _cache_dir(du)

    lo = _subparser(
        sub,
        "lock",
        "pin every remote layer repository at its commit in <config>.lock.yml (kas's lock "
        "file format)",
    )
    _config(lo)
    lo.add_argument(
        "--update", action="store_true", help="move to the newest commit of each branch or tag"
    )
    _cache_dir(lo)

    li = _subparser(
        sub,
        "legal-info",
        "licences, licence texts, and the exact sources and patches of every recipe, "
        "with a manifest.csv (as Buildroot's legal-info)",
    )
    li.add_argument("args", nargs="+", metavar="[CONFIG] DIR", help="configuration and output")
    li.add_argument(
        "--offline", action="store_true", help="never download: only the cache and mirrors"
    )
    sources(li)

    ls = _subparser(sub, "list", "every recipe of the graph with version, key and pins")
    _config(ls)
    ls.add_argument("--json", action="store_true", help="print the list as JSON")
    _executor(ls, remembered=True)

    ex = _subparser(sub, "explain", "a recipe's key inputs and what changed since its last build")
    ex.add_argument("args", nargs="+", metavar="[CONFIG] RECIPE", help="configuration and recipe")
    _executor(ex, remembered=True)

    gr = _subparser(
        sub,
        "graph",
        "the recipe graph as Graphviz DOT (or SVG): versions, cache states, targets",
    )
    _config(gr)
    _targets(gr, "only what these recipes need (repeatable; default: the layer's target)")
    gr.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="write to FILE: DOT, or SVG when it ends in .svg (needs Graphviz's dot); "
        "default: DOT on stdout",
    )
    _executor(gr, remembered=True)

    lo = _subparser(sub, "log", "print the log of a recipe's last build")
    lo.add_argument("args", nargs="+", metavar="[CONFIG] RECIPE", help="configuration and recipe")
    lo.add_argument("--path", action="store_true", help="print only where the log is")
    _cache_dir(lo)

    sh = _subparser(
        sub,
        "shell",
        "a shell in a recipe's build environment: its builder, sources, dependencies, "
        "variables and $OUT, without network",
    )
    sh.add_argument("args", nargs="+", metavar="[CONFIG] RECIPE", help="configuration and recipe")
    sh.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="open a failed step's kept work directory (build --keep-failed prints it)",
    )
    sh.add_argument(
        "-c",
        "--command",
        dest="shell_command",
        metavar="CMD",
        help="run CMD there instead of an interactive shell; its exit status is the shell's",
    )
    _executor(sh, remembered=True)

    ws = _subparser(
        sub,
        "workspace",
        "edit a recipe's sources: unpacked and patched into DIR as a git repository (one "
        "commit per patch), which builds then take the recipe's sources from",
    )
    ws.add_argument(
        "args",
        nargs="*",
        metavar="[CONFIG] RECIPE [DIR]",
        help="configuration, recipe, and where its sources go (default: workspace/RECIPE); "
        "none: list the active workspaces",
    )
    ending = ws.add_mutually_exclusive_group()
    ending.add_argument(
        "--finish",
        action="store_true",
        help="write the workspace's commits back as the recipe's patches and end it",
    )
    ending.add_argument(
        "--reset",
        action="store_true",
        help="end the workspace, dropping its commits' effect on builds (DIR stays)",
    )
    ws.add_argument(
        "--layer",
        type=Path,
        metavar="DIR",
        help="with --finish: write the recipe, with its new patches, into this recipe "
        "directory of a later layer (which then overrides it) instead of its own",
    )
    _mirrors(ws)
    ws.add_argument(
        "--offline", action="store_true", help="never download: only the cache and mirrors"
    )
    _executor(ws, remembered=True)

    cl = _subparser(
        sub,
        "clean",
        "remove recipes' results from the cache, or with --all everything the graph no longer uses",
    )
    cl.add_argument(
        "args", nargs="*", metavar="[CONFIG] [RECIPE]", help="configuration and recipes"
    )
    cl.add_argument(
        "--ccache",
        action="store_true",
        help="empty the builder images' compiler caches (ccache) as well, or only them",
    )
    cl.add_argument(
        "--all",
        action="store_true",
        help="remove every result, tree, download and log this configuration does not "
        "use: in a cache shared with other configurations, theirs too",
    )
    _executor(cl, remembered=True)

    rn = _subparser(sub, "run", "boot the layer's built image under qemu-system-aarch64")
    _config(rn)
    _artifacts_dir(rn)
    rn.add_argument("--kernel", help="kernel image (default: the layer's JAILBAKE_QEMU_KERNEL)")
    rn.add_argument("--initrd", help="initramfs (default: the layer's JAILBAKE_QEMU_INITRD)")
    rn.add_argument("--append", help="kernel command line (default: the layer's)")
    rn.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="TEXT",
        help="run without a terminal: stop when every TEXT has appeared on the "
        "console (exit 0), or at --timeout (exit 1)",
    )
    rn.add_argument(
        "--send",
        action="append",
        default=[],
        metavar="PROMPT=>LINE",
        help="with --expect: type LINE once PROMPT has appeared (repeatable)",
    )
    rn.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for --expect texts"
    )

    ve = _subparser(
        sub, "verify", "hash every file of the cache again and check its records (git fsck)"
    )
    ve.add_argument(
        "--repair",
        action="store_true",
        help="remove what is wrong; it is built or fetched again when next needed",
    )
    _cache_dir(ve)

    bi = _subparser(
        sub,
        "base-image",
        "create the builders' Debian base image with mmdebstrap and import it into the "
        "engine (needs root)",
    )
    bi.add_argument("--suite", default="bookworm", help="Debian suite")
    bi.add_argument("--mirror", default=None, help="Debian mirror (default: this machine's)")
    bi.add_argument("--force", action="store_true", help="recreate it even if present")

    return p
