"""Getting pinned sources into the cache: downloads, mirrors, git."""

from __future__ import annotations

import hashlib
import logging
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..cache.keys import file_sha256
from ..cache.store import Store
from ..core import gitcmd
from ..core.errors import ChecksumError, FetchError
from ..executors.debs import Deb
from ..model.recipe import Recipe, Source, SourceKind

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

RETRIES = 4
BACKOFF = 0.5  # seconds before the first retry; doubled for each next one


@dataclass(frozen=True)
class Missing:
    recipe: str
    source: Source

    def describe(self) -> str:
        if self.source.kind is SourceKind.GIT:
            return f"{self.recipe}: {self.source.location} commit {self.source.commit}"
        return f"{self.recipe}: {self.source.location} sha256 {self.source.sha256}"


def git_archive_name(url: str, commit: str) -> str:
    """The file name of a git source exported at its commit, in a mirror."""
    base = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") or "repo"
    return f"{base}-{commit}.tar"


def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def is_local(location: str) -> bool:
    """A source on this machine (file:// or a path): no network, so --offline reads it."""
    return location.startswith("file://") or location.startswith("/")


def _local_path(location: str) -> Path:
    return Path(location.removeprefix("file://"))


def deb_source(deb: Deb) -> Source:
    """A pinned .deb of a builder image as a download (mirrors serve it by sha256)."""
    return Source(SourceKind.URL, deb.url, sha256=deb.sha256, unpack=False, filename=deb.filename)


def git_dir(store_root: Path, url: str) -> Path:
    """Where a cache keeps the repository of a git source."""
    return store_root / "git" / (hashlib.sha256(url.encode()).hexdigest()[:24] + ".git")


class Fetcher:
    """Puts each source in the cache, from the cache, a mirror, or upstream."""

    def __init__(
        self,
        store: Store,
        mirrors: Sequence[str] = (),
        *,
        offline: bool = False,
        progress: bool | None = None,
        offline_reason: str = "--offline forbids",
    ) -> None:
        self.store = store
        self.mirrors = list(mirrors)
        self.offline = offline
        self.offline_reason = offline_reason  # said when something cannot be had offline
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._session: requests.Session | None = None
        # Told of every download: (kind, name, start, recipe=..., **details).
        self.on_span: Callable[..., None] | None = None

    def why_offline(self, what: str) -> str:
        """'--offline forbids downloading', or the reason this fetcher was made offline."""
        return (
            f"{self.offline_reason} {what}"
            if self.offline_reason.endswith("forbids")
            else (self.offline_reason)
        )

    def _span(self, name: str, start: float, recipe: str, **details: object) -> None:
        if self.on_span is not None:
            self.on_span("fetch", name, start, recipe=recipe, **details)

    # -- what is missing ---------------------------------------------------------
    def git_dir(self, url: str) -> Path:
        return git_dir(self.store.root, url)

    def _have_commit(self, url: str, commit: str) -> bool:
        git_dir = self.git_dir(url)
        if not git_dir.is_dir():
            return False
        cp = gitcmd.run(
            *("--git-dir", git_dir, "cat-file", "-e", "--end-of-options", f"{commit}^{{commit}}"),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return cp.returncode == 0

    def is_cached(self, source: Source) -> bool:
        if source.kind is SourceKind.URL:
            return self.store.has_blob(source.sha256)
        if source.kind is SourceKind.GIT:
            return self._have_commit(source.location, source.commit)
        return True

    def _local_mirror_files(self, source: Source) -> list[Path]:
        """Where the mirror directories would hold a download (by sha256, then by name)
        or a repository's archive, whether they do or not."""
        places: list[Path] = []
        for mirror in self.mirrors:
            if _is_url(mirror):
                continue
            root = Path(mirror)
            if source.kind is SourceKind.URL:
                places += [root / "sha256" / source.sha256, root / source.filename]
            elif source.kind is SourceKind.GIT:
                places.append(root / git_archive_name(source.location, source.commit))
        return places

    def _in_local_mirror(self, source: Source) -> bool:
        return any(p.is_file() for p in self._local_mirror_files(source))

    def known_size(self, source: Source) -> int | None:
        """The size of a source that this machine already holds, in the cache, in a
        mirror directory or in the layer, without fetching it (None where it does not:
        a repository is known only as a mirrored archive)."""
        candidates = self._local_mirror_files(source)
        if source.kind is SourceKind.URL:
            candidates.insert(0, self.store.blob_path(source.sha256))
        elif source.kind is SourceKind.FILE and source.path is not None:
            candidates.append(source.path)
        for path in candidates:
            try:
                st = path.stat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                return st.st_size
        return None

    def missing_offline(self, recipes: Iterable[Recipe]) -> list[Missing]:
        """Sources that an offline build could not find (network mirrors count as absent;
        a source on this machine is read where it is)."""
        return [
            Missing(r.name, s)
            for r in recipes
            for s in r.sources
            if s.kind is not SourceKind.FILE
            and not self.is_cached(s)
            and not self._in_local_mirror(s)
            and not (is_local(s.location) and _local_path(s.location).exists())
        ]

    # -- url sources ---------------------------------------------------------------
    def fetch_url(self, recipe: str, source: Source) -> Path:
        """The cached file of a url source, downloading it if needed. A cached file is
        hashed again before it is used: a changed one is removed and fetched anew."""
        blob = self.store.blob_path(source.sha256)
        if self.store.verify_blob(source.sha256):
            return blob
        with self.store.lock(f"fetch-{source.sha256}"):
            if self.store.verify_blob(source.sha256):
                return blob
            start = time.monotonic()
            blob = self._fetch_url(recipe, source)
            name = source.filename or source.location.rsplit("/", 1)[-1]
            self._span(name, start, recipe, url=source.location, bytes=blob.stat().st_size)
            return blob

    def fetch_deb(self, deb: Deb) -> Path:
        """A builder image's pinned .deb, as fetch_url fetches a recipe's download."""
        return self.fetch_url(f"builder package {deb.name}", deb_source(deb))

    def _fetch_url(self, recipe: str, source: Source) -> Path:
        blob = self.store.blob_path(source.sha256)
        candidates: list[str] = []
        for mirror in self.mirrors:
            base = mirror.rstrip("/")
            candidates += [f"{base}/sha256/{source.sha256}", f"{base}/{source.filename}"]
        rejected: list[str] = []
        for candidate in candidates:
            try:
                if self._try(recipe, source, candidate, mirror=True):
                    return blob
            except ChecksumError as exc:
                # Never used; a file of the same name may belong to another project.
                log.warning("%s", exc)
                rejected.append(f"{candidate} has sha256 {exc.actual}")
        seen = f" (mirror files rejected: {'; '.join(rejected)})" if rejected else ""
        if self.offline and not is_local(source.location):
            raise FetchError(
                f"{recipe}: {source.location} (sha256 {source.sha256}) is not "
                f"in the cache or any mirror, and {self.why_offline('downloading')}{seen}"
            )
        try:
            self._try(recipe, source, source.location, mirror=False)
        except FetchError as exc:
            if rejected:
                raise FetchError(f"{exc}{seen}") from None
            raise
        return blob

    def _try(self, recipe: str, source: Source, location: str, *, mirror: bool) -> bool:
        """Fetch location into the CAS if it exists there; False if it does not."""
        part = self.store.root / "tmp" / f"download-{source.sha256}.part"
        if _is_url(location):
            if self.offline:
                return False
            if not self._download(location, part, missing_ok=mirror):
                return False
        else:
            path = _local_path(location)
            if not path.is_file():
                if mirror:
                    return False
                raise FetchError(f"{recipe}: {location} does not exist")
            shutil.copyfile(path, part)
        actual = file_sha256(part)
        if actual != source.sha256:
            part.unlink()
            raise ChecksumError(recipe, location, source.sha256, actual)
        self.store.add_blob(part, source.sha256)
        return True

    def _requests(self) -> requests.Session:
        if self._session is None:
            import requests
            from requests.adapters import HTTPAdapter
            from urllib3.util.retry import Retry

            session = requests.Session()
            # urllib3 retries answers that say "try again"; _download retries broken
            # connections itself, resuming what it already has.
            retry = Retry(
                total=None,
                connect=0,
                read=0,
                other=0,
                status=RETRIES,
                backoff_factor=BACKOFF,
                raise_on_status=False,
                status_forcelist=(429, 500, 502, 503, 504),
                allowed_methods=None,
                respect_retry_after_header=False,  # a server may not set the pace
            )
            session.mount("http://", HTTPAdapter(max_retries=retry))
            session.mount("https://", HTTPAdapter(max_retries=retry))
            session.headers["User-Agent"] = "jailbake"
            self._session = session
        return self._session

    def _download(self, url: str, part: Path, *, missing_ok: bool) -> bool:
        """Download url to part, resuming a previous partial file where the server allows."""
        import requests
        from tqdm import tqdm

        from ..core import net

        session = self._requests()
        for attempt in range(RETRIES + 1):
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with net.request(session, "GET", url, net.SOURCE, headers=headers) as resp:
                    if resp.status_code == 404 and missing_ok:
                        return False
                    if resp.status_code == 416:  # nothing left to send: already complete
                        return True
                    if resp.status_code >= 400:
                        raise FetchError(f"{url}: HTTP {resp.status_code} {resp.reason}")
                    resumed = resp.status_code == 206
                    total = int(resp.headers.get("Content-Length", 0)) + (have if resumed else 0)
                    with (
                        part.open("ab" if resumed else "wb") as out,
                        tqdm(
                            total=total or None,
                            initial=have if resumed else 0,
                            unit="B",
                            unit_scale=True,
                            desc=url.rsplit("/", 1)[-1],
                            leave=False,
                            disable=not self.progress,
                            file=sys.stderr,
                        ) as bar,
                    ):
                        net.save(
                            resp,
                            out,
                            net.SOURCE,
                            already=have if resumed else 0,
                            progress=bar.update,
                        )
                    if not self.progress:
                        log.info("fetched %s (%d bytes)", url, part.stat().st_size)
                    return True
            except FetchError:
                raise
            except net.NetError as exc:  # a bound broken: trying again would not help
                if missing_ok:
                    log.warning("mirror %s: %s", url, exc)
                    return False
                raise FetchError(str(exc)) from None
            except requests.RequestException as exc:
                if attempt == RETRIES:
                    if missing_ok:
                        log.warning("mirror %s unreachable: %s", url, exc)
                        return False
                    raise FetchError(f"{url}: {exc}") from None
                time.sleep(BACKOFF * 2**attempt)
        return False

    # -- git sources -------------------------------------------------------------------
    def fetch_git(self, recipe: str, source: Source) -> Path | None:
        """The bare repository holding the commit, or None when a mirror archive serves it."""
        url, commit = source.location, source.commit
        git_dir = self.git_dir(url)
        if self._have_commit(url, commit):
            return git_dir
        with self.store.lock(f"git-{git_dir.name}"):
            if self._have_commit(url, commit):
                return git_dir
            if self.mirror_archive(source) is not None:
                return None
            if self.offline and not is_local(url):
                raise FetchError(
                    f"{recipe}: {url} commit {commit} is not in the cache or any "
                    f"mirror, and {self.why_offline('fetching')}"
                )
            start = time.monotonic()
            self._fetch_git(recipe, url, commit, git_dir)
            self._span(url.rstrip("/").rsplit("/", 1)[-1], start, recipe, url=url, commit=commit)
            return git_dir

    def _fetch_git(self, recipe: str, url: str, commit: str, git_dir: Path) -> None:
        from ..core import net

        problem = gitcmd.url_problem(url)
        if problem:  # checked where it was read; and here, before git sees it
            raise FetchError(f"{recipe}: {problem}")
        if not git_dir.is_dir():
            tmp = self.store.temp_path("git")
            gitcmd.run("init", "--quiet", "--bare", tmp)
            tmp.rename(git_dir)
        for refspec in ([commit], ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]):
            # git's own floor rate, and the same deadline as any other source.
            argv: list[str | Path] = [
                *("-c", f"http.lowSpeedLimit={net.SOURCE.min_rate}"),
                *("-c", f"http.lowSpeedTime={net.RATE_WINDOW:.0f}"),
                *("--git-dir", str(git_dir), "fetch", "--quiet", "--no-recurse-submodules"),
                *gitcmd.operands(url, *refspec),
            ]
            try:
                cp = gitcmd.run(
                    *argv,
                    check=False,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    timeout=net.SOURCE.deadline,
                )
            except subprocess.TimeoutExpired:
                raise FetchError(
                    f"{recipe}: fetching {url} took more than {net.SOURCE.deadline:.0f}s"
                ) from None
            if self._have_commit(url, commit):
                return
        detail = cp.stdout.decode(errors="replace").strip().splitlines()
        raise FetchError(
            f"{recipe}: cannot fetch commit {commit} from {url}"
            + (f": {detail[-1]}" if detail else "")
        )

    def write_git_archive(self, who: str, source: Source, dest: Path) -> None:
        """The files of a git source at its commit as a tar file at dest (new), from
        the cache's repository (fetched if it must be) or a mirror's archive."""
        git_dir = self.fetch_git(who, source)
        if git_dir is None:  # served by a mirror's archive
            archive = self.mirror_archive(source)
            assert archive is not None
            shutil.copyfile(archive, dest)
            return
        with dest.open("wb") as out:
            gitcmd.run(
                *("--git-dir", git_dir, "archive", "--format=tar", "--end-of-options"),
                source.commit,
                stdout=out,
                stderr=subprocess.PIPE,
            )

    def mirror_archive(self, source: Source) -> Path | None:
        """A repository's archive in a mirror directory, if one holds it."""
        return next((p for p in self._local_mirror_files(source) if p.is_file()), None)
