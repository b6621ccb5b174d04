"""Sender chains in the client (`client.core.chains`): sealing once for many, who gets a
distribution and when, rotation, replayed distributions, out-of-order delivery, and
chain state kept sealed in the store."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.core.chains import ChainBook, direct_conversation, room_conversation
from client.core.kem_keys import new_user_keys, signed_current
from common.crypto.envelope_v2 import envelope_header
from common.crypto.kem import SignedKemKey
from common.crypto.keys import UserKeys
from common.crypto.primitives import ed25519_public_bytes
from common.crypto.sender_chain import RotationPolicy, RotationReason
from common.errors import EndToEndError

NOW = 1_700_000_000_000


class Records:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], bytes] = {}

    def load_chain(self, role: str, conversation: str, sender: str) -> bytes | None:
        return self.rows.get((role, conversation, sender))

    def save_chain(self, role: str, conversation: str, sender: str, sealed: bytes) -> None:
        self.rows[(role, conversation, sender)] = sealed


class Person:
    def __init__(self, name: str, policy: RotationPolicy | None = None) -> None:
        self.name = name
        self.keys: UserKeys = new_user_keys(NOW)
        self.records = Records()
        self.clock = NOW
        self.policy = policy
        self.book = self.fresh_book()

    def fresh_book(self) -> ChainBook:
        """A new ChainBook on the same store: what a restart of the client sees."""
        return ChainBook(
            username=self.name,
            keys=self.keys,
            records=self.records,
            policy=self.policy,
            clock=lambda: self.clock,
        )

    @property
    def kem(self) -> SignedKemKey:
        return signed_current(self.keys)

    @property
    def identity(self) -> bytes:
        return ed25519_public_bytes(self.keys.identity)

    def take(self, conversation: str, sender: Person, data: bytes) -> bool:
        return self.book.take_distribution(
            conversation=conversation,
            sender=sender.name,
            sender_identity=sender.identity,
            data=data,
        )

    def open(self, conversation: str, sender: Person, envelope: bytes) -> bytes:
        opened = self.book.open(
            conversation=conversation,
            sender=sender.name,
            sender_identity=sender.identity,
            envelope=envelope,
        )
        return opened.body.body


ROOM = room_conversation(5)


def test_one_envelope_for_every_member_and_distributions_only_to_newcomers() -> None:
    alice, bob, carol = Person("alice"), Person("bob"), Person("carol")
    first = alice.book.seal(conversation=ROOM, recipients={"bob": bob.kem}, body=b"one")
    assert first.started and set(first.distributions) == {"bob"}
    assert bob.take(ROOM, alice, first.distributions["bob"])
    assert bob.open(ROOM, alice, first.envelope) == b"one"

    second = alice.book.seal(
        conversation=ROOM, recipients={"bob": bob.kem, "carol": carol.kem}, body=b"two"
    )
    assert not second.started and set(second.distributions) == {"carol"}  # bob has it
    assert carol.take(ROOM, alice, second.distributions["carol"])
    assert bob.open(ROOM, alice, second.envelope) == b"two"
    assert carol.open(ROOM, alice, second.envelope) == b"two"
    with pytest.raises(EndToEndError):  # a joiner cannot read what came before
        carol.open(ROOM, alice, first.envelope)


def test_a_member_leaving_rotates_the_chain_and_the_leaver_cannot_read_on() -> None:
    alice, bob, carol = Person("alice"), Person("bob"), Person("carol")
    both = {"bob": bob.kem, "carol": carol.kem}
    before = alice.book.seal(conversation=ROOM, recipients=both, body=b"all")
    for person in (bob, carol):
        person.take(ROOM, alice, before.distributions[person.name])
    after = alice.book.seal(conversation=ROOM, recipients={"bob": bob.kem}, body=b"no carol")
    assert after.rotated is RotationReason.MEMBER_LEFT and after.chain_id != before.chain_id
    assert set(after.distributions) == {"bob"}
    bob.take(ROOM, alice, after.distributions["bob"])
    assert bob.open(ROOM, alice, after.envelope) == b"no carol"
    with pytest.raises(EndToEndError):
        carol.open(ROOM, alice, after.envelope)


def test_rotation_after_n_messages_and_after_d_days() -> None:
    alice = Person("alice", RotationPolicy(max_messages=3, max_age_ms=1000))
    bob = Person("bob")
    chats = [alice.book.seal(conversation=ROOM, recipients={"bob": bob.kem}, body=b"x")]
    chats += [alice.book.seal(conversation=ROOM, recipients={"bob": bob.kem}, body=b"x")]
    chats += [alice.book.seal(conversation=ROOM, recipients={"bob": bob.kem}, body=b"x")]
    fourth = alice.book.seal(conversation=ROOM, recipients={"bob": bob.kem}, body=b"x")
    assert fourth.rotated is RotationReason.MESSAGE_LIMIT and "bob" in fourth.distributions
    alice.clock += 1000
    aged = alice.book.seal(conversation=ROOM, recipients={"bob": bob.kem}, body=b"x")
    assert aged.rotated is RotationReason.AGE_LIMIT


def test_out_of_order_delivery_opens_and_a_used_key_is_gone() -> None:
    alice, bob = Person("alice"), Person("bob")
    chat = direct_conversation("alice", "bob")
    sealed = [
        alice.book.seal(conversation=chat, recipients={"bob": bob.kem}, body=f"{n}".encode())
        for n in range(4)
    ]
    bob.take(chat, alice, sealed[0].distributions["bob"])
    assert bob.open(chat, alice, sealed[3].envelope) == b"3"  # skips 0..2, keeps their keys
    assert bob.open(chat, alice, sealed[1].envelope) == b"1"
    with pytest.raises(EndToEndError):  # used: the key was deleted
        bob.open(chat, alice, sealed[1].envelope)
    restarted = bob.fresh_book()  # the skipped keys and the deletion were persisted
    assert (
        restarted.open(
            conversation=chat,
            sender="alice",
            sender_identity=alice.identity,
            envelope=sealed[0].envelope,
        ).skipped
        == ()
    )
    with pytest.raises(EndToEndError):
        restarted.open(
            conversation=chat,
            sender="alice",
            sender_identity=alice.identity,
            envelope=sealed[3].envelope,
        )


def test_a_replayed_distribution_is_refused_and_cannot_rewind_the_chain() -> None:
    alice, bob = Person("alice"), Person("bob")
    first = alice.book.seal(conversation=ROOM, recipients={"bob": bob.kem}, body=b"one")
    assert bob.take(ROOM, alice, first.distributions["bob"])
    assert bob.open(ROOM, alice, first.envelope) == b"one"
    assert not bob.take(ROOM, alice, first.distributions["bob"])  # replay: refused
    with pytest.raises(EndToEndError):  # and the used key stays gone
        bob.open(ROOM, alice, first.envelope)


def test_a_distribution_is_bound_to_its_conversation_and_recipient() -> None:
    alice, bob, carol = Person("alice"), Person("bob"), Person("carol")
    sealed = alice.book.seal(conversation=ROOM, recipients={"bob": bob.kem}, body=b"x")
    with pytest.raises(EndToEndError):
        bob.take(room_conversation(6), alice, sealed.distributions["bob"])
    with pytest.raises(EndToEndError):
        carol.take(ROOM, alice, sealed.distributions["bob"])


def test_chain_state_is_sealed_at_rest_and_bound_to_its_row() -> None:
    alice, bob = Person("alice"), Person("bob")
    sealed = alice.book.seal(conversation=ROOM, recipients={"bob": bob.kem}, body=b"x")
    bob.take(ROOM, alice, sealed.distributions["bob"])
    state = alice.book._own[ROOM].state
    for row in (*alice.records.rows.values(), *bob.records.rows.values()):
        assert state.chain_key not in row and b"chain" not in row
    row = alice.records.rows[("send", ROOM, "alice")]
    alice.records.rows[("send", room_conversation(6), "alice")] = row  # moved to another chat
    with pytest.raises(EndToEndError):
        alice.fresh_book().seal(conversation=room_conversation(6), recipients={}, body=b"x")
    # and the sender's next message continues the chain after a restart
    again = alice.fresh_book().seal(conversation=ROOM, recipients={"bob": bob.kem}, body=b"y")
    assert envelope_header(again.envelope).iteration == 1 and not again.distributions
    assert bob.open(ROOM, alice, again.envelope) == b"y"


def test_a_recipient_without_a_kem_key_gets_its_state_once_it_has_one() -> None:
    alice, bob = Person("alice"), Person("bob")
    first = alice.book.seal(conversation=ROOM, recipients={"bob": None}, body=b"x")
    assert first.distributions == {}
    second = alice.book.seal(conversation=ROOM, recipients={"bob": bob.kem}, body=b"y")
    assert set(second.distributions) == {"bob"}
    bob.take(ROOM, alice, second.distributions["bob"])
    assert bob.open(ROOM, alice, second.envelope) == b"y"


def test_a_resend_after_a_refused_send_reaches_the_newcomer_without_alarming_others() -> None:
    alice, bob, carol = Person("alice"), Person("bob"), Person("carol")
    first = alice.book.seal(conversation=ROOM, recipients={"bob": bob.kem}, body=b"one")
    bob.take(ROOM, alice, first.distributions["bob"])
    bob.open(ROOM, alice, first.envelope)
    both = {"bob": bob.kem, "carol": carol.kem}
    alice.book.seal(conversation=ROOM, recipients=both, body=b"refused")  # never delivered
    alice.clock += 40  # the refusal came back: a copy sealed anew is newer than bob's
    again = alice.book.seal(conversation=ROOM, recipients=both, body=b"two", redistribute=True)
    assert set(again.distributions) == {"bob", "carol"}
    assert bob.take(ROOM, alice, again.distributions["bob"])  # a resend, not a replay
    assert carol.take(ROOM, alice, again.distributions["carol"])
    assert bob.open(ROOM, alice, again.envelope) == b"two"
    assert carol.open(ROOM, alice, again.envelope) == b"two"


@given(
    order=st.permutations(list(range(8))),
    restarts=st.sets(st.integers(0, 7)),
    repeats=st.lists(st.integers(0, 7), max_size=4),
)
@settings(max_examples=25, deadline=None)
def test_any_order_with_restarts_opens_each_envelope_exactly_once(
    sender_and_reader: tuple[Person, Person],
    order: list[int],
    restarts: set[int],
    repeats: list[int],
) -> None:
    """Out of order, across restarts of the reader (state from the sealed store only), a
    message opens once; after that, the same envelope (captured or repeated) never does."""
    alice, bob = sender_and_reader
    chat = direct_conversation("alice", "bob") + os.urandom(4).hex()  # a fresh chain per example
    sealed = [
        alice.book.seal(conversation=chat, recipients={"bob": bob.kem}, body=bytes([n]))
        for n in range(8)
    ]
    reader = bob.fresh_book()
    reader.take_distribution(
        conversation=chat,
        sender="alice",
        sender_identity=alice.identity,
        data=sealed[0].distributions["bob"],
    )
    opened: list[int] = []
    for step, n in enumerate(order):
        if step in restarts:
            reader = bob.fresh_book()
        body = reader.open(
            conversation=chat,
            sender="alice",
            sender_identity=alice.identity,
            envelope=sealed[n].envelope,
        ).body.body
        opened.append(body[0])
    assert sorted(opened) == list(range(8)) and opened == order
    for n in repeats:
        with pytest.raises(EndToEndError):
            bob.fresh_book().open(
                conversation=chat,
                sender="alice",
                sender_identity=alice.identity,
                envelope=sealed[n].envelope,
            )


@pytest.fixture(scope="module")
def sender_and_reader() -> tuple[Person, Person]:
    return Person("alice"), Person("bob")
