"""A button that shows a request is running: disabled, "Working…" text, a moving bar.

Forms use it for every request so a double click can never send twice and the user
always sees that something is happening.
"""

from __future__ import annotations

import tkinter as tk
from tkinter import ttk


class BusyButton:
    """Wraps a ttk.Button and an optional progress bar placed with `grid`.

    The bar is hidden with `grid_remove` (which remembers its grid options) and shown
    again with a bare `grid()` while the request runs.
    """

    def __init__(self, button: ttk.Button, bar: ttk.Progressbar | None = None) -> None:
        self.button = button
        self.bar = bar
        self._idle_text = str(button.cget("text"))
        self.busy = False
        if bar is not None:
            bar.grid_remove()

    def start(self, text: str) -> None:
        self.busy = True
        self._idle_text = str(self.button.cget("text"))
        self.button.configure(text=text)
        self.button.state(["disabled"])
        if self.bar is not None:
            self.bar.grid()
            self.bar.start(12)

    def stop(self) -> None:
        self.busy = False
        if not alive(self.button):
            return
        self.button.configure(text=self._idle_text)
        self.button.state(["!disabled"])
        if self.bar is not None and alive(self.bar):
            self.bar.stop()
            self.bar.grid_remove()


def alive(widget: tk.Misc) -> bool:
    """True while the widget exists: async callbacks may land after a window closed."""
    try:
        return bool(widget.winfo_exists())
    except tk.TclError:
        return False
