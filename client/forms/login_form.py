"""The login window: username, password, server address; Login and a Register link.

Empty fields are reported before anything is sent; server and connection errors
appear inline under the field they concern (a server pin mismatch under the server).
"""

from __future__ import annotations

import contextlib
import tkinter as tk
from tkinter import ttk
from typing import TYPE_CHECKING

from client import i18n
from client.components.busy import BusyButton, alive
from client.components.field import Field
from client.core.models import Profile
from client.forms.device_link_form import NewComputerLink
from client.forms.errors import describe_error
from client.forms.identity_import import IdentityImport
from client.forms.login import (
    AddressError,
    ServerAddress,
    missing_login_fields,
    parse_server_address,
)
from common.errors import UchatError

if TYPE_CHECKING:
    from client.core.client import ChatClient
    from client.forms.host import FormHost


class LoginForm(ttk.Frame):
    def __init__(
        self,
        parent: tk.Misc,
        app: FormHost,
        notice: str = "",
        warning: bool = False,
        username: str = "",
    ) -> None:
        super().__init__(parent, style="TFrame")
        self.app = app
        pad = app.theme.pad
        card = ttk.Frame(self, style="Surface.TFrame", padding=(pad * 2, pad * 2))
        card.place(relx=0.5, rely=0.5, anchor="center", relwidth=0.86)
        self.card = card
        # Builders run in grid-row order; Tk also names widgets by creation order.
        self._build_heading(card)
        self._build_notice(card, notice, warning)
        self._build_fields(card, username)
        self._build_submit_area(card)
        self._build_register_link(card)
        self._build_identity_import(card)
        self._build_device_link(card)
        card.columnconfigure(0, weight=1)

    def _build_heading(self, card: ttk.Frame) -> None:
        """Rows 0-1: the app name in the brand colour and the subtitle."""
        palette = self.app.theme.palette
        ttk.Label(
            card,
            text=i18n.t("app.name"),
            style="Title.TLabel",
            background=palette.surface,
            foreground=palette.primary,
        ).grid(row=0, column=0, sticky="w")
        ttk.Label(card, text=i18n.t("login.subtitle"), style="SurfaceMuted.TLabel").grid(
            row=1, column=0, sticky="w", pady=(0, self.app.theme.pad)
        )

    def _build_notice(self, card: ttk.Frame, notice: str, warning: bool) -> None:
        """Row 2: why we are back here (e.g. logged in elsewhere); hidden when empty."""
        pad = self.app.theme.pad
        self.notice = tk.Label(
            card,
            text=notice,
            wraplength=self.app.theme.px(320),
            justify="left",
            anchor="w",
            padx=pad // 2,
            pady=pad // 2,
            font=self.app.theme.fonts.small,
        )
        self._paint_notice(notice, warning)
        self.notice.grid(row=2, column=0, sticky="ew", pady=(0, pad))
        if not notice:
            self.notice.grid_remove()

    def _build_fields(self, card: ttk.Frame, username: str) -> None:
        """Rows 3-5: username, password, server; Return in any of them submits."""
        self.username = Field(card, i18n.t("field.username"))
        self.password = Field(card, i18n.t("field.password"), show="\u2022")
        self.server = Field(card, i18n.t("field.server"), hint=i18n.t("login.server_hint"))
        self.username.set_value(username)
        self.server.set_value(str(self.app.server_address))
        for row, field in enumerate((self.username, self.password, self.server), start=3):
            field.grid(row=row, column=0, sticky="ew", pady=(0, self.app.theme.pad))
            field.entry.bind("<Return>", lambda _e: self.submit())

    def _build_submit_area(self, card: ttk.Frame) -> None:
        """Rows 6-8: errors that belong to no field, Login, and its busy bar."""
        self.general_error = ttk.Label(
            card, style="Error.TLabel", wraplength=self.app.theme.px(320), justify="left"
        )
        self.general_error.grid(row=6, column=0, sticky="ew")
        self.general_error.grid_remove()
        self.login_button = ttk.Button(
            card, text=i18n.t("login.submit"), style="Primary.TButton", command=self.submit
        )
        self.login_button.grid(
            row=7, column=0, sticky="ew", pady=(self.app.theme.pad // 2, 4), ipady=4
        )
        bar = ttk.Progressbar(card, mode="indeterminate")
        bar.grid(row=8, column=0, sticky="ew")
        self.busy_bar = bar
        self.busy = BusyButton(self.login_button, bar)

    def _build_register_link(self, card: ttk.Frame) -> None:
        """Row 9: "No account?" and the link to the register form."""
        links = ttk.Frame(card, style="Surface.TFrame")
        links.grid(row=9, column=0, pady=(self.app.theme.pad, 0))
        self.links_row = links
        ttk.Label(links, text=i18n.t("login.no_account"), style="SurfaceMuted.TLabel").pack(
            side="left"
        )
        self.register_link = ttk.Button(
            links,
            text=i18n.t("login.register_link"),
            style="Link.TButton",
            command=self.show_register,
            cursor="hand2",
        )
        self.register_link.pack(side="left")

    def _build_identity_import(self, card: ttk.Frame) -> None:
        """Rows 10-11: "Import identity file…" and, once a file is chosen, its panel."""
        self.import_link = ttk.Button(
            card,
            text=i18n.t("identity.import_link"),
            style="Link.TButton",
            command=self.start_import,
            cursor="hand2",
        )
        self.import_link.grid(row=10, column=0, pady=(self.app.theme.pad // 2, 0))
        self.identity = IdentityImport(card, self.app, self._credentials, self._login_with)
        self.identity.grid(row=11, column=0, sticky="ew", pady=(self.app.theme.pad // 2, 0))
        self.identity.grid_remove()

    def _build_device_link(self, card: ttk.Frame) -> None:
        """Rows 12-13: "Link from a computer where you are logged in…" and its panel."""
        self.link_link = ttk.Button(
            card,
            text=i18n.t("link.new_link"),
            style="Link.TButton",
            command=self.start_link,
            cursor="hand2",
        )
        self.link_link.grid(row=12, column=0, pady=(self.app.theme.pad // 2, 0))
        self.device_link = NewComputerLink(
            card,
            self.app,
            self._credentials,
            self._linked,
            on_code_shown=self._show_fields_for_link,
            on_back=self.leave_link,
        )
        self.device_link.grid(row=13, column=0, sticky="ew", pady=(self.app.theme.pad // 2, 0))
        self.device_link.grid_remove()
        self._hidden_for_link: list[tk.Widget] = []

    def start_link(self) -> None:
        """Link mode: only the fields and the link panel, so it fits at 192 dpi too."""
        others: tuple[tk.Widget, ...] = (
            self.notice,
            self.general_error,
            self.login_button,
            self.busy_bar,
            self.links_row,
            self.import_link,
            self.identity,
            self.link_link,
        )
        self._hidden_for_link = [w for w in others if w.winfo_manager() == "grid"]
        for widget in self._hidden_for_link:
            widget.grid_remove()
        self.device_link.grid()
        self.device_link.code_button.focus_set()

    def _show_fields_for_link(self, shown: bool) -> None:
        """While a code is shown, the fields it was asked with step aside."""
        for field in (self.username, self.password, self.server):
            if shown:
                field.grid_remove()
            else:
                field.grid()

    def _linked(self, client: ChatClient, username: str, password: str) -> None:
        """The identity arrived: back to the ordinary form, saying so, and log in.

        If the password was mistyped, its error shows under the field as usual and the
        identity waits in memory for the next Login.
        """
        self.leave_link()
        self._paint_notice(i18n.t("link.received"), warning=False)
        self.notice.grid()
        self._login_with(client, username, password)

    def leave_link(self) -> None:
        """Back from link mode to the ordinary login form."""
        self._show_fields_for_link(False)
        self.device_link.grid_remove()
        for widget in self._hidden_for_link:
            widget.grid()
        self._hidden_for_link = []

    def start_import(self) -> None:
        if self.identity.choose():
            self.identity.grid()
            self.identity.passphrase.focus_entry()

    def _credentials(self) -> tuple[ChatClient, str, str] | None:
        """The client and the typed username and password, or None (fields marked)."""
        self._clear_errors()
        username, password = self.username.value.strip(), self.password.value
        problems = missing_login_fields(username, password)
        try:
            address = parse_server_address(self.server.value, self.app.settings.port)
        except AddressError as exc:
            problems["server"] = str(exc)
        if problems:
            for name, message in problems.items():
                getattr(self, name).set_error(message)
            return None
        try:
            return self.app.connect_client(address), username, password
        except (UchatError, OSError) as exc:
            self._failed(exc)
            return None

    def _login_with(self, client: ChatClient, username: str, password: str) -> None:
        self.busy.start(i18n.t("login.busy"))
        self.app.run(
            client.login, username, password, on_result=self._logged_in, on_error=self._failed
        )

    def _paint_notice(self, text: str, warning: bool) -> None:
        p = self.app.theme.palette
        bg, fg = (p.warning_bg, p.warning_text) if warning else (p.hover, p.primary_active)
        self.notice.configure(text=text, background=bg, foreground=fg)

    def focus_first(self) -> None:
        target = self.password if self.username.value else self.username
        target.focus_entry()

    # ------------------------------------------------------------------ actions

    def show_register(self) -> None:
        # an unusable address keeps the last good one; the register form shows which
        with contextlib.suppress(AddressError):
            self.app.server_address = parse_server_address(
                self.server.value, self.app.settings.port
            )
        self.app.show_register()

    def _clear_errors(self) -> None:
        for field in (self.username, self.password, self.server):
            field.set_error("")
        self.general_error.configure(text="")
        self.general_error.grid_remove()

    def _show_general(self, message: str) -> None:
        self.general_error.configure(text=message)
        self.general_error.grid()

    def submit(self) -> None:
        if self.busy.busy:
            return
        self._clear_errors()
        username, password = self.username.value.strip(), self.password.value
        problems = missing_login_fields(username, password)
        address: ServerAddress | None = None
        try:
            address = parse_server_address(self.server.value, self.app.settings.port)
        except AddressError as exc:
            problems["server"] = str(exc)
        if problems or address is None:
            for name, message in problems.items():
                getattr(self, name).set_error(message)
            return
        try:
            client = self.app.connect_client(address)
        except (UchatError, OSError) as exc:  # e.g. an unreadable data folder
            self._failed(exc)
            return
        self._login_with(client, username, password)

    def _logged_in(self, _profile: Profile) -> None:
        if alive(self):
            self.app.show_contacts()

    def _failed(self, exc: BaseException) -> None:
        if not alive(self):
            return
        self.busy.stop()
        problem = describe_error(exc, str(self.app.server_address))
        fields = {"username": self.username, "password": self.password, "server": self.server}
        field = fields.get(problem.field or "")
        if field is not None:
            field.set_error(problem.message)
        else:
            self._show_general(problem.message)
        if problem.field == "server":
            self.app.drop_client()  # the next attempt builds a fresh connection

    # tests and scripts read what the user would see
    def errors(self) -> dict[str, str]:
        return {
            "username": self.username.error_text,
            "password": self.password.error_text,
            "server": self.server.error_text,
            "general": str(self.general_error.cget("text")),
        }
