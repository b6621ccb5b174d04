"""A conversation: `ChatPanel` shows one friend or group, either in the main window
beside the contact list or popped out into its own `ChatWindow` (a Toplevel).

It opens at the newest of the last 50 messages and loads older ones on scroll-up;
sends text with the chosen size and colour (Enter sends, Shift+Enter breaks the line),
images and files; counts a message read only while the panel is visible and its
window has the focus; keeps the draft and the style when closed; and warns loudly
when the friend's key changed, offering "Trust new key" after the safety number.
Esc or Ctrl+W closes it, Ctrl+F searches its history.
"""

from __future__ import annotations

import dataclasses
import tkinter as tk
import tkinter.font as tkfont
from collections.abc import Callable
from tkinter import colorchooser
from typing import TYPE_CHECKING

from client import i18n
from client.components.banner import Banner
from client.components.busy import BusyButton, alive
from client.components.emoji_picker import EmojiPicker
from client.components.file_drop import accept_file_drops
from client.components.layout import collapse_if_empty, text_width
from client.components.message_view import MessageView
from client.core.event_types import (
    ConnectionChanged,
    ContactRemoved,
    Event,
    KemKeyRejected,
    KemKeyVerified,
    KeyChanged,
    KeyTrusted,
    MessageReceived,
    MessageSent,
    MessageStatusChanged,
    PresenceChanged,
    RoomMemberChanged,
    TransferProgress,
)
from client.core.models import ChatMessage, Contact
from client.forms.chat import (
    PAGE_SIZE,
    ChatTranscript,
    SearchHits,
    in_chat,
    normalise_color,
    search_in_chat,
    target_of,
)
from client.forms.chat_actions import ChatActions
from client.forms.chat_files import AttachmentFlow
from client.forms.chat_keys import KeyVerification
from client.forms.chat_members import GroupMembers
from client.forms.chat_panels import ChatHeader, Composer, MemberList
from client.forms.errors import describe_error
from common.errors import UchatError

if TYPE_CHECKING:
    from client.forms.host import FormHost

MAX_SEARCH_PAGES = 40
SEARCH_TAG = "search"
BANNER_CHARS = 60
WINDOW_CHARS = (64, 34)  # a popped-out chat: average characters wide, lines high
CLOSE_KEYS = ("<Escape>", "<Control-w>", "<Control-W>")
SEARCH_KEYS = ("<Control-f>", "<Control-F>")


class ChatPanel(tk.Frame):
    def __init__(
        self, master: tk.Misc, app: FormHost, contact: Contact, *, popped: bool = False
    ) -> None:
        super().__init__(master, background=app.theme.palette.window)
        self.app = app
        self.popped = popped
        self.contact = contact
        self.target = target_of(contact)
        self.transcript = ChatTranscript(PAGE_SIZE)
        self._loading_older = False
        self._info: Banner | None = None
        self.info_tag = ""  # what the info banner shows, so a second press can hide it
        self.files = AttachmentFlow(self)
        self.verification = KeyVerification(self)
        self.actions = ChatActions(self)
        self.search_hits = SearchHits()
        self.group = GroupMembers(self) if contact.kind == "room" else None
        self._build()
        self._bind_keys()
        app.subscribe(self.on_event)
        self._load_first_page()
        self._restore_draft()
        self._restore_style()
        self.mark_read()
        self.verification.show_warning()
        if self.group is not None:
            self._show_members({name: None for name in contact.members})
            newest = self.transcript.newest()
            self.group.show_recent_lines(newest.time if newest is not None else 0)
            self.refresh_members()
        self.composer.input.focus_set()

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        theme = self.app.theme
        self.header = ChatHeader(
            self,
            theme,
            self.contact,
            self.verification.toggle_safety_number,
            self.search,
            on_pop_out=None if self.popped else self.pop_out,
            on_step=self.step_search,
            menu=self.actions.menu(),
        )
        self.header.pack(fill="x")
        self.banners = tk.Frame(self, background=theme.palette.window)
        self.banners.pack(fill="x")
        self.composer = Composer(
            self,
            theme,
            self.app.settings.font_size,
            self.app.settings.font_color,
            {
                "send": self.send_message,
                "color": self.pick_color,
                "image": self.send_image,
                "file": self.send_file,
                "emoji": self.pick_emoji,
            },
            limit=self.files.limit_text(),
        )
        self.composer.input.bind("<<Paste>>", self._paste, add="+")
        self.composer.pack(side="bottom", fill="x")
        body = tk.Frame(self, background=theme.palette.surface)
        body.pack(fill="both", expand=True)
        self.members: MemberList | None = None
        if self.group is not None:
            self.members = MemberList(body, theme, self.group.actions())
            self.members.pack(side="right", fill="y")
            self.members.pack_propagate(False)
        self.view = MessageView(
            body,
            theme,
            on_save=self.files.save,
            on_load_older=self.load_older,
            on_open_image=self.files.open_image,
            on_cancel=self.files.cancel,
        )
        self.view.pack(side="left", fill="both", expand=True)
        self.send_busy = BusyButton(self.composer.send_button)
        # Files dropped on the conversation or the message box are sent (with tkdnd).
        self.drops = all(
            accept_file_drops(target, self.files.send_paths)
            for target in (self.view, self.composer.input)
        )

    # ------------------------------------------------------------------ history

    def _load_first_page(self) -> None:
        client = self.app.client
        if client is None:
            return
        try:
            page = client.history(self.target, PAGE_SIZE)
        except UchatError as exc:
            self.show_info(describe_error(exc).message, level="warning")
            page = []
        fresh = self.transcript.prepend(page)
        self.view.show_history(fresh, self.transcript.has_more)
        self.files.thumbnails(fresh)

    def load_older(self) -> None:
        """The user reached the top: put the previous page above what is shown."""
        client, oldest = self.app.client, self.transcript.oldest()
        if self._loading_older or client is None or oldest is None or not self.transcript.has_more:
            return
        self._loading_older = True
        try:
            page = client.history(self.target, PAGE_SIZE, before=oldest)
            fresh = self.transcript.prepend(page)
            self.view.prepend(fresh, self.transcript.has_more)
            self.files.thumbnails(fresh)
        except UchatError as exc:
            self.show_info(describe_error(exc).message, level="warning")
        finally:
            self._loading_older = False

    def _restore_draft(self) -> None:
        client = self.app.client
        if client is None:
            return
        try:
            self.composer.set_text(client.draft(self.target))
        except UchatError:
            return

    def _restore_style(self) -> None:
        """Start with the size and colour last used in this chat."""
        client = self.app.client
        if client is None:
            return
        try:
            style = client.style(self.target)
        except UchatError:
            return
        if style is not None:
            self.composer.set_font_size(style[0])
            self.composer.set_color(style[1])

    def _save_style(self) -> None:
        client = self.app.client
        if client is None:
            return
        try:
            client.save_style(self.target, self.composer.font_size, self.composer.color)
        except UchatError:
            return

    def is_seen(self) -> bool:
        """Visible, and its window has the keyboard focus: the user can read it now."""
        if not alive(self) or not self.winfo_viewable():
            return False
        focused = self.focus_get()
        return focused is not None and focused.winfo_toplevel() is self.winfo_toplevel()

    def mark_read_if_seen(self) -> None:
        if self.is_seen():
            self.mark_read()
        else:
            self.app.contacts_changed()  # the badge and the window title count it

    def mark_read(self) -> None:
        """The chat is on screen: its messages count as read."""
        client = self.app.client
        if client is None:
            return
        try:
            client.mark_read(self.target)
        except UchatError:
            return
        self.app.contacts_changed()

    # ------------------------------------------------------------------ events

    def on_event(self, event: Event) -> None:
        if not alive(self):
            return
        if self.group is None or not self.group.on_event(event):
            self._on_chat_event(event)

    def _on_chat_event(self, event: Event) -> None:
        if isinstance(event, MessageReceived | MessageSent):
            if in_chat(event.message, self.contact):
                self.show_message(event.message)
                if isinstance(event, MessageReceived):
                    self.mark_read_if_seen()
                else:
                    self.files.sending(event.message)
        elif isinstance(event, MessageStatusChanged):
            updated = self.transcript.set_status(event.message_id, event.status)
            if updated is not None:
                self.view.update_status(updated.message_id, updated.status)
                self.files.settled(updated)
        elif isinstance(event, TransferProgress):
            self.files.progress(event)
        elif isinstance(event, PresenceChanged) and self._is_me(event.username):
            self._presence(event)
        elif isinstance(event, RoomMemberChanged) and self._is_my_room(event.room_id):
            self._member_event(event.username, event.event)
        elif isinstance(event, KeyChanged | KeyTrusted | KemKeyVerified | KemKeyRejected):
            self._key_event(event)
        elif isinstance(event, ContactRemoved):
            self._removed(event.contact)
        elif isinstance(event, ConnectionChanged):
            self.header.set_connection(event.state)
            if event.state == "connected":
                self._reload_contact()  # presence and address may have changed meanwhile

    def _reload_contact(self) -> None:
        client = self.app.client
        if client is None:
            return
        key = (self.contact.kind, self.contact.id)
        try:
            fresh = next((c for c in client.contacts() if (c.kind, c.id) == key), None)
        except UchatError:
            return
        if fresh is not None:
            self.contact = fresh
            self.header.show(fresh)

    def _is_me(self, username: str) -> bool:
        return self.contact.kind == "user" and username == self.contact.id

    def _concerns(self, username: str) -> bool:
        """A chat with `username`, or a room they are in."""
        return self._is_me(username) or (
            self.contact.kind == "room" and username in self.contact.members
        )

    def _key_event(self, event: KeyChanged | KeyTrusted | KemKeyVerified | KemKeyRejected) -> None:
        """A changed identity key raises the banner. A verified first KEM key is a line
        in the chat, a refused one a warning; a rotation (same identity) says nothing."""
        if isinstance(event, KeyChanged | KeyTrusted):
            if not self._is_me(event.username):
                return
            if isinstance(event, KeyChanged):
                self.verification.show_warning()
            else:
                self.verification.trusted()
        elif not self._concerns(event.username):
            return
        elif isinstance(event, KemKeyRejected):
            self.view.add_notice(i18n.t("chat.kem_key_refused", name=event.username), warning=True)
        elif event.first:
            self.view.add_notice(i18n.t("chat.kem_key_added", name=event.username))

    def _is_my_room(self, room_id: int) -> bool:
        return self.contact.kind == "room" and self.contact.room_id == room_id

    def show_message(self, message: ChatMessage) -> None:
        stored = self.transcript.add(message)
        if stored is not None:
            self.view.append(stored)
            self.files.thumbnails([stored])

    def _presence(self, event: PresenceChanged) -> None:
        self.contact = dataclasses.replace(
            self.contact,
            online=event.online,
            ip=event.ip or self.contact.ip,
            port=event.port or self.contact.port,
        )
        self.header.show(self.contact)

    def _member_event(self, username: str, what: str) -> None:
        """The server's word on a join or leave: the header's count follows it; the
        line in the conversation waits for the verified change (`GroupMembers`)."""
        members = list(self.contact.members)
        if what == "joined" and username not in members:
            members.append(username)
        elif what == "left" and username in members:
            members.remove(username)
        self.contact = dataclasses.replace(self.contact, members=tuple(members))
        self.header.show(self.contact)
        self.refresh_members()

    def _removed(self, contact: Contact) -> None:
        if (contact.kind, contact.id) == (
            self.contact.kind,
            self.contact.id,
        ):
            self.view.add_notice(i18n.t("chat.removed"), warning=True)

    # ------------------------------------------------------------------ group members

    def refresh_members(self) -> None:
        if self.group is not None:
            self.group.refresh()

    def show_verified_members(self, names: tuple[str, ...]) -> None:
        """The header counts the signed members, not the server's list."""
        if names != self.contact.members:
            self.contact = dataclasses.replace(self.contact, members=names)
            self.header.show(self.contact)

    def _show_members(self, members: dict[str, bool | None]) -> None:
        if self.members is not None:
            self.members.show(members.items())

    # ------------------------------------------------------------------ sending

    def send_message(self) -> None:
        text = self.composer.text
        client = self.app.client
        if not text.strip() or self.send_busy.busy or client is None:
            return
        self.send_busy.start(i18n.t("chat.sending"))
        self.app.run(
            client.send_text,
            self.target,
            text,
            self.composer.font_size,
            self.composer.color,
            on_result=self._sent,
            on_error=self._send_failed,
        )

    def _sent(self, message: ChatMessage) -> None:
        if not alive(self):
            return
        self.send_busy.stop()
        self.composer.set_text("")
        self.show_message(message)
        self._save_draft("")
        self.composer.input.focus_set()

    def _send_failed(self, exc: BaseException) -> None:
        if alive(self):
            self.send_busy.stop()
            self.show_info(describe_error(exc).message, level="warning")

    def pick_color(self) -> None:
        _, chosen = colorchooser.askcolor(
            color=self.composer.color, parent=self, title=i18n.t("chat.color")
        )
        color = normalise_color(chosen)
        if color is not None:
            self.composer.set_color(color)
            self._save_style()
        self.composer.input.focus_set()  # typing goes on in the message box

    def pick_emoji(self) -> None:
        self.emoji_picker = EmojiPicker(
            self.composer.emoji_button, self.app.theme, self._insert_emoji
        )

    def _insert_emoji(self, symbol: str) -> None:
        if alive(self):
            self.composer.input.insert("insert", symbol)
            self.composer.input.focus_set()

    def _paste(self, _event: object = None) -> str | None:
        """Ctrl+V: pictures and copied files are sent; text pastes as usual."""
        return "break" if self.files.paste() else None

    def send_image(self) -> None:
        self.files.send(image=True)

    def send_file(self) -> None:
        self.files.send(image=False)

    # ------------------------------------------------------------------ search

    def search(self, text: str) -> None:
        """Find `text` in this chat's history; the newest hit first, then ▲/▼ to step."""
        client, query = self.app.client, text.strip()
        if client is None or not query:
            return
        try:
            hits = search_in_chat(client.search_history(query, target=self.contact), self.contact)
        except UchatError as exc:
            self.show_info(describe_error(exc).message, level="warning")
            return
        if self.info_tag == SEARCH_TAG:
            self.clear_info()
        first = self.search_hits.start(query, hits)
        if first is None:
            self.view.highlight("")
            self.header.show_hits(0, 0)
            self.show_info(i18n.t("chat.search_none", query=query), level="notice", tag=SEARCH_TAG)
            return
        self._show_hit(first)

    def step_search(self, delta: int) -> None:
        """+1: the next older hit; -1: the next newer one."""
        hit = self.search_hits.step(delta)
        if hit is not None:
            self._show_hit(hit)

    def _show_hit(self, hit: ChatMessage) -> None:
        pages = 0
        while not self.view.has_message(hit.message_id) and self.transcript.has_more:
            if pages >= MAX_SEARCH_PAGES:
                break
            self.load_older()
            pages += 1
        self.view.highlight(hit.message_id)
        self.header.show_hits(self.search_hits.index, len(self.search_hits.hits))

    def focus_search(self) -> str:
        self.header.show_search()
        return "break"

    # ------------------------------------------------------------------ banners

    def show_info(
        self,
        text: str,
        level: str = "info",
        tag: str = "",
        actions: tuple[tuple[str, Callable[[], object]], ...] = (),
    ) -> Banner:
        """One dismissable strip above the messages; `tag` names what it shows."""
        self.clear_info()
        self.info_tag = tag
        self._info = Banner(
            self.banners,
            self.app.theme,
            text,
            level=level,
            wraplength=text_width(self, self.app.theme.fonts.body, BANNER_CHARS),
            actions=(*actions, (i18n.t("common.dismiss"), self.clear_info)),
        )
        self._info.pack(fill="x", padx=self.app.theme.pad, pady=(8, 0))
        return self._info

    def clear_info(self) -> None:
        if self._info is not None and alive(self._info):
            self._info.destroy()
            collapse_if_empty(self.banners)
        self._info = None
        self.info_tag = ""

    @property
    def info_text(self) -> str:
        return self._info.text if self._info is not None and alive(self._info) else ""

    # ------------------------------------------------------------------ closing

    def _save_draft(self, text: str) -> None:
        client = self.app.client
        if client is None:
            return
        try:
            client.save_draft(self.target, text)
        except UchatError:
            return

    def _bind_keys(self) -> None:
        """Esc / Ctrl+W close, Ctrl+F searches, wherever the focus is in this panel."""
        widgets = (self, self.composer.input, self.view.text, self.header.search_entry)
        for widget in widgets:
            for sequence in CLOSE_KEYS:
                widget.bind(sequence, self._close_key, add="+")
            for sequence in SEARCH_KEYS:
                widget.bind(sequence, lambda _e: self.focus_search(), add="+")
            widget.bind("<FocusIn>", lambda _e: self.mark_read_if_seen(), add="+")

    def _close_key(self, _event: object = None) -> str:
        if self.header.search_shown and self.focus_get() is self.header.search_entry:
            self.header.query.set("")  # Esc in the search box closes the search first
            self.search_hits.clear()
            self.header.show_hits(0, 0)
            self.header.hide_search()
            self.view.highlight("")
            self.composer.input.focus_set()
            return "break"
        self.close()
        return "break"

    def pop_out(self) -> None:
        """Move this conversation into its own window."""
        self.app.pop_out(self.contact)

    def close(self) -> None:
        """Keep what was typed and the style for next time, then go."""
        if not alive(self):
            return
        self._save_draft(self.composer.text)
        self._save_style()
        self.app.unsubscribe(self.on_event)
        self.app.chat_closed(self)
        window = self.winfo_toplevel()
        if self.popped and isinstance(window, ChatWindow):
            window.destroy()
        else:
            self.destroy()


class ChatWindow(tk.Toplevel):
    """A popped-out conversation: one `ChatPanel` in its own window."""

    def __init__(self, master: tk.Misc, app: FormHost, contact: Contact) -> None:
        super().__init__(master, background=app.theme.palette.window)
        self.app = app
        self.title(i18n.t("chat.window_title", name=contact.name))
        self._place()
        self.panel = ChatPanel(self, app, contact, popped=True)
        self.panel.pack(fill="both", expand=True)
        self.protocol("WM_DELETE_WINDOW", self.panel.close)
        self.panel.composer.input.focus_set()

    def _place(self) -> None:
        """Beside the main window; the size follows the font and the screen, not pixels."""
        root = self.app.root
        root.update_idletasks()
        body = self.app.theme.fonts.body
        width = text_width(self, body, WINDOW_CHARS[0])
        line = tkfont.Font(root=self, font=body).metrics("linespace")
        height = min(line * WINDOW_CHARS[1], self.winfo_screenheight() - 2 * line)
        width = min(width, self.winfo_screenwidth())
        offset = line * 2 * (self.app.open_chats() % 6)
        x = min(root.winfo_x() + offset + line * 4, max(self.winfo_screenwidth() - width, 0))
        y = max(root.winfo_y(), 0) + offset
        self.geometry(f"{width}x{height}+{x}+{y}")
        self.minsize(min(width, text_width(self, body, 44)), min(height, line * 20))
