"""Signed group membership in the window: the join policy at creation, join requests an
admin approves, remove and make admin from the member list, a line in the conversation
for every verified change, and a warning line when the server lies about the members.

The module's server is a test build with `tests.security.membership_attacks` installed
in "ghost" mode: honest until the test switches the attack on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from tkinter import ttk

import pytest

from client import i18n
from client.core.client import ChatClient
from client.core.directory import JoinPending
from client.forms.chat_form import ChatPanel
from client.forms.contacts import Action
from client.forms.contacts_form import ContactsForm
from client.ui import App
from tests.gui.conftest import pump_until, unique_name
from tests.gui.test_contacts_and_chat import register_through_the_form
from tests.integration.conftest import RunningServer, start_server


@pytest.fixture(scope="module")
def gui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {
        "UCHAT_TEST_SERVER_HOOK": "tests.security.membership_attacks",
        "UCHAT_TEST_MEMBERSHIP_ATTACK": "ghost",
    }
    running = start_server(tmp_path_factory.mktemp("gui-members") / "server", env=env)
    yield running
    if running.is_alive():
        running.stop()


def create_group(app: App, contacts: ContactsForm, name: str, policy: str) -> str:
    """Through the toolbar's form, choosing the join policy; returns the group number."""
    contacts.action_buttons[Action.CREATE_GROUP].invoke()
    panel = contacts.action
    app.root.update()
    assert panel.policies.winfo_ismapped()
    panel.value.set(name)
    panel.policy.set(policy)
    panel.confirm.invoke()
    pump_until(app.root, lambda: not panel.busy.busy, what="the group created")
    number = panel.result.get()
    assert number.isdigit(), panel.message_text
    return number


def open_group(app: App, contacts: ContactsForm, number: str) -> ChatPanel:
    pump_until(app.root, lambda: contacts.item("room", number) is not None, what="the group")
    row = contacts.item("room", number)
    assert row is not None and row.contact is not None
    contacts.open(row.contact)
    return app.chats[("room", number)]


def transcript(chat: ChatPanel) -> str:
    return str(chat.view.text.get("1.0", "end"))


def line_shown(app: App, chat: ChatPanel, text: str) -> None:
    pump_until(app.root, lambda: text in transcript(chat), what=repr(text))


def test_an_admin_approves_promotes_and_removes_from_the_member_list(
    app: App, headless: Callable[..., ChatClient]
) -> None:
    me = unique_name("me")
    contacts = register_through_the_form(app, me)
    number = create_group(app, contacts, f"Private {me}", "approval")
    chat = open_group(app, contacts, number)
    line_shown(app, chat, i18n.t("membership.create", actor=me, subject=me))
    members = chat.members
    assert members is not None

    dan = headless(unique_name("dan"))
    dan_name = dan.username or ""
    with pytest.raises(JoinPending):
        dan.join_room(int(number))
    line_shown(app, chat, i18n.t("members.join_requested", name=dan_name))
    pump_until(app.root, lambda: members.waiting == [dan_name], what="dan waiting")
    approve = [
        child
        for row in members.requests.winfo_children()
        for child in row.winfo_children()
        if isinstance(child, ttk.Button) and child.cget("text") == i18n.t("members.approve")
    ]
    assert len(approve) == 1
    approve[0].invoke()
    line_shown(app, chat, i18n.t("membership.join_approved", subject=dan_name, approver=me))
    pump_until(app.root, lambda: dan_name in members.names, what="dan a member")
    assert members.waiting == [] and members.can_manage

    members.open_menu(dan_name)
    assert members.menu.entrycget(1, "label") == i18n.t("members.make_admin", name=dan_name)
    members.menu.invoke(1)
    line_shown(app, chat, i18n.t("membership.grant_admin", actor=me, subject=dan_name))
    pump_until(app.root, lambda: dan_name in members.admins, what="dan an admin")
    members.open_menu(dan_name)
    assert members.menu.entrycget(0, "label") == i18n.t("members.remove", name=dan_name)
    members.menu.invoke(0)
    line_shown(app, chat, i18n.t("membership.remove", actor=me, subject=dan_name))
    pump_until(app.root, lambda: dan_name not in members.names, what="dan removed")
    assert i18n.t("membership.alarm.server_list_differs", names="") not in transcript(chat)


def test_a_member_the_server_adds_unsigned_is_a_warning_not_a_member(
    app: App, headless: Callable[..., ChatClient], gui_server: RunningServer
) -> None:
    me = unique_name("me")
    contacts = register_through_the_form(app, me)
    number = create_group(app, contacts, f"Open {me}", "open")
    chat = open_group(app, contacts, number)
    members = chat.members
    assert members is not None
    bob = headless(unique_name("bob"))
    bob.join_room(int(number))
    line_shown(app, chat, i18n.t("membership.join", subject=bob.username, actor=bob.username))
    mallory = headless("mallory")
    (gui_server.data_dir / "attack_on").touch()
    mallory.join_room(int(number))  # let in by the server, with no signed join
    warning = i18n.t("membership.alarm.server_list_differs", names="mallory")
    line_shown(app, chat, warning)
    assert "mallory" not in members.names
    assert [name for name, _ in app.require_client().verified_members(int(number))] == sorted(
        [me, bob.username or ""]
    )


def test_the_owner_hands_the_group_over_from_the_member_list(
    app: App, headless: Callable[..., ChatClient]
) -> None:
    me = unique_name("me")
    contacts = register_through_the_form(app, me)
    number = create_group(app, contacts, f"Handover {me}", "open")
    chat = open_group(app, contacts, number)
    members = chat.members
    assert members is not None
    bob = headless(unique_name("bob"))
    bob_name = bob.username or ""
    bob.join_room(int(number))
    pump_until(app.root, lambda: bob_name in members.names, what="bob a member")
    assert members.owner == me

    members.open_menu(bob_name)
    last = int(members.menu.index("end") or 0)
    assert members.menu.entrycget(last, "label") == i18n.t("members.make_owner", name=bob_name)
    members.menu.invoke(last)
    line_shown(app, chat, i18n.t("membership.transfer_owner", actor=me, subject=bob_name))
    pump_until(app.root, lambda: members.owner == bob_name, what="bob the owner")
    members.open_menu(bob_name)  # we stay an admin; the owner cannot be removed or handed to
    labels = {
        members.menu.entrycget(i, "label") for i in range(int(members.menu.index("end") or 0) + 1)
    }
    assert i18n.t("members.make_owner", name=bob_name) not in labels
    assert i18n.t("members.remove", name=bob_name) not in labels
    assert bob.room_owner(int(number)) == bob_name
