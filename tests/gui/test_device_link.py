"""Linking a new computer on screen, at 1366x768 and at 192 dpi: the login form's panel
on the new computer, and the ⋯ → Link a new computer window on the old one.

One Uchat window per display at a time, so each test drives one computer through its
window and the other through a headless client on real sockets, against the real
server.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client import i18n
from client.core.client import ChatClient
from client.core.event_types import Event, Kicked, LinkCompare, LinkFailed, LinkFinished
from client.forms.contacts_form import ContactsForm
from client.forms.device_link import format_code
from client.forms.login_form import LoginForm
from client.theme import BASE_SCALING
from client.ui import App
from tests.gui.conftest import PASSWORD, pump_until, unique_name
from tests.gui.test_keys_and_search import befriended

SCREEN = (1366, 768)


@pytest.fixture(params=[1.0, 2.0], ids=["96dpi", "192dpi"])
def scale(request: pytest.FixtureRequest, tk_root: tk.Tk) -> Iterator[float]:
    before = float(tk_root.tk.call("tk", "scaling"))
    tk_root.tk.call("tk", "scaling", BASE_SCALING * request.param)
    yield float(request.param)
    tk_root.tk.call("tk", "scaling", before)


def visible_in(widget: tk.Misc, window: tk.Misc) -> bool:
    """Mapped, and its bottom edge inside the window (not cut off below)."""
    widget.update_idletasks()
    bottom = widget.winfo_rooty() + widget.winfo_height()
    return bool(widget.winfo_ismapped()) and bottom <= window.winfo_rooty() + window.winfo_height()


def wait_for(client: ChatClient, kind: type[Event]) -> Event:
    return client.wait_for_event(lambda e: isinstance(e, kind), 10.0)


def test_a_new_computer_links_from_the_login_form_and_logs_in(
    scale: float,
    make_app: Callable[..., App],
    headless: Callable[..., ChatClient],
    tmp_path: Path,
) -> None:
    name = unique_name("link")
    old = headless(name)  # the computer that holds the keys, logged in
    app = make_app(data_dir=tmp_path / "new-computer")
    app.root.geometry(f"{SCREEN[0]}x{SCREEN[1]}+0+0")
    form = app.form
    assert isinstance(form, LoginForm)
    form.link_link.invoke()
    panel = form.device_link
    panel.code_button.invoke()  # no username yet: the login form says so
    assert form.username.error_text == i18n.t("error.required")
    assert not panel.linking
    form.username.set_value(name)
    form.password.set_value("a typo in the password 1")  # not checked until the login
    panel.code_button.invoke()
    pump_until(app.root, lambda: panel.shown_code != "", what="the one-time code")
    code = panel.shown_code.replace(" ", "")
    assert len(code) == 8 and visible_in(panel.code, app.root)

    old.join_link(code)
    pump_until(
        app.root,
        lambda: "entered the code" in str(panel.status.cget("text")),
        what="the joined notice",
    )
    compare = wait_for(old, LinkCompare)
    assert isinstance(compare, LinkCompare)
    pump_until(app.root, lambda: bool(panel.compare.winfo_ismapped()), what="the short code")
    assert panel.compare.sas.cget("text") == compare.sas
    assert visible_in(panel.compare.match_button, app.root), "the answer buttons fit the window"

    old.confirm_link(True)
    assert isinstance(wait_for(old, LinkFinished), LinkFinished)
    panel.compare.match_button.invoke()
    # back on the ordinary form, saying the identity arrived; the typo shows as usual
    pump_until(app.root, lambda: form.errors()["general"] != "", what="the login error")
    assert form.errors()["general"] == i18n.t("error.login_failed")
    assert form.notice.cget("text") == i18n.t("link.received") and form.notice.winfo_ismapped()
    assert visible_in(form.login_button, app.root)
    form.password.set_value(PASSWORD)
    form.login_button.invoke()  # the identity waited in memory for this
    pump_until(app.root, lambda: isinstance(app.form, ContactsForm), what="logged in")
    assert app.require_client().can_send
    kicked = wait_for(old, Kicked)  # one login at a time: the old computer was signed out
    assert isinstance(kicked, Kicked)
    assert "signs out the other computer" in i18n.EN["link.received"]


def test_the_old_computer_types_the_code_compares_and_sends(
    scale: float,
    make_app: Callable[..., App],
    headless: Callable[..., ChatClient],
    tmp_path: Path,
) -> None:
    app = make_app(data_dir=tmp_path / "old-computer")
    app.root.geometry(f"{SCREEN[0]}x{SCREEN[1]}+0+0")
    contacts, me, _bob = befriended(app, headless, "bob")
    new = ChatClient(app.settings.host, app.settings.port, tmp_path / "new-computer")
    try:
        code, _ = new.start_link(me)
        contacts.link_computer()
        panel = contacts.device_link
        assert panel is not None
        window = panel.winfo_toplevel()
        assert window is not app.root and visible_in(panel.code.entry, window)
        panel.code.set_value("1234")
        panel.submit()
        assert panel.code.error_text == i18n.t("link.code_format")
        panel.code.set_value("0000 0000" if code != "00000000" else "1111 1111")
        panel.submit()
        pump_until(app.root, lambda: panel.code.error_text != "", what="the wrong code")
        assert panel.code.error_text == i18n.t("error.link_code_invalid")
        panel.code.set_value(format_code(code))
        panel.submit()
        pump_until(app.root, lambda: bool(panel.compare.winfo_ismapped()), what="the short code")
        compare = wait_for(new, LinkCompare)
        assert isinstance(compare, LinkCompare)
        assert panel.compare.sas.cget("text") == compare.sas
        assert visible_in(panel.compare.differ_button, window)
        assert window.winfo_rooty() + window.winfo_height() <= SCREEN[1]
        panel.compare.match_button.invoke()
        pump_until(
            app.root,
            lambda: str(panel.status.cget("text")) == i18n.t("link.sent"),
            what="the identity sent",
        )
        new.confirm_link(True)
        assert isinstance(wait_for(new, LinkFinished), LinkFinished)
        new.login(me, PASSWORD)
        assert new.can_send
        pump_until(app.root, lambda: isinstance(app.form, LoginForm), what="this one kicked")
        form = app.form
        assert isinstance(form, LoginForm) and form.username.value == me
    finally:
        new.close()


def test_saying_the_codes_differ_sends_nothing_and_the_window_says_so(
    scale: float,
    make_app: Callable[..., App],
    headless: Callable[..., ChatClient],
    tmp_path: Path,
) -> None:
    app = make_app(data_dir=tmp_path / "old-computer")
    contacts, me, _bob = befriended(app, headless, "bob")
    new = ChatClient(app.settings.host, app.settings.port, tmp_path / "new-computer")
    try:
        code, _ = new.start_link(me)
        contacts.link_computer()
        panel = contacts.device_link
        assert panel is not None
        panel.code.set_value(code)
        panel.submit()
        pump_until(app.root, lambda: bool(panel.compare.winfo_ismapped()), what="the short code")
        panel.compare.differ_button.invoke()
        pump_until(
            app.root,
            lambda: str(panel.status.cget("text")) == i18n.t("link.failed.refused"),
            what="the refusal",
        )
        failed = wait_for(new, LinkFailed)
        assert isinstance(failed, LinkFailed) and failed.reason == "refused"
        assert not panel.compare.winfo_ismapped()
        window = panel.winfo_toplevel()
        panel.close()  # the window goes
        app.root.update()
        assert not window.winfo_exists()
    finally:
        new.close()
