"""A client of the Remote Execution API v2 (bazelbuild/remote-apis), as Buildbarn,
BuildBuddy, BuildGrid and NativeLink serve it: the content-addressed storage (small
blobs in batches, large ones over ByteStream), Execute and its long-running operation
(resumed with WaitExecution when the stream breaks), and cancellation."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# gRPC's C core logs to stderr itself ("Got goaway ..."): jailbake says what failed in
# one line of its own. A user debugging gRPC sets GRPC_VERBOSITY.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc

from ...core.errors import JailbakeError
from ._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as pb
from ._protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as pb_grpc
from ._protos.google.bytestream import bytestream_pb2 as bs
from ._protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from ._protos.google.longrunning import operations_pb2 as ops
from ._protos.google.longrunning import operations_pb2_grpc as ops_grpc

DEFAULT_BATCH = 4 * 1024 * 1024  # when the server names no limit
BATCH_OVERHEAD = 1024  # per blob, for the request's own fields
CHUNK = 1024 * 1024  # ByteStream pieces
RPC_TIMEOUT = 120.0  # seconds, for each storage call
RETRIES = 5
RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
)
MAX_MESSAGE = 64 * 1024 * 1024
STREAM_SPAN = 30.0  # seconds an Execute or WaitExecution stream is read before asking again

logging.getLogger("grpc").propagate = False  # its Python side, likewise


class RemoteExecutionError(JailbakeError):
    """The remote execution service refused or failed a request."""

    exit_code = 3


class MissingBlobs(RemoteExecutionError):
    """The server lost (or never had) some of an action's inputs."""


@dataclass(frozen=True)
class Blob:
    """Content to upload: from a file, or bytes in memory."""

    digest: pb.Digest
    path: Path | None = None
    data: bytes | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()


def digest(data: bytes) -> pb.Digest:
    return pb.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def message_blob(message: Any) -> Blob:
    """A protobuf message as a blob, serialized deterministically."""
    data = message.SerializeToString(deterministic=True)
    return Blob(digest(data), data=data)


def channel(url: str) -> grpc.Channel:
    """grpc://HOST:PORT (plain) or grpcs://HOST:PORT (TLS with the system's roots)."""
    parts = urlsplit(url)
    if parts.scheme not in ("grpc", "grpcs") or not parts.hostname or not parts.port:
        raise RemoteExecutionError(
            f"--remote-executor {url!r}: expected grpc://HOST:PORT or grpcs://HOST:PORT"
        )
    target = f"{parts.hostname}:{parts.port}"
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
    ]
    if parts.scheme == "grpcs":
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
    return grpc.insecure_channel(target, options=options)


class Client:
    """One remote execution service and instance."""

    def __init__(self, url: str, instance: str = "") -> None:
        self.url = url
        self.instance = instance
        self._channel = channel(url)
        self.cas = pb_grpc.ContentAddressableStorageStub(self._channel)
        self.execution = pb_grpc.ExecutionStub(self._channel)
        self.capabilities_stub = pb_grpc.CapabilitiesStub(self._channel)
        self.bytestream = bs_grpc.ByteStreamStub(self._channel)
        self.operations = ops_grpc.OperationsStub(self._channel)
        self._batch: int | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._channel.close()

    # -- errors and retries -----------------------------------------------------
    def describe(self, exc: grpc.RpcError, what: str) -> str:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        name = code.name if code is not None else "ERROR"
        hint = ""
        if code == grpc.StatusCode.INVALID_ARGUMENT and "timeout" in (details or "").lower():
            hint = " (JAILBAKE_REMOTE_TIMEOUT: at most the service's maximum)"
        return f"remote executor {self.url}: {what}: {name}: {details or 'no details'}{hint}"

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """fn(), retried with back-off while the service is unavailable or busy."""
        for attempt in range(RETRIES + 1):
            try:
                return fn()
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or attempt == RETRIES:
                    raise RemoteExecutionError(self.describe(exc, what)) from None
                time.sleep(min(0.2 * 2**attempt, 5.0))
        raise AssertionError("unreachable")

    # -- storage ------------------------------------------------------------------
    def batch_limit(self) -> int:
        with self._lock:
            if self._batch is None:
                request = pb.GetCapabilitiesRequest(instance_name=self.instance)
                caps = self._call(
                    "GetCapabilities",
                    lambda: self.capabilities_stub.GetCapabilities(request, timeout=RPC_TIMEOUT),
                )
                limit = caps.cache_capabilities.max_batch_total_size_bytes
                self._batch = min(limit, MAX_MESSAGE) if limit > 0 else DEFAULT_BATCH
            return self._batch

    def find_missing(self, digests: Iterable[pb.Digest]) -> list[pb.Digest]:
        unique = {d.hash: d for d in digests}
        missing: list[pb.Digest] = []
        items = sorted(unique.values(), key=lambda d: d.hash)
        for start in range(0, len(items), 10_000):
            request = pb.FindMissingBlobsRequest(
                instance_name=self.instance, blob_digests=items[start : start + 10_000]
            )
            call = functools.partial(self.cas.FindMissingBlobs, request, timeout=RPC_TIMEOUT)
            answer = self._call("FindMissingBlobs", call)
            missing.extend(answer.missing_blob_digests)
        return missing

    def upload(self, blobs: Sequence[Blob]) -> int:
        """Upload the blobs the server is missing; returns the bytes sent."""
        by_hash = {b.digest.hash: b for b in blobs}
        missing = self.find_missing(b.digest for b in by_hash.values())
        limit = self.batch_limit()
        batch: list[pb.BatchUpdateBlobsRequest.Request] = []
        size = 0
        sent = 0
        for d in missing:
            blob = by_hash[d.hash]
            if d.size_bytes + BATCH_OVERHEAD > limit:
                self._write(blob)
            else:
                if size + d.size_bytes + BATCH_OVERHEAD > limit:
                    self._batch_update(batch)
                    batch, size = [], 0
                batch.append(pb.BatchUpdateBlobsRequest.Request(digest=d, data=blob.read()))
                size += d.size_bytes + BATCH_OVERHEAD
            sent += d.size_bytes
        if batch:
            self._batch_update(batch)
        return sent

    def _batch_update(self, requests: list[pb.BatchUpdateBlobsRequest.Request]) -> None:
        request = pb.BatchUpdateBlobsRequest(instance_name=self.instance, requests=requests)
        answer = self._call(
            "BatchUpdateBlobs", lambda: self.cas.BatchUpdateBlobs(request, timeout=RPC_TIMEOUT)
        )
        for response in answer.responses:
            if response.status.code != 0:
                raise RemoteExecutionError(
                    f"remote executor {self.url}: BatchUpdateBlobs: blob "
                    f"{response.digest.hash}/{response.digest.size_bytes} refused: "
                    f"{response.status.message or response.status.code}"
                )

    def _resource(self, d: pb.Digest, upload: bool) -> str:
        prefix = f"{self.instance}/" if self.instance else ""
        if upload:
            return f"{prefix}uploads/{uuid.uuid4()}/blobs/{d.hash}/{d.size_bytes}"
        return f"{prefix}blobs/{d.hash}/{d.size_bytes}"

    def _write(self, blob: Blob) -> None:
        name = self._resource(blob.digest, upload=True)

        def requests() -> Iterator[bs.WriteRequest]:
            offset = 0
            if blob.path is not None:
                with blob.path.open("rb") as f:
                    while True:
                        data = f.read(CHUNK)
                        last = offset + len(data) >= blob.digest.size_bytes
                        yield bs.WriteRequest(
                            resource_name=name if offset == 0 else "",
                            write_offset=offset,
                            data=data,
                            finish_write=last,
                        )
                        offset += len(data)
                        if last:
                            return
            data = blob.read()
            for start in range(0, max(len(data), 1), CHUNK):
                piece = data[start : start + CHUNK]
                yield bs.WriteRequest(
                    resource_name=name if start == 0 else "",
                    write_offset=start,
                    data=piece,
                    finish_write=start + len(piece) >= len(data),
                )

        answer = self._call("ByteStream.Write", lambda: self.bytestream.Write(requests()))
        if answer.committed_size not in (blob.digest.size_bytes, -1):
            raise RemoteExecutionError(
                f"remote executor {self.url}: ByteStream.Write of {blob.digest.hash}: "
                f"{answer.committed_size} of {blob.digest.size_bytes} bytes committed"
            )

    def read(self, d: pb.Digest, *, limit: int = MAX_MESSAGE) -> bytes:
        """A blob's bytes, checked against its digest; a blob declared larger than limit
        is not read, and a server sending more than declared is cut off."""
        if d.size_bytes < 0 or d.size_bytes > limit:
            raise RemoteExecutionError(
                f"remote executor {self.url}: blob {d.hash}/{d.size_bytes}: expected at most "
                f"{limit} bytes"
            )
        if d.size_bytes + BATCH_OVERHEAD <= self.batch_limit():
            request = pb.BatchReadBlobsRequest(instance_name=self.instance, digests=[d])
            answer = self._call(
                "BatchReadBlobs", lambda: self.cas.BatchReadBlobs(request, timeout=RPC_TIMEOUT)
            )
            responses = [r for r in answer.responses if r.digest.hash == d.hash]
            if len(responses) != 1:
                raise RemoteExecutionError(
                    f"remote executor {self.url}: BatchReadBlobs of {d.hash}: "
                    f"{len(answer.responses)} answers, {len(responses)} for that blob"
                )
            response = responses[0]
            if response.status.code != 0:
                raise MissingBlobs(
                    f"remote executor {self.url}: blob {d.hash}/{d.size_bytes} cannot be "
                    f"read: {response.status.message or response.status.code}"
                )
            data = bytes(response.data)
        else:
            read = bs.ReadRequest(resource_name=self._resource(d, upload=False))
            # A deadline for the whole blob: the usual one, and a second per MiB.
            deadline = RPC_TIMEOUT + d.size_bytes / (1 << 20)

            def pieces() -> list[bytes]:
                got, total = [], 0
                for r in self.bytestream.Read(read, timeout=deadline):
                    total += len(r.data)
                    if total > d.size_bytes:  # more than declared: stop reading
                        break
                    got.append(r.data)
                else:
                    return got
                return [*got, b"\0"]  # one byte too many: refused below

            data = b"".join(self._call("ByteStream.Read", pieces))
        if hashlib.sha256(data).hexdigest() != d.hash or len(data) != d.size_bytes:
            raise RemoteExecutionError(
                f"remote executor {self.url}: blob {d.hash}/{d.size_bytes} came back as "
                f"{hashlib.sha256(data).hexdigest()}/{len(data)}"
            )
        return data

    def read_file(self, d: pb.Digest, dest: Path) -> None:
        """A blob written to the new file dest, streamed, checked against its digest
        (a server sending other or more bytes than declared is refused)."""
        if d.size_bytes + BATCH_OVERHEAD <= self.batch_limit():
            with dest.open("xb") as out:
                out.write(self.read(d))
            return
        if d.size_bytes < 0:
            raise RemoteExecutionError(f"remote executor {self.url}: blob {d.hash}: size < 0")
        read = bs.ReadRequest(resource_name=self._resource(d, upload=False))
        deadline = RPC_TIMEOUT + d.size_bytes / (1 << 20)

        def stream() -> tuple[str, int]:
            h, total = hashlib.sha256(), 0
            dest.unlink(missing_ok=True)  # a retry starts again
            with dest.open("xb") as out:
                for r in self.bytestream.Read(read, timeout=deadline):
                    total += len(r.data)
                    if total > d.size_bytes:
                        break
                    h.update(r.data)
                    out.write(r.data)
            return h.hexdigest(), total

        got, size = self._call("ByteStream.Read", stream)
        if got != d.hash or size != d.size_bytes:
            dest.unlink(missing_ok=True)
            raise RemoteExecutionError(
                f"remote executor {self.url}: blob {d.hash}/{d.size_bytes} came back as "
                f"{got}/{size}{' or more' if size > d.size_bytes else ''}"
            )

    # -- execution ----------------------------------------------------------------
    def execute(
        self,
        action: pb.Digest,
        *,
        on_operation: Callable[[str, Any], None],
        queue_timeout: float = 0,
        deadline: float = 0,
        fresh: bool = False,
    ) -> pb.ExecuteResponse:
        """Run the action; on_operation(name, call) tells of the operation and of the
        call streaming it, so that it can be cancelled. queue_timeout: seconds the
        action may wait for a worker before the operation is cancelled (0: no limit);
        deadline: seconds jailbake waits for the action once it has left the queue (or,
        from a service that tells no stage, since it was sent; 0: no limit). An
        operation that says it runs another action is refused. fresh: the action runs
        even if the service's action cache holds a result for it."""
        name = ""
        attempts = 0
        queued_since: float | None = None
        running_since = time.monotonic()
        span = min(STREAM_SPAN, max(1.0, queue_timeout / 2)) if queue_timeout else STREAM_SPAN
        if deadline:
            span = min(span, max(1.0, deadline / 2))
        while True:
            if deadline and queued_since is None and time.monotonic() - running_since > deadline:
                if name:
                    self.cancel(name)
                raise RemoteExecutionError(
                    f"remote executor {self.url}: the action did not finish in {int(deadline)} s "
                    "on its worker (JAILBAKE_REMOTE_TIMEOUT and a tenth, else 6 h)"
                )
            # The stream is read in spans of STREAM_SPAN seconds (a span's end is not an
            # error): a service that says nothing while the action waits is asked again.
            expected = name  # what a WaitExecution stream must be about
            if name:
                call = self.execution.WaitExecution(
                    pb.WaitExecutionRequest(name=name), timeout=span
                )
            else:
                call = self.execution.Execute(
                    pb.ExecuteRequest(
                        instance_name=self.instance, action_digest=action, skip_cache_lookup=fresh
                    ),
                    timeout=span,
                )
            try:
                told = None
                for operation in call:
                    self._check_action(operation, action)
                    if expected and operation.name and operation.name != expected:
                        raise RemoteExecutionError(
                            f"remote executor {self.url}: WaitExecution of {expected} "
                            f"answered with operation {operation.name}"
                        )
                    if operation.name and (operation.name != name or told is not call):
                        if told is call:  # one stream tells of one operation
                            raise RemoteExecutionError(
                                f"remote executor {self.url}: Execute: the stream of "
                                f"operation {name} went on with operation {operation.name}"
                            )
                        name, told = operation.name, call  # the call to cancel is this one
                        on_operation(name, call)
                    if operation.done:
                        return self._response(operation)
                    if _stage(operation) == pb.ExecutionStage.QUEUED:
                        queued_since = queued_since or time.monotonic()
                    elif _stage(operation) is not None:
                        if queued_since is not None:  # a worker took it: its time starts
                            running_since = time.monotonic()
                        queued_since = None
                    attempts = 0
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and name:
                    waited = time.monotonic() - queued_since if queued_since else 0.0
                    if queue_timeout and waited > queue_timeout:
                        self.cancel(name)
                        raise RemoteExecutionError(
                            f"remote executor {self.url}: no worker took the action in "
                            f"{int(waited)} s (JAILBAKE_REMOTE_QUEUE_TIMEOUT); does a worker "
                            "offer its platform properties?"
                        ) from None
                    continue
                if exc.code() == grpc.StatusCode.NOT_FOUND and name:
                    name = ""  # the server forgot the operation: ask again
                elif exc.code() not in RETRYABLE or attempts >= RETRIES:
                    raise RemoteExecutionError(self.describe(exc, "Execute")) from None
                attempts += 1
                time.sleep(min(0.2 * 2**attempts, 5.0))
                continue
            # A stream that ends without a finished operation is resumed, a few times.
            attempts += 1
            if attempts > RETRIES:
                raise RemoteExecutionError(
                    f"remote executor {self.url}: Execute: the operation's stream kept ending "
                    "without a result"
                )
            time.sleep(min(0.2 * 2**attempts, 5.0))

    def _check_action(self, operation: ops.Operation, action: pb.Digest) -> None:
        metadata = pb.ExecuteOperationMetadata()
        if not (operation.HasField("metadata") and operation.metadata.Unpack(metadata)):
            return
        told = metadata.action_digest
        if told.hash and (told.hash, told.size_bytes) != (action.hash, action.size_bytes):
            raise RemoteExecutionError(
                f"remote executor {self.url}: Execute: operation {operation.name} is for "
                f"action {told.hash}/{told.size_bytes}, not {action.hash}/{action.size_bytes}"
            )

    def _response(self, operation: ops.Operation) -> pb.ExecuteResponse:
        if operation.HasField("error") and operation.error.code != 0:
            raise RemoteExecutionError(
                f"remote executor {self.url}: Execute: operation {operation.name} failed: "
                f"{_code_name(operation.error.code)}: {operation.error.message}"
            )
        response = pb.ExecuteResponse()
        if not operation.response.Unpack(response):
            raise RemoteExecutionError(
                f"remote executor {self.url}: Execute: operation {operation.name} ended "
                f"without an ExecuteResponse ({operation.response.type_url})"
            )
        if response.status.code != 0:
            message = (
                f"remote executor {self.url}: Execute: {_code_name(response.status.code)}: "
                f"{response.status.message or 'no details'}"
            )
            if response.status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] and (
                "missing" in response.status.message.lower()
                or any("PreconditionFailure" in d.type_url for d in response.status.details)
            ):
                raise MissingBlobs(message)
            raise RemoteExecutionError(message)
        return response

    def cancel(self, name: str) -> None:
        # The operation may have ended, or the server may not cancel.
        with contextlib.suppress(grpc.RpcError):
            self.operations.CancelOperation(ops.CancelOperationRequest(name=name), timeout=10)


def _stage(operation: ops.Operation) -> int | None:
    """The execution stage an operation's metadata gives, if it gives one."""
    metadata = pb.ExecuteOperationMetadata()
    if operation.HasField("metadata") and operation.metadata.Unpack(metadata):
        return int(metadata.stage)
    return None


def _code_name(code: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return str(status.name)
    return str(code)
