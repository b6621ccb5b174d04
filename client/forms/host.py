"""What a form may ask of the application: the `FormHost` protocol.

Why: forms used to import `App` from `client.ui`, which imports every form, so the two
formed a circle and a form could reach anything in the application. A form now sees
only this narrow surface; `App` satisfies it, and a test can hand a form any object
that does.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from client.core.client import ChatClient
from client.core.event_types import Event
from client.core.models import Contact
from client.forms.login import ServerAddress
from client.theme import Theme
from common.config import Config
from common.servers import parse_servers

if TYPE_CHECKING:
    from client.forms.chat_form import ChatPanel

T = TypeVar("T")
Listener = Callable[[Event], None]


@dataclass(frozen=True)
class UiSettings:
    """What the GUI needs from the configuration, resolved once at start-up."""

    host: str
    port: int
    data_dir: Path
    server_fingerprint: str = ""
    request_timeout: float = 10.0
    ping_interval: float = 30.0
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    font_size: int = 12
    font_color: str = "#1f2328"
    allow_hmac_md5: bool = False
    #: Other nodes of the same cluster, tried in turn on a drop (`client.servers`).
    servers: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_config(cls, config: Config, data_dir: Path) -> UiSettings:
        c = config.client
        return cls(
            host=c.host,
            port=c.port,
            data_dir=data_dir,
            server_fingerprint=c.server_fingerprint,
            request_timeout=c.request_timeout,
            ping_interval=c.ping_interval,
            reconnect_min=c.reconnect_min,
            reconnect_max=c.reconnect_max,
            allow_hmac_md5=c.allow_hmac_md5,
            font_size=c.font_size,
            font_color=c.font_color,
            servers=tuple(parse_servers(c.servers)),
        )


class FormHost(Protocol):
    """The application as its forms and windows see it."""

    root: tk.Tk
    theme: Theme
    settings: UiSettings
    client: ChatClient | None
    server_address: ServerAddress

    def require_client(self) -> ChatClient: ...

    def connect_client(self, address: ServerAddress) -> ChatClient: ...

    def drop_client(self) -> None: ...

    def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        on_result: Callable[[T], object] | None = None,
        on_error: Callable[[BaseException], object] | None = None,
    ) -> None: ...

    def subscribe(self, listener: Listener) -> None: ...

    def unsubscribe(self, listener: Listener) -> None: ...

    def show_login(self, notice: str = "", warning: bool = False, username: str = "") -> None: ...

    def show_register(self) -> None: ...

    def show_contacts(self) -> None: ...

    def open_chat(self, contact: Contact) -> ChatPanel:
        """Show the conversation: beside the list, or its popped-out window if it has one."""
        ...

    def pop_out(self, contact: Contact) -> ChatPanel:
        """Move the conversation into its own window."""
        ...

    def open_chats(self) -> int:
        """How many chat windows are open (new ones cascade by this many steps)."""
        ...

    def contacts_changed(self) -> None: ...

    def show_unread(self, count: int) -> None:
        """Put the unread total in the main window's title."""
        ...

    def chat_closed(self, panel: ChatPanel) -> None: ...

    def logout(self) -> None: ...
