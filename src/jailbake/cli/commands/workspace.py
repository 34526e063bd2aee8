"""jailbake workspace."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...core.errors import JailbakeError
from .. import context, grammar

NAME = "workspace"
HELP = (
    "edit a recipe's sources: unpacked and patched into DIR as a git repository (one "
    "commit per patch), which builds then take the recipe's sources from"
)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "args",
        nargs="*",
        metavar="[CONFIG] RECIPE [DIR]",
        help="configuration, recipe, and where its sources go (default: workspace/RECIPE); "
        "none: list the active workspaces",
    )
    ending = sp.add_mutually_exclusive_group()
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
    sp.add_argument(
        "--layer",
        type=Path,
        metavar="DIR",
        help="with --finish: write the recipe, with its new patches, into this recipe "
        "directory of a later layer (which then overrides it) instead of its own",
    )
    grammar.mirrors(sp)
    grammar.offline(sp)
    grammar.executor(sp, remembered=True)


def run(args: argparse.Namespace) -> int:
    from ...bake.edit import finish_workspace, list_workspaces, reset_workspace, start_workspace

    words = list(args.args)
    if args.layer is not None and not args.finish:
        raise JailbakeError("workspace: --layer goes with --finish")
    if not words:
        if args.finish or args.reset:
            raise JailbakeError("workspace: name the recipe whose workspace ends")
        for line in list_workspaces(context.context_of(args, reading=True).store):
            print(line)
        return 0
    if args.finish or args.reset:
        config, (name,) = context.split_config(words, "workspace --finish|--reset [CONFIG] RECIPE")
        graph, builder = context.builder_of(args, config, (name,), keys=False, reading=False)
        context.recipe_of(graph, name, "workspace")
        if args.reset:
            print(reset_workspace(builder, name), file=sys.stderr)
        else:
            print(finish_workspace(graph, builder, name, args.layer), file=sys.stderr)
        return 0
    if len(words) == 3 or (len(words) == 2 and context.looks_like_config(words[0])):
        config, name, dest = words[0], words[1], (words[2] if len(words) == 3 else None)
    elif len(words) <= 2:
        config, name, dest = None, words[0], (words[1] if len(words) == 2 else None)
    else:
        raise JailbakeError("expected workspace [CONFIG] RECIPE [DIR]")
    graph, builder = context.builder_of(
        args, config, (name,), keys=False, reading=False, fetching=True
    )
    context.recipe_of(graph, name, "workspace")
    print(start_workspace(graph, builder, name, dest), file=sys.stderr)
    return 0
