"""The registration window: username, password twice, email, sex, age.

Each field is checked as soon as the user leaves it (and then on every key), with the
message right under it; the server's refusals (`username_taken`, `email_taken`...)
land under the field they name. On success the new account logs straight in.
"""

from __future__ import annotations

import functools
import tkinter as tk
from tkinter import ttk
from typing import TYPE_CHECKING

from client import i18n
from client.components.busy import BusyButton, alive
from client.components.field import Field
from client.components.vertical_scrolled_frame import VerticalScrolledFrame
from client.core.models import Profile
from client.forms.errors import describe_error
from client.forms.register import (
    FIELDS,
    Registration,
    check_registration,
    field_errors,
    sex_choices,
)
from common.errors import UchatError

if TYPE_CHECKING:
    from client.forms.host import FormHost

DEFAULT_AGE = "20"


class RegisterForm(ttk.Frame):
    def __init__(self, parent: tk.Misc, app: FormHost) -> None:
        super().__init__(parent, style="TFrame")
        self.app = app
        self.touched: set[str] = set()
        self._registration: Registration | None = None
        pad = app.theme.pad
        # The card scrolls, and is anchored at the top: error lines appearing under a
        # field push only what is below it, so nothing moves under the pointer.
        self.scroller = VerticalScrolledFrame(self, background=app.theme.palette.window)
        self.scroller.pack(fill="both", expand=True)
        card = ttk.Frame(self.scroller.interior, style="Surface.TFrame", padding=(pad * 2, pad + 4))
        card.pack(fill="x", padx=pad * 2, pady=pad * 2)
        self.card = card
        ttk.Label(
            card,
            text=i18n.t("register.title"),
            style="Title.TLabel",
            background=app.theme.palette.surface,
        ).grid(row=0, column=0, sticky="w")
        ttk.Label(
            card,
            text=i18n.t("register.server", server=str(app.server_address)),
            style="SurfaceMuted.TLabel",
        ).grid(row=1, column=0, sticky="w", pady=(0, pad))
        self.fields: dict[str, Field] = {
            "username": Field(
                card, i18n.t("field.username"), hint=i18n.t("register.username_hint")
            ),
            "password": Field(
                card, i18n.t("field.password"), show="\u2022", hint=i18n.t("register.password_hint")
            ),
            "confirm": Field(card, i18n.t("field.confirm"), show="\u2022"),
            "email": Field(card, i18n.t("field.email")),
        }
        row = 2
        for name in ("username", "password", "confirm", "email"):
            self.fields[name].grid(row=row, column=0, sticky="ew", pady=(0, pad // 2 + 2))
            row += 1
        self.fields["sex"] = self._sex_field(card)
        self.fields["sex"].grid(row=row, column=0, sticky="ew", pady=(0, pad // 2 + 2))
        self.fields["age"] = self._age_field(card)
        self.fields["age"].grid(row=row + 1, column=0, sticky="ew", pady=(0, pad // 2 + 2))
        self.general_error = ttk.Label(card, style="Error.TLabel", wraplength=app.theme.px(340))
        self.general_error.grid(row=row + 2, column=0, sticky="ew")
        self.general_error.grid_remove()
        self.submit_button = ttk.Button(
            card, text=i18n.t("register.submit"), style="Primary.TButton", command=self.submit
        )
        self.submit_button.grid(row=row + 3, column=0, sticky="ew", pady=(pad // 2, 4), ipady=4)
        bar = ttk.Progressbar(card, mode="indeterminate")
        bar.grid(row=row + 4, column=0, sticky="ew")
        self.busy = BusyButton(self.submit_button, bar)
        self.back_link = ttk.Button(
            card,
            text=i18n.t("register.back"),
            style="Link.TButton",
            command=self.back,
            cursor="hand2",
        )
        self.back_link.grid(row=row + 5, column=0, pady=(pad // 2, 0))
        card.columnconfigure(0, weight=1)
        self._bind_validation()

    def _sex_field(self, card: ttk.Frame) -> Field:
        field = Field(card, i18n.t("field.sex"))
        field.entry.grid_remove()  # radio buttons instead of the entry
        choices = ttk.Frame(field, style="Surface.TFrame")
        choices.grid(row=1, column=0, sticky="w")
        self.sex_buttons: dict[str, ttk.Radiobutton] = {}
        for sex in sex_choices():
            button = ttk.Radiobutton(
                choices,
                text=i18n.t(f"sex.{sex}"),
                value=sex,
                variable=field.var,
                command=lambda: self._touch("sex"),
            )
            button.pack(side="left", padx=(0, 16))
            self.sex_buttons[sex] = button
        return field

    def _age_field(self, card: ttk.Frame) -> Field:
        def spinbox(parent: tk.Misc) -> ttk.Entry:
            return ttk.Spinbox(
                parent, from_=1, to=150, increment=1, width=8, command=lambda: self._touch("age")
            )

        field = Field(card, i18n.t("field.age"), make_widget=spinbox)
        field.entry.grid_configure(sticky="w")
        field.set_value(DEFAULT_AGE)
        return field

    def _bind_validation(self) -> None:
        for name in FIELDS:
            entry = self.fields[name].entry
            entry.bind("<FocusOut>", functools.partial(self._touch_event, name), add="+")
            entry.bind("<KeyRelease>", lambda _e: self._revalidate(), add="+")
            entry.bind("<Return>", lambda _e: self.submit(), add="+")

    def focus_first(self) -> None:
        self.fields["username"].focus_entry()

    def values(self) -> dict[str, str]:
        return {name: self.fields[name].value for name in FIELDS}

    def _touch_event(self, name: str, _event: object) -> None:
        self._touch(name)

    def _touch(self, name: str) -> None:
        if not alive(self):
            return
        self.touched.add(name)
        if name == "password" and self.fields["confirm"].value:
            self.touched.add("confirm")
        self._revalidate()

    def _revalidate(self) -> None:
        errors = field_errors(self.values(), self.touched)
        for name in FIELDS:
            self.fields[name].set_error(errors.get(name, ""))

    # ------------------------------------------------------------------ actions

    def back(self) -> None:
        self.app.show_login(username=self.fields["username"].value.strip())

    def submit(self) -> None:
        if self.busy.busy:
            return
        self.general_error.grid_remove()
        self.touched.update(FIELDS)
        self._revalidate()
        checked = check_registration(self.values())
        if not isinstance(checked, Registration):
            self._show_problem(checked.field, checked.message)
            return
        self._registration = checked
        try:
            client = self.app.connect_client(self.app.server_address)
        except (UchatError, OSError) as exc:  # e.g. an unreadable data folder
            self._failed(exc)
            return
        self.busy.start(i18n.t("register.busy"))
        self.app.run(
            client.register,
            checked.username,
            checked.password,
            checked.email,
            checked.sex,
            checked.age,
            on_result=self._registered,
            on_error=self._failed,
        )

    def _registered(self, _result: object) -> None:
        registration = self._registration
        if not alive(self) or registration is None or self.app.client is None:
            return
        self.busy.button.configure(text=i18n.t("register.logging_in"))
        client = self.app.client
        self.app.run(
            client.login,
            registration.username,
            registration.password,
            on_result=self._logged_in,
            on_error=self._login_failed,
        )

    def _logged_in(self, _profile: Profile) -> None:
        if alive(self):
            self.app.show_contacts()

    def _login_failed(self, exc: BaseException) -> None:
        """Registered, but the login after it failed: the login form takes over."""
        if not alive(self):
            return
        problem = describe_error(exc, str(self.app.server_address))
        username = self._registration.username if self._registration else ""
        self.app.show_login(notice=problem.message, warning=True, username=username)

    def _failed(self, exc: BaseException) -> None:
        if not alive(self):
            return
        self.busy.stop()
        problem = describe_error(exc, str(self.app.server_address))
        self._show_problem(problem.field, problem.message)
        if problem.field == "server":
            self.app.drop_client()

    def _show_problem(self, field: str | None, message: str) -> None:
        target = self.fields.get(field or "")
        if target is not None:
            target.set_error(message)
            target.focus_entry()
        else:
            self.general_error.configure(text=message)
            self.general_error.grid()

    def errors(self) -> dict[str, str]:
        found = {name: self.fields[name].error_text for name in FIELDS}
        found["general"] = str(self.general_error.cget("text"))
        return found
