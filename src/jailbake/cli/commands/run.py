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
    grammar.executor(sp, remembered=True)
    grammar.mirrors(sp)
    sp.add_argument(
        "--offline",
        action="store_true",
        help="build the layer's QEMU (JAILBAKE_QEMU_SYSTEM) from the cache and mirrors only",
    )
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
    from ...bake import emulate
    from ...bake.options import BuildOptions
    from ...core import run
    from ...executors.step import ExecutorKind
    from ...image import qemu
    from ...ui.view import BuildView

    configs = context.configs(args.config)
    reading = context.context_of(args, reading=True)
    layer = reading.layers(configs)
    variables = layer.variables()
    # Only a layer that names a QEMU recipe has run build (and fetch) anything.
    work_context = (
        context.context_of(args, reading=False) if variables.get(emulate.SYSTEM) else reading
    )
    overrides = {
        k: v
        for k, v in (("kernel", args.kernel), ("initrd", args.initrd), ("append", args.append))
        if v
    }
    if variables.get(emulate.FIRMWARE) and (args.kernel or args.initrd):
        raise JailbakeError(
            f"run: the layer boots its card through firmware ({emulate.FIRMWARE}): the card's "
            "config.txt names kernel and initramfs; --append replaces its cmdline.txt"
        )
    send = []
    for item in args.send:
        prompt, sep, line = item.partition("=>")
        if not sep:
            raise JailbakeError(f"run: --send {item!r}: expected PROMPT=>LINE")
        send.append((prompt, line))
    kind = args.executor or work_context.history.remembered_executor(layer.files) or "docker"
    options = BuildOptions(
        configs=configs,
        executor=ExecutorKind(kind),
        cache_dir=work_context.settings.cache_dir,
        artifacts_dir=args.artifacts_dir,
        mirrors=tuple(args.mirror),
        offline=args.offline,
        remote_executor=args.remote_executor,
        remote_instance=args.remote_instance,
    )
    emu = emulate.emulator(variables, options, BuildView())
    with work_context.store.temp_dir("run") as work:
        boot = emulate.prepare(
            variables, args.artifacts_dir, overrides, emu, work, unattended=bool(args.expect)
        )
        for note in boot.notes:
            print(f"[jailbake] run: {note}", file=sys.stderr)
        if not args.expect:
            try:
                return run.run(boot.argv, check=False).returncode
            except FileNotFoundError:
                raise JailbakeError(
                    "run: qemu-system-aarch64 is not installed (Debian: "
                    "apt-get install qemu-system-arm)"
                ) from None
        transcript = qemu.boot(
            boot.argv, args.expect, send=send, timeout=args.timeout, port_files=boot.port_files
        )
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
