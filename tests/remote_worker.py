"""A test worker for BuildGrid: takes leases over the Remote Workers API (Bots) and runs
each action in the container image its `container-image` platform property names,
through Podman, with the input root mounted at /work.

A test fixture, not a product: real clusters run buildbox, Buildbarn's bb_worker and
bb_runner, or BuildBuddy's executors. It runs in BuildGrid's own Python (3.13), using
the protos BuildGrid ships:

    python3.13 tests/remote_worker.py --server 127.0.0.1:PORT --instance "" --name w1
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as pb
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as pb_grpc
from buildgrid._protos.google.bytestream import bytestream_pb2 as bs
from buildgrid._protos.google.bytestream import bytestream_pb2_grpc as bs_grpc
from buildgrid._protos.google.devtools.remoteworkers.v1test2 import (
    bots_pb2,
    bots_pb2_grpc,
    worker_pb2,
)

BATCH = 2 * 1024 * 1024


class CAS:
    def __init__(self, channel: grpc.Channel, instance: str) -> None:
        self.instance = instance
        self.cas = pb_grpc.ContentAddressableStorageStub(channel)
        self.bytestream = bs_grpc.ByteStreamStub(channel)

    def read(self, d: pb.Digest) -> bytes:
        if d.size_bytes == 0:
            return b""
        prefix = f"{self.instance}/" if self.instance else ""
        if d.size_bytes > BATCH:
            name = f"{prefix}blobs/{d.hash}/{d.size_bytes}"
            return b"".join(
                r.data for r in self.bytestream.Read(bs.ReadRequest(resource_name=name))
            )
        answer = self.cas.BatchReadBlobs(
            pb.BatchReadBlobsRequest(instance_name=self.instance, digests=[d])
        )
        return bytes(answer.responses[0].data)

    def write(self, blobs: dict[str, bytes]) -> None:
        digests = [pb.Digest(hash=h, size_bytes=len(b)) for h, b in blobs.items()]
        missing = self.cas.FindMissingBlobs(
            pb.FindMissingBlobsRequest(instance_name=self.instance, blob_digests=digests)
        ).missing_blob_digests
        batch: list[pb.BatchUpdateBlobsRequest.Request] = []
        size = 0
        prefix = f"{self.instance}/" if self.instance else ""
        for d in missing:
            data = blobs[d.hash]
            if d.size_bytes > BATCH:
                name = f"{prefix}uploads/{os.urandom(8).hex()}/blobs/{d.hash}/{d.size_bytes}"
                chunks = [data[i : i + BATCH] for i in range(0, len(data), BATCH)]
                self.bytestream.Write(
                    iter(
                        bs.WriteRequest(
                            resource_name=name if i == 0 else "",
                            write_offset=i * BATCH,
                            data=c,
                            finish_write=i == len(chunks) - 1,
                        )
                        for i, c in enumerate(chunks)
                    )
                )
                continue
            if size + d.size_bytes > BATCH:
                self._update(batch)
                batch, size = [], 0
            batch.append(pb.BatchUpdateBlobsRequest.Request(digest=d, data=data))
            size += d.size_bytes
        if batch:
            self._update(batch)

    def _update(self, batch: list[pb.BatchUpdateBlobsRequest.Request]) -> None:
        self.cas.BatchUpdateBlobs(
            pb.BatchUpdateBlobsRequest(instance_name=self.instance, requests=batch)
        )


def digest(data: bytes) -> pb.Digest:
    return pb.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def lay_out(cas: CAS, d: pb.Digest, dest: Path) -> None:
    directory = pb.Directory.FromString(cas.read(d))
    dest.mkdir(parents=True, exist_ok=True)
    for f in directory.files:  # read-only, as buildbox and bb_worker hand inputs over
        (dest / f.name).write_bytes(cas.read(f.digest))
        (dest / f.name).chmod(0o555 if f.is_executable else 0o444)
    for s in directory.symlinks:
        os.symlink(s.target, dest / s.name)
    for sub in directory.directories:
        lay_out(cas, sub.digest, dest / sub.name)


def collect(root: Path, blobs: dict[str, bytes]) -> pb.Tree:
    children: list[pb.Directory] = []

    def encode(path: Path) -> pb.Directory:
        message = pb.Directory()
        for entry in sorted(os.listdir(path)):
            p = path / entry
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                message.symlinks.add(name=entry, target=os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                child = encode(p)
                children.append(child)
                data = child.SerializeToString(deterministic=True)
                blobs[digest(data).hash] = data
                message.directories.add(name=entry, digest=digest(data))
            elif stat.S_ISREG(st.st_mode):
                data = p.read_bytes()
                blobs[digest(data).hash] = data
                message.files.add(
                    name=entry, digest=digest(data), is_executable=bool(st.st_mode & 0o111)
                )
        return message

    return pb.Tree(root=encode(root), children=children)


def execute(cas: CAS, action: pb.Action, scratch: Path, podman: list[str]) -> pb.ActionResult:
    command = pb.Command.FromString(cas.read(action.command_digest))
    root = scratch / "root"
    lay_out(cas, action.input_root_digest, root)
    props = {p.name: p.value for p in action.platform.properties}
    image = props.get("container-image", "").removeprefix("docker://")
    argv = [*podman, "run", "--rm", "--network", "none", "--hostname", "jailbake",
            "-v", f"{root}:/work", "-w", "/work"]  # fmt: skip
    for v in command.environment_variables:
        argv += ["-e", f"{v.name}={v.value}"]
    argv += [image, *command.arguments]
    started = time.monotonic()
    run = subprocess.run(argv, capture_output=True, timeout=3600)
    blobs = {digest(run.stdout).hash: run.stdout, digest(run.stderr).hash: run.stderr}
    result = pb.ActionResult(
        exit_code=run.returncode,
        stdout_digest=digest(run.stdout),
        stderr_digest=digest(run.stderr),
    )
    out = root / "out"
    if run.returncode == 0 and out.is_dir():
        tree = collect(out, blobs)
        data = tree.SerializeToString(deterministic=True)
        blobs[digest(data).hash] = data
        result.output_directories.add(path="out", tree_digest=digest(data))
    cas.write(blobs)
    print(f"ran {image} in {time.monotonic() - started:.1f}s: exit {run.returncode}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--instance", default="")
    parser.add_argument("--name", default="worker")
    parser.add_argument("--property", action="append", default=["OSFamily=linux"])
    parser.add_argument("--podman-url", help="Podman's API socket (unix://...), else local podman")
    args = parser.parse_args()
    podman = ["podman", *(["--remote", "--url", args.podman_url] if args.podman_url else [])]
    channel = grpc.insecure_channel(args.server)
    bots = bots_pb2_grpc.BotsStub(channel)
    cas = CAS(channel, args.instance)
    device = worker_pb2.Device(
        handle=args.name,
        properties=[
            worker_pb2.Device.Property(key=k, value=v)
            for k, _, v in (p.partition("=") for p in args.property)
        ],
    )
    session = bots_pb2.BotSession(
        bot_id=args.name, status=bots_pb2.BotStatus.OK, worker=worker_pb2.Worker(devices=[device])
    )
    session = bots.CreateBotSession(
        bots_pb2.CreateBotSessionRequest(parent=args.instance, bot_session=session), timeout=10
    )
    print(f"{args.name}: session {session.name}", flush=True)
    while True:
        try:
            session = bots.UpdateBotSession(
                bots_pb2.UpdateBotSessionRequest(name=session.name, bot_session=session),
                timeout=5,
            )
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                continue
            raise
        for lease in session.leases:
            # BuildGrid hands a lease over ACTIVE (the job is executing once assigned).
            if lease.state not in (bots_pb2.LeaseState.PENDING, bots_pb2.LeaseState.ACTIVE):
                continue
            lease.state = bots_pb2.LeaseState.ACTIVE
            action = pb.Action()
            if not lease.payload.Unpack(action):
                d = pb.Digest()
                lease.payload.Unpack(d)
                action = pb.Action.FromString(cas.read(d))
            scratch = Path(tempfile.mkdtemp(prefix=f"{args.name}-", dir="/var/tmp"))
            try:
                podman = [
                    "podman",
                    *(["--remote", "--url", args.podman_url] if args.podman_url else []),
                ]
                result = execute(cas, action, scratch, podman)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            lease.result.Pack(result)
            lease.state = bots_pb2.LeaseState.COMPLETED


if __name__ == "__main__":
    main()
