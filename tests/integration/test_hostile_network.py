"""Hostile load on the network side, against a real server process (docs/security.md,
"Hostile load: network"): floods, anonymous connections, per-address caps.

Other addresses are other 127.x.y.z sources: Linux routes all of 127/8 to loopback.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time

from common.protocol.message import Message
from common.protocol.opcodes import MessageType
from tests.integration.conftest import ServerFactory
from tests.integration.helpers import wait_until
from tests.integration.test_server_engine import (
    RawClient,
    closed_by_server,
    register_and_login,
)

CHUNK = 256 * 1024


def _upload(client: RawClient, size: int) -> str:
    data = os.urandom(size)
    attachment_id = os.urandom(16).hex()
    begun = client.call(
        MessageType.UPLOAD_BEGIN,
        attachment_id=attachment_id,
        size=size,
        digest=hashlib.sha256(data).digest(),
    )
    assert begun.type is MessageType.REPLY, begun.params
    for offset in range(0, size, CHUNK):
        part = client.call(
            MessageType.UPLOAD_CHUNK,
            attachment_id=attachment_id,
            offset=offset,
            data=data[offset : offset + CHUNK],
        )
        assert part.type is MessageType.REPLY, part.params
    return attachment_id


def test_pipelined_chunk_requests_wait_for_the_reader_instead_of_filling_memory(
    server_factory: ServerFactory,
) -> None:
    """100 x 256 KiB requested at once and not read: the server stops dispatching at
    the pause limit (1 MiB) instead of queueing 25 MiB, and answers all of them, in
    order, once the client reads. Before, the queue grew past the write limit."""
    server = server_factory()
    greedy = register_and_login(server, "greedy", rcvbuf=16 * 1024)
    bystander = register_and_login(server, "bystander", source="127.0.2.1")
    attachment_id = _upload(greedy, 2 * CHUNK)
    rss_before = server.rss_kb()
    request_ids = [
        greedy.send(MessageType.DOWNLOAD_CHUNK, attachment_id=attachment_id, offset=0, length=CHUNK)
        for _ in range(100)
    ]
    time.sleep(1.0)  # let the server do all it would do while nobody reads
    grown_kib = server.rss_kb() - rss_before
    bystander.ping()  # served while the greedy connection is paused
    assert grown_kib < 8 * 1024 + 1024, f"server grew by {grown_kib} KiB"
    replies = [greedy.wait_for(rid) for rid in request_ids]
    assert [m.type for m in replies] == [MessageType.REPLY] * 100
    assert all(len(m.params["data"]) == CHUNK for m in replies)
    assert "slow reader" not in server.log_text()


def test_anonymous_ping_floods_lose_their_slots_at_the_login_deadline(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(
        env={"UCHAT_SERVER_LOGIN_TIMEOUT": "2", "UCHAT_SERVER_MAX_CONNECTIONS": "12"}
    )
    squatters = [RawClient(server, source=f"127.0.3.{1 + n % 4}") for n in range(12)]
    for squatter in squatters:
        squatter.ping()
    # every slot is held: a newcomer is refused at accept
    refused = socket.create_connection(server.address, timeout=5)
    assert closed_by_server(refused, timeout=5)
    refused.close()
    deadline = time.monotonic() + 6
    pings = 0
    while time.monotonic() < deadline:  # PING keeps them "active", not logged in
        alive = 0
        for squatter in squatters:
            try:
                squatter.send(MessageType.PING)
                alive += 1
            except OSError:
                continue
        pings += alive
        if alive == 0:
            break
        time.sleep(0.25)
    assert pings > 12
    for squatter in squatters:
        assert closed_by_server(squatter.sock, timeout=5)
    assert server.log_count("login timeout") >= 12
    honest = register_and_login(server, "honest")
    honest.ping()


def test_per_address_caps_refuse_only_the_crowded_address(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(
        env={
            "UCHAT_SERVER_MAX_ANONYMOUS_PER_ADDRESS": "3",
            "UCHAT_SERVER_MAX_CONNECTIONS_PER_ADDRESS": "4",
        }
    )
    crowd = [RawClient(server, source="127.0.4.1") for _ in range(3)]
    extra = socket.socket()
    extra.bind(("127.0.4.1", 0))
    extra.connect(server.address)
    assert closed_by_server(extra, timeout=5)  # a 4th anonymous one from that address
    extra.close()
    neighbour = RawClient(server, source="127.0.4.2")
    neighbour.ping()
    member = register_and_login(server, "member", source="127.0.4.2")
    member.ping()
    # logging in frees an anonymous place, up to the address's total
    crowd[0].close()
    wait_until(lambda: server.log_count("closed 127.0.4.1") >= 1, what="close noticed")
    logged = register_and_login(server, "crowded", source="127.0.4.1")
    newcomer = RawClient(server, source="127.0.4.1")
    newcomer.ping()
    over = socket.socket()
    over.bind(("127.0.4.1", 0))
    over.connect(server.address)
    assert closed_by_server(over, timeout=5)  # 2 anonymous + 1 member + 1 = the total of 4
    over.close()
    logged.ping()


def test_records_before_login_are_capped_small(server_factory: ServerFactory) -> None:
    server = server_factory()
    anonymous = RawClient(server)
    anonymous.sock.sendall(
        anonymous.channel.send(Message(MessageType.PING, 1, {"pad": b"x" * 40_000}))
    )
    assert closed_by_server(anonymous.sock, timeout=5)
    member = register_and_login(server, "big")
    member.sock.sendall(member.channel.send(Message(MessageType.PING, 99, {"pad": b"x" * 40_000})))
    assert member.wait_for(99).type is MessageType.REPLY  # full frames once logged in
