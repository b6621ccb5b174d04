"""From registration to a conversation: the contact list updates live (friend request,
presence, unread badge) and the chat window shows and sends styled messages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from tkinter import filedialog

import pytest
from PIL import Image

from client import i18n
from client.core.client import ChatClient
from client.core.event_types import Event
from client.core.models import ChatMessage
from client.forms.chat import PAGE_SIZE
from client.forms.contacts import Action
from client.forms.contacts_form import ContactsForm
from client.forms.login_form import LoginForm
from client.forms.register_form import RegisterForm
from client.ui import App
from tests.gui.conftest import PASSWORD, pump_until, unique_name


def register_through_the_form(app: App, username: str) -> ContactsForm:
    app.form.register_link.invoke()  # type: ignore[union-attr]
    app.root.update()
    form = app.form
    assert isinstance(form, RegisterForm)
    for field, value in {
        "username": username,
        "password": PASSWORD,
        "confirm": PASSWORD,
        "email": f"{username}@example.org",
        "sex": "male",
        "age": "28",
    }.items():
        form.fields[field].set_value(value)
    form.submit_button.invoke()
    pump_until(app.root, lambda: isinstance(app.form, ContactsForm), what="the contact list")
    contacts = app.form
    assert isinstance(contacts, ContactsForm)
    return contacts


def login_username(app: App) -> str:
    form = app.form
    assert isinstance(form, LoginForm)
    return form.username.value


def accept_request_from(app: App, contacts: ContactsForm, friend: str) -> None:
    pump_until(app.root, lambda: contacts.requests.names == [friend], what="the friend request")
    accept = contacts.requests.buttons[(friend, "accept")]
    assert str(accept.cget("text")) == i18n.t("contacts.accept")
    accept.invoke()
    pump_until(
        app.root,
        lambda: contacts.item("user", friend) is not None,
        what=f"{friend} in the contact list",
    )


def test_register_befriend_receive_open_and_reply(
    app: App, headless: Callable[..., ChatClient]
) -> None:
    me, friend = unique_name("me"), unique_name("bob")
    contacts = register_through_the_form(app, me)
    assert contacts.contacts == []
    bob = headless(friend)
    bob.add_friend(me)
    accept_request_from(app, contacts, friend)
    bob.wait_for_event(lambda e: e.kind == "contact_added")

    item = contacts.item("user", friend)
    assert item is not None and item.contact is not None
    assert item.contact.online  # bob is logged in: online dot, IP:port
    assert item.address_label.cget("text").startswith("127.0.0.1:")
    assert item.badge.text == ""

    bob.send_text(me, "Hello from Bob, 你好!", 18, "#d9480f")
    pump_until(app.root, lambda: item.badge.text == "1", what="the unread badge")
    assert item.preview_label.cget("text") == "Hello from Bob, 你好!"

    for _ in range(2):  # a double click on the name, as Tk sees it
        item.name_label.event_generate("<ButtonPress-1>", x=5, y=5)
        item.name_label.event_generate("<ButtonRelease-1>", x=5, y=5)
    pump_until(app.root, lambda: ("user", friend) in app.chats, what="the chat window")
    chat = app.chats[("user", friend)]
    pump_until(app.root, lambda: item.badge.text == "", what="the badge to clear")
    assert app.require_client().unread(friend) == 0

    received = chat.transcript.messages[-1]
    span = chat.view.body_range(received.message_id)
    assert span is not None
    assert chat.view.text.get(*span) == "Hello from Bob, 你好!"
    tags = chat.view.text.tag_names(span[0])
    assert "fg-d9480f" in tags and "size-18" in tags
    assert chat.view.text.tag_cget("fg-d9480f", "foreground") == "#d9480f"

    chat.composer.set_text("Hi Bob,\nsee you on Saturday")
    chat.composer.input.focus_force()
    chat.composer.input.event_generate("<KeyPress-Return>", keysym="Return")
    arrived: list[ChatMessage] = []

    def collect(event: Event) -> None:
        if event.kind == "message":
            arrived.append(event.data["message"])

    bob.add_listener(collect)
    pump_until(app.root, lambda: bool(arrived), also=bob.process_events, what="bob's copy")
    assert arrived[0].text == "Hi Bob,\nsee you on Saturday"
    assert arrived[0].sender == me
    pump_until(app.root, lambda: chat.composer.text == "", what="the input to clear")
    sent = chat.transcript.messages[-1]
    assert sent.outgoing and sent.text == arrived[0].text
    pump_until(
        app.root,
        lambda: chat.transcript.messages[-1].status == "delivered",
        what="the delivered mark",
    )
    assert "\u2713\u2713" in chat.view.text.get("1.0", "end")


def test_groups_are_created_and_joined_and_presence_updates_live(
    app: App, headless: Callable[..., ChatClient]
) -> None:
    me, friend = unique_name("me"), unique_name("carol")
    contacts = register_through_the_form(app, me)
    carol = headless(friend)
    carol.add_friend(me)
    accept_request_from(app, contacts, friend)

    carols_room = carol.create_room(f"Room {friend}")
    contacts.action_buttons[Action.JOIN_GROUP].invoke()
    contacts.action.value.set(f" #{carols_room.id} ")
    contacts.action.confirm.invoke()
    pump_until(
        app.root, lambda: contacts.item("room", carols_room.id) is not None, what="the joined group"
    )
    assert carols_room.name in contacts.action.message_text
    joined = carol.wait_for_event(lambda e: e.kind == "room_member")
    assert joined.data["username"] == me

    contacts.action_buttons[Action.CREATE_GROUP].invoke()
    contacts.action.value.set(f"Club {me}")
    contacts.action.confirm.invoke()
    pump_until(app.root, lambda: contacts.action.result.get() != "", what="the group number")
    number = contacts.action.result.get()
    assert number in contacts.action.message_text
    pump_until(app.root, lambda: contacts.item("room", number) is not None, what="the group row")

    carol.close()
    item = contacts.item("user", friend)
    assert item is not None
    pump_until(
        app.root,
        lambda: item.contact is not None and not item.contact.online,
        what="carol going offline",
    )
    assert item.preview_label.cget("text") == i18n.t("contacts.offline")

    item.name_label.event_generate("<ButtonPress-1>", x=3, y=3)  # select carol...
    contacts.action_buttons[Action.DELETE_FRIEND].invoke()  # ...and the name is filled in
    assert contacts.action.value.get() == friend
    contacts.action.confirm.invoke()
    pump_until(app.root, lambda: contacts.item("user", friend) is None, what="carol removed")


def test_history_pages_drafts_images_and_logout(
    app: App, headless: Callable[..., ChatClient], tmp_path: Path
) -> None:
    me, friend = unique_name("me"), unique_name("dan")
    contacts = register_through_the_form(app, me)
    dan = headless(friend)
    dan.add_friend(me)
    accept_request_from(app, contacts, friend)
    for number in range(PAGE_SIZE + 5):
        dan.send_text(me, f"message number {number}")
    item = contacts.item("user", friend)
    assert item is not None
    pump_until(app.root, lambda: item.badge.text == str(PAGE_SIZE + 5), what="all 55 unread")

    contacts.open(contacts.contacts[0])
    chat = app.chats[("user", friend)]
    assert len(chat.transcript) == PAGE_SIZE  # the newest page only
    assert chat.transcript.messages[-1].text == f"message number {PAGE_SIZE + 4}"
    chat.load_older()  # what scrolling to the top does
    assert len(chat.transcript) == PAGE_SIZE + 5
    assert not chat.transcript.has_more
    assert chat.transcript.messages[0].text == "message number 0"
    assert i18n.t("chat.beginning") in chat.view.text.get("1.0", "3.0")

    picture = tmp_path / "dot.png"
    Image.new("RGB", (64, 48), (200, 40, 40)).save(picture)
    dan.send_image(me, picture)
    pump_until(app.root, lambda: chat.view.image_count() == 1, what="the thumbnail")

    chat.composer.set_text("half-written thought")
    chat.close()
    assert ("user", friend) not in app.chats
    reopened = app.open_chat(contacts.contacts[0])
    assert reopened.composer.text == "half-written thought"

    contacts.header.logout_button.invoke()
    assert contacts.header.logout_button.instate(["disabled"])
    pump_until(app.root, lambda: isinstance(app.form, LoginForm), what="the login form")
    assert app.chats == {} and app.client is None
    assert login_username(app) == me


def test_files_are_sent_with_progress_and_saved_where_the_user_chooses(
    app: App, headless: Callable[..., ChatClient], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    me, friend = unique_name("me"), unique_name("fay")
    contacts = register_through_the_form(app, me)
    fay = headless(friend)
    fay.add_friend(me)
    accept_request_from(app, contacts, friend)
    chat = app.open_chat(contacts.contacts[0])

    outgoing = tmp_path / "notes.txt"
    outgoing.write_bytes(b"meeting notes\n" * 20_000)
    monkeypatch.setattr(filedialog, "askopenfilename", lambda **_: str(outgoing))
    shown: list[str] = []  # the percentage inside the message, driven by transfer events
    set_progress = chat.view.set_progress

    def record(message_id: str, fraction: float | None, cancel: bool = False) -> None:
        set_progress(message_id, fraction, cancel)
        shown.append(chat.view.progress_text(message_id))

    monkeypatch.setattr(chat.view, "set_progress", record)
    assert i18n.t("chat.size_limit", limit="").split()[0] in str(
        chat.composer.limit_label.cget("text")
    )  # the limit is on screen before a file is chosen
    chat.composer.file_button.invoke()
    arrived: list[ChatMessage] = []
    fay.add_listener(lambda e: arrived.append(e.data["message"]) if e.kind == "message" else None)
    pump_until(app.root, lambda: bool(arrived), also=fay.process_events, what="fay's file")
    assert arrived[0].kind == "file" and arrived[0].attachment is not None
    assert arrived[0].attachment.name == "notes.txt"
    pump_until(app.root, lambda: not chat.files.active, what="the upload to finish")
    cancel = i18n.t("chat.cancel")
    assert shown[0] == f"0 %  {cancel}" and f"100 %  {cancel}" in shown and shown[-1] == ""
    percents = [int(text.split()[0]) for text in shown if text]
    assert percents == sorted(percents)  # only ever forwards
    assert shown.index("") == len(percents)  # gone only once it is over
    assert i18n.t("chat.file_label", name="notes.txt", size="273.4 KB") in chat.view.text.get(
        "1.0", "end"
    )

    incoming = tmp_path / "report.pdf"
    incoming.write_bytes(b"%PDF-1.4 pretend\n" * 100)
    fay.send_file(me, incoming)
    pump_until(
        app.root, lambda: not chat.transcript.messages[-1].outgoing, what="the incoming file"
    )
    received = chat.transcript.messages[-1]
    assert received.kind == "file"
    assert i18n.t("chat.save") in chat.view.text.get("1.0", "end")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    monkeypatch.setattr(filedialog, "askdirectory", lambda **_: str(downloads))
    text = chat.view.text
    save_button = text.tag_ranges(f"save-{received.message_id}")[0]
    text.see(save_button)
    app.root.update()
    box = text.bbox(save_button)
    assert box is not None  # on screen
    x, y, _, _ = box
    text.event_generate("<Motion>", x=x + 3, y=y + 3)  # Tk tracks the tag under the pointer
    text.event_generate("<Button-1>", x=x + 3, y=y + 3)
    saved = downloads / "report.pdf"
    pump_until(app.root, saved.exists, what="the saved file")
    assert saved.read_bytes() == incoming.read_bytes()
    pump_until(app.root, lambda: str(downloads) in chat.info_text, what="where it was saved")
