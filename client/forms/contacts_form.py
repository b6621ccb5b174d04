"""The main window after login: on the left the profile, friend requests, search, the
contact list and the four actions (add/delete friend, create/join group); on the right
the open conversation (QQ NT / Telegram Desktop style). A conversation can be popped
out into its own window; the sash between the two sides can be dragged.

The list is rebuilt from `ChatClient.contacts()` (a local read) whenever an event could
change it; refreshes are coalesced into one per Tk idle moment, so a burst of
presence changes or messages redraws the list once.
"""

from __future__ import annotations

import functools
import tkinter as tk
from tkinter import ttk
from typing import TYPE_CHECKING

from client import i18n
from client.components.banner import Banner
from client.components.busy import alive
from client.components.contact_item import ContactItem
from client.components.layout import collapse_if_empty, scaled, text_width
from client.components.vertical_scrolled_frame import VerticalScrolledFrame
from client.core.event_types import (
    ChainWarning,
    ConnectionChanged,
    ContactAdded,
    ContactRemoved,
    Event,
    FriendRequest,
    FriendRequestRefused,
    KemKeyRejected,
    KeyChanged,
    KeyMissing,
    KeyTrusted,
    MessageReceived,
    MessageSent,
    PresenceChanged,
    RoomMemberChanged,
    TransparencyAlarm,
)
from client.core.models import Contact
from client.forms.contacts import (
    Action,
    ContactKey,
    contact_key,
    sort_contacts,
    total_unread,
)
from client.forms.contacts_panels import ActionPanel, ProfileHeader, RequestsPanel, SearchPanel
from client.forms.conversation_area import ConversationArea
from client.forms.device_link_form import LinkWindow, OldComputerLink
from client.forms.export_flow import ExportFlow
from client.forms.identity_export import IdentityExport
from common.errors import UchatError

if TYPE_CHECKING:
    from client.forms.host import FormHost

SIDEBAR_CHARS = 40  # widths in average characters of the body font, so they scale
SIDEBAR_MIN_CHARS = 30
CONVERSATION_MIN_CHARS = 44

REFRESHING_EVENTS = (
    PresenceChanged,
    ContactAdded,
    ContactRemoved,
    MessageReceived,
    MessageSent,
    RoomMemberChanged,
    ConnectionChanged,
    FriendRequest,
    FriendRequestRefused,
    KeyChanged,
    KeyTrusted,
    KeyMissing,
)


class ContactsForm(ttk.Frame):
    def __init__(self, parent: tk.Misc, app: FormHost) -> None:
        super().__init__(parent, style="TFrame")
        self.app = app
        self.items: dict[ContactKey, ContactItem] = {}
        self.contacts: list[Contact] = []
        self.selected: ContactKey | None = None
        self.transparency_alarms: list[str] = []  # shown until logout, newest last
        self._refresh_job: str | None = None
        self._banners_shown: tuple[bool, tuple[str, ...], tuple[str, ...], tuple[str, ...]] = (
            False,
            (),
            (),
            (),
        )
        self.refusals: list[str] = []  # people who declined our request, until dismissed
        p = app.theme.palette
        self.panes = tk.PanedWindow(
            self,
            orient="horizontal",
            sashwidth=scaled(self, 3),
            background=p.border,
            borderwidth=0,
            sashrelief="flat",
        )
        side = ttk.Frame(self.panes, style="TFrame")
        self.side = side
        self.conversation = ConversationArea(self.panes, app.theme)
        body = app.theme.fonts.body
        # 40 characters, but at most 40 % of the screen (192 dpi on a laptop screen).
        sidebar = min(text_width(self, body, SIDEBAR_CHARS), self.winfo_screenwidth() * 2 // 5)
        self.panes.add(
            side,
            width=sidebar,
            minsize=min(text_width(self, body, SIDEBAR_MIN_CHARS), sidebar),
            stretch="never",
        )
        self.panes.add(
            self.conversation,
            minsize=text_width(self, body, CONVERSATION_MIN_CHARS),
            stretch="always",
        )
        self.panes.pack(fill="both", expand=True)
        self.header = ProfileHeader(
            side,
            app,
            on_logout=app.logout,
            menu=(
                (i18n.t("export.all_chats"), self.export_all),
                (i18n.t("identity.export_link"), self.export_identity),
                (i18n.t("link.old_link"), self.link_computer),
            ),
        )
        self.header.grid(row=0, column=0, sticky="ew")
        self.banners = ttk.Frame(side, style="TFrame", padding=(app.theme.pad, 0))
        self.banners.grid(row=1, column=0, sticky="ew")
        # Longer tasks started from the header menu (export), apart from the banners,
        # which are rebuilt on every refresh.
        self.tasks = tk.Frame(side, background=p.window)
        self.tasks.grid(row=3, column=0, sticky="ew")
        self.exporter = ExportFlow(app, self.tasks)
        self.identity_export: IdentityExport | None = None
        self.device_link: OldComputerLink | None = None
        self.list = VerticalScrolledFrame(side, background=p.surface)
        self.list.grid(row=4, column=0, sticky="nsew", pady=(1, 0))
        # One scrolling column: requests, then search results, then the contacts.
        sections = [tk.Frame(self.list.interior, background=p.surface) for _ in range(3)]
        for section in sections:
            section.pack(fill="x")
        self.rows = sections[2]
        self.search = SearchPanel(side, app, results_parent=sections[1])
        self.search.grid(row=2, column=0, sticky="ew")
        self.requests = RequestsPanel(sections[0], app, on_change=self.schedule_refresh)
        self.empty = tk.Label(
            self.rows,
            text=i18n.t("contacts.empty"),
            background=p.surface,
            foreground=p.muted,
            font=app.theme.fonts.body,
            wraplength=app.theme.px(320),
            justify="center",
            pady=40,
        )
        self.action = ActionPanel(side, app, on_done=lambda _c: self.schedule_refresh())
        self.action.grid(row=5, column=0, sticky="ew", pady=(1, 0))
        ttk.Separator(side).grid(row=6, column=0, sticky="ew")
        self.action.grid_remove()
        self.toolbar = self._toolbar()
        self.toolbar.grid(row=7, column=0, sticky="ew")
        side.columnconfigure(0, weight=1)
        side.rowconfigure(4, weight=1)
        app.subscribe(self.on_event)
        self.bind("<Destroy>", self._destroyed, add="+")
        self.refresh()

    def _toolbar(self) -> ttk.Frame:
        pad = self.app.theme.pad
        bar = ttk.Frame(self.side, style="Surface.TFrame", padding=(pad, pad - 2))
        self.action_buttons: dict[Action, ttk.Button] = {}
        for index, action in enumerate(Action):
            button = ttk.Button(
                bar,
                text=i18n.t(f"action.{action.value}.button"),
                command=functools.partial(self.start_action, action),
            )
            button.grid(row=index // 2, column=index % 2, sticky="ew", padx=3, pady=3, ipady=4)
            self.action_buttons[action] = button
        bar.columnconfigure(0, weight=1, uniform="actions")
        bar.columnconfigure(1, weight=1, uniform="actions")
        return bar

    def _destroyed(self, event: tk.Event[tk.Misc]) -> None:
        if event.widget is self:
            self.app.unsubscribe(self.on_event)
            if self.device_link is not None and alive(self.device_link):
                self.device_link.close()  # its window belongs to this session

    # ------------------------------------------------------------------ events

    def on_event(self, event: Event) -> None:
        if not alive(self):
            return
        if isinstance(event, ConnectionChanged):
            self.header.set_state(event.state)
        if isinstance(event, FriendRequestRefused) and event.username not in self.refusals:
            self.refusals.append(event.username)
        if isinstance(event, REFRESHING_EVENTS):
            self.schedule_refresh()
        if isinstance(event, TransparencyAlarm | KemKeyRejected | ChainWarning):
            text = alarm_text(event)
            if text not in self.transparency_alarms:
                self.transparency_alarms.append(text)
                self.schedule_refresh()

    def schedule_refresh(self) -> None:
        if self._refresh_job is None and alive(self):
            self._refresh_job = self.after_idle(self.refresh)

    def refresh(self) -> None:
        self._refresh_job = None
        client = self.app.client
        if client is None or not alive(self):
            return
        try:
            contacts = client.contacts()
            requests = client.pending_friend_requests()
            changed_keys = client.pending_key_changes()
        except UchatError:
            return  # logged out meanwhile; the form is about to go
        self.contacts = sort_contacts(contacts)
        self.app.show_unread(total_unread(contacts))
        self._render_list()
        self.requests.show(requests)
        self._render_banners(not client.can_send, changed_keys)

    # ------------------------------------------------------------------ rendering

    def _render_list(self) -> None:
        wanted = {contact_key(c) for c in self.contacts}
        for key in [k for k in self.items if k not in wanted]:
            self.items.pop(key).destroy()
        client_name = self.app.client.username or "" if self.app.client else ""
        for shown in self.items.values():
            shown.pack_forget()
        for contact in self.contacts:
            key = contact_key(contact)
            item = self.items.get(key)
            if item is None:
                item = ContactItem(self.rows, self.app.theme, self.open, self.open)
                self.items[key] = item
            item.show(contact, client_name)
            item.set_selected(key == self.selected)
            item.pack(fill="x")
        if self.contacts:
            self.empty.pack_forget()
        else:
            self.empty.pack(fill="x")

    def _render_banners(self, key_missing: bool, changed_keys: list[str]) -> None:
        """Rebuilt from the client's state, so a notice raised during login still shows."""
        shown = (
            key_missing,
            tuple(changed_keys),
            tuple(self.refusals),
            tuple(self.transparency_alarms),
        )
        if shown == self._banners_shown:
            return
        self._banners_shown = shown
        for child in self.banners.winfo_children():
            child.destroy()
        collapse_if_empty(self.banners)
        theme = self.app.theme
        if key_missing:
            Banner(self.banners, theme, i18n.t("contacts.key_missing"), level="notice").pack(
                fill="x", pady=(8, 0)
            )
        for text in self.transparency_alarms:
            Banner(self.banners, theme, text).pack(fill="x", pady=(8, 0))
        for username in changed_keys:
            Banner(
                self.banners,
                theme,
                i18n.t("contacts.key_changed", name=username),
                actions=(
                    (i18n.t("contacts.open_chat"), functools.partial(self._open_user, username)),
                ),
            ).pack(fill="x", pady=(8, 0))
        for username in self.refusals:
            Banner(
                self.banners,
                theme,
                i18n.t("contacts.request_refused", name=username),
                level="notice",
                actions=(
                    (i18n.t("common.dismiss"), functools.partial(self._dismiss_refusal, username)),
                ),
            ).pack(fill="x", pady=(8, 0))

    def _dismiss_refusal(self, username: str) -> None:
        if username in self.refusals:
            self.refusals.remove(username)
        self.schedule_refresh()

    # ------------------------------------------------------------------ actions

    def select(self, contact: Contact) -> None:
        self.selected = contact_key(contact)
        for key, item in self.items.items():
            item.set_selected(key == self.selected)

    def open(self, contact: Contact) -> None:
        self.select(contact)
        self.app.open_chat(contact)

    def _open_user(self, username: str) -> None:
        for contact in self.contacts:
            if contact.kind == "user" and contact.id == username:
                self.open(contact)
                return
        self.app.open_chat(Contact("user", username, username))

    def export_all(self) -> None:
        self.exporter.start(None)

    def export_identity(self) -> None:
        if self.identity_export is not None and alive(self.identity_export):
            self.identity_export.passphrase.focus_entry()
            return
        self.identity_export = IdentityExport(self.tasks, self.app)
        self.identity_export.pack(fill="x", pady=(1, 0))
        self.identity_export.passphrase.focus_entry()

    def link_computer(self) -> None:
        """⋯ → Link a new computer: its own small window (one at a time)."""
        if self.device_link is not None and alive(self.device_link):
            self.device_link.winfo_toplevel().lift()
            self.device_link.code.focus_entry()
            return
        self.device_link = LinkWindow(self.app).panel
        self.device_link.code.focus_entry()

    def start_action(self, action: Action) -> None:
        prefill = ""
        if action is Action.DELETE_FRIEND and self.selected and self.selected[0] == "user":
            prefill = self.selected[1]
        self.action.open(action, prefill)

    # tests and the screenshot script read the list as the user sees it
    def item(self, kind: str, contact_id: str) -> ContactItem | None:
        return self.items.get((kind, contact_id))


def alarm_text(event: TransparencyAlarm | KemKeyRejected | ChainWarning) -> str:
    """The banner text of a key alarm: a key log check, a refused KEM key, or what
    end-to-end v2 caught the server doing (a replayed distribution, a relabelled chat)."""
    if isinstance(event, KemKeyRejected):
        return i18n.t("transparency.alarm.kem_key_refused", name=event.username)
    if isinstance(event, ChainWarning):
        return i18n.t(f"chain.warning.{event.reason}", name=event.username)
    return transparency_alarm_text(event.reason, event.username)


def transparency_alarm_text(reason: str, username: str) -> str:
    """The translated text of a `TransparencyAlarm` (what the key log check found)."""
    key = f"transparency.alarm.{reason}"
    if key not in i18n.EN:
        key = "transparency.alarm.not_extension"
    return i18n.t(key, name=username)
