"""The contact list's panels (friend requests answered Accept / Reject / Later, user
search with its Add button), attachments in the chat window (image thumbnails, received
files saved where the user chooses, both still there when the chat reopens), and chat
windows following live events (group members, presence, colour, unfriending)."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from tkinter import colorchooser, filedialog, ttk

import pytest
from PIL import Image

from client import i18n
from client.core.client import ChatClient
from client.core.models import ChatMessage
from client.forms.chat_form import ChatPanel
from client.forms.contacts import Action
from client.forms.contacts_form import ContactsForm
from client.ui import App
from tests.gui.conftest import pump_until, unique_name
from tests.gui.test_contacts_and_chat import register_through_the_form
from tests.gui.test_keys_and_search import (
    befriended,
    collect_messages,
    log_in,
    log_out,
    open_chat_with,
    press_enter,
)


def search_users(app: App, contacts: ContactsForm, query: str) -> None:
    """Type in the search box and press Enter; wait for the result list."""
    panel = contacts.search
    panel.query.set(query)
    press_enter(panel.entry)
    pump_until(app.root, lambda: not panel.busy.busy, what=f"results for {query!r}")
    assert panel.results.winfo_ismapped()


def row_text(contacts: ContactsForm, name: str) -> str:
    return str(contacts.search.rows[name].cget("text"))


def result_texts(contacts: ContactsForm) -> list[str]:
    return [
        str(child.cget("text"))
        for child in contacts.search.results.winfo_children()
        if isinstance(child, ttk.Label)
    ]


def test_friend_requests_later_reject_and_search_add(
    app: App, headless: Callable[..., ChatClient]
) -> None:
    me = unique_name("me")
    contacts = register_through_the_form(app, me)
    carol, dan, erin = (headless(unique_name(prefix)) for prefix in ("carol", "dan", "erin"))
    carol_name, dan_name, erin_name = (c.username or "" for c in (carol, dan, erin))
    carol.add_friend(me)
    dan.add_friend(me)
    requests = contacts.requests
    pump_until(
        app.root,
        lambda: sorted(requests.names) == sorted([carol_name, dan_name]),
        what="both friend requests",
    )
    assert requests.winfo_ismapped()
    assert str(requests.buttons[(carol_name, "later")].cget("text")) == i18n.t("contacts.later")

    requests.buttons[(carol_name, "later")].invoke()
    pump_until(app.root, lambda: requests.names == [dan_name], what="carol's request hidden")
    assert carol_name in app.require_client().pending_friend_requests()  # only hidden
    requests.buttons[(dan_name, "reject")].invoke()
    pump_until(app.root, lambda: requests.names == [], what="dan's request gone")
    assert not requests.winfo_ismapped()
    assert contacts.contacts == []  # neither became a friend

    search_users(app, contacts, erin_name)
    add = contacts.search.rows[erin_name]
    assert isinstance(add, ttk.Button) and str(add.cget("text")) == i18n.t("contacts.add")
    add.invoke()
    assert add.instate(["disabled"])
    pump_until(
        app.root,
        lambda: str(add.cget("text")) == i18n.t("contacts.request_sent"),
        what="the request to be sent",
    )
    asked = erin.wait_for_event(lambda e: e.kind == "friend_request")
    assert asked.data["username"] == me
    search_users(app, contacts, erin_name)  # the row now says what is going on
    assert row_text(contacts, erin_name) == i18n.t("contacts.state_pending")
    search_users(app, contacts, f"nobody-{erin_name}")
    assert i18n.t("contacts.no_results") in result_texts(contacts)
    contacts.search.close()
    assert not contacts.search.results.winfo_ismapped() and contacts.search.query.get() == ""

    log_out(app, contacts)
    contacts = log_in(app, me)  # "Later" comes back at the next login; "Reject" does not
    requests = contacts.requests
    pump_until(app.root, lambda: requests.names == [carol_name], what="carol's request again")
    requests.buttons[(carol_name, "accept")].invoke()
    pump_until(
        app.root, lambda: contacts.item("user", carol_name) is not None, what="carol as a friend"
    )
    assert contacts.item("user", dan_name) is None
    search_users(app, contacts, carol_name)
    assert row_text(contacts, carol_name) == i18n.t("contacts.state_friend")


def click_tag(app: App, text: tk.Text, tag: str) -> None:
    """Click the first character carrying `tag`, the way Tk delivers a real click."""
    start = text.tag_ranges(tag)[0]
    text.see(start)
    app.root.update()
    box = text.bbox(start)
    assert box is not None, f"{tag} is not on screen"
    x, y, _, _ = box
    text.event_generate("<Motion>", x=x + 3, y=y + 3)  # Tk tracks the tag under the pointer
    text.event_generate("<Button-1>", x=x + 3, y=y + 3)


def images_in_view(chat: ChatPanel) -> list[tuple[str, str]]:
    """(image name, index) of every picture embedded in the message Text widget."""
    text = chat.view.text
    return [(str(value), str(index)) for _kind, value, index in text.dump("1.0", "end", image=True)]


def test_images_show_as_thumbnails_and_files_save_where_chosen(
    app: App, headless: Callable[..., ChatClient], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    contacts, me, fay = befriended(app, headless, "fay")
    picture = tmp_path / "sunset.png"
    Image.new("RGB", (640, 480), (250, 120, 30)).save(picture)
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4 quarterly numbers\n" * 300)
    image_message = fay.send_image(me, picture)
    file_message = fay.send_file(me, report)
    item = contacts.item("user", fay.username or "")
    assert item is not None
    pump_until(app.root, lambda: item.badge.text == "2", what="both attachments")

    chat = open_chat_with(app, contacts, fay.username or "")
    pump_until(app.root, lambda: len(images_in_view(chat)) == 1, what="the thumbnail")
    [(name, index)] = images_in_view(chat)
    assert f"img-{image_message.message_id}" in chat.view.text.tag_names(index)
    width, height = (int(chat.tk.call("image", axis, name)) for axis in ("width", "height"))
    assert 0 < width < 640 and 0 < height < 480  # a thumbnail, same shape as the picture
    assert abs(width / height - 640 / 480) < 0.05

    text = chat.view.text
    save_tag = f"save-{file_message.message_id}"
    assert text.get(*text.tag_ranges(save_tag)).strip() == i18n.t("chat.save")
    monkeypatch.setattr(filedialog, "askdirectory", lambda **_: "")  # the user cancels
    click_tag(app, text, save_tag)
    app.root.update()
    assert not chat.files.active and chat.info_text == ""
    downloads = tmp_path / "chosen folder"
    downloads.mkdir()
    monkeypatch.setattr(filedialog, "askdirectory", lambda **_: str(downloads))
    click_tag(app, text, f"file-{file_message.message_id}")  # the file name is a link too
    saved = downloads / "report.pdf"
    pump_until(app.root, lambda: str(saved) in chat.info_text, what="where it was saved")
    assert saved.read_bytes() == report.read_bytes()
    assert text.get(*text.tag_ranges(save_tag)) == i18n.t("chat.saved_to", path=str(saved))

    chat.close()
    chat = open_chat_with(app, contacts, fay.username or "")  # from the local history
    assert i18n.t("chat.saved_to", path=str(saved)) in chat.view.text.get("1.0", "end")
    assert i18n.t("chat.save") not in chat.view.text.get("1.0", "end").split()
    pump_until(app.root, lambda: len(images_in_view(chat)) == 1, what="the thumbnail again")

    arrived = collect_messages(fay)
    monkeypatch.setattr(filedialog, "askopenfilename", lambda **_: str(picture))
    chat.composer.image_button.invoke()
    pump_until(app.root, lambda: bool(arrived), also=fay.process_events, what="fay's image")
    assert arrived[0].kind == "image" and arrived[0].attachment is not None
    assert arrived[0].attachment.name == "sunset.png"
    pump_until(app.root, lambda: len(images_in_view(chat)) == 2, what="our own thumbnail")
    sent: ChatMessage = chat.transcript.messages[-1]
    assert sent.outgoing and sent.kind == "image"


def test_chat_windows_follow_members_presence_colour_and_unfriending(
    app: App, headless: Callable[..., ChatClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    contacts, me, carol = befriended(app, headless, "carol")
    carol_name = carol.username or ""
    room = carol.create_room(f"Book club {carol_name}")
    contacts.action_buttons[Action.JOIN_GROUP].invoke()
    contacts.action.value.set(room.id)
    contacts.action.confirm.invoke()
    pump_until(app.root, lambda: contacts.item("room", room.id) is not None, what="the group")
    row = contacts.item("room", room.id)
    assert row is not None and row.contact is not None
    group = app.open_chat(row.contact)  # beside the list first
    assert group.master is contacts.conversation and not group.popped
    group.header.pop_out_button.invoke()  # type: ignore[union-attr]
    group = app.chats[("room", room.id)]  # now in a window of its own
    assert group.popped and group.winfo_toplevel() is not app.root
    assert contacts.conversation.panel is None  # the side shows its hint again
    assert group.header.pop_out_button is None
    members = group.members
    assert members is not None and group.header.safety_button is None  # no number for groups
    pump_until(
        app.root,
        lambda: members.names == sorted([me, carol_name], key=str.casefold),
        what="both members, online",
    )
    assert str(members.title.cget("text")) == i18n.t("chat.members", count=2)

    dan = headless(unique_name("dan"))  # a stranger to me: groups need no friendship
    dan_name = dan.username or ""
    dan.join_room(int(room.id))
    pump_until(app.root, lambda: dan_name in members.names, what="dan in the member list")
    joined = i18n.t("membership.join", actor=dan_name, subject=dan_name)
    pump_until(app.root, lambda: joined in group.view.text.get("1.0", "end"), what="the line")
    dan.leave_room(int(room.id))
    pump_until(app.root, lambda: dan_name not in members.names, what="dan gone from the list")
    left = i18n.t("membership.leave", actor=dan_name, subject=dan_name)
    pump_until(app.root, lambda: left in group.view.text.get("1.0", "end"), what="the line")
    assert str(members.title.cget("text")) == i18n.t("chat.members", count=2)

    chat = open_chat_with(app, contacts, carol_name)
    assert str(chat.header.state.cget("text")).startswith("\u25cf")  # online, with address
    monkeypatch.setattr(colorchooser, "askcolor", lambda **_: (None, None))  # cancelled
    chat.composer.color_button.invoke()
    before = chat.composer.color
    monkeypatch.setattr(colorchooser, "askcolor", lambda **_: ((26, 43, 60), "#1A2B3C"))
    chat.composer.color_button.invoke()
    assert before != chat.composer.color == "#1a2b3c"
    assert str(chat.composer.swatch.cget("background")) == "#1a2b3c"
    arrived = collect_messages(carol)
    chat.composer.set_text("in my new colour")
    chat.composer.send_button.invoke()
    pump_until(app.root, lambda: bool(arrived), also=carol.process_events, what="carol's copy")
    assert arrived[0].color == "#1a2b3c"
    pump_until(app.root, lambda: chat.composer.text == "", what="the sent message")
    span = chat.view.body_range(chat.transcript.messages[-1].message_id)
    assert span is not None and "fg-1a2b3c" in chat.view.text.tag_names(span[0])

    carol.close()
    pump_until(
        app.root,
        lambda: str(chat.header.state.cget("text")).startswith("\u25cb"),
        what="carol offline in the chat header",
    )
    assert i18n.t("contacts.offline") in str(chat.header.state.cget("text"))

    contacts.action_buttons[Action.DELETE_FRIEND].invoke()
    contacts.action.value.set(carol_name)
    contacts.action.confirm.invoke()
    pump_until(
        app.root,
        lambda: i18n.t("chat.removed") in chat.view.text.get("1.0", "end"),
        what="the unfriended notice",
    )
    assert i18n.t("chat.removed") not in group.view.text.get("1.0", "end")
