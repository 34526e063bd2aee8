"""The compiler cache of container steps: outside every key, so a warm cache must give
the bytes a cold one gives; recipes may go without it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import Project, copy_checkout, jailbake

pytestmark = pytest.mark.usefixtures("builder_images")

ASSETS = Path(os.environ.get("JAILBAKE_TEST_ASSETS", "/var/cache/jailbake-test"))
LAYER = "layers/busybox-initramfs.yml"


def busybox(checkout: Path, cache: Path, art: Path, *args: str) -> dict[str, str]:
    """Build busybox offline from the test mirror; its output digest by recipe."""
    result = jailbake(
        "build", LAYER, "--target", "busybox", "--offline", "--mirror", str(ASSETS / "mirror"),
        "--cache-dir", str(cache), "--artifacts-dir", str(art), "--json", *args,
        cwd=checkout, timeout=1800,
    )  # fmt: skip
    assert result.rc == 0, result.stderr[-3000:]
    manifest = json.loads((art / "manifest.json").read_text())
    return {r["name"]: r["output_digest"] for r in manifest["recipes"]}


@pytest.mark.slow
def test_a_warm_cache_from_another_checkout_gives_the_same_bytes(tmp_path: Path) -> None:
    if not (ASSETS / "mirror" / "busybox-1.35.0.tar.bz2").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"test assets missing in {ASSETS}; scripts/test-assets collects them")
        pytest.skip(f"test assets missing in {ASSETS} (run scripts/test-assets)")
    cache = tmp_path / "cache"
    first = busybox(copy_checkout(tmp_path / "a"), cache, tmp_path / "art-a")
    (ccache,) = (cache / "ccache").iterdir()
    assert ccache.name.startswith("debian-build-")
    assert sum(1 for f in ccache.rglob("*") if f.is_file()) > 100
    # Another checkout (another path), the same cache: busybox compiled again, from ccache.
    other = copy_checkout(tmp_path / "b")
    second = busybox(other, cache, tmp_path / "art-b", "--force", "busybox")
    assert second == first
    stats = jailbake("shell", LAYER, "busybox", "--cache-dir", str(cache), "-c",
                     "ccache --print-stats", cwd=other, timeout=600)  # fmt: skip
    assert stats.rc == 0, stats.stderr
    counters = dict(line.split("\t") for line in stats.stdout.splitlines() if "\t" in line)
    hits = int(counters["direct_cache_hit"]) + int(counters["preprocessed_cache_hit"])
    assert hits > 100, counters

    cleaned = jailbake("clean", "--ccache", "--cache-dir", str(cache), cwd=other)
    assert cleaned.rc == 0 and "compiler caches emptied" in cleaned.stderr
    assert not (cache / "ccache").exists()


def test_a_recipe_can_go_without(project: Project, tmp_path: Path) -> None:
    project.with_builders()
    script = 'mkdir -p "$OUT"; echo "${CCACHE_DIR:-none} $(command -v gcc)" > "$OUT/NAME.txt"'
    project.recipe("with", builder="debian-build", script=script.replace("NAME", "with"))
    project.recipe("without", builder="debian-build", ccache=False,
                   script=script.replace("NAME", "without"))  # fmt: skip
    project.recipe("top", depends=["with", "without"], builder="debian-build")
    project.build("--target", "top", executor="docker", artifacts=tmp_path / "art")
    trees = {p.name: p.read_text().split() for p in project.cache.glob("trees/*/*.txt")}
    assert trees["with.txt"] == ["/ccache", "/usr/lib/ccache/gcc"]
    assert trees["without.txt"] == ["none", "/usr/bin/gcc"]


def test_ccache_changes_nothing_a_compile_writes(project: Project, tmp_path: Path) -> None:
    """A compile run from another directory with absolute paths, as kbuild compiles an
    out-of-tree module (M=/abs/dir): its dependency file (which modpost's srcversion
    reads) and its __FILE__ strings must be the same bytes with a cold compiler cache,
    a warm one, and none (as jailbake repro rebuilds)."""
    project.with_builders()
    script = "\n".join([
        'mkdir -p "$OUT" mod kdir',
        "printf '#include \"m.h\"\\nconst char *where = __FILE__;\\n' > mod/a.c",
        "echo '#define M 1' > mod/m.h",
        "cd kdir",
        'gcc -I"$SRC/mod" -MMD -MF "$OUT/NAME.d" -c "$SRC/mod/a.c" -o "$OUT/NAME.o"',
    ])  # fmt: skip
    for name in ("with", "without"):
        project.recipe(name, builder="debian-build", ccache=name == "with",
                       script=script.replace("NAME", name),
                       outputs=[f"{name}.d", f"{name}.o"])  # fmt: skip
    project.recipe("top", depends=["with", "without"], builder="debian-build")

    def made() -> dict[str, list[bytes]]:
        """Each file, from every tree stored (a result whose bytes differ adds a tree)."""
        found: dict[str, list[bytes]] = {}
        for p in sorted(project.cache.glob("trees/*/*.[do]")):
            found.setdefault(p.name, []).append(p.read_bytes())
        return found

    project.build("--target", "top", executor="docker", artifacts=tmp_path / "art")
    cold = {name: one for name, (one,) in made().items()}
    assert b"/work/src/mod/a.c" in cold["without.d"] and b"/work/src/mod/a.c" in cold["without.o"]
    assert cold["with.d"].replace(b"with.o", b"without.o") == cold["without.d"]
    assert cold["with.o"] == cold["without.o"]
    project.build("--target", "top", "--force", "with", executor="docker",
                  artifacts=tmp_path / "art")  # fmt: skip
    assert made() == {name: [one] for name, one in cold.items()}  # the same bytes again
    stats = project.run("shell", "layer.yml", "with", "--cache-dir", str(project.cache),
                        "-c", "ccache --print-stats")  # fmt: skip
    assert stats.rc == 0, stats.stderr
    counters = dict(line.split("\t") for line in stats.stdout.splitlines() if "\t" in line)
    assert int(counters["direct_cache_hit"]) >= 1, counters  # ... from the warm cache
