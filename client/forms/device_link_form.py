"""Linking a computer, on screen: the new computer's panel and the old computer's window.

New computer (login form): Get code shows eight digits; when the logged-in computer
has typed them, both screens show six digits to compare; "They match" on both moves
the identity, and the login form logs in (which signs the other computer out, as the
panel says). Old computer (⋯ → Link a new computer, a window): type the code,
compare, confirm. The work runs on the client's threads; this module only reacts to
`Link*` events on the Tk thread. Texts and the code check: `device_link.py`.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import ttk
from typing import TYPE_CHECKING

from client import i18n
from client.components.busy import alive
from client.components.field import Field
from client.components.layout import text_width
from client.core.event_types import Event, LinkCompare, LinkFailed, LinkFinished, LinkJoined
from client.forms.device_link import check_code, failure_text, format_code
from client.forms.errors import describe_error

if TYPE_CHECKING:
    from client.core.client import ChatClient
    from client.forms.host import FormHost

Credentials = Callable[[], "tuple[ChatClient, str, str] | None"]  # client, username, password


class CompareArea(ttk.Frame):
    """The six digits, what to do with them, and the two answers."""

    def __init__(self, parent: tk.Misc, app: FormHost, on_answer: Callable[[bool], None]) -> None:
        super().__init__(parent, style="Surface.TFrame")
        self.sas = ttk.Label(self, style="Surface.TLabel", font=app.theme.fonts.title)
        self.sas.grid(row=0, column=0, columnspan=2, sticky="w")
        self.text = ttk.Label(
            self, text=i18n.t("link.compare"), style="SurfaceMuted.TLabel", justify="left"
        )
        self.text.grid(row=1, column=0, columnspan=2, sticky="w", pady=(2, 4))
        self.match_button = ttk.Button(
            self, text=i18n.t("link.match"), style="Primary.TButton", command=lambda: answer(True)
        )
        self.differ_button = ttk.Button(
            self, text=i18n.t("link.differ"), command=lambda: answer(False)
        )
        self.match_button.grid(row=2, column=0, sticky="ew", padx=(0, 4))
        self.differ_button.grid(row=2, column=1, sticky="ew")
        self.columnconfigure(0, weight=1)
        self.columnconfigure(1, weight=1)

        def answer(match: bool) -> None:
            for button in (self.match_button, self.differ_button):
                button.state(["disabled"])
            on_answer(match)

    def show(self, sas: str) -> None:
        self.sas.configure(text=sas)
        for button in (self.match_button, self.differ_button):
            button.state(["!disabled"])


class _LinkFrame(ttk.Frame):
    """What both panels share: listening to `Link*` events while alive, the status line."""

    def __init__(
        self,
        parent: tk.Misc,
        app: FormHost,
        on_finished: Callable[[LinkFinished], None],
        inset: int,
        wrap: int,
    ) -> None:
        pad = app.theme.pad
        super().__init__(parent, style="Surface.TFrame", padding=(inset, max(inset, pad // 2)))
        self.app = app
        self._inset = inset
        self.client: ChatClient | None = None
        #: True from a code asked or entered until the link finished or failed.
        self.linking = False
        #: Widgets hidden while the short code is compared (set by each panel).
        self.aside: list[tk.Widget] = []
        self._on_finished = on_finished
        self.status = ttk.Label(self, style="SurfaceMuted.TLabel", justify="left")
        self.compare = CompareArea(self, app, self._answer)
        #: Labels whose lines wrap at the panel's own width (whatever the scaling).
        self.wrapping: list[ttk.Label] = [self.status, self.compare.text]
        self._wrap = wrap
        app.subscribe(self._on_event)
        self.bind("<Destroy>", self._destroyed, add="+")
        self.bind("<Configure>", self._rewrap, add="+")

    def _start_wrapping(self) -> None:
        """Before the first layout: wrap at the width the panel is meant to have."""
        for label in self.wrapping:
            label.configure(wraplength=self._wrap)

    def _rewrap(self, event: tk.Event[tk.Misc]) -> None:
        if event.widget is not self:
            return
        width = max(event.width - 2 * self._inset, self.app.theme.px(120))
        for label in self.wrapping:
            if int(str(label.cget("wraplength")) or 0) != width:
                label.configure(wraplength=width)

    def _destroyed(self, event: tk.Event[tk.Misc]) -> None:
        if event.widget is self:
            self.app.unsubscribe(self._on_event)
            client = self.client
            if client is not None and self.linking and self.app.client is client:
                self.app.run(client.cancel_link)  # closed half-way: tell the other side

    def say(self, text: str, style: str = "SurfaceMuted.TLabel") -> None:
        self.status.configure(text=text, style=style)

    def _answer(self, match: bool) -> None:
        client = self.client
        if client is None:
            return
        if match:
            self.say(i18n.t("link.waiting_other"))
        self.app.run(client.confirm_link, match, on_error=self._failed)

    def _failed(self, exc: BaseException) -> None:
        if alive(self):
            self.compare.grid_remove()
            self.say(describe_error(exc).message, "Error.TLabel")

    def _on_event(self, event: Event) -> None:
        if not alive(self) or self.client is None:
            return
        if isinstance(event, LinkJoined):
            self.say(i18n.t("link.joined", address=event.address))
        elif isinstance(event, LinkCompare):
            self._comparing(True)
            self.compare.show(event.sas)
            self.compare.grid()
        elif isinstance(event, LinkFailed):
            self.linking = False
            self.compare.grid_remove()
            self.say(failure_text(event.reason), "Error.TLabel")
            self._ended()
        elif isinstance(event, LinkFinished):
            self.linking = False
            self.compare.grid_remove()
            self._on_finished(event)

    def _ended(self) -> None:
        """After a failure: the panel lets the user start again (each panel says how)."""
        self.linking = False
        self._comparing(False)

    def _comparing(self, shown: bool) -> None:
        """`aside` steps aside while the six digits are shown (so it fits at 192 dpi)."""
        for widget in self.aside:
            if shown:
                widget.grid_remove()
            else:
                widget.grid()


class NewComputerLink(_LinkFrame):
    """On the login form: get a code, compare, then log in with the identity received."""

    def __init__(
        self,
        parent: tk.Misc,
        app: FormHost,
        credentials: Credentials,
        on_linked: Callable[[ChatClient, str, str], object],
        on_code_shown: Callable[[bool], None],
        on_back: Callable[[], None],
    ) -> None:
        super().__init__(parent, app, self._finished, inset=0, wrap=app.theme.px(320))
        self._credentials = credentials
        self._on_linked = on_linked
        self._on_code_shown = on_code_shown
        self._on_back = on_back
        self._login: tuple[str, str] | None = None
        self.explain = ttk.Label(
            self, text=i18n.t("link.new_explain"), style="SurfaceMuted.TLabel", justify="left"
        )
        self.explain.grid(row=0, column=0, sticky="w")
        buttons = ttk.Frame(self, style="Surface.TFrame")
        buttons.grid(row=1, column=0, sticky="ew", pady=(4, 0))
        self.code_button = ttk.Button(
            buttons, text=i18n.t("link.get_code"), style="Primary.TButton", command=self.start
        )
        self.back_button = ttk.Button(buttons, text=i18n.t("common.cancel"), command=self.back)
        self.code_button.grid(row=0, column=0, sticky="ew", padx=(0, 4))
        self.back_button.grid(row=0, column=1, sticky="ew")
        buttons.columnconfigure(0, weight=1)
        buttons.columnconfigure(1, weight=1)
        self.code_label = ttk.Label(self, style="SurfaceMuted.TLabel", justify="left")
        self.code = ttk.Label(self, style="Surface.TLabel", font=app.theme.fonts.title)
        self.code_label.grid(row=2, column=0, sticky="w", pady=(4, 0))
        self.code.grid(row=3, column=0, sticky="w")
        self.status.grid(row=4, column=0, sticky="ew", pady=(4, 0))
        self.compare.grid(row=5, column=0, sticky="ew", pady=(4, 0))
        for hidden in (self.code_label, self.code, self.compare):
            hidden.grid_remove()
        self.aside = [self.code_label, self.code]
        self.wrapping += [self.explain, self.code_label]
        self._start_wrapping()
        self.columnconfigure(0, weight=1)

    def start(self) -> None:
        found = self._credentials()
        if found is None:
            return  # the login form marked what is missing
        client, username, password = found
        self.client = client
        self._login = (username, password)
        self.code_button.state(["disabled"])
        self.compare.grid_remove()
        self.say("")
        self.linking = True
        self.app.run(client.start_link, username, on_result=self._got_code, on_error=self._refused)

    def _got_code(self, result: tuple[str, int]) -> None:
        if not alive(self):
            return
        code, seconds = result
        self.code_label.configure(text=i18n.t("link.code_is", minutes=max(1, seconds // 60)))
        self.code.configure(text=format_code(code))
        self.code_label.grid()
        self.code.grid()
        self.explain.grid_remove()
        self._on_code_shown(True)

    def back(self) -> None:
        """Cancel: stop a link in progress and return to the login form."""
        client = self.client
        if client is not None and self.linking:
            self.app.run(client.cancel_link)
        self.linking = False
        self._reset()
        self.say("")
        self._on_back()

    def _reset(self) -> None:
        self.code_button.state(["!disabled"])
        self.code_label.grid_remove()
        self.code.grid_remove()
        self.compare.grid_remove()
        self.explain.grid()
        self._on_code_shown(False)

    def _refused(self, exc: BaseException) -> None:
        self.linking = False
        if alive(self):
            self.code_button.state(["!disabled"])
            self.say(describe_error(exc).message, "Error.TLabel")

    def _ended(self) -> None:
        super()._ended()
        self._reset()

    def _finished(self, event: LinkFinished) -> None:
        client, login = self.client, self._login
        if event.role != "new" or client is None or login is None:
            return
        self._reset()
        self.say(i18n.t("link.received"), "Success.TLabel")
        self._on_linked(client, *login)

    @property
    def shown_code(self) -> str:
        return str(self.code.cget("text")) if self.code.winfo_ismapped() else ""


class LinkWindow(tk.Toplevel):
    """⋯ → Link a new computer: a small window of its own, sized by its text.

    A window rather than a strip in the sidebar: at 192 dpi on a 768-pixel screen the
    code, the digits and the answers do not fit above the contact list.
    """

    def __init__(self, app: FormHost) -> None:
        super().__init__(app.root, background=app.theme.palette.surface)
        self.title(i18n.t("link.old_link").rstrip("…."))
        self.transient(app.root)
        body = app.theme.fonts.body
        width = min(text_width(self, body, 40), self.winfo_screenwidth() * 9 // 10)
        self.panel = OldComputerLink(self, app, width - 2 * app.theme.pad)
        self.panel.pack(fill="both", expand=True)
        self.protocol("WM_DELETE_WINDOW", self.panel.close)
        self.bind("<Escape>", lambda _e: self.panel.close())
        x = app.root.winfo_rootx() + app.theme.px(40)
        y = app.root.winfo_rooty() + app.theme.px(40)
        self.geometry(f"+{x}+{y}")


class OldComputerLink(_LinkFrame):
    """In its window: type the new computer's code, compare, send."""

    def __init__(self, parent: tk.Misc, app: FormHost, wrap: int) -> None:
        super().__init__(parent, app, self._finished, inset=app.theme.pad, wrap=wrap)
        self.client = app.client
        self.explain = ttk.Label(
            self, text=i18n.t("link.old_explain"), style="SurfaceMuted.TLabel", justify="left"
        )
        self.explain.grid(row=0, column=0, columnspan=2, sticky="w")
        self.code = Field(self, i18n.t("link.code"))
        self.code.grid(row=1, column=0, columnspan=2, sticky="ew", pady=(4, 4))
        self.code.entry.bind("<Return>", lambda _e: self.submit())
        self.status.grid(row=2, column=0, columnspan=2, sticky="ew")
        self.compare.grid(row=3, column=0, columnspan=2, sticky="ew", pady=(4, 0))
        self.compare.grid_remove()
        self.continue_button = ttk.Button(
            self, text=i18n.t("link.continue"), style="Primary.TButton", command=self.submit
        )
        self.continue_button.grid(row=4, column=0, sticky="ew", padx=(0, 4), pady=(4, 0))
        self.close_button = ttk.Button(self, text=i18n.t("common.cancel"), command=self.close)
        self.close_button.grid(row=4, column=1, sticky="ew", pady=(4, 0))
        self.columnconfigure(0, weight=1)
        self.columnconfigure(1, weight=1)
        self.aside = [self.explain, self.code, self.continue_button]
        self.wrapping.append(self.explain)
        self._start_wrapping()

    def submit(self) -> None:
        client = self.client
        if client is None:
            return
        try:
            digits = check_code(self.code.value)
        except ValueError as exc:
            self.code.set_error(str(exc))
            return
        self.code.set_error("")
        self.say("")
        self.continue_button.state(["disabled"])
        self.linking = True
        self.app.run(client.join_link, digits, on_result=self._joined, on_error=self._refused)

    def _joined(self, address: str) -> None:
        if alive(self):
            self.say(i18n.t("link.joined", address=address))

    def _refused(self, exc: BaseException) -> None:
        self.linking = False
        if alive(self):
            self.continue_button.state(["!disabled"])
            self.code.set_error(describe_error(exc).message)
            self.code.focus_entry()

    def _ended(self) -> None:
        super()._ended()
        self.continue_button.state(["!disabled"])

    def _finished(self, event: LinkFinished) -> None:
        if event.role != "old":
            return
        self.say(i18n.t("link.sent"), "Success.TLabel")
        self.close_button.configure(text=i18n.t("common.dismiss"))

    def close(self) -> None:
        self.winfo_toplevel().destroy()
