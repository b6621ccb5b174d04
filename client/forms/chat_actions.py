"""What the "⋯" menu of a conversation does: open it in its own window, export it,
leave the group or delete the friend (each asked once, in a strip, not a dialog)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from client import i18n
from client.components.busy import alive
from client.forms.errors import describe_error
from client.forms.export_flow import ExportFlow

if TYPE_CHECKING:
    from client.forms.chat_form import ChatPanel

CONFIRM_TAG = "confirm"
MenuItems = tuple[tuple[str, Callable[[], object]], ...]


class ChatActions:
    def __init__(self, panel: ChatPanel) -> None:
        self.panel = panel
        self.app = panel.app
        self.export: ExportFlow | None = None

    def menu(self) -> MenuItems:
        items: list[tuple[str, Callable[[], object]]] = [
            (i18n.t("chat.search_menu"), self.panel.focus_search)
        ]
        if self.panel.contact.kind == "user":
            items.append(
                (i18n.t("chat.safety_number"), self.panel.verification.toggle_safety_number)
            )
        if not self.panel.popped:
            items.append((i18n.t("chat.pop_out"), self.panel.pop_out))
        items.append((i18n.t("export.this_chat"), self.export_chat))
        if self.panel.contact.kind == "room":
            items.append((i18n.t("chat.leave_group"), self.ask_leave))
        else:
            items.append((i18n.t("chat.delete_friend"), self.ask_delete))
        return tuple(items)

    def export_chat(self) -> None:
        if self.export is None:
            self.export = ExportFlow(self.app, self.panel.banners)
        self.export.start([self.panel.contact])

    def ask_leave(self) -> None:
        self._confirm(
            i18n.t("chat.leave_confirm", name=self.panel.contact.name),
            i18n.t("chat.leave_group"),
            self.leave,
        )

    def ask_delete(self) -> None:
        self._confirm(
            i18n.t("chat.delete_confirm", name=self.panel.contact.name),
            i18n.t("chat.delete_friend"),
            self.delete,
        )

    def _confirm(self, question: str, verb: str, action: Callable[[], object]) -> None:
        self.panel.show_info(question, level="warning", tag=CONFIRM_TAG, actions=((verb, action),))

    def leave(self) -> None:
        client = self.app.client
        if client is not None:
            self.app.run(
                client.leave_room, self.panel.contact, on_result=self._gone, on_error=self._failed
            )

    def delete(self) -> None:
        client = self.app.client
        if client is not None:
            self.app.run(
                client.delete_friend,
                self.panel.contact.id,
                on_result=self._gone,
                on_error=self._failed,
            )

    def _gone(self, _result: object) -> None:
        """The conversation no longer exists for us: close it and redraw the list."""
        self.app.contacts_changed()
        if alive(self.panel):
            self.panel.close()

    def _failed(self, exc: BaseException) -> None:
        if alive(self.panel):
            self.panel.show_info(describe_error(exc).message, level="warning")
