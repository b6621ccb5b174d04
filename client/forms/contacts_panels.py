"""The parts of the contact window: profile header, user search, friend requests and
the inline action panel (add/delete friend, create/join group).

All of them work inline in the contact window: nothing opens a second window.
"""

from __future__ import annotations

import functools
import tkinter as tk
import tkinter.font as tkfont
from collections.abc import Callable
from tkinter import ttk
from typing import TYPE_CHECKING, Any

from client import i18n
from client.components.busy import BusyButton, alive
from client.components.contact_item import Avatar
from client.components.field import Placeholder
from client.components.formatting import elide
from client.components.layout import collapse_if_empty
from client.core.directory import JoinPending
from client.core.models import Contact
from client.forms.contacts import (
    Action,
    InputError,
    parse_action_input,
    search_row_detail,
    search_row_state,
)
from client.forms.errors import describe_error

if TYPE_CHECKING:
    from client.forms.host import FormHost

STATUS_GAP = 3  # pixels between the dot and the state line
SEPARATOR = "  \u00b7  "
STATUS_COLORS = {"connected": "#7ee2a0", "reconnecting": "#ffd27a", "connecting": "#ffd27a"}


class ProfileHeader(tk.Frame):
    """Who is logged in, the connection state, and Log out."""

    def __init__(
        self,
        parent: tk.Misc,
        app: FormHost,
        on_logout: Callable[[], object],
        menu: tuple[tuple[str, Callable[[], object]], ...] = (),
    ) -> None:
        p, pad = app.theme.palette, app.theme.pad
        super().__init__(parent, background=p.header)
        client = app.require_client()
        profile = client.profile
        name = profile.username if profile else (client.username or "")
        self.avatar = Avatar(self, app.theme, p.header, size=46)
        self.avatar.show(name, None)
        self.avatar.grid(row=0, column=0, rowspan=2, padx=(pad, pad - 2), pady=pad)
        ttk.Label(self, text=name, style="Header.TLabel").grid(
            row=0, column=1, sticky="sw", pady=(pad, 0)
        )
        line = tk.Frame(self, background=p.header)
        line.grid(row=1, column=1, sticky="nw", pady=(0, pad))
        self.dot = tk.Label(line, text="\u25cf", background=p.header, font=app.theme.fonts.small)
        self.dot.pack(side="left")
        self.status = tk.Label(
            line,
            background=p.header,
            foreground=p.header_muted,
            font=app.theme.fonts.small,
            anchor="w",
        )
        self.status.pack(side="left", padx=(STATUS_GAP, 0))

        def logout() -> None:
            self.logout_button.state(["disabled"])
            on_logout()

        self.logout_button = ttk.Button(
            self, text=i18n.t("contacts.logout"), style="Header.TButton", command=logout
        )
        self.logout_button.grid(row=0, column=3, rowspan=2, padx=(0, pad))
        self.menu_button = ttk.Menubutton(self, text="\u22ef", style="Header.TMenubutton")
        self.menu = tk.Menu(self.menu_button, tearoff=False, font=app.theme.fonts.body)
        for label, command in menu:
            self.menu.add_command(label=label, command=command)
        self.menu_button.configure(menu=self.menu)
        self.menu_button.grid(row=0, column=2, rowspan=2, padx=(0, 6))
        self.columnconfigure(1, weight=1)
        self.email = profile.email if profile else ""
        self._font = tkfont.Font(root=self, font=app.theme.fonts.small)
        self.status_text = self.state_label = ""
        self.set_state("connected")
        # Grid arranges the line after the header's own <Configure>: fit at idle, and
        # again whenever the line itself is given another width.
        self.bind("<Configure>", lambda _e: self.after_idle(self._fit_status), add="+")
        self.status.bind("<Configure>", lambda _e: self._fit_status(), add="+")

    def set_state(self, state: str) -> None:
        self.state_label = (
            i18n.t(f"connection.{state}") if i18n.has(f"connection.{state}") else state
        )
        self.status_text = self.state_label + (f"{SEPARATOR}{self.email}" if self.email else "")
        self._fit_status()
        self.dot.configure(foreground=STATUS_COLORS.get(state, "#ffb3ad"))
        self.state_name = state

    def _fit_status(self) -> None:
        """A long e-mail ends in "…" rather than running under the buttons."""
        cell = self.grid_bbox(1, 1)
        width = cell[2] if cell is not None else 0
        shown = str(self.status.cget("text"))
        # the label's own padding and border, and the gap after the dot
        overhead = self.status.winfo_reqwidth() - self._font.measure(shown) + STATUS_GAP
        room = width - self.dot.winfo_reqwidth() - overhead if width > 1 else 0
        text = self.status_text
        if room > 0 and self._font.measure(text) > room:
            # the state stays whole; the e-mail gets what is left, or goes
            label = self.state_label
            left = room - self._font.measure(label + SEPARATOR)
            email = elide(self.email, left, self._font.measure)
            text = label + SEPARATOR + email if len(email) > 3 else label
        if self.status.cget("text") != text:
            self.status.configure(text=text)


class SearchPanel(ttk.Frame):
    """Find users by name and send them a friend request from the result row.

    The results go into `results_parent` (the top of the scrolling list), so a long
    result list scrolls with the contacts instead of squeezing them off the window.
    """

    def __init__(self, parent: tk.Misc, app: FormHost, results_parent: tk.Misc) -> None:
        super().__init__(parent, style="Surface.TFrame", padding=(app.theme.pad, 10))
        self.app = app
        p = app.theme.palette
        self.query = tk.StringVar(self)
        self.entry = ttk.Entry(self, textvariable=self.query)
        self.entry.grid(row=0, column=0, sticky="ew", padx=(0, 6))
        self.placeholder = Placeholder(
            self.entry, i18n.t("contacts.search_placeholder"), p.subtle, p.surface
        )
        self.entry.bind("<Return>", lambda _e: self.search())
        self.button = ttk.Button(self, text=i18n.t("contacts.search"), command=self.search)
        self.button.grid(row=0, column=1)
        self.busy = BusyButton(self.button)
        self.results = ttk.Frame(
            results_parent, style="Surface.TFrame", padding=(app.theme.pad, 6, app.theme.pad, 10)
        )
        self.columnconfigure(0, weight=1)
        self.rows: dict[str, ttk.Button | ttk.Label] = {}
        self.message = ttk.Label(
            self.results, style="SurfaceMuted.TLabel", wraplength=self.app.theme.px(340)
        )

    def search(self) -> None:
        text = self.query.get().strip()
        if not text or self.busy.busy:
            return
        self.busy.start(i18n.t("contacts.searching"))
        self.app.run(
            self.app.require_client().search_users,
            text,
            on_result=lambda users: self._show(text, users),
            on_error=self._failed,
        )

    def _reset_results(self, title: str) -> None:
        for child in self.results.winfo_children():
            child.destroy()
        self.rows.clear()
        header = ttk.Frame(self.results, style="Surface.TFrame")
        header.pack(fill="x")
        ttk.Label(header, text=title, style="SurfaceMuted.TLabel").pack(side="left")
        ttk.Button(header, text="\u2715", style="Link.TButton", width=2, command=self.close).pack(
            side="right"
        )
        self.message = ttk.Label(
            self.results, style="Error.TLabel", wraplength=self.app.theme.px(340)
        )
        self.results.pack(fill="x")

    def _show(self, text: str, users: list[dict[str, Any]]) -> None:
        if not alive(self):
            return
        self.busy.stop()
        self._reset_results(i18n.t("contacts.results", query=text, count=len(users)))
        me = self.app.client.username if self.app.client else ""
        for user in users:
            name = user.get("username")
            if isinstance(name, str):
                self._row(user, name, me or "")
        if not users:
            ttk.Label(
                self.results, text=i18n.t("contacts.no_results"), style="SurfaceMuted.TLabel"
            ).pack(anchor="w", pady=4)

    def _row(self, user: dict[str, Any], name: str, me: str) -> None:
        row = ttk.Frame(self.results, style="Surface.TFrame")
        row.pack(fill="x", pady=2)
        ttk.Label(row, text=name, style="Field.TLabel").pack(side="left")
        ttk.Label(row, text="  " + search_row_detail(user), style="SurfaceMuted.TLabel").pack(
            side="left"
        )
        state = search_row_state(user, me)
        widget: ttk.Button | ttk.Label
        if state == "add":
            widget = ttk.Button(row, text=i18n.t("contacts.add"), style="Primary.TButton")
            widget.configure(command=functools.partial(self._add, name, widget))
        else:
            widget = ttk.Label(
                row, text=i18n.t(f"contacts.state_{state}"), style="SurfaceMuted.TLabel"
            )
        widget.pack(side="right")
        self.rows[name] = widget

    def _add(self, name: str, button: ttk.Button) -> None:
        button.state(["disabled"])
        button.configure(text=i18n.t("contacts.sending"))

        def sent(now_friends: bool) -> None:
            if alive(button):
                key = "contacts.state_friend" if now_friends else "contacts.request_sent"
                button.configure(text=i18n.t(key))

        def failed(exc: BaseException) -> None:
            if alive(button):
                button.state(["!disabled"])
                button.configure(text=i18n.t("contacts.add"))
                self._error(describe_error(exc).message)

        self.app.run(self.app.require_client().add_friend, name, on_result=sent, on_error=failed)

    def _failed(self, exc: BaseException) -> None:
        if not alive(self):
            return
        self.busy.stop()
        self._reset_results(i18n.t("contacts.search"))
        self._error(describe_error(exc).message)

    def _error(self, message: str) -> None:
        self.message.configure(text=message)
        self.message.pack(anchor="w", pady=(4, 0))

    def close(self) -> None:
        self.results.pack_forget()
        collapse_if_empty(self.results.master)  # type: ignore[arg-type]
        self.query.set("")
        self.placeholder.update()


class RequestsPanel(ttk.Frame):
    """Incoming friend requests with Accept / Reject / Later."""

    def __init__(self, parent: tk.Misc, app: FormHost, on_change: Callable[[], object]) -> None:
        super().__init__(parent, style="Surface.TFrame", padding=(app.theme.pad, 8))
        self.app = app
        self.on_change = on_change
        self.later: set[str] = set()  # hidden for this session; the server asks again later
        self.names: list[str] = []
        self.buttons: dict[tuple[str, str], ttk.Button] = {}  # (name, "accept"...) -> button

    def show(self, names: list[str]) -> None:
        visible = [n for n in names if n not in self.later]
        if visible == self.names:
            return
        self.names = visible
        for child in self.winfo_children():
            child.destroy()
        self.buttons.clear()
        if not visible:
            self.pack_forget()
            collapse_if_empty(self.master)  # type: ignore[arg-type]
            return
        self.pack(fill="x")
        ttk.Label(self, text=i18n.t("contacts.requests_title"), style="SurfaceMuted.TLabel").pack(
            anchor="w"
        )
        for name in visible:
            self._row(name)

    def _row(self, name: str) -> None:
        p, pad = self.app.theme.palette, self.app.theme.pad
        row = tk.Frame(
            self, background=p.notice_bg, highlightthickness=1, highlightbackground="#f3d58b"
        )
        row.pack(fill="x", pady=(4, 0))
        tk.Label(
            row,
            text=i18n.t("contacts.request_from", name=name),
            background=p.notice_bg,
            foreground=p.notice_text,
            font=self.app.theme.fonts.bold,
            anchor="w",
            wraplength=self.app.theme.px(330),
            justify="left",
        ).pack(fill="x", padx=pad - 2, pady=(6, 4))
        buttons = tk.Frame(row, background=p.notice_bg)
        buttons.pack(fill="x", padx=pad - 2, pady=(0, 8))
        for label, decision, style in (
            ("accept", True, "Primary.TButton"),
            ("reject", False, "Danger.TButton"),
            ("later", None, "TButton"),
        ):
            button = ttk.Button(buttons, text=i18n.t(f"contacts.{label}"), style=style)
            button.configure(command=functools.partial(self._answer, name, decision, buttons))
            button.pack(side="left", padx=(0, 6))
            self.buttons[(name, label)] = button

    def _answer(self, name: str, decision: bool | None, buttons: tk.Frame) -> None:
        for child in buttons.winfo_children():
            if isinstance(child, ttk.Button):
                child.state(["disabled"])

        def done(_: object) -> None:
            if decision is None:
                self.later.add(name)
            self.on_change()

        def failed(exc: BaseException) -> None:
            if alive(buttons):
                for child in buttons.winfo_children():
                    if isinstance(child, ttk.Button):
                        child.state(["!disabled"])
                ttk.Label(buttons, text=describe_error(exc).message, style="Error.TLabel").pack(
                    side="left"
                )

        self.app.run(
            self.app.require_client().answer_friend_request,
            name,
            decision,
            on_result=done,
            on_error=failed,
        )


class ActionPanel(ttk.Frame):
    """The inline form behind the toolbar buttons: one entry, one confirm button."""

    def __init__(
        self, parent: tk.Misc, app: FormHost, on_done: Callable[[Contact | None], object]
    ) -> None:
        pad = app.theme.pad
        super().__init__(parent, style="Surface.TFrame", padding=(pad, 10))
        self.app = app
        self.on_done = on_done
        self.action: Action | None = None
        self.prompt = ttk.Label(self, style="Field.TLabel")
        self.prompt.grid(row=0, column=0, columnspan=3, sticky="w", pady=(0, 4))
        self.value = tk.StringVar(self)
        self.entry = ttk.Entry(self, textvariable=self.value)
        self.entry.grid(row=1, column=0, sticky="ew", padx=(0, 6))
        self.entry.bind("<Return>", lambda _e: self.submit())
        self.entry.bind("<Escape>", lambda _e: self.close())
        self.confirm = ttk.Button(self, style="Primary.TButton", command=self.submit, width=0)
        self.confirm.grid(row=1, column=1, padx=(0, 6))
        ttk.Button(self, text=i18n.t("common.cancel"), command=self.close, width=0).grid(
            row=1, column=2
        )
        self.busy = BusyButton(self.confirm)
        self.message = ttk.Label(
            self, style="Error.TLabel", wraplength=self.app.theme.px(360), justify="left"
        )
        self.message.grid(row=2, column=0, columnspan=3, sticky="w", pady=(6, 0))
        self.result = ttk.Entry(self, state="readonly", font=app.theme.fonts.heading, width=12)
        self.result.grid(row=3, column=0, sticky="w", pady=(4, 0))
        self.result.grid_remove()
        # A new group's join policy, signed into its create event (creating only).
        self.policy = tk.StringVar(self, value="open")
        self.policies = ttk.Frame(self, style="Surface.TFrame")
        for value in ("open", "approval"):
            ttk.Radiobutton(
                self.policies,
                text=i18n.t(f"action.create_group.policy_{value}"),
                variable=self.policy,
                value=value,
            ).pack(anchor="w")
        self.policies.grid(row=4, column=0, columnspan=3, sticky="w", pady=(6, 0))
        self.policies.grid_remove()
        self.columnconfigure(0, weight=1)

    def open(self, action: Action, prefill: str = "") -> None:
        self.action = action
        self.prompt.configure(text=i18n.t(f"action.{action.value}.prompt"))
        self.confirm.configure(text=i18n.t(f"action.{action.value}.confirm"))
        self.confirm.configure(
            style="Danger.TButton" if action is Action.DELETE_FRIEND else "Primary.TButton"
        )
        self.value.set(prefill)
        self._say("", error=True)
        self.result.grid_remove()
        self.policy.set("open")
        if action is Action.CREATE_GROUP:
            self.policies.grid()
        else:
            self.policies.grid_remove()
        self.grid()
        self.entry.focus_set()
        self.entry.icursor("end")

    def close(self) -> None:
        self.action = None
        self.grid_remove()

    def _say(self, text: str, error: bool) -> None:
        self.message.configure(text=text, style="Error.TLabel" if error else "Success.TLabel")

    def submit(self) -> None:
        action = self.action
        if action is None or self.busy.busy:
            return
        try:
            argument = parse_action_input(action, self.value.get())
        except InputError as exc:
            self._say(str(exc), error=True)
            return
        client = self.app.require_client()
        policy = self.policy.get()
        calls: dict[Action, Callable[..., Any]] = {
            Action.ADD_FRIEND: client.add_friend,
            Action.DELETE_FRIEND: client.delete_friend,
            Action.CREATE_GROUP: lambda name: client.create_room(name, policy),
            Action.JOIN_GROUP: client.join_room,
        }
        self._say("", error=True)
        self.busy.start(i18n.t("common.working"))
        self.app.run(
            calls[action],
            argument,
            on_result=lambda r: self._succeeded(action, argument, r),
            on_error=self._failed,
        )

    def _succeeded(self, action: Action, argument: str | int, result: object) -> None:
        if not alive(self):
            return
        self.busy.stop()
        contact = result if isinstance(result, Contact) else None
        name = contact.name if contact else str(argument)
        number = contact.id if contact else str(argument)
        done = f"action.{action.value}.done"
        if action is Action.ADD_FRIEND and result is True:  # they had asked us already
            done = "action.add_friend.accepted"
        self._say(i18n.t(done, name=name, number=number), error=False)
        self.value.set("")
        if action is Action.CREATE_GROUP and contact is not None:
            self.result.configure(state="normal")
            self.result.delete(0, "end")
            self.result.insert(0, contact.id)
            self.result.configure(state="readonly")
            self.result.grid()
        self.on_done(contact)

    def _failed(self, exc: BaseException) -> None:
        if alive(self):
            self.busy.stop()
            # A join request sent to a group's admins is good news, not an error.
            pending = isinstance(exc, JoinPending)
            self._say(describe_error(exc).message, error=not pending)
            if pending:
                self.value.set("")

    @property
    def message_text(self) -> str:
        return str(self.message.cget("text"))
