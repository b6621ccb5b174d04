"""Key verification and history search in the chat window: the safety number both users
compare, the loud warning when a friend's key changed (sending refused until "Trust new
key"), and search that finds English and Chinese words, even beyond the loaded page."""

from __future__ import annotations

import re
import sqlite3
import tkinter as tk
from collections.abc import Callable

from client import i18n
from client.components.banner import Banner
from client.core.client import ChatClient
from client.core.event_types import Event, KemKeyRejected
from client.core.keystore import KeyStore, server_id_for
from client.core.models import ChatMessage
from client.core.store import LocalStore
from client.forms.chat import PAGE_SIZE
from client.forms.chat_form import ChatPanel
from client.forms.chat_keys import SAFETY_TAG
from client.forms.contacts_form import ContactsForm
from client.forms.login_form import LoginForm
from client.ui import App
from common.crypto.certs import CsrInfo, ServerIdentity, issue_certificate
from common.crypto.keys import generate_user_keys
from tests.gui.conftest import PASSWORD, pump_until, unique_name
from tests.gui.test_contacts_and_chat import accept_request_from, register_through_the_form
from tests.integration.conftest import RunningServer

SAFETY_NUMBER = re.compile(r"\d{5}(?: \d{5}){11}")  # 60 digits in groups of five


def befriended(
    app: App, headless: Callable[..., ChatClient], prefix: str
) -> tuple[ContactsForm, str, ChatClient]:
    """Register a user through the form and make a headless friend; (form, me, friend)."""
    me = unique_name("me")
    contacts = register_through_the_form(app, me)
    friend = headless(unique_name(prefix))
    assert friend.username is not None
    friend.add_friend(me)
    accept_request_from(app, contacts, friend.username)
    friend.wait_for_event(lambda e: e.kind == "contact_added")
    return contacts, me, friend


def open_chat_with(app: App, contacts: ContactsForm, username: str) -> ChatPanel:
    item = contacts.item("user", username)
    assert item is not None and item.contact is not None
    contacts.open(item.contact)
    return app.chats[("user", username)]


def collect_messages(client: ChatClient) -> list[ChatMessage]:
    """Messages the headless client receives from now on (drained by `process_events`)."""
    arrived: list[ChatMessage] = []

    def collect(event: Event) -> None:
        if event.kind == "message":
            arrived.append(event.data["message"])

    client.add_listener(collect)
    return arrived


def press_enter(widget: tk.Misc) -> None:
    """Key events go to the focus, as when the user types."""
    widget.focus_force()
    widget.update()
    widget.event_generate("<KeyPress-Return>", keysym="Return")


def shown_text(chat: ChatPanel) -> str:
    return chat.view.text.get("1.0", "end")


def test_the_safety_number_matches_what_the_friend_sees_and_toggles(
    app: App, headless: Callable[..., ChatClient]
) -> None:
    contacts, me, bob = befriended(app, headless, "bob")
    friend = bob.username or ""
    chat = open_chat_with(app, contacts, friend)
    menu = chat.header.menu
    labels = [menu.entrycget(i, "label") for i in range(int(menu.index("end") or 0) + 1)]
    safety = labels.index(i18n.t("chat.safety_number"))  # in the conversation's ⋯ menu

    menu.invoke(safety)
    pump_until(app.root, lambda: chat.info_tag == SAFETY_TAG, what="the safety number")
    found = SAFETY_NUMBER.search(chat.info_text)
    assert found is not None, chat.info_text
    number = found.group()
    assert len(number.replace(" ", "")) == 60
    assert number == bob.safety_number(me) == app.require_client().safety_number(friend)
    assert chat.info_text == i18n.t("chat.safety_text", name=friend, number=number)

    menu.invoke(safety)  # the second press hides it again
    assert chat.info_text == "" and chat.info_tag == ""


def pin_a_different_key_for(app: App, server: RunningServer, me: str, friend: str) -> None:
    """Make this computer's pin of `friend` differ from the certificate the server holds,
    exactly as if `friend`'s key had changed since we last talked (done while logged
    out, as the pin lives in the local store the client keeps open)."""
    rogue_ca = ServerIdentity.create()
    keys = generate_user_keys()
    other = issue_certificate(
        rogue_ca,
        CsrInfo(friend, f"{friend}@example.org", keys.identity_public, keys.agreement_public),
    )
    store_path = KeyStore(app.settings.data_dir).store_path(server_id_for(server.fingerprint), me)
    assert store_path.is_file()
    with LocalStore(store_path) as store:
        assert store.pinned_certificate(friend) is not None  # pinned by the first message
        store.pin_certificate(friend, other)


def log_out(app: App, contacts: ContactsForm) -> None:
    contacts.header.logout_button.invoke()
    pump_until(app.root, lambda: isinstance(app.form, LoginForm), what="the login form")
    assert app.client is None


def log_in(app: App, me: str) -> ContactsForm:
    form = app.form
    assert isinstance(form, LoginForm)
    assert form.username.value == me  # remembered from the session that ended
    form.password.set_value(PASSWORD)
    form.login_button.invoke()
    pump_until(app.root, lambda: isinstance(app.form, ContactsForm), what="the contact list")
    assert isinstance(app.form, ContactsForm)
    return app.form


def key_banner(chat: ChatPanel) -> Banner | None:
    """The chat's key-change warning, if it is raised."""
    return chat.verification.banner


def contact_banners(contacts: ContactsForm) -> list[Banner]:
    return [child for child in contacts.banners.winfo_children() if isinstance(child, Banner)]


def test_a_changed_key_warns_blocks_sending_and_is_trusted_on_request(
    app: App, headless: Callable[..., ChatClient], gui_server: RunningServer
) -> None:
    contacts, me, bob = befriended(app, headless, "bob")
    friend = bob.username or ""
    bob.send_text(me, "first, with the old key")
    item = contacts.item("user", friend)
    assert item is not None
    pump_until(app.root, lambda: item.badge.text == "1", what="bob's first message")

    log_out(app, contacts)
    pin_a_different_key_for(app, gui_server, me, friend)
    contacts = log_in(app, me)
    chat = open_chat_with(app, contacts, friend)
    assert key_banner(chat) is None  # nothing changed as far as we know yet

    held = bob.send_text(me, "sent after the key change")
    pump_until(
        app.root,
        lambda: friend in app.require_client().pending_key_changes(),
        what="the key change",
    )
    # The core records the change on its socket thread; the window hears of it when the
    # Tk pump drains the event, a moment later.
    pump_until(app.root, lambda: key_banner(chat) is not None, what="the key-change banner")
    banner = key_banner(chat)
    assert banner is not None
    pump_until(app.root, lambda: "\n" in banner.text, what="the new safety number in the banner")
    expected_number = bob.safety_number(me)
    assert banner.text == (
        i18n.t("chat.key_changed", name=friend)
        + "\n"
        + i18n.t("chat.new_safety_number", number=expected_number)
    )
    assert banner.winfo_ismapped()
    assert str(banner.label.cget("foreground")) == app.theme.palette.warning_text  # red
    assert i18n.t("chat.key_changed_notice", name=friend) in shown_text(chat)
    assert "sent after the key change" not in shown_text(chat)  # held back, not shown

    [warning] = contact_banners(contacts)  # the contact list warns too
    assert warning.text == i18n.t("contacts.key_changed", name=friend)
    warning.buttons[i18n.t("contacts.open_chat")].invoke()
    assert app.chats[("user", friend)] is chat  # the open window comes forward, not a new one

    arrived = collect_messages(bob)
    chat.composer.set_text("hello, is this still you?")
    press_enter(chat.composer.input)
    pump_until(app.root, lambda: chat.info_text != "", what="the refusal")
    assert "trust" in chat.info_text.lower()  # says what to do: check, then trust the key
    assert chat.composer.text == "hello, is this still you?"  # kept to send once trusted
    assert not chat.send_busy.busy

    banner.buttons[i18n.t("chat.trust_key")].invoke()
    pump_until(app.root, lambda: key_banner(chat) is None, what="the banner to go")
    assert not banner.winfo_exists()
    assert friend not in app.require_client().pending_key_changes()
    assert i18n.t("chat.key_trusted", name=friend) in shown_text(chat)
    pump_until(
        app.root,
        lambda: chat.transcript.messages[-1].message_id == held.message_id,
        what="the held message",
    )
    pump_until(app.root, lambda: contact_banners(contacts) == [], what="the list's warning")

    press_enter(chat.composer.input)  # the same text, now allowed
    pump_until(app.root, lambda: bool(arrived), also=bob.process_events, what="bob's copy")
    assert [m.text for m in arrived] == ["hello, is this still you?"]  # the refusal sent none
    pump_until(app.root, lambda: chat.composer.text == "", what="the input to clear")
    assert chat.transcript.messages[-1].text == "hello, is this still you?"


def highlighted(chat: ChatPanel) -> str:
    ranges = chat.view.text.tag_ranges("hit")
    return chat.view.text.get(ranges[0], ranges[-1]) if ranges else ""


def hit_position(chat: ChatPanel) -> str:
    label = chat.header.hit_label
    return str(label.cget("text")) if label.winfo_manager() else ""


def search_for(chat: ChatPanel, query: str) -> None:
    chat.focus_search()  # Ctrl+F or the menu opens the search row
    chat.header.query.set(query)
    press_enter(chat.header.search_entry)


def test_history_search_finds_english_and_chinese_words_beyond_the_loaded_page(
    app: App, headless: Callable[..., ChatClient]
) -> None:
    contacts, me, bob = befriended(app, headless, "bob")
    friend = bob.username or ""
    bob.send_text(me, "Meet me at the Pagoda café at noon")
    bob.send_text(me, "今晚我们去吃火锅吧")
    for number in range(PAGE_SIZE):
        bob.send_text(me, f"filler {number}")
    item = contacts.item("user", friend)
    assert item is not None
    pump_until(app.root, lambda: item.badge.text == str(PAGE_SIZE + 2), what="every message")
    chat = open_chat_with(app, contacts, friend)
    assert "Pagoda" not in shown_text(chat) and "火锅" not in shown_text(chat)  # older page

    search_for(chat, "pagoda")  # another case, and not on the page shown
    assert hit_position(chat) == i18n.t("chat.search_position", index=1, count=1)
    assert chat.info_text == ""  # no banner: the position sits by the search box
    assert "Meet me at the Pagoda café at noon" in highlighted(chat)
    assert "filler" not in highlighted(chat)

    for query in ("火锅", "吃火锅"):  # two characters search by LIKE, three by trigram index
        search_for(chat, f" {query} ")
        assert hit_position(chat) == i18n.t("chat.search_position", index=1, count=1)
        assert "今晚我们去吃火锅吧" in highlighted(chat)
        assert "Pagoda" not in highlighted(chat)

    search_for(chat, "filler 4")  # "filler 4" and "filler 40".."filler 49": newest is marked
    assert hit_position(chat) == i18n.t("chat.search_position", index=1, count=11)
    assert "filler 49" in highlighted(chat)
    assert chat.header.newer_button.instate(["disabled"])
    chat.header.older_button.invoke()  # ▲: the next older hit
    assert "filler 48" in highlighted(chat)
    assert hit_position(chat) == i18n.t("chat.search_position", index=2, count=11)
    for _ in range(20):  # stops at the oldest hit
        chat.header.older_button.invoke()
    assert highlighted(chat).startswith("filler 4\n") or "filler 4" in highlighted(chat)
    assert chat.header.older_button.instate(["disabled"])
    chat.header.newer_button.invoke()  # ▼: back towards the newest
    assert "filler 40" in highlighted(chat)
    chat.view.text.focus_force()
    chat.view.text.event_generate("<Control-f>")  # Ctrl+F goes to the search box
    app.root.update()
    assert chat.focus_get() is chat.header.search_entry

    search_for(chat, "寿司")
    assert chat.info_text == i18n.t("chat.search_none", query="寿司")
    assert not chat.header.hit_label.winfo_manager()  # no hits: no position, no buttons
    assert highlighted(chat) == ""


def kem_key_published(server: RunningServer, username: str) -> bool:
    with sqlite3.connect(server.data_dir / "uchat.db") as db:
        row = db.execute(
            "SELECT COUNT(*) FROM kem_keys k JOIN users u ON u.id = k.user_id WHERE u.username = ?",
            (username,),
        ).fetchone()
    return bool(row[0])


def test_a_friends_first_kem_key_is_a_verified_addition_and_a_refused_one_a_warning(
    app: App, headless: Callable[..., ChatClient], gui_server: RunningServer
) -> None:
    contacts, me, bob = befriended(app, headless, "bob")
    friend = bob.username or ""
    pump_until(app.root, lambda: kem_key_published(gui_server, friend), what="bob's KEM key")
    number_before = bob.safety_number(me)
    chat = open_chat_with(app, contacts, friend)
    arrived = collect_messages(bob)
    chat.composer.set_text("hello")
    press_enter(chat.composer.input)  # the first send fetches bob's keys
    added = i18n.t("chat.kem_key_added", name=friend)
    pump_until(app.root, lambda: added in shown_text(chat), what="the verified addition")
    pump_until(app.root, lambda: bool(arrived), also=bob.process_events, what="bob's copy")
    assert key_banner(chat) is None  # not a key change
    assert app.require_client().pending_key_changes() == []
    assert app.require_client().safety_number(friend) == number_before
    verified = app.require_client().verified_kem_key(friend)
    assert verified is not None

    # A refused KEM key (detected in tests/security/test_kem_key_swap.py), as the Tk
    # pump hands it to the windows: a warning line in the chat, an alarm above the list.
    chat.on_event(KemKeyRejected(friend))
    contacts.on_event(KemKeyRejected(friend))
    refused_line = i18n.t("chat.kem_key_refused", name=friend)
    pump_until(app.root, lambda: refused_line in shown_text(chat), what="the refusal line")
    alarm = i18n.t("transparency.alarm.kem_key_refused", name=friend)
    pump_until(
        app.root,
        lambda: alarm in [b.text for b in contact_banners(contacts)],
        what="the alarm above the contact list",
    )
