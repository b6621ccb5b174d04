"""A frame that scrolls vertically: a Canvas holding an `interior` frame, plus a scrollbar.

Put children in `.interior`. The interior always takes the canvas's width, the
scrollbar shows only when there is something to scroll, and the
mouse wheel scrolls whichever list the pointer is over (X11 sends buttons 4/5;
Windows and macOS send <MouseWheel>).
"""

from __future__ import annotations

import tkinter as tk
from tkinter import ttk


class VerticalScrolledFrame(tk.Frame):
    def __init__(self, parent: tk.Misc, background: str = "#ffffff") -> None:
        super().__init__(parent, background=background, borderwidth=0, highlightthickness=0)
        self.scrollbar = ttk.Scrollbar(self, orient="vertical", style="Vertical.TScrollbar")
        self.canvas = tk.Canvas(
            self,
            background=background,
            borderwidth=0,
            highlightthickness=0,
            yscrollcommand=self._scrolled,
        )
        self.scrollbar.configure(command=self.canvas.yview)
        self.scrollbar.pack(side="right", fill="y")
        self.canvas.pack(side="left", fill="both", expand=True)
        self.interior = tk.Frame(self.canvas, background=background)
        self._window = self.canvas.create_window(0, 0, window=self.interior, anchor="nw")
        self.interior.bind("<Configure>", self._on_interior_configure)
        self.canvas.bind("<Configure>", self._on_canvas_configure)
        self.bind("<Enter>", self._bind_wheel)
        self.bind("<Leave>", self._unbind_wheel)

    def _scrolled(self, first: float | str, last: float | str) -> None:
        """Show the scrollbar only while the list is taller than the window."""
        if float(first) <= 0.0 and float(last) >= 1.0:
            self.scrollbar.pack_forget()
        elif not self.scrollbar.winfo_ismapped():
            self.scrollbar.pack(side="right", fill="y", before=self.canvas)
        self.scrollbar.set(first, last)

    def _on_interior_configure(self, _event: tk.Event[tk.Misc]) -> None:
        self.canvas.configure(
            scrollregion=(0, 0, self.interior.winfo_reqwidth(), self.interior.winfo_reqheight())
        )

    def _on_canvas_configure(self, event: tk.Event[tk.Misc]) -> None:
        self.canvas.itemconfigure(self._window, width=event.width)

    def _bind_wheel(self, _event: tk.Event[tk.Misc]) -> None:
        self.bind_all("<MouseWheel>", self._on_wheel)
        self.bind_all("<Button-4>", self._on_wheel)
        self.bind_all("<Button-5>", self._on_wheel)

    def _unbind_wheel(self, _event: tk.Event[tk.Misc]) -> None:
        for sequence in ("<MouseWheel>", "<Button-4>", "<Button-5>"):
            self.unbind_all(sequence)

    def _on_wheel(self, event: tk.Event[tk.Misc]) -> None:
        if self.interior.winfo_reqheight() <= self.canvas.winfo_height():
            return
        if event.num == 4 or event.delta > 0:
            self.canvas.yview_scroll(-2, "units")
        elif event.num == 5 or event.delta < 0:
            self.canvas.yview_scroll(2, "units")

    def scroll_to_top(self) -> None:
        self.canvas.yview_moveto(0.0)
