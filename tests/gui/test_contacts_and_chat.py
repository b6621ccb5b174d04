"""From registration to a conversation: the contact list updates live (friend request,
presence, unread badge) and the chat window shows and sends styled messages."""

from __future__ import annotations

from collections.abc import Callable

from client import i18n
from client.core.client import ChatClient
from client.core.models import ChatMessage, Event
from client.forms.contacts import Action
from client.forms.contacts_form import ContactsForm
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


def test_group_creation_shows_the_number_and_presence_updates_live(
    app: App, headless: Callable[..., ChatClient]
) -> None:
    me, friend = unique_name("me"), unique_name("carol")
    contacts = register_through_the_form(app, me)
    carol = headless(friend)
    carol.add_friend(me)
    accept_request_from(app, contacts, friend)

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
