"""What the "⋯" menu of a conversation does: open it in its own window, export it,
leave the group or delete the friend (each asked once, in a strip, not a dialog)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from client import i18n
from client.components.busy import alive
from client.forms.errors import describe_error
from client.forms.export_flow import ExportFlow

if TYPE_CHECKING:
    from client.core.client import ChatClient
    from client.forms.chat_form import ChatPanel

CONFIRM_TAG = "confirm"
MAX_SUCCESSOR_CHOICES = 4  # buttons in the strip: the admins come first
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
        """Confirm leaving; an owner with others in the group first picks a successor."""
        client = self.app.client
        if client is None:
            return
        self.app.run(
            successors_if_owner,
            client,
            self.panel.contact.room_id,
            on_result=self._ask_leave_with,
            on_error=self._failed,
        )

    def _ask_leave_with(self, successors: list[str]) -> None:
        if not alive(self.panel):
            return
        name = self.panel.contact.name
        if not successors:
            self._confirm(
                i18n.t("chat.leave_confirm", name=name), i18n.t("chat.leave_group"), self.leave
            )
            return
        actions = tuple(
            (i18n.t("chat.leave_hand_over", name=who), partial(self.leave, who))
            for who in successors[:MAX_SUCCESSOR_CHOICES]
        )
        self.panel.show_info(
            i18n.t("chat.leave_owner_confirm", name=name),
            level="warning",
            tag=CONFIRM_TAG,
            actions=actions,
        )

    def ask_delete(self) -> None:
        self._confirm(
            i18n.t("chat.delete_confirm", name=self.panel.contact.name),
            i18n.t("chat.delete_friend"),
            self.delete,
        )

    def _confirm(self, question: str, verb: str, action: Callable[[], object]) -> None:
        self.panel.show_info(question, level="warning", tag=CONFIRM_TAG, actions=((verb, action),))

    def leave(self, successor: str | None = None) -> None:
        client = self.app.client
        if client is not None:
            self.app.run(
                client.leave_room,
                self.panel.contact,
                successor,
                on_result=self._gone,
                on_error=self._failed,
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


def successors_if_owner(client: ChatClient, room_id: int) -> list[str]:
    """Whom we may hand the group to (admins first) if we own it and others remain;
    empty when leaving needs no successor. Runs off the Tk thread (it may sync the log)."""
    if client.room_owner(room_id) != client.username:
        return []
    return client.room_successors(room_id)
