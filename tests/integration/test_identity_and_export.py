"""An identity moved to a second computer, history exported, and the small API
additions the desktop client relies on (mutual add, styles, limits)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from client.core import ExportProgress, KeyMissing
from common.errors import RequestError
from tests.integration.conftest import RunningServer
from tests.integration.helpers import (
    PASSWORD,
    WAIT,
    Accounts,
    befriend,
    befriended_pair,
    make_accounts,
    refused,
    serve_one_module,
)

shared_server = pytest.fixture(scope="module", name="shared_server")(serve_one_module)
accounts = pytest.fixture(name="accounts")(make_accounts)
PASSPHRASE = "moving day 2 computers"


def test_identity_file_takes_the_keys_to_a_second_computer(
    shared_server: RunningServer, accounts: Accounts, tmp_path: Path
) -> None:
    alice, bob = befriended_pair(shared_server, accounts)
    exported = alice.client.export_identity(tmp_path / "alice", PASSPHRASE)
    assert exported.name == "alice.uchat-identity" and exported.stat().st_mode & 0o077 == 0
    assert (
        b"ciphertext" in exported.read_bytes() and alice.name.encode() not in exported.read_bytes()
    )
    assert refused(alice.client.export_identity, tmp_path / "weak", "short").code == (
        "invalid_passphrase"
    )

    second = accounts.client(shared_server, tmp_path / "second-computer")
    second.login(alice.name, PASSWORD)  # without keys: it logs in, but cannot read or send
    missing = second.wait_for_event(lambda e: isinstance(e, KeyMissing), WAIT)
    assert isinstance(missing, KeyMissing) and not second.can_send
    held = bob.client.send_text(alice.name, "waiting for a computer with keys")
    second.logout()
    second.close()

    fresh = accounts.client(shared_server, tmp_path / "second-computer")
    wrong = refused(fresh.import_identity, exported, "not the passphrase", alice.name, PASSWORD)
    assert wrong.code == "bad_identity_file"
    not_a_file = tmp_path / "photo.uchat-identity"
    not_a_file.write_bytes(b"\x89PNG not keys")
    assert refused(fresh.import_identity, not_a_file, PASSPHRASE, alice.name, PASSWORD).code == (
        "bad_identity_file"
    )
    fresh.import_identity(exported, PASSPHRASE, alice.name, PASSWORD)
    fresh.login(alice.name, PASSWORD)
    assert fresh.can_send
    arrived = fresh.wait_for_event(
        lambda e: e.kind == "message" and e.data["message"].message_id == held.message_id, WAIT
    )
    assert arrived.data["message"].text == "waiting for a computer with keys"
    fresh.send_text(bob.name, "hello from the new computer")
    assert bob.events.wait("message")[-1].data["message"].text == "hello from the new computer"
    # one login at a time still: the first computer was kicked
    assert alice.events.wait("kicked")


def test_mutual_add_says_we_are_friends_now(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    ann = accounts.user(shared_server, "ann")
    ben = accounts.user(shared_server, "ben")
    assert ann.client.add_friend(ben.name) is False  # a request went out
    ben.events.wait("friend_request", username=ann.name)
    assert ben.client.add_friend(ann.name.upper()) is True  # they had asked: now friends
    assert ben.client.pending_friend_requests() == []
    ann.events.wait("contact_added")
    assert refused(ben.client.add_friend, ann.name).code == "already_friends"


def test_history_export_writes_html_and_json_with_attachments(
    shared_server: RunningServer, accounts: Accounts, tmp_path: Path
) -> None:
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    befriend(alice, bob)
    picture = tmp_path / "hill.png"
    Image.new("RGB", (40, 30), (80, 160, 90)).save(picture)
    notes = tmp_path / "notes <1>.txt"
    notes.write_text("a & b", encoding="utf-8")
    bob.client.send_text(alice.name, "<b>not bold</b> 你好", 18, "#aa3300")
    bob.client.send_image(alice.name, picture)
    alice.client.send_file(bob.name, notes)
    alice.events.wait("message", count=2)
    room = alice.client.create_room("export club")
    alice.client.send_text(room.room_id, "room line")
    assert alice.client.max_attachment_size > 0

    one = alice.client.export_history(tmp_path / "one", [bob.name])
    assert (one.messages, one.attachments, one.missing) == (3, 2, 0)
    page = one.html_path.read_text(encoding="utf-8")
    assert "&lt;b&gt;not bold&lt;/b&gt; 你好" in page and "<b>not bold</b>" not in page
    assert "data:image/png;base64," in page  # the picture is inside the page
    assert 'href="attachments/notes &lt;1&gt;.txt"' in page
    assert "<script" not in page and "room line" not in page
    document = json.loads(one.json_path.read_text(encoding="utf-8"))
    assert document["format"] == "uchat-history/1" and document["account"] == alice.name
    [chat] = document["chats"]
    assert [m["kind"] for m in chat["messages"]] == ["text", "image", "file"]
    assert chat["messages"][0]["font_size"] == 18 and chat["messages"][0]["color"] == "#aa3300"
    assert (one.html_path.parent / chat["messages"][2]["attachment"]["file"]).read_text() == "a & b"
    alice.events.pump()
    progress = [e for e in alice.events.events if isinstance(e, ExportProgress)]
    assert [(e.done, e.total) for e in progress] == [(1, 3), (2, 3), (3, 3)]

    everything = alice.client.export_history(tmp_path / "all")
    names = [c["name"] for c in json.loads(everything.json_path.read_text("utf-8"))["chats"]]
    assert sorted(names) == sorted([bob.name, "export club"]) and everything.messages == 4


def test_styles_are_kept_per_chat_and_checked(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    alice, bob = befriended_pair(shared_server, accounts)
    assert alice.client.style(bob.name) is None
    alice.client.save_style(bob.name, 20, "#112233")
    assert alice.client.style(bob.name) == (20, "#112233")
    with pytest.raises(RequestError):
        alice.client.save_style(bob.name, 200, "#112233")
