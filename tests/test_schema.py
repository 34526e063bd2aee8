"""The recipe format's JSON Schema (schemas/recipe.schema.json, for editors through
yaml-language-server): every shipped recipe validates, and the schema and jailbake's
own loader agree on a corpus of recipes, good and bad."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from conftest import ROOT
from jailbake.core.errors import JailbakeError
from jailbake.model.recipe import load_recipe

SCHEMA = json.loads((ROOT / "schemas" / "recipe.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
SHA = "0" * 64
COMMIT = "a" * 40
BASE: dict[str, Any] = {
    "name": "x",
    "version": "1.0",
    "builder": "host",
    "script": 'mkdir -p "$OUT"; echo x > "$OUT/x"',
    "outputs": ["x"],
}


def shipped_recipes() -> list[Path]:
    found = [
        p
        for p in sorted(ROOT.rglob("*.yml"))
        if "recipes" in p.relative_to(ROOT).parts[:-1]
        and not {".venv", "tests", "artifacts", "site"} & set(p.relative_to(ROOT).parts)
    ]
    assert len(found) >= 15, found
    return found


def schema_errors(data: Any) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(data)]


def loader_error(tmp_path: Path, data: Any) -> str | None:
    recipes = tmp_path / "recipes"
    recipes.mkdir(exist_ok=True)
    (tmp_path / "files").mkdir(exist_ok=True)
    (tmp_path / "files" / "a.patch").write_text("")
    (tmp_path / "files" / "a.txt").write_text("a\n")
    file = recipes / "x.yml"
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        load_recipe(file, tmp_path)
    except JailbakeError as exc:
        return str(exc)
    return None


def test_the_schema_is_a_valid_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", shipped_recipes(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_recipe_validates(path: Path) -> None:
    assert schema_errors(yaml.safe_load(path.read_text())) == []


def variant(**changes: Any) -> dict[str, Any]:
    data = {**BASE, **changes}
    return {k: v for k, v in data.items() if v is not DROP}


DROP: Any = object()

GOOD = {
    "minimal": variant(),
    "url source": variant(sources=[{"url": "https://example.org/a.tar.gz", "sha256": SHA}]),
    "git source": variant(sources=[{"git": "https://example.org/a.git", "commit": COMMIT}]),
    "file source": variant(sources=[{"file": "../files/a.txt", "dest": "etc"}]),
    "patch by path": variant(patches=["../files/a.patch"]),
    "published output": variant(outputs=[{"path": "x", "publish": "y.bin"}]),
    "variables and environment": variant(variables=["SOURCE_DATE_EPOCH"], environment={"A": ""}),
    "a root step": variant(builder="debian-build", run_as="root"),
    "licence files": variant(license="MIT", license_files=[{"path": "COPYING", "sha256": SHA}]),
    "an image": variant(
        script=DROP,
        outputs=DROP,
        builder=DROP,
        image={"partitions": [{"label": "boot", "fs": "fat32", "size": "64M"}]},
    ),
}

BAD = {
    "not a mapping": ["x"],
    "unknown key": variant(sources_=[]),
    "no name": variant(name=DROP),
    "no version": variant(version=DROP),
    "upper-case name": variant(name="X"),
    "name with a slash": variant(name="a/b"),
    "empty version": variant(version=""),
    "script and rootfs": variant(rootfs={}),
    "neither script, rootfs nor image": variant(script=DROP),
    "no outputs": variant(outputs=DROP),
    "empty outputs": variant(outputs=[]),
    "absolute output": variant(outputs=["/etc/passwd"]),
    "output escaping $OUT": variant(outputs=["../x"]),
    "output with an unknown key": variant(outputs=[{"path": "x", "mode": "0644"}]),
    "image with outputs": variant(
        script=DROP, image={"partitions": [{"label": "b", "fs": "fat32", "size": "64M"}]}
    ),
    "rootfs with a builder": variant(script=DROP, rootfs={}, outputs=["r.cpio.gz"]),
    "url without sha256": variant(sources=[{"url": "https://example.org/a.tar.gz"}]),
    "upper-case sha256": variant(sources=[{"url": "https://e.org/a", "sha256": "A" * 64}]),
    "short sha256": variant(sources=[{"url": "https://e.org/a", "sha256": "0" * 63}]),
    "git without commit": variant(sources=[{"git": "https://example.org/a.git"}]),
    "short commit": variant(sources=[{"git": "https://e.org/a.git", "commit": "abc123"}]),
    "git URL as an option": variant(
        sources=[{"git": "--upload-pack=touch /tmp/p", "commit": COMMIT}]
    ),
    "git ext:: transport": variant(sources=[{"git": "ext::sh -c touch% /tmp/p", "commit": COMMIT}]),
    "url and git keys": variant(
        sources=[{"url": "https://e.org/a", "sha256": SHA, "commit": COMMIT}]
    ),
    "source of no kind": variant(sources=[{"dest": "x"}]),
    "file source outside the layer": variant(sources=[{"file": "/etc/passwd"}]),
    "source dest escaping": variant(
        sources=[{"url": "https://e.org/a", "sha256": SHA, "dest": "../../x"}]
    ),
    "file name with a slash": variant(
        sources=[{"url": "https://e.org/a", "sha256": SHA, "filename": "a/b"}]
    ),
    "negative strip": variant(sources=[{"url": "https://e.org/a", "sha256": SHA, "strip": -1}]),
    "unpack not a boolean": variant(
        sources=[{"url": "https://e.org/a", "sha256": SHA, "unpack": "yes"}]
    ),
    "absolute patch": variant(patches=[{"path": "/etc/passwd"}]),
    "patch without path": variant(patches=[{"strip": 1}]),
    "dependency twice": variant(depends=["a", "a"]),
    "bad variable name": variant(variables=["1A"]),
    "bad environment name": variant(environment={"A-B": "x"}),
    "control character in summary": variant(summary="a\x1b[2Jb"),
    "run_as someone": variant(run_as="nobody"),
    "redistribute not a boolean": variant(redistribute="no"),
    "ccache not a boolean": variant(ccache=1),
    "builder with a slash": variant(builder="../docker"),
    "licence file without sha256": variant(license_files=[{"path": "COPYING"}]),
    "five partitions": variant(
        script=DROP,
        outputs=DROP,
        builder=DROP,
        image={"partitions": [{"label": f"p{i}", "fs": "ext4", "size": "8M"} for i in range(5)]},
    ),
    "FAT label too long": variant(
        script=DROP,
        outputs=DROP,
        builder=DROP,
        image={"partitions": [{"label": "abcdefghijkl", "fs": "fat32", "size": "64M"}]},
    ),
    "ext4 with a volume id": variant(
        script=DROP,
        outputs=DROP,
        builder=DROP,
        image={"partitions": [{"label": "r", "fs": "ext4", "size": "8M", "volume_id": "12345678"}]},
    ),
    "unknown compression": variant(
        script=DROP,
        outputs=DROP,
        builder=DROP,
        image={"compress": ["gz"], "partitions": [{"label": "r", "fs": "ext4", "size": "8M"}]},
    ),
    "unknown file system": variant(
        script=DROP,
        outputs=DROP,
        builder=DROP,
        image={"partitions": [{"label": "r", "fs": "btrfs", "size": "8M"}]},
    ),
}


@pytest.mark.parametrize("case", sorted(GOOD))
def test_schema_and_loader_accept_the_same_good_recipes(case: str, tmp_path: Path) -> None:
    assert schema_errors(GOOD[case]) == []
    assert loader_error(tmp_path, GOOD[case]) is None


@pytest.mark.parametrize("case", sorted(BAD))
def test_schema_and_loader_refuse_the_same_bad_recipes(case: str, tmp_path: Path) -> None:
    assert schema_errors(BAD[case]) != [], "the schema accepts it"
    assert loader_error(tmp_path, BAD[case]) is not None, "the loader accepts it"


def test_the_reference_names_every_field() -> None:
    """docs/reference/recipe-fields.md describes each top-level field of the schema."""
    text = (ROOT / "docs" / "reference" / "recipe-fields.md").read_text()
    missing = [name for name in SCHEMA["properties"] if f"`{name}`" not in text]
    assert missing == []
