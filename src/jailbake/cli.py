"""Command line: the only place where exceptions become messages and exit codes."""

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
from pathlib import Path
from typing import TYPE_CHECKING

from .core.errors import BuildError, Failures, JailbakeError
from .options import COMMANDS, parser

if TYPE_CHECKING:
    from .action import RecipeBuilder
    from .model.graph import Graph
    from .sources.fetch import Fetcher
    from .sources.layerrepos import LayerRepos

DEFAULT_CONFIGS = ("layers/rpi4-jailhouse.yml",)


def _default_config() -> str:
    for candidate in DEFAULT_CONFIGS:
        if Path(candidate).is_file():
            return candidate
    raise JailbakeError(
        f"no CONFIG given and none of {', '.join(DEFAULT_CONFIGS)} exists "
        "here; give a layer file like layers/x.yml[:more.yml]"
    )


def _configs(spec: str | None) -> tuple[Path, ...]:
    from .model.scan import split_config

    return tuple(split_config(spec or _default_config()))


def _cmd_build(args: argparse.Namespace) -> int:
    from .cache.store import default_cache_dir
    from .executors.step import ExecutorKind
    from .replay import answer
    from .request import BuildOptions
    from .status import plural

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
        keep_going=args.keep_going,
        force=tuple(args.force),
        keep_failed=args.keep_failed,
        remote_executor=args.remote_executor,
        remote_instance=args.remote_instance,
    )
    report = answer(options)
    if report is None:  # something changed since the last build of this command
        from .bake import bake

        report = bake(options)
    remote = f"{len(report.downloaded)} from the remote cache, " if report.downloaded else ""
    total = len(report.built) + len(report.reused) + len(report.downloaded)
    print(
        f"[jailbake] {plural(total, 'recipe')}: {len(report.built)} built, "
        f"{len(report.reused)} reused, {remote}{plural(len(report.artifacts), 'artifact')} "
        f"in {options.artifacts_dir} ({report.seconds:.1f}s)",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps({"ok": True, **report.to_dict()}, sort_keys=True))
    return 0


def _split_config(
    args: list[str], usage: str, *, most: int | None = 2
) -> tuple[str | None, list[str]]:
    """[CONFIG] WORD...: with a fixed number of words, the first of a full set is the
    configuration; otherwise the first is, if it looks like one."""
    if most is not None:
        if not 0 < len(args) <= most:
            raise JailbakeError(f"expected {usage}")
        return (args[0], args[1:]) if len(args) == most else (None, args)
    if args and _looks_like_config(args[0]):
        return args[0], args[1:]
    return None, args


READING = (
    "reading a layer fetches nothing; 'jailbake fetch' (or build) puts it in the cache "
    "(--cache-dir, else JAILBAKE_CACHE_DIR, else ~/.cache/jailbake)"
)


def _graph(
    args: argparse.Namespace,
    config: str | None,
    targets: Sequence[str] = (),
    *,
    reading: bool = False,
) -> Graph:
    """The graph of the layer files; remote layer repositories go into the command's cache
    (from its mirrors, not the network, with --offline). reading: a command that only
    reads the layers (list, explain, graph, dump, log, clean) runs no network command,
    and takes remote layer repositories from the cache alone."""
    from .bake import load_graph

    return load_graph(_configs(config), tuple(targets), repos=_repos(args, reading=reading))


def _repos(args: argparse.Namespace, *, reading: bool) -> LayerRepos:
    """What checks out the remote layer repositories a command's layers name: into its
    cache, from its mirrors, from the network unless --offline or reading."""
    from .cache.store import Store, default_cache_dir
    from .core.paths import resolve_mirror
    from .sources.fetch import Fetcher
    from .sources.layerrepos import LayerRepos

    store = Store(getattr(args, "cache_dir", None) or default_cache_dir())
    mirrors = [resolve_mirror(m, Path.cwd()) for m in getattr(args, "mirror", None) or []]
    if reading:
        return LayerRepos(Fetcher(store, mirrors, offline=True, offline_reason=READING))
    return LayerRepos(Fetcher(store, mirrors, offline=bool(getattr(args, "offline", False))))


def _fetcher(args: argparse.Namespace, config: str | None) -> tuple[Graph, Fetcher]:
    from .cache.store import Store, default_cache_dir
    from .core.paths import resolve_mirror
    from .sources.fetch import Fetcher

    graph = _graph(args, config, args.target)
    store = Store(args.cache_dir or default_cache_dir())
    mirrors = tuple(resolve_mirror(m, Path.cwd()) for m in args.mirror) + graph.layer.mirrors
    return graph, Fetcher(store, mirrors)


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .sources.mirror import fetch_all

    graph, fetcher = _fetcher(args, args.config)
    count = fetch_all(graph, fetcher, args.jobs)
    print(f"[jailbake] {count} sources in {fetcher.store.root}", file=sys.stderr)
    return 0


def _cmd_builders(args: argparse.Namespace) -> int:
    from .core.paths import resolve_mirror
    from .executors import engine
    from .sources.mirror import ensure_builders

    client = engine.connect()
    for spec in args.configs or [None]:
        graph = _graph(args, spec)
        mirrors = tuple(resolve_mirror(m, Path.cwd()) for m in args.mirror) + graph.layer.mirrors
        tags = ensure_builders(graph, client, mirrors)
        for name, tag in tags.items():
            print(f"{name}: {tag}")
    return 0


def _cmd_mirror(args: argparse.Namespace) -> int:
    from .executors import engine
    from .sources.mirror import write_mirror
    from .status import human_size, plural

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
        f"[jailbake] mirror {dest}: {plural(len(writer.entries), 'file')}, "
        f"{human_size(writer.size)} ({writer.added} added)",
        file=sys.stderr,
    )
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from .release.publish import load_manifest, publish_release

    if args.config:
        from .model.layer import load_layers
        from .release.artifacts import layer_names

        wanted = layer_names(load_layers(_configs(args.config), repos=_repos(args, reading=True)))
        built = load_manifest(args.artifacts_dir).get("layers", [])
        if wanted != built:
            raise JailbakeError(
                f"publish: {args.artifacts_dir} holds a build of {':'.join(built)}, "
                f"not of {':'.join(wanted)}; build it first"
            )
    files, sent = publish_release(args.artifacts_dir, args.to)
    print(
        f"[jailbake] published {len(files)} files to {args.to} ({sent} sent, "
        f"{len(files) - sent} already there)",
        file=sys.stderr,
    )
    return 0


def _builder(
    args: argparse.Namespace,
    config: str | None,
    targets: Sequence[str] = (),
    *,
    keys: bool = True,
    reading: bool = True,
) -> tuple[Graph, RecipeBuilder]:
    """The graph and a builder for questions about it; keys: the command shows keys (and
    says which executor they are for when no build told); reading: see _graph."""
    from .action import RecipeBuilder
    from .bake import make_executor, remote_settings
    from .cache.store import Store, default_cache_dir
    from .executors.host import HostExecutor
    from .executors.step import ExecutorKind
    from .sources.fetch import Fetcher

    graph = _graph(args, config, targets, reading=reading)
    store = Store(args.cache_dir or default_cache_dir())
    kind = args.executor or store.remembered_executor(graph.layer.files)
    if kind is None:
        kind = ExecutorKind.DOCKER.value
        if keys:
            print(
                "[jailbake] keys for the docker executor: no build of this configuration "
                "in this cache says otherwise (--executor chooses)",
                file=sys.stderr,
            )
    # Keys need only the executor's kind: no engine or service is contacted for list and
    # explain.
    settings = None
    if kind == ExecutorKind.REMOTE.value:
        # The service's URL names where steps run in list; keys do not need it.
        url = args.remote_executor or graph.layer.variables().get("JAILBAKE_REMOTE_EXECUTOR")
        settings = remote_settings(graph, url or "grpc://not-given:1", args.remote_instance)
    executor = make_executor(ExecutorKind(kind), settings)
    local = make_executor(ExecutorKind.DOCKER) if settings else None
    return graph, RecipeBuilder(
        graph, store, Fetcher(store, offline=True), executor, host=HostExecutor(), local=local
    )


def _cmd_list(args: argparse.Namespace) -> int:
    from .cache.keys import short_key
    from .query import list_graph

    graph, builder = _builder(args, args.config)
    entries = list_graph(graph, builder)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2, sort_keys=True))
        return 0
    for e in entries:
        key = short_key(e.key) if e.key else "?"
        state = "cached" if e.cached else "-"
        print(f"{e.name:24} {e.version:16} {key:12} {state:6} {e.file}")
        for s in e.sources:
            pin = s.get("sha256") or s.get("commit") or ""
            print(f"    {s.get('url') or s.get('git') or s.get('file')} {pin}".rstrip())
        if e.workspace:
            print(f"    workspace {e.workspace} (replaces the sources and patches above)")
        if e.runs:
            print(f"    runs {e.runs}")
    for name, file in graph.overridden:
        print(f"note: {name} from {file} is overridden by a later layer", file=sys.stderr)
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from .cache.keys import short_key
    from .query import explain

    config, (name,) = _split_config(args.args, "explain [CONFIG] RECIPE")
    graph, builder = _builder(args, config, (name,))
    if name not in graph.recipes:
        raise JailbakeError(
            f"explain: unknown recipe {name!r}; known: {', '.join(sorted(graph.recipes))}"
        )
    ex = explain(graph, builder, name)
    if ex.missing_deps:
        print(f"{name}: key unknown until these are built: {', '.join(ex.missing_deps)}")
        return 0
    print(f"{name}: key {ex.key}")
    ws = builder.workspace_of(graph.recipes[name])
    if ws is not None:
        print(f"sources from the workspace {ws.dir} (inputs: files.workspace)")
    print("inputs:")
    print(json.dumps(ex.inputs, indent=2, sort_keys=True))
    if ex.last_key is None:
        print(f"{name} has not been built with this cache")
    elif ex.last_key == ex.key:
        print(f"unchanged since the last build ({short_key(ex.last_key)})")
    else:
        print(f"changed since the last build ({short_key(ex.last_key)}):")
        for field, before, now in ex.changed:
            print(f"  {field}: {json.dumps(before)} -> {json.dumps(now)}")
    return 0


def _cmd_graph(args: argparse.Namespace) -> int:
    from .dot import graph_dot, write_graph

    graph, builder = _builder(args, args.config, args.target)
    text = graph_dot(graph, builder)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_graph(text, args.output)
        print(f"[jailbake] graph of {len(graph.order)} recipes in {args.output}", file=sys.stderr)
    return 0


def _cmd_dump(args: argparse.Namespace) -> int:
    from .model.dump import dump

    graph = _graph(args, args.config, args.target, reading=not args.resolve_refs)
    sys.stdout.write(dump(graph, resolve_refs=args.resolve_refs, lock=args.lock))
    return 0


def _cmd_lock(args: argparse.Namespace) -> int:
    from .cache.store import Store, default_cache_dir
    from .sources.fetch import Fetcher
    from .sources.layerrepos import LayerRepos
    from .sources.lockfile import write_lock

    repos = LayerRepos(Fetcher(Store(args.cache_dir or default_cache_dir())))
    dest, pins = write_lock(_configs(args.config), repos, update=args.update)
    for name, commit in pins.items():
        print(f"{name}: {commit}")
    print(f"[jailbake] {len(pins)} remote layer repositories pinned in {dest}", file=sys.stderr)
    return 0


def _cmd_legal_info(args: argparse.Namespace) -> int:
    from .action import RecipeBuilder
    from .executors.host import HostExecutor
    from .legal import write_legal_info
    from .status import plural

    config, (dest,) = _split_config(args.args, "legal-info [CONFIG] DIR")
    graph, fetcher = _fetcher(args, config)
    fetcher.offline = args.offline
    # Sources are only prepared (for their licence texts), never built: no engine.
    host = HostExecutor()
    builder = RecipeBuilder(graph, fetcher.store, fetcher, host, host=host)
    info = write_legal_info(builder, Path(dest))
    print(
        f"[jailbake] legal-info {dest}: {plural(info.recipes, 'recipe')}, "
        f"{plural(info.sources, 'source')}, {plural(info.license_texts, 'licence text')}",
        file=sys.stderr,
    )
    if info.missing_texts:
        print(
            "[jailbake] no licence file pinned (license_files) for: "
            + ", ".join(info.missing_texts),
            file=sys.stderr,
        )
    return 0


def _recipe_of(graph: Graph, name: str, command: str) -> None:
    if name not in graph.recipes:
        raise JailbakeError(
            f"{command}: unknown recipe {name!r}; known: {', '.join(sorted(graph.recipes))}"
        )


def _cmd_log(args: argparse.Namespace) -> int:
    from .cache.store import Store, default_cache_dir

    config, (name,) = _split_config(args.args, "log [CONFIG] RECIPE")
    graph = _graph(args, config, (name,), reading=True)
    _recipe_of(graph, name, "log")
    store = Store(args.cache_dir or default_cache_dir())
    path = store.log_path(name)
    if path is None:
        raise JailbakeError(f"log: {name} has no build log in {store.root}; build it first")
    if args.path:
        print(path)
    else:
        with path.open("rb") as f:
            sys.stdout.flush()
            while chunk := f.read(1 << 16):
                sys.stdout.buffer.write(chunk)
    return 0


def _cmd_shell(args: argparse.Namespace) -> int:
    from .shell import open_shell

    config, (name,) = _split_config(args.args, "shell [CONFIG] RECIPE")
    graph, builder = _builder(args, config, (name,), reading=False)
    _recipe_of(graph, name, "shell")
    return open_shell(graph, builder, name, command=args.shell_command, workdir=args.workdir)


def _cmd_workspace(args: argparse.Namespace) -> int:
    from .edit import finish_workspace, list_workspaces, reset_workspace, start_workspace

    words = list(args.args)
    if args.layer is not None and not args.finish:
        raise JailbakeError("workspace: --layer goes with --finish")
    if not words:
        if args.finish or args.reset:
            raise JailbakeError("workspace: name the recipe whose workspace ends")
        for line in list_workspaces(args):
            print(line)
        return 0
    if args.finish or args.reset:
        config, (name,) = _split_config(words, "workspace --finish|--reset [CONFIG] RECIPE")
        graph, builder = _builder(args, config, (name,), keys=False, reading=False)
        _recipe_of(graph, name, "workspace")
        if args.reset:
            print(reset_workspace(builder, name), file=sys.stderr)
        else:
            print(finish_workspace(graph, builder, name, args.layer), file=sys.stderr)
        return 0
    if len(words) == 3 or (len(words) == 2 and _looks_like_config(words[0])):
        config, name, dest = words[0], words[1], (words[2] if len(words) == 3 else None)
    elif len(words) <= 2:
        config, name, dest = None, words[0], (words[1] if len(words) == 2 else None)
    else:
        raise JailbakeError("expected workspace [CONFIG] RECIPE [DIR]")
    graph, builder = _builder(args, config, (name,), keys=False, reading=False)
    _recipe_of(graph, name, "workspace")
    print(start_workspace(graph, builder, name, dest, args), file=sys.stderr)
    return 0


def _cmd_clean(args: argparse.Namespace) -> int:
    from .clean import clean_recipes, collect_garbage
    from .status import human_size, plural

    config, names = _split_config(args.args, "clean [CONFIG] [RECIPE...]", most=None)
    if names and args.all:
        raise JailbakeError("clean: give the recipes whose results to remove, or --all")
    if args.ccache:
        from .cache.store import Store, default_cache_dir, remove_tree

        ccache = Store(args.cache_dir or default_cache_dir()).root / "ccache"
        size = sum(f.stat().st_size for f in ccache.rglob("*") if f.is_file())
        remove_tree(ccache)
        print(f"[jailbake] clean: compiler caches emptied, {human_size(size)} freed",
              file=sys.stderr)  # fmt: skip
        if not names and not args.all:
            return 0
    if not names and not args.all:
        raise JailbakeError("clean: give the recipes whose results to remove, --all or --ccache")
    graph, builder = _builder(args, config, names)
    freed = collect_garbage(graph, builder) if args.all else clean_recipes(graph, builder, names)
    print(
        f"[jailbake] clean: removed {plural(len(freed.results), 'result')}, "
        f"{plural(freed.trees, 'tree')}, {plural(freed.blobs, 'blob')} (downloads, logs), "
        f"{freed.other} other; {human_size(freed.bytes)} freed",
        file=sys.stderr,
    )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from . import qemu
    from .core import run
    from .model.layer import load_layers

    layer = load_layers(_configs(args.config), repos=_repos(args, reading=True))
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
    from .cache.store import Store, default_cache_dir
    from .cache.verify import verify_store

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

    from .executors import engine

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


def _with_command(argv: list[str]) -> list[str]:
    """argv with its command: 'build' when none is given. A first word that is neither a
    command nor a layer file is an unknown command, not a layer file that is missing."""
    lead = 0
    while lead < len(argv) and argv[lead] in ("-v", "--verbose"):
        lead += 1
    if lead < len(argv) and (argv[lead] in COMMANDS or argv[lead] in ("-h", "--help", "--version")):
        return argv
    word = argv[lead] if lead < len(argv) else ""
    if word and not word.startswith("-") and not _looks_like_config(word):
        close = difflib.get_close_matches(word, COMMANDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise JailbakeError(
            f"unknown command {word!r}{hint} (commands: {', '.join(COMMANDS)}; "
            "a CONFIG is a layer file such as layers/x.yml)"
        )
    return [*argv[:lead], "build", *argv[lead:]]


def _looks_like_config(word: str) -> bool:
    return ":" in word or word.endswith((".yml", ".yaml", ".json")) or Path(word).is_file()


GC_FIRST_THRESHOLD = 10_000


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `jailbake` and `python3 build.py`."""
    raw = list(sys.argv[1:] if argv is None else argv)
    wants_json = "--json" in raw
    try:
        args = parser().parse_args(_with_command(raw))
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
    commands = {
        "build": _cmd_build,
        "fetch": _cmd_fetch,
        "builders": _cmd_builders,
        "mirror": _cmd_mirror,
        "publish": _cmd_publish,
        "list": _cmd_list,
        "explain": _cmd_explain,
        "graph": _cmd_graph,
        "dump": _cmd_dump,
        "lock": _cmd_lock,
        "legal-info": _cmd_legal_info,
        "log": _cmd_log,
        "shell": _cmd_shell,
        "workspace": _cmd_workspace,
        "clean": _cmd_clean,
        "run": _cmd_run,
        "verify": _cmd_verify,
        "base-image": _cmd_base_image,
    }
    try:
        code = commands[args.command](args)
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
