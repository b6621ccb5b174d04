"""Offline backlog: N messages wait for an offline user; time from LOGIN to the last one.

Set-up: two friends register and log in; the recipient disconnects; the sender sends
`--messages` messages (pipelined, ~200-byte opaque envelopes), which the server
stores. Then the recipient connects and completes the handshake, and the clock
starts when its LOGIN request is written. The figure is the time until the last
backlog message has been read off its socket. It acknowledges every batch as it
comes, as the client does, and the bench checks order and completeness.

    python -m bench offline_backlog [--messages 10000]
"""

from __future__ import annotations

import os
import select
import time
from typing import Any

from bench.common import (
    PASSWORD,
    BenchError,
    CpuMeter,
    Link,
    ServerProcess,
    base_parser,
    befriend,
    check,
    connect,
    emit,
    expect_ok,
    message_id,
    open_sessions,
    pipeline,
    register_users,
    run,
    send_params,
    user_names,
)
from common.protocol.opcodes import MessageType

SCENARIO = "offline_backlog"
BACKLOG_TIMEOUT = 60.0


def fill_backlog(sender: Link, recipient: str, count: int, size: int, window: int) -> list[str]:
    """Send `count` messages to the offline `recipient`; returns their ids in order."""
    ids = [message_id() for _ in range(count)]
    envelope = os.urandom(size)
    jobs = [
        (sender, MessageType.SEND_MESSAGE, send_params(i, "user", recipient, envelope)) for i in ids
    ]
    expect_ok(pipeline(jobs, window=window, timeout=BACKLOG_TIMEOUT * 3), "send to offline")
    return ids


def receive_backlog(link: Link, expected: int) -> dict[str, Any]:
    """LOGIN, then read NEW_MESSAGE batches until `expected` messages came."""
    started = time.perf_counter()
    login_id = link.send(MessageType.LOGIN, {"username": link.name, "password": PASSWORD})
    link.flush()
    received: list[str] = []
    batches = 0
    reply_at = last_at = float("nan")
    deadline = started + BACKLOG_TIMEOUT
    while len(received) < expected:
        if time.perf_counter() > deadline:
            raise BenchError(f"backlog: {len(received)}/{expected} after {BACKLOG_TIMEOUT} s")
        if link.out:
            link.flush()
        if not link.wait(select.POLLIN, 0.5):
            continue
        data = link.read_raw()
        arrived = time.perf_counter()
        batch: list[str] = []
        for message in link.channel.receive_data(data) if data else []:
            if message.request_id == login_id:
                if message.type is MessageType.ERROR:
                    raise BenchError(f"login refused: {message.params}")
                reply_at = arrived
            elif message.type is MessageType.NEW_MESSAGE:
                batches += 1
                batch.extend(item["message_id"] for item in message.params["messages"])
        if batch:
            received.extend(batch)
            last_at = arrived
            link.send(MessageType.ACK_DELIVERY, {"message_ids": batch})
    return {
        "received": received,
        "batches": batches,
        "login_reply_s": reply_at - started,
        "last_message_s": last_at - started,
    }


def scenario(args: Any) -> dict[str, Any]:
    with ServerProcess.start(log_level=args.log_level) as server:
        sender_name, recipient_name = user_names("o", 2)
        register_users(server, [sender_name, recipient_name], links=1)
        sender, recipient = open_sessions(server, [sender_name, recipient_name])
        befriend([(sender, recipient)])
        recipient.close()
        time.sleep(0.3)  # the server notices the close and marks the user offline
        started = time.perf_counter()
        sent = fill_backlog(sender, recipient_name, args.messages, args.envelope_size, args.window)
        store_s = time.perf_counter() - started
        sender.drain()
        link = connect(server, recipient_name)
        meter = CpuMeter(server)
        outcome = receive_backlog(link, len(sent))
        cpu = meter.read()
        alive = server.alive()
        tracebacks = server.log_count("Traceback")
        link.close()
        sender.close()
    received = outcome["received"]
    in_order = received[: len(sent)] == sent
    results = {
        "login_to_last_message_s": round(outcome["last_message_s"], 3),
        "login_to_reply_s": round(outcome["login_reply_s"], 3),
        "messages_received": len(received),
        "duplicates": len(received) - len(set(received)),
        "in_order_and_complete": in_order,
        "push_batches": outcome["batches"],
        "backlog_delivery_msgs_per_s": round(len(received) / outcome["last_message_s"], 1),
        "store_to_offline_msgs_per_s": round(len(sent) / store_s, 1),
        "cpu_during_login": cpu,
        "server_alive": alive,
        "server_tracebacks": tracebacks,
    }
    checks = [
        check(
            f"offline backlog of {args.messages} delivered after login",
            outcome["last_message_s"],
            1.0,
            "s",
            False,
        ),
        check("backlog complete, in order, no duplicates", int(in_order), 1, "", True),
    ]
    params = {k: v for k, v in vars(args).items() if k != "log_level"}
    notes = ["clock starts when the LOGIN request is written (handshake already done)"]
    return emit(SCENARIO, params, results, checks, notes)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], time_limit=240.0)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--envelope-size", type=int, default=200)
    parser.add_argument("--window", type=int, default=64, help="sends in flight while filling")
    args = parser.parse_args(argv)
    return run(SCENARIO, lambda: scenario(args), args)
