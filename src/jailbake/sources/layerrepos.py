"""Layer repositories named by URL, as kas's `repos: NAME: url: ... commit:` (or
`branch:` / `tag:`): kept as bare repositories in the cache's git store (shared with
git sources), each commit checked out once into a directory of its own."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ..cache.keys import file_sha256
from ..core import gitcmd, run
from ..core.errors import FetchError, RecipeError
from ..core.files import remove_tree
from ..model.recipe import COMMIT_RE, Source, SourceKind
from ..model.repos import Checkout, RepoPin
from .fetch import Fetcher

log = logging.getLogger(__name__)


class LayerRepos:
    """Resolves and checks out remote layer repositories into the cache."""

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
        self.root = fetcher.store.root / "layer-repos"

    def _resolve(self, pin: RepoPin, origin: Path) -> str:
        """The commit a branch or tag names: asked of the server, or (offline) as the
        cache last saw it."""
        git_dir = self.fetcher.git_dir(pin.url)
        if not self.fetcher.offline:
            problem = gitcmd.url_problem(pin.url)
            if problem:
                raise RecipeError(origin, f"repos.{pin.name}.url", problem)
            cp = gitcmd.run(
                "ls-remote",
                *gitcmd.operands(pin.url, pin.ref, f"{pin.ref}^{{}}"),
                check=False,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=120,
            )
            lines = cp.stdout.decode(errors="replace").splitlines()
            found: dict[str, str] = {}
            for line in lines:
                sha, _, ref = line.partition("\t")
                if ref:
                    found[ref] = sha
            commit = found.get(f"{pin.ref}^{{}}") or found.get(pin.ref, "")
            if cp.returncode != 0 or not COMMIT_RE.match(commit):
                detail = lines[-1] if lines and cp.returncode != 0 else f"no {pin.ref}"
                raise FetchError(f"{origin}: repos.{pin.name}: {pin.url}: {detail}")
            return commit
        cp = gitcmd.run(
            *("--git-dir", git_dir, "rev-parse", "--verify", "--end-of-options"),
            f"{pin.ref}^{{commit}}",
            check=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        commit = cp.stdout.decode().strip()
        if cp.returncode != 0 or not COMMIT_RE.match(commit):
            raise FetchError(
                f"{origin}: repos.{pin.name}: the cache has not seen {pin.ref} of {pin.url} "
                f"({self.fetcher.why_offline('asking the server')}); pin a commit "
                "(jailbake lock) or build once online"
            )
        return commit

    def checkout(self, pin: RepoPin, origin: Path, patches: Sequence[Path] = ()) -> Checkout:
        """The repository's files at its commit with the patches applied, checked out once
        under the cache (per commit and patches' contents)."""
        commit = pin.commit or self._resolve(pin, origin)
        if not COMMIT_RE.match(commit):
            raise RecipeError(
                origin,
                f"repos.{pin.name}.commit",
                f"expected a full 40-hex commit id, got {commit!r}",
            )
        label = re.sub(r"[^A-Za-z0-9._-]", "_", pin.name)
        patched = ""
        if patches:
            digest = hashlib.sha256(b"".join(file_sha256(p).encode() for p in patches))
            patched = "-patched-" + digest.hexdigest()[:16]
        dest = self.root / f"{label}{patched}-{commit}"
        with self.fetcher.store.lock(f"layer-{dest.name}"):
            if not dest.is_dir():
                self._checkout(pin, commit, dest, origin, patches)
        return Checkout(pin.name, pin.url, commit, dest, floating=not pin.commit)

    def _checkout(
        self, pin: RepoPin, commit: str, dest: Path, origin: Path, patches: Sequence[Path]
    ) -> None:
        source = Source(SourceKind.GIT, pin.url, commit=commit)
        git_dir = self.fetcher.fetch_git(f"{origin}: repos.{pin.name}", source)
        if pin.branch or pin.tag:  # remember what the ref named, for --offline
            gitcmd.run(
                *("--git-dir", self.fetcher.git_dir(pin.url), "update-ref", "--end-of-options"),
                *(pin.ref, commit),
                check=False,
            )
        self._export(git_dir, source, dest, patches, f"{origin}: repos.{pin.name}.patches")

    def _export(
        self,
        git_dir: Path | None,
        source: Source,
        dest: Path,
        patches: Sequence[Path] = (),
        where: str = "",
    ) -> None:
        from .unpack import extract_tar, git_export

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{os.getpid()}-{dest.name}"
        remove_tree(tmp)
        origin = f"{source.location} {source.commit}"
        try:
            if git_dir is None:  # a mirror's `git archive` of the commit
                archive = self.fetcher.mirror_archive(source)
                assert archive is not None
                extract_tar(None, archive, tmp, origin=origin)
            else:
                git_export(git_dir, source.commit, tmp, origin=origin)
            for patch in patches:
                cp = run.run(
                    ["patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch",
                     "-d", str(tmp), "-i", str(patch)],
                    check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                )  # fmt: skip
                if cp.returncode != 0:
                    detail = cp.stdout.decode(errors="replace").strip().splitlines()
                    raise FetchError(
                        f"{where}: {patch.name} does not apply: "
                        + (detail[-1] if detail else "patch failed")
                    )
            os.rename(tmp, dest)
        except BaseException:
            remove_tree(tmp)
            raise
