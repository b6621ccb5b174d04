"""Reading, where issue 12 found it wrong: a chat with pictures opens at the newest
message (thumbnails load after the text and must not push it out of view), a message
arriving in an open chat is scrolled into view, and a new message while no Uchat
window has the focus rings the bell. At 1366x768 and at 192 dpi."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from client.core.client import ChatClient
from client.theme import BASE_SCALING
from client.ui import App
from tests.gui.conftest import pump_until
from tests.gui.test_everyday import SCREEN, settle
from tests.gui.test_keys_and_search import befriended, open_chat_with


@pytest.fixture(params=[1.0, 2.0], ids=["96dpi", "192dpi"])
def scale(request: pytest.FixtureRequest, tk_root: tk.Tk) -> Iterator[float]:
    before = float(tk_root.tk.call("tk", "scaling"))
    tk_root.tk.call("tk", "scaling", BASE_SCALING * request.param)
    yield float(request.param)
    tk_root.tk.call("tk", "scaling", before)


def test_a_chat_with_pictures_opens_at_the_newest_and_follows_arrivals(
    scale: float, app: App, headless: Callable[..., ChatClient], tmp_path: Path
) -> None:
    app.root.geometry(f"{SCREEN[0]}x{SCREEN[1]}+0+0")
    contacts, me, bob = befriended(app, headless, "bob")
    bob_name = bob.username or ""
    for number in range(3):
        picture = tmp_path / f"tall {number}.png"
        Image.new("RGB", (300, 900), (40 * number, 90, 160)).save(picture)
        bob.send_text(me, f"before picture {number}")
        bob.send_image(me, picture)
    bob.send_text(me, "the newest line")
    row = contacts.item("user", bob_name)
    assert row is not None
    pump_until(app.root, lambda: row.badge.text == "7", what="seven messages")
    chat = open_chat_with(app, contacts, bob_name)
    view = chat.view
    pump_until(
        app.root,
        lambda: len(view.text.image_names()) >= 3,
        what="the three thumbnails",
    )
    settle(app, 0.3)
    assert view.at_bottom(), "the newest line is in view once the pictures are in"

    bob.send_text(me, "arrives while the chat is open")
    pump_until(
        app.root,
        lambda: "arrives while the chat is open" in view.text.get("1.0", "end"),
        what="the new message",
    )
    settle(app)
    assert view.at_bottom() and view.unseen == 0  # scrolled into view, no "new" marker
    assert not view.new_button.winfo_ismapped()


def test_a_new_message_rings_the_bell_only_while_uchat_is_not_focused(
    scale: float, app: App, headless: Callable[..., ChatClient]
) -> None:
    _contacts, me, bob = befriended(app, headless, "bob")
    other = tk.Tk()  # another program's window takes the focus
    try:
        other.geometry("200x100+600+300")
        other.update()
        other.focus_force()
        other.update()
        pump_until(app.root, lambda: app.root.focus_get() is None, what="focus elsewhere")
        bells = app.bells
        bob.send_text(me, "ding")
        pump_until(app.root, lambda: app.bells == bells + 1, what="the bell")
    finally:
        other.destroy()
    app.root.focus_force()
    pump_until(app.root, lambda: app.root.focus_get() is not None, what="focus back")
    bells = app.bells
    bob.send_text(me, "quiet")
    pump_until(
        app.root,
        lambda: app.require_client().unread(bob.username or "") >= 1,
        what="the quiet message",
    )
    settle(app)
    assert app.bells == bells
