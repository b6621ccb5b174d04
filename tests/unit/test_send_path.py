"""The send path's shortcuts give exactly what the long way gives.

- `DeliveryPushes`: a room push encoded once (or per member with a distribution) is
  byte for byte `encode_message` of the same push;
- `time_ordered_id`: UUIDv7 layout, 32 lowercase hex, ordered by time;
- `session_cache`: a write to `friends` or `room_user`, by any code, invalidates it;
- `TurnBatch`: one conversation upsert per turn;
- `Connection`: everything queued in a turn leaves as one record.
"""

from __future__ import annotations

import socket
import types
import uuid
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.core.binding import bind_chat, sealed_chat
from client.core.bodies import text_body
from common.protocol import codec
from common.protocol.ids import time_ordered_id
from common.protocol.message import Message, decode_messages, encode_message, push
from common.protocol.opcodes import MessageType
from server.handlers._wire import (
    DeliveryPushes,
    delivery,
    encode_new_message,
    encode_new_messages,
)
from server.net.connection import MAX_BATCH_BYTES, Connection
from server.session_cache import friend_named, room_members
from server.storage import conversations, friends, messages, rooms, users
from server.storage.database import Database
from server.turn import TurnBatch


@pytest.fixture
def db(any_db: Database) -> Database:
    """On SQLite and on PostgreSQL (tests/backends.py)."""
    return any_db


def add_user(db: Database, name: str) -> int:
    return users.create_user(
        db,
        username=name,
        password_hash="x",
        email=f"{name}@example.org",
        sex="other",
        age=30,
        certificate=b"cert",
        now=1,
    )


def room_item(room_id: int = 42) -> messages.Delivery:
    return messages.Delivery(0, "1" * 32, 1, "alice", messages.ROOM, room_id, 5, b"", ["a" * 32])


@given(
    st.binary(max_size=300),
    st.lists(st.tuples(st.text(min_size=1, max_size=8), st.none() | st.binary(max_size=64))),
)
@settings(max_examples=100, deadline=None)
def test_room_pushes_encoded_once_equal_encode_message(
    envelope: bytes, recipients: list[tuple[str, bytes | None]]
) -> None:
    item = messages.Delivery(**{**room_item().__dict__, "envelope": envelope})
    pushes = DeliveryPushes(item)
    for name, distribution in recipients:
        full = messages.Delivery(**{**item.__dict__, "distribution": distribution})
        expected = encode_message(
            push(MessageType.NEW_MESSAGE, {"messages": [delivery(full, name)]})
        )
        assert pushes.body(name, distribution) == expected


def test_a_room_push_without_a_distribution_is_encoded_once() -> None:
    pushes = DeliveryPushes(messages.Delivery(**{**room_item().__dict__, "envelope": b"e"}))
    assert pushes.body("bob") is pushes.body("carol")


DELIVERIES = st.builds(
    messages.Delivery,
    st.just(0),
    st.text(max_size=40),
    st.integers(min_value=1, max_value=2**40),
    st.text(max_size=40),
    st.sampled_from([messages.USER, messages.ROOM]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.just(b""),
    st.lists(st.text(max_size=40), max_size=5),
)


@given(DELIVERIES, st.text(max_size=40), st.binary(max_size=600), st.none() | st.binary())
@settings(max_examples=200, deadline=None)
def test_the_direct_encoder_equals_encode_message(
    item: messages.Delivery, recipient: str, envelope: bytes, distribution: bytes | None
) -> None:
    full = messages.Delivery(**{**item.__dict__, "envelope": envelope})
    with_distribution = messages.Delivery(**{**full.__dict__, "distribution": distribution})
    expected = encode_message(
        push(MessageType.NEW_MESSAGE, {"messages": [delivery(with_distribution, recipient)]})
    )
    assert encode_new_message(full, recipient, distribution) == expected


@given(
    st.lists(
        st.tuples(DELIVERIES, st.binary(max_size=300), st.none() | st.binary(max_size=80)),
        max_size=6,
    ),
    st.text(max_size=40),
)
@settings(max_examples=150, deadline=None)
def test_the_batch_encoder_equals_encode_message(
    batch: list[tuple[messages.Delivery, bytes, bytes | None]], recipient: str
) -> None:
    """A catch-up or backlog push of several deliveries, each with its own distribution."""
    items = [
        messages.Delivery(**{**item.__dict__, "envelope": envelope, "distribution": state})
        for item, envelope, state in batch
    ]
    expected = encode_message(
        push(MessageType.NEW_MESSAGE, {"messages": [delivery(d, recipient) for d in items]})
    )
    assert encode_new_messages(items, recipient) == expected


def test_direct_pushes_name_the_recipient() -> None:
    item = messages.Delivery(0, "1" * 32, 1, "alice", messages.USER, 2, 5, b"e" * 40, [])
    (message,) = decode_messages(DeliveryPushes(item).body("bob"))
    assert message.params["messages"][0]["target"] == "bob"
    assert message.params["messages"][0]["envelope"] == b"e" * 40


def test_time_ordered_ids_follow_the_uuid7_layout() -> None:
    fixed = time_ordered_id(lambda: 0x0123456789AB, lambda n: b"\xff" * n)
    parsed = uuid.UUID(hex=fixed)
    assert fixed == fixed.lower() and len(fixed) == 32
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert fixed.startswith("0123456789ab7")
    ids = [time_ordered_id(partial(int, 1_700_000_000_000 + t)) for t in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50


def test_the_session_cache_follows_friendship_and_membership_writes(db: Database) -> None:
    alice, bob, carol = add_user(db, "alice"), add_user(db, "bob"), add_user(db, "carol")
    connection: Any = types.SimpleNamespace(session_cache=None)
    assert friend_named(connection, db, alice, "Bob") is None
    friends.add_request(db, alice, bob, 2)
    friends.accept_request(db, alice, bob, 3)
    assert friend_named(connection, db, alice, "Bob") == ("bob", bob)
    assert friend_named(connection, db, bob, "alice") == ("alice", alice)  # another user
    db.execute("DELETE FROM friends")  # any writer, not only the storage functions
    assert friend_named(connection, db, bob, "alice") is None

    room = rooms.create_room(db, "r", alice, 1)
    rooms.add_member(db, room, alice, 1)
    assert room_members(connection, db, alice, room) == {"alice": alice}
    rooms.add_member(db, room, carol, 2)
    assert room_members(connection, db, alice, room) == {"alice": alice, "carol": carol}
    rooms.remove_member(db, room, carol)
    assert room_members(connection, db, alice, room) == {"alice": alice}
    assert room_members(connection, db, alice, 999) == {}


class _Live:
    is_open = True

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, message: Message) -> None:
        self.sent.append(message)


def test_a_turn_touches_each_conversation_once_with_its_newest_time(db: Database) -> None:
    alice, bob = add_user(db, "alice"), add_user(db, "bob")
    turn = TurnBatch()
    heard: list[object] = []
    for time in (10, 30, 20):
        envelope = messages.NewEnvelope(
            time_ordered_id(), alice, messages.USER, bob, time, b"e", {}
        )
        turn.store(envelope, heard.append)
    sessions = types.SimpleNamespace(spans_nodes=False)
    pending_before = turn.pending
    assert turn.finish(db, sessions) == [conversations.user_pair_key(alice, bob)]
    assert pending_before and not turn.pending and len(heard) == 3
    key = conversations.user_pair_key(alice, bob)
    assert conversations.last_message_times(db, [key]) == {key: 30}


@pytest.mark.parametrize("spans_nodes", [False, True], ids=["one-node", "cluster"])
def test_a_turns_acknowledgements_move_the_cursors_together_at_its_end(
    db: Database, spans_nodes: bool
) -> None:
    """ACK_DELIVERY only notes its ids; the cursors move in `finish`, which the reactor
    runs inside the turn's transaction, before any reply of the turn is written. A
    cluster node gathers them too (its cursors move only over acknowledged rows)."""
    alice, bob, carol = (add_user(db, name) for name in ("alice", "bob", "carol"))
    room = rooms.create_room(db, "r", alice, 1)
    for member in (alice, bob, carol):
        rooms.add_member(db, room, member, 1)
    messages.sync_room_cursors(db, room)
    ids = [time_ordered_id() for _ in range(3)]
    for message_id in ids:
        messages.store_message(
            db,
            message_id=message_id,
            sender_id=alice,
            target_type=messages.ROOM,
            target_id=room,
            time=5,
            envelope=b"e",
        )
    turn = TurnBatch()
    turn.acknowledge(bob, ids[:2])
    turn.acknowledge(carol, ids)
    turn.acknowledge(carol, [])
    pending_before = turn.pending
    assert len(messages.undelivered(db, bob)) == 3  # nothing moved yet
    turn.finish(db, types.SimpleNamespace(spans_nodes=spans_nodes))
    assert pending_before and not turn.pending
    assert [d.message_id for d in messages.undelivered(db, bob)] == ids[2:]
    assert messages.undelivered(db, carol) == []


class _CountingChannel:
    established = True

    def __init__(self) -> None:
        self.records: list[list[bytes]] = []

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
        self.records.append(list(bodies))
        return b"R" * 16


class _Host:
    def output_queued(self, connection: Connection) -> None: ...

    def release(self, connection: Connection, reason: str) -> None: ...

    def stop_reading(self, connection: Connection) -> None: ...

    def authenticated(self, connection: Connection) -> None: ...

    def hold_anonymous(self, connection: Connection) -> None: ...


def test_a_turns_messages_leave_in_one_record_split_only_past_the_cap() -> None:
    left, right = socket.socketpair()
    try:
        channel = _CountingChannel()
        connection = Connection(left, channel, ("127.0.0.1", 1), _Host(), 0.0)
        for n in range(5):
            connection.send(Message(MessageType.REPLY, n + 1, {}))
        assert connection.pending_output > 0 and channel.records == []
        connection.write_pending()
        assert len(channel.records) == 1 and len(channel.records[0]) == 5
        big = b"x" * (MAX_BATCH_BYTES // 2)
        for n in range(3):
            connection.send(Message(MessageType.REPLY, n + 1, {"blob": big}))
        connection.write_pending()
        assert [len(record) for record in channel.records[1:]] == [1, 1, 1]
    finally:
        left.close()
        right.close()


# -- the client's side --------------------------------------------------------------------


@given(
    st.text(max_size=200),
    st.integers(min_value=8, max_value=72),
    st.sampled_from([("user", "bob"), ("room", "42")]),
)
@settings(max_examples=100, deadline=None)
def test_bind_chat_appends_exactly_what_the_long_way_gives(
    text: str, size: int, chat: tuple[Any, str]
) -> None:
    body = text_body(text, size, "#112233")
    long_way = codec.encode({**codec.decode(body), "chat": sealed_chat(*chat)})
    assert bind_chat(body, *chat) == long_way


def test_bind_chat_replaces_a_chat_the_body_already_names() -> None:
    body = codec.encode({"kind": "text", "text": "hi", "chat": ["room", 1]})
    assert codec.decode(bind_chat(body, "user", "bob")) == {
        "kind": "text",
        "text": "hi",
        "chat": ["user", "bob"],
    }


@pytest.mark.parametrize("body", [b"", codec.encode(["not", "a dict"]), codec.encode({}) + b"x"])
def test_bind_chat_refuses_what_is_not_one_codec_dict(body: bytes) -> None:
    with pytest.raises(TypeError):
        bind_chat(body, "user", "bob")
