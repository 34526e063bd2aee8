"""The package's layout as declared: packages depend only downward, no module imports
another in a loop. Imports inside functions count: they are imports all the same."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from conftest import SRC

PACKAGE = SRC / "jailbake"
GENERATED = "_protos"

# The floors, bottom up. A module may import modules of its own floor and of the floors
# below; the last floor is every module not named in another.
FLOORS: list[tuple[str, ...]] = [
    ("core",),
    ("image",),
    ("cache",),
    ("executors",),
    ("model",),
    ("sources",),
    ("workspace",),
    ("release",),
    ("bake",),
    ("ui",),
    ("cli",),
]
# Modules that import nothing of jailbake: sdtool runs inside a builder container alone.
STANDALONE = ("image.sdtool",)

# Forbidden imports, beyond the floors (import-linter's forbidden contracts): what only
# some packages may import, and what a package may never import.
ONLY_IMPORTED_BY = {
    "ui": ("ui", "cli"),  # a build reports to an observer it is handed
    "cli": ("cli", ""),  # the entry point; "" is the package's own __main__
}
NEVER = {
    # Loading layers and recipes runs no process and writes no cache: the model may
    # hash files (cache.keys) but not reach the store, the executors or the sources.
    "model": ("cache.store", "cache.history", "cache.remote", "executors", "sources"),
}  # run on their own inside a builder: import no jailbake module


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        if GENERATED in rel.parts:
            continue
        name = ".".join(rel.parts).removesuffix("__init__").rstrip(".")
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[int, str]]:
    """(line, module of jailbake) for every import in the file, relative or absolute."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif (node.module or "").split(".")[0] == "jailbake":
                target = (node.module or "").split(".")[1:]
            else:
                continue
            for alias in node.names:
                full = ".".join([*target, alias.name])
                yield node.lineno, full if full in known else ".".join(target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "jailbake":
                    yield node.lineno, ".".join(alias.name.split(".")[1:])


def floor_of(name: str) -> int:
    for i, names in enumerate(FLOORS):
        if any(name == n or name.startswith(n + ".") for n in names):
            return i
    return len(FLOORS) - 1


def edges() -> dict[str, dict[str, int]]:
    known = modules()
    out: dict[str, dict[str, int]] = {}
    for name, path in known.items():
        out[name] = {}
        for line, target in imports(name, path, known):
            if target == name or target.startswith(GENERATED) or target == "":
                continue
            if target not in known:  # a package's face: `from . import x` names x
                continue
            out[name].setdefault(target, line)
    return out


def test_packages_depend_only_downward() -> None:
    wrong = [
        f"src/jailbake/{name.replace('.', '/')}.py:{line}: {name} (floor {floor_of(name)}) "
        f"imports {target} (floor {floor_of(target)})"
        for name, targets in edges().items()
        for target, line in targets.items()
        if floor_of(target) > floor_of(name)
    ]
    assert wrong == []


def _within(name: str, package: str) -> bool:
    return (
        name == package
        or name.startswith(package + ".")
        or (package == "" and "." not in name and name in ("", "__main__"))
    )


def test_forbidden_imports() -> None:
    wrong = []
    for name, targets in edges().items():
        for target, line in targets.items():
            for package, allowed in ONLY_IMPORTED_BY.items():
                if _within(target, package) and not any(_within(name, a) for a in allowed):
                    wrong.append(
                        f"{name}:{line} imports {target} ({package} is only for {allowed})"
                    )
            for package, banned in NEVER.items():
                if _within(name, package) and any(_within(target, b) for b in banned):
                    wrong.append(f"{name}:{line} imports {target} (never from {package})")
    assert wrong == []


def test_standalone_modules_import_nothing_of_jailbake() -> None:
    found = edges()
    assert {name: sorted(found[name]) for name in STANDALONE} == {n: [] for n in STANDALONE}


def test_no_module_imports_itself_through_others() -> None:
    graph = edges()
    loops: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph.get(name, {})):
            if state.get(target) == 1:
                loops.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert loops == []


def test_the_checks_see_a_wrong_import(tmp_path: Path) -> None:
    """The contract is checked on real imports: one running back up is found."""
    known = {"core.errors": tmp_path / "errors.py", "store": tmp_path / "store.py"}
    (tmp_path / "errors.py").write_text("def f():\n    from ..store import Store\n")
    found = list(imports("core.errors", known["core.errors"], known))
    assert found == [(2, "store")]
    assert floor_of("store") > floor_of("core.errors")


# A dotted name of jailbake's: not a label (org.jailbake.key) nor a file (jailbake.yml).
DOTTED = re.compile(r"(?<![\w./-])jailbake((?:\.[a-z_][a-z0-9_]*)+)")
NOT_MODULES = {"yml", "yaml", "invalid", "lock"}


def stale_names(text: str) -> list[str]:
    """The jailbake.x.y names in a text that are no module, package or module attribute."""
    stale = []
    for match in DOTTED.finditer(text):
        parts = match.group(1).lstrip(".").split(".")
        if parts[0] in NOT_MODULES or parts[0].startswith("__"):
            continue
        here = PACKAGE
        for part in parts:
            if (here / part).is_dir():
                here = here / part
                continue
            if not (here / f"{part}.py").is_file() and not (here / f"{part}.pyi").is_file():
                stale.append("jailbake." + ".".join(parts))
            break  # the rest names something inside the module
    return stale


def test_every_dotted_module_name_exists() -> None:
    """Docs, benchmarks, scripts, stubs and code name modules that exist: a module
    moved is renamed everywhere it is mentioned."""
    root = SRC.parent
    files = [root / "README.md", *sorted((root / "scripts").iterdir())]
    for folder, patterns in [
        ("src", ("*.py", "*.pyi")),
        ("docs", ("*.md", "*.1")),
        ("benchmarks", ("*.md", "*.py", "*.sh")),
        ("tests", ("*.py",)),
    ]:
        files += [p for pattern in patterns for p in sorted((root / folder).rglob(pattern))]
    found = {
        f"{path.relative_to(root)}: {name}"
        for path in files
        if path.is_file() and path != Path(__file__)
        for name in stale_names(path.read_text(errors="replace"))
    }
    assert not found, sorted(found)


def test_a_stale_dotted_name_is_found() -> None:
    text = "see jailbake.replay and jailbake.bake.replay.answer, org.jailbake.key, jailbake.yml"
    assert stale_names(text) == ["jailbake.replay"]


def test_the_image_writers_digest_covers_every_writer() -> None:
    """Rootfs and image keys hash the source of the in-process writers: every module
    under image/ is named a writer or a reader (one that boots or reads images)."""
    from jailbake.bake.plan import IMAGE_READERS, IMAGE_WRITERS

    modules = {p.name for p in (PACKAGE / "image").glob("*.py")}
    assert not set(IMAGE_WRITERS) & set(IMAGE_READERS)
    assert set(IMAGE_WRITERS) | set(IMAGE_READERS) == modules
