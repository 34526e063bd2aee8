"""Validating YAML fields: each check names the file, the line and the field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import RecipeError

# A name, path or value is one line: no newline (which would start a second line in
# SHA256SUMS, a log or a configuration file), no escape sequence, no other control.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # text keeps tabs and newlines


class Fields:
    """The file being validated and its lines: checks that name file, line and field."""

    def __init__(self, file: Path, layer_dir: Path, lines: dict[str, int]) -> None:
        self.file = file
        self.layer_dir = layer_dir
        self.lines = lines
        # Each layer file named, as written (absolute, links unresolved) and as found.
        self.refs: list[tuple[str, str]] = []

    def where(self, field: str) -> str:
        return where_of(self.file, self.lines, field)

    def error(self, field: str, message: str) -> RecipeError:
        return RecipeError(self.where(field), field, message)

    def string(
        self, value: Any, field: str, *, allow_empty: bool = False, lines: bool = False
    ) -> str:
        """A string field: one line without control characters (every name, path, URL,
        version and value), or, with lines, text of several lines (a script)."""
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(field, f"expected a string, got {kind_of(value)}")
        text = str(value)
        if not text and not allow_empty:
            raise self.error(field, "expected a non-empty string")
        if "\0" in text:
            raise self.error(field, "contains a NUL byte, which no file name or variable can hold")
        bad = (TEXT_CONTROL if lines else CONTROL).search(text)
        if bad:
            raise self.error(
                field,
                f"expected {'text' if lines else 'one line'} without control characters, "
                f"got {bad.group()!r} in {text!r}",
            )
        return text

    def relpath(self, value: Any, field: str, *, allow_empty: bool = False) -> str:
        text = self.string(value, field, allow_empty=allow_empty)
        if not text:
            return ""
        pure = PurePosixPath(text)
        if pure.is_absolute() or ".." in pure.parts:
            raise self.error(field, f"expected a relative path inside the tree, got {text!r}")
        return str(pure)

    def layer_file(self, value: Any, field: str) -> tuple[Path, str]:
        """A path relative to the recipe's file that must stay inside its layer."""
        text = self.string(value, field)
        path = (self.file.parent / text).resolve()
        layer = self.layer_dir.resolve()
        if PurePosixPath(text).is_absolute() or not path.is_relative_to(layer):
            raise self.error(field, f"path {text!r} escapes the layer {self.layer_dir}")
        if not path.exists():
            raise self.error(field, f"file {text!r} does not exist")
        if not (path.is_file() or path.is_dir()):  # a fifo would stall every reader
            raise self.error(field, f"{text!r} is neither a regular file nor a directory")
        rel = path.relative_to(layer).as_posix()
        if CONTROL.search(rel):  # the name found, after links, is written into records
            raise self.error(field, f"{text!r} is {rel!r}, a name with control characters")
        self.refs.append((str(self.file.parent / text), str(path)))
        return path, rel

    def mapping(self, value: Any, field: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.error(field, f"expected a mapping, got {kind_of(value)}")
        return value

    def seq(self, value: Any, field: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.error(field, f"expected a list, got {kind_of(value)}")
        return value

    def only(self, data: Mapping[str, Any], allowed: set[str], field: str) -> None:
        for key in data:
            if key not in allowed:
                expected = ", ".join(sorted(allowed))
                where = f"{field}.{key}" if field else str(key)
                raise self.error(where, f"unknown key; expected one of: {expected}")


def where_of(file: Path, lines: Mapping[str, int], field: str) -> str:
    line = lines.get(field.split(".")[0].split("[")[0])
    return f"{file}:{line}" if line else str(file)


def kind_of(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
