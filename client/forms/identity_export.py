"""In the main window: save this account's identity for another computer.

A strip asks for a passphrase twice (the file can leave this computer, so it gets its
own secret, not the account password), then where to save; the worker seals the keys
(`ChatClient.export_identity`), and the strip says where the file is and what to do
with it on the other computer.
"""

from __future__ import annotations

import functools
import tkinter as tk
from pathlib import Path
from tkinter import filedialog, ttk
from typing import TYPE_CHECKING

from client import i18n
from client.components.banner import Banner
from client.components.busy import alive
from client.components.desktop import Desktop, downloads_dir
from client.components.field import Field
from client.components.layout import collapse_if_empty
from client.core.identity_file import SUFFIX
from client.forms.errors import describe_error
from common.errors import ValidationError
from common.validation import validate_password

if TYPE_CHECKING:
    from client.forms.host import FormHost


def check_passphrases(first: str, second: str) -> dict[str, str]:
    """Field name -> message for what is wrong with the two entries (empty when fine)."""
    problems: dict[str, str] = {}
    try:
        validate_password(first)
    except ValidationError:
        problems["passphrase"] = i18n.t("error.invalid_passphrase")
    if not problems and first != second:
        problems["confirm"] = i18n.t("error.passphrase_mismatch")
    return problems


class IdentityExport(ttk.Frame):
    def __init__(self, parent: tk.Frame, app: FormHost) -> None:
        pad = app.theme.pad
        super().__init__(parent, style="Surface.TFrame", padding=(pad, pad // 2))
        self.app = app
        self.parent = parent
        ttk.Label(
            self,
            text=i18n.t("identity.export_explain"),
            style="SurfaceMuted.TLabel",
            wraplength=app.theme.px(320),
            justify="left",
        ).grid(row=0, column=0, columnspan=2, sticky="w")
        self.passphrase = Field(self, i18n.t("identity.passphrase"), show="\u2022")
        self.confirm = Field(self, i18n.t("identity.passphrase_again"), show="\u2022")
        self.passphrase.grid(row=1, column=0, columnspan=2, sticky="ew", pady=(4, 0))
        self.confirm.grid(row=2, column=0, columnspan=2, sticky="ew", pady=(4, 4))
        self.save_button = ttk.Button(
            self, text=i18n.t("identity.save"), style="Primary.TButton", command=self.submit
        )
        self.save_button.grid(row=3, column=0, sticky="ew", padx=(0, 4))
        ttk.Button(self, text=i18n.t("common.cancel"), command=self.close).grid(
            row=3, column=1, sticky="ew"
        )
        self.columnconfigure(0, weight=1)
        self.columnconfigure(1, weight=1)
        self.confirm.entry.bind("<Return>", lambda _e: self.submit())
        self.result: Path | None = None

    def submit(self) -> None:
        client = self.app.client
        if client is None:
            return
        problems = check_passphrases(self.passphrase.value, self.confirm.value)
        self.passphrase.set_error(problems.get("passphrase", ""))
        self.confirm.set_error(problems.get("confirm", ""))
        if problems:
            return
        chosen = filedialog.asksaveasfilename(
            parent=self,
            title=i18n.t("identity.save"),
            initialdir=str(downloads_dir()),
            initialfile=f"{client.username}{SUFFIX}",
            defaultextension=SUFFIX,
        )
        if not chosen:
            return
        self.save_button.state(["disabled"])
        self.app.run(
            client.export_identity,
            Path(chosen),
            self.passphrase.value,
            on_result=self._saved,
            on_error=self._failed,
        )

    def _saved(self, path: Path) -> None:
        self.result = path
        if not alive(self):
            return
        parent, theme = self.parent, self.app.theme
        self.close()
        banner = Banner(
            parent,
            theme,
            i18n.t("identity.saved", path=str(path)),
            level="success",
            actions=(
                (i18n.t("chat.open_folder"), functools.partial(Desktop.open_folder, path)),
                (i18n.t("common.dismiss"), lambda: _dismiss(banner, parent)),
            ),
        )
        banner.pack(fill="x", pady=(8, 0))

    def _failed(self, exc: BaseException) -> None:
        if alive(self):
            self.save_button.state(["!disabled"])
            self.passphrase.set_error(describe_error(exc).message)

    def close(self) -> None:
        parent = self.parent
        self.destroy()
        collapse_if_empty(parent)


def _dismiss(banner: Banner, parent: tk.Frame) -> None:
    banner.destroy()
    collapse_if_empty(parent)
