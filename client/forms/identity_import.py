"""On the login form: bring your identity from another computer.

The user picks the identity file exported on the first computer, types the passphrase
chosen for it, and logs in with the account's username and password as usual: the
keys are stored here sealed under that password (`ChatClient.import_identity`), then
the login runs. A wrong passphrase lands on the passphrase field.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from tkinter import filedialog, ttk
from typing import TYPE_CHECKING

from client import i18n
from client.components.busy import alive
from client.components.desktop import downloads_dir
from client.components.field import Field
from client.core.identity_file import SUFFIX
from client.forms.errors import describe_error
from common.errors import RequestError

if TYPE_CHECKING:
    from client.core.client import ChatClient
    from client.forms.host import FormHost

Credentials = Callable[[], "tuple[ChatClient, str, str] | None"]  # client, username, password


class IdentityImport(ttk.Frame):
    """Hidden until "Import identity file…" is pressed; then file, passphrase, Import."""

    def __init__(
        self,
        parent: tk.Misc,
        app: FormHost,
        credentials: Credentials,
        on_imported: Callable[[ChatClient, str, str], object],
    ) -> None:
        super().__init__(parent, style="Surface.TFrame")
        self.app = app
        self._credentials = credentials
        self._on_imported = on_imported
        self.path: Path | None = None
        self.file_label = ttk.Label(self, style="SurfaceMuted.TLabel", wraplength=app.theme.px(320))
        self.file_label.grid(row=0, column=0, sticky="w")
        self.passphrase = Field(self, i18n.t("identity.passphrase"), show="\u2022")
        self.passphrase.grid(row=1, column=0, sticky="ew", pady=(4, 4))
        self.passphrase.entry.bind("<Return>", lambda _e: self.submit())
        self.import_button = ttk.Button(
            self, text=i18n.t("identity.import_and_login"), command=self.submit
        )
        self.import_button.grid(row=2, column=0, sticky="ew")
        self.columnconfigure(0, weight=1)

    def choose(self) -> bool:
        """Ask for the file; True (and the panel shows) when one was chosen."""
        chosen = filedialog.askopenfilename(
            parent=self,
            title=i18n.t("identity.choose_file"),
            initialdir=str(downloads_dir()),
            filetypes=[
                (i18n.t("identity.file_type"), f"*{SUFFIX}"),
                (i18n.t("chat.all_files"), "*"),
            ],
        )
        if not chosen:
            return False
        self.path = Path(chosen)
        self.file_label.configure(text=i18n.t("identity.chosen", name=self.path.name))
        self.passphrase.set_error("")
        self.passphrase.focus_entry()
        return True

    def submit(self) -> None:
        if self.path is None:
            return
        if not self.passphrase.value:
            self.passphrase.set_error(i18n.t("error.required"))
            return
        found = self._credentials()
        if found is None:
            return  # the login form marked what is missing
        client, username, password = found
        self.import_button.state(["disabled"])
        self.app.run(
            client.import_identity,
            self.path,
            self.passphrase.value,
            username,
            password,
            on_result=lambda _r: self._imported(client, username, password),
            on_error=self._failed,
        )

    def _imported(self, client: ChatClient, username: str, password: str) -> None:
        if alive(self):
            self.import_button.state(["!disabled"])
            self._on_imported(client, username, password)

    def _failed(self, exc: BaseException) -> None:
        if not alive(self):
            return
        self.import_button.state(["!disabled"])
        message = describe_error(exc).message
        if isinstance(exc, RequestError) and exc.code in (
            "bad_identity_file",
            "invalid_passphrase",
        ):
            self.passphrase.set_error(message)
        else:
            self.file_label.configure(text=message, style="Error.TLabel")
