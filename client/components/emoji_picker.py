"""A small grid of emoji under the composer's ☺ button; a click inserts one.

Only characters of the Basic Multilingual Plane: Tk 8.6 cannot show the others
(most colour emoji), and a picker offering boxes would be worse than none.
"""

from __future__ import annotations

import functools
import tkinter as tk
from collections.abc import Callable

from client.theme import Theme

EMOJI = "☺☹♥❤★☆☀☁☂☃❄⚡☕♨✌✍✊✋☝✔✘✚✨❗❓⚠☎✉✂✏⌛⏰⚽⚾⛄⛅⛔✈⚓♻☯☮☘⚘♪♫☑✅❌♠♣♦☜☞"
COLUMNS = 10


class EmojiPicker(tk.Toplevel):
    """Borderless, placed under its button; closes on a pick, on Esc or when left."""

    def __init__(self, anchor: tk.Widget, theme: Theme, on_pick: Callable[[str], object]) -> None:
        p = theme.palette
        super().__init__(anchor, background=p.border)
        self.wm_overrideredirect(True)
        self._on_pick = on_pick
        grid = tk.Frame(self, background=p.surface)
        grid.pack(padx=1, pady=1)
        self.buttons: dict[str, tk.Button] = {}
        font = (theme.fonts.family, theme.fonts.base_size + 4)
        for index, symbol in enumerate(EMOJI):
            button = tk.Button(
                grid,
                text=symbol,
                font=font,
                relief="flat",
                borderwidth=0,
                background=p.surface,
                activebackground=p.hover,
                command=functools.partial(self.pick, symbol),
                cursor="hand2",
            )
            button.grid(row=index // COLUMNS, column=index % COLUMNS, padx=1, pady=1)
            self.buttons[symbol] = button
        x = anchor.winfo_rootx()
        y = anchor.winfo_rooty() - self.winfo_reqheight() - 4
        self.wm_geometry(f"+{x}+{max(y, 0)}")
        self.bind("<Escape>", lambda _e: self.destroy())
        self.bind("<FocusOut>", lambda _e: self.after(100, self._close_if_unfocused))
        self.focus_set()

    def pick(self, symbol: str) -> None:
        self._on_pick(symbol)
        self.destroy()

    def _close_if_unfocused(self) -> None:
        if self.winfo_exists() and self.focus_get() is None:
            self.destroy()
