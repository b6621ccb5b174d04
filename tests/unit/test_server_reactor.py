"""The reactor with a trivial line-based channel: no crypto, real sockets on 127.0.0.1.

The channel speaks `HELLO\n` (handshake; answered `WELCOME\n`), then one request per
line `<opcode> <request id>`; the line `BAD` is a protocol error. Tests drive the loop
turn by turn with `run_once`, so every step is deterministic.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from common.errors import RemoteProtocolError
from common.protocol.message import Message, decode_message, reply
from common.protocol.opcodes import MessageType
from server.net.admission import AdmissionLimits
from server.net.connection import Connection
from server.net.reactor import PendingCommit, Reactor, ReactorSettings


class LineChannel:
    """A stand-in for SecureChannel: plaintext lines, same interface."""

    def __init__(self) -> None:
        self._buffer = b""
        self._outgoing = b""
        self.established = False
        self.frame_cap = 1 << 20
        #: How many lines ("records") each receive_data call took.
        self.records_opened_per_call: list[int] = []

    @property
    def records_waiting(self) -> bool:
        return b"\n" in self._buffer

    def receive_data(self, data: bytes, max_records: int | None = None) -> list[Message]:
        self._buffer += data
        self.records_opened_per_call.append(0)
        messages: list[Message] = []
        while b"\n" in self._buffer and (
            max_records is None or self.records_opened_per_call[-1] < max_records
        ):
            self.records_opened_per_call[-1] += 1
            line, self._buffer = self._buffer.split(b"\n", 1)
            if line == b"BAD":
                raise RemoteProtocolError("bad line")
            if not self.established:
                if line != b"HELLO":
                    raise RemoteProtocolError("expected HELLO")
                self.established = True
                self._outgoing += b"WELCOME\n"
                continue
            opcode, request_id = line.split()
            messages.append(Message(MessageType(int(opcode)), int(request_id), {}))
        return messages

    def data_to_send(self) -> bytes:
        out, self._outgoing = self._outgoing, b""
        return out

    @property
    def buffered_input(self) -> int:
        return len(self._buffer)

    @property
    def max_frame(self) -> int:
        return self.frame_cap

    def limit_frames(self, max_frame: int) -> None:
        self.frame_cap = max_frame

    def send_batch(self, bodies: list[bytes]) -> bytes:
        """One line per message, all in one write: a turn's messages share a record."""
        return b"".join(self._line(decode_message(body)) for body in bodies)

    @staticmethod
    def _line(message: Message) -> bytes:
        size = int(message.params.get("size", 0))
        return f"{int(message.type)} {message.request_id} ".encode() + b"x" * size + b"\n"


@dataclass
class Harness:
    """A reactor plus a record of what its hooks saw."""

    reactor: Reactor
    clock: list[float]
    closed: dict[Connection, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    port: int = 0
    handler: Callable[[Connection, Message], None] | None = None
    #: Runs at every commit; may return a commit still running elsewhere.
    commit_hook: Callable[[], PendingCommit | None] | None = None
    unread: dict[int, bytes] = field(default_factory=dict)
    #: The share of its turn's budget each request uses (the dispatcher's answer).
    share_of: Callable[[Message], int] = field(default=lambda message: 1)

    def pump(self, until: Callable[[], bool], timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, "condition not reached"
            self.reactor.run_once(timeout=0.02)

    def connect(self, hello: bool = True) -> socket.socket:
        client = socket.create_connection(("127.0.0.1", self.port), timeout=3)
        before = self.reactor.connection_count
        self.pump(lambda: self.reactor.connection_count > before)
        if hello:
            client.sendall(b"HELLO\n")
            assert self.read_line(client) == b"WELCOME"
        return client

    def read_line(self, client: socket.socket) -> bytes:
        """Pump the loop until `client` has a whole line; keep any extra bytes for later."""
        data = self.unread.pop(client.fileno(), b"")
        client.setblocking(False)
        deadline = time.monotonic() + 3
        while b"\n" not in data:
            assert time.monotonic() < deadline, f"no line, got {data!r}"
            try:
                chunk = client.recv(65536)
            except BlockingIOError:
                self.reactor.run_once(timeout=0.02)
                continue
            assert chunk, "connection closed"
            data += chunk
        client.settimeout(3)
        line, rest = data.split(b"\n", 1)
        if rest:
            self.unread[client.fileno()] = rest
        return line

    def wait_closed(self, client: socket.socket) -> None:
        """Pump until the server has closed `client` (EOF or reset)."""
        client.setblocking(False)

        def is_closed() -> bool:
            try:
                while True:
                    chunk = client.recv(65536)
                    if not chunk:
                        return True
            except BlockingIOError:
                return False
            except ConnectionResetError:
                return True

        self.pump(is_closed)


def make_harness(**settings: float) -> Harness:
    clock = [1000.0]
    harness: Harness

    def on_message(connection: Connection, message: Message) -> int:
        harness.events.append(f"dispatch {message.request_id}")
        if harness.handler is not None:
            harness.handler(connection, message)
        else:
            connection.send(reply(message.request_id, {}))
        return harness.share_of(message)

    def before_flush() -> PendingCommit | None:
        harness.events.append("commit")
        if harness.commit_hook is not None:
            return harness.commit_hook()
        return None

    def on_closed(connection: Connection, reason: str) -> None:
        harness.closed[connection] = reason

    reactor = Reactor(
        ReactorSettings(
            handshake_timeout=settings.get("handshake_timeout", 10.0),
            idle_timeout=settings.get("idle_timeout", 120.0),
            max_connections=int(settings.get("max_connections", 100)),
            write_buffer_limit=int(settings.get("write_buffer_limit", 1 << 20)),
            output_pause_limit=int(settings.get("output_pause_limit", 256 * 1024)),
            requests_per_turn=int(settings.get("requests_per_turn", 16)),
            login_timeout=settings.get("login_timeout", 1e9),
            admission=AdmissionLimits(
                per_address=int(settings.get("per_address", 100)),
                anonymous_per_address=int(settings.get("anonymous_per_address", 100)),
                input_budget=int(settings.get("input_budget", 64 << 20)),
            ),
        ),
        channel_factory=LineChannel,
        on_message=on_message,
        on_closed=on_closed,
        before_flush=before_flush,
        clock=lambda: clock[0],
    )
    harness = Harness(reactor=reactor, clock=clock)
    harness.port = reactor.listen("127.0.0.1", 0)[1]
    return harness


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = make_harness()
    yield h
    h.reactor.shutdown(flush_timeout=0.5)


def test_request_gets_its_reply(harness: Harness) -> None:
    client = harness.connect()
    client.sendall(b"3 7\n3 8\n")
    assert harness.read_line(client) == b"1 7 "
    assert harness.read_line(client) == b"1 8 "


def test_nothing_reaches_a_socket_before_the_turns_commit(harness: Harness) -> None:
    client = harness.connect()

    def peek_at_commit() -> None:
        client.setblocking(False)  # a socket timeout would make recv() wait
        try:
            on_wire = client.recv(100, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            on_wire = b""
        harness.events.append(f"client had {on_wire!r}")

    harness.commit_hook = peek_at_commit
    harness.events.clear()
    client.sendall(b"3 5\n")
    assert harness.read_line(client) == b"1 5 "
    turn = harness.events[harness.events.index("dispatch 5") :]
    # the turn that produced the reply committed while the client still had nothing
    assert turn[1:3] == ["commit", "client had b''"]
    assert "client had b'1 5 \\n'" not in harness.events


def test_failed_commit_withholds_output_and_closes_those_connections(harness: Harness) -> None:
    client = harness.connect()
    bystander = harness.connect()

    def failing_commit() -> None:
        raise OSError("disk full")

    harness.commit_hook = failing_commit
    client.sendall(b"3 9\n")
    harness.wait_closed(client)
    reasons = list(harness.closed.values())
    assert reasons == ["storage failure: output withheld"]
    harness.commit_hook = None
    bystander.sendall(b"3 1\n")
    assert harness.read_line(bystander) == b"1 1 "


def test_protocol_error_closes_only_that_connection(harness: Harness) -> None:
    good = harness.connect()
    bad = harness.connect()
    bad.sendall(b"BAD\n")
    harness.wait_closed(bad)
    assert "RemoteProtocolError: bad line" in harness.closed.values()
    good.sendall(b"3 2\n")
    assert harness.read_line(good) == b"1 2 "


def test_dispatch_exception_closes_only_that_connection(harness: Harness) -> None:
    good = harness.connect()
    bad = harness.connect()

    def explode(connection: Connection, message: Message) -> None:
        if message.request_id == 666:
            raise RuntimeError("boom")
        connection.send(reply(message.request_id, {}))

    harness.handler = explode
    bad.sendall(b"3 666\n")
    harness.wait_closed(bad)
    good.sendall(b"3 4\n")
    assert harness.read_line(good) == b"1 4 "


def test_peer_closing_is_noticed(harness: Harness) -> None:
    client = harness.connect()
    client.close()
    harness.pump(lambda: bool(harness.closed))
    assert list(harness.closed.values()) == ["peer closed the connection"]
    assert harness.reactor.connection_count == 0


def test_handshake_timeout_closes_a_silent_connection(harness: Harness) -> None:
    silent = harness.connect(hello=False)
    ready = harness.connect()
    harness.clock[0] += 10.5
    harness.wait_closed(silent)
    assert list(harness.closed.values()) == ["handshake timeout"]
    ready.sendall(b"3 1\n")
    assert harness.read_line(ready) == b"1 1 "


def test_idle_timeout_counts_received_messages_as_activity(harness: Harness) -> None:
    active = harness.connect()
    idle = harness.connect()
    harness.clock[0] += 100
    active.sendall(b"3 1\n")
    assert harness.read_line(active) == b"1 1 "
    harness.clock[0] += 30  # idle: 130 s without a message; active: 30 s
    harness.wait_closed(idle)
    assert list(harness.closed.values()) == ["idle timeout"]
    active.sendall(b"3 2\n")
    assert harness.read_line(active) == b"1 2 "


def test_max_connections_refuses_extra_accepts() -> None:
    h = make_harness(max_connections=2)
    try:
        first = h.connect()
        second = h.connect()
        extra = socket.create_connection(("127.0.0.1", h.port), timeout=3)
        h.wait_closed(extra)
        assert h.reactor.connection_count == 2
        assert not h.closed
        second.sendall(b"3 0\n")
        first.sendall(b"3 1\n")
        assert h.read_line(first) == b"1 1 "
    finally:
        h.reactor.shutdown(flush_timeout=0.5)


def test_slow_reader_is_dropped_and_others_are_unaffected() -> None:
    h = make_harness(write_buffer_limit=256 * 1024)
    try:
        good = h.connect()
        slow = h.connect()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

        def flood(connection: Connection, message: Message) -> None:
            for _ in range(100):
                connection.send(reply(message.request_id, {"size": 64 * 1024}))

        h.handler = flood
        slow.sendall(b"3 1\n")
        # keep sending (and never reading) until the server gives up on us
        h.pump(lambda: slow_dropped(h), timeout=10)
        (reason,) = h.closed.values()
        assert reason.startswith("slow reader")
        h.handler = None
        good.sendall(b"3 2\n")
        assert h.read_line(good) == b"1 2 "
    finally:
        h.reactor.shutdown(flush_timeout=0.5)


def slow_dropped(h: Harness) -> bool:
    return any(reason.startswith("slow reader") for reason in h.closed.values())


def test_write_interest_is_registered_only_while_output_waits(harness: Harness) -> None:
    client = harness.connect()
    (connection,) = harness.reactor.connections
    connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    assert connection.events == selectors.EVENT_READ

    def big(conn: Connection, message: Message) -> None:
        conn.send(reply(message.request_id, {"size": 768 * 1024}))

    harness.handler = big
    client.sendall(b"3 1\n")
    harness.pump(lambda: connection.pending_output > 0)
    assert connection.events == selectors.EVENT_READ | selectors.EVENT_WRITE
    client.setblocking(False)
    received = 0
    deadline = time.monotonic() + 5
    while connection.pending_output or received < 768 * 1024:
        assert time.monotonic() < deadline
        harness.reactor.run_once(timeout=0.001)
        try:
            while True:
                received += len(client.recv(1 << 20))
        except BlockingIOError:
            pass
    assert connection.events == selectors.EVENT_READ


def test_close_after_flush_delivers_then_closes(harness: Harness) -> None:
    client = harness.connect()

    def answer_and_close(connection: Connection, message: Message) -> None:
        connection.send(reply(message.request_id, {}))
        connection.close_after_flush("bye")

    harness.handler = answer_and_close
    client.sendall(b"3 3\n3 4\n")
    assert harness.read_line(client) == b"1 3 "
    harness.wait_closed(client)
    assert list(harness.closed.values()) == ["bye"]
    assert "dispatch 4" not in harness.events  # no input is handled once closing


def test_a_closing_peer_that_never_reads_is_closed_after_a_deadline(harness: Harness) -> None:
    client = harness.connect()
    (connection,) = harness.reactor.connections
    connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    def big_then_close(conn: Connection, message: Message) -> None:
        conn.send(reply(message.request_id, {"size": 768 * 1024}))
        conn.close_after_flush("logged out")

    harness.handler = big_then_close
    client.sendall(b"3 1\n")
    harness.pump(lambda: connection.closing_reason is not None)
    for _ in range(5):
        harness.reactor.run_once(timeout=0.01)
    assert not harness.closed  # still trying to deliver
    harness.clock[0] += 10.5
    harness.pump(lambda: bool(harness.closed))
    assert list(harness.closed.values()) == ["logged out (flush timed out)"]


def test_call_soon_threadsafe_runs_on_the_reactor_thread(harness: Harness) -> None:
    ran_on: list[threading.Thread] = []
    worker = threading.Thread(
        target=lambda: harness.reactor.call_soon_threadsafe(
            lambda: ran_on.append(threading.current_thread())
        )
    )
    worker.start()
    worker.join()
    harness.pump(lambda: bool(ran_on))
    assert ran_on == [threading.current_thread()]


def test_run_and_stop_from_another_thread() -> None:
    h = make_harness()
    thread = threading.Thread(target=h.reactor.run)
    thread.start()
    client = socket.create_connection(("127.0.0.1", h.port), timeout=3)
    client.sendall(b"HELLO\n3 1\n")
    data = b""
    while data.count(b"\n") < 2:
        data += client.recv(100)
    assert data == b"WELCOME\n1 1 \n"
    h.reactor.stop()
    thread.join(3)
    assert not thread.is_alive()
    h.reactor.shutdown(flush_timeout=0.5)
    assert list(h.closed.values()) == ["server shutting down"]


def test_shutdown_flushes_queued_output_before_closing() -> None:
    h = make_harness()
    client = h.connect()
    (connection,) = h.reactor.connections
    connection.send(reply(42, {"size": 10}))
    h.reactor.shutdown(flush_timeout=1.0)
    client.settimeout(3)
    data = b""
    while chunk := client.recv(100):
        data += chunk
    assert data == b"1 42 xxxxxxxxxx\n"
    assert h.events[-1] == "commit"


def test_output_queued_by_the_commit_hook_is_written_in_the_same_turn(harness: Harness) -> None:
    """The turn's gathered pushes are queued by the commit hook: they must not wait."""
    client = harness.connect()
    (connection,) = harness.reactor.connections

    def push_at_commit() -> None:
        connection.send(Message(MessageType.PING, 0, {}))
        harness.commit_hook = None

    harness.commit_hook = push_at_commit
    harness.reactor.run_once(timeout=0.0)  # nothing else was queued in this turn
    client.settimeout(0.5)
    assert client.recv(100) == b"3 0 \n"


def _count(h: Harness, prefix: str) -> int:
    return sum(1 for event in h.events if event.startswith(prefix))


def test_a_pipelined_flood_is_served_a_bounded_share_per_turn() -> None:
    h = make_harness(requests_per_turn=4)
    try:
        flooder = h.connect()
        bystander = h.connect()
        flooder.sendall(b"".join(f"3 {n}\n".encode() for n in range(1000, 1100)))
        h.pump(lambda: "dispatch 1000" in h.events)
        bystander.sendall(b"3 7\n")
        h.pump(lambda: "dispatch 7" in h.events)
        before_bystander = h.events[: h.events.index("dispatch 7")]
        flood_first = sum(1 for e in before_bystander if e.startswith("dispatch 1"))
        assert flood_first <= 3 * 4  # a few turns' share, not the whole pipeline
        assert h.read_line(bystander) == b"1 7 "
        h.pump(lambda: "dispatch 1099" in h.events)  # the rest still runs, in order
        dispatched = [e for e in h.events if e.startswith("dispatch 1")]
        assert dispatched == [f"dispatch {n}" for n in range(1000, 1100)]
    finally:
        h.reactor.shutdown(flush_timeout=0.5)


def test_records_of_a_pipelined_read_are_opened_a_share_per_turn() -> None:
    """A 256 KiB read of small records is not opened at once: opening it (MACs and
    decryption of hundreds of records) would hold everyone else up by all of it."""
    h = make_harness(requests_per_turn=4)
    try:
        flooder = h.connect()
        (connection,) = h.reactor.connections
        channel = connection.channel
        assert isinstance(channel, LineChannel)
        flooder.sendall(b"".join(f"3 {n}\n".encode() for n in range(1000, 1100)))
        h.pump(lambda: "dispatch 1010" in h.events)
        assert max(channel.records_opened_per_call) <= 4
        assert channel.records_waiting  # the rest still sealed, counted as held input
        assert h.reactor.admission.input_held >= channel.buffered_input > 0
        h.pump(lambda: "dispatch 1099" in h.events)  # and all of it, in order
        dispatched = [e for e in h.events if e.startswith("dispatch 1")]
        assert dispatched == [f"dispatch {n}" for n in range(1000, 1100)]
        assert max(channel.records_opened_per_call) <= 4
        assert not channel.records_waiting
    finally:
        h.reactor.shutdown(flush_timeout=0.5)


def test_requests_with_a_bigger_share_get_fewer_dispatches_per_turn() -> None:
    """What dispatch says a request used (a refusal: several shares) is charged to the
    connection's turn budget, so a flood of refusals gets a few requests per turn."""
    h = make_harness(requests_per_turn=16)
    h.share_of = lambda message: 4 if message.request_id >= 1000 else 1
    try:
        flooder = h.connect()
        flooder.sendall(b"".join(f"3 {n}\n".encode() for n in range(1000, 1040)))
        h.pump(lambda: "dispatch 1039" in h.events)
        per_turn: list[int] = [0]
        for event in h.events:
            if event == "commit":
                per_turn.append(0)
            elif event.startswith("dispatch 1"):
                per_turn[-1] += 1
        assert max(per_turn) == 4  # 16 / 4, not 16
        assert sum(per_turn) == 40
    finally:
        h.reactor.shutdown(flush_timeout=0.5)


def test_output_over_the_pause_limit_stops_dispatch_until_it_drains() -> None:
    h = make_harness(output_pause_limit=512 * 1024, write_buffer_limit=8 << 20)
    try:
        client = h.connect()
        (connection,) = h.reactor.connections

        def big(conn: Connection, message: Message) -> None:
            # as large before sealing (pad) as after (size): a real reply is both
            conn.send(reply(message.request_id, {"size": 300 * 1024, "pad": bytes(300 * 1024)}))

        h.handler = big
        client.sendall(b"".join(f"3 {n}\n".encode() for n in range(40)))
        for _ in range(50):
            h.reactor.run_once(timeout=0.005)
        # Never more than the pause limit plus one reply queued: not 40 replies.
        assert connection.pending_output <= 512 * 1024 + 2 * 300 * 1024
        assert _count(h, "dispatch") < 40
        assert not h.closed
        client.setblocking(False)
        lines = 0
        data = b""
        deadline = time.monotonic() + 10
        while lines < 40:
            assert time.monotonic() < deadline
            h.reactor.run_once(timeout=0.001)
            with contextlib.suppress(BlockingIOError):
                while True:
                    data += client.recv(1 << 20)
            lines = data.count(b"\n")
        assert _count(h, "dispatch") == 40
    finally:
        h.reactor.shutdown(flush_timeout=0.5)


def test_a_connection_that_does_not_log_in_is_closed_at_the_deadline_even_if_busy() -> None:
    h = make_harness(login_timeout=30.0)
    try:
        client = h.connect()
        for second in range(3):
            h.clock[0] += 9
            client.sendall(f"3 {second}\n".encode())
            assert h.read_line(client) == f"1 {second} ".encode()
        h.clock[0] += 4
        h.wait_closed(client)
        assert list(h.closed.values()) == ["login timeout"]
    finally:
        h.reactor.shutdown(flush_timeout=0.5)


def test_a_logged_in_connection_has_no_login_deadline() -> None:
    h = make_harness(login_timeout=30.0)
    try:
        client = h.connect()
        (connection,) = h.reactor.connections
        connection.user_id = 42
        assert connection.channel.max_frame == 1_179_648  # full frames after LOGIN
        h.clock[0] += 60
        client.sendall(b"3 1\n")
        assert h.read_line(client) == b"1 1 "
        assert not h.closed
    finally:
        h.reactor.shutdown(flush_timeout=0.5)


def _source_connect(h: Harness, source: str) -> socket.socket:
    client = socket.socket()
    client.bind((source, 0))
    client.settimeout(3)
    client.connect(("127.0.0.1", h.port))
    return client


def test_per_address_caps_on_anonymous_and_all_connections() -> None:
    h = make_harness(per_address=3, anonymous_per_address=2)
    try:
        first = h.connect()
        second = h.connect()
        refused = _source_connect(h, "127.0.0.1")
        h.wait_closed(refused)  # a third anonymous connection from the same address
        other = _source_connect(h, "127.0.0.2")  # another address is unaffected
        h.pump(lambda: h.reactor.connection_count == 3)
        other.sendall(b"HELLO\n")
        assert h.read_line(other) == b"WELCOME"
        for connection in h.reactor.connections:
            if connection.peer[0] == "127.0.0.1":
                connection.user_id = 1
                break
        third = h.connect()  # one logged in: room for one more anonymous
        assert h.reactor.admission.connections_from("127.0.0.1") == 3
        over = _source_connect(h, "127.0.0.1")
        h.wait_closed(over)  # all-connections cap
        first.close()
        h.pump(lambda: h.reactor.admission.connections_from("127.0.0.1") == 2)
        third.sendall(b"3 5\n")
        assert h.read_line(third) == b"1 5 "
        second.close()
    finally:
        h.reactor.shutdown(flush_timeout=0.5)


def test_anonymous_input_beyond_the_global_budget_closes_the_connection() -> None:
    h = make_harness(input_budget=64 * 1024)
    try:
        member = h.connect()
        (connection,) = h.reactor.connections
        connection.user_id = 1  # logged in: accountable, not refused by the budget
        hog = h.connect()
        hog.sendall(b"x" * (70 * 1024))  # a partial line: held, never dispatched
        h.pump(lambda: "server input budget exhausted" in h.closed.values())
        assert h.reactor.admission.input_held == 0  # the closed hog's bytes are returned
        member.sendall(b"3 1\n")
        assert h.read_line(member) == b"1 1 "
        hog.close()
    finally:
        h.reactor.shutdown(flush_timeout=0.5)
