"""The desktop client as people use it every day, on a 1366x768 screen at 96 dpi and at
192 dpi (Tk scaling doubled): one main window, recent chats, reading, state, composing,
attachments, export and moving an identity. Every test runs at both scales.

Real parts throughout: a real server, headless friends on real sockets, the real Tk
window under Xvfb. Only the system's file dialogs and file manager are replaced (they
would block or start another program).
"""

from __future__ import annotations

import dataclasses
import json
import time
import tkinter as tk
from collections.abc import Callable, Iterator
from pathlib import Path
from tkinter import colorchooser, filedialog, ttk

import pytest
from PIL import Image

from client import i18n
from client.components.banner import Banner
from client.components.desktop import Desktop
from client.core.client import ChatClient
from client.core.event_types import ExportProgress, MessageReceived
from client.forms.chat_form import ChatPanel, ChatWindow
from client.forms.contacts import Action
from client.forms.contacts_form import ContactsForm
from client.forms.login_form import LoginForm
from client.theme import BASE_SCALING
from client.ui import App
from tests.gui.conftest import PASSWORD, pump_until, unique_name
from tests.gui.test_keys_and_search import befriended, log_out, open_chat_with

SCREEN = (1366, 768)


@pytest.fixture(params=[1.0, 2.0], ids=["96dpi", "192dpi"])
def scale(request: pytest.FixtureRequest, tk_root: tk.Tk) -> Iterator[float]:
    """Tk scaling for this test; the App reads it when it builds its theme."""
    before = float(tk_root.tk.call("tk", "scaling"))
    tk_root.tk.call("tk", "scaling", BASE_SCALING * request.param)
    yield float(request.param)
    tk_root.tk.call("tk", "scaling", before)


@pytest.fixture
def downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "Downloads"
    folder.mkdir()
    monkeypatch.setattr("client.components.desktop.downloads_dir", lambda: folder)
    for module in ("chat_files", "export_flow", "identity_import", "identity_export"):
        monkeypatch.setattr(f"client.forms.{module}.downloads_dir", lambda: folder)
    return folder


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Folders the client asked the file manager to show."""
    shown: list[Path] = []
    monkeypatch.setattr(Desktop, "opener", staticmethod(shown.append))
    return shown


def inside(widget: tk.Misc, window: tk.Misc) -> bool:
    """The whole widget is within the window's area (nothing cut off)."""
    widget.update_idletasks()
    return (
        widget.winfo_ismapped()
        and widget.winfo_rootx() >= window.winfo_rootx()
        and widget.winfo_rooty() >= window.winfo_rooty()
        and widget.winfo_rootx() + widget.winfo_width()
        <= window.winfo_rootx() + window.winfo_width()
        and widget.winfo_rooty() + widget.winfo_height()
        <= window.winfo_rooty() + window.winfo_height()
    )


def settle(app: App, seconds: float = 0.2) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.root.update()
        time.sleep(0.01)


def height_of(widget: tk.Misc) -> int:
    widget.update_idletasks()
    return int(widget.winfo_height())


# ---------------------------------------------------------------- 1. one main window


def test_main_window_fits_the_screen_with_list_and_chat_side_by_side(
    scale: float, app: App, headless: Callable[..., ChatClient]
) -> None:
    root = app.root
    assert (root.winfo_screenwidth(), root.winfo_screenheight()) == SCREEN
    assert app.theme.scale == pytest.approx(scale, rel=0.01)
    contacts, _me, bob = befriended(app, headless, "bob")
    friend = bob.username or ""
    settle(app)
    assert root.winfo_width() <= SCREEN[0] and root.winfo_height() <= SCREEN[1]
    chat = open_chat_with(app, contacts, friend)
    settle(app)
    assert chat.master is contacts.conversation  # beside the list, in the same window
    assert chat.winfo_rootx() >= contacts.side.winfo_rootx() + contacts.side.winfo_width()
    for widget in (
        chat.composer.send_button,
        chat.composer.input,
        chat.header.name,
        *contacts.action_buttons.values(),
        contacts.header.logout_button,
    ):
        assert inside(widget, root), f"{widget} is cut off"
    name = chat.header.name  # the title is not clipped
    assert name.winfo_width() >= name.winfo_reqwidth()
    status, menu = contacts.header.status, contacts.header.menu_button
    contacts.header.email = "someone.with.a.rather.long.address@example.org"
    contacts.header.set_state("connected")
    settle(app)
    shown = str(status.cget("text"))  # the state whole; the e-mail elided or left out
    online = i18n.t("connection.connected")
    assert shown == online or (shown.startswith(online) and shown.endswith("\u2026"))
    assert status.winfo_width() >= status.winfo_reqwidth()  # the text itself is not cut
    assert status.winfo_rootx() + status.winfo_width() <= menu.winfo_rootx(), (
        "the state and e-mail line ends before the header's buttons"
    )
    body_line = app.theme.fonts.body
    thirty = 30 * tk.font.Font(root=root, font=body_line).measure("0")
    assert contacts.side.winfo_width() >= min(thirty, SCREEN[0] * 2 // 5 - 2)  # font-sized

    chat.header.pop_out_button.invoke()  # type: ignore[union-attr]
    popped = app.chats[("user", friend)]
    window = popped.winfo_toplevel()
    assert isinstance(window, ChatWindow) and popped.popped
    settle(app)
    assert window.winfo_width() <= SCREEN[0] and window.winfo_height() <= SCREEN[1]
    assert inside(popped.composer.send_button, window)
    assert contacts.conversation.panel is None
    assert contacts.conversation.hint.winfo_ismapped()  # "choose a chat" while none is open


def test_empty_panels_take_no_space(
    scale: float, app: App, headless: Callable[..., ChatClient]
) -> None:
    contacts, me, bob = befriended(app, headless, "bob")
    friend = bob.username or ""
    requests_section = contacts.requests.master
    settle(app)
    assert height_of(requests_section) <= 1  # Accept in befriended() left no gap behind

    carol = headless(unique_name("carol"))
    carol.add_friend(me)
    pump_until(app.root, lambda: contacts.requests.names != [], what="carol's request")
    assert height_of(requests_section) > 10
    contacts.requests.buttons[(carol.username or "", "later")].invoke()
    pump_until(app.root, lambda: contacts.requests.names == [], what="the request hidden")
    settle(app)
    assert height_of(requests_section) <= 1

    contacts.search.query.set(friend)
    contacts.search.search()
    pump_until(app.root, lambda: friend in contacts.search.rows, what="search results")
    results_section = contacts.search.results.master
    assert height_of(results_section) > 10
    contacts.search.close()
    settle(app)
    assert height_of(results_section) <= 1

    chat = open_chat_with(app, contacts, friend)
    chat.show_info("something to dismiss")
    settle(app)
    assert height_of(chat.banners) > 10
    chat.clear_info()
    settle(app)
    assert height_of(chat.banners) <= 1


def test_register_form_scrolls_and_fields_stay_put(scale: float, app: App) -> None:
    form = app.form
    assert isinstance(form, LoginForm)
    form.register_link.invoke()
    app.root.update()
    register = app.form
    settle(app)
    username = register.fields["username"]  # type: ignore[union-attr]
    before = username.entry.winfo_rooty()
    for name in ("username", "password", "confirm", "email"):
        register.fields[name].set_error("A long error message " * 4)  # type: ignore[union-attr]
    settle(app)
    assert username.entry.winfo_rooty() == before  # anchored at the top: nothing jumps
    scroller = register.scroller  # type: ignore[union-attr]
    if register.card.winfo_reqheight() > scroller.canvas.winfo_height():  # type: ignore[union-attr]
        assert scroller.scrollbar.winfo_ismapped()  # taller than the window: it scrolls
        scroller.canvas.yview_moveto(1.0)
        settle(app)
        assert inside(register.submit_button, app.root)  # type: ignore[union-attr]


# ---------------------------------------------------------------- 2. recent chats


def test_recent_chats_order_by_activity_with_sender_previews_and_drafts(
    scale: float, app: App, headless: Callable[..., ChatClient]
) -> None:
    contacts, _me, bob = befriended(app, headless, "bob")
    bob_name = bob.username or ""
    room = app.require_client().create_room(f"Club {bob_name}")
    bob.join_room(room.room_id)
    bob.send_text(room.room_id, "group news")
    pump_until(
        app.root,
        lambda: [c.id for c in contacts.contacts][:1] == [room.id],
        what="the group with the newest message on top",
    )
    group_row = contacts.item("room", room.id)
    assert group_row is not None
    preview = i18n.t("contacts.preview_sender", name=bob_name, text="group news")
    assert group_row.preview_label.cget("text") == preview
    assert contacts.contacts[1].online  # bob is online, and still below: a dot, not a key

    chat = open_chat_with(app, contacts, bob_name)
    chat.composer.set_text("my own send moves bob up")
    chat.send_message()
    pump_until(app.root, lambda: contacts.contacts[0].id == bob_name, what="own send on top")
    bob_row = contacts.item("user", bob_name)
    assert bob_row is not None
    pump_until(
        app.root,
        lambda: bob_row.preview_label.cget("text") == "my own send moves bob up",
        what="the preview of our own send",
    )

    group = open_chat_with_room(app, contacts, room.id)  # bob's chat closes, keeping a draft
    del group
    chat_draft = "half written"
    app.require_client().save_draft(bob_name, chat_draft)
    contacts.refresh()
    assert bob_row.preview_label.cget("text").startswith(i18n.t("contacts.draft_marker"))


def open_chat_with_room(app: App, contacts: ContactsForm, room_id: str) -> ChatPanel:
    row = contacts.item("room", room_id)
    assert row is not None and row.contact is not None
    contacts.open(row.contact)
    return app.chats[("room", room_id)]


# ---------------------------------------------------------------- 3. messages


def test_bubbles_group_by_sender_open_at_newest_and_new_marker(
    scale: float, app: App, headless: Callable[..., ChatClient]
) -> None:
    contacts, me, bob = befriended(app, headless, "bob")
    bob_name = bob.username or ""
    for number in range(30):
        bob.send_text(me, f"line {number}")
    row = contacts.item("user", bob_name)
    assert row is not None
    pump_until(app.root, lambda: row.badge.text == "30", what="thirty messages")
    chat = open_chat_with(app, contacts, bob_name)
    settle(app)
    view = chat.view
    assert view.at_bottom()  # opens at the newest message
    headers = view.text.tag_ranges("header")
    assert len(headers) == 2  # thirty messages of one sender: one name-and-time header
    span = view.body_range(chat.transcript.messages[-1].message_id)
    assert span is not None and "bubble-in" in view.text.tag_names(span[0])

    view.text.yview_moveto(0.0)  # the user scrolls up to read
    view.text.event_generate("<Button-4>")
    settle(app)
    assert not view.following
    bob.send_text(me, "while you read above")
    pump_until(app.root, lambda: view.unseen == 1, what="the new-message count")
    assert view.new_button.winfo_ismapped()
    assert view.new_button.cget("text") == i18n.t("chat.new_messages", count=1)
    view.new_button.invoke()
    settle(app)
    assert view.at_bottom() and not view.new_button.winfo_ismapped()


def test_read_only_while_visible_and_focused_and_unread_in_title(
    scale: float, app: App, headless: Callable[..., ChatClient]
) -> None:
    contacts, me, bob = befriended(app, headless, "bob")
    bob_name = bob.username or ""
    chat = open_chat_with(app, contacts, bob_name)
    chat.pop_out()
    popped = app.chats[("user", bob_name)]
    window = popped.winfo_toplevel()
    window.withdraw()  # hidden: nothing in it can be read
    settle(app)
    bob.send_text(me, "are you there?")
    row = contacts.item("user", bob_name)
    assert row is not None
    pump_until(app.root, lambda: row.badge.text == "1", what="the unread badge")
    assert app.require_client().unread(bob_name) == 1
    assert app.root.title().startswith("(1) ")
    window.deiconify()
    popped.composer.input.focus_force()
    pump_until(app.root, lambda: app.require_client().unread(bob_name) == 0, what="read once seen")
    pump_until(app.root, lambda: not app.root.title().startswith("("), what="the title count")

    app.root.focus_set()  # another window has the focus: no bell there
    bells = app.bells
    app._alert()  # nothing of Uchat focused is what rings it; here the root has the focus
    assert app.bells == bells


# ---------------------------------------------------------------- 4. state


def test_missing_keys_notice_at_login_says_what_to_do(
    scale: float, make_app: Callable[..., App], headless: Callable[..., ChatClient], tmp_path: Path
) -> None:
    name = unique_name("away")
    headless(name, login=False)  # registered on another computer
    app = make_app(data_dir=tmp_path / "new-computer")
    form = app.form
    assert isinstance(form, LoginForm)
    form.username.set_value(name)
    form.password.set_value(PASSWORD)
    form.login_button.invoke()
    pump_until(app.root, lambda: isinstance(app.form, ContactsForm), what="the contact list")
    contacts = app.form
    assert isinstance(contacts, ContactsForm)
    pump_until(
        app.root,
        lambda: any(
            getattr(b, "text", "") == i18n.t("contacts.key_missing")
            for b in contacts.banners.winfo_children()
        ),
        what="the missing-keys notice",
    )
    assert "Import identity file" in i18n.EN["contacts.key_missing"]


def test_connection_state_shows_in_the_chat_window(
    scale: float, app: App, headless: Callable[..., ChatClient]
) -> None:
    contacts, _me, bob = befriended(app, headless, "bob")
    chat = open_chat_with(app, contacts, bob.username or "")
    chat.pop_out()
    popped = app.chats[("user", bob.username or "")]
    popped.header.set_connection("reconnecting")
    assert str(popped.header.state.cget("text")).endswith(i18n.t("connection.reconnecting"))
    assert i18n.t("contacts.online") not in str(popped.header.state.cget("text"))
    app.require_client().process_events()
    popped.header.set_connection("connected")
    assert i18n.t("contacts.online") in str(popped.header.state.cget("text"))


# ---------------------------------------------------------------- 5. composing


def test_style_kept_per_chat_focus_after_colour_emoji_and_close_keys(
    scale: float, app: App, headless: Callable[..., ChatClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    contacts, _me, bob = befriended(app, headless, "bob")
    bob_name = bob.username or ""
    chat = open_chat_with(app, contacts, bob_name)
    chat.composer.set_font_size(20)
    monkeypatch.setattr(colorchooser, "askcolor", lambda **_: ((1, 2, 3), "#0a0b0c"))
    chat.composer.color_button.focus_force()
    chat.composer.color_button.invoke()
    settle(app)
    assert chat.focus_get() is chat.composer.input  # typing goes on in the message box

    chat.composer.emoji_button.invoke()
    picker = chat.emoji_picker
    assert picker.winfo_viewable() or picker.winfo_exists()
    picker.buttons["\u263a"].invoke()
    assert chat.composer.text.endswith("\u263a")

    chat.composer.input.focus_force()
    app.root.update()
    chat.composer.input.event_generate("<Escape>")
    settle(app)
    assert ("user", bob_name) not in app.chats  # Esc closed it, keeping the draft
    chat = open_chat_with(app, contacts, bob_name)
    assert (chat.composer.font_size, chat.composer.color) == (20, "#0a0b0c")
    assert chat.composer.text.endswith("\u263a")
    chat.composer.input.focus_force()
    app.root.update()
    chat.composer.input.event_generate("<Control-w>")
    settle(app)
    assert ("user", bob_name) not in app.chats


def test_leave_group_and_delete_friend_in_two_clicks(
    scale: float, app: App, headless: Callable[..., ChatClient]
) -> None:
    contacts, _me, bob = befriended(app, headless, "bob")
    bob_name = bob.username or ""
    room = bob.create_room(f"Leavers {bob_name}")
    app.require_client().join_room(room.room_id)
    pump_until(app.root, lambda: contacts.item("room", room.id) is not None, what="the group")
    group = open_chat_with_room(app, contacts, room.id)
    menu = group.header.menu
    labels = [menu.entrycget(i, "label") for i in range(int(menu.index("end") or 0) + 1)]
    assert i18n.t("chat.leave_group") in labels
    group.actions.ask_leave()
    leave = i18n.t("chat.leave_group")
    pump_until(app.root, lambda: leave in info_buttons(group), what="the leave question")
    info_buttons(group)[leave].invoke()
    pump_until(app.root, lambda: contacts.item("room", room.id) is None, what="the group gone")
    assert ("room", room.id) not in app.chats

    chat = open_chat_with(app, contacts, bob_name)  # the open chat is the selected contact
    contacts.action_buttons[Action.DELETE_FRIEND].invoke()  # click 1
    assert contacts.action.value.get() == bob_name  # nothing to type
    contacts.action.confirm.invoke()  # click 2
    pump_until(app.root, lambda: contacts.item("user", bob_name) is None, what="bob removed")
    del chat


def info_buttons(panel: ChatPanel) -> dict[str, ttk.Button]:
    """The buttons of the panel's info strip now (none while it is hidden)."""
    return dict(panel._info.buttons) if panel._info is not None else {}


def test_owner_leaving_hands_the_group_to_a_chosen_member(
    scale: float, app: App, headless: Callable[..., ChatClient]
) -> None:
    contacts, me, bob = befriended(app, headless, "bob")
    bob_name = bob.username or ""
    room = app.require_client().create_room(f"Handover {bob_name}")
    bob.join_room(room.room_id)
    pump_until(app.root, lambda: contacts.item("room", room.id) is not None, what="the group")
    group = open_chat_with_room(app, contacts, room.id)
    members = group.members
    assert members is not None
    pump_until(app.root, lambda: bob_name in members.names, what="bob in the member list")
    pump_until(app.root, lambda: members.owner == me, what="the owner marked")  # fetched apart
    group.actions.ask_leave()
    hand_over = i18n.t("chat.leave_hand_over", name=bob_name)
    pump_until(app.root, lambda: hand_over in info_buttons(group), what="the successor choice")
    assert i18n.t("chat.leave_group") not in info_buttons(group)  # no plain leave for an owner
    info_buttons(group)[hand_over].invoke()
    pump_until(app.root, lambda: contacts.item("room", room.id) is None, what="the group gone")
    assert bob.room_owner(room.room_id) == bob_name
    lines = [(c.change, c.actor, c.subject) for c in bob.membership_lines(room.room_id)]
    assert lines[-2:] == [("transfer_owner", me, bob_name), ("leave", me, me)]


# ---------------------------------------------------------------- 6. attachments


def test_attachments_limit_downloads_folder_viewer_open_folder_and_paste(
    scale: float,
    app: App,
    headless: Callable[..., ChatClient],
    monkeypatch: pytest.MonkeyPatch,
    downloads: Path,
    opened: list[Path],
    tmp_path: Path,
) -> None:
    contacts, me, bob = befriended(app, headless, "bob")
    bob_name = bob.username or ""
    chat = open_chat_with(app, contacts, bob_name)
    limit = chat.files.limit_text()
    assert limit and chat.composer.limit_label.cget("text") == i18n.t(
        "chat.size_limit", limit=limit
    )

    asked: dict[str, object] = {}

    def choose(**options: object) -> str:
        asked.update(options)
        return ""

    monkeypatch.setattr(filedialog, "askopenfilename", choose)
    chat.composer.file_button.invoke()
    assert asked["initialdir"] == str(downloads)
    assert limit in str(asked["title"])  # the limit is said before choosing

    session = app.require_client()._slot.require()  # a small limit, to hit it
    real_limits = session.limits
    session.limits = dataclasses.replace(real_limits, max_attachment_size=4096)
    too_big = tmp_path / "too big.bin"
    too_big.write_bytes(bytes(10_000))
    chat.files.send_path(too_big, image=False)
    pump_until(app.root, lambda: chat.info_text != "", what="the too-large refusal")
    assert chat.info_text == i18n.t("error.attachment_too_large_limit", limit="4.0 KB")
    session.limits = real_limits
    chat.clear_info()

    picture = tmp_path / "hill.png"
    Image.new("RGB", (1600, 1200), (40, 120, 200)).save(picture)
    bob.send_image(me, picture)
    pump_until(app.root, lambda: chat.view.image_count() == 1, what="the thumbnail")
    message = chat.transcript.messages[-1]
    chat.files.open_image(message)
    pump_until(app.root, lambda: hasattr(chat.files, "viewer"), what="the full-size viewer")
    viewer = chat.files.viewer
    width, height = viewer.shown_size
    assert (
        width <= SCREEN[0] and height <= SCREEN[1] and width / height == pytest.approx(4 / 3, 0.01)
    )
    viewer.destroy()

    report = tmp_path / "report.txt"
    report.write_text("numbers", encoding="utf-8")
    bob.send_file(me, report)
    pump_until(app.root, lambda: chat.transcript.messages[-1].kind == "file", what="the file")
    received = chat.transcript.messages[-1]
    monkeypatch.setattr(filedialog, "askdirectory", lambda **options: str(downloads))
    chat.files.save(received)
    pump_until(app.root, (downloads / "report.txt").exists, what="the saved file")
    pump_until(app.root, lambda: chat.info_text != "", what="the saved notice")
    chat._info.buttons[i18n.t("chat.open_folder")].invoke()  # type: ignore[union-attr]
    assert opened == [downloads]

    arrived: list[str] = []
    bob.add_listener(
        lambda e: arrived.append(e.message.kind) if isinstance(e, MessageReceived) else None
    )
    chat.clipboard_clear()
    chat.clipboard_append(picture.as_uri())  # a file manager's "copy"
    chat.composer.input.focus_force()
    chat.composer.input.event_generate("<<Paste>>")
    pump_until(app.root, lambda: arrived == ["image"], also=bob.process_events, what="pasted")
    assert chat.composer.text == ""  # the URI was sent as a picture, not typed


def test_upload_progress_inside_the_message_and_cancel(
    scale: float, app: App, headless: Callable[..., ChatClient], tmp_path: Path
) -> None:
    contacts, _me, bob = befriended(app, headless, "bob")
    bob_name = bob.username or ""
    chat = open_chat_with(app, contacts, bob_name)
    client = app.require_client()
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(3 * 1024 * 1024))
    cancelled: list[str] = []

    def cancel_at_first_chunk(done: int, total: int) -> None:
        if 0 < done < total and not cancelled:
            for message in client.history(bob_name):
                if message.status == "sending":
                    client.cancel_upload(message)
                    cancelled.append(message.message_id)

    failures: list[BaseException] = []
    app.run(client.send_file, bob_name, big, cancel_at_first_chunk, on_error=failures.append)
    pump_until(app.root, lambda: bool(failures), what="the cancelled upload")
    [message_id] = cancelled
    pump_until(
        app.root,
        lambda: (
            (chat.transcript.get(message_id) or chat.transcript.messages[-1]).status == "failed"
        ),
        what="the message marked failed",
    )
    assert chat.view.progress_text(message_id) == ""  # the percentage is gone
    assert chat.info_text == ""  # cancelling is not an error


# ---------------------------------------------------------------- 8. export


def test_history_export_with_progress_bar(
    scale: float,
    app: App,
    headless: Callable[..., ChatClient],
    monkeypatch: pytest.MonkeyPatch,
    downloads: Path,
    opened: list[Path],
) -> None:
    contacts, me, bob = befriended(app, headless, "bob")
    bob_name = bob.username or ""
    for number in range(40):
        bob.send_text(me, f"export me {number}")
    row = contacts.item("user", bob_name)
    assert row is not None
    pump_until(app.root, lambda: row.badge.text == "40", what="the messages")
    chat = open_chat_with(app, contacts, bob_name)
    monkeypatch.setattr(filedialog, "askdirectory", lambda **options: str(downloads))
    seen: list[ExportProgress] = []
    app.subscribe(lambda e: seen.append(e) if isinstance(e, ExportProgress) else None)
    chat.actions.export_chat()
    export = chat.actions.export
    assert export is not None and export.running and export.bar is not None
    pump_until(app.root, lambda: export.result is not None, what="the export")
    assert seen[-1].done == seen[-1].total == 40
    result = export.result
    assert result is not None and export.strip is None  # the bar is gone
    document = json.loads(result.json_path.read_text(encoding="utf-8"))
    assert len(document["chats"][0]["messages"]) == 40
    assert "export me 39" in result.html_path.read_text(encoding="utf-8")
    assert export.banner is not None
    export.banner.buttons[i18n.t("chat.open_folder")].invoke()
    assert opened == [result.html_path.parent]


# ---------------------------------------------------------------- 5. identity


def test_identity_exported_in_the_main_window_and_imported_at_login(
    scale: float,
    make_app: Callable[..., App],
    headless: Callable[..., ChatClient],
    monkeypatch: pytest.MonkeyPatch,
    downloads: Path,
    tmp_path: Path,
) -> None:
    first = make_app(data_dir=tmp_path / "first-computer")
    contacts, me, bob = befriended(first, headless, "bob")
    saved = downloads / f"{me}.uchat-identity"
    monkeypatch.setattr(filedialog, "asksaveasfilename", lambda **options: str(saved))
    contacts.export_identity()
    panel = contacts.identity_export
    assert panel is not None
    panel.passphrase.set_value("short")
    panel.submit()
    assert panel.passphrase.error_text == i18n.t("error.invalid_passphrase")
    panel.passphrase.set_value("two computers, one me")
    panel.confirm.set_value("two computers, one me")
    panel.submit()
    pump_until(first.root, saved.exists, what="the identity file")
    log_out(first, contacts)
    first.close()  # one window on this display at a time

    second = make_app(data_dir=tmp_path / "second-computer")
    form = second.form
    assert isinstance(form, LoginForm)
    form.username.set_value(me)
    form.password.set_value(PASSWORD)
    monkeypatch.setattr(filedialog, "askopenfilename", lambda **options: str(saved))
    form.import_link.invoke()
    assert form.identity.winfo_manager()  # the passphrase row appears
    form.identity.passphrase.set_value("not it at all")
    form.identity.import_button.invoke()
    pump_until(
        second.root,
        lambda: form.identity.passphrase.error_text != "",
        what="the wrong passphrase",
    )
    assert form.identity.passphrase.error_text == i18n.t("error.bad_identity_file")
    form.identity.passphrase.set_value("two computers, one me")
    form.identity.import_button.invoke()
    pump_until(second.root, lambda: isinstance(second.form, ContactsForm), what="logged in")
    assert second.require_client().can_send
    del bob


def test_a_refused_friend_request_is_told(
    scale: float, app: App, headless: Callable[..., ChatClient]
) -> None:
    contacts, me, _bob = befriended(app, headless, "bob")
    carol = headless(unique_name("carol"))
    carol_name = carol.username or ""
    contacts.action_buttons[Action.ADD_FRIEND].invoke()
    contacts.action.value.set(carol_name)
    contacts.action.confirm.invoke()
    carol.wait_for_event(lambda e: e.kind == "friend_request")
    carol.answer_friend_request(me, False)
    text = i18n.t("contacts.request_refused", name=carol_name)
    pump_until(
        app.root,
        lambda: any(getattr(b, "text", "") == text for b in contacts.banners.winfo_children()),
        what="the refusal notice",
    )
    [banner] = [
        b for b in contacts.banners.winfo_children() if isinstance(b, Banner) and b.text == text
    ]
    banner.buttons[i18n.t("common.dismiss")].invoke()
    pump_until(app.root, lambda: not contacts.refusals, what="the notice dismissed")
    settle(app)
    assert height_of(contacts.banners) <= 1
