"""The reactor while a turn's commit runs on another thread (`PendingCommit`).

A cluster node's database thread commits the turn; meanwhile the reactor may only
read and open the records of connections with nothing queued this turn. These tests
hold the commit open from a helper thread and look at what the reactor did meanwhile:
the turn's output stays off the wire, a request read meanwhile is dispatched only in
the next turn, a close found meanwhile runs its hooks after the commit, and a failed
commit withholds the turn's output as a failed local commit does.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from common.protocol.message import Message, reply
from server.net.connection import Connection
from tests.unit.test_server_reactor import Harness, make_harness

LOGIN = 9  # the harness handler logs a connection in on a request with this id


class HeldCommit:
    """A commit that is ready when the test releases it (from any thread)."""

    def __init__(self, harness: Harness, fails: bool = False) -> None:
        self._harness = harness
        self._fails = fails
        self._ready = threading.Event()
        self.started = threading.Event()

    @property
    def ready(self) -> bool:
        self.started.set()
        return self._ready.is_set()

    def release(self) -> None:
        self._ready.set()
        self._harness.reactor.wake()

    def finish(self) -> None:
        self._harness.events.append("commit done")
        if self._fails:
            raise OSError("the database went away")


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = make_harness()

    def handle(connection: Connection, message: Message) -> None:
        if message.request_id == LOGIN:
            connection.user_id = connection.peer[1]
        connection.send(reply(message.request_id, {}))

    h.handler = handle
    yield h
    h.commit_hook = None
    h.reactor.shutdown(flush_timeout=0.5)


def logged_in(harness: Harness) -> socket.socket:
    client = harness.connect()
    client.sendall(f"3 {LOGIN}\n".encode())
    assert harness.read_line(client) == f"1 {LOGIN} ".encode()
    return client


def hold_next_commit(harness: Harness, fails: bool = False) -> HeldCommit:
    """The next commit is held; later ones are done at once."""
    held = HeldCommit(harness, fails)

    def hook() -> HeldCommit | None:
        harness.commit_hook = None
        return held

    harness.commit_hook = hook
    return held


def in_background(step: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=step, daemon=True)
    thread.start()
    return thread


def became_true(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def nothing_on_the_wire(client: socket.socket) -> bool:
    try:
        return client.recv(100, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return True


def test_a_request_read_during_the_commit_is_dispatched_after_it(harness: Harness) -> None:
    alice, bob = logged_in(harness), logged_in(harness)
    bob_port = bob.getsockname()[1]
    bob_connection = next(c for c in harness.reactor.connections if c.peer[1] == bob_port)
    held = hold_next_commit(harness)
    seen: dict[str, object] = {}

    def meanwhile() -> None:
        try:
            held.started.wait(3)
            bob.sendall(b"3 6\n")
            # read and opened by the overlap, not dispatched
            seen["read ahead"] = became_true(lambda: bool(bob_connection.inbox))
            seen["alice had nothing"] = nothing_on_the_wire(alice)
            seen["events"] = list(harness.events)
        finally:
            held.release()

    harness.events.clear()
    helper = in_background(meanwhile)
    alice.sendall(b"3 5\n")
    assert harness.read_line(alice) == b"1 5 "
    helper.join(3)
    assert seen["read ahead"] is True
    assert seen["alice had nothing"] is True
    assert "dispatch 6" not in seen["events"]  # type: ignore[operator]
    assert harness.read_line(bob) == b"1 6 "
    events = harness.events
    assert events.index("dispatch 5") < events.index("commit done") < events.index("dispatch 6")


def test_a_failed_commit_elsewhere_withholds_the_turns_output(harness: Harness) -> None:
    client, bystander = logged_in(harness), logged_in(harness)
    held = hold_next_commit(harness, fails=True)

    def release_once_started() -> None:
        held.started.wait(3)
        held.release()

    in_background(release_once_started)
    client.sendall(b"3 7\n")
    harness.wait_closed(client)
    assert "storage failure: output withheld" in harness.closed.values()
    bystander.sendall(b"3 8\n")
    assert harness.read_line(bystander) == b"1 8 "


def test_a_peer_gone_during_the_commit_is_closed_after_it(harness: Harness) -> None:
    alice, bob = logged_in(harness), logged_in(harness)
    bob_port = bob.getsockname()[1]
    held = hold_next_commit(harness)
    closed_before_commit_done: list[bool] = []
    finish = held.finish

    def finish_and_look() -> None:
        closed_before_commit_done.append(any(c.peer[1] == bob_port for c in harness.closed))
        finish()

    held.finish = finish_and_look  # type: ignore[method-assign]

    def meanwhile() -> None:
        held.started.wait(3)
        bob.close()  # the overlap reads the end of the stream
        time.sleep(0.1)
        held.release()

    helper = in_background(meanwhile)
    alice.sendall(b"3 5\n")
    assert harness.read_line(alice) == b"1 5 "
    helper.join(3)
    harness.pump(lambda: any(c.peer[1] == bob_port for c in harness.closed))
    assert closed_before_commit_done == [False]
    reason = next(r for c, r in harness.closed.items() if c.peer[1] == bob_port)
    assert reason == "peer closed the connection"


def test_a_socket_left_for_the_next_turn_does_not_spin_the_overlap(harness: Harness) -> None:
    """alice's second request arrives while her first turn commits: her output is
    queued, so she is not read ahead; her readable socket must not wake the loop over
    and over (the selector is level-triggered), and she is served next turn."""
    alice = logged_in(harness)
    selector = harness.reactor._selector
    select = selector.select
    calls: list[int] = []

    def counted(timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        calls.append(1)
        return select(timeout)

    held = hold_next_commit(harness)

    def meanwhile() -> None:
        try:
            held.started.wait(3)
            calls.clear()
            alice.sendall(b"3 6\n")
            time.sleep(0.3)
        finally:
            held.release()

    selector.select = counted  # type: ignore[method-assign]
    try:
        helper = in_background(meanwhile)
        alice.sendall(b"3 5\n")
        assert harness.read_line(alice) == b"1 5 "
        helper.join(3)
        spins = len(calls)
    finally:
        selector.select = select  # type: ignore[method-assign]
    assert spins < 20, f"{spins} selects in 0.3 s of commit"
    assert harness.read_line(alice) == b"1 6 "
