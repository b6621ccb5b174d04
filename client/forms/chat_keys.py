"""Key verification in a chat window: the safety number on demand, and the loud
warning when a friend's key changed, with "Trust new key" once the user checked.

A changed key is never trusted silently: the client holds that friend's messages back
until `trust_new_key`, and this banner stays until the user presses the button.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from client import i18n
from client.components.banner import Banner
from client.components.busy import alive
from client.components.layout import collapse_if_empty
from client.forms.errors import describe_error

if TYPE_CHECKING:
    from client.forms.chat_form import ChatPanel

SAFETY_TAG = "safety"


class KeyVerification:
    def __init__(self, window: ChatPanel) -> None:
        self.window = window
        self.app = window.app
        self.banner: Banner | None = None

    @property
    def username(self) -> str | None:
        contact = self.window.contact
        return contact.id if contact.kind == "user" else None

    def toggle_safety_number(self) -> None:
        """First press shows the number to compare; the second hides it."""
        if self.window.info_tag == SAFETY_TAG:
            self.window.clear_info()
            return
        client, username = self.app.client, self.username
        if client is None or username is None:
            return

        def show(number: str) -> None:
            if alive(self.window):
                text = i18n.t("chat.safety_text", name=username, number=number)
                self.window.show_info(text, tag=SAFETY_TAG)

        self.app.run(client.safety_number, username, on_result=show, on_error=self._failed)

    def show_warning(self) -> None:
        """Raise the banner if this friend's key changed and is not trusted yet."""
        username, client = self.username, self.app.client
        if username is None or client is None or username not in client.pending_key_changes():
            return
        if self.banner is not None and alive(self.banner):
            return
        self.banner = Banner(
            self.window.banners,
            self.app.theme,
            i18n.t("chat.key_changed", name=username),
            actions=((i18n.t("chat.trust_key"), self.trust_new_key),),
            wraplength=self.app.theme.px(560),
        )
        self.banner.pack(fill="x", padx=self.app.theme.pad, pady=(8, 0))
        self.window.view.add_notice(i18n.t("chat.key_changed_notice", name=username), warning=True)
        client = self.app.client
        if client is not None:
            self.app.run(
                client.safety_number, username, on_result=self._show_number, on_error=self._failed
            )

    def _show_number(self, number: str) -> None:
        if self.banner is not None and alive(self.banner) and self.username is not None:
            self.banner.set_text(
                i18n.t("chat.key_changed", name=self.username)
                + "\n"
                + i18n.t("chat.new_safety_number", number=number)
            )

    def trust_new_key(self) -> None:
        client, username = self.app.client, self.username
        if client is None or username is None:
            return

        self.app.run(client.trust_new_key, username, on_error=self._failed)

    def trusted(self) -> None:
        """The client accepted the new key (from this window or another)."""
        if self.banner is None or not alive(self.window):
            return
        self.banner.destroy()
        self.banner = None
        collapse_if_empty(self.window.banners)
        if self.username is not None:
            self.window.view.add_notice(i18n.t("chat.key_trusted", name=self.username))

    def _failed(self, exc: BaseException) -> None:
        if alive(self.window):
            self.window.show_info(describe_error(exc).message, level="warning")
