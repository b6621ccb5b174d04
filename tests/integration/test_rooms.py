"""Group chat (rooms) end to end: create, join, leave, members, messages to online and
offline members, membership events, and every refusal."""

from __future__ import annotations

import os

import pytest

from common.protocol.message import Message
from common.protocol.opcodes import MessageType
from tests.integration.conftest import RunningServer
from tests.integration.helpers import (
    Accounts,
    User,
    added_contact,
    contact_of,
    make_accounts,
    raw_connection,
    refused,
    serve_one_module,
    wait_until,
)

shared_server = pytest.fixture(scope="module", name="shared_server")(serve_one_module)
accounts = pytest.fixture(name="accounts")(make_accounts)


def room_name(prefix: str = "room") -> str:
    return f"{prefix} 小组 {os.urandom(3).hex()}"


def members_of(user: User, room_id: int) -> dict[str, bool]:
    return {m["username"]: m["online"] for m in user.client.room_members(room_id)}


def test_create_join_members_and_leave(shared_server: RunningServer, accounts: Accounts) -> None:
    owner = accounts.user(shared_server, "owner")
    joiner = accounts.user(shared_server, "joiner")
    name = room_name()

    room = owner.client.create_room(name)
    assert room.kind == "room" and room.id.isdigit() and int(room.id) > 0
    assert (room.name, room.members) == (name, (owner.name,))
    room_id = int(room.id)
    assert (
        owner.events.wait_one("contact_added", added_contact(room.id)).data["contact"].name == name
    )
    assert members_of(owner, room_id) == {owner.name: True}

    joined = joiner.client.join_room(room_id)  # by number: no invitation or friendship needed
    assert (joined.id, joined.name) == (room.id, name)
    assert set(joined.members) == {owner.name, joiner.name}
    assert contact_of(joiner, room.id) is not None
    assert (
        members_of(owner, room_id)
        == members_of(joiner, room_id)
        == {
            owner.name: True,
            joiner.name: True,
        }
    )

    joiner.client.logout()
    assert members_of(owner, room_id) == {owner.name: True, joiner.name: False}
    joiner.client.login(joiner.name, joiner.password)
    assert contact_of(joiner, room.id) is not None  # rooms come back with the login

    joiner.client.leave_room(room_id)
    assert contact_of(joiner, room.id) is None
    assert members_of(owner, room_id) == {owner.name: True}
    assert refused(joiner.client.room_members, room_id).code == "not_member"


def test_members_see_joins_and_leaves(shared_server: RunningServer, accounts: Accounts) -> None:
    owner = accounts.user(shared_server, "owner")
    early = accounts.user(shared_server, "early")
    late = accounts.user(shared_server, "late")
    room = owner.client.create_room(room_name())
    room_id = int(room.id)
    early.client.join_room(room_id)
    owner.events.wait("room_member", room_id=room_id, username=early.name, event="joined")

    late.client.join_room(room_id)
    for member in (owner, early):
        member.events.wait("room_member", room_id=room_id, username=late.name, event="joined")
        assert set(contact_of(member, room.id).members) == {owner.name, early.name, late.name}

    late.client.leave_room(room_id)
    for member in (owner, early):
        member.events.wait("room_member", room_id=room_id, username=late.name, event="left")
        assert set(contact_of(member, room.id).members) == {owner.name, early.name}
    late.events.wait("contact_removed", added_contact(room.id))
    late.events.stays_quiet("room_member", lambda e: e.data["username"] != late.name, 0.2)


def test_a_room_message_reaches_online_and_offline_members(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    owner = accounts.user(shared_server, "owner")
    online = accounts.user(shared_server, "online")
    offline = accounts.user(shared_server, "offline")
    room = owner.client.create_room(room_name("dinner"))
    room_id = int(room.id)
    for member in (online, offline):
        member.client.join_room(room_id)
    owner.events.wait("room_member", room_id=room_id, username=offline.name, event="joined")
    offline.client.logout()

    sent = owner.client.send_text(room_id, "七点见 🍜 at seven", font_size=14, color="#336699")
    assert sent.status in ("sent", "delivered")
    received = online.events.message(sent.message_id)
    assert (received.chat_kind, received.chat_id, received.sender) == ("room", room.id, owner.name)
    assert (received.text, received.font_size, received.color) == (
        "七点见 🍜 at seven",
        14,
        "#336699",
    )

    answer = online.client.send_text(room_id, "ok 👍")  # members need not be friends
    assert owner.events.message(answer.message_id).text == "ok 👍"

    offline.client.login(offline.name, offline.password)
    later = offline.events.wait_messages(2)
    assert [(m.message_id, m.chat_id) for m in later] == [
        (sent.message_id, room.id),
        (answer.message_id, room.id),
    ]
    assert [m.text for m in offline.client.history(room_id)] == ["七点见 🍜 at seven", "ok 👍"]
    owner.events.stays_quiet("message", lambda e: e.data["message"].sender == owner.name, 0.2)
    assert offline.client.unread(room_id) == 2


def test_room_messages_are_acknowledged_together_and_not_pushed_again(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    """A member acknowledges room messages in one ACK_DELIVERY a moment later (a 500-member
    room would otherwise cost the server 499 requests per message), and the server's
    cursor moves: a bare login afterwards (which acknowledges nothing) is pushed none of
    them again."""
    owner = accounts.user(shared_server, "owner")
    member = accounts.user(shared_server, "member")
    room_id = int(owner.client.create_room(room_name("acks")).id)
    member.client.join_room(room_id)
    owner.events.wait("room_member", room_id=room_id, username=member.name, event="joined")
    session = member.client._slot.get()
    assert session is not None and session.acks is not None
    acks = session.acks
    acks._delay = 3.0  # wide enough that all five wait together, however slow the machine
    requests: list[list[str]] = []
    send = acks._send

    def counted(ids: list[str]) -> None:
        requests.append(list(ids))
        send(ids)

    acks._send = counted
    sent = [owner.client.send_text(room_id, f"message {n}").message_id for n in range(5)]
    for message_id in sent:
        member.events.message(message_id)
    assert requests == []  # waiting, not sent one by one
    wait_until(lambda: acks.waiting == 0, what="the gathered acknowledgement")
    assert len(requests) == 1 and set(sent) <= set(requests[0])

    member.client.logout()
    later = owner.client.send_text(room_id, "after the logout").message_id
    pushes: list[Message] = []
    with raw_connection(shared_server, pushes) as raw:
        raw.request(MessageType.LOGIN, {"username": member.name, "password": member.password})

        def pushed() -> list[str]:
            news = [p.params["messages"] for p in pushes if p.type is MessageType.NEW_MESSAGE]
            return [item["message_id"] for batch in news for item in batch]

        wait_until(lambda: later in pushed(), what="the backlog")
        assert pushed() == [later]


def test_room_refusals(shared_server: RunningServer, accounts: Accounts) -> None:
    owner = accounts.user(shared_server, "owner")
    outsider = accounts.user(shared_server, "outsider")
    name = room_name()
    room = owner.client.create_room(name)
    room_id = int(room.id)

    assert refused(owner.client.create_room, name).code == "room_name_taken"
    assert refused(outsider.client.create_room, name.upper()).code == "room_name_taken"
    assert refused(owner.client.join_room, room_id).code == "already_member"
    assert refused(outsider.client.join_room, 2**40).code == "room_not_found"
    assert refused(outsider.client.leave_room, 2**40).code == "not_member"
    assert refused(outsider.client.leave_room, room_id).code == "not_member"
    assert refused(outsider.client.room_members, room_id).code == "not_member"
    assert refused(outsider.client.send_text, room_id, "let me in").code == "not_member"
    owner.events.stays_quiet("message")

    owner.client.leave_room(room_id)  # the last member leaves...
    assert refused(owner.client.send_text, room_id, "anyone?").code == "not_member"
    assert refused(owner.client.create_room, "   ").code == "invalid_room_name"


def test_a_message_sent_right_after_someone_joins_reaches_the_newcomer(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    owner = accounts.user(shared_server, "owner")
    newcomer = accounts.user(shared_server, "newcomer")
    room_id = int(owner.client.create_room(room_name()).id)
    owner.client.send_text(room_id, "alone here")  # caches the (one-member) recipient list

    newcomer.client.join_room(room_id)
    sent = owner.client.send_text(room_id, "welcome!")  # maybe before the join push is seen
    assert sent.status in ("sent", "delivered")
    assert newcomer.events.message(sent.message_id).text == "welcome!"
    assert [m.text for m in newcomer.client.history(room_id)] == ["welcome!"]  # not the past
