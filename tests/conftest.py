"""Fixtures: real layer projects in tmp_path, a real HTTP server, the CLI as users run it."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import importlib.metadata
import io
import json
import os
import pty
import select
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import termios
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
SDE = 1700000000


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_tarball(files: Mapping[str, str | bytes], top: str = "pkg-1.0") -> bytes:
    """A deterministic .tar.gz with everything under top/."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(files):
            content = files[name]
            data = content if isinstance(content, bytes) else content.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mtime = SDE
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


@dataclass
class Served:
    """What the test HTTP server did."""

    requests: list[str] = field(default_factory=list)
    fail_next: dict[str, int] = field(default_factory=dict)  # path -> status to answer once
    cut_next: dict[str, int] = field(default_factory=dict)  # path -> bytes to send, then drop
    ranges: list[str] = field(default_factory=list)


class HTTPFiles:
    """A real HTTP server on 127.0.0.1 serving a directory, with Range support."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.served = Served()
        served = self.served

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                served.requests.append(self.path)
                status = served.fail_next.pop(self.path, None)
                if status:
                    self.send_error(status)
                    return
                path = root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    served.ranges.append(rng)
                    start = int(rng[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                cut = served.cut_next.pop(self.path, None)
                if cut is not None:
                    self.wfile.write(data[start : start + cut])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(data[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"{self.url}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http(tmp_path: Path) -> Iterator[HTTPFiles]:
    server = HTTPFiles(tmp_path / "www")
    server.root.mkdir()
    yield server
    server.close()


@pytest.fixture
def visible_dir() -> Iterator[Path]:
    """A directory host steps can read: they run under bubblewrap with /tmp, /var/tmp and
    /run of their own, so pytest's tmp_path is out of their sight."""
    path = Path(tempfile.mkdtemp(prefix="jailbake-test-", dir="/var/cache"))
    yield path
    shutil.rmtree(path)


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    @property
    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.stdout.strip().splitlines()[-1])
        return data


class Project:
    """A layer project (its own git repository) with recipes written from dicts."""

    def __init__(self, root: Path, cache: Path) -> None:
        self.root = root
        self.cache = cache
        root.mkdir(parents=True, exist_ok=True)
        (root / "recipes").mkdir(exist_ok=True)
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        self.layer(
            "layer.yml",
            {
                "header": {"version": 14},
                "repos": {"this": {"layers": {"recipes": None}}},
                "env": {"SOURCE_DATE_EPOCH": str(SDE)},
            },
        )

    def with_builders(self) -> Project:
        """The checkout's docker/ builder definitions, for recipes that name one."""
        shutil.copytree(ROOT / "docker", self.root / "docker", dirs_exist_ok=True)
        return self

    def layer(self, name: str, data: Mapping[str, Any]) -> Path:
        path = self.root / name
        path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
        return path

    def recipe(self, name: str, data: Mapping[str, Any] | None = None, **fields: Any) -> Path:
        body: dict[str, Any] = {"name": name, "version": "1"}
        body.update(data or {})
        body.update(fields)
        if "rootfs" not in body:
            body.setdefault("script", f'mkdir -p "$OUT"; echo {name} > "$OUT/{name}.txt"')
            body.setdefault("outputs", [f"{name}.txt"])
        body = {k: v for k, v in body.items() if v is not None}
        path = self.root / "recipes" / f"{name}.yml"
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        return path

    def file(self, rel: str, content: str | bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        check: bool = False,
    ) -> Result:
        return jailbake(*args, env=env, cwd=cwd or self.root, check=check)

    def start(self, *args: str, **popen: Any) -> subprocess.Popen[str]:
        """jailbake build ... in the background, as a second user or a killed one would."""
        env = dict(os.environ, PYTHONPATH=str(SRC))
        argv = [
            sys.executable,
            "-m",
            "jailbake.cli",
            "build",
            "layer.yml",
            "--cache-dir",
            str(self.cache),
            *args,
        ]
        return subprocess.Popen(argv, cwd=self.root, env=env, text=True, **popen)

    def explain(self, recipe: str, config: str = "layer.yml") -> Result:
        return self.run(
            "explain",
            config,
            recipe,
            "--executor",
            "host",
            "--cache-dir",
            str(self.cache),
            check=True,
        )

    def build(
        self,
        *args: str,
        config: str = "layer.yml",
        executor: str = "host",
        artifacts: Path | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> Result:
        argv = [
            "build",
            config,
            "--executor",
            executor,
            "--cache-dir",
            str(self.cache),
            "--json",
            *args,
        ]
        if artifacts is not None:
            argv += ["--artifacts-dir", str(artifacts)]
        return self.run(*argv, env=env, check=check)


def jailbake(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = False,
    timeout: float = 600,
) -> Result:
    """Run the jailbake command line in a subprocess, as a user would."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(SRC)
    full_env.update(env or {})
    cp = subprocess.run(
        [sys.executable, "-m", "jailbake.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result = Result(cp.returncode, cp.stdout, cp.stderr)
    if check and cp.returncode != 0:
        raise AssertionError(f"jailbake {' '.join(args)} failed ({cp.returncode}):\n{cp.stderr}")
    return result


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path / "proj", tmp_path / "cache")


def engine_available() -> bool:
    sys.path.insert(0, str(SRC))
    from jailbake.core.errors import EngineError
    from jailbake.executors import engine

    try:
        engine.connect()
    except EngineError:
        return False
    return True


@pytest.fixture(scope="session")
def docker_engine() -> None:
    if not engine_available():
        if os.environ.get("CI"):
            pytest.fail("no container engine answers; scripts/test sets one up")
        pytest.skip("no container engine answers (run scripts/test to set one up)")


# The layers whose builds the tests run with --offline: their builder images must be in
# the engine first, made here from their pinned .debs (scripts/test-assets holds them).
OFFLINE_LAYERS = ("layers/busybox-initramfs.yml", "layers/qemu-arm64-jailhouse.yml")


@pytest.fixture(scope="session")
def builder_images(docker_engine: None) -> None:
    """Every builder image the offline layers use, built if the engine lacks it."""
    assets = Path(os.environ.get("JAILBAKE_TEST_ASSETS", "/var/cache/jailbake-test"))
    mirror = ("--mirror", str(assets / "mirror")) if (assets / "mirror").is_dir() else ()
    made = jailbake("builders", *OFFLINE_LAYERS, *mirror, cwd=ROOT, timeout=1800)
    if made.rc != 0:
        pytest.fail(f"jailbake builders failed:\n{made.stderr[-3000:]}")


def path_without(program: str, where: Path) -> str:
    """A PATH with every program of the usual directories but one, as on a machine that
    lacks it: a directory of links under where."""
    bin_dir = where / f"bin-without-{program}"
    bin_dir.mkdir()
    for d in ("/usr/local/bin", "/usr/bin", "/bin"):
        for tool in Path(d).iterdir():
            if tool.name != program and not (bin_dir / tool.name).exists():
                (bin_dir / tool.name).symlink_to(tool)
    return str(bin_dir)


TRACE = "build-trace.json"  # beside the artifacts; records times, so it differs per build
REPORT = "build-report.html"  # drawn from the trace


def artifact_names(art: Path) -> list[str]:
    """The files of an artifacts directory that two builds must make identical: all but
    the build's trace and report, which must be there."""
    names = sorted(p.name for p in art.iterdir())
    assert TRACE in names and REPORT in names, names
    return [n for n in names if n not in (TRACE, REPORT)]


@dataclass
class RenderedPage:
    """What a real browser made of a page: its DOM after the page's own script ran."""

    bars: list[str]  # recipe names of the timeline's bars
    visible_bars: int  # bars the page's script measured with a non-zero size
    rendered: bool  # the page's script ran to its end
    charts: dict[str, int]  # chart id -> points of its line
    rows: list[str]  # recipe names of the table
    dom: str


def render_in_chromium(page: Path, screenshot: Path) -> RenderedPage:
    """Open page in headless Chromium (Debian's); return its DOM, save a screenshot."""
    from html.parser import HTMLParser

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing; scripts/test installs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--window-size=1280,1000"]  # fmt: skip
    with tempfile.TemporaryDirectory() as profile:
        argv.append(f"--user-data-dir={profile}")
        dom = subprocess.run(
            [*argv, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
        ).stdout
        subprocess.run(
            [*argv, f"--screenshot={screenshot}", page.as_uri()],
            capture_output=True,
            timeout=120,
            check=True,
        )

    class Parser(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.out = RenderedPage([], 0, False, {}, [], dom)
            self.chart: str | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = {k: v or "" for k, v in attrs}
            classes = a.get("class", "").split()
            if tag == "body":
                self.out.visible_bars = int(a.get("data-visible-bars", "0"))
                self.out.rendered = a.get("data-rendered") == "yes"
            elif tag == "g" and "bar" in classes:
                self.out.bars.append(a["data-name"])
            elif tag == "tr" and "data-name" in a:
                self.out.rows.append(a["data-name"])
            elif tag == "svg" and "chart" in classes:
                self.chart = a["id"]
                self.out.charts[self.chart] = 0
            elif tag == "polyline" and self.chart:
                self.out.charts[self.chart] = len(a.get("points", "").split())

        def handle_endtag(self, tag: str) -> None:
            if tag == "svg":
                self.chart = None

    parser = Parser()
    parser.feed(dom)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return parser.out


def screenshot_path(name: str, tmp_path: Path) -> Path:
    """Where a test's screenshot goes: $JAILBAKE_SCREENSHOTS when set (to keep it)."""
    keep = os.environ.get("JAILBAKE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        return Path(keep) / name
    return tmp_path / name


def _runtime_files() -> Iterator[tuple[Path, str]]:
    """(file, its path inside site-packages) of every distribution jailbake needs at run
    time, found from jailbake's own requirements (not its test extra), recursively."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = list(importlib.metadata.requires("jailbake") or [])
    while todo:
        req = Requirement(todo.pop())
        name = req.name.lower().replace("_", "-")
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        dist = importlib.metadata.distribution(req.name)
        todo += dist.requires or []
        for file in dist.files or ():
            if file.parts[0] == ".." or "__pycache__" in file.parts:
                continue  # scripts beside site-packages; bytecode is made again
            yield Path(str(dist.locate_file(file))), file.as_posix()


@pytest.fixture(scope="session")
def user_packages() -> Iterator[str]:
    """jailbake and the packages it needs, copied where any user can read them: a test
    that runs jailbake as another user cannot count on reaching the checkout (a clone
    in a 0700 directory, or under root's home) or the virtual environment in it."""
    top = Path(tempfile.mkdtemp(prefix="jailbake-user-packages-", dir="/var/tmp"))
    try:
        shutil.copytree(SRC / "jailbake", top / "jailbake",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        for file, rel in _runtime_files():
            dest = top / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, dest)
        for path in [top, *top.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # whatever the umask was
        yield str(top)
    finally:
        shutil.rmtree(top)


def copy_checkout(dest: Path) -> Path:
    """The jailbake checkout's layer files, recipes and docker/ copied into dest as a git repo."""
    ignore = shutil.ignore_patterns(
        ".git",
        ".venv",
        "__pycache__",
        "artifacts",
        "*.egg-info",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
    )
    shutil.copytree(ROOT, dest, ignore=ignore)
    subprocess.run(["git", "init", "-q", str(dest)], check=True)
    return dest


class WebDAV:
    """nginx from Debian with its WebDAV module on 127.0.0.1: PUT, GET, HEAD, DELETE,
    as a release server or a Bazel-style HTTP cache would answer them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.docroot = root / "www"
        self.access_log = root / "access.log"
        for d in (self.docroot, root / "body"):
            d.mkdir(parents=True)
            shutil.chown(d, "nobody")  # nginx's workers run as nobody
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = root / "nginx.conf"
        conf.write_text(
            f"""daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {self.access_log};
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/body;
    fastcgi_temp_path {root}/body;
    uwsgi_temp_path {root}/body;
    scgi_temp_path {root}/body;
    server {{
        listen 127.0.0.1:{self.port};
        root {self.docroot};
        dav_methods PUT DELETE;
        create_full_put_path on;
        client_max_body_size 0;
    }}
}}
"""
        )
        self.proc = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", str(root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                assert self.proc.poll() is None, f"nginx did not start: {self.proc.stderr}"
                assert time.monotonic() < deadline, "nginx did not start listening"
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request so far, in order."""
        out = []
        for line in self.access_log.read_text().splitlines():
            request = line.split('"')[1].split()
            status = int(line.split('"')[2].split()[0])
            out.append((request[0], request[1], status))
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def webdav(tmp_path: Path) -> Iterator[WebDAV]:
    if shutil.which("nginx") is None or os.getuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("nginx (Debian: nginx-light) and root are needed for the WebDAV server")
        pytest.skip("needs nginx (Debian: nginx-light) and root")
    # nginx's workers run as nobody: their directories must be reachable for them, and
    # pytest's temporary directories are not (0700).
    root = Path(tempfile.mkdtemp(prefix="jailbake-nginx-"))
    root.chmod(0o755)
    server = WebDAV(root / "nginx")
    yield server
    server.stop()
    shutil.rmtree(root)


def in_pty(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    send: Sequence[tuple[str, str]] = (),
    columns: int = 100,
    timeout: float = 120,
) -> tuple[int, list[str]]:
    """Run argv on a real pseudo-terminal, typing each text of send once its prompt has
    appeared in what came after the text typed before; its exit status and everything it
    wrote, in the pieces it came in."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the program, on the terminal
        os.chdir(cwd)
        os.execve(argv[0], argv, dict(env))
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    pieces: list[str] = []
    todo = list(send)
    since = 0  # where the output after the last typed text starts
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            pieces.append(data.decode(errors="replace"))
        text = "".join(pieces)
        if todo and todo[0][0] in text[since:]:
            since = len(text)
            os.write(fd, todo.pop(0)[1].encode())
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), pieces


def assert_valid_spdx(path: Path) -> None:
    """The SPDX tools' validator accepts the document."""
    validated = subprocess.run(
        [str(Path(sys.executable).parent / "pyspdxtools"), "-i", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert validated.returncode == 0, validated.stdout + validated.stderr


# jailhouse-images' config.txt (recipes-bsp/rpi-firmware/files/config.txt at v0.12):
# what the Raspberry Pi 4 firmware reads from its card.
JAILHOUSE_IMAGES_CONFIG_TXT = """\
dtparam=audio=on

[pi4]
dtoverlay=vc4-fkms-v3d
max_framebuffers=2

[all]
enable_uart=1
arm_64bit=1
enable_gic=1
armstub=bl31.bin
"""
