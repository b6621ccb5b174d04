"""Dispatcher, Context, Sessions, broadcast and WorkerPool without sockets or crypto.

Connections are real `Connection` objects over a socketpair, with a recording channel
(messages are kept as objects) and a recording host standing in for the reactor.
Worker results come back through a list of callbacks the test runs, as the reactor would.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from common.config import ServerConfig
from common.crypto.certs import ServerIdentity
from common.errors import RequestError, ValidationError
from common.protocol.message import Message, decode_message, encode_message, request
from common.protocol.opcodes import MessageType
from server.broadcast import send_to_users
from server.dispatch import REFUSED_SHARE, Context, Dispatcher, Services
from server.handlers._backlog import BacklogCursors
from server.net.connection import Connection
from server.sessions import Sessions
from server.storage.database import SqliteDatabase
from server.workers import WorkerPool, WorkerPoolFull

IDENTITY = ServerIdentity.create()
SECRET = "hunter2-very-secret"


class RecordingChannel:
    established = True

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def receive_data(self, data: bytes, max_records: int | None = None) -> list[Message]:
        return []

    records_waiting = False

    def data_to_send(self) -> bytes:
        return b""

    buffered_input = 0
    max_frame = 1 << 20

    def limit_frames(self, max_frame: int) -> None:
        self.max_frame = max_frame

    def send_batch(self, bodies: list[bytes]) -> bytes:
        """One record of several messages, as the real channel seals them."""
        self.sent += [decode_message(body) for body in bodies]
        return b"".join(bodies)


class EncodedChannel(RecordingChannel):
    """A channel that records the encoded bodies it was asked to seal."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def send_batch(self, bodies: list[bytes]) -> bytes:
        self.bodies += bodies
        return super().send_batch(bodies)


class RecordingHost:
    def __init__(self) -> None:
        self.queued: list[Connection] = []
        self.released: list[tuple[Connection, str]] = []
        self.stopped_reading: list[Connection] = []
        self.held: list[Connection] = []

    def output_queued(self, connection: Connection) -> None:
        self.queued.append(connection)

    def release(self, connection: Connection, reason: str) -> None:
        self.released.append((connection, reason))

    def authenticated(self, connection: Connection) -> None:

        return None

    def stop_reading(self, connection: Connection) -> None:
        self.stopped_reading.append(connection)

    def hold_anonymous(self, connection: Connection) -> None:
        self.held.append(connection)


class World:
    """Services, a dispatcher and a factory of connections."""

    def __init__(self, tmp_path: Path, handlers: list[ModuleType], queue_limit: int = 10) -> None:
        self.callbacks: list[Callable[[], None]] = []
        self.lock = threading.Lock()
        self.host = RecordingHost()
        self.offline: list[tuple[int, str]] = []
        self.workers = WorkerPool(1, queue_limit, self._call_soon)
        self.services = Services(
            db=SqliteDatabase.open(tmp_path / "uchat.db"),
            sessions=Sessions(),
            workers=self.workers,
            config=ServerConfig(),
            identity=IDENTITY,
            data_dir=tmp_path,
            on_offline=lambda uid, name: self.offline.append((uid, name)),
            backlog=BacklogCursors(),
            clock=lambda: 1_700_000_000_000,
        )
        self.dispatcher = Dispatcher(self.services, handlers)
        self._port = 40000
        self._sockets: list[Any] = []

    def _call_soon(self, callback: Callable[[], None]) -> None:
        with self.lock:
            self.callbacks.append(callback)

    def run_callbacks(self, expected: int = 1, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.callbacks) < expected:
            assert time.monotonic() < deadline, "worker result never came back"
            time.sleep(0.005)
        with self.lock:
            pending, self.callbacks = self.callbacks, []
        for callback in pending:
            callback()

    def connection(self, channel: RecordingChannel | None = None) -> Connection:
        import socket

        left, right = socket.socketpair()
        self._sockets += [left, right]
        self._port += 1
        return Connection(
            left, channel or RecordingChannel(), ("10.0.0.9", self._port), self.host, 0.0
        )

    def sent(self, connection: Connection) -> list[Message]:
        """What the connection sealed, once this turn's queued messages are sealed."""
        connection.seal_queued()
        channel = connection.channel
        assert isinstance(channel, RecordingChannel)
        return channel.sent

    def close(self) -> None:
        self.workers.stop()
        self.services.db.close()
        for sock in self._sockets:
            sock.close()


def handler(opcode: MessageType, requires_auth: bool, fn: Callable[..., Any]) -> ModuleType:
    module = ModuleType(f"fake_{opcode.name.lower()}")
    module.OPCODE = opcode  # type: ignore[attr-defined]
    module.REQUIRES_AUTH = requires_auth  # type: ignore[attr-defined]
    module.handle = fn  # type: ignore[attr-defined]
    return module


def ping(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"time": ctx.now()}


def contact_list(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"user": ctx.username}


def register(ctx: Context, params: dict[str, Any]) -> None:
    if params.get("mode") == "refuse":
        raise RequestError("username_taken", "taken", "username")
    if params.get("mode") == "invalid":
        raise ValidationError("email", "invalid_email", "not an email")
    if params.get("mode") == "crash":
        raise KeyError(params["password"])
    if params.get("mode") == "wrong-type":
        return "oops"  # type: ignore[return-value]
    ctx.run_in_worker(lambda: _slow(params), lambda result: ctx.reply({"result": result}))
    return None


def _slow(params: dict[str, Any]) -> str:
    if params.get("mode") == "worker-crash":
        raise RuntimeError(params["password"])
    return "hashed"


def login(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    ctx.bind_user(int(params["user_id"]), str(params["username"]))
    return {}


def logout(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    ctx.unbind_user()
    ctx.close_after_reply()
    return {}


HANDLERS = [
    handler(MessageType.PING, False, ping),
    handler(MessageType.CONTACT_LIST, True, contact_list),
    handler(MessageType.REGISTER, False, register),
    handler(MessageType.LOGIN, False, login),
    handler(MessageType.LOGOUT, True, logout),
]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, HANDLERS)
    yield w
    w.close()


def ask(
    world: World, connection: Connection, kind: MessageType, rid: int = 5, **params: Any
) -> Message:
    world.dispatcher.dispatch(connection, Message(kind, rid, params))
    return world.sent(connection)[-1]


def error_code(message: Message) -> str:
    assert message.type is MessageType.ERROR, message
    return str(message.params["code"])


# -- dispatcher -----------------------------------------------------------------------


def test_a_returned_dict_is_the_reply_with_the_request_id(world: World) -> None:
    answer = ask(world, world.connection(), MessageType.PING, rid=41)
    assert answer == Message(MessageType.REPLY, 41, {"time": 1_700_000_000_000})


@pytest.mark.parametrize(
    "kind", [MessageType.KICKED, MessageType.PRESENCE, MessageType.REPLY, MessageType.ERROR]
)
def test_pushes_and_replies_from_clients_are_bad_requests(world: World, kind: MessageType) -> None:
    connection = world.connection()
    assert error_code(ask(world, connection, kind)) == "bad_request"
    assert not world.host.released  # still open


def test_an_opcode_without_a_handler_is_a_bad_request(world: World) -> None:
    answer = ask(world, world.connection(), MessageType.SEARCH_USERS, rid=8)
    assert (answer.request_id, error_code(answer)) == (8, "bad_request")


def test_request_id_zero_is_a_bad_request(world: World) -> None:
    answer = ask(world, world.connection(), MessageType.PING, rid=0)
    assert error_code(answer) == "bad_request"


def test_requests_needing_a_login_are_refused_before_it(world: World) -> None:
    connection = world.connection()
    assert error_code(ask(world, connection, MessageType.CONTACT_LIST)) == "not_authenticated"
    ask(world, connection, MessageType.LOGIN, user_id=1, username="alice")
    assert ask(world, connection, MessageType.CONTACT_LIST).params == {"user": "alice"}


def test_request_and_validation_errors_become_error_replies(world: World) -> None:
    connection = world.connection()
    refused = ask(world, connection, MessageType.REGISTER, mode="refuse")
    assert refused.params == {"code": "username_taken", "message": "taken", "field": "username"}
    invalid = ask(world, connection, MessageType.REGISTER, mode="invalid")
    assert invalid.params == {"code": "invalid_email", "message": "not an email", "field": "email"}


def test_a_refusal_uses_a_bigger_share_of_the_turn_than_an_answer(tmp_path: Path) -> None:
    """The reactor's per-turn budget is charged per request by what dispatch returns:
    a flood of refusals, or of a costly type that declares TURN_SHARE, gets fewer
    requests per turn than ordinary traffic."""
    costly = handler(MessageType.SEARCH_USERS, False, ping)
    costly.TURN_SHARE = 3  # type: ignore[attr-defined]
    world = World(tmp_path, [*HANDLERS, costly])
    try:
        connection = world.connection()
        dispatch = world.dispatcher.dispatch
        assert dispatch(connection, Message(MessageType.PING, 1, {})) == 1
        assert dispatch(connection, Message(MessageType.SEARCH_USERS, 2, {})) == 3
        refused = Message(MessageType.REGISTER, 3, {"mode": "refuse"})
        assert dispatch(connection, refused) == REFUSED_SHARE > 1
        assert dispatch(connection, Message(MessageType.CONTACT_LIST, 4, {})) == REFUSED_SHARE
        assert dispatch(connection, Message(MessageType.PING, 0, {})) == REFUSED_SHARE
        assert [message.type for message in world.sent(connection)] == [
            MessageType.REPLY,
            MessageType.REPLY,
            MessageType.ERROR,
            MessageType.ERROR,
            MessageType.ERROR,
        ]
    finally:
        world.close()


def test_a_crashing_handler_answers_internal_error_and_logs_no_params(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    connection = world.connection()
    with caplog.at_level(logging.ERROR):
        answer = ask(world, connection, MessageType.REGISTER, mode="crash", password=SECRET)
    assert error_code(answer) == "internal_error"
    assert "Traceback" in caplog.text or caplog.records[0].exc_info
    assert SECRET not in caplog.text
    assert SECRET not in str(answer.params)
    assert ask(world, connection, MessageType.PING).type is MessageType.REPLY


def _write_then(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    ctx.db.execute(
        "INSERT INTO login_attempts (key, failures, last_failure, locked_until)"
        " VALUES (?, 1, 0, 0)",
        (params["key"],),
    )
    if params["then"] == "crash":
        raise RuntimeError("unexpected")
    if params["then"] == "refuse":
        raise RequestError("login_failed", "no")
    return {}


def test_a_crashing_step_is_rolled_back_but_refusals_keep_their_writes(tmp_path: Path) -> None:
    world = World(tmp_path, [handler(MessageType.PING, False, _write_then)])
    try:
        connection = world.connection()
        db = world.services.db
        for key, then in (("kept", "ok"), ("undone", "crash"), ("counted", "refuse")):
            ask(world, connection, MessageType.PING, key=key, then=then)
        db.commit()
        rows = {row[0] for row in db.all("SELECT key FROM login_attempts")}
        assert rows == {"kept", "counted"}
        assert not db.in_transaction
    finally:
        world.close()


def test_a_handler_returning_a_non_dict_is_an_internal_error(world: World) -> None:
    assert error_code(ask(world, world.connection(), MessageType.REGISTER, mode="wrong-type")) == (
        "internal_error"
    )


def test_an_unencodable_reply_becomes_internal_error(world: World) -> None:
    connection = world.connection()
    ctx = Context(world.services, connection, 6, MessageType.PING)
    ctx.reply({"not encodable": {1, 2}})
    (answer,) = world.sent(connection)
    assert (answer.request_id, error_code(answer)) == (6, "internal_error")


def test_two_handlers_for_one_opcode_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="two handlers"):
        World(tmp_path, [HANDLERS[0], HANDLERS[0]])


def test_a_handler_for_a_push_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a request"):
        World(tmp_path, [handler(MessageType.KICKED, False, ping)])


# -- context --------------------------------------------------------------------------


def test_only_the_first_answer_is_sent(world: World) -> None:
    connection = world.connection()
    ctx = Context(world.services, connection, 3, MessageType.PING)
    ctx.reply({"a": 1})
    ctx.fail("bad_request", "late")
    assert world.sent(connection) == [Message(MessageType.REPLY, 3, {"a": 1})]


def test_close_after_reply_waits_for_the_reply(world: World) -> None:
    connection = world.connection()
    ctx = Context(world.services, connection, 3, MessageType.LOGOUT)
    ctx.close_after_reply()
    assert world.host.stopped_reading == []
    ctx.reply({})
    assert connection.closing_reason == "closed after LOGOUT"
    assert world.host.stopped_reading == [connection]


def test_run_in_worker_replies_later_on_the_reactor(world: World) -> None:
    connection = world.connection()
    world.dispatcher.dispatch(connection, request(MessageType.REGISTER, 9))
    assert world.sent(connection) == []
    world.run_callbacks()
    assert world.sent(connection) == [Message(MessageType.REPLY, 9, {"result": "hashed"})]


def test_a_failing_worker_job_answers_internal_error(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    connection = world.connection()
    world.dispatcher.dispatch(
        connection, request(MessageType.REGISTER, 9, mode="worker-crash", password=SECRET)
    )
    world.run_callbacks()
    assert error_code(world.sent(connection)[-1]) == "internal_error"
    assert SECRET not in caplog.text


def test_a_closed_connection_skips_the_continuation(world: World) -> None:
    connection = world.connection()
    world.dispatcher.dispatch(connection, request(MessageType.REGISTER, 9))
    connection.close("gone")
    world.run_callbacks()
    assert world.sent(connection) == []


def test_a_full_worker_queue_answers_server_busy(tmp_path: Path) -> None:
    w = World(tmp_path, HANDLERS, queue_limit=1)
    gate = threading.Event()
    try:
        w.workers.submit(gate.wait, lambda future: None)  # occupies the thread
        deadline = time.monotonic() + 3
        while w.workers.queued:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        w.workers.submit(lambda: None, lambda future: None)  # fills the queue
        connection = w.connection()
        w.dispatcher.dispatch(connection, request(MessageType.REGISTER, 4))
        assert error_code(w.sent(connection)[-1]) == "server_busy"
    finally:
        gate.set()
        w.close()


def test_push_reaches_only_online_users(world: World) -> None:
    alice, bob = world.connection(), world.connection()
    ask(world, alice, MessageType.LOGIN, user_id=1, username="alice")
    ask(world, bob, MessageType.LOGIN, user_id=2, username="bob")
    ctx = Context(world.services, alice, 1, MessageType.SEND_MESSAGE)
    assert ctx.push(2, MessageType.PRESENCE, {"username": "alice", "online": True})
    assert not ctx.push(3, MessageType.PRESENCE, {"username": "alice", "online": True})
    assert world.sent(bob)[-1] == Message(
        MessageType.PRESENCE, 0, {"username": "alice", "online": True}
    )


def test_push_many_sends_one_copy_per_online_user(world: World) -> None:
    sender, one, two = world.connection(), world.connection(), world.connection(EncodedChannel())
    for connection, uid in ((sender, 1), (one, 2), (two, 3)):
        ask(world, connection, MessageType.LOGIN, user_id=uid, username=f"u{uid}")
    ctx = Context(world.services, sender, 1, MessageType.SEND_MESSAGE)
    count = ctx.push_many([2, 3, 2, 3, 99], MessageType.NEW_MESSAGE, {"messages": []})
    assert count == 2
    assert world.sent(one)[-1] == Message(MessageType.NEW_MESSAGE, 0, {"messages": []})
    assert isinstance(two.channel, EncodedChannel)
    two.seal_queued()
    assert two.channel.bodies[-1] == encode_message(  # the push was encoded once, before
        Message(MessageType.NEW_MESSAGE, 0, {"messages": []})
    )


def test_send_to_users_skips_closing_connections(world: World) -> None:
    closing = world.connection()
    ask(world, closing, MessageType.LOGIN, user_id=1, username="alice")
    closing.close_after_flush("bye")
    message = Message(MessageType.PRESENCE, 0, {})
    assert send_to_users(world.services.sessions, [1], message) == 0


# -- sessions ----------------------------------------------------------------------------


def test_a_second_login_kicks_the_first_without_an_offline_announcement(world: World) -> None:
    first, second = world.connection(), world.connection()
    ask(world, first, MessageType.LOGIN, user_id=1, username="alice")
    ask(world, second, MessageType.LOGIN, user_id=1, username="alice")
    assert world.sent(first)[-1] == Message(
        MessageType.KICKED, 0, {"reason": "logged_in_elsewhere", "address": second.address}
    )
    assert first.replaced and first.closing_reason is not None
    assert world.services.sessions.connection_for(1) is second
    world.dispatcher.connection_closed(first, "kicked")
    assert world.offline == []
    assert world.services.sessions.is_online(1)
    world.dispatcher.connection_closed(second, "peer closed the connection")
    assert world.offline == [(1, "alice")]
    assert world.services.sessions.online_count == 0


def test_logout_announces_offline_once_and_closes_after_the_reply(world: World) -> None:
    connection = world.connection()
    ask(world, connection, MessageType.LOGIN, user_id=7, username="carol")
    answer = ask(world, connection, MessageType.LOGOUT, rid=11)
    assert answer == Message(MessageType.REPLY, 11, {})
    assert connection.closing_reason == "closed after LOGOUT"
    assert connection.user_id is None
    world.dispatcher.connection_closed(connection, "closed after LOGOUT")
    assert world.offline == [(7, "carol")]


def test_logging_in_as_someone_else_takes_the_first_user_offline(world: World) -> None:
    connection = world.connection()
    ask(world, connection, MessageType.LOGIN, user_id=1, username="alice")
    ask(world, connection, MessageType.LOGIN, user_id=2, username="bob")
    assert world.offline == [(1, "alice")]
    assert not world.services.sessions.is_online(1)
    assert world.services.sessions.connection_for(2) is connection


def test_an_unauthenticated_close_announces_nothing(world: World) -> None:
    world.dispatcher.connection_closed(world.connection(), "peer closed the connection")
    assert world.offline == []


# -- worker pool -------------------------------------------------------------------------


def test_worker_pool_delivers_results_and_errors_through_call_soon() -> None:
    delivered: list[Callable[[], None]] = []
    pool = WorkerPool(2, 4, delivered.append)
    results: list[object] = []
    try:
        pool.submit(lambda: 6 * 7, lambda future: results.append(future.result()))
        pool.submit(lambda: 1 // 0, lambda future: results.append(type(future.exception())))
        deadline = time.monotonic() + 3
        while len(delivered) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert results == []  # nothing runs until the reactor runs the callbacks
        for callback in delivered:
            callback()
        assert sorted(results, key=str) == sorted([42, ZeroDivisionError], key=str)
    finally:
        pool.stop()
    with pytest.raises(WorkerPoolFull):
        pool.submit(lambda: 1, lambda future: None)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux")
def test_each_worker_pool_runs_its_jobs_at_its_own_priority() -> None:
    delivered: list[Callable[[], None]] = []
    seen: list[int] = []
    pools = [WorkerPool(1, 4, delivered.append, niceness=n) for n in (10, 19)]
    try:
        for pool in pools:
            pool.submit(
                lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()),
                lambda future: seen.append(future.result()),
            )
        deadline = time.monotonic() + 3
        while len(delivered) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        for callback in delivered:
            callback()
    finally:
        for pool in pools:
            pool.stop()
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert sorted(seen) == [max(base, 10), 19]


def test_worker_pool_rejects_a_silly_size() -> None:
    with pytest.raises(ValueError):
        WorkerPool(0, 1, lambda callback: None)
