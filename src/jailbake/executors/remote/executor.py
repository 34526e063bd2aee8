"""The remote executor: each step an Action of the Remote Execution API.

The step's work directory, laid out as for a container (build.sh, src/) with its
dependencies' stored trees under deps/, becomes the action's input root. The command
runs the step script with the step's variables (sorted) and the paths of the input root
as the worker placed it; `out` is its output directory. Platform properties name the
builder image (a template over the local tag) and whatever else the cluster needs.
The result's output tree is fetched, checked against its digests and written to
out/, where jailbake stores it as it stores a local step's outputs: same keys, same
cache.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ...core.errors import JailbakeError
from ..step import STEP_LOG, ExecutorKind, Step, Vary, step_locale

# Runs in the input root, making it what a container step sees: its sources its own
# (workers hand inputs over read-only, often hard links into their cache: a copy is
# made then, never a change to theirs), the dependencies read-only as the store keeps
# them, and the paths a step knows, wherever the worker put the input root.
WRAPPER = (
    'set -e; w="$PWD"; mkdir -p out home deps src; '
    'if [ -n "$(find src ! -perm -u+w -print -quit)" ]; then '
    "cp -R src .jailbake-src; chmod -R u+w .jailbake-src; "
    "mv src .jailbake-inputs; mv .jailbake-src src; fi; "
    "chmod -R a-w deps 2>/dev/null || true; "
    'export WORKDIR="$w" SRC="$w/src" OUT="$w/out" DEPS="$w/deps" HOME="$w/home" '
    'JOBS="$(nproc 2>/dev/null || echo 1)"; '
    "exec bash build.sh 2>&1"
)
# What a worker decides, not jailbake: jailbake repro cannot vary it remotely.
WORKER_DECIDES = (
    Vary.BUILD_PATH, Vary.TIME, Vary.DOMAIN_HOST, Vary.USER_GROUP, Vary.NUM_CPUS,
    Vary.FILEORDERING,
)  # fmt: skip
LOG_LIMIT = 64 << 20  # bytes of a step's stdout or stderr fetched from the executor
CACHED = "from the remote executor's cache"
DEFAULT_WAIT = 6 * 3600.0  # seconds of a worker's run jailbake waits for (a kernel, slowly)
DEFAULT_IMAGE = "docker://{image}"


@dataclass(frozen=True)
class RemoteSettings:
    """Where and how steps run remotely: from the command line or the layer's env."""

    url: str
    instance: str = ""
    image: str = DEFAULT_IMAGE  # the container-image property; {image}, {name}, {tag}
    properties: tuple[tuple[str, str], ...] = ()  # more platform properties
    # Properties naming the workers that run root steps (uid 0, the capabilities of
    # ROOT_STEP_PRIVILEGES); none: root steps stay on this machine.
    root_properties: tuple[tuple[str, str], ...] = ()
    # Seconds an action may run on a worker, sent as its timeout (0: the service's own
    # default, which services cap: BuildGrid refuses a timeout above its maximum).
    timeout: int = 0
    queue_timeout: int = 3600  # seconds an action may wait for a worker

    @property
    def wait_limit(self) -> float:
        """How long jailbake waits for a worker's run before it cancels the action: the
        action's timeout and a tenth more, or 6 h where the service's default applies."""
        return self.timeout + self.timeout / 10 + 5 if self.timeout else DEFAULT_WAIT

    @classmethod
    def from_layer(
        cls, env: Mapping[str, str], url: str | None, instance: str | None, where: str
    ) -> RemoteSettings:
        url = url or env.get("JAILBAKE_REMOTE_EXECUTOR", "")
        if not url:
            raise JailbakeError(
                "--executor remote: no service named; give --remote-executor "
                "grpc://HOST:PORT or set JAILBAKE_REMOTE_EXECUTOR in the layer's env"
            )
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("grpc", "grpcs") or not parts.hostname or not port:
            raise JailbakeError(
                f"--remote-executor {url!r}: expected grpc://HOST:PORT or grpcs://HOST:PORT"
            )
        properties = _properties(env, "JAILBAKE_REMOTE_PROPERTIES", where)
        root_properties = _properties(env, "JAILBAKE_REMOTE_ROOT_PROPERTIES", where)
        timeout = _seconds(env, "JAILBAKE_REMOTE_TIMEOUT", "0", where)
        queue_timeout = _seconds(env, "JAILBAKE_REMOTE_QUEUE_TIMEOUT", "3600", where)
        return cls(
            url=url,
            instance=instance if instance is not None else env.get("JAILBAKE_REMOTE_INSTANCE", ""),
            image=env.get("JAILBAKE_REMOTE_IMAGE", DEFAULT_IMAGE),
            properties=properties,
            root_properties=root_properties,
            timeout=timeout,
            queue_timeout=queue_timeout,
        )

    def platform(self, image: str | None, root: bool = False) -> list[tuple[str, str]]:
        """The action's platform properties, sorted as the API wants them."""
        props = dict(self.properties)
        if root:
            props.update(self.root_properties)
        if image:
            name, _, tag = image.rpartition(":")
            # The template is a layer's: its three fields are replaced, nothing else
            # of str.format's (attribute and index lookups) applies.
            fields = {"{image}": image, "{name}": name.rsplit("/", 1)[-1], "{tag}": tag}
            props["container-image"] = re.sub(
                r"\{image\}|\{name\}|\{tag\}", lambda m: fields[m.group()], self.image
            )
        return sorted(props.items())


def _seconds(env: Mapping[str, str], name: str, default: str, where: str) -> int:
    value = env.get(name, default)
    if not (value.isascii() and value.isdigit()):
        raise JailbakeError(f"{where}: env.{name}: expected seconds, got {value!r}")
    return int(value)


def _properties(env: Mapping[str, str], name: str, where: str) -> tuple[tuple[str, str], ...]:
    properties = []
    for word in env.get(name, "").split():
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise JailbakeError(f"{where}: env.{name}: expected NAME=VALUE words, got {word!r}")
        properties.append((key, value))
    return tuple(sorted(properties))


class RemoteExecutor:
    """Runs steps on a Remote Execution API service."""

    kind = ExecutorKind.REMOTE

    def __init__(self, settings: RemoteSettings) -> None:
        self.settings = settings
        self.url = settings.url + (f" ({settings.instance})" if settings.instance else "")
        self.takes_root_steps = bool(settings.root_properties)
        self._client: Any = None
        self._lock = threading.Lock()
        self._running: dict[str, Any] = {}  # operation name -> the call streaming it
        self._cancelled = False
        self._cached: set[Path] = set()  # work directories of steps answered from its cache

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from .reapi import Client

                self._client = Client(self.settings.url, self.settings.instance)
            return self._client

    def run(self, step: Step) -> int:
        from . import reapi

        client = self.client
        action, blobs = self._action(step)
        wait = self.settings.queue_timeout
        deadline = self.settings.wait_limit
        names: list[str] = []

        def started(name: str, call: Any) -> None:
            if name not in names:
                names.append(name)
            with self._lock:
                self._running[name] = call
                cancelled = self._cancelled
            if cancelled:  # interrupted while the action was being sent
                client.cancel(name)
                call.cancel()

        try:
            client.upload(blobs)
            if self._cancelled:
                raise KeyboardInterrupt

            def execute() -> Any:
                return client.execute(
                    action.digest,
                    on_operation=started,
                    queue_timeout=wait,
                    deadline=deadline,
                    fresh=step.fresh or step.scratch,
                )

            try:
                response = execute()
            except reapi.MissingBlobs:  # the server dropped an input meanwhile: once more
                client.upload(blobs)
                response = execute()
        except reapi.RemoteExecutionError:
            if self._cancelled:  # the service ended the operation we cancelled
                raise KeyboardInterrupt from None
            raise
        finally:
            with self._lock:
                for name in names:
                    self._running.pop(name, None)
        result = response.result
        if response.cached_result:
            with self._lock:
                self._cached.add(step.work)
        self._write_log(client, result, step.log)
        if result.exit_code == 0:
            self._fetch_outputs(client, result, step.work / "out")
        return int(result.exit_code)

    def _action(self, step: Step) -> tuple[Any, list[Any]]:
        from google.protobuf import duration_pb2

        from ._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as pb
        from .reapi import message_blob
        from .tree import InputRoot

        root = InputRoot()
        for entry in sorted(step.work.iterdir()):  # build.sh, an image's layout and tool
            if entry.is_file() and not entry.is_symlink() and entry.name != STEP_LOG:
                root.add_file(entry.name, entry)
        root.add_tree("src", step.work / "src")
        manifests = dict(step.dep_manifests)
        for name, tree in step.deps:
            if name in manifests:  # what the store recorded when it stored the tree
                root.add_manifest(f"deps/{name}", tree, manifests[name])
            else:
                root.add_tree(f"deps/{name}", tree)
        root_digest = root.digest()
        env = dict(step.env)
        env.update(step_locale(step.vary))
        wanted = self.settings.platform(step.image, root=step.root)
        platform = pb.Platform(
            properties=[pb.Platform.Property(name=n, value=v) for n, v in wanted]
        )
        command = pb.Command(
            arguments=["/bin/bash", "-c", WRAPPER],
            environment_variables=[
                pb.Command.EnvironmentVariable(name=k, value=v) for k, v in sorted(env.items())
            ],
            output_paths=["out"],
            output_directories=["out"],
            platform=platform,
        )
        command_blob = message_blob(command)
        action = pb.Action(
            command_digest=command_blob.digest,
            input_root_digest=root_digest,
            platform=platform,
        )
        if step.scratch:  # a rebuild (jailbake repro): not to be kept by the service
            action.do_not_cache = True
        if self.settings.timeout:
            action.timeout.CopyFrom(duration_pb2.Duration(seconds=self.settings.timeout))
        action_blob = message_blob(action)
        return action_blob, [*root.blobs(), command_blob, action_blob]

    def origin(self, step: Step) -> str:
        with self._lock:
            if step.work in self._cached:
                self._cached.discard(step.work)
                return CACHED
            return ""

    def _write_log(self, client: Any, result: Any, log: Path) -> None:
        parts = []
        for raw, digest in ((result.stdout_raw, result.stdout_digest),
                            (result.stderr_raw, result.stderr_digest)):  # fmt: skip
            if raw:
                parts.append(bytes(raw)[-LOG_LIMIT:])
            elif digest.hash and digest.size_bytes > LOG_LIMIT:
                note = f"jailbake: {digest.size_bytes} bytes of output left on the executor "
                parts.append(f"{note}(blob {digest.hash}; over {LOG_LIMIT} bytes)\n".encode())
            elif digest.hash and digest.size_bytes:
                parts.append(client.read(digest, limit=LOG_LIMIT))
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as f:
            for part in parts:
                f.write(part)

    def _fetch_outputs(self, client: Any, result: Any, out: Path) -> None:
        from .tree import write_tree

        out.mkdir(exist_ok=True)
        for directory in result.output_directories:
            if directory.path != "out":
                continue
            write_tree(client, directory.tree_digest, out)
            return
        # A step that wrote nothing into out/ leaves no output directory: nothing to fetch.

    def live_log(self, step: Step) -> Path:
        return step.log

    def place(self, step: Step) -> Path:
        return step.work  # the worker's input root, wherever the worker puts it

    def cannot_vary(self, step: Step) -> dict[Vary, str]:
        return {v: "the remote executor's workers decide it" for v in WORKER_DECIDES
                if v in step.vary}  # fmt: skip

    def shell(self, step: Step, command: str | None) -> int:
        raise JailbakeError(
            f"{step.recipe}: the remote executor opens no shell; run 'jailbake shell' "
            "with --executor docker to see the step's directory"
        )

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            running = dict(self._running)
        for name, call in running.items():
            self.client.cancel(name)
            call.cancel()
