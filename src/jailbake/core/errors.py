"""User-facing errors. Anything raised that is not a JailbakeError is a bug."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class JailbakeError(Exception):
    """An error caused by input or environment; the CLI prints it and exits 2."""

    exit_code = 2


class RecipeError(JailbakeError):
    """A layer or recipe file is invalid."""

    def __init__(self, path: Path | str, field: str, message: str) -> None:
        self.path = str(path)
        self.field = field
        self.message = message
        where = f"{self.path}: {field}: " if field else f"{self.path}: "
        super().__init__(where + message)


class CycleError(JailbakeError):
    """The dependency graph has a cycle."""

    def __init__(self, path: Path | str, cycle: Sequence[str]) -> None:
        self.cycle = list(cycle)
        super().__init__(f"{path}: depends: dependency cycle: {' -> '.join(cycle)}")


class FetchError(JailbakeError):
    """A source could not be fetched or did not match its pin."""


class ChecksumError(FetchError):
    """A download's sha256 differs from the pinned one."""

    def __init__(self, recipe: str, url: str, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"{recipe}: sha256 mismatch for {url}: expected {expected}, got {actual}")


class UnpackError(JailbakeError):
    """An archive holds a member that would escape or misuse the tree."""


class CacheError(JailbakeError):
    """The cache holds bytes that are not what it recorded (a disk or a hand changed them)."""

    exit_code = 1


class EngineError(JailbakeError):
    """No container engine answers, or it refused a request."""

    exit_code = 3


class StepError(JailbakeError):
    """A build step could not be started."""


class BuildError(JailbakeError):
    """A build step failed."""

    def __init__(
        self,
        step: str,
        rc: int,
        log_path: Path | None,
        tail: str = "",
        *,
        kept: Path | None = None,
        recipe: str = "",
    ) -> None:
        self.step = step
        self.recipe = recipe or step
        self.rc = rc
        self.log_path = log_path
        self.tail = tail
        self.kept = kept  # the failed step's work directory, kept for a shell
        where = f" (log: {log_path})" if log_path else ""
        super().__init__(f"{step}: build failed with exit status {rc}{where}")


class Failures(JailbakeError):
    """Recipes that failed in a --keep-going build, and those left unbuilt for them."""

    def __init__(self, errors: list[tuple[str, BaseException]], not_built: list[str]) -> None:
        self.errors = errors
        self.not_built = not_built
        parts = []
        for name, exc in errors:
            log_path = exc.log_path if isinstance(exc, BuildError) else None
            parts.append(f"{name} (log: {log_path})" if log_path else f"{name} ({exc})")
        skipped = f"; not built because of them: {', '.join(not_built)}" if not_built else ""
        super().__init__(f"{len(errors)} failed: {'; '.join(parts)}{skipped}")
