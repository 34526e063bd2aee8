"""Command line: the only place where exceptions become messages and exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import BuildError, JailbakeError

if TYPE_CHECKING:
    from .action import RecipeBuilder
    from .fetch import Fetcher
    from .graph import Graph

DEFAULT_CONFIGS = ("layers/rpi4-jailhouse.yml",)
COMMANDS = (
    "build",
    "fetch",
    "builders",
    "mirror",
    "publish",
    "list",
    "explain",
    "run",
    "verify",
    "base-image",
)


def _default_config() -> str:
    for candidate in DEFAULT_CONFIGS:
        if Path(candidate).is_file():
            return candidate
    raise JailbakeError(
        f"no CONFIG given and none of {', '.join(DEFAULT_CONFIGS)} exists "
        "here; give a layer file like layers/x.yml[:more.yml]"
    )


def _configs(spec: str | None) -> tuple[Path, ...]:
    from .layer import split_config

    return tuple(split_config(spec or _default_config()))


def _parser() -> argparse.ArgumentParser:
    from .executors import ExecutorKind

    p = argparse.ArgumentParser(
        prog="jailbake",
        description="Reproducible image builds from kas layer files and declarative recipes.",
    )
    p.add_argument("--version", action="version", version=f"jailbake {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command")

    def cache_dir(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--cache-dir",
            type=Path,
            default=None,
            help="cache directory (default: $JAILBAKE_CACHE_DIR or ~/.cache/jailbake)",
        )

    def common(sp: argparse.ArgumentParser) -> None:
        cache_dir(sp)
        sp.add_argument(
            "--executor",
            choices=[e.value for e in ExecutorKind],
            default=ExecutorKind.DOCKER.value,
            help="where steps run: fresh containers (default), or this machine: under "
            "bubblewrap where it works, otherwise UNCONFINED with your rights (root's, for root)",
        )

    b = sub.add_parser("build", help="build the targets of a layer configuration (default)")
    b.add_argument(
        "config",
        nargs="?",
        metavar="CONFIG",
        help="layer file(s), colon-separated; later files override earlier ones",
    )
    b.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME",
        help="recipe to build (repeatable; default: the layer's target)",
    )
    b.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="recipes built in parallel, and $JOBS inside each step",
    )
    b.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    b.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="DIR|URL",
        help="look for sources here first, by sha256 and by file name (repeatable)",
    )
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
    b.add_argument("--json", action="store_true", help="end with one JSON line on stdout")
    common(b)

    def sources(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--target", action="append", default=[], metavar="NAME")
        sp.add_argument("-j", "--jobs", type=int, default=4, help="downloads at a time")
        sp.add_argument("--mirror", action="append", default=[], metavar="DIR|URL")
        cache_dir(sp)

    fe = sub.add_parser("fetch", help="download every source of the graph into the cache")
    fe.add_argument("config", nargs="?", metavar="CONFIG")
    sources(fe)

    bu = sub.add_parser(
        "builders",
        help="make every builder image the configurations use (build, or load from a "
        "mirror), so that later builds need no network for them",
    )
    bu.add_argument(
        "configs",
        nargs="*",
        metavar="CONFIG",
        help="one or more layer configurations (each may be colon-separated)",
    )
    bu.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="DIR",
        help="load saved images from this mirror directory instead of building (repeatable)",
    )

    mi = sub.add_parser(
        "mirror",
        help="write every source and builder image of the graph into a mirror directory",
    )
    mi.add_argument("args", nargs="+", metavar="[CONFIG] DIR")
    mi.add_argument(
        "--no-images", action="store_true", help="sources only, no builder or base images"
    )
    sources(mi)

    pu = sub.add_parser(
        "publish",
        help="publish the built artifacts with SHA256SUMS, manifest.json and an SPDX SBOM",
    )
    pu.add_argument("config", nargs="?", metavar="CONFIG")
    pu.add_argument(
        "--to", required=True, metavar="DIR|URL", help="a directory, or a URL to PUT to"
    )
    pu.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))

    ls = sub.add_parser("list", help="every recipe of the graph with version, key and pins")
    ls.add_argument("config", nargs="?", metavar="CONFIG")
    ls.add_argument("--json", action="store_true")
    common(ls)

    ex = sub.add_parser(
        "explain", help="a recipe's key inputs and what changed since its last build"
    )
    ex.add_argument("args", nargs="+", metavar="[CONFIG] RECIPE")
    common(ex)

    rn = sub.add_parser("run", help="boot the layer's built image under qemu-system-aarch64")
    rn.add_argument("config", nargs="?", metavar="CONFIG")
    rn.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    rn.add_argument("--kernel", help="kernel image (default: the layer's JAILBAKE_QEMU_KERNEL)")
    rn.add_argument("--initrd", help="initramfs (default: the layer's JAILBAKE_QEMU_INITRD)")
    rn.add_argument("--append", help="kernel command line")
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
    rn.add_argument("--timeout", type=float, default=300.0)

    ve = sub.add_parser(
        "verify",
        help="hash every file of the cache again and check its records, as git fsck does",
    )
    ve.add_argument(
        "--repair",
        action="store_true",
        help="remove what is wrong; it is built or fetched again when next needed",
    )
    cache_dir(ve)

    bi = sub.add_parser(
        "base-image",
        help="create the builders' Debian base image with "
        "mmdebstrap and import it into the engine (needs root)",
    )
    bi.add_argument("--suite", default="bookworm")
    bi.add_argument("--mirror", default=None, help="Debian mirror (default: this machine's)")
    bi.add_argument("--force", action="store_true", help="recreate it even if present")
    return p


def _cmd_build(args: argparse.Namespace) -> int:
    from .bake import BuildOptions, bake, default_cache_dir
    from .executors import ExecutorKind

    options = BuildOptions(
        configs=_configs(args.config),
        targets=tuple(args.target),
        jobs=max(1, args.jobs),
        executor=ExecutorKind(args.executor),
        cache_dir=args.cache_dir or default_cache_dir(),
        artifacts_dir=args.artifacts_dir,
        mirrors=tuple(args.mirror),
        offline=args.offline,
        remote_cache=args.remote_cache,
        remote_readonly=args.remote_cache_readonly,
    )
    report = bake(options)
    remote = f"{len(report.downloaded)} from the remote cache, " if report.downloaded else ""
    total = len(report.built) + len(report.reused) + len(report.downloaded)
    print(
        f"[jailbake] {total} recipes: {len(report.built)} built, {len(report.reused)} reused, "
        f"{remote}{len(report.artifacts)} artifacts in {options.artifacts_dir} "
        f"({report.seconds:.1f}s)",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(report.to_dict(), sort_keys=True))
    return 0


def _fetcher(args: argparse.Namespace, config: str | None) -> tuple[Graph, Fetcher]:
    from .bake import default_cache_dir, load_graph
    from .fetch import Fetcher, resolve_mirror
    from .store import Store

    graph = load_graph(_configs(config), tuple(args.target))
    store = Store(args.cache_dir or default_cache_dir())
    mirrors = tuple(resolve_mirror(m, Path.cwd()) for m in args.mirror) + graph.layer.mirrors
    return graph, Fetcher(store, mirrors)


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .mirror import fetch_all

    graph, fetcher = _fetcher(args, args.config)
    count = fetch_all(graph, fetcher, args.jobs)
    print(f"[jailbake] {count} sources in {fetcher.store.root}", file=sys.stderr)
    return 0


def _cmd_builders(args: argparse.Namespace) -> int:
    from . import engine
    from .bake import load_graph
    from .fetch import resolve_mirror
    from .mirror import ensure_builders

    client = engine.connect()
    for spec in args.configs or [None]:
        graph = load_graph(_configs(spec))
        mirrors = tuple(resolve_mirror(m, Path.cwd()) for m in args.mirror) + graph.layer.mirrors
        tags = ensure_builders(graph, client, mirrors)
        for name, tag in tags.items():
            print(f"{name}: {tag}")
    return 0


def _cmd_mirror(args: argparse.Namespace) -> int:
    from . import engine
    from .mirror import write_mirror

    if len(args.args) > 2:
        raise JailbakeError("mirror: expected [CONFIG] DIR")
    config, dest = (None, args.args[0]) if len(args.args) == 1 else args.args
    graph, fetcher = _fetcher(args, config)
    writer = write_mirror(
        graph,
        fetcher,
        Path(dest),
        jobs=args.jobs,
        client_factory=None if args.no_images else engine.connect,
    )
    print(
        f"[jailbake] mirror {dest}: {len(writer.entries)} files, {writer.size} bytes "
        f"({writer.added} added)",
        file=sys.stderr,
    )
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from .publish import load_manifest, publish_release

    if args.config:
        wanted = [str(p) for p in _configs(args.config)]
        built = load_manifest(args.artifacts_dir).get("layers", [])
        if [Path(w).name for w in wanted] != [Path(b).name for b in built]:
            raise JailbakeError(
                f"publish: {args.artifacts_dir} holds a build of {':'.join(built)}, "
                f"not of {args.config}; build it first"
            )
    files, sent = publish_release(args.artifacts_dir, args.to)
    print(
        f"[jailbake] published {len(files)} files to {args.to} ({sent} sent, "
        f"{len(files) - sent} already there)",
        file=sys.stderr,
    )
    return 0


def _builder(args: argparse.Namespace, config: str | None) -> tuple[Graph, RecipeBuilder]:
    from .action import RecipeBuilder
    from .bake import default_cache_dir, load_graph, make_executor
    from .executors import ExecutorKind, HostExecutor
    from .fetch import Fetcher
    from .store import Store

    graph = load_graph(_configs(config))
    store = Store(args.cache_dir or default_cache_dir())
    # Keys need only the executor's kind: no engine is contacted for list and explain.
    executor = make_executor(ExecutorKind(args.executor))
    return graph, RecipeBuilder(
        graph, store, Fetcher(store, offline=True), executor, host=HostExecutor()
    )


def _cmd_list(args: argparse.Namespace) -> int:
    from .query import list_graph

    graph, builder = _builder(args, args.config)
    entries = list_graph(graph, builder)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2, sort_keys=True))
        return 0
    for e in entries:
        key = (e.key or "?")[:16]
        state = "cached" if e.cached else "-"
        print(f"{e.name:24} {e.version:16} {key:16} {state:6} {e.file}")
        for s in e.sources:
            pin = s.get("sha256") or s.get("commit") or ""
            print(f"    {s.get('url') or s.get('git') or s.get('file')} {pin}".rstrip())
    for name, file in graph.overridden:
        print(f"note: {name} from {file} is overridden by a later layer", file=sys.stderr)
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from .query import explain

    if len(args.args) > 2:
        raise JailbakeError("explain: expected [CONFIG] RECIPE")
    config, name = (args.args[0], args.args[1]) if len(args.args) == 2 else (None, args.args[0])
    graph, builder = _builder(args, config)
    if name not in graph.recipes:
        raise JailbakeError(
            f"explain: unknown recipe {name!r}; known: {', '.join(sorted(graph.recipes))}"
        )
    ex = explain(graph, builder, name)
    if ex.missing_deps:
        print(f"{name}: key unknown until these are built: {', '.join(ex.missing_deps)}")
        return 0
    print(f"{name}: key {ex.key}")
    print("inputs:")
    print(json.dumps(ex.inputs, indent=2, sort_keys=True))
    if ex.last_key is None:
        print(f"{name} has not been built with this cache")
    elif ex.last_key == ex.key:
        print(f"unchanged since the last build ({ex.last_key[:16]})")
    else:
        print(f"changed since the last build ({ex.last_key[:16]}):")
        for field, before, now in ex.changed:
            print(f"  {field}: {json.dumps(before)} -> {json.dumps(now)}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from . import qemu, run
    from .layer import load_layers

    layer = load_layers(_configs(args.config))
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


def _cmd_verify(args: argparse.Namespace) -> int:
    from .bake import default_cache_dir
    from .store import Store
    from .verify import verify_store

    store = Store(args.cache_dir or default_cache_dir())
    report = verify_store(store, repair=args.repair)
    for problem in report.problems:
        print(problem)
    removed = f", {report.removed} removed" if args.repair else ""
    print(
        f"[jailbake] verify {store.root}: {report.blobs} blobs, {report.repositories} "
        f"repositories, {report.trees} trees, {report.results} results: "
        f"{len(report.problems)} problems{removed}",
        file=sys.stderr,
    )
    return 1 if report.problems and not args.repair else 0


def _cmd_base_image(args: argparse.Namespace) -> int:
    import tempfile

    from . import engine

    client = engine.connect()
    tag = f"{engine.BASE_IMAGE}:{args.suite}"
    if not args.force:
        try:
            client.images.get(tag)
            print(f"{tag} is present")
            return 0
        except Exception:
            pass
    with tempfile.TemporaryDirectory(prefix="jailbake-base-") as tmp:
        engine.make_base_image(client, args.suite, args.mirror or engine.apt_mirror(), Path(tmp))
    print(f"created {tag}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `jailbake` and `python3 build.py`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (
        argv[0] not in COMMANDS
        and argv[0] not in ("-h", "--help", "--version")
        and not (argv[0] in ("-v", "--verbose") and len(argv) > 1 and argv[1] in COMMANDS)
    ):
        if not argv or argv[0] not in ("-v", "--verbose"):
            argv = ["build", *argv]
        else:
            argv = [argv[0], "build", *argv[1:]]
    args = _parser().parse_args(argv)
    # A CI job cancelled with SIGTERM stops its step containers like Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="[jailbake] %(message)s"
    )
    commands = {
        "build": _cmd_build,
        "fetch": _cmd_fetch,
        "builders": _cmd_builders,
        "mirror": _cmd_mirror,
        "publish": _cmd_publish,
        "list": _cmd_list,
        "explain": _cmd_explain,
        "run": _cmd_run,
        "verify": _cmd_verify,
        "base-image": _cmd_base_image,
    }
    try:
        return commands[args.command](args)
    except BuildError as exc:
        if exc.tail:
            print(f"--- last lines of {exc.log_path} ---\n{exc.tail}\n---", file=sys.stderr)
        print(f"jailbake: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except JailbakeError as exc:
        print(f"jailbake: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("jailbake: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        # The machine, not the input: a full disk, a vanished engine or directory.
        if args.verbose:
            traceback.print_exc()
        print(f"jailbake: error: {_describe_os_error(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: one line, and the traceback with -v
        if args.verbose:
            traceback.print_exc()
        detail = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"jailbake: internal error: {type(exc).__name__}: {detail} "
            "(run with -v for the traceback)",
            file=sys.stderr,
        )
        return 1


def _describe_os_error(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    text = exc.strerror or (str(exc).splitlines() or [type(exc).__name__])[0]
    return f"{text}{where}"


if __name__ == "__main__":
    sys.exit(main())
