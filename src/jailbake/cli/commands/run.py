"""jailbake run."""

from __future__ import annotations

import argparse
import sys

from ...core.errors import JailbakeError
from .. import context, grammar

NAME = "run"
HELP = "boot the layer's built image under qemu-system-aarch64"


def add_arguments(sp: argparse.ArgumentParser) -> None:
    grammar.config(sp)
    grammar.artifacts_dir(sp)
    sp.add_argument("--kernel", help="kernel image (default: the layer's JAILBAKE_QEMU_KERNEL)")
    sp.add_argument("--initrd", help="initramfs (default: the layer's JAILBAKE_QEMU_INITRD)")
    sp.add_argument("--append", help="kernel command line (default: the layer's)")
    sp.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="TEXT",
        help="run without a terminal: stop when every TEXT has appeared on the "
        "console (exit 0), or at --timeout (exit 1)",
    )
    sp.add_argument(
        "--send",
        action="append",
        default=[],
        metavar="PROMPT=>LINE",
        help="with --expect: type LINE once PROMPT has appeared (repeatable)",
    )
    sp.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for --expect texts"
    )


def run(args: argparse.Namespace) -> int:
    from ...core import run
    from ...image import qemu

    layer = context.context_of(args, reading=True).layers(context.configs(args.config))
    overrides = {
        k: v
        for k, v in (("kernel", args.kernel), ("initrd", args.initrd), ("append", args.append))
        if v
    }
    machine = qemu.machine_from_layer(layer.variables(), args.artifacts_dir, overrides)
    if not args.expect:
        try:
            return run.run(machine.argv(), check=False).returncode
        except FileNotFoundError:
            raise JailbakeError(
                "run: qemu-system-aarch64 is not installed (Debian: "
                "apt-get install qemu-system-arm)"
            ) from None
    send = []
    for item in args.send:
        prompt, sep, line = item.partition("=>")
        if not sep:
            raise JailbakeError(f"run: --send {item!r}: expected PROMPT=>LINE")
        send.append((prompt, line))
    transcript = qemu.boot(machine, args.expect, send=send, timeout=args.timeout)
    print(transcript.text)
    if not transcript.found:
        missing = [e for e in args.expect if e not in transcript.text]
        print(
            f"jailbake: run: not seen within {args.timeout:.0f}s: {', '.join(missing)}",
            file=sys.stderr,
        )
        return 1
    print(
        f"[jailbake] run: all expected output seen after {transcript.seconds:.1f}s", file=sys.stderr
    )
    return 0
