"""One row of the contact list: avatar with online dot, name, IP:port, last message,
time and a red unread badge. Click selects, double-click (or Enter) opens the chat.
"""

from __future__ import annotations

import tkinter as tk
import tkinter.font as tkfont
from collections.abc import Callable

from client import i18n
from client.components.formatting import address_text, badge_text, format_list_time, preview_text
from client.core.models import Contact
from client.theme import Theme, avatar_color, initial

AVATAR = 42
DOT = 12
BADGE_HEIGHT = 18


class Badge(tk.Canvas):
    """A red pill with a white count; a circle for one digit."""

    def __init__(self, parent: tk.Misc, theme: Theme, background: str) -> None:
        self.height = theme.px(BADGE_HEIGHT)
        super().__init__(
            parent,
            height=self.height,
            width=self.height,
            background=background,
            highlightthickness=0,
            borderwidth=0,
        )
        self.theme = theme
        self._font = tkfont.Font(
            root=self, family=theme.fonts.family, size=theme.fonts.base_size - 3, weight="bold"
        )
        self.text = ""

    def show(self, text: str) -> None:
        self.text = text
        self.delete("all")
        if not text:
            return
        h = self.height
        w = max(h, self._font.measure(text) + self.theme.px(10))
        self.configure(width=w)
        color = self.theme.palette.badge
        r = h / 2
        self.create_oval(0, 0, h, h, fill=color, outline=color)
        self.create_oval(w - h, 0, w, h, fill=color, outline=color)
        self.create_rectangle(r, 0, w - r, h, fill=color, outline=color)
        self.create_text(
            w / 2, h / 2, text=text, fill=self.theme.palette.badge_text, font=self._font
        )


class Avatar(tk.Canvas):
    """A coloured circle with the first letter; a presence dot for friends."""

    def __init__(self, parent: tk.Misc, theme: Theme, background: str, size: int = AVATAR) -> None:
        points = max(size // 3, 9)  # `size` is for 96 dpi; the font is in points already
        size = theme.px(size)
        super().__init__(
            parent,
            width=size + 2,
            height=size + 2,
            background=background,
            highlightthickness=0,
            borderwidth=0,
        )
        self.theme = theme
        self.diameter = size
        self._font = tkfont.Font(root=self, family=theme.fonts.family, size=points, weight="bold")

    def show(self, name: str, presence: bool | None, group: bool = False) -> None:
        """`presence` None draws no dot (groups, yourself)."""
        self.delete("all")
        s, p = self.diameter, self.theme.palette
        fill = avatar_color(name)
        if group:
            self.create_rectangle(1, 1, s, s, fill=fill, outline=fill, width=0)
        else:
            self.create_oval(1, 1, s, s, fill=fill, outline=fill)
        label = "#" if group else initial(name)
        self.create_text(s / 2 + 1, s / 2 + 1, text=label, fill="#ffffff", font=self._font)
        if presence is not None:
            color = p.online if presence else p.offline
            d = max(s // 4, self.theme.px(8))
            self.create_oval(
                s - d,
                s - d,
                s + 1,
                s + 1,
                fill=color,
                outline=self.cget("background"),
                width=self.theme.px(2),
                tags="dot",
            )


class ContactItem(tk.Frame):
    def __init__(
        self,
        parent: tk.Misc,
        theme: Theme,
        on_select: Callable[[Contact], object],
        on_open: Callable[[Contact], object],
    ) -> None:
        self.theme = theme
        bg = theme.palette.surface
        super().__init__(parent, background=bg, cursor="hand2", takefocus=True)
        self._on_select, self._on_open = on_select, on_open
        self.contact: Contact | None = None
        self.selected = False
        fonts, p, pad = theme.fonts, theme.palette, theme.pad
        self.avatar = Avatar(self, theme, bg)
        self.avatar.grid(row=0, column=0, rowspan=3, padx=(pad, pad - 2), pady=pad // 2 + 2)
        self.name_label = tk.Label(
            self, font=fonts.bold, background=bg, foreground=p.text, anchor="w"
        )
        self.time_label = tk.Label(
            self, font=fonts.small, background=bg, foreground=p.subtle, anchor="e"
        )
        self.address_label = tk.Label(
            self, font=fonts.small, background=bg, foreground=p.muted, anchor="w"
        )
        self.preview_label = tk.Label(
            self, font=fonts.small, background=bg, foreground=p.muted, anchor="w"
        )
        self.badge = Badge(self, theme, bg)
        self.name_label.grid(row=0, column=1, sticky="ew", pady=(pad // 2, 0))
        self.time_label.grid(row=0, column=2, sticky="e", padx=(4, pad), pady=(pad // 2, 0))
        self.address_label.grid(row=1, column=1, columnspan=2, sticky="ew")
        self.preview_label.grid(row=2, column=1, sticky="ew", pady=(0, pad // 2))
        self.badge.grid(row=2, column=2, sticky="e", padx=(4, pad), pady=(0, pad // 2))
        self.columnconfigure(1, weight=1)
        self.separator = tk.Frame(self, height=1, background=p.border)
        self.separator.grid(row=3, column=0, columnspan=3, sticky="ew", padx=(pad, 0))
        for widget in (self, *self._parts()):
            widget.bind("<Button-1>", self._clicked)
            widget.bind("<Double-Button-1>", self._double_clicked)
            widget.bind("<Enter>", lambda _e: self._paint(hover=True))
            widget.bind("<Leave>", lambda _e: self._paint(hover=False))
        self.bind("<Return>", self._double_clicked)

    def _parts(self) -> tuple[tk.Label | tk.Canvas, ...]:
        return (
            self.avatar,
            self.name_label,
            self.time_label,
            self.address_label,
            self.preview_label,
            self.badge,
        )

    def show(self, contact: Contact, me: str = "") -> None:
        self.contact = contact
        is_room = contact.kind == "room"
        self.avatar.show(contact.name, None if is_room else contact.online, group=is_room)
        self.name_label.configure(text=contact.name)
        self.time_label.configure(text=format_list_time(contact.last_message_time))
        self.address_label.configure(text=address_text(contact))
        marker, preview = preview_text(contact, me)
        if not preview and not is_room:
            preview = i18n.t("contacts.online" if contact.online else "contacts.offline")
        p = self.theme.palette
        self.preview_label.configure(
            text=f"{marker} {preview}".strip(), foreground=p.error if marker else p.muted
        )
        self.badge.show(badge_text(contact.unread))

    def set_selected(self, selected: bool) -> None:
        self.selected = selected
        self._paint(hover=False)

    def _paint(self, hover: bool) -> None:
        p = self.theme.palette
        color = p.selected if self.selected else (p.hover if hover else p.surface)
        for widget in (self, *self._parts()):
            widget.configure(background=color)
        if self.contact is not None:  # the dot's ring takes the row's colour
            self.avatar.itemconfigure("dot", outline=color)

    def _clicked(self, _event: tk.Event[tk.Misc]) -> None:
        self.focus_set()
        if self.contact is not None:
            self._on_select(self.contact)

    def _double_clicked(self, _event: tk.Event[tk.Misc]) -> None:
        if self.contact is not None:
            self._on_open(self.contact)
