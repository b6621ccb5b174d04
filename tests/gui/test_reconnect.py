"""A real reconnect under the GUI: the server process is stopped and started again on
the same port. Every window says the connection is gone (and stops calling friends
"Online"), then, once the client is back by itself, shows the friends' presence and
their new IP:port, at 1366x768 and at 192 dpi."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client import i18n
from client.core.client import ChatClient
from client.forms.chat_form import ChatPanel
from client.forms.contacts_form import ContactsForm
from client.theme import BASE_SCALING
from client.ui import App
from tests.gui.conftest import PASSWORD, pump_until, unique_name
from tests.gui.test_contacts_and_chat import accept_request_from, register_through_the_form
from tests.integration.conftest import RunningServer, start_server


@pytest.fixture(params=[1.0, 2.0], ids=["96dpi", "192dpi"])
def scale(request: pytest.FixtureRequest, tk_root: tk.Tk) -> Iterator[float]:
    before = float(tk_root.tk.call("tk", "scaling"))
    tk_root.tk.call("tk", "scaling", BASE_SCALING * request.param)
    yield float(request.param)
    tk_root.tk.call("tk", "scaling", before)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[list[RunningServer]]:
    """A server this test may stop and restart (the module's shared one must stay up)."""
    servers = [start_server(tmp_path / "server")]
    yield servers
    for running in servers:
        if running.is_alive():
            running.stop()


def local_port(client: ChatClient) -> int:
    """The port the server sees for `client` (its socket's own end)."""
    sock = client._link.current()._sock
    assert sock is not None
    return int(sock.getsockname()[1])


def offline_everywhere(contacts: ContactsForm, chats: list[ChatPanel]) -> bool:
    waiting = i18n.t("contacts.online")
    return contacts.header.state_name in ("reconnecting", "disconnected") and all(
        waiting not in str(chat.header.state.cget("text"))
        and chat.header.connection in ("reconnecting", "disconnected")
        for chat in chats
    )


def test_presence_and_address_come_back_after_the_server_restarts(
    scale: float,
    make_app: Callable[..., App],
    own_server: list[RunningServer],
    tmp_path: Path,
) -> None:
    server = own_server[0]
    app = make_app(host=server.host, port=server.port, reconnect_min=0.1, reconnect_max=0.4)
    me, name = unique_name("me"), unique_name("bob")
    contacts = register_through_the_form(app, me)
    bob = ChatClient(
        server.host, server.port, tmp_path / "bob", reconnect_min=0.1, reconnect_max=0.4
    )
    try:
        bob.register(name, PASSWORD, f"{name}@example.org", "other", 30)
        bob.login(name, PASSWORD)
        bob.add_friend(me)
        accept_request_from(app, contacts, name)
        room = app.require_client().create_room("reconnect club")
        pump_until(app.root, lambda: contacts.item("room", room.id) is not None, what="room")
        before = f"127.0.0.1:{local_port(bob)}"
        item = contacts.item("user", name)
        assert item is not None
        pump_until(app.root, lambda: item.address_label.cget("text") == before, what="address")

        assert item.contact is not None
        contacts.open(item.contact)
        app.chats[("user", name)].pop_out()
        popped = app.chats[("user", name)]  # now in a window of its own
        assert popped.popped
        room_item = contacts.item("room", room.id)
        assert room_item is not None and room_item.contact is not None
        contacts.open(room_item.contact)
        embedded = app.chats[("room", room.id)]
        assert before in str(popped.header.state.cget("text"))

        while bob.process_events():  # what happened so far is not the reconnect
            continue
        server.stop()
        pump_until(
            app.root,
            lambda: offline_everywhere(contacts, [popped, embedded]),
            what="every window saying the connection is gone",
        )
        expected = i18n.t(f"connection.{contacts.header.state_name}")
        assert expected in str(popped.header.state.cget("text"))
        assert str(contacts.header.status.cget("text")).startswith(expected)

        own_server.append(start_server(server.data_dir, extra_args=("--port", str(server.port))))
        bob.wait_for_event(
            lambda e: e.kind == "connection" and e.data["state"] == "connected", 20.0
        )
        after = f"127.0.0.1:{local_port(bob)}"
        assert after != before  # a new connection, a new port
        pump_until(
            app.root,
            lambda: (
                contacts.header.state_name == "connected"
                and item.address_label.cget("text") == after
                and item.contact is not None
                and item.contact.online
            ),
            timeout=25.0,
            what="bob online again at his new address in the list",
        )
        pump_until(
            app.root,
            lambda: (
                f"{i18n.t('contacts.online')}  \u00b7  {after}"
                in str(popped.header.state.cget("text"))
            ),
            what="the chat window showing bob's new address",
        )
        assert embedded.header.connection == "connected"
        assert i18n.t("connection.reconnecting") not in str(embedded.header.state.cget("text"))
    finally:
        bob.close()
