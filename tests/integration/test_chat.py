"""One-to-one chat end to end: styled text, offline delivery order, unread counts and the
contact order, delivery receipts, safety numbers, and a server that never sees plaintext.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from client.core import ChatMessage
from tests.integration.conftest import RunningServer
from tests.integration.helpers import (
    Accounts,
    User,
    befriend,
    befriended_pair,
    make_accounts,
    serve_one_module,
)

shared_server = pytest.fixture(scope="module", name="shared_server")(serve_one_module)
accounts = pytest.fixture(name="accounts")(make_accounts)

STYLED = [
    ("plain ASCII", 12, "#000000"),
    ("你好，世界！今天天气怎么样？", 18, "#c0392b"),
    ("emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flag 🇨🇳", 9, "#00FF7f"),
    ("line one\nline two\n\tindented «quoted» ∑", 72, "#123abc"),
    ("mixed 中文 and English 🎉 " * 40, 6, "#ffffff"),
]


@pytest.fixture
def pair(shared_server: RunningServer, accounts: Accounts) -> tuple[User, User]:
    return befriended_pair(shared_server, accounts)


def test_styled_text_arrives_intact(pair: tuple[User, User]) -> None:
    alice, bob = pair
    sent = [alice.client.send_text(bob.name, *style) for style in STYLED]
    received = bob.events.wait_messages(len(STYLED))
    assert [m.message_id for m in received] == [m.message_id for m in sent]
    for message, (text, size, color) in zip(received, STYLED, strict=True):
        assert (message.text, message.font_size, message.color) == (text, size, color)
        assert (message.sender, message.chat_kind, message.chat_id) == (
            alice.name,
            "user",
            alice.name,
        )
        assert message.kind == "text" and not message.outgoing
    stored = bob.client.history(alice.name)
    assert [(m.text, m.font_size, m.color) for m in stored] == STYLED
    mine = alice.client.history(bob.name)
    assert [(m.text, m.font_size, m.color, m.outgoing) for m in mine] == [
        (*style, True) for style in STYLED
    ]


def test_twenty_messages_sent_while_offline_arrive_in_order_at_login(
    pair: tuple[User, User], shared_server: RunningServer, accounts: Accounts
) -> None:
    alice, bob = pair
    bob.client.logout()
    alice.events.wait("presence", username=bob.name, online=False)
    sent = [alice.client.send_text(bob.name, f"离线消息 {i:02d} 🌙") for i in range(20)]
    assert {m.status for m in sent} == {"sent"}  # stored by the server, nobody to deliver to

    accounts.reopen(bob, shared_server)
    received = bob.events.wait_messages(20)
    assert [m.message_id for m in received] == [m.message_id for m in sent]
    assert [m.text for m in received] == [f"离线消息 {i:02d} 🌙" for i in range(20)]
    assert [m.message_id for m in bob.client.history(alice.name)] == [m.message_id for m in sent]
    for message in sent:
        alice.events.status(message.message_id, "delivered")
    bob.events.stays_quiet("message")  # and nothing twice


def test_delivered_status_reaches_the_sender(pair: tuple[User, User]) -> None:
    alice, bob = pair
    sent = alice.client.send_text(bob.name, "did you get this?")
    assert sent.status in ("sent", "delivered")
    bob.events.message(sent.message_id)
    alice.events.status(sent.message_id, "delivered")
    [stored] = alice.client.history(bob.name)
    assert stored.status == "delivered"
    statuses = [e.data["status"] for e in alice.events.matching("message_status")]
    assert statuses[-1] == "delivered" and "failed" not in statuses


def test_unread_counts_and_contact_order(shared_server: RunningServer, accounts: Accounts) -> None:
    me = accounts.user(shared_server, "me")
    ann, ben, cat = (accounts.user(shared_server, p) for p in ("ann", "ben", "cat"))
    for friend in (ann, ben, cat):
        befriend(me, friend)

    def arrive(sender: User, text: str) -> ChatMessage:
        message = sender.client.send_text(me.name, text)
        me.events.message(message.message_id)
        time.sleep(0.01)  # distinct millisecond timestamps
        return message

    arrive(ann, "ann 1")
    arrive(ben, "ben 1")
    arrive(ben, "ben 2")
    arrive(cat, "cat 1")  # the newest message of all, but cat then goes offline
    cat.client.logout()
    me.events.wait("presence", username=cat.name, online=False)

    contacts = me.client.contacts()
    assert [c.id for c in contacts] == [cat.name, ben.name, ann.name]  # activity, not presence
    assert [(c.online, c.unread, c.last_message) for c in contacts] == [
        (False, 1, "cat 1"),
        (True, 2, "ben 2"),
        (True, 1, "ann 1"),
    ]
    assert (me.client.unread(ann.name), me.client.unread(ben.name)) == (1, 2)

    me.client.mark_read(ben.name)
    assert me.client.unread(ben.name) == 0
    assert [(c.id, c.unread) for c in me.client.contacts()] == [
        (cat.name, 1),
        (ben.name, 0),
        (ann.name, 1),
    ]
    reply = me.client.send_text(ann.name, "my own messages are never unread")
    ann.events.message(reply.message_id)
    contacts = me.client.contacts()
    assert [c.id for c in contacts] == [ann.name, cat.name, ben.name]  # newest talk first
    assert contacts[0].unread == 1 and contacts[0].last_message.startswith("my own")
    arrive(ben, "ben 3")
    assert me.client.contacts()[0].id == ben.name and me.client.contacts()[0].unread == 1


def test_safety_numbers_match_on_both_sides(
    pair: tuple[User, User], shared_server: RunningServer, accounts: Accounts
) -> None:
    alice, bob = pair
    number = alice.client.safety_number(bob.name)
    assert number == bob.client.safety_number(alice.name)
    assert len(number.replace(" ", "")) == 60 and number.replace(" ", "").isdigit()
    assert alice.client.fingerprint(bob.name) == bob.client.fingerprint(bob.name)

    carol = accounts.user(shared_server, "carol")
    befriend(alice, carol)
    assert alice.client.safety_number(carol.name) != number  # it depends on the pair


def _files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def _occurs(marker: str, files: list[Path]) -> list[str]:
    needles = [marker.encode(encoding) for encoding in ("utf-8", "utf-16-le", "utf-16-be")]
    return [
        f"{path.name} ({needle!r})"
        for path in files
        for needle in needles
        if needle in path.read_bytes()
    ]


def test_the_server_stores_no_plaintext(
    pair: tuple[User, User], shared_server: RunningServer, tmp_path: Path
) -> None:
    alice, bob = pair
    marker = f"Geheimnis-{os.urandom(8).hex()}-秘密标记"
    file_marker = f"filecontent-{os.urandom(8).hex()}"
    named = tmp_path / f"{marker}.txt"
    named.write_text(f"{file_marker}\n" * 100, encoding="utf-8")

    sent = alice.client.send_text(bob.name, f"the secret is {marker} 🤫")
    bob.events.message(sent.message_id)
    shared_file = alice.client.send_file(bob.name, named)
    bob.events.message(shared_file.message_id)
    alice.events.status(shared_file.message_id, "delivered")

    server_files = _files_under(shared_server.data_dir)
    names = {path.name for path in server_files}
    assert "uchat.db" in names and "uchat.db-wal" in names  # the WAL is read as well
    # positive controls: the grep does find what is stored in clear...
    assert _occurs(bob.name, server_files)  # usernames are not secret
    assert _occurs(marker, _files_under(bob.data_dir))  # the recipient's own history
    # ...and no server file holds the text, the file name or the file's content
    assert _occurs(marker, server_files) == []
    assert _occurs(file_marker, server_files) == []
    assert _occurs(marker, [shared_server.log_path]) == []
