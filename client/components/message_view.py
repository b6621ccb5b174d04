"""The conversation pane: a read-only Text widget that renders ChatMessages as bubbles.

Each message is a body in a bubble (tinted blue on our side, grey on theirs) whose font
size and colour are the sender's choice, carried by per-size and per-colour tags
(`size-16`, `fg-ff0000`). Consecutive messages of one sender within a few minutes
share one header (name and time), as messengers group them. The view opens at the
newest message and stays there while pictures load; when a message arrives while the
user reads further up, a "N new ↓" button appears instead of a jump.
Images become thumbnails once the chat window has one; files are links with a Save
button; outgoing messages end in a delivery mark (… sending, ✓ sent, ✓✓ delivered).
Every piece of a message carries `msg-<id>` so it can be found and updated in place.
"""

from __future__ import annotations

import functools
import tkinter as tk
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from tkinter import ttk

from client import i18n
from client.components.formatting import (
    flag_notes,
    format_message_time,
    format_size,
    status_mark,
)
from client.core.models import ChatMessage, MessageStatus
from client.theme import Theme, avatar_color

Chunk = tuple[str, tuple[str, ...]]
OUT_MARGIN = 72  # the side a message does not come from stays empty, like a chat bubble
BUBBLE_PAD = 10  # inner margin of a bubble, painted in its colour
GROUP_GAP_MS = 5 * 60 * 1000  # one header for a sender's messages this close together
BUBBLE_IN = "#eef1f5"
BUBBLE_OUT = "#dbe8ff"


def starts_group(previous: ChatMessage | None, message: ChatMessage) -> bool:
    """Whether `message` needs its own name-and-time header after `previous`."""
    return (
        previous is None
        or previous.sender != message.sender
        or previous.outgoing != message.outgoing
        or not 0 <= message.time - previous.time <= GROUP_GAP_MS
    )


class MessageView(tk.Frame):
    def __init__(
        self,
        parent: tk.Misc,
        theme: Theme,
        on_save: Callable[[ChatMessage], object],
        on_load_older: Callable[[], object],
        on_open_image: Callable[[ChatMessage], object] = lambda _m: None,
        on_cancel: Callable[[ChatMessage], object] = lambda _m: None,
    ) -> None:
        p = theme.palette
        super().__init__(parent, background=p.surface)
        self.theme = theme
        self._on_save, self._on_load_older = on_save, on_load_older
        self._on_open_image = on_open_image
        self._on_cancel = on_cancel
        self._messages: dict[str, ChatMessage] = {}
        self._images: dict[str, tk.PhotoImage] = {}
        self._top_state = ""
        self._last: ChatMessage | None = None  # the bottom message, for grouping
        self.following = True  # keep the newest in view (until the user scrolls up)
        self.unseen = 0  # messages that arrived below while the user read further up
        self.text = tk.Text(
            self,
            wrap="word",
            state="disabled",
            cursor="arrow",
            background=p.surface,
            foreground=p.text,
            borderwidth=0,
            highlightthickness=0,
            padx=theme.pad,
            pady=theme.pad // 2,
            font=theme.fonts.body,
            spacing1=1,
            spacing3=1,
            selectbackground=p.selected,
            selectforeground=p.text,
            inactiveselectbackground=p.selected,
        )
        self.scrollbar = ttk.Scrollbar(self, orient="vertical", command=self._scrollbar_moved)
        self.text.configure(yscrollcommand=self._scrolled)
        self.scrollbar.pack(side="right", fill="y")
        self.text.pack(side="left", fill="both", expand=True)
        self._configure_tags()
        for sequence in ("<Button-4>", "<MouseWheel>", "<Prior>"):
            self.text.bind(sequence, lambda _e: self.after_idle(self._check_top), add="+")
        for sequence in ("<Button-4>", "<Button-5>", "<MouseWheel>", "<Prior>", "<Next>"):
            self.text.bind(sequence, lambda _e: self.after_idle(self._user_scrolled), add="+")
        # A resize (the window mapping, a sash drag) keeps the newest message in view.
        self.text.bind("<Configure>", lambda _e: self._follow(), add="+")
        self.new_button = tk.Button(
            self,
            command=self.jump_to_newest,
            background=p.primary,
            foreground=p.primary_text,
            activebackground=p.primary_active,
            activeforeground=p.primary_text,
            font=theme.fonts.small,
            relief="flat",
            borderwidth=0,
            padx=theme.pad,
            pady=2,
            cursor="hand2",
        )

    # ------------------------------------------------------------------ setup

    def _configure_tags(self) -> None:
        t, p, f = self.text, self.theme.palette, self.theme.fonts
        out, pad = self.theme.px(OUT_MARGIN), self.theme.px(BUBBLE_PAD)
        t.tag_configure("in", lmargin1=2, lmargin2=2, rmargin=out)
        t.tag_configure("out", justify="right", lmargin1=out, lmargin2=out, rmargin=4)
        t.tag_configure(
            "bubble-in",
            background=BUBBLE_IN,
            lmargin1=pad,
            lmargin2=pad,
            lmargincolor=BUBBLE_IN,
            rmargin=out,
            rmargincolor=p.surface,
        )
        t.tag_configure(
            "bubble-out",
            background=BUBBLE_OUT,
            justify="right",
            lmargin1=out,
            lmargin2=out,
            lmargincolor=p.surface,
            rmargin=pad,
            rmargincolor=BUBBLE_OUT,
        )
        t.tag_configure("header", font=f.small, spacing1=10)
        t.tag_configure("name", font=(f.family, f.base_size - 1, "bold"))
        t.tag_configure("time", foreground=p.subtle)
        t.tag_configure("body", spacing1=4, spacing3=4)
        t.tag_configure("gap", font=(f.family, 3), spacing1=0, spacing3=0)
        t.tag_configure("status", foreground=p.subtle, font=f.small)
        t.tag_configure("status-delivered", foreground=p.primary)
        t.tag_configure("status-read", foreground=p.link, font=(f.family, f.small[1], "bold"))
        t.tag_configure("flag", foreground=p.subtle, font=f.small)
        t.tag_configure("status-failed", foreground=p.error)
        t.tag_configure("link", foreground=p.link, underline=True)
        t.tag_configure(
            "button",
            foreground=p.primary_text,
            background=p.primary,
            font=(f.family, f.base_size - 1, "bold"),
            relief="raised",
            borderwidth=1,
        )
        t.tag_configure("muted", foreground=p.muted, font=f.small)
        t.tag_configure("progress", foreground=p.primary_active, font=f.small)
        t.tag_configure(
            "notice", justify="center", foreground=p.muted, font=f.small, spacing1=8, spacing3=4
        )
        t.tag_configure(
            "warning",
            justify="center",
            foreground=p.warning_text,
            background=p.warning_bg,
            font=f.bold,
            spacing1=8,
            spacing3=8,
        )
        t.tag_configure("top", justify="center", font=f.small, spacing1=4, spacing3=6)
        t.tag_configure("older", foreground=p.link)
        t.tag_configure("hit", background="#fff3b0")
        for name in ("link", "button", "older"):
            t.tag_bind(name, "<Enter>", lambda _e: self.text.configure(cursor="hand2"))
            t.tag_bind(name, "<Leave>", lambda _e: self.text.configure(cursor="arrow"))
        t.tag_bind("older", "<Button-1>", lambda _e: self._on_load_older())

    def _style_tags(self, message: ChatMessage) -> tuple[str, ...]:
        """Per-size and per-colour tags, created the first time they are needed."""
        size_tag, color_tag = f"size-{message.font_size}", f"fg-{message.color.lstrip('#').lower()}"
        if size_tag not in self.text.tag_names():
            self.text.tag_configure(size_tag, font=(self.theme.fonts.family, message.font_size))
        if color_tag not in self.text.tag_names():
            self.text.tag_configure(color_tag, foreground=message.color)
        return size_tag, color_tag

    def _name_tag(self, sender: str, outgoing: bool) -> str:
        tag = f"sender-{'me' if outgoing else avatar_color(sender).lstrip('#')}"
        if tag not in self.text.tag_names():
            color = self.theme.palette.outgoing_name if outgoing else avatar_color(sender)
            self.text.tag_configure(tag, foreground=color)
        return tag

    # ------------------------------------------------------------------ rendering

    def _chunks(self, message: ChatMessage, previous: ChatMessage | None = None) -> list[Chunk]:
        side = "out" if message.outgoing else "in"
        mid = f"msg-{message.message_id}"
        header = (side, "header", mid)
        chunks: list[Chunk]
        if starts_group(previous, message):
            chunks = [
                (
                    message.sender,
                    (*header, "name", self._name_tag(message.sender, message.outgoing)),
                ),
                ("  " + format_message_time(message.time), (*header, "time")),
                ("\n", header),
            ]
        else:  # a thin gap keeps the bubbles of one group apart
            chunks = [("\n", (side, "gap", mid))]
        body = (f"bubble-{side}", "body", mid)
        if message.kind == "text":
            style = self._style_tags(message)
            chunks.append((message.text, (*body, *style, f"txt-{message.message_id}")))
        elif message.kind == "image":
            chunks.append(
                (self._attachment_label(message), (*body, "muted", f"img-{message.message_id}"))
            )
        else:
            chunks.extend(self._file_chunks(message, body))
        if message.outgoing:
            chunks.append(self._status_chunk(message.message_id, message.status, side, mid))
        for note in flag_notes(message):
            chunks.append(("\n" + note, (*body, "flag")))
        chunks.append(("\n", body))
        return chunks

    def _attachment_label(self, message: ChatMessage) -> str:
        attachment = message.attachment
        name = attachment.name if attachment else ""
        size = format_size(attachment.size) if attachment else ""
        key = "chat.image_label" if message.kind == "image" else "chat.file_label"
        return i18n.t(key, name=name, size=size)

    def _file_chunks(self, message: ChatMessage, body: tuple[str, ...]) -> list[Chunk]:
        mid = message.message_id
        chunks: list[Chunk] = [(self._attachment_label(message), (*body, "link", f"file-{mid}"))]
        if message.outgoing:
            return chunks
        chunks.append(("  ", body))
        chunks.extend(self._save_chunks(message, body))
        return chunks

    def _save_chunks(self, message: ChatMessage, body: tuple[str, ...]) -> list[Chunk]:
        mid = message.message_id
        path = message.attachment.local_path if message.attachment else None
        if path is not None:
            return [(i18n.t("chat.saved_to", path=str(path)), (*body, "muted", f"save-{mid}"))]
        return [(f" {i18n.t('chat.save')} ", (*body, "button", f"save-{mid}"))]

    def _status_chunk(self, message_id: str, status: str, side: str, mid: str) -> Chunk:
        tags = [f"bubble-{side}", "body", "status", mid, f"status-{message_id}"]
        if status in ("delivered", "read", "failed"):
            tags.append(f"status-{status}")
        return (f"  {status_mark(status)}", tuple(tags))

    def _insert(self, index: str, chunks: Sequence[Chunk]) -> None:
        if not chunks:
            return
        flat: list[object] = []
        for text, tags in chunks:
            flat.extend((text, tags))
        self.text.insert(index, *flat)  # type: ignore[arg-type]

    def _bind_message(self, message: ChatMessage) -> None:
        mid = message.message_id
        for tag in (f"file-{mid}", f"save-{mid}"):
            self.text.tag_bind(tag, "<Button-1>", functools.partial(self._save_clicked, mid))

    def _save_clicked(self, message_id: str, _event: object = None) -> None:
        message = self._messages.get(message_id)
        if message is not None and not message.outgoing:
            self._on_save(message)

    # ------------------------------------------------------------------ public API

    def append(self, message: ChatMessage) -> None:
        """Add a message at the bottom and follow it if the view was at the bottom."""
        if message.message_id in self._messages:
            return
        at_bottom = self.following or self.at_bottom()
        self._messages[message.message_id] = message
        with self._editable():
            self._insert("end", self._chunks(message, self._last))
        self._last = message
        self._bind_message(message)
        if at_bottom or message.outgoing:
            self.jump_to_newest()
        else:
            self.unseen += 1
            self._show_new_button()

    def prepend(self, messages: Iterable[ChatMessage], has_more: bool) -> None:
        """Add older messages above, keeping what the user is reading in place."""
        fresh = [m for m in messages if m.message_id not in self._messages]
        first_visible = self.text.index("@0,0")
        lines_before = self._line_count()
        with self._editable():
            self._remove_top()
            chunks: list[Chunk] = []
            previous: ChatMessage | None = None
            for message in fresh:
                self._messages[message.message_id] = message
                chunks.extend(self._chunks(message, previous))
                previous = message
            if self._last is None and fresh:
                self._last = fresh[-1]
            self._insert("1.0", chunks)
            self._set_top(has_more)
        for message in fresh:
            self._bind_message(message)
        shift = self._line_count() - lines_before
        line, _, col = first_visible.partition(".")
        self.text.yview(f"{int(line) + shift}.{col}")

    def show_history(self, messages: Sequence[ChatMessage], has_more: bool) -> None:
        """The first page: render, then jump to the newest message."""
        self.prepend(messages, has_more)
        self.jump_to_newest()
        self.after_idle(self.text.see, "end")  # again once the window has its size

    def update_status(self, message_id: str, status: MessageStatus | str) -> None:
        message = self._messages.get(message_id)
        ranges = self.text.tag_ranges(f"status-{message_id}")
        if message is None or not ranges:
            return
        side = "out" if message.outgoing else "in"
        with self._editable():
            start = self.text.index(ranges[0])
            self.text.delete(ranges[0], ranges[-1])
            self._insert(start, [self._status_chunk(message_id, status, side, f"msg-{message_id}")])

    def show_image(self, message_id: str, image: tk.PhotoImage) -> None:
        """Replace an image message's placeholder with its thumbnail."""
        ranges = self.text.tag_ranges(f"img-{message_id}")
        message = self._messages.get(message_id)
        if not ranges or message is None:
            return
        self._images[message_id] = image  # Tk keeps no reference of its own
        side = "out" if message.outgoing else "in"
        at_bottom = self.following or self.at_bottom()
        with self._editable():
            start = self.text.index(ranges[0])
            self.text.delete(ranges[0], ranges[-1])
            self.text.image_create(start, image=image, padx=2, pady=4)
            for tag in (f"bubble-{side}", "body", f"msg-{message_id}", f"img-{message_id}"):
                self.text.tag_add(tag, start)
        self.text.tag_bind(
            f"img-{message_id}", "<Button-1>", lambda _e: self._on_open_image(message)
        )
        if at_bottom:  # a picture growing the chat must not push the newest out of view
            self._see_end()

    def mark_saved(self, message: ChatMessage) -> None:
        """Replace the Save button of a downloaded file with where it went."""
        self._messages[message.message_id] = message
        ranges = self.text.tag_ranges(f"save-{message.message_id}")
        if not ranges:
            return
        side = "out" if message.outgoing else "in"
        body = (f"bubble-{side}", "body", f"msg-{message.message_id}")
        with self._editable():
            start = self.text.index(ranges[0])
            self.text.delete(ranges[0], ranges[-1])
            self._insert(start, self._save_chunks(message, body))

    def add_notice(self, text: str, warning: bool = False) -> None:
        """A centred line between messages: joins and leaves, key changes."""
        with self._editable():
            self._insert("end", [(text + "\n", ("warning" if warning else "notice",))])
        self._last = None  # the next message starts a new group
        self.text.see("end")

    def set_progress(self, message_id: str, fraction: float | None, cancel: bool = False) -> None:
        """ "42 %" (and Cancel) inside a message while its file moves; None removes it."""
        message = self._messages.get(message_id)
        if message is None:
            return
        tag = f"prog-{message_id}"
        ranges = self.text.tag_ranges(tag)
        side = "out" if message.outgoing else "in"
        body = (f"bubble-{side}", "body", f"msg-{message_id}", tag)
        with self._editable():
            where: str | None
            if ranges:
                where = str(self.text.index(ranges[0]))
                self.text.delete(ranges[0], ranges[-1])
            else:
                where = self._progress_index(message_id)
            if fraction is None or where is None:
                return
            chunks: list[Chunk] = [(f"  {round(fraction * 100)} %", (*body, "progress"))]
            if cancel:
                chunks.append(("  ", body))
                chunks.append((i18n.t("chat.cancel"), (*body, "link", f"cancel-{message_id}")))
            self._insert(where, chunks)
        if cancel:
            self.text.tag_bind(
                f"cancel-{message_id}", "<Button-1>", lambda _e: self._on_cancel(message)
            )

    def progress_text(self, message_id: str) -> str:
        ranges = self.text.tag_ranges(f"prog-{message_id}")
        return self.text.get(ranges[0], ranges[-1]).strip() if ranges else ""

    def _progress_index(self, message_id: str) -> str | None:
        """Where a message's progress goes: before its delivery mark, or after its body."""
        ranges = self.text.tag_ranges(f"status-{message_id}")
        if ranges:
            return str(self.text.index(ranges[0]))
        for tag in (f"save-{message_id}", f"file-{message_id}", f"img-{message_id}"):
            ranges = self.text.tag_ranges(tag)
            if ranges:
                return str(self.text.index(ranges[-1]))
        return None

    def at_bottom(self) -> bool:
        return self.text.yview()[1] >= 0.999

    def jump_to_newest(self) -> None:
        self._see_end()
        self.following = True
        self.unseen = 0
        self.new_button.place_forget()

    def _follow(self) -> None:
        if self.following:
            self._see_end()

    def _see_end(self) -> None:
        """Show the last line. Tk measures line heights lazily (a picture just inserted
        may not count yet), so bring the measurements up to date first."""
        self.text.tk.call(str(self.text), "sync")
        self.text.see("end")

    def _user_scrolled(self) -> None:
        """The user moved the view: follow new messages only while at the bottom."""
        self.following = self.at_bottom()
        if self.following and self.unseen:
            self.unseen = 0
            self.new_button.place_forget()

    def _show_new_button(self) -> None:
        self.new_button.configure(text=i18n.t("chat.new_messages", count=self.unseen))
        self.new_button.place(
            relx=1.0, rely=1.0, x=-self.theme.pad * 2, y=-self.theme.pad, anchor="se"
        )
        self.new_button.lift()

    def highlight(self, message_id: str) -> None:
        """Scroll to a search hit and mark it."""
        self.text.tag_remove("hit", "1.0", "end")
        ranges = self.text.tag_ranges(f"msg-{message_id}")
        if ranges:
            self.text.tag_add("hit", ranges[0], ranges[-1])
            self.text.see(ranges[0])

    def has_message(self, message_id: str) -> bool:
        return message_id in self._messages

    def body_range(self, message_id: str) -> tuple[str, str] | None:
        """Where a text message's body is (tests and search highlighting)."""
        ranges = self.text.tag_ranges(f"txt-{message_id}")
        if not ranges:
            return None
        return str(ranges[0]), str(ranges[-1])

    def image_count(self) -> int:
        return len(self._images)

    # ------------------------------------------------------------------ helpers

    def _line_count(self) -> int:
        return int(self.text.index("end-1c").split(".")[0])

    def _remove_top(self) -> None:
        ranges = self.text.tag_ranges("top")
        if ranges:
            self.text.delete(ranges[0], ranges[-1])

    def _set_top(self, has_more: bool) -> None:
        if has_more:
            chunk: Chunk = ("\u2191 " + i18n.t("chat.load_older") + "\n", ("top", "older"))
        else:
            chunk = (i18n.t("chat.beginning") + "\n", ("top", "muted"))
        self._top_state = "more" if has_more else "start"
        self._insert("1.0", [chunk])

    def _scrolled(self, first: float | str, last: float | str) -> None:
        """Show the scrollbar only when there is more than one screen of messages."""
        if float(first) <= 0.0 and float(last) >= 1.0:
            self.scrollbar.pack_forget()
        elif not self.scrollbar.winfo_ismapped():
            self.scrollbar.pack(side="right", fill="y", before=self.text)
        self.scrollbar.set(first, last)
        if self.unseen and float(last) >= 0.999:  # the user scrolled down to them
            self.unseen = 0
            self.new_button.place_forget()

    def _scrollbar_moved(self, *args: str) -> None:
        self.text.yview(*args)
        self._user_scrolled()
        self._check_top()

    def _check_top(self) -> None:
        first, last = self.text.yview()
        if first <= 0.0 and last < 1.0 and self._top_state == "more":
            self._on_load_older()

    def _editable(self) -> _Editable:
        return _Editable(self.text)

    def saved_path(self, message_id: str) -> Path | None:
        message = self._messages.get(message_id)
        return message.attachment.local_path if message and message.attachment else None


class _Editable:
    """`with`: the Text is writable inside, read-only again after."""

    def __init__(self, text: tk.Text) -> None:
        self.text = text

    def __enter__(self) -> None:
        self.text.configure(state="normal")

    def __exit__(self, *exc: object) -> None:
        self.text.configure(state="disabled")
