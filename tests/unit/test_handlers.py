"""Request handlers driven directly, with a recording fake of the dispatcher's Context.

The real dispatcher, sessions and sockets are exercised by the integration tests; here
each handler runs against a real SQLite database in tmp_path, and the fake records
replies, errors, pushes and session changes in one ordered event log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from common.config import ServerConfig
from common.crypto import merkle
from common.crypto.certs import ServerIdentity, build_csr, load_user_certificate
from common.crypto.distribution import DISTRIBUTION_SIZE
from common.crypto.keys import UserKeys, generate_user_keys
from common.crypto.membership import (
    GENESIS,
    EventKind,
    MembershipEvent,
    Policy,
    approve,
    member_list_hash,
    replay,
    sign_event,
)
from common.crypto.passwords import verify_password
from common.crypto.room_log import LegacyGenesis, replay_log
from common.errors import RequestError, ValidationError
from common.protocol.message import Message, decode_message
from common.protocol.opcodes import PUSHES, UNAUTHENTICATED_REQUESTS, MessageType
from common.room_numbers import random_room_number
from server import presence, quotas
from server.handlers import (
    HANDLERS,
    _backlog,
    ack_delivery,
    add_friend,
    certificate,
    contact_list,
    create_room,
    delete_friend,
    download_chunk,
    join_room,
    kt_consistency,
    kt_range,
    kt_tree_head,
    kt_user_entries,
    leave_room,
    login,
    logout,
    ping,
    register,
    resolve_friend_request,
    resolve_join,
    room_admin,
    room_certificates,
    room_head,
    room_join_requests,
    room_members,
    search_users,
    send_message,
    upload_begin,
    upload_chunk,
)
from server.handlers import room_log as room_log_handler
from server.handlers._backlog import BacklogCursors
from server.hash_queue import HashQueue
from server.quotas import InboxBounds
from server.storage import attachments, login_attempts, messages, room_log, users
from server.storage import rooms as rooms_module
from server.storage.database import Database
from server.transparency import TransparencyLog
from server.turn import TurnBatch
from tests.backends import Backend

PASSWORD = "correct horse 1"
CA = ServerIdentity.create()


# -- the fake server around the handlers -----------------------------------------------


@dataclass
class FakeConnection:
    """What broadcast.send_to_users needs from a live connection."""

    server: FakeServer
    user_id: int
    is_open: bool = True
    channel: object = None

    def send(self, message: Message) -> None:
        self.server.events.append(("push", self.user_id, message.type, message.params))

    def send_encoded(self, body: bytes) -> None:
        self.send(decode_message(body))


@dataclass
class FakeSessions:
    server: FakeServer
    spans_nodes = False  # one node

    def is_online(self, user_id: int) -> bool:
        return user_id in self.server.online

    def connection_for(self, user_id: int) -> FakeConnection | None:
        return FakeConnection(self.server, user_id) if user_id in self.server.online else None


@dataclass
class FakeServer:
    """Plays `Services` (db, sessions, config, identity, data_dir, clock) for the fakes."""

    db: Database
    config: ServerConfig
    data_dir: Path
    identity: ServerIdentity = CA
    time: int = 1_700_000_000_000
    online: dict[int, str] = field(default_factory=dict)
    live: dict[int, Any] = field(default_factory=dict)  # user id -> its session's connection
    events: list[tuple[Any, ...]] = field(default_factory=list)
    deferred: list[Callable[[], None]] | None = None
    #: For each job handed to the "workers": True if it went to the demoted pool.
    demoted: list[bool] = field(default_factory=list)
    hashes: HashQueue = field(default_factory=HashQueue)
    turn: TurnBatch = field(default_factory=TurnBatch)
    inbox_bounds: InboxBounds = field(default_factory=InboxBounds)
    backlog: BacklogCursors = field(default_factory=BacklogCursors)
    keys: dict[str, UserKeys] = field(default_factory=dict)  # identity keys, for signing

    def __post_init__(self) -> None:
        self.sessions = FakeSessions(self)

    def end_turn(self) -> None:
        """What the reactor does before it commits a turn (`server.turn`)."""
        self.turn.finish(self.db, self.sessions)

    def clock(self) -> int:
        return self.time

    @property
    def transparency(self) -> TransparencyLog:
        return TransparencyLog(self.db, self.identity, self.clock)

    def run_deferred(self) -> None:
        jobs, self.deferred = self.deferred or [], []
        for job in jobs:
            job()

    def pushes(self, user_id: int | None = None, kind: MessageType | None = None) -> list[Any]:
        return [
            params
            for event in self.events
            if event[0] == "push"
            and (user_id is None or event[1] == user_id)
            and (kind is None or event[2] == kind)
            for params in [event[3]]
        ]


class FakeContext:
    """The subset of server.dispatch.Context the handlers use, recording everything."""

    def __init__(
        self,
        server: FakeServer,
        user: tuple[int, str] | None = None,
        peer: tuple[str, int] = ("10.0.0.1", 50000),
    ) -> None:
        self.server = server
        self.services = server
        self.user_id: int | None = user[0] if user else None
        self.username: str | None = user[1] if user else None
        self.peer = peer
        self.answers: list[tuple[str, Any]] = []
        self.closing = False
        # Output still queued: windows are released only by acknowledgements here.
        self.connection = types.SimpleNamespace(
            pending_output=1 << 30, session_cache=None, is_open=True
        )

    db = property(lambda self: self.server.db)
    sessions = property(lambda self: self.server.sessions)
    turn = property(lambda self: self.server.turn)
    config = property(lambda self: self.server.config)
    identity = property(lambda self: self.server.identity)
    transparency = property(lambda self: self.server.transparency)

    def now(self) -> int:
        return self.server.clock()

    def reply(self, params: dict[str, Any]) -> None:
        self.answers.append(("reply", params))
        self.server.events.append(("reply", self.user_id, params))

    def fail(self, code: str, message: str, field: str | None = None) -> None:
        self.answers.append(("error", RequestError(code, message, field)))
        self.server.events.append(("error", self.user_id, code))

    def push(self, user_id: int, type: MessageType, params: dict[str, Any]) -> bool:
        assert type in PUSHES
        if user_id not in self.server.online:
            return False
        self.server.events.append(("push", user_id, type, params))
        return True

    def push_encoded(self, user_id: int, body: bytes) -> bool:
        message = decode_message(body)
        return self.push(user_id, message.type, message.params)

    def push_many(self, user_ids: Any, type: MessageType, params: dict[str, Any]) -> int:
        return sum(self.push(user_id, type, params) for user_id in dict.fromkeys(user_ids))

    def bind_user(self, user_id: int, username: str) -> None:
        self.server.events.append(("bind", user_id, username, self.peer))
        self.server.online[user_id] = username
        self.server.live[user_id] = self.connection
        self.user_id, self.username = user_id, username

    def unbind_user(self) -> None:
        user_id, username = self.user_id, self.username
        assert user_id is not None and username is not None
        del self.server.online[user_id]
        self.user_id = self.username = None
        self.server.events.append(("unbind", user_id))
        self.server.backlog.forget(user_id)
        presence.announce_offline(self.server, user_id, username)  # type: ignore[arg-type]

    def close_after_reply(self) -> None:
        self.closing = True

    def run_in_worker(
        self,
        fn: Callable[[], Any],
        then: Callable[[Any], None],
        always: Callable[[], None] | None = None,
        demoted: bool = False,
    ) -> None:
        self.server.demoted.append(demoted)

        def job() -> None:
            if always is not None:
                always()
            self.guarded(lambda: then(fn()))

        if self.server.deferred is None:
            job()
        else:
            self.server.deferred.append(job)

    def guarded(self, step: Callable[[], Any]) -> Any:
        """What the dispatcher does around handler code."""
        try:
            return step()
        except (RequestError, ValidationError) as exc:
            self.fail(exc.code, exc.message, exc.field)
            return None


def call(module: ModuleType, ctx: FakeContext, **params: Any) -> FakeContext:
    """One request in a turn of its own: handled, answered, then the turn's end."""
    result = ctx.guarded(lambda: module.handle(ctx, params))
    if result is not None:
        ctx.reply(result)
    ctx.server.end_turn()
    return ctx


def ok(module: ModuleType, ctx: FakeContext, **params: Any) -> dict[str, Any]:
    call(module, ctx, **params)
    assert len(ctx.answers) == 1, ctx.answers
    kind, value = ctx.answers[0]
    assert kind == "reply", value
    result: dict[str, Any] = value
    return result


def fails(module: ModuleType, ctx: FakeContext, **params: Any) -> RequestError:
    call(module, ctx, **params)
    assert len(ctx.answers) == 1, ctx.answers
    kind, value = ctx.answers[0]
    assert kind == "error", value
    error: RequestError = value
    return error


# -- fixtures --------------------------------------------------------------------------

CONFIG = ServerConfig(
    scrypt_n=1024,
    login_max_failures=3,
    login_backoff_base=1.0,
    login_backoff_max=8.0,
    offline_batch=2,
    max_attachment_size=1_000,
    chunk_size=16,
)


@pytest.fixture
def server(tmp_path: Path, any_db: Database) -> FakeServer:
    """The handlers on SQLite and on PostgreSQL (tests/backends.py)."""
    return FakeServer(db=any_db, config=CONFIG, data_dir=tmp_path / "data")


def form(name: str, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "username": name,
        "password": PASSWORD,
        "email": f"{name}@example.com",
        "sex": "female",
        "age": 30,
    }
    values.update(changes)
    if "csr" not in values:
        values["csr"] = build_csr(values["username"], values["email"], generate_user_keys())
    return values


def signup(server: FakeServer, name: str) -> int:
    keys = generate_user_keys()
    server.keys[name] = keys
    ok(
        register,
        FakeContext(server),
        **form(name, csr=build_csr(name, f"{name}@example.com", keys)),
    )
    user = users.by_username(server.db, name)
    assert user is not None
    return user.id


def online(server: FakeServer, name: str) -> FakeContext:
    """Register (if needed) and log `name` in; returns a context acting as that user."""
    if users.by_username(server.db, name) is None:
        signup(server, name)
    ctx = FakeContext(server)
    ok(login, ctx, username=name, password=PASSWORD)
    return as_user(server, name)


def as_user(server: FakeServer, name: str) -> FakeContext:
    user = users.by_username(server.db, name)
    assert user is not None
    return FakeContext(server, (user.id, user.username))


def befriend(server: FakeServer, a: str, b: str) -> None:
    ok(add_friend, as_user(server, a), username=b)
    ok(resolve_friend_request, as_user(server, b), username=a, decision="accept")


def uid(server: FakeServer, name: str) -> int:
    user = users.by_username(server.db, name)
    assert user is not None
    return user.id


def room_event(
    server: FakeServer,
    actor: str,
    room: int,
    kind: EventKind,
    subject: str | None = None,
    **extra: Any,
) -> MembershipEvent:
    """`actor`'s signed event on the room's current head (GENESIS for a create)."""
    prev = room_log.head(server.db, room)[1] if kind is not EventKind.CREATE else GENESIS
    return sign_event(
        server.keys[actor].identity,
        room=str(room),
        kind=kind,
        actor=actor,
        subject=subject or actor,
        time_ms=server.time,
        prev=prev,
        **extra,
    )


def create_event(
    server: FakeServer, owner: str, name: str, policy: Policy = Policy.OPEN, number: int = 0
) -> bytes:
    number = number or random_room_number()
    return room_event(server, owner, number, EventKind.CREATE, name=name, policy=policy).to_wire()


def make_room(
    server: FakeServer, owner: str, name: str, policy: Policy = Policy.OPEN
) -> dict[str, Any]:
    return ok(create_room, as_user(server, owner), event=create_event(server, owner, name, policy))


def join_event(server: FakeServer, name: str, room: int) -> bytes:
    return room_event(server, name, room, EventKind.JOIN).to_wire()


def enter_room(server: FakeServer, name: str, room: int) -> dict[str, Any]:
    return ok(join_room, as_user(server, name), room_id=room, event=join_event(server, name, room))


# -- the handler table -----------------------------------------------------------------


def test_every_request_has_exactly_one_handler() -> None:
    opcodes = [module.OPCODE for module in HANDLERS]
    assert len(opcodes) == len(set(opcodes))
    requests = set(MessageType) - PUSHES - {MessageType.REPLY, MessageType.ERROR}
    assert set(opcodes) == requests
    anonymous = {module.OPCODE for module in HANDLERS if not module.REQUIRES_AUTH}
    assert anonymous == UNAUTHENTICATED_REQUESTS


def test_ping_replies_server_time(server: FakeServer) -> None:
    assert ok(ping, FakeContext(server)) == {"time": server.time}


# -- register --------------------------------------------------------------------------


def test_register_issues_a_certificate_and_hashes_the_password(server: FakeServer) -> None:
    reply = ok(register, FakeContext(server), **form("alice"))
    assert reply["ca_certificate"] == CA.certificate_der
    issued = load_user_certificate(reply["certificate"], CA.certificate)
    assert (issued.username, issued.email) == ("alice", "alice@example.com")
    user = users.by_username(server.db, "alice")
    assert user is not None and user.certificate == reply["certificate"]
    assert PASSWORD not in user.password_hash
    assert user.password_hash.startswith("scrypt$1024$")
    assert verify_password(PASSWORD, user.password_hash)


@pytest.mark.parametrize(
    ("changes", "code", "field_name"),
    [
        ({"username": "x"}, "invalid_username", "username"),
        ({"username": "bad name!"}, "invalid_username", "username"),
        ({"password": "short1"}, "invalid_password", "password"),
        ({"email": "not-an-email"}, "invalid_email", "email"),
        ({"sex": "robot"}, "invalid_sex", "sex"),
        ({"age": 0}, "invalid_age", "age"),
        ({"age": "thirty"}, "invalid_age", "age"),
    ],
)
def test_register_validates_every_field(
    server: FakeServer, changes: dict[str, Any], code: str, field_name: str
) -> None:
    values = form("alice")
    values.update(changes)
    error = fails(register, FakeContext(server), **values)
    assert (error.code, error.field) == (code, field_name)
    assert users.by_username(server.db, "alice") is None


def test_register_refuses_taken_username_and_email(server: FakeServer) -> None:
    signup(server, "alice")
    error = fails(register, FakeContext(server), **form("ALICE", email="other@example.com"))
    assert (error.code, error.field) == ("username_taken", "username")
    error = fails(register, FakeContext(server), **form("alicia", email="Alice@EXAMPLE.com"))
    assert (error.code, error.field) == ("email_taken", "email")


def test_register_rechecks_uniqueness_after_hashing(server: FakeServer) -> None:
    server.deferred = []
    first, second = FakeContext(server), FakeContext(server, peer=("10.0.0.2", 50000))
    call(register, first, **form("alice"))
    call(register, second, **form("alice", email="second@example.com"))
    assert first.answers == second.answers == []  # both are hashing
    server.run_deferred()
    assert first.answers[0][0] == "reply"
    assert second.answers[0][1].code == "username_taken"


def test_register_checks_the_csr(server: FakeServer) -> None:
    keys = generate_user_keys()
    cases = [
        b"not a csr",
        build_csr("mallory", "alice@example.com", keys),
        build_csr("alice", "mallory@example.com", keys),
    ]
    for csr in cases:
        error = fails(register, FakeContext(server), **form("alice", csr=csr))
        assert (error.code, error.field) == ("invalid_csr", "csr")
    error = fails(register, FakeContext(server), **form("alice", csr="text"))
    assert (error.code, error.field) == ("bad_request", "csr")
    assert users.by_username(server.db, "alice") is None


def test_register_accepts_a_csr_whose_email_differs_only_in_domain_case(
    server: FakeServer,
) -> None:
    csr = build_csr("alice", "alice@EXAMPLE.com", generate_user_keys())
    reply = ok(register, FakeContext(server), **form("alice", email="alice@Example.COM", csr=csr))
    issued = load_user_certificate(reply["certificate"], CA.certificate)
    assert issued.email == "alice@example.com"


# -- login -----------------------------------------------------------------------------


def test_login_binds_the_session_and_replies_the_bundle(server: FakeServer) -> None:
    alice = signup(server, "alice")
    ctx = FakeContext(server, peer=("192.168.0.9", 40001))
    reply = ok(login, ctx, username="alice", password=PASSWORD)
    assert ("bind", alice, "alice", ("192.168.0.9", 40001)) in server.events
    assert reply["profile"] == {
        "username": "alice",
        "email": "alice@example.com",
        "sex": "female",
        "age": 30,
    }
    assert reply["certificate"] == users.by_id(server.db, alice).certificate  # type: ignore[union-attr]
    assert reply["ca_certificate"] == CA.certificate_der
    assert reply["friends"] == reply["rooms"] == reply["friend_requests"] == []
    assert reply["limits"] == {"max_attachment_size": 1_000, "chunk_size": 16}
    assert reply["server_time"] == server.time
    user = users.by_id(server.db, alice)
    assert user is not None and (user.ip, user.port) == ("192.168.0.9", 40001)


def test_second_login_binds_again_so_the_old_session_is_kicked(server: FakeServer) -> None:
    alice = signup(server, "alice")
    ok(login, FakeContext(server, peer=("10.0.0.1", 1)), username="alice", password=PASSWORD)
    ok(login, FakeContext(server, peer=("10.0.0.2", 2)), username="alice", password=PASSWORD)
    binds = [event for event in server.events if event[0] == "bind"]
    assert binds == [
        ("bind", alice, "alice", ("10.0.0.1", 1)),
        ("bind", alice, "alice", ("10.0.0.2", 2)),
    ]


def test_login_failures_look_the_same_and_cost_the_same(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    signup(server, "alice")
    checked: list[str] = []

    def spy(password: str, stored: str) -> bool:
        checked.append(stored)
        return verify_password(password, stored)

    monkeypatch.setattr(login, "verify_password", spy)
    wrong = fails(login, FakeContext(server), username="alice", password="wrong password 1")
    unknown = fails(login, FakeContext(server), username="nobody", password=PASSWORD)
    assert (
        (wrong.code, wrong.message)
        == (unknown.code, unknown.message)
        == (
            "login_failed",
            "wrong username or password",
        )
    )
    assert checked[1] == login.dummy_hash(1024) and checked[1].startswith("scrypt$1024$8$1$")
    assert not verify_password(PASSWORD, login.dummy_hash(1024))
    assert not [event for event in server.events if event[0] == "bind"]


def test_login_backoff_locks_the_account_and_survives_a_restart(
    server: FakeServer, any_backend: Backend
) -> None:
    signup(server, "alice")
    for index in range(4):  # 3 allowed, the 4th failure locks for 2 s
        ctx = FakeContext(server, peer=(f"10.0.1.{index}", 1))
        assert fails(login, ctx, username="alice", password="bad password 1").code == "login_failed"
    server.db.commit()
    server.db.close()
    server.db = any_backend.open()

    server.time += 500
    error = fails(
        login, FakeContext(server, peer=("10.0.2.1", 1)), username="ALICE", password=PASSWORD
    )
    assert error.code == "too_many_attempts"
    assert "2 seconds" in error.message
    server.time += 1_500
    ok(login, FakeContext(server, peer=("10.0.2.1", 1)), username="alice", password=PASSWORD)
    assert login_attempts.get(server.db, login_attempts.pair_key("alice", "10.0.2.1")) is None


def test_login_backoff_also_counts_per_address(server: FakeServer) -> None:
    signup(server, "alice")
    peer = ("10.9.9.9", 1)
    # An address (maybe a whole office behind NAT) gets four times an account's room.
    allowed = server.config.login_max_failures * login.ADDRESS_FAILURE_FACTOR
    for index in range(allowed + 1):
        fails(login, FakeContext(server, peer=peer), username=f"guess{index}", password="x")
    error = fails(login, FakeContext(server, peer=peer), username="alice", password=PASSWORD)
    assert error.code == "too_many_attempts"
    ok(login, FakeContext(server, peer=("10.9.9.10", 1)), username="alice", password=PASSWORD)


def test_an_address_the_owner_used_keeps_its_own_allowance(server: FakeServer) -> None:
    signup(server, "alice")
    home = ("10.8.0.1", 1)
    ok(login, FakeContext(server, peer=home), username="alice", password=PASSWORD)
    for index in range(20):  # a stranger from many addresses, and the home address's
        stranger = FakeContext(server, peer=(f"10.8.1.{index}", 1))  # own guesses elsewhere
        fails(login, stranger, username="ALICE", password="guess 1")
        fails(login, FakeContext(server, peer=home), username=f"other{index}", password="x")
    error = fails(
        login, FakeContext(server, peer=("10.8.2.1", 1)), username="alice", password=PASSWORD
    )
    assert error.code == "too_many_attempts"  # new addresses are locked out ...
    ok(login, FakeContext(server, peer=home), username="alice", password=PASSWORD)  # not home


def test_lock_keys_fold_as_the_database_folds(server: FakeServer) -> None:
    ok(register, FakeContext(server), **form("élise", email="elise@example.org"))
    for index in range(4):  # three allowed, the fourth locks
        fails(
            login, FakeContext(server, peer=(f"10.7.0.{index}", 1)), username="ÉLISE", password="x"
        )
    assert login_attempts.user_key("ÉLISE") == login_attempts.user_key("élise")
    error = fails(login, FakeContext(server, peer=("10.7.1.1", 1)), username="élise", password="x")
    assert error.code == "too_many_attempts"


def test_parallel_guesses_cannot_outrun_the_lock(server: FakeServer) -> None:
    signup(server, "alice")
    server.deferred = []  # every password check is still running on the "workers"
    guesses = [FakeContext(server, peer=(f"10.4.0.{i}", 1)) for i in range(6)]
    for ctx in guesses:
        call(login, ctx, username="alice", password="bad password 1")
    assert [ctx.answers for ctx in guesses[:4]] == [[]] * 4
    assert [answer(ctx).code for ctx in guesses[4:]] == ["too_many_attempts"] * 2
    server.run_deferred()
    assert [answer(ctx).code for ctx in guesses[:4]] == ["login_failed"] * 4


def test_a_correct_password_clears_the_pre_counted_failure(server: FakeServer) -> None:
    signup(server, "alice")
    for _ in range(2):
        fails(login, FakeContext(server), username="alice", password="bad password 1")
    fails(login, FakeContext(server, peer=("10.6.0.1", 1)), username="alice", password="guess")
    ok(login, FakeContext(server), username="alice", password=PASSWORD)
    assert login_attempts.get(server.db, login_attempts.pair_key("alice", "10.0.0.1")) is None
    account = login_attempts.get(server.db, login_attempts.user_key("alice"))
    assert account is not None and account.failures == 1  # the stranger's guess stays
    address = login_attempts.get(server.db, login_attempts.address_key("10.0.0.1"))
    assert address is not None and address.failures == 0


def test_login_lock_grows_and_is_capped(server: FakeServer) -> None:
    signup(server, "alice")
    for index in range(8):
        fails(
            login, FakeContext(server, peer=(f"10.3.0.{index}", 1)), username="alice", password="x"
        )
        server.time += 60_000  # wait out each lock
    until = login_attempts.get(server.db, login_attempts.user_key("alice"))
    assert until is not None and until.locked_until - until.last_failure == 8_000


def test_login_rejects_malformed_params(server: FakeServer) -> None:
    assert fails(login, FakeContext(server), username=5, password="x").code == "bad_request"
    assert fails(login, FakeContext(server), username="alice").code == "bad_request"


def test_login_announces_presence_and_pushes_the_backlog_after_the_reply(
    server: FakeServer,
) -> None:
    bob_ctx = online(server, "bob")
    signup(server, "alice")
    befriend(server, "bob", "alice")
    bob, alice = bob_ctx.user_id, uid(server, "alice")
    for index in range(5):
        ok(
            send_message,
            as_user(server, "bob"),
            message_id=f"{index + 1:032x}",
            target_type="user",
            target="alice",
            time=0,
            envelope=f"sealed {index}".encode(),
            attachments=[],
        )
    server.events.clear()
    ok(login, FakeContext(server, peer=("10.1.1.1", 7000)), username="alice", password=PASSWORD)

    kinds = [
        (event[0], event[1], event[2] if event[0] == "push" else None) for event in server.events
    ]
    reply_at = kinds.index(("reply", alice, None))
    assert ("push", bob, MessageType.PRESENCE) in kinds[reply_at:]
    assert server.pushes(bob, MessageType.PRESENCE) == [
        {"username": "alice", "online": True, "ip": "10.1.1.1", "port": 7000}
    ]
    batches = server.pushes(alice, MessageType.NEW_MESSAGE)
    assert [len(batch["messages"]) for batch in batches] == [2, 2, 1]
    delivered = [item for batch in batches for item in batch["messages"]]
    assert [item["message_id"] for item in delivered] == [f"{i + 1:032x}" for i in range(5)]
    assert delivered[0] == {
        "message_id": f"{1:032x}",
        "sender": "bob",
        "target_type": "user",
        "target": "alice",
        "time": server.time,
        "envelope": b"sealed 0",
        "attachments": [],
    }
    first_push = min(
        i for i, event in enumerate(server.events) if event[0] == "push" and event[1] == alice
    )
    assert first_push > reply_at


# -- logout and presence -----------------------------------------------------------------


def test_logout_unbinds_tells_friends_and_closes(server: FakeServer) -> None:
    online(server, "alice")
    online(server, "bob")
    befriend(server, "alice", "bob")
    server.events.clear()
    server.time += 5_000
    ctx = as_user(server, "alice")
    assert ok(logout, ctx) == {}
    assert ctx.closing
    alice, bob = uid(server, "alice"), uid(server, "bob")
    assert ("unbind", alice) in server.events
    assert alice not in server.online
    assert server.pushes(bob, MessageType.PRESENCE) == [
        {"username": "alice", "online": False, "ip": "10.0.0.1", "port": 50000}
    ]
    assert users.by_id(server.db, alice).last_seen == server.time  # type: ignore[union-attr]


def test_announce_offline_reaches_only_online_friends(server: FakeServer) -> None:
    for name in ("alice", "bob", "carol", "dave"):
        online(server, name)
    befriend(server, "alice", "bob")
    befriend(server, "alice", "carol")
    del server.online[uid(server, "carol")]
    server.events.clear()
    count = presence.announce_offline(server, uid(server, "alice"), "alice")  # type: ignore[arg-type]
    assert count == 1
    assert [event[1] for event in server.events] == [uid(server, "bob")]


# -- contacts and friends ----------------------------------------------------------------


def test_contact_list(server: FakeServer) -> None:
    online(server, "alice")
    signup(server, "bob")
    online(server, "carol")
    signup(server, "dave")
    befriend(server, "alice", "bob")
    befriend(server, "alice", "carol")
    ok(add_friend, as_user(server, "dave"), username="alice")
    room = make_room(server, "alice", "Team")
    reply = ok(contact_list, as_user(server, "alice"))
    assert [(f["username"], f["online"]) for f in reply["friends"]] == [
        ("bob", False),
        ("carol", True),
    ]
    assert reply["rooms"] == [
        {"room_id": room["room_id"], "name": "Team", "members": ["alice"], "last_message_time": 0}
    ]
    assert reply["friend_requests"] == ["dave"]


def test_search_users(server: FakeServer) -> None:
    for name in ("alice", "bob", "bobby", "bo_b", "boxer", "abob"):
        signup(server, name)
    befriend(server, "alice", "bob")
    ok(add_friend, as_user(server, "bobby"), username="alice")
    reply = ok(search_users, as_user(server, "alice"), query="BO")
    assert reply["users"] == [
        {"username": "bo_b", "sex": "female", "age": 30, "is_friend": False, "pending": False},
        {"username": "bob", "sex": "female", "age": 30, "is_friend": True, "pending": False},
        {"username": "bobby", "sex": "female", "age": 30, "is_friend": False, "pending": True},
        {"username": "boxer", "sex": "female", "age": 30, "is_friend": False, "pending": False},
    ]  # a prefix of the canonical name, in canonical order: not "abob"
    assert reply["next"] is None
    assert ok(search_users, as_user(server, "alice"), query="alice") == {"users": [], "next": None}
    assert fails(search_users, as_user(server, "alice"), query=["x"]).code == "bad_request"
    assert fails(search_users, as_user(server, "alice"), query="b", limit=0).code == "bad_request"


def test_search_users_pages_with_a_cursor(server: FakeServer) -> None:
    signup(server, "alice")
    for index in range(55):
        users.create_user(
            server.db,
            username=f"member{index:02d}",
            password_hash="x",
            email=f"m{index}@example.com",
            sex="other",
            age=20,
            certificate=b"",
            now=1,
        )
    first = ok(search_users, as_user(server, "alice"), query="member")
    assert len(first["users"]) == CONFIG.search_page
    names = [u["username"] for u in first["users"]]
    after = first["next"]
    while after is not None:
        page = ok(search_users, as_user(server, "alice"), query="member", after=after, limit=7)
        assert len(page["users"]) <= 7
        names += [u["username"] for u in page["users"]]
        after = page["next"]
    assert names == [f"member{index:02d}" for index in range(55)]


def test_search_users_is_rate_limited_per_account(server: FakeServer) -> None:
    signup(server, "alice")
    signup(server, "bob")
    for _ in range(CONFIG.searches_per_minute):
        ok(search_users, as_user(server, "alice"), query="bo")
    assert fails(search_users, as_user(server, "alice"), query="bo").code == "too_many_searches"
    ok(search_users, as_user(server, "bob"), query="al")  # another account is unaffected


def test_add_friend_errors(server: FakeServer) -> None:
    for name in ("alice", "bob", "carol"):
        signup(server, name)
    befriend(server, "alice", "bob")
    alice = as_user(server, "alice")
    assert fails(add_friend, alice, username="nobody").code == "user_not_found"
    assert fails(add_friend, as_user(server, "alice"), username="alice").code == "cannot_add_self"
    assert fails(add_friend, as_user(server, "alice"), username="bob").code == "already_friends"
    ok(add_friend, as_user(server, "alice"), username="carol")
    assert fails(add_friend, as_user(server, "alice"), username="carol").code == "request_pending"
    assert fails(add_friend, as_user(server, "alice"), username=None).code == "bad_request"


def test_add_friend_pushes_the_request_or_keeps_it_for_next_login(server: FakeServer) -> None:
    online(server, "alice")
    online(server, "bob")
    signup(server, "carol")
    ok(add_friend, as_user(server, "alice"), username="bob")
    assert server.pushes(uid(server, "bob"), MessageType.FRIEND_REQUEST) == [{"from": "alice"}]
    ok(add_friend, as_user(server, "alice"), username="carol")
    reply = ok(login, FakeContext(server), username="carol", password=PASSWORD)
    assert reply["friend_requests"] == ["alice"]


def test_asking_back_accepts_the_pending_request(server: FakeServer) -> None:
    online(server, "alice")
    online(server, "bob")
    ok(add_friend, as_user(server, "alice"), username="bob")
    ok(add_friend, as_user(server, "bob"), username="alice")
    alice, bob = uid(server, "alice"), uid(server, "bob")
    assert server.pushes(alice, MessageType.CONTACT_ADDED)[0]["contact"]["username"] == "bob"
    assert server.pushes(bob, MessageType.CONTACT_ADDED)[0]["contact"]["username"] == "alice"
    assert [f["username"] for f in ok(contact_list, as_user(server, "bob"))["friends"]] == ["alice"]


def test_resolve_friend_request(server: FakeServer) -> None:
    online(server, "alice")
    online(server, "bob")
    signup(server, "carol")
    alice, bob = uid(server, "alice"), uid(server, "bob")
    bob_ctx = as_user(server, "bob")
    assert (
        fails(resolve_friend_request, bob_ctx, username="alice", decision="accept").code
        == "no_pending_request"
    )
    ok(add_friend, as_user(server, "alice"), username="bob")
    ok(add_friend, as_user(server, "carol"), username="bob")
    assert (
        fails(
            resolve_friend_request, as_user(server, "bob"), username="alice", decision="maybe"
        ).code
        == "bad_request"
    )
    ok(resolve_friend_request, as_user(server, "bob"), username="alice", decision="later")
    assert ok(contact_list, as_user(server, "bob"))["friend_requests"] == ["alice", "carol"]

    ok(resolve_friend_request, as_user(server, "bob"), username="carol", decision="reject")
    assert ok(contact_list, as_user(server, "bob"))["friend_requests"] == ["alice"]
    refused = MessageType.FRIEND_REQUEST_REFUSED
    assert server.pushes(uid(server, "carol"), refused) == []  # offline: nothing is kept
    assert ok(add_friend, as_user(server, "carol"), username="bob") == {}  # may ask again
    online(server, "carol")
    ok(resolve_friend_request, as_user(server, "bob"), username="carol", decision="reject")
    assert server.pushes(uid(server, "carol"), refused) == [{"username": "bob"}]  # told who
    assert server.pushes(uid(server, "alice"), refused) == []

    ok(resolve_friend_request, as_user(server, "bob"), username="alice", decision="accept")
    added_for_alice = server.pushes(alice, MessageType.CONTACT_ADDED)
    assert added_for_alice == [
        {
            "contact": {
                "username": "bob",
                "online": True,
                "ip": "10.0.0.1",
                "port": 50000,
                "last_message_time": 0,
            }
        }
    ]
    assert server.pushes(bob, MessageType.CONTACT_ADDED)[0]["contact"]["username"] == "alice"


def test_delete_friend(server: FakeServer) -> None:
    online(server, "alice")
    online(server, "bob")
    signup(server, "carol")
    befriend(server, "alice", "bob")
    assert fails(delete_friend, as_user(server, "alice"), username="zed").code == "user_not_found"
    assert fails(delete_friend, as_user(server, "alice"), username="carol").code == "not_friends"
    assert ok(delete_friend, as_user(server, "bob"), username="alice") == {}
    assert server.pushes(uid(server, "alice"), MessageType.CONTACT_REMOVED) == [{"username": "bob"}]
    assert server.pushes(uid(server, "bob"), MessageType.CONTACT_REMOVED) == [{"username": "alice"}]
    assert fails(delete_friend, as_user(server, "alice"), username="bob").code == "not_friends"


def test_certificate_access(server: FakeServer) -> None:
    for name in ("alice", "bob", "carol", "dave"):
        signup(server, name)
    befriend(server, "alice", "bob")
    room = make_room(server, "alice", "Team")
    enter_room(server, "carol", room["room_id"])
    for name in ("alice", "bob", "carol"):
        reply = ok(certificate, as_user(server, "alice"), username=name)
        expected = users.by_username(server.db, name)
        assert expected is not None
        proof = reply.pop("transparency")
        assert reply == {
            "username": name,
            "certificate": expected.certificate,
            "kem_key": None,
            "kem_transparency": None,
        }
        head = merkle.TreeHead.from_wire(proof["head"])
        merkle.verify_tree_head(head, CA.public_key_bytes)
        leaf = merkle.LogEntry("certificate", name, expected.certificate).leaf_hash
        path = merkle.unpack_proof(proof["proof"])
        merkle.verify_inclusion(leaf, proof["position"], head.size, path, head.root)
    assert fails(certificate, as_user(server, "alice"), username="dave").code == "forbidden"
    assert fails(certificate, as_user(server, "alice"), username="eve").code == "user_not_found"


def test_key_transparency_requests(server: FakeServer) -> None:
    for name in ("alice", "bob", "carol"):
        signup(server, name)
    alice = as_user(server, "alice")
    head = merkle.TreeHead.from_wire(ok(kt_tree_head, alice)["head"])
    merkle.verify_tree_head(head, CA.public_key_bytes)
    assert head.size == 3
    signup(server, "dave")
    grown = ok(kt_consistency, as_user(server, "alice"), old_size=3)
    new_head = merkle.TreeHead.from_wire(grown["head"])
    path = merkle.unpack_proof(grown["proof"])
    merkle.verify_consistency(3, new_head.size, head.root, new_head.root, path)
    refused = fails(kt_consistency, as_user(server, "alice"), old_size=99)
    assert refused.code == "unknown_tree_size"
    mine = ok(kt_user_entries, as_user(server, "bob"))
    bob = users.by_username(server.db, "bob")
    assert bob is not None
    assert [(e["position"], e["kind"], e["payload"]) for e in mine["entries"]] == [
        (1, "certificate", bob.certificate)
    ]
    assert ok(kt_user_entries, as_user(server, "bob"), after=1)["entries"] == []  # next page
    assert ok(kt_user_entries, as_user(server, "bob"), after=0)["entries"] == mine["entries"]
    assert fails(kt_user_entries, as_user(server, "bob"), after=-2).code == "bad_request"
    listed = ok(kt_range, as_user(server, "carol"), start=1, count=256)
    assert [e["username"] for e in listed["entries"]] == ["bob", "carol", "dave"]
    assert fails(kt_range, as_user(server, "carol"), start=0, count=257).code == "bad_request"
    assert not ok(kt_range, as_user(server, "carol"), start=50, count=5)["entries"]


# -- messages --------------------------------------------------------------------------


def send(
    ctx: FakeContext,
    message_id: str,
    target: str | int,
    envelope: Any,
    distributions: dict[str, Any] | None = None,
    **extra: Any,
) -> FakeContext:
    """SEND_MESSAGE as a v2 client makes it: one envelope, distributions for some members,
    and for a room the hash of the member list it was sealed for (the current one)."""
    params: dict[str, Any] = {
        "message_id": message_id,
        "target_type": "room" if isinstance(target, int) else "user",
        "target": target,
        "time": 123,
        "envelope": envelope,
        "distributions": distributions or {},
        "attachments": [],
    }
    if isinstance(target, int):
        names = [m.username for m in rooms_module.members(ctx.server.db, target)]
        params["member_hash"] = member_list_hash(str(target), names)
    params.update(extra)
    return call(send_message, ctx, **params)


def answer(ctx: FakeContext) -> Any:
    assert len(ctx.answers) == 1
    return ctx.answers[0][1]


def test_send_message_to_a_friend(server: FakeServer) -> None:
    online(server, "alice")
    online(server, "bob")
    befriend(server, "alice", "bob")
    server.events.clear()
    server.time += 10
    reply = answer(send(as_user(server, "alice"), "a" * 32, "bob", b"sealed"))
    assert reply == {"message_id": "a" * 32, "time": server.time}
    bob = uid(server, "bob")
    assert server.pushes(bob, MessageType.NEW_MESSAGE) == [
        {
            "messages": [
                {
                    "message_id": "a" * 32,
                    "sender": "alice",
                    "target_type": "user",
                    "target": "bob",
                    "time": server.time,
                    "envelope": b"sealed",
                    "attachments": [],
                }
            ]
        }
    ]
    assert [d.message_id for d in messages.undelivered(server.db, bob)] == ["a" * 32]
    friends_of_bob = ok(contact_list, as_user(server, "bob"))["friends"]
    assert friends_of_bob[0]["last_message_time"] == server.time


def test_send_message_is_idempotent(server: FakeServer) -> None:
    online(server, "alice")
    online(server, "bob")
    befriend(server, "alice", "bob")
    first = answer(send(as_user(server, "alice"), "b" * 32, "bob", b"one"))
    server.events.clear()
    server.time += 99
    again = answer(send(as_user(server, "alice"), "b" * 32, "bob", b"two"))
    assert again == first
    assert server.events == [("reply", uid(server, "alice"), first)]
    assert server.db.scalar("SELECT count(*) FROM envelopes") == 1
    stolen = answer(send(as_user(server, "bob"), "b" * 32, "alice", b"x"))
    assert (stolen.code, stolen.field) == ("bad_request", "message_id")


def test_send_message_access_and_envelope_errors(server: FakeServer) -> None:
    for name in ("alice", "bob", "carol"):
        signup(server, name)
    befriend(server, "alice", "bob")
    alice = partial(as_user, server, "alice")
    assert answer(send(alice(), "1" * 32, "carol", b"x")).code == "not_friends"
    assert answer(send(alice(), "1" * 32, "ghost", b"x")).code == "not_friends"
    assert answer(send(alice(), "1" * 32, "alice", b"x")).code == "not_friends"
    assert answer(send(alice(), "1" * 32, 999, b"x", member_hash=bytes(32))).code == "not_member"
    assert answer(send(alice(), "1" * 32, "bob", b"")).code == "bad_request"
    stranger = answer(send(alice(), "1" * 32, "bob", b"x", {"carol": bytes(DISTRIBUTION_SIZE)}))
    assert stranger.code == "missing_envelope" and "carol" in stranger.message
    short = answer(send(alice(), "1" * 32, "bob", b"x", {"bob": b"short"}))
    assert short.code == "bad_request"
    big = answer(send(alice(), "1" * 32, "bob", bytes(64 * 1024 + 1)))
    assert big.code == "message_too_large"
    assert answer(send(alice(), "1" * 32, "bob", "text")).code == "bad_request"
    assert answer(send(alice(), "XYZ", "bob", b"x")).code == "bad_request"
    assert answer(send(alice(), "1" * 32, "bob", b"x", target_type="all")).code == ("bad_request")
    assert server.db.scalar("SELECT count(*) FROM envelopes") == 0
    assert answer(send(alice(), "1" * 32, "bob", bytes(64 * 1024)))["message_id"] == "1" * 32


def test_send_message_to_a_room_fans_out_to_members_but_not_the_sender(server: FakeServer) -> None:
    for name in ("alice", "bob", "carol"):
        online(server, name)
    signup(server, "dave")
    room = make_room(server, "alice", "Team")["room_id"]
    for name in ("bob", "dave"):
        enter_room(server, name, room)
    assert answer(send(as_user(server, "carol"), "2" * 32, room, b"x")).code == "not_member"
    stale = answer(send(as_user(server, "alice"), "2" * 32, room, b"x", member_hash=bytes(32)))
    assert stale.code == "missing_envelope"  # sealed for another member list: reseal
    server.events.clear()
    for_dave = bytes([7]) * DISTRIBUTION_SIZE
    send(as_user(server, "alice"), "2" * 32, room, b"for all", {"dave": for_dave})
    pushed = server.pushes(kind=MessageType.NEW_MESSAGE)
    assert len(pushed) == 1  # dave is offline, alice is the sender
    item = pushed[0]["messages"][0]
    assert (item["target_type"], item["target"], item["envelope"]) == ("room", room, b"for all")
    assert "distribution" not in item  # bob's copy of the chain came earlier (or never)
    assert server.db.scalar("SELECT count(*) FROM envelopes") == 1  # one, not one per member
    dave_rows = messages.undelivered(server.db, uid(server, "dave"))
    assert [(d.envelope, d.target_id, d.distribution) for d in dave_rows] == [
        (b"for all", room, for_dave)
    ]
    reply = ok(login, FakeContext(server), username="dave", password=PASSWORD)
    assert reply["rooms"][0]["last_message_time"] == server.time


def upload(server: FakeServer, name: str, data: bytes, attachment_id: str) -> None:
    digest = hashlib.sha256(data).digest()
    ok(
        upload_begin,
        as_user(server, name),
        attachment_id=attachment_id,
        size=len(data),
        digest=digest,
    )
    offset = 0
    while True:
        chunk = data[offset : offset + CONFIG.chunk_size]
        reply = ok(
            upload_chunk,
            as_user(server, name),
            attachment_id=attachment_id,
            offset=offset,
            data=chunk,
        )
        offset = reply["offset"]
        if reply["complete"]:
            return


def test_send_message_checks_attachments(server: FakeServer) -> None:
    for name in ("alice", "bob"):
        signup(server, name)
    befriend(server, "alice", "bob")
    upload(server, "alice", b"alice's file", "a" * 32)
    upload(server, "bob", b"bob's file", "b" * 32)
    ok(upload_begin, as_user(server, "alice"), attachment_id="c" * 32, size=5, digest=bytes(32))
    for attachment_id in ("b" * 32, "c" * 32, "d" * 32):
        error = answer(
            send(
                as_user(server, "alice"),
                "3" * 32,
                "bob",
                b"x",
                attachments=[attachment_id],
            )
        )
        assert error.code == "attachment_not_found"
    bad = answer(send(as_user(server, "alice"), "3" * 32, "bob", b"x", attachments="a"))
    assert bad.code == "bad_request"
    send(as_user(server, "alice"), "3" * 32, "bob", b"x", attachments=["a" * 32])
    assert messages.undelivered(server.db, uid(server, "bob"))[0].attachments == ["a" * 32]


def test_backlog_goes_out_in_windows_pulled_by_acknowledgements(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_backlog, "WINDOW_BYTES", 1000)
    online(server, "bob")
    signup(server, "alice")
    befriend(server, "bob", "alice")
    alice_id = uid(server, "alice")
    ids = [f"{index + 1:032x}" for index in range(12)]
    for message_id in ids:
        send(as_user(server, "bob"), message_id, "alice", b"e" * 300)
    server.events.clear()
    session = FakeContext(server, peer=("10.1.1.1", 7000))
    ok(login, session, username="alice", password=PASSWORD)

    def pushed_ids() -> list[str]:
        batches = server.pushes(alice_id, MessageType.NEW_MESSAGE)
        return [item["message_id"] for batch in batches for item in batch["messages"]]

    first_window = pushed_ids()
    assert 0 < len(first_window) < len(ids)  # bounded: not the whole backlog at once
    assert server.backlog.draining(uid(server, "alice"))
    ack = as_user(server, "alice")
    ack.connection = session.connection
    # Acknowledging only part of the window does not release the next one.
    ok(ack_delivery, ack, message_ids=first_window[:1])
    assert pushed_ids() == first_window
    delivered = list(first_window)
    while server.backlog.draining(uid(server, "alice")):
        ack = as_user(server, "alice")
        ack.connection = session.connection
        ok(ack_delivery, ack, message_ids=pushed_ids())
        delivered = pushed_ids()
    assert delivered == ids  # everything, in server order, nothing twice


def test_a_drained_connection_gets_the_next_window_despite_held_messages(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_backlog, "WINDOW_BYTES", 1000)
    online(server, "bob")
    signup(server, "alice")
    befriend(server, "bob", "alice")
    for index in range(12):
        send(as_user(server, "bob"), f"{index + 1:032x}", "alice", b"e" * 300)
    server.events.clear()
    session = FakeContext(server, peer=("10.1.1.1", 7000))
    ok(login, session, username="alice", password=PASSWORD)
    first = [
        item["message_id"]
        for batch in server.pushes(uid(server, "alice"), MessageType.NEW_MESSAGE)
        for item in batch["messages"]
    ]
    session.connection.pending_output = 0  # the client has read everything
    ack = as_user(server, "alice")
    ack.connection = session.connection
    ok(ack_delivery, ack, message_ids=first[1:])  # first[0] is held back on purpose
    after = [
        item["message_id"]
        for batch in server.pushes(uid(server, "alice"), MessageType.NEW_MESSAGE)
        for item in batch["messages"]
    ]
    assert len(after) > len(first)


def test_live_messages_wait_behind_a_draining_backlog(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_backlog, "WINDOW_BYTES", 1000)
    online(server, "bob")
    signup(server, "alice")
    befriend(server, "bob", "alice")
    for index in range(12):
        send(as_user(server, "bob"), f"{index + 1:032x}", "alice", b"e" * 300)
    session = FakeContext(server, peer=("10.1.1.1", 7000))
    ok(login, session, username="alice", password=PASSWORD)
    assert server.backlog.draining(uid(server, "alice"))
    server.events.clear()
    send(as_user(server, "bob"), "f" * 32, "alice", b"late")
    assert server.pushes(uid(server, "alice"), MessageType.NEW_MESSAGE) == []


def test_ack_delivery(server: FakeServer) -> None:
    online(server, "alice")
    online(server, "bob")
    signup(server, "carol")
    befriend(server, "alice", "bob")
    befriend(server, "alice", "carol")
    send(as_user(server, "alice"), "4" * 32, "bob", b"x")
    send(as_user(server, "alice"), "5" * 32, "carol", b"y")
    server.events.clear()
    assert (
        ok(ack_delivery, as_user(server, "bob"), message_ids=["4" * 32, "5" * 32, "6" * 32]) == {}
    )
    assert server.pushes(uid(server, "alice"), MessageType.MESSAGE_DELIVERED) == []
    assert messages.undelivered(server.db, uid(server, "bob")) == []
    assert len(messages.undelivered(server.db, uid(server, "carol"))) == 1
    server.events.clear()
    ok(ack_delivery, as_user(server, "bob"), message_ids=["4" * 32])
    assert server.events == [("reply", uid(server, "bob"), {})]
    assert fails(ack_delivery, as_user(server, "bob"), message_ids=[1]).code == "bad_request"


# -- rooms -----------------------------------------------------------------------------


def test_create_room(server: FakeServer) -> None:
    online(server, "alice")
    reply = make_room(server, "alice", "Team")
    assert reply == {
        "room_id": reply["room_id"],
        "name": "Team",
        "members": ["alice"],
        "last_message_time": 0,
    }
    assert server.pushes(uid(server, "alice"), MessageType.CONTACT_ADDED) == [{"room": reply}]
    entries = room_log.entries(server.db, reply["room_id"], 0, 10)
    assert [e.seq for e in entries] == [1]
    state = replay([MembershipEvent.from_wire(entries[0].entry)], identity_of(server))
    assert (state.owner, state.members, state.admins) == (
        "alice",
        frozenset({"alice"}),
        frozenset({"alice"}),
    )

    def refused(event: bytes) -> RequestError:
        return fails(create_room, as_user(server, "alice"), event=event)

    taken = refused(create_event(server, "alice", "team"))
    assert (taken.code, taken.field) == ("room_name_taken", "name")
    number = refused(create_event(server, "alice", "Other", number=reply["room_id"]))
    assert number.code == "room_number_taken"
    assert refused(create_event(server, "alice", "  Spaces  ")).code == "invalid_room_name"
    assert refused(create_event(server, "alice", "x" * 41)).code == "invalid_room_name"
    assert refused(b"garbage").code == "bad_event"
    assert refused(create_event(server, "alice", "Short", number=1234)).code == "bad_event"
    signup(server, "bob")
    by_bob = create_event(server, "bob", "Bobs")
    assert refused(by_bob).code == "bad_event"  # alice cannot found a room in bob's name
    forged = dataclasses.replace(MembershipEvent.from_wire(by_bob), actor="alice", subject="alice")
    assert refused(forged.to_wire()).code == "bad_signature"
    server.time += 2 * 24 * 3600 * 1000
    stale = room_event(server, "alice", random_room_number(), EventKind.CREATE, name="Later")
    server.time -= 2 * 24 * 3600 * 1000
    assert refused(stale.to_wire()).code == "bad_event_time"


def identity_of(server: FakeServer) -> Callable[[str], bytes | None]:
    return lambda name: server.keys[name].identity_public if name in server.keys else None


def test_join_and_leave_room(server: FakeServer) -> None:
    for name in ("alice", "bob", "carol"):
        online(server, name)
    room = make_room(server, "alice", "Team")["room_id"]
    assert (
        fails(join_room, as_user(server, "bob"), room_id=room + 1, event=b"").code
        == "room_not_found"
    )
    assert fails(join_room, as_user(server, "bob"), room_id="1").code == "bad_request"
    server.events.clear()
    joined = enter_room(server, "bob", room)
    assert joined["members"] == ["alice", "bob"] and joined["seq"] == 2
    (pushed,) = server.pushes(uid(server, "alice"), MessageType.ROOM_MEMBER_EVENT)
    assert pushed["event"] == "joined" and pushed["username"] == "bob" and pushed["seq"] == 2
    assert pushed["entry"] == room_log.entries(server.db, room, 1, 1)[0].entry
    again = fails(
        join_room, as_user(server, "bob"), room_id=room, event=join_event(server, "bob", room)
    )
    assert again.code == "already_member"
    stale = join_event(server, "carol", room)
    signup(server, "dave")
    enter_room(server, "dave", room)
    moved = fails(join_room, as_user(server, "carol"), room_id=room, event=stale)
    assert moved.code == "log_moved"
    enter_room(server, "carol", room)
    server.events.clear()
    # no such room and not a member: one answer, so leaving cannot probe numbers
    leave = room_event(server, "bob", room, EventKind.LEAVE).to_wire()
    assert fails(leave_room, as_user(server, "bob"), room_id=room + 1, event=leave).code == (
        "not_member"
    )
    assert ok(leave_room, as_user(server, "bob"), room_id=room, event=leave) == {"seq": 5}
    for name in ("alice", "carol", "bob"):
        (left,) = server.pushes(uid(server, name), MessageType.ROOM_MEMBER_EVENT)
        assert (left["event"], left["username"], left["seq"]) == ("left", "bob", 5)
    assert server.pushes(uid(server, "bob"), MessageType.CONTACT_REMOVED) == [{"room_id": room}]
    assert fails(leave_room, as_user(server, "bob"), room_id=room, event=leave).code == "not_member"
    owner_leaves = room_event(server, "alice", room, EventKind.LEAVE).to_wire()
    refused = fails(leave_room, as_user(server, "alice"), room_id=room, event=owner_leaves)
    assert refused.code == "event_refused"  # the owner stays while others remain
    entries = [MembershipEvent.from_wire(e.entry) for e in room_log.entries(server.db, room, 0, 99)]
    assert replay(entries, identity_of(server)).members == {"alice", "carol", "dave"}


def test_a_join_signed_by_someone_else_is_refused(server: FakeServer) -> None:
    for name in ("alice", "bob", "mallory"):
        online(server, name)
    room = make_room(server, "alice", "Team")["room_id"]
    bobs = join_event(server, "bob", room)
    as_mallory = fails(join_room, as_user(server, "mallory"), room_id=room, event=bobs)
    assert as_mallory.code == "bad_event"
    forged = dataclasses.replace(
        MembershipEvent.from_wire(bobs), actor="mallory", subject="mallory"
    )
    refused = fails(join_room, as_user(server, "mallory"), room_id=room, event=forged.to_wire())
    assert refused.code == "bad_signature"
    assert room_log.head(server.db, room)[0] == 1


def test_admins_remove_and_grant_with_signed_events(server: FakeServer) -> None:
    for name in ("alice", "bob", "carol"):
        online(server, name)
    room = make_room(server, "alice", "Team")["room_id"]
    enter_room(server, "bob", room)
    enter_room(server, "carol", room)

    def event(actor: str, kind: EventKind, subject: str) -> dict[str, Any]:
        signed = room_event(server, actor, room, kind, subject).to_wire()
        return {"room_id": room, "event": signed}

    not_admin = fails(room_admin, as_user(server, "bob"), **event("bob", EventKind.REMOVE, "carol"))
    assert not_admin.code == "event_refused"
    grant = event("alice", EventKind.GRANT_ADMIN, "bob")
    assert ok(room_admin, as_user(server, "alice"), **grant) == {"seq": 4}
    server.events.clear()
    assert ok(room_admin, as_user(server, "bob"), **event("bob", EventKind.REMOVE, "carol")) == {
        "seq": 5
    }
    assert server.pushes(uid(server, "carol"), MessageType.CONTACT_REMOVED) == [{"room_id": room}]
    (told,) = server.pushes(uid(server, "alice"), MessageType.ROOM_MEMBER_EVENT)
    assert (told["event"], told["actor"], told["username"]) == ("removed", "bob", "carol")
    owner = fails(room_admin, as_user(server, "bob"), **event("bob", EventKind.REMOVE, "alice"))
    assert owner.code == "event_refused"
    leave = event("bob", EventKind.LEAVE, "bob")
    assert fails(room_admin, as_user(server, "bob"), **leave).code == "bad_event"
    log_reply = ok(room_log_handler, as_user(server, "bob"), room_id=room, after=2)
    assert log_reply["length"] == 5 and len(log_reply["entries"]) == 3
    assert set(log_reply["certificates"]) == {"alice", "bob", "carol"}
    for name, offered in log_reply["certificates"].items():
        der = users.by_username(server.db, name).certificate  # type: ignore[union-attr]
        assert offered["certificate"] == der
        assert offered["transparency"] == server.transparency.certificate_proof(name, der)
    assert fails(room_log_handler, as_user(server, "carol"), room_id=room).code == "not_member"


def test_the_owner_hands_the_room_over_then_leaves(server: FakeServer) -> None:
    for name in ("alice", "bob", "carol"):
        online(server, name)
    room = make_room(server, "alice", "Team")["room_id"]
    enter_room(server, "bob", room)
    enter_room(server, "carol", room)

    def event(actor: str, kind: EventKind, subject: str) -> dict[str, Any]:
        signed = room_event(server, actor, room, kind, subject).to_wire()
        return {"room_id": room, "event": signed}

    by_bob = fails(
        room_admin, as_user(server, "bob"), **event("bob", EventKind.TRANSFER_OWNER, "bob")
    )
    assert by_bob.code == "event_refused"  # only the owner hands the room over
    signup(server, "dave")
    outsider = event("alice", EventKind.TRANSFER_OWNER, "dave")
    assert fails(room_admin, as_user(server, "alice"), **outsider).code == "event_refused"
    server.events.clear()
    handover = event("alice", EventKind.TRANSFER_OWNER, "bob")
    assert ok(room_admin, as_user(server, "alice"), **handover) == {"seq": 4}
    (told,) = server.pushes(uid(server, "carol"), MessageType.ROOM_MEMBER_EVENT)
    assert (told["event"], told["actor"], told["username"]) == ("owner", "alice", "bob")
    assert rooms_module.is_admin(server.db, room, uid(server, "bob"))
    again = event("alice", EventKind.TRANSFER_OWNER, "carol")  # no longer the owner
    assert fails(room_admin, as_user(server, "alice"), **again).code == "event_refused"
    leave = room_event(server, "alice", room, EventKind.LEAVE).to_wire()
    assert ok(leave_room, as_user(server, "alice"), room_id=room, event=leave) == {"seq": 5}
    owner_leaves = room_event(server, "bob", room, EventKind.LEAVE).to_wire()
    refused = fails(leave_room, as_user(server, "bob"), room_id=room, event=owner_leaves)
    assert refused.code == "event_refused"  # bob now owns it and carol remains
    removal = event("bob", EventKind.REMOVE, "carol")  # the new owner's rights are real
    assert ok(room_admin, as_user(server, "bob"), **removal) == {"seq": 6}
    entries = [MembershipEvent.from_wire(e.entry) for e in room_log.entries(server.db, room, 0, 99)]
    state = replay(entries, identity_of(server))
    assert (state.owner, state.members, state.admins) == (
        "bob",
        frozenset({"bob"}),
        frozenset({"bob"}),
    )


def test_approval_rooms_wait_for_an_admins_countersignature(server: FakeServer) -> None:
    for name in ("alice", "bob", "carol"):
        online(server, name)
    room = make_room(server, "alice", "Club", Policy.APPROVAL)["room_id"]
    head = ok(room_head, as_user(server, "bob"), room_id=room)
    assert head["policy"] == "approval" and head["length"] == 1
    server.events.clear()
    bobs = join_event(server, "bob", room)
    reply = ok(join_room, as_user(server, "bob"), room_id=room, event=bobs)
    assert reply == {"room_id": room, "name": "Club", "pending": True}
    (asked,) = server.pushes(uid(server, "alice"), MessageType.ROOM_JOIN_REQUEST)
    assert asked == {"room_id": room, "username": "bob", "entry": bobs}
    assert not rooms_module.is_member(server.db, room, uid(server, "bob"))
    waiting = ok(room_join_requests, as_user(server, "alice"), room_id=room)["requests"]
    assert [r["username"] for r in waiting] == ["bob"]
    resolve = partial(ok, resolve_join)
    unsigned = fails(
        resolve_join,
        as_user(server, "alice"),
        room_id=room,
        username="bob",
        decision="approve",
        event=bobs,
    )
    assert unsigned.code == "bad_event"  # no countersignature by the caller
    countersigned = approve(MembershipEvent.from_wire(bobs), "alice", server.keys["alice"].identity)
    server.events.clear()
    done = resolve(
        as_user(server, "alice"),
        room_id=room,
        username="bob",
        decision="approve",
        event=countersigned.to_wire(),
    )
    assert done == {"seq": 2}
    assert rooms_module.is_member(server.db, room, uid(server, "bob"))
    assert server.pushes(uid(server, "bob"), MessageType.CONTACT_ADDED)
    # carol asks, the log moves before anyone answers: her request is dropped, she is told
    carols = join_event(server, "carol", room)
    ok(join_room, as_user(server, "carol"), room_id=room, event=carols)
    grant = room_event(server, "alice", room, EventKind.GRANT_ADMIN, "bob").to_wire()
    ok(room_admin, as_user(server, "alice"), room_id=room, event=grant)
    late = approve(MembershipEvent.from_wire(carols), "bob", server.keys["bob"].identity)
    server.events.clear()
    moved = fails(
        resolve_join,
        as_user(server, "bob"),
        room_id=room,
        username="carol",
        decision="approve",
        event=late.to_wire(),
    )
    assert moved.code == "log_moved"
    assert server.pushes(uid(server, "carol"), MessageType.ROOM_JOIN_REFUSED) == [
        {"room_id": room, "reason": "log_moved"}
    ]
    ok(join_room, as_user(server, "carol"), room_id=room, event=join_event(server, "carol", room))
    no = fails(
        resolve_join, as_user(server, "carol"), room_id=room, username="carol", decision="refuse"
    )
    assert no.code == "not_member"
    resolve(as_user(server, "bob"), room_id=room, username="carol", decision="refuse")
    assert server.pushes(uid(server, "carol"), MessageType.ROOM_JOIN_REFUSED)[-1]["reason"] == (
        "refused"
    )
    assert ok(room_join_requests, as_user(server, "alice"), room_id=room)["requests"] == []


def test_legacy_rooms_get_a_genesis_at_upgrade(server: FakeServer) -> None:
    online(server, "alice")
    signup(server, "bob")
    legacy_room = rooms_module.create_room(server.db, "Old", uid(server, "alice"), 5)
    rooms_module.add_member(server.db, legacy_room, uid(server, "alice"), 5)
    rooms_module.add_member(server.db, legacy_room, uid(server, "bob"), 6)
    assert room_log.backfill_legacy(server.db) == 1
    assert room_log.backfill_legacy(server.db) == 0
    (entry,) = room_log.entries(server.db, legacy_room, 0, 9)
    genesis = LegacyGenesis.from_wire(entry.entry)
    assert (genesis.owner, genesis.members, genesis.name) == ("alice", ("alice", "bob"), "Old")
    assert rooms_module.is_admin(server.db, legacy_room, uid(server, "alice"))
    ok(
        room_admin,
        as_user(server, "alice"),
        room_id=legacy_room,
        event=room_event(server, "alice", legacy_room, EventKind.REMOVE, "bob").to_wire(),
    )
    verified = replay_log(
        [e.entry for e in room_log.entries(server.db, legacy_room, 0, 9)], identity_of(server)
    )
    assert verified.legacy == genesis and verified.state.members == {"alice"}


def test_joins_are_rate_limited_per_account_whether_or_not_the_room_exists(
    server: FakeServer,
) -> None:
    online(server, "alice")
    online(server, "prober")
    room = make_room(server, "alice", "Team")["room_id"]
    for offset in range(1, CONFIG.joins_per_minute + 1):
        code = fails(join_room, as_user(server, "prober"), room_id=room + offset, event=b"").code
        assert code == "room_not_found"
    refused = fails(join_room, as_user(server, "prober"), room_id=room, event=b"")
    assert refused.code == "too_many_joins"  # even a room that exists: no oracle
    server.time += 60_001
    enter_room(server, "prober", room)


def test_room_members_and_certificates_are_for_members_only(server: FakeServer) -> None:
    online(server, "alice")
    signup(server, "bob")
    signup(server, "carol")
    room = make_room(server, "alice", "Team")["room_id"]
    enter_room(server, "bob", room)
    assert ok(room_members, as_user(server, "bob"), room_id=room) == {
        "room_id": room,
        "members": [{"username": "alice", "online": True}, {"username": "bob", "online": False}],
        "length": 2,
    }
    certificates = ok(room_certificates, as_user(server, "bob"), room_id=room)
    assert [m["username"] for m in certificates["members"]] == ["alice", "bob"]
    for member in certificates["members"]:
        issued = load_user_certificate(member["certificate"], CA.certificate)
        assert issued.username == member["username"]
    for module in (room_members, room_certificates):
        assert fails(module, as_user(server, "carol"), room_id=room).code == "not_member"
        assert fails(module, as_user(server, "carol"), room_id=room + 7).code == "not_member"


# -- attachments -------------------------------------------------------------------------


def test_upload_begin_limits_and_resume(server: FakeServer) -> None:
    signup(server, "alice")
    signup(server, "bob")
    digest = hashlib.sha256(b"x" * 40).digest()
    alice = partial(as_user, server, "alice")
    too_big = fails(upload_begin, alice(), attachment_id="a" * 32, size=1_001, digest=digest)
    assert too_big.code == "attachment_too_large" and "1000" in too_big.message
    assert fails(upload_begin, alice(), attachment_id="a" * 32, size=40, digest=b"short").code == (
        "bad_request"
    )
    assert fails(upload_begin, alice(), attachment_id="../x", size=40, digest=digest).code == (
        "bad_request"
    )
    assert ok(upload_begin, alice(), attachment_id="a" * 32, size=40, digest=digest) == {
        "attachment_id": "a" * 32,
        "offset": 0,
    }
    ok(upload_chunk, alice(), attachment_id="a" * 32, offset=0, data=b"x" * 16)
    assert ok(upload_begin, alice(), attachment_id="a" * 32, size=40, digest=digest)["offset"] == 16
    reuse = fails(
        upload_begin, as_user(server, "bob"), attachment_id="a" * 32, size=40, digest=digest
    )
    assert reuse.code == "bad_request"
    assert fails(upload_begin, alice(), attachment_id="a" * 32, size=41, digest=digest).code == (
        "bad_request"
    )


def test_unfinished_uploads_per_account_are_bounded(server: FakeServer) -> None:
    signup(server, "alice")
    alice = partial(as_user, server, "alice")
    digest = hashlib.sha256(b"x").digest()
    for index in range(upload_begin.MAX_OPEN_UPLOADS):
        ok(upload_begin, alice(), attachment_id=f"{index + 1:032x}", size=1, digest=digest)
    refused = fails(upload_begin, alice(), attachment_id="f" * 32, size=1, digest=digest)
    assert refused.code == "too_many_uploads"
    # Resuming one already started is still allowed, and finishing one frees a place.
    assert (
        ok(upload_begin, alice(), attachment_id=f"{1:032x}", size=1, digest=digest)["offset"] == 0
    )
    ok(upload_chunk, alice(), attachment_id=f"{1:032x}", offset=0, data=b"x")
    ok(upload_begin, alice(), attachment_id="f" * 32, size=1, digest=digest)
    stale = attachments.abandoned(server.db, older_than=server.clock() + 1)
    assert f"{1:032x}" not in stale and "f" * 32 in stale


def test_upload_resume_trusts_the_file_when_a_crash_lost_its_tail(server: FakeServer) -> None:
    signup(server, "alice")
    data = bytes(range(40))
    digest = hashlib.sha256(data).digest()
    alice = partial(as_user, server, "alice")
    ok(upload_begin, alice(), attachment_id="e" * 32, size=40, digest=digest)
    ok(upload_chunk, alice(), attachment_id="e" * 32, offset=0, data=data[:16])
    ok(upload_chunk, alice(), attachment_id="e" * 32, offset=16, data=data[16:32])
    part_file = server.data_dir / "attachments" / ("e" * 32 + ".part")
    with part_file.open("r+b") as file:
        file.truncate(20)  # the OS lost the last 12 bytes
    assert ok(upload_begin, alice(), attachment_id="e" * 32, size=40, digest=digest)["offset"] == 20
    ok(upload_chunk, alice(), attachment_id="e" * 32, offset=20, data=data[20:36])
    done = ok(upload_chunk, alice(), attachment_id="e" * 32, offset=36, data=data[36:])
    assert done == {"offset": 40, "complete": True}
    assert (server.data_dir / "attachments" / ("e" * 32)).read_bytes() == data


def test_upload_chunk_errors(server: FakeServer) -> None:
    signup(server, "alice")
    signup(server, "bob")
    data = b"y" * 20
    digest = hashlib.sha256(data).digest()
    alice = partial(as_user, server, "alice")
    assert fails(upload_chunk, alice(), attachment_id="f" * 32, offset=0, data=b"y").code == (
        "attachment_not_found"
    )
    ok(upload_begin, alice(), attachment_id="f" * 32, size=20, digest=digest)
    assert fails(
        upload_chunk, as_user(server, "bob"), attachment_id="f" * 32, offset=0, data=b"y"
    ).code == ("attachment_not_found")
    wrong = fails(upload_chunk, alice(), attachment_id="f" * 32, offset=5, data=b"y")
    assert wrong.code == "bad_offset" and "0 bytes" in wrong.message
    assert fails(upload_chunk, alice(), attachment_id="f" * 32, offset=0, data=b"y" * 17).code == (
        "bad_request"
    )
    assert fails(upload_chunk, alice(), attachment_id="f" * 32, offset=0, data=b"").code == (
        "bad_request"
    )
    ok(upload_chunk, alice(), attachment_id="f" * 32, offset=0, data=b"y" * 16)
    assert fails(upload_chunk, alice(), attachment_id="f" * 32, offset=16, data=b"y" * 5).code == (
        "bad_request"
    )
    ok(upload_chunk, alice(), attachment_id="f" * 32, offset=16, data=b"y" * 4)
    assert ok(upload_chunk, alice(), attachment_id="f" * 32, offset=20, data=b"") == {
        "offset": 20,
        "complete": True,
    }
    assert fails(upload_chunk, alice(), attachment_id="f" * 32, offset=0, data=b"y").code == (
        "bad_offset"
    )


def test_upload_digest_mismatch_discards_the_upload(server: FakeServer) -> None:
    signup(server, "alice")
    alice = partial(as_user, server, "alice")
    ok(
        upload_begin,
        alice(),
        attachment_id="9" * 32,
        size=4,
        digest=hashlib.sha256(b"good").digest(),
    )
    error = fails(upload_chunk, alice(), attachment_id="9" * 32, offset=0, data=b"evil")
    assert error.code == "digest_mismatch"
    assert attachments.get(server.db, "9" * 32) is None
    assert list((server.data_dir / "attachments").iterdir()) == []
    assert (
        ok(
            upload_begin,
            alice(),
            attachment_id="9" * 32,
            size=4,
            digest=hashlib.sha256(b"good").digest(),
        )["offset"]
        == 0
    )


def test_empty_attachment_completes(server: FakeServer) -> None:
    signup(server, "alice")
    alice = partial(as_user, server, "alice")
    ok(upload_begin, alice(), attachment_id="0" * 32, size=0, digest=hashlib.sha256(b"").digest())
    assert ok(upload_chunk, alice(), attachment_id="0" * 32, offset=0, data=b"") == {
        "offset": 0,
        "complete": True,
    }


def test_download_access_and_ranges(server: FakeServer) -> None:
    for name in ("alice", "bob", "carol"):
        signup(server, name)
    befriend(server, "alice", "bob")
    data = bytes(range(50))
    upload(server, "alice", data, "7" * 32)
    params = {"attachment_id": "7" * 32, "offset": 0, "length": 1_000}
    assert fails(download_chunk, as_user(server, "bob"), **params).code == "forbidden"
    send(as_user(server, "alice"), "8" * 32, "bob", b"x", attachments=["7" * 32])
    assert ok(download_chunk, as_user(server, "bob"), **params) == {"data": data[:16], "size": 50}
    assert ok(download_chunk, as_user(server, "alice"), **{**params, "offset": 40}) == {
        "data": data[40:],
        "size": 50,
    }
    assert ok(download_chunk, as_user(server, "bob"), **{**params, "offset": 50})["data"] == b""
    assert fails(download_chunk, as_user(server, "bob"), **{**params, "offset": 51}).code == (
        "bad_offset"
    )
    assert fails(download_chunk, as_user(server, "carol"), **params).code == "forbidden"
    assert fails(download_chunk, as_user(server, "bob"), **{**params, "length": -1}).code == (
        "bad_request"
    )
    ok(upload_begin, as_user(server, "alice"), attachment_id="6" * 32, size=5, digest=bytes(32))
    assert fails(
        download_chunk, as_user(server, "alice"), **{**params, "attachment_id": "6" * 32}
    ).code == ("attachment_not_found")


def test_a_backlog_of_large_messages_is_split_below_the_frame_cap(server: FakeServer) -> None:
    online(server, "bob")
    signup(server, "alice")
    befriend(server, "bob", "alice")
    for index in range(12):
        send(as_user(server, "bob"), f"{index + 1:032x}", "alice", b"L" * 60_000)
    server.events.clear()
    ok(login, FakeContext(server, peer=("10.1.1.1", 7000)), username="alice", password=PASSWORD)
    batches = server.pushes(uid(server, "alice"), MessageType.NEW_MESSAGE)
    assert len(batches) > 1
    for batch in batches:
        assert sum(len(item["envelope"]) for item in batch["messages"]) <= _backlog.PUSH_BYTES
    delivered = [item["message_id"] for batch in batches for item in batch["messages"]]
    assert delivered == [f"{index + 1:032x}" for index in range(12)]


def test_a_full_group_refuses_new_members(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit(server, max_room_members=2)
    for name in ("alice", "bob", "carol"):
        signup(server, name)
    room = make_room(server, "alice", "tiny")["room_id"]
    enter_room(server, "bob", room)
    full = fails(
        join_room, as_user(server, "carol"), room_id=room, event=join_event(server, "carol", room)
    )
    assert (full.code, full.field) == ("room_full", "room_id")
    # A member asking again still hears that they are already in.
    again = fails(
        join_room, as_user(server, "bob"), room_id=room, event=join_event(server, "bob", room)
    )
    assert again.code == "already_member"


# --- hostile load: names and registration limits (issue 8) -----------------------------


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("\u0430lice", "username_confusable"),  # Cyrillic a
        ("\uff41\uff4c\uff49\uff43\uff45", "username_taken"),  # fullwidth, NFKC = alice
        ("ALICE", "username_taken"),
        ("a1ice", "username_confusable"),
        ("alice\u034f", "username_invisible"),
        ("alice\ufe0f", "username_invisible"),
        ("alice\u3164", "username_invisible"),
    ],
)
def test_names_that_pass_for_alice_are_refused(server: FakeServer, name: str, code: str) -> None:
    signup(server, "alice")
    error = fails(register, FakeContext(server), **form(name, email="other@example.org"))
    assert (error.code, error.field) == (code, "username")


def test_elise_and_accented_capital_elise_are_one_name(server: FakeServer) -> None:
    ok(register, FakeContext(server), **form("élise", email="e1@example.org"))
    error = fails(register, FakeContext(server), **form("Élise", email="e2@example.org"))
    assert error.code == "username_taken"
    ok(login, FakeContext(server), username="ÉLISE", password=PASSWORD)


def test_registrations_per_address_are_limited(server: FakeServer) -> None:
    server.config = dataclasses.replace(server.config, register_per_address=3)
    for index in range(3):
        ok(register, FakeContext(server), **form(f"user{index}x"))
    error = fails(register, FakeContext(server), **form("user9x"))
    assert error.code == "too_many_registrations" and "minutes" in error.message
    ok(register, FakeContext(server, peer=("10.5.5.5", 1)), **form("user9x"))
    server.time += int(server.config.register_window * 1000)
    ok(register, FakeContext(server), **form("user10x"))


def test_an_address_has_few_hashes_in_flight_and_a_bounded_queue(server: FakeServer) -> None:
    server.config = dataclasses.replace(
        server.config, hashes_in_flight_per_address=2, hashes_waiting_per_address=3
    )
    signup(server, "alice")
    server.deferred = []
    guesses = [FakeContext(server, peer=("10.2.0.1", 1)) for _ in range(6)]
    for index, ctx in enumerate(guesses):
        call(login, ctx, username=f"nobody{index}", password="guess")
    assert server.hashes.in_flight("10.2.0.1") == 2 and server.hashes.waiting("10.2.0.1") == 3
    assert len(server.deferred) == 2  # only two hashes reached the workers
    assert answer(guesses[5]).code == "server_busy"
    honest = FakeContext(server, peer=("10.2.0.2", 1))
    call(login, honest, username="alice", password=PASSWORD)
    assert len(server.deferred) == 3  # another address is not queued behind the flood
    while server.deferred:
        server.run_deferred()
    assert [kind for kind, _ in honest.answers] == ["reply"]
    assert [answer(ctx).code for ctx in guesses[:5]] == ["login_failed"] * 5
    assert server.hashes.in_flight("10.2.0.1") == 0
    # Jobs that started with more of their address's waiting behind them ran demoted
    # (below everyone else's); the honest login and the line's last one did not.
    assert server.demoted[-6:] == [False, False, False, True, True, False]


# --- quotas and retention (issue 8) ----------------------------------------------------


def limit(server: FakeServer, **changes: Any) -> None:
    server.config = dataclasses.replace(server.config, **changes)


def test_pending_friend_requests_are_limited_both_ways(server: FakeServer) -> None:
    limit(server, max_friend_requests_out=2, max_friend_requests_in=2)
    for name in ("bob", "carol", "dave", "erin", "frank"):
        signup(server, name)
    alice = online(server, "alice")
    ok(add_friend, alice, username="bob")
    ok(add_friend, as_user(server, "alice"), username="carol")
    error = fails(add_friend, as_user(server, "alice"), username="dave")
    assert error.code == "too_many_friend_requests"
    online(server, "erin")
    online(server, "frank")
    online(server, "dave")
    ok(add_friend, as_user(server, "erin"), username="bob")  # bob now has two waiting
    error = fails(add_friend, as_user(server, "frank"), username="bob")
    assert (error.code, error.field) == ("friend_requests_full", "username")
    ok(resolve_friend_request, online(server, "bob"), username="alice", decision="reject")
    ok(add_friend, as_user(server, "frank"), username="bob")


def test_login_pages_friend_requests_and_contact_list_gives_the_rest(server: FakeServer) -> None:
    limit(server, friend_requests_page=2)
    signup(server, "alice")
    askers = [f"asker{index}" for index in range(5)]
    for name in askers:
        online(server, name)
        ok(add_friend, as_user(server, name), username="alice")
        server.time += 1
    bundle = ok(login, FakeContext(server), username="alice", password=PASSWORD)
    assert bundle["friend_requests"] == askers[:2] and bundle["friend_requests_next"]
    names, cursor = list(bundle["friend_requests"]), bundle["friend_requests_next"]
    while cursor:
        page = ok(contact_list, as_user(server, "alice"), requests_after=cursor)
        assert set(page) == {"friend_requests", "friend_requests_next"}
        names += page["friend_requests"]
        cursor = page["friend_requests_next"]
    assert names == askers


def test_rooms_per_account_are_limited(server: FakeServer) -> None:
    limit(server, max_rooms_per_account=2)
    online(server, "alice")
    make_room(server, "alice", "one")
    make_room(server, "alice", "two")
    three = create_event(server, "alice", "three")
    assert fails(create_room, as_user(server, "alice"), event=three).code == "too_many_rooms"


def test_uploads_kept_and_their_bytes_are_limited(server: FakeServer) -> None:
    limit(server, max_uploads_per_account=2, max_upload_bytes_per_account=1_000_000)
    online(server, "alice")
    digest = bytes(32)
    ok(upload_begin, as_user(server, "alice"), attachment_id="a" * 32, size=10, digest=digest)
    ok(upload_begin, as_user(server, "alice"), attachment_id="b" * 32, size=10, digest=digest)
    error = fails(
        upload_begin, as_user(server, "alice"), attachment_id="c" * 32, size=10, digest=digest
    )
    assert error.code == "upload_quota_exceeded"
    limit(server, max_uploads_per_account=10, max_upload_bytes_per_account=1_000)
    error = fails(
        upload_begin, as_user(server, "alice"), attachment_id="c" * 32, size=990, digest=digest
    )
    assert (error.code, error.field) == ("upload_quota_exceeded", "size")


def test_undelivered_messages_per_recipient_are_limited(server: FakeServer) -> None:
    limit(server, max_undelivered_per_recipient=2)
    online(server, "alice")
    online(server, "bob")
    befriend(server, "alice", "bob")
    for index in range(2):
        answer(send(as_user(server, "alice"), f"{index:032x}", "bob", b"x"))
    error = answer(send(as_user(server, "alice"), "f" * 32, "bob", b"x"))
    assert (error.code, error.field) == ("recipient_inbox_full", "target")
    ok(ack_delivery, as_user(server, "bob"), message_ids=[f"{0:032x}"])
    assert answer(send(as_user(server, "alice"), "f" * 32, "bob", b"x"))["time"]


def test_the_inbox_is_counted_only_near_its_limit(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting a recipient's waiting messages for every send made a backlog quadratic:
    the held upper bound lets the exact count run once, then again only at the limit."""
    limit(server, max_undelivered_per_recipient=30)
    online(server, "alice")
    signup(server, "bob")
    befriend(server, "alice", "bob")
    counted: list[int] = []
    exact = quotas._count_and_newest

    def counting(ctx: Any, owner: int, most: int) -> tuple[int, int]:
        counted.append(owner)
        return exact(ctx, owner, most)

    monkeypatch.setattr(quotas, "_count_and_newest", counting)
    for index in range(30):
        answer(send(as_user(server, "alice"), f"{index:032x}", "bob", b"x"))
    assert counted == [uid(server, "bob")]
    error = answer(send(as_user(server, "alice"), "f" * 32, "bob", b"x"))
    assert error.code == "recipient_inbox_full"
    assert len(counted) == 2  # the bound reached the limit: counted exactly, and full


def test_retention_forgets_delivered_envelopes_and_unused_uploads(server: FakeServer) -> None:
    from server.storage import retention

    online(server, "alice")
    online(server, "bob")
    befriend(server, "alice", "bob")
    digest = hashlib.sha256(b"hello").digest()
    alice = as_user(server, "alice")
    ok(upload_begin, alice, attachment_id="a" * 32, size=5, digest=digest)
    ok(upload_chunk, as_user(server, "alice"), attachment_id="a" * 32, offset=0, data=b"hello")
    ok(upload_begin, as_user(server, "alice"), attachment_id="b" * 32, size=5, digest=digest)
    answer(send(as_user(server, "alice"), "1" * 32, "bob", b"x", attachments=["a" * 32]))
    answer(send(as_user(server, "alice"), "2" * 32, "bob", b"y"))
    ok(ack_delivery, as_user(server, "bob"), message_ids=["1" * 32])
    day = 24 * 3600 * 1000
    early = retention.sweep(server.db, server.time + day, retention_days=30, abandoned_hours=48)
    assert (early.envelopes, early.attachments) == (0, [])
    result = retention.sweep(
        server.db, server.time + 31 * day, retention_days=30, abandoned_hours=48
    )
    assert result.envelopes == 1 and sorted(result.attachments) == ["a" * 32, "b" * 32]
    left = [d.message_id for d in messages.undelivered(server.db, uid(server, "bob"))]
    assert left == ["2" * 32]  # undelivered messages are never swept
    assert attachments.get(server.db, "a" * 32) is None


def test_room_certificates_come_in_pages(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(room_certificates, "PAGE", 2)
    names = ["alice", "bob", "carol", "dave", "erin"]
    for name in names:
        online(server, name)
    room = make_room(server, "alice", "Paged")["room_id"]
    for name in names[1:]:
        enter_room(server, name, room)
    seen: list[str] = []
    params: dict[str, Any] = {"room_id": room}
    for _ in range(10):
        page = ok(room_certificates, as_user(server, "carol"), **params)
        assert len(page["members"]) <= 2
        seen += [m["username"] for m in page["members"]]
        if page["next"] is None:
            break
        params = {"room_id": room, "after": page["next"]}
    assert seen == names


def test_the_room_cap_is_ten_thousand_by_default() -> None:
    assert ServerConfig().max_room_members == 10_000


def test_an_approval_cannot_overfill_a_group(server: FakeServer) -> None:
    limit(server, max_room_members=2)
    for name in ("alice", "bob", "carol"):
        online(server, name)
    room = make_room(server, "alice", "Tiny", Policy.APPROVAL)["room_id"]
    carols = join_event(server, "carol", room)
    ok(join_room, as_user(server, "carol"), room_id=room, event=carols)
    bobs = join_event(server, "bob", room)
    ok(join_room, as_user(server, "bob"), room_id=room, event=bobs)
    approved = approve(MembershipEvent.from_wire(bobs), "alice", server.keys["alice"].identity)
    ok(
        resolve_join,
        as_user(server, "alice"),
        room_id=room,
        username="bob",
        decision="approve",
        event=approved.to_wire(),
    )
    late = approve(MembershipEvent.from_wire(carols), "alice", server.keys["alice"].identity)
    full = fails(
        resolve_join,
        as_user(server, "alice"),
        room_id=room,
        username="carol",
        decision="approve",
        event=late.to_wire(),
    )
    assert full.code == "room_full"
