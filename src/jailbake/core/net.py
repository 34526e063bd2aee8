"""Reading from the network within bounds.

Every response body jailbake reads has a size cap and an overall deadline, and
a transfer that stalls below a floor rate is dropped: a server cannot fill the
memory or the disk, nor hold a build by dripping a byte every few seconds.
Redirects are followed by hand: never from https to http, and, where the bounds
say so (the remote cache, publishing), only within the same origin.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

if TYPE_CHECKING:
    import requests

TIMEOUT = 30.0  # seconds to connect, and for any single read
CHUNK = 1 << 16
MAX_REDIRECTS = 5
RATE_WINDOW = 60.0  # seconds over which the floor rate is measured


class NetError(OSError):
    """A transfer broke one of its bounds, or a redirect went where it may not."""


class TooLarge(NetError):
    """A body over its size cap: that answer is refused, the server may still serve others."""


@dataclass(frozen=True)
class Bounds:
    limit: int | None  # bytes of body at most (None: no cap)
    deadline: float  # seconds for the whole request, body included
    same_origin: bool = True  # redirects only to the scheme, host and port asked
    min_rate: int = 1024  # bytes per second, averaged over RATE_WINDOW


# Pinned sources are checked by sha256 after the download; upstream hosts redirect to
# their content hosts (github.com -> codeload.github.com), so any https origin will do.
SOURCE = Bounds(limit=16 << 30, deadline=6 * 3600.0, same_origin=False)
RECORD = Bounds(limit=4 << 20, deadline=60.0)  # small answers: checksum lists
# A remote cache record lists every file of an output tree: tens of thousands for a root
# file system tree.
CACHE_RECORD = Bounds(limit=64 << 20, deadline=120.0)


def blob_bounds(size: int) -> Bounds:
    """A blob whose size is known: that many bytes, at a floor of 256 KiB/s."""
    return Bounds(limit=size, deadline=60.0 + size / (256 << 10))


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def request(
    session: requests.Session,
    method: str,
    url: str,
    bounds: Bounds,
    *,
    headers: Mapping[str, str] | None = None,
    data: Any = None,
) -> requests.Response:
    """Send the request (body not read yet: stream it with read_body), following
    redirects as bounds allow."""
    started = time.monotonic()
    for _ in range(MAX_REDIRECTS + 1):
        remaining = bounds.deadline - (time.monotonic() - started)
        if remaining <= 0:
            raise NetError(f"{method} {url}: no answer within {bounds.deadline:.0f}s")
        resp = session.request(
            method,
            url,
            # Bodies are taken as sent: caps and digests apply to the bytes that are stored.
            headers={"Accept-Encoding": "identity", **(headers or {})},
            data=data,
            stream=True,
            allow_redirects=False,
            timeout=(min(TIMEOUT, remaining), min(TIMEOUT, remaining)),
        )
        if not (resp.is_redirect and "Location" in resp.headers):
            return resp
        target = urljoin(url, resp.headers["Location"])
        resp.close()
        if urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https":
            raise NetError(f"{method} {url}: redirected to {target}, away from https; refused")
        if bounds.same_origin and origin(target) != origin(url):
            raise NetError(f"{method} {url}: redirected to another origin ({target}); refused")
        if data is not None and not isinstance(data, bytes):
            raise NetError(f"{method} {url}: redirected to {target} after the body was sent")
        url = target
    raise NetError(f"{method} {url}: more than {MAX_REDIRECTS} redirects")


def iter_body(resp: requests.Response, bounds: Bounds, *, already: int = 0) -> Iterator[bytes]:
    """The body in chunks, within bounds (already: bytes of it the caller holds from an
    earlier, resumed transfer)."""
    url = resp.url
    declared = resp.headers.get("Content-Length", "")
    if (
        bounds.limit is not None
        and (declared.isascii() and declared.isdigit())
        and already + int(declared) > bounds.limit
    ):
        raise TooLarge(f"{url}: {declared} bytes announced, more than {bounds.limit}")
    started = time.monotonic()
    # A read blocked in the socket cannot check the clock: at the deadline the socket is
    # shut from this timer, and the read returns.
    watchdog = threading.Timer(bounds.deadline, _shutdown, (resp,))
    watchdog.daemon = True
    watchdog.start()
    got = 0
    window: list[tuple[float, int]] = [(started, 0)]
    try:
        while True:
            try:
                chunk = resp.raw.read1(CHUNK, decode_content=True)
            except Exception as exc:
                if time.monotonic() - started >= bounds.deadline:
                    raise NetError(f"{url}: not complete within {bounds.deadline:.0f}s") from None
                import requests

                # A broken connection, which callers may resume.
                raise requests.ConnectionError(f"{url}: {exc}") from None
            now = time.monotonic()
            if not chunk:
                if now - started >= bounds.deadline:
                    raise NetError(f"{url}: not complete within {bounds.deadline:.0f}s")
                return
            got += len(chunk)
            if bounds.limit is not None and already + got > bounds.limit:
                raise TooLarge(f"{url}: more than {bounds.limit} bytes; refused")
            if now - started > bounds.deadline:
                raise NetError(f"{url}: not complete within {bounds.deadline:.0f}s")
            window.append((now, got))
            while len(window) > 1 and now - window[1][0] >= RATE_WINDOW:
                window.pop(0)
            since, base = window[0]
            if now - since >= RATE_WINDOW and (got - base) / (now - since) < bounds.min_rate:
                raise NetError(
                    f"{url}: slower than {bounds.min_rate} bytes/s for {RATE_WINDOW:.0f}s; dropped"
                )
            yield chunk
    finally:
        watchdog.cancel()


def _shutdown(resp: requests.Response) -> None:
    # Already released or closed: nothing blocks on it then.
    with contextlib.suppress(Exception):
        resp.raw.shutdown()


def read_all(resp: requests.Response, bounds: Bounds) -> bytes:
    """The whole body, which bounds.limit keeps small."""
    return b"".join(iter_body(resp, bounds))


def save(
    resp: requests.Response,
    out: IO[bytes],
    bounds: Bounds,
    *,
    already: int = 0,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Write the body to out; return its length."""
    written = 0
    for chunk in iter_body(resp, bounds, already=already):
        out.write(chunk)
        written += len(chunk)
        if progress is not None:
            progress(len(chunk))
    return written
