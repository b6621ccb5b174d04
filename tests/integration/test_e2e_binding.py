"""A sealed message names its conversation, so a server cannot relabel it.

The envelope's key derivation binds sender, recipient and message id, not whether the
message went to a friend or to which room. The client therefore seals `chat`
(`["user", recipient]` or `["room", room_id]`) inside the body and refuses, as the
visible "could not be decrypted" placeholder (still acknowledged, so it cannot jam the
queue), any delivery whose label disagrees. First with hand-made envelopes and real
keys and certificates; then with envelopes a real `ChatClient` sealed and a real
server delivered, relabelled the way a malicious server would.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import pytest

from client.core.binding import bind_chat
from client.core.bodies import UNDECRYPTABLE_TEXT, text_body
from client.core.chains import ChainBook
from client.core.inbox import Inbox
from client.core.keystore import KeyStore, server_id_for
from client.core.models import ChatKind, ChatMessage
from client.core.trust import CertificateBook, Identity
from common.crypto.certs import (
    ServerIdentity,
    build_csr,
    issue_certificate,
    load_user_certificate,
    verify_csr,
)
from common.crypto.e2e import seal
from common.crypto.keys import generate_user_keys
from common.protocol import codec
from common.protocol.message import Message
from common.protocol.opcodes import MessageType
from tests.integration.conftest import RunningServer
from tests.integration.helpers import (
    FAST_KEYS,
    Accounts,
    User,
    befriend,
    make_accounts,
    raw_connection,
    serve_one_module,
    wait_until,
)

shared_server = pytest.fixture(scope="module", name="shared_server")(serve_one_module)
accounts = pytest.fixture(name="accounts")(make_accounts)

ROOM = 7


class MemoryStore:
    """The slices of `LocalStore` an `Inbox` and a `CertificateBook` use."""

    def __init__(self) -> None:
        self.messages: list[ChatMessage] = []
        self.pins: dict[str, bytes] = {}
        self.chains: dict[tuple[str, str, str], bytes] = {}
        self.held: list[tuple[str, str, bytes]] = []

    def load_chain(self, role: str, conversation: str, sender: str) -> bytes | None:
        return self.chains.get((role, conversation, sender))

    def save_chain(self, role: str, conversation: str, sender: str, sealed: bytes) -> None:
        self.chains[(role, conversation, sender)] = sealed

    def hold_delivery(self, message_id: str, sender: str, delivery: bytes) -> None:
        self.held.append((message_id, sender, delivery))

    def held_deliveries(self, sender: str) -> list[bytes]:
        return [item[2] for item in self.held if item[1] == sender]

    def drop_held(self, sender: str) -> None:
        self.held = [item for item in self.held if item[1] != sender]

    def held_senders(self) -> list[str]:
        return list(dict.fromkeys(item[1] for item in self.held))

    def add_messages(self, ms: Sequence[ChatMessage]) -> list[bool]:
        self.messages.extend(ms)
        return [True] * len(ms)

    def pinned_certificate(self, username: str) -> bytes | None:
        return self.pins.get(username)

    def pin_certificate(self, username: str, der: bytes) -> None:
        self.pins[username] = der


@dataclasses.dataclass
class Receiver:
    """A recipient's real `Inbox` over an in-memory store."""

    identity: Identity
    store: MemoryStore
    inbox: Inbox
    acknowledged: list[str]

    def receive(self, delivery: dict[str, Any]) -> ChatMessage:
        before = len(self.store.messages)
        self.inbox.receive([delivery])
        assert len(self.store.messages) == before + 1, "a delivery is stored, never dropped"
        assert self.acknowledged[-1] == delivery["message_id"], "and always acknowledged"
        return self.store.messages[-1]


def make_receiver(identity: Identity, ca_der: bytes, certificates: dict[str, bytes]) -> Receiver:
    store = MemoryStore()
    acknowledged: list[str] = []
    book = CertificateBook(
        ca_certificate=ca_der,
        pins=store,
        fetch_user=lambda username: certificates[username],
        fetch_room=lambda room_id: {},
        on_key_changed=lambda *change: None,
    )
    chains = ChainBook(
        username=identity.username,
        keys=identity.keys,
        records=store,
        clock=lambda: 1_700_000_000_000,
    )
    inbox = Inbox(
        identity=identity,
        certificates=book,
        chains=chains,
        store=store,
        acknowledge=acknowledged.extend,
        announce=lambda message: None,
    )
    return Receiver(identity, store, inbox, acknowledged)


# ---------------------------------------------------------------- hand-made envelopes


@dataclasses.dataclass(frozen=True)
class World:
    alice: Identity
    bob: Identity
    ca_der: bytes
    certificates: dict[str, bytes]


def make_identity(ca: ServerIdentity, name: str) -> Identity:
    keys = generate_user_keys()
    der = issue_certificate(ca, verify_csr(build_csr(name, f"{name}@example.org", keys)))
    return Identity(name, keys, load_user_certificate(der, ca.certificate))


@pytest.fixture(scope="module")
def world() -> World:
    ca = ServerIdentity.create()
    alice, bob = make_identity(ca, "alice"), make_identity(ca, "bob")
    certificates = {i.username: i.certificate.der for i in (alice, bob)}
    return World(alice, bob, ca.certificate_der, certificates)


def sealed_delivery(
    world: World, body: bytes, target_type: str, target: str | int
) -> dict[str, Any]:
    """What the server stored before end-to-end v2 and pushes to bob now: alice's
    version-1 envelope for bob, labelled as given (history still opens, checked alike)."""
    message_id = os.urandom(16).hex()
    return {
        "message_id": message_id,
        "sender": "alice",
        "target_type": target_type,
        "target": target,
        "time": 1_700_000_000_000,
        "envelope": seal(
            world.alice.keys,
            world.alice.certificate.fingerprint,
            world.bob.certificate,
            message_id,
            body,
        ),
        "attachments": [],
    }


def raw_body(chat: Any) -> bytes:
    fields: dict[str, Any] = {"kind": "text", "text": "meet at 6", "font_size": 12}
    fields["color"] = "#000000"
    if chat is not None:
        fields["chat"] = chat
    return codec.encode(fields)


def test_a_correctly_labelled_direct_or_room_message_opens(world: World) -> None:
    bob = make_receiver(world.bob, world.ca_der, world.certificates)
    body = text_body("meet at 6", 12, "#000000")

    direct = bob.receive(sealed_delivery(world, bind_chat(body, "user", "bob"), "user", "bob"))
    room = bob.receive(sealed_delivery(world, bind_chat(body, "room", str(ROOM)), "room", ROOM))

    assert (direct.chat_kind, direct.chat_id, direct.text) == ("user", "alice", "meet at 6")
    assert (room.chat_kind, room.chat_id, room.text) == ("room", str(ROOM), "meet at 6")


@pytest.mark.parametrize(
    ("sealed_chat", "target_type", "target"),
    [
        pytest.param(["user", "bob"], "room", ROOM, id="direct-relabelled-as-room"),
        pytest.param(["room", ROOM], "user", "bob", id="room-relabelled-as-direct"),
        pytest.param(["room", ROOM], "room", ROOM + 1, id="room-moved-to-another-room"),
        pytest.param(["user", "bob"], "user", "carol", id="direct-labelled-for-someone-else"),
        pytest.param(["user", "carol"], "user", "bob", id="sealed-for-another-recipient"),
        pytest.param(["room", str(ROOM)], "room", ROOM, id="room-id-of-the-wrong-type"),
        pytest.param(["room", ROOM, "x"], "room", ROOM, id="extra-element"),
        pytest.param(None, "user", "bob", id="no-chat-sealed"),
        pytest.param("user:bob", "user", "bob", id="chat-not-a-list"),
    ],
)
def test_a_delivery_whose_label_differs_from_the_sealed_chat_is_refused(
    world: World, sealed_chat: Any, target_type: str, target: str | int
) -> None:
    bob = make_receiver(world.bob, world.ca_der, world.certificates)

    stored = bob.receive(sealed_delivery(world, raw_body(sealed_chat), target_type, target))

    assert stored.text == UNDECRYPTABLE_TEXT
    assert stored.kind == "text" and stored.attachment is None


@pytest.mark.parametrize(
    ("chat_kind", "chat_id", "expected"),
    [("user", "bob", ["user", "bob"]), ("room", "9", ["room", 9])],
)
def test_bind_chat_adds_the_conversation_and_keeps_the_body(
    chat_kind: ChatKind, chat_id: str, expected: list[Any]
) -> None:
    body = text_body("hi", 14, "#112233")
    bound = codec.decode(bind_chat(body, chat_kind, chat_id))
    assert bound == {**codec.decode(body), "chat": expected}


# ---------------------------------------------------------------- a real client and server


@dataclasses.dataclass
class Offline:
    """What the server pushed to a user who was offline, and that user's real inbox."""

    deliveries: dict[str, dict[str, Any]]
    receiver: Receiver


def log_in_bare(server: RunningServer, user: User, sender: User, count: int) -> Offline:
    """Log in as `user` on a bare connection (nothing is acknowledged) and collect the
    NEW_MESSAGE deliveries, with the user's keys from its key file."""
    pushes: list[Message] = []
    with raw_connection(server, pushes) as raw:
        reply = raw.request(MessageType.LOGIN, {"username": user.name, "password": user.password})

        def deliveries() -> list[dict[str, Any]]:
            news = [p.params["messages"] for p in pushes if p.type is MessageType.NEW_MESSAGE]
            return [item for batch in news for item in batch]

        wait_until(lambda: len(deliveries()) >= count, what="the offline messages")
        sender_der = raw.request(MessageType.CERTIFICATE, {"username": sender.name})["certificate"]
        ca_der = raw.server_certificate
    assert ca_der is not None
    server_id = server_id_for(server.fingerprint)
    keys = KeyStore(user.data_dir, FAST_KEYS).load(server_id, user.name, user.password)
    identity = Identity(user.name, keys, load_user_certificate(reply["certificate"], ca_der))
    receiver = make_receiver(identity, ca_der, {sender.name: sender_der})
    return Offline({d["message_id"]: d for d in deliveries()}, receiver)


def test_a_real_direct_message_relabelled_as_a_room_message_is_refused(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    befriend(alice, bob)
    room = alice.client.create_room(f"both {os.urandom(3).hex()}")
    bob.client.join_room(int(room.id))
    bob.client.close()
    sent = alice.client.send_text(bob.name, "direct secret")
    alice.events.status(sent.message_id, "sent")

    offline = log_in_bare(shared_server, bob, alice, 1)
    delivery = offline.deliveries[sent.message_id]
    assert (delivery["target_type"], delivery["target"]) == ("user", bob.name)

    honest = offline.receiver.receive(delivery)
    assert (honest.chat_kind, honest.chat_id, honest.text) == ("user", alice.name, "direct secret")
    relabelled = {**delivery, "target_type": "room", "target": int(room.id)}
    refused = offline.receiver.receive(relabelled)
    assert (refused.chat_kind, refused.chat_id) == ("room", room.id)
    assert refused.text == UNDECRYPTABLE_TEXT


def test_a_real_room_message_relabelled_as_direct_or_another_room_is_refused(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    room = alice.client.create_room(f"room {os.urandom(3).hex()}")
    other = alice.client.create_room(f"other {os.urandom(3).hex()}")
    bob.client.join_room(int(room.id))
    bob.client.join_room(int(other.id))
    bob.client.close()
    sent = alice.client.send_text(int(room.id), "room secret")
    alice.events.status(sent.message_id, "sent")

    offline = log_in_bare(shared_server, bob, alice, 1)
    delivery = offline.deliveries[sent.message_id]
    assert (delivery["target_type"], delivery["target"]) == ("room", int(room.id))

    honest = offline.receiver.receive(delivery)
    assert (honest.chat_kind, honest.chat_id, honest.text) == ("room", room.id, "room secret")
    as_direct = {**delivery, "target_type": "user", "target": bob.name}
    as_other_room = {**delivery, "target": int(other.id)}
    for relabelled in (as_direct, as_other_room):
        assert offline.receiver.receive(relabelled).text == UNDECRYPTABLE_TEXT
