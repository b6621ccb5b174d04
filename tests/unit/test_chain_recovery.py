"""A member that never got a sender's chain state asks for it, and gets exactly its copy
(`client.core.chain_recovery`, `ChainBook.asked`, `client.core.control_bodies`).

The sender keeps its chain's first state for the chain's life, and the iteration each
member's copy started at: a copy given again is the one first given, so what the member
holds opens, and nothing sealed before it joined does. Real chain books throughout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from client.core.binding import bind_chat
from client.core.bodies import Delivery
from client.core.chain_recovery import ASK_AGAIN, ASK_DELAY, MAX_ASKS, ChainRecovery
from client.core.chains import OwnChain, room_conversation
from client.core.control_bodies import (
    ChainCopy,
    ChainRequest,
    Receipt,
    chain_copy_body,
    chain_request_body,
    parse_control,
    receipt_body,
)
from common.crypto.sender_chain import RotationPolicy, SenderChain, state_at
from common.errors import EndToEndError, RemoteProtocolError
from tests.unit.test_chains import Person

ROOM = room_conversation(7)


def seal(sender: Person, recipients: dict[str, Person], body: bytes) -> Any:
    return sender.book.seal(
        conversation=ROOM, recipients={n: p.kem for n, p in recipients.items()}, body=body
    )


def reads(reader: Person, sender: Person, sealed: Any) -> bytes | None:
    data = sealed.distributions.get(reader.name)
    if data is not None:
        reader.take(ROOM, sender, data)
    try:
        return reader.open(ROOM, sender, sealed.envelope)
    except EndToEndError:
        return None


# ---------------------------------------------------------------- the sender's copies


def test_an_asked_copy_opens_everything_held_since_the_member_was_first_given_it() -> None:
    alice, bob = Person("alice"), Person("bob")
    sent = [seal(alice, {"bob": bob}, f"m{n}".encode()) for n in range(4)]
    lost = sent[0]  # the envelope carrying bob's copy never reached him
    assert set(lost.distributions) == {"bob"}
    assert [reads(bob, alice, s) for s in sent[1:]] == [None, None, None]
    assert alice.book.asked(ROOM, "bob", lost.chain_id)
    alice.clock += 1
    copy = seal(alice, {"bob": bob}, b"copy")
    assert set(copy.distributions) == {"bob"}
    assert reads(bob, alice, copy) == b"copy"
    assert [reads(bob, alice, s) for s in sent[1:]] == [b"m1", b"m2", b"m3"]
    # the lost envelope turns up after all: its copy is no replay, and it opens
    assert bob.take(ROOM, alice, lost.distributions["bob"])
    assert bob.open(ROOM, alice, lost.envelope) == b"m0"
    assert seal(alice, {"bob": bob}, b"next").distributions == {}  # owed once


def test_a_copy_given_again_starts_where_the_member_joined_never_earlier() -> None:
    alice, bob, carol = Person("alice"), Person("bob"), Person("carol")
    before = [seal(alice, {"bob": bob}, f"before {n}".encode()) for n in range(3)]
    joined = seal(alice, {"bob": bob, "carol": carol}, b"carol is here")
    assert set(joined.distributions) == {"carol"}
    assert alice.book.asked(ROOM, "carol", joined.chain_id)
    alice.clock += 1
    copy = seal(alice, {"bob": bob, "carol": carol}, b"copy")
    assert reads(carol, alice, copy) == b"copy"
    assert reads(carol, alice, joined) == b"carol is here"
    assert [reads(carol, alice, s) for s in before] == [None, None, None]


def test_only_a_member_given_the_chain_may_ask_for_it() -> None:
    alice, bob = Person("alice"), Person("bob")
    first = seal(alice, {"bob": bob}, b"x")
    assert not alice.book.asked(ROOM, "mallory", first.chain_id)
    assert not alice.book.asked(ROOM, "bob", bytes(16))  # a chain that is not ours
    assert not alice.book.asked(room_conversation(8), "bob", first.chain_id)


def test_the_chain_before_a_rotation_can_still_be_asked_for() -> None:
    alice, bob = Person("alice", RotationPolicy(max_messages=2)), Person("bob")
    old = [seal(alice, {"bob": bob}, f"old {n}".encode()) for n in range(2)]
    new = seal(alice, {"bob": bob}, b"new")
    assert new.started and new.chain_id != old[0].chain_id
    assert reads(bob, alice, new) == b"new"
    assert alice.book.asked(ROOM, "bob", old[0].chain_id)
    alice.clock += 1
    copy = seal(alice, {"bob": bob}, b"copy")  # bob needs nothing of the new chain
    assert reads(bob, alice, copy) == b"copy"
    assert [reads(bob, alice, s) for s in old] == [b"old 0", b"old 1"]
    assert reads(bob, alice, seal(alice, {"bob": bob}, b"after")) == b"after"


def test_two_rotations_later_the_old_chain_is_gone() -> None:
    alice, bob = Person("alice", RotationPolicy(max_messages=1)), Person("bob")
    chains = [seal(alice, {"bob": bob}, f"{n}".encode()).chain_id for n in range(3)]
    assert len(set(chains)) == 3
    assert not alice.book.asked(ROOM, "bob", chains[0])
    assert alice.book.asked(ROOM, "bob", chains[1])


def test_what_is_owed_survives_a_restart_of_the_sender() -> None:
    alice, bob = Person("alice"), Person("bob")
    lost = seal(alice, {"bob": bob}, b"lost")
    assert alice.book.asked(ROOM, "bob", lost.chain_id)
    alice.book = alice.fresh_book()
    alice.clock += 1
    copy = seal(alice, {"bob": bob}, b"copy")
    assert reads(bob, alice, copy) == b"copy" and reads(bob, alice, lost) == b"lost"


def test_a_copy_bob_already_had_is_taken_quietly_and_a_replay_is_still_refused() -> None:
    alice, bob = Person("alice"), Person("bob")
    first = seal(alice, {"bob": bob}, b"one")
    assert reads(bob, alice, first) == b"one"
    assert alice.book.asked(ROOM, "bob", first.chain_id)  # a request that crossed the state
    alice.clock += 1
    copy = seal(alice, {"bob": bob}, b"copy")
    assert bob.take(ROOM, alice, copy.distributions["bob"])  # sealed anew: not a replay
    assert bob.open(ROOM, alice, copy.envelope) == b"copy"
    assert not bob.take(ROOM, alice, first.distributions["bob"])  # the old one again: replay


def test_a_chain_record_from_before_first_states_were_kept_still_loads() -> None:
    state = SenderChain.start().state()
    legacy = {"state": state.to_bytes(), "started": 1, "sent": 3, "members": ["bob"]}
    chain = OwnChain.from_value(legacy)
    assert chain.members == {"bob"} and chain.start is None and chain.owed == set()
    assert chain.state_for("bob") == state  # the current state: all it can give


def test_state_at_moves_forward_only() -> None:
    start = SenderChain.start().state()
    chain = SenderChain(start)
    for _ in range(5):
        chain.next_keys()
    assert state_at(start, 5) == chain.state()
    assert state_at(start, 0) == start
    with pytest.raises(EndToEndError):
        state_at(chain.state(), 2)


# ---------------------------------------------------------------- the bodies


def test_control_bodies_are_told_from_messages_in_one_decode() -> None:
    room = bind_chat(chain_request_body("alice", bytes(range(16))), "room", "7")
    assert parse_control(room, "room", 7, "bob") == ChainRequest("alice", bytes(range(16)))
    assert parse_control(bind_chat(chain_copy_body(), "room", "7"), "room", 7, "bob") == (
        ChainCopy()
    )
    receipt = bind_chat(receipt_body("read", ["a" * 32]), "user", "bob")
    assert parse_control(receipt, "user", "bob", "bob") == Receipt("read", ("a" * 32,))
    text = bind_chat(b"\x07\x00\x00\x00\x00", "room", "7")  # an empty dict: a message
    assert parse_control(text, "room", 7, "bob") is None


@pytest.mark.parametrize(
    "body",
    [
        bind_chat(chain_request_body("alice", bytes(16)), "room", "8"),  # another room
        bind_chat(chain_request_body("alice", bytes(16)), "user", "bob"),  # a direct chat
        bind_chat(receipt_body("read", ["a" * 32]), "room", "7"),  # a receipt in a room
    ],
)
def test_a_control_body_sealed_for_another_conversation_is_refused(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_control(body, "room", 7, "bob")


@pytest.mark.parametrize(
    "value",
    [
        {"kind": "chain_request", "sender": "alice", "chain": b"short"},
        {"kind": "chain_request", "sender": "", "chain": bytes(16)},
        {"kind": "chain_request", "sender": "\uff41lice", "chain": bytes(16)},  # fullwidth
        {"kind": "chain_request", "sender": 5, "chain": bytes(16)},
    ],
)
def test_a_malformed_chain_request_is_refused(value: dict[str, Any]) -> None:
    from common.protocol import codec

    body = bind_chat(codec.encode(value), "room", "7")
    with pytest.raises(RemoteProtocolError):
        parse_control(body, "room", 7, "bob")


# ---------------------------------------------------------------- asking and answering


class Sent:
    def __init__(self) -> None:
        self.bodies: list[tuple[str, str, bytes, str]] = []

    def send_control(self, chat_kind: Any, target: str, body: bytes, what: str = "") -> None:
        self.bodies.append((chat_kind, target, body, what))


class Known:
    def __init__(self) -> None:
        self.known: set[bytes] = set()
        self.asked_for: list[tuple[str, str, bytes]] = []
        self.given = True

    def knows(self, conversation: str, sender: str, chain_id: bytes) -> bool:
        return chain_id in self.known

    def asked(self, conversation: str, requester: str, chain_id: bytes) -> bool:
        self.asked_for.append((conversation, requester, chain_id))
        return self.given


class Clock:
    """A fake scheduler: `run_due(t)` runs what is due by then."""

    def __init__(self) -> None:
        self.now = 0.0
        self.due: list[tuple[float, Callable[[], None]]] = []

    def schedule(self, delay: float, action: Callable[[], None]) -> None:
        self.due.append((self.now + delay, action))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        ready = [item for item in self.due if item[0] <= self.now]
        self.due = [item for item in self.due if item[0] > self.now]
        for _, action in ready:
            action()


def delivery(sender: str = "alice", target_type: str = "room", target: Any = 7) -> Delivery:
    return Delivery("b" * 32, sender, target_type, target, 0, b"\x02", ())  # type: ignore[arg-type]


@pytest.fixture
def recovery() -> tuple[ChainRecovery, Sent, Known, Clock]:
    sent, known, clock = Sent(), Known(), Clock()
    return ChainRecovery(chains=known, control=sent, schedule=clock.schedule), sent, known, clock


def test_a_missing_chain_is_asked_for_after_a_moment_in_its_conversation(
    recovery: tuple[ChainRecovery, Sent, Known, Clock],
) -> None:
    book, sent, _, clock = recovery
    chain = bytes(range(16))
    for _ in range(5):  # five held envelopes of one chain: one request
        book.missing(delivery(), ROOM, chain)
    clock.advance(ASK_DELAY - 0.1)
    assert sent.bodies == []
    clock.advance(0.1)
    [(kind, target, body, _)] = sent.bodies
    assert (kind, target) == ("room", "7")
    assert parse_control(bind_chat(body, "room", "7"), "room", 7, "x") == ChainRequest(
        "alice", chain
    )


def test_a_state_that_came_meanwhile_is_not_asked_for(
    recovery: tuple[ChainRecovery, Sent, Known, Clock],
) -> None:
    book, sent, known, clock = recovery
    book.missing(delivery("alice", "user", "bob"), "direct", bytes(16))
    known.known.add(bytes(16))
    clock.advance(ASK_DELAY)
    assert sent.bodies == []


def test_an_unanswered_request_is_repeated_a_few_times_then_given_up(
    recovery: tuple[ChainRecovery, Sent, Known, Clock],
) -> None:
    book, sent, _, clock = recovery
    book.missing(delivery("alice", "user", "bob"), "direct", bytes(16))
    clock.advance(ASK_DELAY)
    for _ in range(MAX_ASKS + 3):
        clock.advance(ASK_AGAIN)
    assert len(sent.bodies) == MAX_ASKS
    assert {(kind, target) for kind, target, _, _ in sent.bodies} == {("user", "alice")}
    book.missing(delivery("alice", "user", "bob"), "direct", bytes(16))
    clock.advance(ASK_DELAY)
    assert len(sent.bodies) == MAX_ASKS  # not asked again while logged in


def test_a_request_is_answered_with_a_copy_only_when_one_is_owed(
    recovery: tuple[ChainRecovery, Sent, Known, Clock],
) -> None:
    book, sent, known, _ = recovery
    book.requested(delivery("bob", "room", 7), ROOM, bytes(16))
    assert known.asked_for == [(ROOM, "bob", bytes(16))]
    [(kind, target, body, _)] = sent.bodies
    assert (kind, target) == ("room", "7") and body == chain_copy_body()
    known.given = False
    book.requested(delivery("mallory", "room", 7), ROOM, bytes(16))
    assert len(sent.bodies) == 1


def test_nothing_is_asked_after_logout(
    recovery: tuple[ChainRecovery, Sent, Known, Clock],
) -> None:
    book, sent, _, clock = recovery
    book.missing(delivery(), ROOM, bytes(16))
    book.close()
    clock.advance(ASK_DELAY)
    book.missing(delivery(), ROOM, bytes(range(16)))
    clock.advance(ASK_DELAY)
    assert sent.bodies == []
