"""Exporting history from the GUI: ask for a folder, show a progress bar while the
worker writes, then say where it went with an "Open folder" button.

The bar moves only on the core's `ExportProgress` events (drained on the Tk thread).
"""

from __future__ import annotations

import functools
import tkinter as tk
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from tkinter import filedialog, ttk

from client import i18n
from client.components.banner import Banner
from client.components.busy import alive
from client.components.desktop import Desktop, downloads_dir
from client.components.layout import collapse_if_empty
from client.core.client import Target
from client.core.event_types import Event, ExportProgress
from client.core.history_export import ExportResult
from client.forms.errors import describe_error
from client.forms.host import FormHost


def export_folder_name(account: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now()).strftime("%Y-%m-%d %H%M")
    return f"Uchat {account} {stamp}"


class ExportFlow:
    """One export at a time per place it is started from; the strip lives in `strip_parent`."""

    def __init__(self, app: FormHost, strip_parent: tk.Frame) -> None:
        self.app = app
        self.parent = strip_parent
        self.strip: tk.Frame | None = None
        self.bar: ttk.Progressbar | None = None
        self.label: tk.Label | None = None
        self.result: ExportResult | None = None
        self.banner: Banner | None = None

    @property
    def running(self) -> bool:
        return self.strip is not None

    def start(self, targets: Sequence[Target] | None) -> None:
        """Ask where, then export `targets` (every chat when None)."""
        client = self.app.client
        if client is None or self.running:
            return
        chosen = filedialog.askdirectory(
            parent=self.parent,
            title=i18n.t("export.choose_folder"),
            initialdir=str(downloads_dir()),
        )
        if not chosen:
            return
        folder = Path(chosen) / export_folder_name(client.username or "")
        self._show_strip()
        self.app.subscribe(self.on_event)
        self.app.run(
            client.export_history,
            folder,
            None if targets is None else list(targets),
            on_result=self._done,
            on_error=self._failed,
        )

    def _show_strip(self) -> None:
        theme = self.app.theme
        p = theme.palette
        self._clear()
        self.strip = tk.Frame(self.parent, background=p.hover)
        self.strip.pack(fill="x", padx=theme.pad, pady=(8, 0))
        self.label = tk.Label(
            self.strip,
            text=i18n.t("export.running", done=0, total=0),
            background=p.hover,
            foreground=p.primary_active,
            font=theme.fonts.small,
            anchor="w",
        )
        self.label.pack(side="left", padx=theme.pad // 2, pady=4)
        self.bar = ttk.Progressbar(self.strip, mode="determinate", maximum=1.0)
        self.bar.pack(side="left", fill="x", expand=True, padx=theme.pad // 2, pady=4)

    def on_event(self, event: Event) -> None:
        if not isinstance(event, ExportProgress) or self.bar is None or not alive(self.bar):
            return
        fraction = event.done / event.total if event.total else 1.0
        self.bar.configure(value=fraction)
        if self.label is not None:
            self.label.configure(text=i18n.t("export.running", done=event.done, total=event.total))

    def _done(self, result: ExportResult) -> None:
        self.result = result
        self._finish()
        if not alive(self.parent):
            return
        text = i18n.t(
            "export.done",
            count=result.messages,
            path=str(result.html_path.parent),
        )
        if result.missing:
            text += "\n" + i18n.t("export.missing", count=result.missing)
        self.banner = Banner(
            self.parent,
            self.app.theme,
            text,
            level="success",
            actions=(
                (i18n.t("chat.open_folder"), functools.partial(self._open, result.html_path)),
                (i18n.t("common.dismiss"), self._clear),
            ),
        )
        self.banner.pack(fill="x", padx=self.app.theme.pad, pady=(8, 0))

    def _open(self, path: Path) -> None:
        Desktop.open_folder(path)

    def _failed(self, exc: BaseException) -> None:
        self._finish()
        if alive(self.parent):
            self.banner = Banner(
                self.parent,
                self.app.theme,
                describe_error(exc).message,
                actions=((i18n.t("common.dismiss"), self._clear),),
            )
            self.banner.pack(fill="x", padx=self.app.theme.pad, pady=(8, 0))

    def _finish(self) -> None:
        self.app.unsubscribe(self.on_event)
        if self.strip is not None and alive(self.strip):
            self.strip.destroy()
        self.strip = self.bar = self.label = None

    def _clear(self) -> None:
        if self.banner is not None and alive(self.banner):
            self.banner.destroy()
        self.banner = None
        if alive(self.parent):
            collapse_if_empty(self.parent)
