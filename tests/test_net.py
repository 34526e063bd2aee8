"""Network reads within bounds, against real servers on 127.0.0.1 that misbehave."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import Project
from jailbake.core import net


class Misbehaving:
    """An HTTP server that answers every request with a scripted misbehaviour."""

    def __init__(self, mode: str, redirect_to: str = "") -> None:
        self.mode = mode
        self.redirect_to = redirect_to
        self.requests: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            self.requests.append(request.split(b" ")[1].decode())
            try:
                if self.mode == "huge":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5000000000\r\n\r\n")
                    while not self.stop.is_set():
                        conn.sendall(b"x" * 65536)
                elif self.mode == "endless":  # no length announced, bytes without end
                    conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                    while not self.stop.is_set():
                        conn.sendall(b"x" * 65536)
                elif self.mode == "drip":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                    while not self.stop.is_set():
                        conn.sendall(b"x")
                        time.sleep(0.3)
                elif self.mode == "gzip":  # compressed although identity was asked
                    body = gzip.compress(b"record" * 1000)
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Encoding: gzip\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                elif self.mode == "redirect":
                    conn.sendall(
                        b"HTTP/1.1 302 Found\r\nConnection: close\r\nLocation: "
                        + self.redirect_to.encode()
                        + b"\r\nContent-Length: 0\r\n\r\n"
                    )
                else:
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
                    )
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def server() -> Iterator[list[Misbehaving]]:
    made: list[Misbehaving] = []
    yield made
    for s in made:
        s.close()


def serve(made: list[Misbehaving], mode: str, redirect_to: str = "") -> Misbehaving:
    s = Misbehaving(mode, redirect_to)
    made.append(s)
    return s


def get(url: str, bounds: net.Bounds) -> bytes:
    with net.request(requests.Session(), "GET", url, bounds) as resp:
        return net.read_all(resp, bounds)


def test_a_body_larger_than_the_cap_is_refused_before_it_is_read(
    server: list[Misbehaving],
) -> None:
    s = serve(server, "huge")
    started = time.monotonic()
    with pytest.raises(net.NetError, match="5000000000 bytes announced, more than 4194304"):
        get(f"{s.url}/ac/x", net.RECORD)
    assert time.monotonic() - started < 5


def test_a_body_without_length_is_cut_at_the_cap(server: list[Misbehaving]) -> None:
    s = serve(server, "endless")
    with pytest.raises(net.NetError, match="more than 1048576 bytes"):
        get(f"{s.url}/x", net.Bounds(limit=1 << 20, deadline=30))


def test_a_dripping_server_is_dropped_at_the_deadline(server: list[Misbehaving]) -> None:
    s = serve(server, "drip")
    started = time.monotonic()
    with pytest.raises(net.NetError, match="not complete within 2s"):
        get(f"{s.url}/x", net.Bounds(limit=None, deadline=2, min_rate=0))
    assert time.monotonic() - started < 4


def test_a_dripping_server_is_dropped_below_the_floor_rate(
    server: list[Misbehaving], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(net, "RATE_WINDOW", 1.5)
    s = serve(server, "drip")
    with pytest.raises(net.NetError, match="slower than 1024 bytes/s for 2s"):
        get(f"{s.url}/x", net.Bounds(limit=None, deadline=60))


def test_redirects_stay_within_their_origin(server: list[Misbehaving]) -> None:
    good = serve(server, "ok")
    other = serve(server, "redirect", redirect_to=f"{good.url}/elsewhere")
    same = serve(server, "redirect", redirect_to="/moved")
    with pytest.raises(net.NetError, match="redirected to another origin"):
        get(f"{other.url}/ac/k", net.RECORD)
    assert good.requests == []
    # Sources may move between hosts (github.com -> codeload.github.com): their sha256
    # is checked after the download.
    assert get(f"{other.url}/src.tar.gz", net.SOURCE) == b"ok"
    with pytest.raises(net.NetError, match="more than 5 redirects"):
        get(f"{same.url}/x", net.RECORD)  # /moved redirects to itself


def test_origins_name_scheme_host_and_port() -> None:
    assert net.origin("https://a.example/x") == ("https", "a.example", 443)
    assert net.origin("http://A.example:8080/y") == ("http", "a.example", 8080)


def test_the_remote_cache_gives_up_on_a_hostile_server(
    project: Project, server: list[Misbehaving], tmp_path: Path
) -> None:
    s = serve(server, "huge")
    project.recipe("a")
    started = time.monotonic()
    result = project.build("--remote-cache", s.url, "--remote-cache-readonly")
    assert result.report["built"] == ["a"]
    assert "bytes announced, more than" in result.stderr
    assert time.monotonic() - started < 30
    assert s.requests and all(r.startswith("/ac/") for r in s.requests)


def test_bodies_are_asked_uncompressed_and_decoded_if_sent_compressed(
    server: list[Misbehaving],
) -> None:
    s = serve(server, "gzip")
    assert get(f"{s.url}/ac/k", net.RECORD) == b"record" * 1000
    with pytest.raises(net.TooLarge):  # the cap holds for the decoded bytes
        get(f"{s.url}/ac/k", net.Bounds(limit=1000, deadline=30))
