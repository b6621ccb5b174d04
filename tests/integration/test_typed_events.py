"""The client's typed events and its one room-id type, against a real server.

Listeners match events with `isinstance` and read typed fields; a room is named by an
int (or its Contact) everywhere, and a room number passed as a str is refused instead
of quietly naming a user with no messages.
"""

from __future__ import annotations

import dataclasses

import pytest

from client.core import (
    Contact,
    ContactAdded,
    Event,
    KeyTrusted,
    MessageReceived,
    MessageSent,
    MessageStatusChanged,
    RoomMemberChanged,
)
from common.errors import RequestError
from tests.integration.conftest import RunningServer
from tests.integration.helpers import (
    WAIT,
    Accounts,
    befriend,
    make_accounts,
    serve_one_module,
)

shared_server = pytest.fixture(scope="module", name="shared_server")(serve_one_module)
accounts = pytest.fixture(name="accounts")(make_accounts)


def test_events_are_typed_and_carry_their_kind(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    befriend(alice, bob)
    [added] = [e for e in alice.events.matching("contact_added") if isinstance(e, ContactAdded)]
    assert isinstance(added.contact, Contact) and added.contact.id == bob.name

    sent = alice.client.send_text(bob.name, "typed hello")
    own = alice.client.wait_for_event(
        lambda e: isinstance(e, MessageSent) and e.message.message_id == sent.message_id, WAIT
    )
    assert isinstance(own, MessageSent) and own.kind == "message_sent"
    assert own.message.outgoing and own.message.text == "typed hello"

    got = bob.client.wait_for_event(
        lambda e: isinstance(e, MessageReceived) and e.message.message_id == sent.message_id, WAIT
    )
    assert isinstance(got, MessageReceived) and got.kind == "message"
    assert got.data == {"message": got.message}  # the generic view matchers use
    status = alice.client.wait_for_event(
        lambda e: isinstance(e, MessageStatusChanged) and e.status == "delivered", WAIT
    )
    assert isinstance(status, MessageStatusChanged) and status.message_id == sent.message_id
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.status = "failed"  # type: ignore[misc]


def test_a_room_id_is_an_int_everywhere(shared_server: RunningServer, accounts: Accounts) -> None:
    owner = accounts.user(shared_server, "owner")
    member = accounts.user(shared_server, "member")
    room = owner.client.create_room("ints only")
    assert room.room_id == int(room.id)
    member.client.join_room(room)  # the Contact works as well as the number
    joined = owner.client.wait_for_event(lambda e: isinstance(e, RoomMemberChanged), WAIT)
    assert isinstance(joined, RoomMemberChanged)
    assert (joined.room_id, joined.username, joined.event) == (room.room_id, member.name, "joined")
    assert {m["username"] for m in owner.client.room_members(room.room_id)} == {
        owner.name,
        member.name,
    }
    assert owner.client.room_members(room) == owner.client.room_members(room.room_id)

    sent = owner.client.send_text(room.room_id, "by number")
    assert [m.message_id for m in owner.client.history(room.room_id)] == [sent.message_id]
    assert owner.client.history(room) == owner.client.history(room.room_id)
    for misuse in (
        lambda: owner.client.history(room.id),
        lambda: owner.client.mark_read(room.id),
        lambda: owner.client.send_text(room.id, "as a str"),
    ):
        with pytest.raises(RequestError) as refused:
            misuse()
        assert refused.value.code == "invalid_target"
    with pytest.raises(TypeError):
        owner.client.join_room(room.id)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a room"):
        Contact("user", owner.name, owner.name).room_id  # noqa: B018


def test_trusting_a_key_is_an_event_and_the_only_list_of_changed_keys(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(shared_server, "alice")
    assert alice.client.pending_key_changes() == []
    with pytest.raises(RequestError):
        alice.client.trust_new_key("nobody_here")
    assert not [e for e in alice.events.events if isinstance(e, KeyTrusted)]
    assert all(isinstance(e, Event) for e in alice.events.events)
