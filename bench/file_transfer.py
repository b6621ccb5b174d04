"""File transfer through the server: upload then download one large attachment, MB/s.

The attachment is random bytes standing for the ciphertext a client uploads (the
server only stores and hashes it). The uploader sends UPLOAD_BEGIN, then
UPLOAD_CHUNK requests with `--window` in flight; the upload ends with the reply to
the last chunk, after the server checked the SHA-256 of the whole file. The uploader
then sends its friend a message listing the attachment, and the friend downloads it
with DOWNLOAD_CHUNK, `--window` requests in flight, and checks the digest.

MB is 10^6 bytes. Upload records are sealed before the clock starts (a real sender
seals on its own machine); the download side decrypts every reply inside the clock,
as a real receiver does.

    python -m bench file_transfer [--size-mb 64] [--window 4]
"""

from __future__ import annotations

import hashlib
import os
import select
import time
from collections import deque
from typing import Any

from bench.common import (
    BenchError,
    CpuMeter,
    Link,
    ServerProcess,
    base_parser,
    befriend,
    check,
    emit,
    message_id,
    new_attachment_id,
    open_sessions,
    register_users,
    run,
    send_params,
    user_names,
)
from common.protocol.message import Message
from common.protocol.opcodes import MessageType

SCENARIO = "file_transfer"
MB = 1_000_000
TRANSFER_TIMEOUT = 120.0


def answers(link: Link, deadline: float) -> list[Message]:
    """Replies and errors that arrived (waiting up to 0.5 s); pushes are set aside."""
    if link.out:
        link.flush()
    if time.perf_counter() > deadline:
        raise BenchError("transfer timed out")
    if not link.wait(select.POLLIN | (select.POLLOUT if link.out else 0), 0.5):
        return []
    result = []
    for message in link.receive():
        if message.type in (MessageType.REPLY, MessageType.ERROR):
            if message.type is MessageType.ERROR:
                raise BenchError(f"transfer refused: {message.params}")
            result.append(message)
        else:
            link.pushes.append(message)
    return result


def upload(
    server: ServerProcess, link: Link, data: bytes, chunk: int, window: int
) -> dict[str, Any]:
    attachment_id = new_attachment_id()
    digest = hashlib.sha256(data).digest()
    begin = link.call(
        MessageType.UPLOAD_BEGIN,
        {"attachment_id": attachment_id, "size": len(data), "digest": digest},
    )
    if begin["offset"] != 0:
        raise BenchError(f"fresh upload starts at {begin['offset']}")
    sealed_started = time.perf_counter()
    records: deque[bytes] = deque()
    for offset in range(0, len(data), chunk):
        params = {"attachment_id": attachment_id, "offset": offset}
        params["data"] = data[offset : offset + chunk]
        records.append(link.seal(MessageType.UPLOAD_CHUNK, params)[1])
    seal_s = time.perf_counter() - sealed_started
    total, in_flight, last = len(records), 0, None
    meter = CpuMeter(server)
    started = time.perf_counter()
    deadline = started + TRANSFER_TIMEOUT
    while last is None:
        while records and in_flight < window:
            link.queue_sealed(records.popleft())
            in_flight += 1
        for reply in answers(link, deadline):
            in_flight -= 1
            if reply.params.get("complete"):
                last = reply
    elapsed = time.perf_counter() - started
    return {
        "cpu": meter.read(),
        "attachment_id": attachment_id,
        "seconds": elapsed,
        "chunks": total,
        "seal_seconds_before_clock": round(seal_s, 3),
    }


def download(link: Link, attachment_id: str, size: int, chunk: int, window: int) -> dict[str, Any]:
    buffer = bytearray()
    offsets = deque(range(0, size, chunk))
    in_flight = 0
    started = time.perf_counter()
    deadline = started + TRANSFER_TIMEOUT
    while len(buffer) < size:
        while offsets and in_flight < window:
            params = {"attachment_id": attachment_id, "offset": offsets.popleft()}
            params["length"] = chunk
            link.send(MessageType.DOWNLOAD_CHUNK, params)
            in_flight += 1
        for reply in answers(link, deadline):
            in_flight -= 1
            buffer += reply.params["data"]
    elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "data": bytes(buffer)}


def scenario(args: Any) -> dict[str, Any]:
    size = int(args.size_mb * MB)
    data = os.urandom(size)
    digest = hashlib.sha256(data).digest()
    with ServerProcess.start(log_level=args.log_level) as server:
        names = user_names("t", 2)
        register_users(server, names, links=1)
        sender, receiver = open_sessions(server, names)
        befriend([(sender, receiver)])
        up = upload(server, sender, data, args.chunk_size, args.window)
        params = send_params(
            message_id(),
            "user",
            receiver.name,
            os.urandom(200),
            [up["attachment_id"]],
        )
        sender.call(MessageType.SEND_MESSAGE, params)
        receiver.wait_push(MessageType.NEW_MESSAGE)
        meter = CpuMeter(server)
        down = download(receiver, up["attachment_id"], size, args.chunk_size, args.window)
        down_cpu = meter.read()
        alive = server.alive()
        tracebacks = server.log_count("Traceback")
    intact = hashlib.sha256(down["data"]).digest() == digest
    up_rate = size / MB / up["seconds"]
    down_rate = size / MB / down["seconds"]
    results = {
        "upload_mb_per_s": round(up_rate, 1),
        "download_mb_per_s": round(down_rate, 1),
        "upload_seconds": round(up["seconds"], 3),
        "download_seconds": round(down["seconds"], 3),
        "upload_chunks": up["chunks"],
        "upload_seal_seconds_before_clock": up["seal_seconds_before_clock"],
        "download_digest_ok": intact,
        "cpu_upload": up["cpu"],
        "cpu_download": down_cpu,
        "server_alive": alive,
        "server_tracebacks": tracebacks,
    }
    checks = [
        check("upload through the server", up_rate, 100, "MB/s", True),
        check("download through the server", down_rate, 100, "MB/s", True),
        check("downloaded bytes match the digest", int(intact), 1, "", True),
    ]
    params_out = {k: v for k, v in vars(args).items() if k != "log_level"}
    notes = ["upload time includes the server's SHA-256 check of the whole file"]
    return emit(SCENARIO, params_out, results, checks, notes)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], time_limit=240.0)
    parser.add_argument("--size-mb", type=float, default=64.0, help="attachment size (10^6 B)")
    parser.add_argument("--window", type=int, default=4, help="chunk requests in flight")
    parser.add_argument("--chunk-size", type=int, default=256 * 1024)
    args = parser.parse_args(argv)
    return run(SCENARIO, lambda: scenario(args), args)
