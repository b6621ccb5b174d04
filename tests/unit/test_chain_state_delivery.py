"""Our chain's state is never dropped on the way to a friend (`client.core.receipts`,
`client.core.outbox`, `ChainBook.dropped`).

Receipts and messages are envelopes on our own sender chain; the first envelope of a
chain carries the chain's state to the friend. A receipt sealed while the connection
was down used to wait in memory only: a client closed meanwhile (a move to another
server, a restart) lost it, and with it the state, so the friend held every later
envelope of that chain, unreadable. Params refused for good (a receipt, or a message
the outbox gives up on) leave the friend without the state likewise. These tests use
real chains and a real local store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.core.chains import ChainBook, direct_conversation
from client.core.kem_keys import new_user_keys, signed_current
from client.core.models import ChatMessage
from client.core.outbox import Outbox
from client.core.receipts import ReceiptSender
from client.core.store import LocalStore
from common.crypto.kem import SignedKemKey
from common.crypto.keys import UserKeys
from common.crypto.primitives import ed25519_public_bytes
from common.errors import ConnectionLost, EndToEndError, RequestError
from common.protocol.opcodes import MessageType

NOW = 1_700_000_000_000


class Friend:
    """Bob: his keys and a chain book of his own, to read what alice sends him."""

    def __init__(self, tmp_path: Path) -> None:
        self.keys: UserKeys = new_user_keys(NOW)
        self.store = LocalStore(tmp_path / "bob.sqlite3")
        self.book = ChainBook(username="bob", keys=self.keys, records=self.store, clock=lambda: NOW)

    def reads(self, alice: UserKeys, params: dict[str, Any]) -> bool:
        """Take the distribution the params carry (if any), then try the envelope."""
        conversation = direct_conversation("alice", "bob")
        identity = ed25519_public_bytes(alice.identity)
        data = params["distributions"].get("bob")
        if data is not None:
            self.book.take_distribution(
                conversation=conversation, sender="alice", sender_identity=identity, data=data
            )
        try:
            self.book.open(
                conversation=conversation,
                sender="alice",
                sender_identity=identity,
                envelope=params["envelope"],
            )
        except EndToEndError:  # not openable: no state for this chain (yet)
            return False
        return True


class BobOnly:
    """Recipients: bob with his verified KEM key."""

    def __init__(self, kem: SignedKemKey) -> None:
        self.kem = kem

    def direct(self, username: str, *, refresh: bool = False) -> dict[str, SignedKemKey | None]:
        return {username: self.kem}

    def room(
        self, room_id: int, me: str, *, refresh: bool = False
    ) -> tuple[dict[str, SignedKemKey | None], bytes]:
        raise AssertionError("these tests send to bob only")


class Server:
    """SEND_MESSAGE as the test wants it to go: taken, lost connection, or refused."""

    def __init__(self) -> None:
        self.taken: list[dict[str, Any]] = []
        self.failure: Exception | None = None

    def request(self, kind: MessageType, params: dict[str, Any] | None) -> dict[str, Any]:
        assert kind is MessageType.SEND_MESSAGE and params is not None
        if self.failure is not None:
            raise self.failure
        self.taken.append(params)
        return {}


class Alice:
    def __init__(self, tmp_path: Path, bob: Friend) -> None:
        self.keys = new_user_keys(NOW)
        self.path = tmp_path / "alice.sqlite3"
        self.bob = bob
        self.server = Server()
        self.store = LocalStore(self.path)
        self.sender = self.fresh_sender()

    def fresh_sender(self) -> ReceiptSender:
        """A new client run on the same store: what a restart or a move sees."""
        self.book = ChainBook(
            username="alice", keys=self.keys, records=self.store, clock=lambda: NOW
        )
        return ReceiptSender(
            username="alice",
            chains=self.book,
            recipients=BobOnly(signed_current(self.bob.keys)),
            request=self.server.request,
            clock=lambda: NOW,
            queue=self.store,
        )

    def restart(self) -> None:
        self.store.close()
        self.store = LocalStore(self.path)
        self.sender = self.fresh_sender()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Alice, Friend]]:
    bob = Friend(tmp_path)
    alice = Alice(tmp_path, bob)
    yield alice, bob
    alice.store.close()
    bob.store.close()


def test_a_receipt_sealed_offline_survives_a_restart_and_carries_the_chain_state(
    pair: tuple[Alice, Friend],
) -> None:
    alice, bob = pair
    alice.server.failure = ConnectionLost("no connection")
    alice.sender.send("bob", "delivered", ["m1"])  # the first envelope of the chain
    assert alice.server.taken == [] and len(alice.store.queued_receipts()) == 1
    alice.restart()
    alice.server.failure = None
    alice.sender.send("bob", "delivered", ["m2"])  # goes at once, no state for bob
    assert alice.server.taken[0]["distributions"] == {}
    assert not bob.reads(alice.keys, alice.server.taken[0])  # held by bob: no state yet
    alice.sender.flush()  # after the login: the queued one goes, as it was sealed
    first = alice.server.taken[1]
    assert set(first["distributions"]) == {"bob"}
    assert bob.reads(alice.keys, first)
    assert bob.reads(alice.keys, alice.server.taken[0])  # and what was held opens now
    assert alice.store.queued_receipts() == []


def test_a_refused_receipt_sends_the_chain_state_again_with_the_next_envelope(
    pair: tuple[Alice, Friend],
) -> None:
    alice, bob = pair
    alice.server.failure = RequestError("bad_request", "refused")
    alice.sender.send("bob", "delivered", ["m1"])  # carried the state; refused for good
    assert alice.store.queued_receipts() == []  # nothing waits for a refusal
    alice.server.failure = None
    alice.sender.send("bob", "read", ["m1"])
    again = alice.server.taken[0]
    assert set(again["distributions"]) == {"bob"}
    assert bob.reads(alice.keys, again)


def test_receipts_after_the_state_went_carry_no_state(pair: tuple[Alice, Friend]) -> None:
    """The control: a chain's state goes once, with its first envelope."""
    alice, bob = pair
    alice.sender.send("bob", "delivered", ["m1"])
    alice.sender.send("bob", "read", ["m1"])
    first, second = alice.server.taken
    assert set(first["distributions"]) == {"bob"} and second["distributions"] == {}
    assert bob.reads(alice.keys, first) and bob.reads(alice.keys, second)


def _text(alice: Alice, message_id: str) -> tuple[ChatMessage, dict[str, Any]]:
    """A text to bob sealed on alice's chain, as `Outgoing` seals one."""
    sealed = alice.book.seal(
        conversation=direct_conversation("alice", "bob"),
        recipients={"bob": signed_current(alice.bob.keys)},
        body=message_id.encode(),
    )
    message = ChatMessage(message_id, "user", "bob", "alice", NOW, "text", text="hi", outgoing=True)
    params = {
        "message_id": message_id,
        "target_type": "user",
        "target": "bob",
        "time": NOW,
        "envelope": sealed.envelope,
        "distributions": sealed.distributions,
        "attachments": [],
    }
    return message, params


def test_a_message_refused_for_good_sends_the_chain_state_again(
    pair: tuple[Alice, Friend],
) -> None:
    alice, bob = pair
    outbox = Outbox(
        alice.store,
        send=lambda params: alice.server.request(MessageType.SEND_MESSAGE, params),
        rebuild=lambda message, params: params,
        on_status=lambda message_id, status: None,
        on_dropped=alice.book.dropped,
    )
    alice.server.failure = RequestError("not_friends", "bob is not your friend")
    first, params = _text(alice, "a" * 32)
    assert set(params["distributions"]) == {"bob"}
    with pytest.raises(RequestError):
        outbox.submit(first, params)  # stored as failed: its state never reached bob
    alice.server.failure = None
    second, params = _text(alice, "b" * 32)
    assert set(params["distributions"]) == {"bob"}  # the state goes again
    outbox.submit(second, params)
    assert bob.reads(alice.keys, alice.server.taken[0])
