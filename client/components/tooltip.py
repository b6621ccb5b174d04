"""A small label that appears under a widget while the pointer rests on it."""

from __future__ import annotations

import tkinter as tk

from client.theme import Theme

DELAY_MS = 500


class Tooltip:
    """Explains an icon-only button; shown after a short rest, gone on leave or click."""

    def __init__(self, widget: tk.Widget, text: str, theme: Theme) -> None:
        self.widget, self.text, self.theme = widget, text, theme
        self.window: tk.Toplevel | None = None
        self._job: str | None = None
        widget.bind("<Enter>", self._schedule, add="+")
        widget.bind("<Leave>", self.hide, add="+")
        widget.bind("<ButtonPress>", self.hide, add="+")

    def _schedule(self, _event: object = None) -> None:
        self._cancel()
        self._job = self.widget.after(DELAY_MS, self.show)

    def _cancel(self) -> None:
        if self._job is not None:
            self.widget.after_cancel(self._job)
            self._job = None

    def show(self) -> None:
        self._job = None
        if self.window is not None or not self.widget.winfo_viewable():
            return
        p = self.theme.palette
        self.window = tk.Toplevel(self.widget, background=p.border)
        self.window.wm_overrideredirect(True)
        tk.Label(
            self.window,
            text=self.text,
            background=p.surface,
            foreground=p.text,
            font=self.theme.fonts.small,
            padx=6,
            pady=2,
        ).pack(padx=1, pady=1)
        x = self.widget.winfo_rootx()
        y = self.widget.winfo_rooty() + self.widget.winfo_height() + 2
        self.window.wm_geometry(f"+{x}+{y}")

    def hide(self, _event: object = None) -> None:
        self._cancel()
        if self.window is not None:
            self.window.destroy()
            self.window = None
