"""Fuzzing every request handler of a real server, over the real encrypted wire.

One server process serves the whole module. A logged-in user ("alice", friend of
"bob", both in one room, with a pending request from "carol", an incoming message
and two uploads) sends every request opcode with (a) random params of every codec
type under the opcode's real keys and random ones, and (b) "near-valid" params: a
request that would succeed, with one field broken (wrong type, boundary number, huge,
empty, path-like, SQL-like or LIKE-wildcard string, dropped). Whatever arrives, the
server must answer each request exactly once with REPLY or a documented ERROR code
that is never `internal_error` (= an exception escaped a handler), and the connection
must keep working. Besides hypothesis' samples, a sweep puts every boundary value in
every field of every request, and batches of pipelined requests check that answers
from the worker pool are still one per request. Anonymous connections get the same
for PING, REGISTER and LOGIN and `not_authenticated` for the rest; LOGOUT, which
closes its connection, runs on connections of its own.

Whatever a random request really did (ended the friendship, accepted carol) is undone
before each opcode's turn (`World.repair`), so near-valid requests reach deep. At the
end the process is alive, its log holds no traceback, SQLite's integrity and foreign
key checks pass, and a normal login and message exchange still work.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import re
import secrets
import select
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.core.connection import Connection
from common.channel import SecureChannel
from common.config import ServerConfig
from common.crypto.certs import build_csr
from common.crypto.kem import KemKeyPair, SignedKemKey
from common.crypto.keys import generate_user_keys
from common.crypto.membership import GENESIS, EventKind, Policy, member_list_hash, sign_event
from common.errors import RequestError
from common.protocol.message import Message, encode_message
from common.protocol.opcodes import PUSHES, UNAUTHENTICATED_REQUESTS, MessageType
from common.room_numbers import random_room_number
from server.app import DATABASE_FILE
from server.handlers import HANDLERS
from tests.integration.conftest import REPO_ROOT, RunningServer, start_server
from tests.integration.helpers import Accounts, befriended_pair

WAIT = 10.0  # seconds for one answer on loopback: far more than any handler needs
#: Per opcode and strategy: 20 keeps the module well under 40 s; HYPOTHESIS_PROFILE=thorough
#: (1000 examples elsewhere) hunts with 200.
EXAMPLES = max(20, settings().max_examples // 5)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Failed logins are part of the fuzzing: the backoff (tested elsewhere) must not lock
#: the final "a normal login still works" check out.
#: Fuzzing one anonymous connection for long runs past the login deadline, which
#: tests/integration/test_hostile_network.py covers on its own.
SERVER_ENV = {
    "UCHAT_SERVER_LOGIN_MAX_FAILURES": "1000000",
    "UCHAT_SERVER_LOGIN_TIMEOUT": "3600",
}
PASSWORDS = {name: f"{name} secret 7" for name in ("alice", "bob", "carol", "dave")}
ANSWERS = (MessageType.REPLY, MessageType.ERROR)
RESOLVE = MessageType.RESOLVE_FRIEND_REQUEST


def documented_error_codes() -> frozenset[str]:
    """The codes `docs/protocol.md` §5 lists: an ERROR may carry no other."""
    text = (REPO_ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    section = text.split("## 5. Error codes", 1)[1]
    return frozenset(re.findall(r"`([a-z_]+)`", section))


ERROR_CODES = documented_error_codes()

# ---------------------------------------------------------------- a strict raw client


class WireClient:
    """A socket and a client SecureChannel that accounts for every message received.

    `problems` collects every breach of the answering rules: an answer to an id that
    was never sent or was already answered, a non-answer carrying a request id, or a
    request id 0 message that is not a push.
    """

    def __init__(self, server: RunningServer) -> None:
        self.sock = socket.create_connection(server.address, timeout=WAIT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.channel = SecureChannel.client(expected_fingerprint=server.fingerprint)
        self.pushes: list[Message] = []
        self.problems: list[str] = []
        self.closed = False
        self._ids = itertools.count(1)
        self._sent: set[int] = set()
        self._answers: dict[int, Message] = {}
        self._answered: set[int] = set()
        self.sock.sendall(self.channel.initiate())
        while not self.channel.established:
            self._receive()
        self.sock.sendall(self.channel.data_to_send())  # ClientFinished

    def send(self, kind: MessageType, params: dict[str, Any]) -> int:
        request_id = next(self._ids)
        self._sent.add(request_id)
        self.sock.sendall(self.channel.send(Message(kind, request_id, params)))
        return request_id

    def wait(self, request_id: int, what: str) -> Message:
        deadline = time.monotonic() + WAIT
        while request_id not in self._answers:
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer to {what} within {WAIT:g} s (a hang)")
            self._receive()
        return self._answers.pop(request_id)

    def call(self, kind: MessageType, params: dict[str, Any]) -> Message:
        return self.wait(self.send(kind, params), kind.name)

    def ok(self, kind: MessageType, params: dict[str, Any]) -> dict[str, Any]:
        """A request that must succeed (fixture setup)."""
        answer = self.call(kind, params)
        assert answer.type is MessageType.REPLY, f"{kind.name} failed: {answer.params}"
        return answer.params

    def closed_by_server(self) -> bool:
        """True once the server closes the connection within WAIT seconds."""
        deadline = time.monotonic() + WAIT
        while not self.closed and time.monotonic() < deadline:
            ready, _, _ = select.select([self.sock], [], [], deadline - time.monotonic())
            if ready:
                self._read()
        return self.closed

    def close(self) -> None:
        self.closed = True
        self.sock.close()

    def _receive(self) -> None:
        if not self._read():
            raise AssertionError("the server closed the connection")

    def _read(self) -> bool:
        """Read once and account for what arrived; False if the connection is closed."""
        if self.closed:
            return False
        try:
            data = self.sock.recv(256 * 1024)
        except ConnectionResetError:
            data = b""
        if not data:
            self.close()
            return False
        for message in self.channel.receive_data(data):
            self._account(message)
        return True

    def _account(self, message: Message) -> None:
        rid = message.request_id
        if rid == 0:
            if message.type not in PUSHES:
                self.problems.append(f"{message.type.name} sent with request id 0")
            self.pushes = [*self.pushes[-50:], message]
        elif message.type not in ANSWERS:
            self.problems.append(f"{message.type.name} sent with request id {rid}")
        elif rid not in self._sent or rid in self._answered:
            self.problems.append(f"unexpected or second answer to request {rid}")
        else:
            self._answered.add(rid)
            self._answers[rid] = message


def check_answer(what: str, answer: Message) -> None:
    """REPLY, or ERROR with a documented code that is not `internal_error`."""
    assert answer.type in ANSWERS
    if answer.type is MessageType.ERROR:
        code = answer.params.get("code")
        assert code != "internal_error", f"{what}: a handler raised (see the server log)"
        assert code in ERROR_CODES, f"{what}: undocumented error code {code!r}"
        assert type(answer.params.get("message")) is str


def exercise(
    client: WireClient, kind: MessageType, params: dict[str, Any], case: str = ""
) -> Message:
    """Send one request; check its single answer and that the connection still works."""
    what = f"{kind.name} {case}".strip()
    answer = client.call(kind, params)
    check_answer(what, answer)
    pong = client.call(MessageType.PING, {})
    assert pong.type is MessageType.REPLY and type(pong.params.get("time")) is int
    assert client.problems == [], what
    return answer


# ---------------------------------------------------------------- the fixture world


#: The fixture users' keys: they sign the room events valid params carry.
KEYS = {name: generate_user_keys() for name in PASSWORDS}


def room_event(name: str, room: int, kind: EventKind, subject: str, prev: bytes) -> bytes:
    return sign_event(
        KEYS[name].identity,
        room=str(room),
        kind=kind,
        actor=name,
        subject=subject,
        time_ms=int(time.time() * 1000),
        prev=prev,
    ).to_wire()


def create_event(name: str, room_name: str) -> bytes:
    return sign_event(
        KEYS[name].identity,
        room=str(random_room_number()),
        kind=EventKind.CREATE,
        actor=name,
        subject=name,
        time_ms=int(time.time() * 1000),
        prev=GENESIS,
        name=room_name,
        policy=Policy.OPEN,
    ).to_wire()


def registration_form(username: str, password: str) -> dict[str, Any]:
    """Valid REGISTER params with a real CSR for `username`."""
    email = f"{username}@example.test"
    csr = build_csr(username, email, KEYS.get(username) or generate_user_keys())
    return {
        "username": username,
        "password": password,
        "email": email,
        "sex": "other",
        "age": 30,
        "csr": csr,
    }


def login(server: RunningServer, name: str) -> WireClient:
    client = WireClient(server)
    client.ok(MessageType.LOGIN, {"username": name, "password": PASSWORDS[name]})
    return client


@dataclass
class World:
    """The server, alice's fuzzed session and what her valid requests refer to."""

    server: RunningServer
    bob: Connection
    room_id: int
    message_from_bob: str
    complete_data: bytes
    complete_id: str
    partial_data: bytes
    partial_id: str
    clients: list[WireClient] = field(default_factory=list)
    _alice: WireClient | None = None

    def __repr__(self) -> str:  # hypothesis prints it with every failing example
        return f"World(server port {self.server.port}, room {self.room_id})"

    @property
    def alice(self) -> WireClient:
        """Alice's live session: a new one (logged in) if the last one was closed."""
        if self._alice is None or self._alice.closed:
            self._alice = self.track(login(self.server, "alice"))
        return self._alice

    def track(self, client: WireClient) -> WireClient:
        self.clients.append(client)
        return client

    def repair(self) -> None:
        """Restore the relations earlier fuzzing may really have changed.

        A random request can be valid by chance: end the friendship with bob, accept
        carol's request, leave the room. Each opcode's fuzzing starts from the world
        the valid params describe, so its near-valid requests get as deep as they can.
        """
        alice = self.alice
        asked = alice.call(MessageType.ADD_FRIEND, {"username": "bob"})
        if asked.type is MessageType.REPLY or asked.params["code"] == "request_pending":
            with contextlib.suppress(RequestError):  # already accepted by asking back
                self.bob.request(RESOLVE, {"username": "alice", "decision": "accept"})
        lists = alice.ok(MessageType.CONTACT_LIST, {})
        if "carol" not in lists["friend_requests"]:
            alice.call(MessageType.DELETE_FRIEND, {"username": "carol"})
            carol = login(self.server, "carol")
            carol.call(RESOLVE, {"username": "alice", "decision": "reject"})
            carol.ok(MessageType.ADD_FRIEND, {"username": "alice"})
            carol.close()
            lists = alice.ok(MessageType.CONTACT_LIST, {})
        assert "carol" in lists["friend_requests"]
        assert "bob" in [friend["username"] for friend in lists["friends"]]
        assert self.room_id in [room["room_id"] for room in lists["rooms"]]

    def signed_params(self, actor: str, kind: EventKind, subject: str) -> dict[str, Any]:
        """`actor`'s event on the room's current head: valid but for the rules."""
        head = self.alice.ok(MessageType.ROOM_HEAD, {"room_id": self.room_id})["head"]
        event = room_event(actor, self.room_id, kind, subject, head)
        return {"room_id": self.room_id, "event": event}

    def next_chunk(self) -> dict[str, Any]:
        """The valid UPLOAD_CHUNK now: resume (or restart) the partial upload first."""
        begin = self.alice.ok(MessageType.UPLOAD_BEGIN, self.partial_begin())
        offset = begin["offset"]
        chunk = self.partial_data[offset : offset + 16]
        return {"attachment_id": self.partial_id, "offset": offset, "data": chunk}

    def partial_begin(self) -> dict[str, Any]:
        data = self.partial_data
        return {
            "attachment_id": self.partial_id,
            "size": len(data),
            "digest": hashlib.sha256(data).digest(),
        }


def upload(client: WireClient, data: bytes) -> str:
    attachment_id = secrets.token_hex(16)
    digest = hashlib.sha256(data).digest()
    begin = {"attachment_id": attachment_id, "size": len(data), "digest": digest}
    client.ok(MessageType.UPLOAD_BEGIN, begin)
    chunk = {"attachment_id": attachment_id, "offset": 0, "data": data}
    assert client.ok(MessageType.UPLOAD_CHUNK, chunk)["complete"] is True
    return attachment_id


def build_world(server: RunningServer, bob: Connection) -> World:
    """alice & bob friends in one room; carol asked alice; bob wrote to alice."""
    anonymous = WireClient(server)
    for name, password in PASSWORDS.items():
        anonymous.ok(MessageType.REGISTER, registration_form(name, password))
    anonymous.close()
    carol = login(server, "carol")
    carol.ok(MessageType.ADD_FRIEND, {"username": "alice"})
    carol.close()
    alice = login(server, "alice")
    bob.request(MessageType.LOGIN, {"username": "bob", "password": PASSWORDS["bob"]})
    alice.ok(MessageType.ADD_FRIEND, {"username": "bob"})
    bob.request(RESOLVE, {"username": "alice", "decision": "accept"})
    room_id = alice.ok(MessageType.CREATE_ROOM, {"event": create_event("alice", "fuzz room")})[
        "room_id"
    ]
    head = alice.ok(MessageType.ROOM_HEAD, {"room_id": room_id})["head"]
    join = room_event("bob", room_id, EventKind.JOIN, "bob", head)
    bob.request(MessageType.JOIN_ROOM, {"room_id": room_id, "event": join})
    message_id = secrets.token_hex(16)
    note = {"target_type": "user", "target": "alice", "time": 0, "envelope": b"x"}
    bob.request(MessageType.SEND_MESSAGE, {"message_id": message_id, **note})
    complete_data, partial_data = secrets.token_bytes(48), secrets.token_bytes(64)
    world = World(
        server=server,
        bob=bob,
        room_id=room_id,
        message_from_bob=message_id,
        complete_data=complete_data,
        complete_id=upload(alice, complete_data),
        partial_data=partial_data,
        partial_id=secrets.token_hex(16),
        _alice=alice,
    )
    world.track(alice)
    alice.ok(MessageType.UPLOAD_BEGIN, world.partial_begin())
    return world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    running = start_server(tmp_path_factory.mktemp("fuzz") / "server", SERVER_ENV)
    bob = Connection(
        running.host,
        running.port,
        on_push=lambda _c, _m: None,  # bob is online so pushes to him take the live path
        on_lost=lambda _c, _e: None,
        expected_fingerprint=running.fingerprint,
        timeout=WAIT,
    )
    try:
        bob.open()
        made = build_world(running, bob)
        yield made
        for client in made.clients:
            client.close()
    finally:
        bob.close()
        if running.is_alive():
            running.stop()


# ---------------------------------------------------------------- params: valid ones


def message_to_bob(world: World, token: str) -> dict[str, Any]:
    to_room = int(token[0], 16) % 2 == 1
    return {
        "message_id": token,
        "target_type": "room" if to_room else "user",
        "target": world.room_id if to_room else "bob",
        "time": 0,
        "envelope": b"sealed" * 8,
        "distributions": {},
        "member_hash": member_list_hash(str(world.room_id), ["alice", "bob"]),
        "attachments": [],
    }


ValidParams = Callable[[World, str], dict[str, Any]]

STRANGER_KEM_KEY = SignedKemKey.sign(
    generate_user_keys().identity, KemKeyPair.from_seed(bytes(32)), 0
).to_bytes()

#: Params alice could really send, per opcode; `token` is 32 fresh hex digits. They are
#: only ever sent with a field changed, so those that would change the fixture's
#: relations (DELETE_FRIEND bob, LEAVE_ROOM) do not; JOIN_ROOM's base is already done.
VALID: dict[MessageType, ValidParams] = {
    MessageType.PING: lambda w, t: {},
    MessageType.REGISTER: lambda w, t: registration_form(f"fz{t[:12]}", "fuzz secret 9"),
    MessageType.LOGIN: lambda w, t: {"username": "alice", "password": PASSWORDS["alice"]},
    MessageType.LOGOUT: lambda w, t: {},
    MessageType.CONTACT_LIST: lambda w, t: {"requests_after": ""},
    MessageType.SEARCH_USERS: lambda w, t: {"query": "bo", "after": "", "limit": 5},
    MessageType.ADD_FRIEND: lambda w, t: {"username": "dave"},
    RESOLVE: lambda w, t: {"username": "carol", "decision": "later"},
    MessageType.DELETE_FRIEND: lambda w, t: {"username": "bob"},
    MessageType.CERTIFICATE: lambda w, t: {"username": "bob"},
    # Signed by a stranger's identity: only ever sent mutated, and refused either way.
    MessageType.PUBLISH_KEM_KEY: lambda w, t: {"kem_key": STRANGER_KEM_KEY},
    MessageType.SEND_MESSAGE: message_to_bob,
    MessageType.ACK_DELIVERY: lambda w, t: {"message_ids": [w.message_from_bob]},
    MessageType.CREATE_ROOM: lambda w, t: {"event": create_event("alice", f"room {t[:8]}")},
    MessageType.JOIN_ROOM: lambda w, t: w.signed_params("alice", EventKind.JOIN, "alice"),
    # The owner cannot leave while bob is in: refused even when sent as it is.
    MessageType.LEAVE_ROOM: lambda w, t: w.signed_params("alice", EventKind.LEAVE, "alice"),
    MessageType.ROOM_MEMBERS: lambda w, t: {"room_id": w.room_id},
    MessageType.ROOM_CERTIFICATES: lambda w, t: {"room_id": w.room_id, "after": 0},
    MessageType.ROOM_LOG: lambda w, t: {"room_id": w.room_id, "after": 0},
    MessageType.ROOM_HEAD: lambda w, t: {"room_id": w.room_id},
    MessageType.ROOM_ADMIN: lambda w, t: w.signed_params("alice", EventKind.REMOVE, "bob"),
    MessageType.RESOLVE_JOIN: lambda w, t: {
        "room_id": w.room_id,
        "username": "dave",
        "decision": "approve",
        "event": create_event("dave", "not a join"),
    },
    MessageType.ROOM_JOIN_REQUESTS: lambda w, t: {"room_id": w.room_id},
    MessageType.UPLOAD_BEGIN: lambda w, t: w.partial_begin(),
    MessageType.UPLOAD_CHUNK: lambda w, t: w.next_chunk(),
    MessageType.DOWNLOAD_CHUNK: lambda w, t: {
        "attachment_id": w.complete_id,
        "offset": 0,
        "length": len(w.complete_data),
    },
    MessageType.KT_TREE_HEAD: lambda w, t: {},
    MessageType.KT_CONSISTENCY: lambda w, t: {"old_size": 1, "new_size": 2},
    MessageType.KT_USER_ENTRIES: lambda w, t: {"after": -1},
    MessageType.KT_RANGE: lambda w, t: {"start": 0, "count": 4},
    MessageType.LINK_OPEN: lambda w, t: {"username": "alice"},
    MessageType.LINK_JOIN: lambda w, t: {"code": t[:8]},
    MessageType.LINK_SEND: lambda w, t: {"data": b"\x01" + bytes.fromhex(t)},
    MessageType.LINK_CLOSE: lambda w, t: {"reason": "cancelled"},
}

# ---------------------------------------------------------------- params: hostile ones

HOSTILE_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "x" * 10_240,
    "é" * 5_120,
    "../../x",
    "..\\..\\x",
    "/etc/passwd",
    "' OR 1=1 --",
    "'; DROP TABLE users; --",
    "%",
    "_",
    "%_",
    "\\",
    "\u202e\u200b",
    "😀",
    "-1",
    "0",
    "1e309",
    "²",  # str.isdigit() says yes, int() says no
    "١٢",  # Arabic-Indic digits
    "9" * 5_000,  # beyond int()'s 4300-digit limit
    "0" * 32,  # a valid hex id nobody generated
    "F" * 32,  # hex, but not lowercase
    "alice",
    "bob",
    "carol",
    "dave",
    "accept",
    "user",
    "room",
)
HOSTILE_INTS = (-1, 0, 1, 2**31, 2**32, 2**53 + 1, INT64_MAX, INT64_MIN)
HOSTILE_FLOATS = (math.nan, math.inf, -math.inf, -0.0, 1e308)
HOSTILE_BYTES = (b"", b"\x00" * 32, b"x" * 10_240)
HOSTILE_CONTAINERS: tuple[Any, ...] = ([], {}, [None], {"": b""}, [[[[]]]], ["0" * 32] * 3)
#: Every boundary value, each tried in every field by the sweep below.
CURATED: tuple[Any, ...] = (
    None,
    True,
    False,
    *HOSTILE_INTS,
    *HOSTILE_FLOATS,
    *HOSTILE_STRINGS,
    *HOSTILE_BYTES,
    *HOSTILE_CONTAINERS,
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(INT64_MIN, INT64_MAX),
    st.sampled_from(HOSTILE_INTS),
    st.floats(),
    st.sampled_from(HOSTILE_FLOATS),
    st.text(max_size=40),
    st.sampled_from(HOSTILE_STRINGS),
    st.binary(max_size=64),
    st.sampled_from(HOSTILE_BYTES),
)
keys = st.text(max_size=12) | st.sampled_from(HOSTILE_STRINGS[:16])
codec_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=10,
)


#: Every request opcode's parameter names, as `docs/protocol.md` §4 defines them.
PARAM_KEYS: dict[MessageType, tuple[str, ...]] = {
    MessageType.PING: (),
    MessageType.REGISTER: ("username", "password", "email", "sex", "age", "csr"),
    MessageType.LOGIN: ("username", "password"),
    MessageType.LOGOUT: (),
    MessageType.CONTACT_LIST: ("requests_after",),
    MessageType.SEARCH_USERS: ("query", "after", "limit"),
    MessageType.ADD_FRIEND: ("username",),
    RESOLVE: ("username", "decision"),
    MessageType.DELETE_FRIEND: ("username",),
    MessageType.CERTIFICATE: ("username",),
    MessageType.PUBLISH_KEM_KEY: ("kem_key",),
    MessageType.SEND_MESSAGE: (
        "message_id",
        "target_type",
        "target",
        "time",
        "envelope",
        "distributions",
        "member_hash",
        "attachments",
    ),
    MessageType.ACK_DELIVERY: ("message_ids",),
    MessageType.CREATE_ROOM: ("event",),
    MessageType.JOIN_ROOM: ("room_id", "event"),
    MessageType.LEAVE_ROOM: ("room_id", "event"),
    MessageType.ROOM_MEMBERS: ("room_id",),
    MessageType.ROOM_CERTIFICATES: ("room_id", "after"),
    MessageType.ROOM_LOG: ("room_id", "after"),
    MessageType.ROOM_HEAD: ("room_id",),
    MessageType.ROOM_ADMIN: ("room_id", "event"),
    MessageType.RESOLVE_JOIN: ("room_id", "username", "decision", "event"),
    MessageType.ROOM_JOIN_REQUESTS: ("room_id",),
    MessageType.UPLOAD_BEGIN: ("attachment_id", "size", "digest"),
    MessageType.UPLOAD_CHUNK: ("attachment_id", "offset", "data"),
    MessageType.DOWNLOAD_CHUNK: ("attachment_id", "offset", "length"),
    MessageType.KT_TREE_HEAD: (),
    MessageType.KT_CONSISTENCY: ("old_size", "new_size"),
    MessageType.KT_USER_ENTRIES: ("after",),
    MessageType.KT_RANGE: ("start", "count"),
    MessageType.LINK_OPEN: ("username",),
    MessageType.LINK_JOIN: ("code",),
    MessageType.LINK_SEND: ("data",),
    MessageType.LINK_CLOSE: ("reason",),
}


def random_params(kind: MessageType) -> st.SearchStrategy[dict[str, Any]]:
    """Any subset of the real keys and a few random ones, every value any codec type."""
    real = st.fixed_dictionaries({}, optional={key: codec_values for key in PARAM_KEYS[kind]})
    extra = st.dictionaries(keys, codec_values, max_size=3)
    return st.builds(lambda more, known: {**more, **known}, extra, real)


def differs(value: Any, original: Any) -> bool:
    return type(value) is not type(original) or value != original


def hostile_unlike(original: Any) -> st.SearchStrategy[Any]:
    """A boundary value half of the time, any codec value otherwise; never `original`."""
    hostile = st.sampled_from(CURATED) | codec_values
    return hostile.filter(lambda value: differs(value, original))


@st.composite
def mutated_container(draw: st.DrawFn, original: Any) -> Any:
    """A dict or list value with one entry replaced, or one hostile entry added."""
    if isinstance(original, dict):
        changed = dict(original)
        replace = draw(st.booleans())
        if changed and replace:
            key = draw(st.sampled_from(sorted(changed)))
            changed[key] = draw(hostile_unlike(changed[key]))
        else:
            changed[draw(keys.filter(lambda key: key not in original))] = draw(codec_values)
        return changed
    items = list(original)
    replace = draw(st.booleans())
    if items and replace:
        index = draw(st.integers(0, len(items) - 1))
        items[index] = draw(hostile_unlike(items[index]))
    else:
        items.append(draw(codec_values))
    return items


@st.composite
def near_valid(draw: st.DrawFn, valid: dict[str, Any]) -> dict[str, Any]:
    """`valid` with exactly one field broken (or, without fields, one random field)."""
    if not valid:
        return {draw(keys): draw(codec_values)}
    changed = dict(valid)
    key = draw(st.sampled_from(sorted(valid)))
    how = draw(st.sampled_from(("replace", "drop", "inside")))
    if how == "drop":
        del changed[key]
    elif how == "inside" and isinstance(valid[key], (dict, list)):
        changed[key] = draw(mutated_container(valid[key]))
    else:
        changed[key] = draw(hostile_unlike(valid[key]))
    return changed


# ---------------------------------------------------------------- the fuzzing

HANDLED: list[MessageType] = [MessageType(module.OPCODE) for module in HANDLERS]
#: LOGOUT closes the connection, so it has a test (and connections) of its own.
LOGGED_IN: list[MessageType] = [kind for kind in HANDLED if kind is not MessageType.LOGOUT]
ANONYMOUS: list[MessageType] = sorted(UNAUTHENTICATED_REQUESTS)
STRATEGIES = ("random", "near_valid")
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # the server's state moves on: a stored example would not replay
    # `repaired` runs once per opcode, not per example: on purpose (see World.repair)
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


def fuzz_cases(kinds: list[MessageType]) -> list[Any]:
    return [
        pytest.param(kind, strategy, id=f"{kind.name}-{strategy}")
        for kind in kinds
        for strategy in STRATEGIES
    ]


@st.composite
def request_params(draw: st.DrawFn, world: World, kind: MessageType, strategy: str) -> Any:
    """`random` or `near_valid` params for `kind`; near-valid ones start from fresh
    valid params (new ids and names), so mutating a field is the only thing wrong."""
    if strategy == "random":
        return draw(random_params(kind))
    valid = VALID[kind](world, secrets.token_hex(16))
    assert sorted(valid) == sorted(PARAM_KEYS[kind]), "the valid params must be complete"
    return draw(near_valid(valid))


@st.composite
def any_request(draw: st.DrawFn, world: World) -> tuple[MessageType, dict[str, Any]]:
    kind = draw(st.sampled_from(LOGGED_IN))
    return kind, draw(request_params(world, kind, draw(st.sampled_from(STRATEGIES))))


def test_every_handled_request_is_fuzzed() -> None:
    assert set(HANDLED) == set(VALID) == set(PARAM_KEYS)
    assert set(LOGGED_IN) | {MessageType.LOGOUT} == set(HANDLED)
    assert {"internal_error", "bad_request", "not_authenticated"} <= ERROR_CODES


@pytest.fixture
def repaired(world: World) -> World:
    world.repair()
    return world


DROP = object()  # "leave the field out"
Mutation = Callable[[dict[str, Any]], "dict[str, Any] | None"]


def boundary_mutations(template: dict[str, Any]) -> Iterator[tuple[str, Mutation]]:
    """(label, mutation): each field dropped or set to each boundary value in turn, and
    each boundary value inside dict and list fields; an extra field if there is none.

    A mutation applies to fresh valid params (new message ids, room names, accounts)
    and returns None when the field already holds that value.
    """
    for name in sorted(template) or ["extra"]:
        for value in (DROP, *CURATED):
            yield f"{name}={value!r:.40}", partial(_replaced, name, value)
        inner = template.get(name)
        if isinstance(inner, dict | list):
            for value in CURATED:
                yield f"{name}[*]={value!r:.40}", partial(_replaced_inside, name, value)
                if isinstance(inner, dict) and type(value) is str:
                    yield f"{name}[{value!r:.40}]", partial(_key_added, name, value)


def _replaced(name: str, value: Any, valid: dict[str, Any]) -> dict[str, Any] | None:
    changed = dict(valid)
    if value is DROP:
        changed.pop(name, None)
    elif differs(value, valid.get(name, DROP)):
        changed[name] = value
    else:
        return None
    return changed


def _replaced_inside(name: str, value: Any, valid: dict[str, Any]) -> dict[str, Any]:
    """Every value of a dict field, or one more element of a list field."""
    inner = valid[name]
    inside = dict.fromkeys(inner, value) if isinstance(inner, dict) else [*inner, value]
    return {**valid, name: inside}


def _key_added(name: str, key: str, valid: dict[str, Any]) -> dict[str, Any]:
    return {**valid, name: {**valid[name], key: b"x"}}


@pytest.mark.parametrize("kind", LOGGED_IN, ids=lambda kind: kind.name)
def test_every_field_survives_every_boundary_value(repaired: World, kind: MessageType) -> None:
    """The systematic half: every field of every request x every boundary value."""
    template = VALID[kind](repaired, secrets.token_hex(16))
    for case, mutate in boundary_mutations(template):
        params = mutate(VALID[kind](repaired, secrets.token_hex(16)))
        if params is not None:
            exercise(repaired.alice, kind, params, case)


@pytest.mark.parametrize(("kind", "strategy"), fuzz_cases(LOGGED_IN))
@FUZZ_SETTINGS
@given(data=st.data())
def test_a_logged_in_client_cannot_break_a_handler(
    repaired: World, kind: MessageType, strategy: str, data: st.DataObject
) -> None:
    params = data.draw(request_params(repaired, kind, strategy), label="params")
    exercise(repaired.alice, kind, params)


@FUZZ_SETTINGS
@given(data=st.data())
def test_pipelined_requests_each_get_exactly_one_answer(
    repaired: World, data: st.DataObject
) -> None:
    """Many requests in flight at once, some answered later from the worker pool."""
    batch = data.draw(st.lists(any_request(repaired), min_size=2, max_size=8), label="batch")
    alice = repaired.alice
    sent = [(kind, alice.send(kind, params)) for kind, params in batch]
    for kind, request_id in sent:
        check_answer(kind.name, alice.wait(request_id, kind.name))
    assert alice.call(MessageType.PING, {}).type is MessageType.REPLY
    assert alice.problems == []


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(FUZZ_SETTINGS, max_examples=10)
@given(data=st.data())
def test_logout_with_any_params_answers_then_closes(
    world: World, strategy: str, data: st.DataObject
) -> None:
    dave = world.track(login(world.server, "dave"))
    params = data.draw(request_params(world, MessageType.LOGOUT, strategy), label="params")
    answer = dave.call(MessageType.LOGOUT, params)
    assert (answer.type, answer.params) == (MessageType.REPLY, {})
    assert dave.closed_by_server()
    assert dave.problems == []


@pytest.fixture(scope="module")
def anonymous(world: World) -> WireClient:
    return world.track(WireClient(world.server))


#: Records larger than this close an anonymous connection (docs/protocol.md §1).
PRELOGIN_RECORD = ServerConfig().prelogin_max_frame - 64


def too_big_before_login(world: World, kind: MessageType, params: dict[str, Any]) -> bool:
    """True if `params` make a record over the pre-login cap; then check, on a fresh
    connection, that the server closes it for that record and serves on."""
    if len(encode_message(Message(kind, 1, params))) <= PRELOGIN_RECORD:
        return False
    probe = WireClient(world.server)
    probe.sock.sendall(probe.channel.send(Message(kind, 1, params)))
    probe.sock.settimeout(WAIT)
    with contextlib.suppress(ConnectionResetError):
        while probe.sock.recv(65536):
            continue
    probe.sock.close()
    # Closed at once: kept open, these anonymous probes (one per oversized example, more
    # as opcodes are added) would reach the server's anonymous-per-address cap.
    fresh = WireClient(world.server)
    try:
        assert fresh.call(MessageType.PING, {}).type is MessageType.REPLY
        assert fresh.problems == []
    finally:
        fresh.close()
    return True


@pytest.mark.parametrize(("kind", "strategy"), fuzz_cases(ANONYMOUS))
@FUZZ_SETTINGS
@given(data=st.data())
def test_an_anonymous_client_cannot_break_a_handler(
    world: World, anonymous: WireClient, kind: MessageType, strategy: str, data: st.DataObject
) -> None:
    params = data.draw(request_params(world, kind, strategy), label="params")
    if too_big_before_login(world, kind, params):
        return
    answer = exercise(anonymous, kind, params)
    if kind is MessageType.LOGIN:  # no fuzzed login may succeed: every password is wrong
        assert answer.type is MessageType.ERROR


@pytest.mark.parametrize("kind", [kind for kind in HANDLED if kind not in ANONYMOUS])
@settings(FUZZ_SETTINGS, max_examples=5)
@given(data=st.data())
def test_an_anonymous_client_is_refused_everything_else(
    world: World, anonymous: WireClient, kind: MessageType, data: st.DataObject
) -> None:
    params = data.draw(random_params(kind), label="params")
    if too_big_before_login(world, kind, params):
        return
    answer = exercise(anonymous, kind, params)
    assert answer.params.get("code") == "not_authenticated"


# ---------------------------------------------------------------- afterwards


def integrity_problems(database: Path) -> list[tuple[Any, ...]]:
    """What SQLite's own checks report, read-only beside the running server (WAL)."""
    connection = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    try:
        integrity = connection.execute("PRAGMA integrity_check").fetchall()
        foreign_keys = connection.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        connection.close()
    return [row for row in integrity if row != ("ok",)] + foreign_keys


def test_afterwards_the_server_and_its_database_are_intact(world: World, tmp_path: Path) -> None:
    """Runs last in this module: the survivor checks after all the fuzzing above."""
    server = world.server
    assert server.is_alive()
    assert integrity_problems(server.data_dir / DATABASE_FILE) == []
    assert all(client.problems == [] for client in world.clients)
    again = world.track(login(server, "alice"))
    lists = again.ok(MessageType.CONTACT_LIST, {})
    assert {"friends", "rooms", "friend_requests"} <= set(lists)
    accounts = Accounts(tmp_path)
    try:
        sender, receiver = befriended_pair(server, accounts)
        sent = sender.client.send_text(receiver.name, "still working after the fuzzing")
        (received,) = receiver.events.wait_messages(1)
        assert (received.message_id, received.text) == (sent.message_id, sent.text)
    finally:
        accounts.close_all()
    log = server.log_text()
    assert "Traceback" not in log, log[-4000:]
    assert "second answer" not in log
    assert integrity_problems(server.data_dir / DATABASE_FILE) == []
