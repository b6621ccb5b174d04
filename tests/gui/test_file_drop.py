"""Dropping files on a chat: a real drop through tkdnd's own Tcl handlers (the X11
drag-and-drop messages themselves cannot be made under Xvfb without a drag source
program, so the drop enters at tkdnd's generic layer, as its XDND code hands it on)."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from client.components import file_drop
from client.core.client import ChatClient
from client.forms.chat_form import ChatPanel
from client.ui import App
from tests.gui.conftest import pump_until
from tests.gui.test_keys_and_search import befriended, collect_messages, open_chat_with


def drop_on(widget: tk.Misc, paths: list[str]) -> str:
    """Enter, move over and drop `paths` on `widget`; returns the action tkdnd reports."""
    call, target = widget.tk.call, str(widget)
    data = call("list", *paths)
    x, y = widget.winfo_rootx() + 5, widget.winfo_rooty() + 5
    call("::tkdnd::generic::SetDroppedData", data)
    call("::tkdnd::generic::HandleEnter", target, 0, ("text/uri-list",), ("text/uri-list",),
         ("copy",), ())  # fmt: skip
    call("::tkdnd::generic::HandlePosition", target, 0, (), x, y, "copy", 0)
    return str(call("::tkdnd::generic::HandleDrop", target, 0, (), x, y, 0))


def test_files_dropped_on_a_chat_are_sent(
    app: App, headless: Callable[..., ChatClient], tmp_path: Path
) -> None:
    contacts, _me, bob = befriended(app, headless, "bob")
    chat = open_chat_with(app, contacts, bob.username or "")
    assert chat.drops, "tkdnd loads here (tkinterdnd2 from PyPI)"
    arrived = collect_messages(bob)
    picture = tmp_path / "dropped picture.png"
    Image.new("RGB", (30, 20), (200, 40, 40)).save(picture)
    notes = tmp_path / "notes 1.txt"
    notes.write_text("dropped", encoding="utf-8")
    app.root.update()
    assert drop_on(chat.view, [str(picture), str(tmp_path)]) == "copy"  # the folder is skipped
    assert drop_on(chat.composer.input, [notes.as_uri()]) == "copy"
    pump_until(
        app.root, lambda: len(arrived) >= 2, what="both files at bob", also=bob.process_events
    )
    kinds = {(m.kind, m.attachment.name if m.attachment else "") for m in arrived}
    assert kinds == {("image", "dropped picture.png"), ("file", "notes 1.txt")}
    assert drop_on(chat.view, [str(tmp_path)]) == "refuse_drop"  # nothing sendable


def test_without_tkdnd_the_chat_works_and_files_still_go_by_paste(
    app: App,
    headless: Callable[..., ChatClient],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(file_drop, "enable_drops", lambda root: False)
    contacts, _me, bob = befriended(app, headless, "bob")
    chat: ChatPanel = open_chat_with(app, contacts, bob.username or "")
    assert not chat.drops
    arrived = collect_messages(bob)
    notes = tmp_path / "pasted.txt"
    notes.write_text("pasted", encoding="utf-8")
    app.root.clipboard_clear()
    app.root.clipboard_append(str(notes))
    assert chat._paste() == "break"
    pump_until(app.root, lambda: len(arrived) >= 1, what="the pasted file", also=bob.process_events)
    assert arrived[0].attachment is not None and arrived[0].attachment.name == "pasted.txt"
