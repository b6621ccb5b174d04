"""Chunk flood: one connection asks for many chunks of its own attachment and reads
nothing; the server must stop dispatching at the pause limit, not queue them all.

Issue 8, bar (b): the server's RSS grows by at most its write limit + 1 MiB while
`--requests` DOWNLOAD_CHUNK requests of 256 KiB each are pipelined (`--connections`
at once, from different addresses), measured against the RSS just before. Then the
client reads everything: every request is answered, in order, and no connection is
dropped as a slow reader.

    .venv/bin/python -m bench chunk_flood [--requests 400] [--connections 4]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import select
import time
from typing import Any

from bench.common import (
    BenchError,
    Link,
    ServerProcess,
    base_parser,
    check,
    emit,
    new_attachment_id,
    open_sessions,
    register_users,
    run,
)
from common.protocol.opcodes import MessageType

SCENARIO = "chunk_flood"
CHUNK = 256 * 1024
WRITE_LIMIT = 8 * 1024 * 1024  # the server's default write_buffer_limit


def upload(link: Link, size: int) -> str:
    data = os.urandom(size)
    attachment_id = new_attachment_id()
    link.call(
        MessageType.UPLOAD_BEGIN,
        {"attachment_id": attachment_id, "size": size, "digest": hashlib.sha256(data).digest()},
    )
    for offset in range(0, size, CHUNK):
        link.call(
            MessageType.UPLOAD_CHUNK,
            {
                "attachment_id": attachment_id,
                "offset": offset,
                "data": data[offset : offset + CHUNK],
            },
        )
    return attachment_id


def read_all(link: Link, request_ids: list[int], timeout: float) -> int:
    """Read until every request is answered; returns the chunk bytes received."""
    wanted = set(request_ids)
    received = 0
    order: list[int] = []
    deadline = time.monotonic() + timeout
    while wanted:
        if time.monotonic() > deadline:
            raise BenchError(f"{len(wanted)} chunk requests unanswered")
        link.wait(select.POLLIN, 1.0)
        for message in link.receive():
            if message.request_id in wanted:
                if message.type is not MessageType.REPLY:
                    raise BenchError(f"chunk refused: {message.params.get('code')}")
                wanted.discard(message.request_id)
                order.append(message.request_id)
                received += len(message.params["data"])
    if order != request_ids:
        raise BenchError("chunk replies came out of order")
    return received


def scenario(args: argparse.Namespace) -> dict[str, Any]:
    with ServerProcess.start({}, args.log_level) as server:
        names = [f"greedy{i}" for i in range(args.connections)]
        register_users(server, names)
        links = [
            open_sessions(server, [name], source=f"127.0.6.{i + 1}")[0]
            for i, name in enumerate(names)
        ]
        attachments = [upload(link, 2 * CHUNK) for link in links]
        time.sleep(0.5)
        rss_before = server.rss_kb()
        sent: list[list[int]] = []
        for link, attachment_id in zip(links, attachments, strict=True):
            params = {"attachment_id": attachment_id, "offset": 0, "length": CHUNK}
            sent.append(
                [link.send(MessageType.DOWNLOAD_CHUNK, params) for _ in range(args.requests)]
            )
        deadline = time.monotonic() + 30
        for link in links:  # the requests are small: they all fit the socket buffers
            while not link.flush():
                if time.monotonic() > deadline:
                    raise BenchError("could not write the requests")
                link.wait(select.POLLOUT, 1.0)
        peak = rss_before
        for _ in range(int(args.hold / 0.1)):  # nobody reads: what does the server hold?
            time.sleep(0.1)
            peak = max(peak, server.rss_kb())
        received = sum(read_all(link, ids, 120.0) for link, ids in zip(links, sent, strict=True))
        dropped = server.log_count("slow reader")
        alive = server.alive()
        for link in links:
            link.close()
    grown_mib = (peak - rss_before) / 1024
    bar_mib = (WRITE_LIMIT + 1024 * 1024) / (1024 * 1024)
    results = {
        "server_rss_kb_before": rss_before,
        "server_rss_kb_peak_while_unread": peak,
        "rss_growth_mib": round(grown_mib, 2),
        "rss_growth_mib_per_connection": round(grown_mib / args.connections, 2),
        "growth_over_bar": round(grown_mib / bar_mib, 3),
        "requested_mib_per_connection": args.requests * CHUNK / (1024 * 1024),
        "received_mib": round(received / (1024 * 1024), 1),
        "slow_readers_dropped": dropped,
        "server_alive": alive,
    }
    checks = [
        check(
            "RSS growth per connection / (write limit + 1 MiB)",
            round(grown_mib / args.connections / bar_mib, 3),
            1.0,
            "x",
            False,
        ),
        check("connections dropped as slow readers", dropped, 0, "", False),
        check("server alive", int(alive), 1, "", True),
    ]
    params = {key: value for key, value in vars(args).items() if key not in ("time_limit", "json")}
    return emit(SCENARIO, params, results, checks)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], time_limit=300.0)
    parser.add_argument("--requests", type=int, default=400, help="chunk requests per connection")
    parser.add_argument("--connections", type=int, default=1, help="greedy connections")
    parser.add_argument("--hold", type=float, default=2.0, help="seconds nobody reads")
    args = parser.parse_args(argv)
    return run(SCENARIO, lambda: scenario(args), args)
