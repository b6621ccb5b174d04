"""A labelled form field with its own inline error line underneath.

Errors appear right under the field that caused them (never in a pop-up), and the
entry's border turns red until the error is cleared.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import ttk


class Field(ttk.Frame):
    def __init__(
        self,
        parent: tk.Misc,
        label: str,
        *,
        show: str = "",
        hint: str = "",
        make_widget: Callable[[tk.Misc], ttk.Entry] | None = None,
    ) -> None:
        """`make_widget(parent)` builds another entry-like widget (a Spinbox) instead."""
        super().__init__(parent, style="Surface.TFrame")
        self.var = tk.StringVar(self)
        self.label = ttk.Label(self, text=label, style="Field.TLabel")
        self.label.grid(row=0, column=0, sticky="w", pady=(0, 3))
        if make_widget is not None:
            self.entry = make_widget(self)
            self.entry.configure(textvariable=self.var)
        else:
            self.entry = ttk.Entry(self, textvariable=self.var, show=show, width=30)
        self.entry.grid(row=1, column=0, sticky="ew")
        self.hint = ttk.Label(
            self,
            text=hint,
            style="SurfaceMuted.TLabel",
            wraplength=self.winfo_pixels("3.3i"),
            justify="left",
        )
        if hint:
            self.hint.grid(row=2, column=0, sticky="w", pady=(2, 0))
        self.error = ttk.Label(
            self,
            text="",
            style="Error.TLabel",
            wraplength=self.winfo_pixels("3.3i"),
            justify="left",
        )
        self.error.grid(row=3, column=0, sticky="w", pady=(2, 0))
        self.error.grid_remove()
        self.columnconfigure(0, weight=1)

    @property
    def value(self) -> str:
        return self.var.get()

    def set_value(self, value: str) -> None:
        self.var.set(value)

    def set_error(self, message: str) -> None:
        """Show `message` under the field; an empty message hides the line."""
        self.error.configure(text=message)
        if message:
            self.error.grid()
            if type(self.entry) is ttk.Entry:  # spinboxes keep their own style
                self.entry.configure(style="Invalid.TEntry")
        else:
            self.error.grid_remove()
            if type(self.entry) is ttk.Entry:
                self.entry.configure(style="TEntry")

    @property
    def error_text(self) -> str:
        return str(self.error.cget("text"))

    def focus_entry(self) -> None:
        self.entry.focus_set()


class Placeholder:
    """Grey hint text inside an empty entry, gone as soon as it has focus or text."""

    def __init__(self, entry: ttk.Entry, text: str, color: str, background: str) -> None:
        self.entry = entry
        self.label = tk.Label(
            entry, text=text, foreground=color, background=background, anchor="w", cursor="xterm"
        )
        self.label.bind("<Button-1>", lambda _e: entry.focus_set())
        entry.bind("<FocusIn>", lambda _e: self.update(), add="+")
        entry.bind("<FocusOut>", lambda _e: self.update(), add="+")
        entry.bind("<KeyRelease>", lambda _e: self.update(), add="+")
        self.update()

    def update(self) -> None:
        if not self.entry.winfo_exists():
            return
        try:
            focused = self.entry.focus_get() is self.entry
        except (KeyError, tk.TclError):  # focus is in a Tk dialog tkinter did not create
            focused = False
        if self.entry.get() or focused:
            self.label.place_forget()
        else:
            self.label.place(x=7, rely=0.5, anchor="w")
