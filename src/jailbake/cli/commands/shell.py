"""jailbake shell."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import context, grammar

NAME = "shell"
HELP = (
    "a shell in a recipe's build environment: its builder, sources, dependencies, "
    "variables and $OUT, without network"
)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("args", nargs="+", metavar="[CONFIG] RECIPE", help="configuration and recipe")
    sp.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="open a failed step's kept work directory (build --keep-failed prints it)",
    )
    sp.add_argument(
        "-c",
        "--command",
        dest="shell_command",
        metavar="CMD",
        help="run CMD there instead of an interactive shell; its exit status is the shell's",
    )
    grammar.executor(sp, remembered=True)


def run(args: argparse.Namespace) -> int:
    from ...bake.shell import open_shell

    config, (name,) = context.split_config(args.args, "shell [CONFIG] RECIPE")
    graph, builder = context.builder_of(args, config, (name,), reading=False)
    context.recipe_of(graph, name, "shell")
    return open_shell(graph, builder, name, command=args.shell_command, workdir=args.workdir)
