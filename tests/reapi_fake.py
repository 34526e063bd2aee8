"""An in-process Remote Execution API service for tests: a real gRPC server on
127.0.0.1 with the CAS, ByteStream, Capabilities, Execution and Operations services.

It stands in for a cluster (BuildGrid with workers, Buildbarn, BuildBuddy), which cannot
run inside a unit test: each action runs on this machine, in a temporary directory laid
out from its input root, with bash, as a worker without a container would. Knobs make
it misbehave the ways real services do, for the client's edge cases.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import any_pb2

from jailbake.executors.remote._protos.build.bazel.remote.execution.v2 import (
    remote_execution_pb2 as pb,
)
from jailbake.executors.remote._protos.build.bazel.remote.execution.v2 import (
    remote_execution_pb2_grpc as pb_grpc,
)
from jailbake.executors.remote._protos.google.bytestream import bytestream_pb2 as bs
from jailbake.executors.remote._protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from jailbake.executors.remote._protos.google.longrunning import operations_pb2 as ops
from jailbake.executors.remote._protos.google.longrunning import operations_pb2_grpc as ops_grpc
from jailbake.executors.remote._protos.google.rpc import status_pb2


def _digest(data: bytes) -> pb.Digest:
    return pb.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


@dataclass
class Knobs:
    batch_limit: int = 4 * 1024 * 1024
    drop_stream_once: bool = False  # break the Execute stream after its first message
    lose_input_once: bool = False  # answer FAILED_PRECONDITION (missing blob) once
    refuse_property: str = ""  # refuse actions with this platform property
    corrupt_outputs: bool = False  # serve wrong bytes for output files
    never_assign: bool = False  # actions wait for a worker that never comes
    run_forever: bool = False  # actions start on a worker and never finish
    foreign_action: bool = False  # the finished operation names another action
    # Changes each response before it is sent: a hostile or broken service's answer.
    tamper: Callable[[FakeREAPI, pb.ExecuteResponse], None] | None = None
    # Keep each action's result (unless it says do_not_cache) and answer the same
    # action from it (unless Execute says skip_cache_lookup), as services do.
    action_cache: bool = False


@dataclass
class Seen:
    """What the service was asked."""

    actions: list[pb.Action] = field(default_factory=list)
    commands: list[pb.Command] = field(default_factory=list)
    bytestream_writes: int = 0
    bytestream_reads: int = 0
    batch_updates: int = 0
    wait_executions: int = 0
    cancelled: list[str] = field(default_factory=list)
    skipped_cache: list[bool] = field(default_factory=list)  # Execute asked to run anew
    running: list[str] = field(default_factory=list)


class FakeREAPI:
    def __init__(self, instance: str = "") -> None:
        self.instance = instance
        self.blobs: dict[str, bytes] = {}
        self.knobs = Knobs()
        self.seen = Seen()
        self.cached: dict[str, pb.ExecuteResponse] = {}  # Knobs.action_cache
        self.operations: dict[str, ops.Operation] = {}
        self.done: dict[str, threading.Event] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        pb_grpc.add_ContentAddressableStorageServicer_to_server(_CAS(self), self.server)
        pb_grpc.add_CapabilitiesServicer_to_server(_Capabilities(self), self.server)
        pb_grpc.add_ExecutionServicer_to_server(_Execution(self), self.server)
        bs_grpc.add_ByteStreamServicer_to_server(_ByteStream(self), self.server)
        ops_grpc.add_OperationsServicer_to_server(_Operations(self), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(grace=None)

    def put(self, data: bytes) -> pb.Digest:
        d = _digest(data)
        self.blobs[d.hash] = data
        return d

    def get(self, d: pb.Digest) -> bytes | None:
        return self.blobs.get(d.hash)

    # -- running an action ----------------------------------------------------------
    def _lay_out(self, d: pb.Digest, dest: Path) -> None:
        directory = pb.Directory.FromString(self.blobs[d.hash])
        dest.mkdir(parents=True, exist_ok=True)
        for f in directory.files:
            (dest / f.name).write_bytes(self.blobs[f.digest.hash])
            (dest / f.name).chmod(0o755 if f.is_executable else 0o644)
        for s in directory.symlinks:
            os.symlink(s.target, dest / s.name)
        for sub in directory.directories:
            self._lay_out(sub.digest, dest / sub.name)

    def _tree(self, root: Path) -> tuple[pb.Digest, pb.Tree]:
        children: list[pb.Directory] = []

        def encode(path: Path) -> pb.Directory:
            message = pb.Directory()
            for entry in sorted(os.listdir(path)):
                p = path / entry
                if p.is_symlink():
                    message.symlinks.add(name=entry, target=os.readlink(p))
                elif p.is_dir():
                    child = encode(p)
                    children.append(child)
                    data = child.SerializeToString(deterministic=True)
                    message.directories.add(name=entry, digest=self.put(data))
                else:
                    data = p.read_bytes()
                    d = self.put(data)
                    if self.knobs.corrupt_outputs:
                        self.blobs[d.hash] = data + b"corrupt"
                    message.files.add(name=entry, digest=d, is_executable=os.access(p, os.X_OK))
            return message

        tree = pb.Tree(root=encode(root), children=children)
        return self.put(tree.SerializeToString(deterministic=True)), tree

    def run(self, name: str, action_digest: pb.Digest) -> pb.ExecuteResponse:
        action = pb.Action.FromString(self.blobs[action_digest.hash])
        command = pb.Command.FromString(self.blobs[action.command_digest.hash])
        self.seen.actions.append(action)
        self.seen.commands.append(command)
        props = {p.name: p.value for p in action.platform.properties}
        if self.knobs.refuse_property and self.knobs.refuse_property in props:
            return pb.ExecuteResponse(
                status=status_pb2.Status(
                    code=grpc.StatusCode.FAILED_PRECONDITION.value[0],
                    message=f"no worker offers platform property {self.knobs.refuse_property}",
                )
            )
        with tempfile.TemporaryDirectory(prefix="fake-reapi-") as tmp:
            root = Path(tmp) / "root"
            self._lay_out(action.input_root_digest, root)
            env = {v.name: v.value for v in command.environment_variables}
            env.setdefault("PATH", os.environ["PATH"])
            proc = subprocess.Popen(
                list(command.arguments), cwd=root, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            )  # fmt: skip
            with self.lock:
                self.processes[name] = proc
                self.seen.running.append(name)
            stdout, stderr = proc.communicate()
            with self.lock:
                self.processes.pop(name, None)
            result = pb.ActionResult(
                exit_code=proc.returncode,
                stdout_digest=self.put(stdout),
                stderr_digest=self.put(stderr),
            )
            out = root / "out"
            if proc.returncode == 0 and out.is_dir():
                tree_digest, _ = self._tree(out)
                result.output_directories.add(path="out", tree_digest=tree_digest)
        return pb.ExecuteResponse(result=result)


def _blob_name(resource: str) -> tuple[str, str]:
    """[instance/][uploads/UUID/]blobs/HASH/SIZE -> HASH, SIZE"""
    parts = resource.split("/")
    at = parts.index("blobs")
    return parts[at + 1], parts[at + 2]


class _CAS(pb_grpc.ContentAddressableStorageServicer):
    def __init__(self, fake: FakeREAPI) -> None:
        self.fake = fake

    def FindMissingBlobs(self, request: Any, context: Any) -> Any:
        missing = [d for d in request.blob_digests if d.hash not in self.fake.blobs]
        return pb.FindMissingBlobsResponse(missing_blob_digests=missing)

    def BatchUpdateBlobs(self, request: Any, context: Any) -> Any:
        total = sum(r.digest.size_bytes for r in request.requests)
        if total > self.fake.knobs.batch_limit:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "batch over the limit")
        self.fake.seen.batch_updates += 1
        responses = []
        for r in request.requests:
            ok = _digest(r.data) == r.digest
            if ok:
                self.fake.blobs[r.digest.hash] = r.data
            responses.append(
                pb.BatchUpdateBlobsResponse.Response(
                    digest=r.digest, status=status_pb2.Status(code=0 if ok else 3)
                )
            )
        return pb.BatchUpdateBlobsResponse(responses=responses)

    def BatchReadBlobs(self, request: Any, context: Any) -> Any:
        responses = []
        for d in request.digests:
            data = self.fake.blobs.get(d.hash)
            responses.append(
                pb.BatchReadBlobsResponse.Response(
                    digest=d,
                    data=data or b"",
                    status=status_pb2.Status(code=0 if data is not None else 5),
                )
            )
        return pb.BatchReadBlobsResponse(responses=responses)


class _Capabilities(pb_grpc.CapabilitiesServicer):
    def __init__(self, fake: FakeREAPI) -> None:
        self.fake = fake

    def GetCapabilities(self, request: Any, context: Any) -> Any:
        return pb.ServerCapabilities(
            cache_capabilities=pb.CacheCapabilities(
                digest_functions=[pb.DigestFunction.SHA256],
                max_batch_total_size_bytes=self.fake.knobs.batch_limit,
            ),
            execution_capabilities=pb.ExecutionCapabilities(
                digest_function=pb.DigestFunction.SHA256, exec_enabled=True
            ),
        )


class _ByteStream(bs_grpc.ByteStreamServicer):
    def __init__(self, fake: FakeREAPI) -> None:
        self.fake = fake

    def Read(self, request: Any, context: Any) -> Iterator[Any]:
        self.fake.seen.bytestream_reads += 1
        digest_hash, _ = _blob_name(request.resource_name)
        data = self.fake.blobs.get(digest_hash)
        if data is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such blob")
            return
        for start in range(0, len(data), 64 * 1024):
            yield bs.ReadResponse(data=data[start : start + 64 * 1024])

    def Write(self, request_iterator: Iterator[Any], context: Any) -> Any:
        self.fake.seen.bytestream_writes += 1
        name = ""
        data = b""
        for request in request_iterator:
            name = name or request.resource_name
            data += request.data
        hash_, size = _blob_name(name)
        if _digest(data) != pb.Digest(hash=hash_, size_bytes=int(size)):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "digest mismatch")
        self.fake.blobs[hash_] = data
        return bs.WriteResponse(committed_size=len(data))


class _Execution(pb_grpc.ExecutionServicer):
    def __init__(self, fake: FakeREAPI) -> None:
        self.fake = fake
        self.count = 0

    def Execute(self, request: Any, context: Any) -> Iterator[Any]:
        fake = self.fake
        with fake.lock:
            self.count += 1
            name = f"operations/{self.count}"
        action = fake.blobs.get(request.action_digest.hash)
        if request.skip_cache_lookup:
            fake.seen.skipped_cache.append(True)
        first = ops.Operation(name=name, done=False)
        if fake.knobs.lose_input_once and action is not None:
            fake.knobs.lose_input_once = False
            command = pb.Action.FromString(action).command_digest
            fake.blobs.pop(command.hash, None)
            failed = pb.ExecuteResponse(
                status=status_pb2.Status(
                    code=grpc.StatusCode.FAILED_PRECONDITION.value[0],
                    message=f"missing blob {command.hash}/{command.size_bytes}",
                )
            )
            yield self._finished(name, failed)
            return
        if action is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "missing action blob")
        key = request.action_digest.hash
        if fake.knobs.action_cache and not request.skip_cache_lookup and key in fake.cached:
            hit = pb.ExecuteResponse()
            hit.CopyFrom(fake.cached[key])
            hit.cached_result = True
            yield self._finished(name, hit, request.action_digest)
            return
        if fake.knobs.never_assign or fake.knobs.run_forever:
            fake.done[name] = threading.Event()  # never set
            stage = pb.ExecutionStage.EXECUTING if fake.knobs.run_forever else None
            yield self._queued(name, stage, request.action_digest)
            while context.is_active():
                time.sleep(0.05)
            return
        done = threading.Event()
        fake.done[name] = done
        assert action is not None  # context.abort raised otherwise
        keep = not pb.Action.FromString(action).do_not_cache

        def work() -> None:
            response = fake.run(name, request.action_digest)
            if fake.knobs.action_cache and keep:
                fake.cached[key] = response
            if fake.knobs.tamper is not None:
                fake.knobs.tamper(fake, response)
            told = request.action_digest
            if fake.knobs.foreign_action:
                told = _digest(b"another action")
            fake.operations[name] = self._finished(name, response, told)
            done.set()

        threading.Thread(target=work, daemon=True).start()
        yield first
        if fake.knobs.drop_stream_once:
            fake.knobs.drop_stream_once = False
            context.abort(grpc.StatusCode.UNAVAILABLE, "the stream broke")
        while not done.wait(0.05):
            if not context.is_active():
                return
        yield fake.operations[name]

    def WaitExecution(self, request: Any, context: Any) -> Iterator[Any]:
        fake = self.fake
        fake.seen.wait_executions += 1
        done = fake.done.get(request.name)
        if done is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such operation")
            return
        if not done.is_set():
            stage = pb.ExecutionStage.EXECUTING if fake.knobs.run_forever else None
            yield self._queued(request.name, stage)
        while not done.wait(0.05):
            if not context.is_active():
                return
        yield fake.operations[request.name]

    @staticmethod
    def _queued(name: str, stage: Any = None, action: pb.Digest | None = None) -> ops.Operation:
        packed = any_pb2.Any()
        packed.Pack(
            pb.ExecuteOperationMetadata(
                stage=pb.ExecutionStage.QUEUED if stage is None else stage, action_digest=action
            )
        )
        return ops.Operation(name=name, done=False, metadata=packed)

    @staticmethod
    def _finished(
        name: str, response: pb.ExecuteResponse, action: pb.Digest | None = None
    ) -> ops.Operation:
        packed, metadata = any_pb2.Any(), any_pb2.Any()
        packed.Pack(response)
        metadata.Pack(
            pb.ExecuteOperationMetadata(stage=pb.ExecutionStage.COMPLETED, action_digest=action)
        )
        return ops.Operation(name=name, done=True, response=packed, metadata=metadata)


class _Operations(ops_grpc.OperationsServicer):
    def __init__(self, fake: FakeREAPI) -> None:
        self.fake = fake

    def CancelOperation(self, request: Any, context: Any) -> Any:
        from google.protobuf import empty_pb2

        with self.fake.lock:
            self.fake.seen.cancelled.append(request.name)
            proc = self.fake.processes.get(request.name)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):  # finished meanwhile
                os.killpg(proc.pid, signal.SIGKILL)
        return empty_pb2.Empty()


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)
