"""The entry point: parses the command line, runs the command, and turns exceptions
into one error line and an exit code (the only place that does)."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import gc
import json
import logging
import os
import shlex
import signal
import sys
import traceback
from collections.abc import Sequence

from ..core.errors import BuildError, Failures, JailbakeError
from .context import looks_like_config
from .grammar import COMMANDS, command, parser


def _with_command(argv: list[str]) -> list[str]:
    """argv with its command: 'build' when none is given. A first word that is neither a
    command nor a layer file is an unknown command, not a layer file that is missing."""
    lead = 0
    while lead < len(argv) and argv[lead] in ("-v", "--verbose"):
        lead += 1
    if lead < len(argv) and (argv[lead] in COMMANDS or argv[lead] in ("-h", "--help", "--version")):
        return argv
    word = argv[lead] if lead < len(argv) else ""
    if word and not word.startswith("-") and not looks_like_config(word):
        close = difflib.get_close_matches(word, COMMANDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise JailbakeError(
            f"unknown command {word!r}{hint} (commands: {', '.join(COMMANDS)}; "
            "a CONFIG is a layer file such as layers/x.yml)"
        )
    return [*argv[:lead], "build", *argv[lead:]]


GC_FIRST_THRESHOLD = 10_000


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `jailbake` and `python3 build.py`."""
    raw = list(sys.argv[1:] if argv is None else argv)
    wants_json = "--json" in raw
    try:
        argv = _with_command(raw)
        word = next((w for w in argv if w not in ("-v", "--verbose")), None)
        args = parser(word if word in COMMANDS else None).parse_args(argv)
    except JailbakeError as exc:
        return _fail(argparse.Namespace(json=wants_json), str(exc), exc.exit_code)
    except SystemExit as exc:  # argparse said why on stderr
        if exc.code not in (0, None) and wants_json:
            print(json.dumps({"ok": False, "error": "bad arguments", "exit": exc.code}))
        raise
    # A build keeps what it makes to its end (recipes, keys, results): at the default
    # first threshold (700 new objects) the collector would walk them some 50 times.
    gc.set_threshold(GC_FIRST_THRESHOLD, *gc.get_threshold()[1:])
    # A CI job cancelled with SIGTERM stops its step containers like Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="[jailbake] %(message)s"
    )
    try:
        code: int = command(args.command).run(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BuildError as exc:
        if exc.tail:
            print(f"--- last lines of {exc.log_path} ---\n{exc.tail}\n---", file=sys.stderr)
        _kept_hint(args, exc)
        return _fail(args, str(exc), exc.exit_code)
    except Failures as exc:
        for _, error in exc.errors:
            if isinstance(error, BuildError):
                _kept_hint(args, error)
        return _fail(args, str(exc), exc.exit_code)
    except JailbakeError as exc:
        return _fail(args, str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", 130, prefix="jailbake: ")
    except BrokenPipeError:
        # The reader went away (jailbake list | head -1): stop quietly, as cat does.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        # The machine, not the input: a full disk, a vanished engine or directory.
        if args.verbose:
            traceback.print_exc()
        return _fail(args, _describe_os_error(exc), 1)
    except Exception as exc:  # a bug: one line, and the traceback with -v
        if args.verbose:
            traceback.print_exc()
        detail = str(exc).splitlines()[0] if str(exc) else ""
        return _fail(
            args,
            f"{type(exc).__name__}: {detail} (run with -v for the traceback)",
            1,
            prefix="jailbake: internal error: ",
        )


def _kept_hint(args: argparse.Namespace, exc: BuildError) -> None:
    """How to step into a failed step that build --keep-failed kept."""
    if exc.kept is None:
        return
    words = ["jailbake", "shell"]
    if getattr(args, "config", None):
        words.append(args.config)
    words += [exc.recipe, "--workdir", str(exc.kept), "--executor", args.executor]
    if args.cache_dir:
        words += ["--cache-dir", str(args.cache_dir)]
    print(
        f"[jailbake] {exc.recipe}: kept the failed step's work directory; step into it "
        f"with:\n    {shlex.join(words)}",
        file=sys.stderr,
    )


def _fail(args: argparse.Namespace, message: str, code: int, prefix: str = "") -> int:
    """One line on stderr; with --json also the JSON line a script waits for."""
    print(f"{prefix or 'jailbake: error: '}{message}", file=sys.stderr)
    if getattr(args, "json", False):
        with contextlib.suppress(OSError):
            print(json.dumps({"ok": False, "error": message, "exit": code}), flush=True)
    return code


def _describe_os_error(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    text = exc.strerror or (str(exc).splitlines() or [type(exc).__name__])[0]
    return f"{text}{where}"


if __name__ == "__main__":
    sys.exit(main())
