"""The desktop application: one Tk root, the form it shows, conversations, the event pump.

After login the root shows the main window: the contact list and the open conversation
side by side; any conversation can be popped out into its own window. Window sizes
come from the body font's metrics and the screen, so they scale with Tk's scaling
(192 dpi doubles them) and fit a 1366x768 screen.

Threading: `ChatClient` threads only fill a queue. `_pump` runs on the Tk thread every
30 ms and drains at most `PUMP_BATCH` events, so a burst of messages can never freeze
the window. Requests go through `App.run` (`ChatClient.run_async`): they run on a
worker and their callbacks come back through the same queue, on this thread.
"""

from __future__ import annotations

import functools
import gc
import itertools
import threading
import tkinter as tk
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from client import i18n
from client.components.layout import text_width
from client.core.client import ChatClient
from client.core.event_types import Event, Kicked, MessageReceived
from client.core.models import Contact
from client.forms.chat_form import ChatPanel, ChatWindow
from client.forms.contacts_form import ContactsForm
from client.forms.host import FormHost, UiSettings
from client.forms.login import ServerAddress
from client.forms.login_form import LoginForm
from client.forms.register_form import RegisterForm
from client.theme import Theme, apply_theme

PUMP_INTERVAL_MS = 30
PUMP_BATCH = 200
CLOSE_WAIT_SECONDS = 2.0

T = TypeVar("T")
Listener = Callable[[Event], None]
ChatKey = tuple[str, str]


@dataclass(frozen=True)
class _Pending:
    """The Tk-side callbacks of one `App.run` request."""

    client: ChatClient
    on_result: Callable[[Any], object] | None
    on_error: Callable[[BaseException], object] | None


LOGIN_CHARS = (40, 34)  # (average characters wide, lines high) of the body font
REGISTER_CHARS = (40, 40)
MAIN_CHARS = (110, 38)
SCREEN_MARGIN_LINES = 4  # room left for a task bar and the window's title


def window_size(root: tk.Misc, font: tuple[str, int], chars: tuple[int, int]) -> tuple[int, int]:
    """Pixels for a window `chars` big in `font`, never larger than the screen.

    Font metrics already follow Tk's scaling, so at 192 dpi this doubles by itself.
    """
    import tkinter.font as tkfont

    line = tkfont.Font(root=root, font=font).metrics("linespace")
    width = text_width(root, font, chars[0])
    height = line * chars[1]
    screen_w, screen_h = root.winfo_screenwidth(), root.winfo_screenheight()
    return min(width, screen_w), min(height, screen_h - SCREEN_MARGIN_LINES * line)


def release_widgets() -> None:
    """Collect destroyed widgets now, on the Tk thread.

    A Tk widget and its parent refer to each other, so only the cycle collector frees
    them; left alone it may run on a worker thread, where finalising a Tk variable
    fails ("main thread is not in main loop").
    """
    gc.collect()


class App:
    """Owns the root window and the current ChatClient; forms ask it to switch."""

    def __init__(self, root: tk.Tk, settings: UiSettings) -> None:
        self.root = root
        self.settings = settings
        self.theme: Theme = apply_theme(root)
        self.client: ChatClient | None = None
        self.server_address = ServerAddress(settings.host, settings.port)
        self.chats: dict[ChatKey, ChatPanel] = {}
        self.form: tk.Widget | None = None
        self._client_address: ServerAddress | None = None
        self._listeners: list[Listener] = []
        self._pump_job: str | None = None
        self._closing = False
        self._tokens = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self.unread = 0
        self.bells = 0  # new messages that rang the bell (tests read it)
        root.title(i18n.t("app.title"))
        root.protocol("WM_DELETE_WINDOW", self.quit)
        self._pump_job = root.after(PUMP_INTERVAL_MS, self._pump)
        self.show_login()

    # ------------------------------------------------------------------ the client

    def connect_client(self, address: ServerAddress) -> ChatClient:
        """The client for `address`: the current one if it already points there."""
        self.server_address = address
        if self.client is not None and self._client_address == address:
            return self.client
        self.drop_client()
        s = self.settings
        client = ChatClient(
            address.host,
            address.port,
            s.data_dir,
            expected_fingerprint=s.server_fingerprint or None,
            timeout=s.request_timeout,
            ping_interval=s.ping_interval,
            reconnect_min=s.reconnect_min,
            reconnect_max=s.reconnect_max,
            allow_hmac_md5=s.allow_hmac_md5,
            servers=s.servers,
        )
        client.add_listener(self._dispatch)
        self.client, self._client_address = client, address
        return client

    def require_client(self) -> ChatClient:
        if self.client is None:
            raise RuntimeError("no client: log in first")
        return self.client

    def drop_client(self) -> None:
        """Forget the current client and close it off the Tk thread."""
        client, self.client, self._client_address = self.client, None, None
        if client is not None:
            client.remove_listener(self._dispatch)
            self._forget_pending(client)
            threading.Thread(target=client.close, name="uchat-close", daemon=True).start()

    def _forget_pending(self, client: ChatClient) -> None:
        """Callbacks of a client that is going away will never run; release them here."""
        for token in [t for t, p in self._pending.items() if p.client is client]:
            del self._pending[token]

    def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        on_result: Callable[[T], object] | None = None,
        on_error: Callable[[BaseException], object] | None = None,
    ) -> None:
        """A blocking request on a worker; the callbacks run later on the Tk thread.

        The worker only sees a token: the callbacks (bound to widgets) stay in
        `_pending`, so no widget is ever released, and finalised, off the Tk thread.
        """
        client = self.require_client()
        token = next(self._tokens)
        self._pending[token] = _Pending(client, on_result, on_error)
        client.run_async(
            fn,
            *args,
            on_result=functools.partial(self._finish, token, False),
            on_error=functools.partial(self._finish, token, True),
        )

    def _finish(self, token: int, failed: bool, value: Any) -> None:
        pending = self._pending.pop(token, None)
        if pending is None:
            return
        callback = pending.on_error if failed else pending.on_result
        if callback is not None:
            callback(value)

    # ------------------------------------------------------------------ events

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _pump(self) -> None:
        handled = 0
        client = self.client
        if client is not None:
            handled = client.process_events(max_events=PUMP_BATCH)
        if not self._closing:
            delay = 1 if handled >= PUMP_BATCH else PUMP_INTERVAL_MS
            self._pump_job = self.root.after(delay, self._pump)

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Kicked):
            self._kicked(event)
            return
        if isinstance(event, MessageReceived) and not event.message.outgoing:
            self._alert()
        for listener in list(self._listeners):
            listener(event)

    def _kicked(self, event: Kicked) -> None:
        client = self.client
        username = client.username or "" if client is not None else ""
        self.close_chats()
        self.drop_client()
        self.show_login(
            notice=i18n.t("login.kicked", address=event.address or "?"),
            warning=True,
            username=username,
        )

    # ------------------------------------------------------------------ forms

    def _switch(self, form: tk.Widget, title: str, chars: tuple[int, int]) -> None:
        """Show `form` in a window `chars` (average characters wide, lines high) big."""
        if self.form is not None:
            self.form.destroy()
            release_widgets()
        self.form = form
        form.pack(fill="both", expand=True)
        self.root.title(title)
        self._base_title = title
        width, height = window_size(self.root, self.theme.fonts.body, chars)
        self.root.minsize(min(width, text_width(self.root, self.theme.fonts.body, 34)), 0)
        self.root.geometry(f"{width}x{height}")

    def show_login(self, notice: str = "", warning: bool = False, username: str = "") -> None:
        form = LoginForm(self.root, self, notice=notice, warning=warning, username=username)
        self._switch(form, i18n.t("app.title"), LOGIN_CHARS)
        form.focus_first()

    def show_register(self) -> None:
        form = RegisterForm(self.root, self)
        self._switch(form, i18n.t("register.window_title"), REGISTER_CHARS)
        form.focus_first()

    def show_contacts(self) -> None:
        client = self.require_client()
        name = client.username or ""
        form = ContactsForm(self.root, self)
        self._switch(form, i18n.t("contacts.window_title", name=name), MAIN_CHARS)

    @property
    def main(self) -> ContactsForm | None:
        return self.form if isinstance(self.form, ContactsForm) else None

    def open_chat(self, contact: Contact) -> ChatPanel:
        """Show the conversation: its own window if popped out, else beside the list."""
        key = (contact.kind, contact.id)
        panel = self.chats.get(key)
        if panel is not None and panel.winfo_exists():
            if panel.popped:
                window = panel.winfo_toplevel()
                window.deiconify()
                window.lift()
            panel.mark_read()
            panel.composer.input.focus_set()
            return panel
        main = self.main
        if main is None:
            return self.pop_out(contact)
        current = main.conversation.panel
        if isinstance(current, ChatPanel):
            current.close()  # keeps its draft
        panel = ChatPanel(main.conversation, self, contact)
        main.conversation.show(panel)
        main.select(contact)
        self.chats[key] = panel
        panel.composer.input.focus_set()
        return panel

    def pop_out(self, contact: Contact) -> ChatPanel:
        key = (contact.kind, contact.id)
        panel = self.chats.get(key)
        if panel is not None and panel.winfo_exists():
            if panel.popped:
                return self.open_chat(contact)
            panel.close()
        window = ChatWindow(self.root, self, contact)
        self.chats[key] = window.panel
        return window.panel

    def open_chats(self) -> int:
        return len(self.chats)

    def contacts_changed(self) -> None:
        """Something local changed the list (a chat was read): redraw it soon."""
        if isinstance(self.form, ContactsForm):
            self.form.schedule_refresh()

    def show_unread(self, count: int) -> None:
        """The unread total leads the main window's title: "(3) Uchat — alice"."""
        self.unread = count
        title = getattr(self, "_base_title", i18n.t("app.title"))
        self.root.title(f"({count}) {title}" if count > 0 else title)

    def _alert(self) -> None:
        """A new message while no Uchat window has the focus: ring the bell."""
        if self.root.focus_get() is None:
            self.root.bell()
            self.bells += 1

    def chat_closed(self, panel: ChatPanel) -> None:
        key = (panel.contact.kind, panel.contact.id)
        if self.chats.get(key) is panel:
            del self.chats[key]
        self.root.after_idle(release_widgets)

    def close_chats(self) -> None:
        """Close every conversation; each saves its draft first."""
        for panel in list(self.chats.values()):
            panel.close()
        self.chats.clear()

    def logout(self) -> None:
        """Tell the server, then go back to the login form whatever it answers."""
        client = self.client
        self.close_chats()
        if client is None:
            self.show_login()
            return
        username = client.username or ""

        def done(_: object) -> None:
            if self.client is client:
                self.drop_client()
                self.show_login(username=username)

        self.run(client.logout, on_result=done, on_error=done)

    def close(self) -> None:
        """Keep drafts, disconnect, stop pumping; the root window stays."""
        self._closing = True
        self.close_chats()
        client, self.client = self.client, None
        if client is not None:
            client.remove_listener(self._dispatch)
            self._forget_pending(client)
            closer = threading.Thread(target=client.close, name="uchat-close", daemon=True)
            closer.start()
            closer.join(CLOSE_WAIT_SECONDS)
        if self._pump_job is not None:
            self.root.after_cancel(self._pump_job)
            self._pump_job = None
        if self.form is not None:
            self.form.destroy()
            self.form = None
        release_widgets()

    def quit(self) -> None:
        """The main window was closed: close, then leave the Tk loop."""
        self.close()
        self.root.destroy()


def _host_check(app: App) -> FormHost:
    """mypy proves here that `App` is a `FormHost`."""
    return app


__all__ = ["App", "UiSettings", "release_widgets"]
