"""The helper thread that makes a big turn's first write to each socket: real sockets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from server.net.parallel_writer import CHUNK, ParallelWriter, send_once


@pytest.fixture
def writer() -> Iterator[ParallelWriter]:
    made = ParallelWriter()
    yield made
    made.close()


def _pair() -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    return ours, theirs


def _read_all(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += sock.recv(size - len(data))
    return data


def test_a_round_sends_each_socket_its_parts_and_reports_every_count(
    writer: ParallelWriter,
) -> None:
    pairs = [_pair() for _ in range(CHUNK * 2 + 3)]  # whole chunks and a partial one
    try:
        writes = writer.begin()
        indexes = [
            writes.add(ours, [b"record %d;" % n, b"and more"]) for n, (ours, _) in enumerate(pairs)
        ]
        results = writes.finish()
        assert indexes == list(range(len(pairs)))
        for n, (_, theirs) in enumerate(pairs):
            expected = b"record %d;and more" % n
            assert results[n] == len(expected)
            assert _read_all(theirs, len(expected)) == expected
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


def test_a_full_buffer_gives_a_short_count_or_zero_and_a_dead_peer_its_error(
    writer: ParallelWriter,
) -> None:
    full, full_peer = _pair()
    dead, dead_peer = _pair()
    fine, fine_peer = _pair()
    try:
        while send_once(full, [bytes(65536)]):
            pass  # nobody reads full_peer: the kernel buffers fill up
        dead_peer.close()
        writes = writer.begin()
        writes.add(full, [b"x" * 4096])
        writes.add(dead, [b"y"])
        writes.add(fine, [b"z"])
        full_result, dead_result, fine_result = writes.finish()
        assert full_result == 0
        assert isinstance(dead_result, BrokenPipeError | ConnectionResetError)
        assert fine_result == 1 and fine_peer.recv(1) == b"z"
    finally:
        for sock in (full, full_peer, dead, fine, fine_peer):
            sock.close()


def test_an_empty_round_finishes_and_rounds_follow_one_another(writer: ParallelWriter) -> None:
    assert writer.begin().finish() == []
    ours, theirs = _pair()
    try:
        for n in range(3):
            writes = writer.begin()
            writes.add(ours, [b"%d" % n])
            assert writes.finish() == [1]
        assert _read_all(theirs, 3) == b"012"
    finally:
        ours.close()
        theirs.close()


def test_close_stops_the_thread_and_is_idempotent() -> None:
    made = ParallelWriter(name="uchat-writer-test")
    made.close()
    made.close()
    assert not any(t.name == "uchat-writer-test" for t in threading.enumerate())
