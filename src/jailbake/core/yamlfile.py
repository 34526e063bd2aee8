"""Reading YAML strictly: a key given twice in one mapping is an error, not a silent
override (the last `script:` or `env:` would otherwise win without a word)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import RecipeError

_MERGE_TAG = "tag:yaml.org,2002:merge"
_loader: Any = None  # StrictLoader, made on first use: recipes the memo knows need no yaml


def _strict_loader() -> Any:
    """PyYAML's safe loader (libyaml's when there is one) that refuses duplicate keys
    (merge keys `<<` excepted)."""
    global _loader
    if _loader is not None:
        return _loader
    import yaml

    base: Any = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader

    class DuplicateKey(yaml.constructor.ConstructorError):
        """A mapping names the same key twice."""

        def __init__(self, key: object, first: yaml.Mark, again: yaml.Mark) -> None:
            super().__init__(
                problem=f"key {key!r} appears twice (first at line {first.line + 1})",
                problem_mark=again,
            )

    class StrictLoader(base):  # type: ignore[misc]
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # unhashable: the base constructor reports it
                if first is not None:
                    raise DuplicateKey(key, first, key_node.start_mark)
                seen[key] = key_node.start_mark
            mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
            return mapping

    _loader = StrictLoader
    return _loader


def parse(text: str, file: Path | str) -> Any:
    """The document in text; one RecipeError naming file:line for anything invalid."""
    return parse_with_lines(text, file)[0]


def parse_with_lines(text: str, file: Path | str) -> tuple[Any, dict[str, int]]:
    """The document in text and the line of each of its top-level keys (for messages),
    from one parse."""
    import yaml

    loader = _strict_loader()(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
        lines = (
            {str(k.value): k.start_mark.line + 1 for k, _ in node.value}
            if isinstance(node, yaml.MappingNode)
            else {}
        )
        return data, lines
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else str(file)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(where, "", f"not valid YAML: {problem}") from None
    finally:
        loader.dispose()


def read(path: Path) -> str:
    """A YAML file's text, which must be UTF-8; one RecipeError naming it otherwise."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(path, "", f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except OSError as exc:
        raise RecipeError(path, "", f"cannot read it: {exc.strerror}") from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise RecipeError(path, "", f"cannot read it: {exc.strerror}") from None


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(path, "", f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None


def load(path: Path) -> Any:
    """parse() of a file."""
    return parse(read(path), path)


class ParseMemo:
    """YAML files parsed before, by the sha256 of their text, kept as JSON in a file:
    an unchanged file (whatever its time) is not parsed again; any edit is. Documents
    that JSON cannot hold as they are (dates, non-string keys) are parsed every time.
    digests: the sha256 of each file's bytes as parsed."""

    LIMIT = 20000  # entries kept; the least recently used go first

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, list[Any]] = {}
        self.used: dict[str, list[Any]] = {}
        self.digests: dict[Path, str] = {}
        if path is not None:
            try:
                loaded = json.loads(path.read_bytes())
                self.entries = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                pass

    def parse(self, path: Path) -> tuple[Any, dict[str, int]]:
        """parse_with_lines() of a file, from the memo when its text was seen."""
        raw = _read_bytes(path)
        digest = hashlib.sha256(raw).hexdigest()
        self.digests[path] = digest
        known = self.entries.get(digest)
        if isinstance(known, list) and len(known) == 2 and isinstance(known[1], dict):
            self.used[digest] = known
            return known[0], known[1]
        data, lines = parse_with_lines(_decode(raw, path), path)
        try:
            if json.loads(json.dumps(data)) == data:
                self.used[digest] = [data, lines]
        except (TypeError, ValueError):
            pass
        return data, lines

    def save(self) -> None:
        """Keep what this load used, then what earlier ones did, up to LIMIT entries."""
        if self.path is None or set(self.used) <= set(self.entries):
            return
        kept = dict(self.used)
        for digest, entry in self.entries.items():
            if len(kept) >= self.LIMIT:
                break
            kept.setdefault(digest, entry)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(kept))
            os.replace(tmp, self.path)
        except OSError:
            pass  # parsed again next time
