"""The command-line reference (Markdown) and the jailbake(1) man page (roff), both
generated from the argparse grammar, so that neither can drift from --help.

    python -m jailbake.cli.manual --markdown docs/reference/cli.md --man docs/man/jailbake.1
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from .grammar import COMMANDS, parser

HEADER = (
    "<!-- Generated from jailbake's argparse grammar by python -m jailbake.cli.manual; "
    "do not edit. -->"
)


@dataclass(frozen=True)
class Option:
    names: str  # "-j, --jobs JOBS" or "CONFIG"
    help: str
    default: str | None


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    usage: str
    arguments: list[Option]
    options: list[Option]


def _default(action: argparse.Action) -> str | None:
    if action.default in (None, [], False, argparse.SUPPRESS) or action.help is None:
        return None
    if "%(default)" in action.help:
        return None
    return str(action.default)


def _option(action: argparse.Action) -> Option:
    if action.option_strings:
        names = ", ".join(action.option_strings)
        if action.nargs != 0:
            metavar = action.metavar or (action.dest.upper() if not action.choices else None)
            if metavar is None:
                metavar = "{" + ",".join(map(str, action.choices or ())) + "}"
            names += f" {metavar}"
    else:
        names = str(action.metavar or action.dest)
    text = (action.help or "") % {"default": action.default, "prog": "jailbake"}
    return Option(names, text, _default(action))


def commands(top: argparse.ArgumentParser | None = None) -> Iterator[Command]:
    top = top or parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    for name in COMMANDS:
        sp = sub.choices[name]
        actions = [a for a in sp._actions if a.help is not argparse.SUPPRESS]
        arguments = [_option(a) for a in actions if not a.option_strings]
        options = [
            _option(a)
            for a in actions
            if a.option_strings and not isinstance(a, argparse._HelpAction)
        ]
        usage = " ".join(sp.format_usage().removeprefix("usage: ").split())
        yield Command(name, helps[name], usage, arguments, options)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def markdown() -> str:
    top = parser()
    lines = [
        HEADER,
        "",
        "# Command-line reference",
        "",
        _md(top.description or ""),
        "",
        "    " + " ".join(top.format_usage().removeprefix("usage: ").split()),
        "",
        "Global options, accepted before or after the command: `-v, --verbose` (debug "
        "logging, and the traceback of an unexpected error), `--version`, `-h, --help`.",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    found = list(commands(top))
    lines += [f"| [`{c.name}`](#{c.name}) | {_md(c.help)} |" for c in found]
    for c in found:
        lines += ["", f"## {c.name}", "", _md(c.help) + ".", "", f"    {c.usage}", ""]
        for title, items in (("Arguments", c.arguments), ("Options", c.options)):
            if not items:
                continue
            lines += [f"{title}:", ""]
            for o in items:
                default = f" (default: `{o.default}`)" if o.default is not None else ""
                lines.append(f"- `{o.names}`: {_md(o.help)}{default}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _roff(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line
                     for line in text.splitlines())  # fmt: skip


def man_page() -> str:
    top = parser()
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0)
    date = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d")
    out = [
        f'.TH JAILBAKE 1 "{date if epoch else ""}" "jailbake {__version__}" "User Commands"',
        ".SH NAME",
        "jailbake \\- reproducible image builds from kas layer files and declarative recipes",
        ".SH SYNOPSIS",
        ".B jailbake",
        "[\\fB\\-v\\fR] [\\fICOMMAND\\fR] [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        _roff(top.description or ""),
        ".SH COMMANDS",
    ]
    for c in commands(top):
        out += [f".SS {_roff(c.name)}", _roff(c.help) + ".", ".PP", ".nf", _roff(c.usage), ".fi"]
        for o in [*c.arguments, *c.options]:
            default = f" (default: {o.default})" if o.default is not None else ""
            out += [".TP", f"\\fB{_roff(o.names)}\\fR", _roff(o.help + default)]
    out += [
        ".SH ENVIRONMENT",
        ".TP",
        "\\fBJAILBAKE_CACHE_DIR\\fR",
        "The cache directory when \\-\\-cache\\-dir is not given (default: ~/.cache/jailbake).",
        ".TP",
        "\\fBDOCKER_HOST\\fR",
        "The container engine's Docker API (the docker executor).",
        ".SH EXIT STATUS",
        "0 on success; 2 for bad input (a layer, recipe, lock file or argument) or a "
        "failed build; 1 for a failure of the machine (a full disk, a damaged cache "
        "entry), for problems verify found, and when run \\-\\-expect did not see its "
        "texts; 3 when no container engine answers; 130 when interrupted; 141 when "
        "the reader of the output went away.",
        ".SH SEE ALSO",
        "The manual in docs/ of the jailbake source tree; docs/reference/ lists recipe "
        "fields, layer variables and environment variables.",
    ]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jailbake.cli.manual", description=__doc__)
    p.add_argument("--markdown", type=Path, help="write the command-line reference here")
    p.add_argument("--man", type=Path, help="write the man page here")
    args = p.parse_args(argv)
    if args.markdown is None and args.man is None:
        sys.stdout.write(markdown())
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown())
    if args.man is not None:
        args.man.parent.mkdir(parents=True, exist_ok=True)
        args.man.write_text(man_page())
    return 0


if __name__ == "__main__":
    sys.exit(main())
