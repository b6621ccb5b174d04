"""Parts of the chat window: its header, the composer and the group member list."""

from __future__ import annotations

import tkinter as tk
import tkinter.font as tkfont
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from tkinter import ttk
from typing import Any

from client import i18n
from client.components.contact_item import Avatar
from client.components.field import Placeholder
from client.components.formatting import address_text
from client.components.tooltip import Tooltip
from client.core.models import Contact
from client.forms.chat import MAX_FONT_SIZE, MIN_FONT_SIZE, clamp_font_size, should_send
from client.theme import Theme


class ChatHeader(tk.Frame):
    """Name, presence and address; safety number (friends) and history search."""

    def __init__(
        self,
        parent: tk.Misc,
        theme: Theme,
        contact: Contact,
        on_safety: Callable[[], object],
        on_search: Callable[[str], object],
        *,
        on_pop_out: Callable[[], object] | None = None,
        on_step: Callable[[int], object] | None = None,
        menu: tuple[tuple[str, Callable[[], object]], ...] = (),
    ) -> None:
        p, pad = theme.palette, theme.pad
        super().__init__(parent, background=p.surface)
        self.theme = theme
        self.avatar = Avatar(self, theme, p.surface, size=40)
        self.avatar.grid(row=0, column=0, rowspan=2, padx=(pad, pad - 2), pady=pad - 2)
        self.name = tk.Label(
            self,
            text=contact.name,
            font=theme.fonts.heading,
            background=p.surface,
            foreground=p.text,
            anchor="w",
        )
        self.name.grid(row=0, column=1, sticky="sw", pady=(pad - 2, 0))
        self.state = tk.Label(
            self, font=theme.fonts.small, background=p.surface, foreground=p.muted, anchor="w"
        )
        self.state.grid(row=1, column=1, sticky="nw", pady=(0, pad - 2))
        tools = tk.Frame(self, background=p.surface)
        tools.grid(row=0, column=2, rowspan=2, padx=pad, sticky="e")
        # The search has a row of its own, shown on Ctrl+F or from the menu, so the name
        # keeps its room in narrow windows and the messages their height.
        search_row = tk.Frame(self, background=p.surface)
        self.search_row = search_row
        self._search_grid = {"row": 2, "column": 0, "columnspan": 3, "sticky": "ew"}
        self._search_pad = (pad, (0, pad // 2))
        self.query = tk.StringVar(self)
        self.search_entry = ttk.Entry(search_row, textvariable=self.query, width=16)
        self.search_entry.pack(side="left", fill="x", expand=True, padx=(0, 6))
        Placeholder(self.search_entry, i18n.t("chat.search_placeholder"), p.subtle, p.surface)
        self.search_entry.bind("<Return>", lambda _e: on_search(self.query.get()))
        self.search_entry.bind("<Shift-Return>", lambda _e: self._step(on_step, -1))
        # Older / newer hit and "2 of 5": packed only while a search has hits.
        self.hit_label = tk.Label(
            search_row, background=p.surface, foreground=p.muted, font=theme.fonts.small
        )
        self.older_button = ttk.Button(
            search_row, text="\u25b2", width=2, command=lambda: self._step(on_step, 1)
        )
        self.newer_button = ttk.Button(
            search_row, text="\u25bc", width=2, command=lambda: self._step(on_step, -1)
        )
        self._search_parts = (self.hit_label, self.older_button, self.newer_button)
        # The safety number of a friend is in the ⋯ menu (see ChatActions.menu), which
        # leaves the name its room; `on_safety` stays for callers that show it directly.
        self.on_safety = on_safety
        self.safety_button: ttk.Button | None = None
        self.pop_out_button: ttk.Button | None = None
        if on_pop_out is not None:
            self.pop_out_button = ttk.Button(
                tools, text="\u21d7", width=3, command=on_pop_out, style="Tool.TButton"
            )
            self.pop_out_button.pack(side="left", padx=(6, 0))
            Tooltip(self.pop_out_button, i18n.t("chat.pop_out"), theme)
        # "⋯": what is done to the conversation as a whole (leave, delete, export).
        self.menu_button = ttk.Menubutton(tools, text="\u22ef", style="Tool.TMenubutton")
        self.menu = tk.Menu(self.menu_button, tearoff=False, font=theme.fonts.body)
        for label, command in menu:
            self.menu.add_command(label=label, command=command)
        self.menu_button.configure(menu=self.menu)
        if menu:
            self.menu_button.pack(side="left", padx=(6, 0))
        self.columnconfigure(1, weight=1)
        tk.Frame(self, height=1, background=p.border).grid(
            row=3, column=0, columnspan=3, sticky="ew"
        )
        self.connection = "connected"
        self.contact = contact
        self.show(contact)

    def show_search(self) -> None:
        padx, pady = self._search_pad
        self.search_row.grid(padx=padx, pady=pady, **self._search_grid)  # type: ignore[arg-type]
        self.search_entry.focus_set()
        self.search_entry.select_range(0, "end")

    def hide_search(self) -> None:
        self.search_row.grid_remove()

    @property
    def search_shown(self) -> bool:
        return bool(self.search_row.winfo_manager())

    def _step(self, on_step: Callable[[int], object] | None, delta: int) -> str:
        if on_step is not None:
            on_step(delta)
        return "break"

    def show_hits(self, index: int, count: int) -> None:
        """ "2 / 5" with older and newer buttons; count 0 hides them (they take no space)."""
        for part in self._search_parts:
            part.pack_forget()
        if count <= 0:
            return
        self.hit_label.configure(text=i18n.t("chat.search_position", index=index + 1, count=count))
        for part in self._search_parts:
            part.pack(side="left", padx=(0, 4), after=self.search_entry)
        self.newer_button.pack_configure(after=self.older_button)
        self.older_button.pack_configure(after=self.hit_label)
        self.older_button.state(["!disabled" if index + 1 < count else "disabled"])
        self.newer_button.state(["!disabled" if index > 0 else "disabled"])

    def set_connection(self, state: str) -> None:
        """While we are not connected nobody's presence is known: say so instead."""
        self.connection = state
        self.show(self.contact)

    def show(self, contact: Contact) -> None:
        self.contact = contact
        is_room = contact.kind == "room"
        connected = self.connection == "connected"
        online = contact.online if connected else False
        self.avatar.show(contact.name, None if is_room else online, group=is_room)
        p = self.theme.palette
        if not connected:
            key = f"connection.{self.connection}"
            text = "\u25cb " + (i18n.t(key) if i18n.has(key) else self.connection)
            color = p.error
        elif is_room:
            text, color = address_text(contact), p.muted
        elif contact.online:
            text = f"\u25cf {i18n.t('contacts.online')}  \u00b7  {address_text(contact)}"
            color = p.online
        else:
            text, color = f"\u25cb {i18n.t('contacts.offline')}", p.muted
        self.state.configure(text=text, foreground=color)


class Composer(tk.Frame):
    """Font size, colour, emoji, Image and File (with the size limit), the input box, Send."""

    def __init__(
        self,
        parent: tk.Misc,
        theme: Theme,
        font_size: int,
        color: str,
        commands: dict[str, Callable[[], object]],
        limit: str = "",
    ) -> None:
        p, pad = theme.palette, theme.pad
        super().__init__(parent, background=p.surface)
        self.theme = theme
        self.color = color
        tk.Frame(self, height=1, background=p.border).pack(fill="x")
        tools = tk.Frame(self, background=p.surface)
        tools.pack(fill="x", padx=pad, pady=(8, 4))
        self._build_size_picker(tools, font_size)
        self._build_color_picker(tools, commands["color"])
        self._build_attach_buttons(tools, commands, limit)
        self._build_input(font_size)
        self._build_send_row(commands["send"])
        self._send = commands["send"]
        self.restyle()

    # Builders run in this order from __init__: Tk names widgets by creation order.

    def _build_size_picker(self, tools: tk.Frame, font_size: int) -> None:
        """The Size spinbox; every change re-previews the input at that size."""
        p = self.theme.palette
        tk.Label(
            tools,
            text=i18n.t("chat.font_size"),
            background=p.surface,
            foreground=p.muted,
            font=self.theme.fonts.small,
        ).pack(side="left")
        self.size_var = tk.StringVar(self, value=str(clamp_font_size(font_size)))
        self.size_box = ttk.Spinbox(
            tools,
            from_=MIN_FONT_SIZE,
            to=MAX_FONT_SIZE,
            width=4,
            textvariable=self.size_var,
            command=self.restyle,
        )
        self.size_box.pack(side="left", padx=(4, 10))
        self.size_box.bind("<KeyRelease>", lambda _e: self.restyle())

    def _build_color_picker(self, tools: tk.Frame, on_color: Callable[[], object]) -> None:
        """The Colour button and a swatch showing the colour messages will be sent in."""
        self.color_button = ttk.Button(
            tools, text=i18n.t("chat.color"), style="Tool.TButton", command=on_color
        )
        self.color_button.pack(side="left")
        self.swatch = tk.Frame(
            tools,
            width=16,
            height=16,
            background=self.color,
            highlightthickness=1,
            highlightbackground=self.theme.palette.border,
        )
        self.swatch.pack(side="left", padx=(4, 12))

    def _build_attach_buttons(
        self, tools: tk.Frame, commands: dict[str, Callable[[], object]], limit: str
    ) -> None:
        """Emoji, Image and File, and the largest file the server takes, shown up front."""
        self.emoji_button = ttk.Button(
            tools, text="\u263a", width=3, style="Tool.TButton", command=commands["emoji"]
        )
        self.emoji_button.pack(side="left", padx=(0, 6))
        Tooltip(self.emoji_button, i18n.t("chat.emoji"), self.theme)
        self.image_button = ttk.Button(
            tools, text=i18n.t("chat.image"), style="Tool.TButton", command=commands["image"]
        )
        self.image_button.pack(side="left", padx=(0, 6))
        self.file_button = ttk.Button(
            tools, text=i18n.t("chat.file"), style="Tool.TButton", command=commands["file"]
        )
        self.file_button.pack(side="left")
        # Shown under the Enter hint (see _build_send_row), and in the buttons' tooltips.
        self.limit_label = tk.Label(
            self,
            text=i18n.t("chat.size_limit", limit=limit) if limit else "",
            background=self.theme.palette.surface,
            foreground=self.theme.palette.subtle,
            font=self.theme.fonts.small,
            anchor="w",
        )
        if limit:
            Tooltip(self.image_button, i18n.t("chat.size_limit", limit=limit), self.theme)
            Tooltip(self.file_button, i18n.t("chat.size_limit", limit=limit), self.theme)

    def _build_input(self, font_size: int) -> None:
        """The message box; its own font so size changes preview without touching others."""
        p, pad = self.theme.palette, self.theme.pad
        self.body_font = tkfont.Font(root=self, family=self.theme.fonts.family, size=font_size)
        self.input = tk.Text(
            self,
            height=3,
            wrap="word",
            undo=True,
            font=self.body_font,
            background=p.surface_alt,
            foreground=self.color,
            borderwidth=0,
            highlightthickness=1,
            highlightbackground=p.border,
            highlightcolor=p.primary,
            padx=8,
            pady=6,
            insertbackground=p.text,
        )
        self.input.pack(fill="both", expand=True, padx=pad, pady=(0, 6))
        self.input.bind("<KeyPress-Return>", self._key_enter)
        self.input.bind("<KeyPress-KP_Enter>", self._key_enter)

    def _build_send_row(self, on_send: Callable[[], object]) -> None:
        """The Enter / Shift+Enter hint on the left, Send on the right."""
        p, pad = self.theme.palette, self.theme.pad
        bottom = tk.Frame(self, background=p.surface)
        bottom.pack(fill="x", padx=pad, pady=(0, pad - 2))
        hints = tk.Frame(bottom, background=p.surface)
        hints.pack(side="left", fill="x", expand=True)
        tk.Label(
            hints,
            text=i18n.t("chat.enter_hint"),
            background=p.surface,
            foreground=p.subtle,
            font=self.theme.fonts.small,
            anchor="w",
        ).pack(fill="x")
        self.limit_label.pack(in_=hints, fill="x")
        self.limit_label.lift(hints)  # made before `hints`, it would sit behind it
        self.send_button = ttk.Button(
            bottom, text=i18n.t("chat.send"), style="Primary.TButton", command=on_send
        )
        self.send_button.pack(side="right")

    def _key_enter(self, event: tk.Event[Any]) -> str | None:
        if should_send(event.keysym, int(event.state)):
            self._send()
            return "break"
        return None

    @property
    def font_size(self) -> int:
        return clamp_font_size(self.size_var.get())

    def set_font_size(self, size: int) -> None:
        self.size_var.set(str(clamp_font_size(size)))
        self.restyle()

    def set_color(self, color: str) -> None:
        self.color = color
        self.swatch.configure(background=color)
        self.restyle()

    def restyle(self) -> None:
        """The input previews the size and colour the message will have."""
        self.body_font.configure(size=self.font_size)
        self.input.configure(foreground=self.color)

    @property
    def text(self) -> str:
        return self.input.get("1.0", "end-1c")

    def set_text(self, text: str) -> None:
        self.input.delete("1.0", "end")
        self.input.insert("1.0", text)


@dataclass(frozen=True)
class MemberActions:
    """What an admin can do from the member list (each runs off the Tk thread)."""

    remove: Callable[[str], object]
    make_admin: Callable[[str], object]
    make_owner: Callable[[str], object]
    approve: Callable[[str], object]
    refuse: Callable[[str], object]


class MemberList(tk.Frame):
    """Who is in a group (the verified members), online first; admins are marked.

    An admin also sees who waits to join (approve / refuse) and a menu on each member
    (remove, make admin); updated on every membership change.
    """

    def __init__(self, parent: tk.Misc, theme: Theme, actions: MemberActions | None = None) -> None:
        p = theme.palette
        super().__init__(parent, background=p.surface_alt, width=theme.px(150))
        self.theme = theme
        self.actions = actions
        tk.Frame(self, width=1, background=p.border).pack(side="left", fill="y")
        self.title = tk.Label(
            self,
            text=i18n.t("chat.members", count=0),
            background=p.surface_alt,
            foreground=p.muted,
            font=theme.fonts.small,
            anchor="w",
        )
        self.title.pack(fill="x", padx=10, pady=(10, 4))
        self.requests = tk.Frame(self, background=p.surface_alt)
        self.requests.pack(fill="x", padx=10)
        self.rows = tk.Frame(self, background=p.surface_alt)
        self.rows.pack(fill="both", expand=True, padx=10)
        self.names: list[str] = []
        self.admins: set[str] = set()
        self.owner = ""
        self.me = ""
        self.waiting: list[str] = []
        self.menu = tk.Menu(self, tearoff=False)
        self.can_manage = False

    def show(
        self,
        members: Iterable[tuple[str, bool | None]],
        admins: Iterable[str] = (),
        *,
        can_manage: bool = False,
        me: str = "",
        owner: str = "",
    ) -> None:
        """(username, online) pairs; online None when not known yet. `can_manage`: we
        are an admin, so each other member gets a menu. `owner` is marked as such."""
        p = self.theme.palette
        ordered = sorted(members, key=lambda m: (m[1] is not True, m[0].casefold()))
        self.names = [name for name, _ in ordered]
        self.admins = set(admins)
        self.owner, self.me = owner, me
        self.can_manage = can_manage and self.actions is not None
        for child in self.rows.winfo_children():
            child.destroy()
        self.title.configure(text=i18n.t("chat.members", count=len(ordered)))
        for name, online in ordered:
            color = p.online if online else p.offline
            row = tk.Frame(self.rows, background=p.surface_alt)
            row.pack(fill="x", pady=1)
            tk.Label(
                row,
                text="\u25cf",
                foreground=color,
                background=p.surface_alt,
                font=self.theme.fonts.small,
            ).pack(side="left")
            label = tk.Label(
                row,
                text=name,
                background=p.surface_alt,
                foreground=p.text,
                font=self.theme.fonts.body,
                anchor="w",
            )
            label.pack(side="left", padx=(4, 0))
            if name in self.admins or name == owner:
                role = "members.owner" if name == owner else "members.admin"
                tk.Label(
                    row,
                    text=i18n.t(role),
                    background=p.surface_alt,
                    foreground=p.muted,
                    font=self.theme.fonts.small,
                ).pack(side="left", padx=(4, 0))
            if self.can_manage and name != me:
                for widget in (row, label):
                    widget.bind("<Button-3>", partial(self.open_menu, name))
                    widget.bind("<Button-1>", partial(self.open_menu, name))

    def open_menu(self, name: str, event: tk.Event[Any] | None = None) -> None:
        """Remove / make admin for `name` (admins only)."""
        if not self.can_manage or self.actions is None:
            return
        actions = self.actions
        self.menu.delete(0, "end")
        if name != self.owner:  # the log never lets anyone remove the owner
            self.menu.add_command(
                label=i18n.t("members.remove", name=name), command=lambda: actions.remove(name)
            )
        if name not in self.admins:
            self.menu.add_command(
                label=i18n.t("members.make_admin", name=name),
                command=lambda: actions.make_admin(name),
            )
        if self.me and self.me == self.owner:
            self.menu.add_command(
                label=i18n.t("members.make_owner", name=name),
                command=lambda: actions.make_owner(name),
            )
        if event is not None and self.menu.index("end") is not None:  # nothing to offer
            self.menu.tk_popup(event.x_root, event.y_root)

    def show_requests(self, names: Iterable[str]) -> None:
        """Who waits to join, with Approve / Refuse (admins only)."""
        p = self.theme.palette
        self.waiting = list(names)
        for child in self.requests.winfo_children():
            child.destroy()
        if not self.waiting or self.actions is None:
            return
        actions = self.actions
        tk.Label(
            self.requests,
            text=i18n.t("members.requests", count=len(self.waiting)),
            background=p.surface_alt,
            foreground=p.muted,
            font=self.theme.fonts.small,
            anchor="w",
        ).pack(fill="x")
        for name in self.waiting:
            row = tk.Frame(self.requests, background=p.surface_alt)
            row.pack(fill="x", pady=1)
            tk.Label(row, text=name, background=p.surface_alt, foreground=p.text, anchor="w").pack(
                side="left"
            )
            ttk.Button(
                row,
                text=i18n.t("members.refuse"),
                command=partial(actions.refuse, name),
            ).pack(side="right")
            ttk.Button(
                row,
                text=i18n.t("members.approve"),
                style="Primary.TButton",
                command=partial(actions.approve, name),
            ).pack(side="right", padx=(0, 2))
