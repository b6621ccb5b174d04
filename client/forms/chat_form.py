"""A chat window: one per friend or group, one level deep (a Toplevel of the root).

It shows the last 50 messages and loads older ones on scroll-up; sends text with the
chosen size and colour (Enter sends, Shift+Enter breaks the line), images and files;
marks the chat read while it is open; keeps the draft when closed; and warns loudly
when the friend's key changed, offering "Trust new key" after the safety number.
"""

from __future__ import annotations

import dataclasses
import functools
import tkinter as tk
from pathlib import Path
from tkinter import colorchooser, filedialog
from typing import TYPE_CHECKING, Any

from client import i18n
from client.components.banner import Banner
from client.components.busy import BusyButton, alive
from client.components.message_view import MessageView
from client.core import media
from client.core.models import ChatMessage, Contact, Event
from client.forms.chat import (
    PAGE_SIZE,
    ChatTranscript,
    ProgressTracker,
    in_chat,
    normalise_color,
    search_in_chat,
    target_of,
)
from client.forms.chat_panels import ChatHeader, Composer, MemberList
from client.forms.errors import describe_error
from common.errors import UchatError

if TYPE_CHECKING:
    from client.ui import App

PROGRESS_POLL_MS = 100
MAX_SEARCH_PAGES = 40
WINDOW_SIZE = (620, 660)


class ChatWindow(tk.Toplevel):
    def __init__(self, master: tk.Misc, app: App, contact: Contact) -> None:
        super().__init__(master, background=app.theme.palette.window)
        self.app = app
        self.contact = contact
        self.target = target_of(contact)
        self.transcript = ChatTranscript(PAGE_SIZE)
        self.progress = ProgressTracker()
        self._loading_older = False
        self._info: Banner | None = None
        self._info_is_safety = False
        self._key_banner: Banner | None = None
        self.title(i18n.t("chat.window_title", name=contact.name))
        self._place()
        self._build()
        self.protocol("WM_DELETE_WINDOW", self.close)
        app.subscribe(self.on_event)
        self._load_first_page()
        self._restore_draft()
        self.mark_read()
        self._show_key_warning()
        if contact.kind == "room":
            self._show_members({name: None for name in contact.members})
            self.refresh_members()
        self.composer.input.focus_set()

    # ------------------------------------------------------------------ layout

    def _place(self) -> None:
        root = self.app.root
        root.update_idletasks()
        offset = 28 * len(self.app.chats)
        x = root.winfo_x() + root.winfo_width() + 16 + offset
        y = max(root.winfo_y(), 0) + offset
        width, height = WINDOW_SIZE[0], max(WINDOW_SIZE[1], root.winfo_height())
        self.geometry(f"{width}x{height}+{x}+{y}")
        self.minsize(460, 480)

    def _build(self) -> None:
        theme = self.app.theme
        self.header = ChatHeader(self, theme, self.contact, self.toggle_safety_number, self.search)
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
            },
        )
        self.composer.pack(side="bottom", fill="x")
        body = tk.Frame(self, background=theme.palette.surface)
        body.pack(fill="both", expand=True)
        self.members: MemberList | None = None
        if self.contact.kind == "room":
            self.members = MemberList(body, theme)
            self.members.pack(side="right", fill="y")
            self.members.pack_propagate(False)
        self.view = MessageView(
            body, theme, on_save=self.save_attachment, on_load_older=self.load_older
        )
        self.view.pack(side="left", fill="both", expand=True)
        self.send_busy = BusyButton(self.composer.send_button)

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
        self._thumbnails(fresh)

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
            self._thumbnails(fresh)
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
        data = event.data
        if event.kind == "message":
            message = data.get("message")
            if isinstance(message, ChatMessage) and in_chat(message, self.contact):
                self._show_message(message)
                self.mark_read()
        elif event.kind == "message_status":
            updated = self.transcript.set_status(
                str(data.get("message_id")), data.get("status", "sent")
            )
            if updated is not None:
                self.view.update_status(updated.message_id, updated.status)
        elif event.kind == "presence" and self._is_me(data.get("username")):
            self._presence(data)
        elif event.kind == "room_member" and str(data.get("room_id")) == self.contact.id:
            self._member_event(str(data.get("username")), str(data.get("event")))
        elif event.kind == "key_changed" and self._is_me(data.get("username")):
            self._show_key_warning()
        elif event.kind == "contact_removed":
            self._removed(data.get("contact"))

    def _is_me(self, username: object) -> bool:
        return self.contact.kind == "user" and username == self.contact.id

    def _show_message(self, message: ChatMessage) -> None:
        if self.transcript.add(message):
            self.view.append(message)
            self._thumbnails([message])

    def _presence(self, data: dict[str, Any]) -> None:
        ip, port = data.get("ip") or self.contact.ip, data.get("port") or self.contact.port
        self.contact = dataclasses.replace(
            self.contact, online=data.get("online") is True, ip=str(ip), port=int(port)
        )
        self.header.show(self.contact)

    def _member_event(self, username: str, what: str) -> None:
        key = "chat.member_joined" if what == "joined" else "chat.member_left"
        self.view.add_notice(i18n.t(key, name=username))
        members = list(self.contact.members)
        if what == "joined" and username not in members:
            members.append(username)
        elif what == "left" and username in members:
            members.remove(username)
        self.contact = dataclasses.replace(self.contact, members=tuple(members))
        self.header.show(self.contact)
        self.refresh_members()

    def _removed(self, contact: object) -> None:
        if isinstance(contact, Contact) and (contact.kind, contact.id) == (
            self.contact.kind,
            self.contact.id,
        ):
            self.view.add_notice(i18n.t("chat.removed"), warning=True)

    # ------------------------------------------------------------------ group members

    def refresh_members(self) -> None:
        client = self.app.client
        if client is None or self.contact.kind != "room":
            return

        def show(members: list[dict[str, Any]]) -> None:
            if alive(self):
                self._show_members(
                    {
                        str(m.get("username")): m.get("online") is True
                        for m in members
                        if m.get("username")
                    }
                )

        self.app.run(
            client.room_members, int(self.contact.id), on_result=show, on_error=lambda _exc: None
        )  # the names from the contact stay shown

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
        self._show_message(message)
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

    def send_image(self) -> None:
        self._send_attachment(image=True)

    def send_file(self) -> None:
        self._send_attachment(image=False)

    def _send_attachment(self, image: bool) -> None:
        client = self.app.client
        if client is None:
            return
        if image:
            types = [
                (i18n.t("chat.images"), "*.png *.jpg *.jpeg *.gif *.bmp *.webp"),
                (i18n.t("chat.all_files"), "*"),
            ]
        else:
            types = [(i18n.t("chat.all_files"), "*")]
        chosen = filedialog.askopenfilename(parent=self, filetypes=types)
        if not chosen:
            return
        send = client.send_image if image else client.send_file
        self._start_transfer()
        self.app.run(
            send,
            self.target,
            Path(chosen),
            self.progress.report,
            on_result=self._attachment_sent,
            on_error=self._transfer_failed,
        )

    def _attachment_sent(self, message: ChatMessage) -> None:
        self.progress.finish()
        if alive(self):
            self._show_message(message)

    # ------------------------------------------------------------------ receiving files

    def save_attachment(self, message: ChatMessage) -> None:
        client = self.app.client
        if client is None or message.attachment is None:
            return
        folder = filedialog.askdirectory(parent=self, title=i18n.t("chat.save_to"))
        if not folder:
            return
        self._start_transfer()

        def saved(path: Path) -> None:
            self.progress.finish()
            if alive(self):
                self._saved(message, path)
                self.show_info(i18n.t("chat.saved_to", path=str(path)), level="success")

        self.app.run(
            client.download,
            message,
            Path(folder),
            self.progress.report,
            on_result=saved,
            on_error=self._transfer_failed,
        )

    def _saved(self, message: ChatMessage, path: Path) -> ChatMessage:
        attachment = message.attachment
        if attachment is None:
            return message
        updated = dataclasses.replace(
            message, attachment=dataclasses.replace(attachment, local_path=path)
        )
        self.transcript.replace(updated)
        if updated.kind == "file":
            self.view.mark_saved(updated)
        return updated

    def _thumbnails(self, messages: list[ChatMessage]) -> None:
        """Images: download if needed (off the Tk thread), then show a thumbnail."""
        client = self.app.client
        if client is None:
            return
        for message in messages:
            if message.kind != "image" or message.attachment is None:
                continue
            path = message.attachment.local_path
            if path is not None and Path(path).is_file():
                self._render_thumbnail(message, Path(path))
            elif not message.outgoing:
                self.app.run(
                    client.download,
                    message,
                    on_result=functools.partial(self._downloaded_image, message),
                    on_error=lambda _e: None,
                )  # the placeholder line stays

    def _downloaded_image(self, message: ChatMessage, path: Path) -> None:
        if alive(self):
            self._render_thumbnail(self._saved(message, path), path)

    def _render_thumbnail(self, message: ChatMessage, path: Path) -> None:
        cache = self.app.settings.data_dir / "thumbnails"

        def show(thumb: Path) -> None:
            if alive(self):
                self.view.show_image(message.message_id, tk.PhotoImage(master=self, file=thumb))

        self.app.run(media.thumbnail, path, cache, on_result=show, on_error=lambda _e: None)

    # ------------------------------------------------------------------ progress

    def _start_transfer(self) -> None:
        self.progress.start()
        self.composer.show_progress(0.0)
        self.after(PROGRESS_POLL_MS, self._poll_progress)

    def _poll_progress(self) -> None:
        if not alive(self):
            return
        if self.progress.active:
            self.composer.show_progress(self.progress.fraction())
            self.after(PROGRESS_POLL_MS, self._poll_progress)
        else:
            self.composer.show_progress(None)

    def _transfer_failed(self, exc: BaseException) -> None:
        self.progress.finish()
        if alive(self):
            self.show_info(describe_error(exc).message, level="warning")

    # ------------------------------------------------------------------ keys

    def toggle_safety_number(self) -> None:
        client = self.app.client
        if self._info is not None and self._info_is_safety:
            self.clear_info()
            return
        if client is None or self.contact.kind != "user":
            return
        username = self.contact.id

        def show(number: str) -> None:
            if alive(self):
                self.show_info(i18n.t("chat.safety_text", name=username, number=number))
                self._info_is_safety = True

        self.app.run(
            client.safety_number,
            username,
            on_result=show,
            on_error=lambda exc: self.show_info(describe_error(exc).message, level="warning"),
        )

    def _show_key_warning(self) -> None:
        username = self.contact.id
        if self.contact.kind != "user" or username not in self.app.key_warnings:
            return
        if self._key_banner is not None and alive(self._key_banner):
            return
        client = self.app.client
        self._key_banner = Banner(
            self.banners,
            self.app.theme,
            i18n.t("chat.key_changed", name=username),
            actions=((i18n.t("chat.trust_key"), self.trust_new_key),),
            wraplength=560,
        )
        self._key_banner.pack(fill="x", padx=self.app.theme.pad, pady=(8, 0))
        self.view.add_notice(i18n.t("chat.key_changed_notice", name=username), warning=True)
        if client is not None:
            self.app.run(
                client.safety_number, username, on_result=self._key_number, on_error=lambda _e: None
            )

    def _key_number(self, number: str) -> None:
        if self._key_banner is not None and alive(self._key_banner):
            self._key_banner.set_text(
                i18n.t("chat.key_changed", name=self.contact.id)
                + "\n"
                + i18n.t("chat.new_safety_number", number=number)
            )

    def trust_new_key(self) -> None:
        client = self.app.client
        if client is None:
            return
        username = self.contact.id

        def trusted(_: object) -> None:
            self.app.key_warnings.pop(username, None)
            self.app.contacts_changed()
            if alive(self):
                if self._key_banner is not None:
                    self._key_banner.destroy()
                    self._key_banner = None
                self.view.add_notice(i18n.t("chat.key_trusted", name=username))

        self.app.run(
            client.trust_new_key,
            username,
            on_result=trusted,
            on_error=lambda exc: self.show_info(describe_error(exc).message, level="warning"),
        )

    # ------------------------------------------------------------------ search

    def search(self, text: str) -> None:
        client = self.app.client
        if client is None or not text.strip():
            return
        try:
            hits = search_in_chat(client.search_history(text.strip()), self.contact)
        except UchatError as exc:
            self.show_info(describe_error(exc).message, level="warning")
            return
        if not hits:
            self.show_info(i18n.t("chat.search_none", query=text.strip()), level="notice")
            return
        newest = hits[0]
        pages = 0
        while not self.view.has_message(newest.message_id) and self.transcript.has_more:
            if pages >= MAX_SEARCH_PAGES:
                break
            self.load_older()
            pages += 1
        self.view.highlight(newest.message_id)
        self.show_info(
            i18n.t("chat.search_hits", count=len(hits), query=text.strip()), level="info"
        )

    # ------------------------------------------------------------------ banners

    def show_info(self, text: str, level: str = "info") -> Banner:
        self.clear_info()
        self._info = Banner(
            self.banners,
            self.app.theme,
            text,
            level=level,
            wraplength=560,
            actions=((i18n.t("common.dismiss"), self.clear_info),),
        )
        self._info.pack(fill="x", padx=self.app.theme.pad, pady=(8, 0))
        return self._info

    def clear_info(self) -> None:
        if self._info is not None and alive(self._info):
            self._info.destroy()
        self._info = None
        self._info_is_safety = False

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

    def close(self) -> None:
        """Keep what was typed for next time, then go."""
        if not alive(self):
            return
        self._save_draft(self.composer.text)
        self.app.unsubscribe(self.on_event)
        self.app.chat_closed(self)
        self.destroy()
