"""A coloured strip with a message and optional action buttons (warnings, notices).

Used instead of pop-up dialogs so no window ever stacks on another.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

from client.theme import Theme


class Banner(tk.Frame):
    def __init__(
        self,
        parent: tk.Misc,
        theme: Theme,
        text: str,
        *,
        level: str = "warning",
        actions: tuple[tuple[str, Callable[[], object]], ...] = (),
        wraplength: int = 340,
    ) -> None:
        p, pad = theme.palette, theme.pad
        colors = {
            "warning": (p.warning_bg, p.warning_text, p.warning_border),
            "notice": (p.notice_bg, p.notice_text, "#f3d58b"),
            "info": (p.hover, p.primary_active, "#c7d8fb"),
            "success": ("#e9f7ef", p.success, "#b7e4c7"),
        }
        bg, fg, border = colors.get(level, colors["info"])
        super().__init__(parent, background=bg, highlightbackground=border, highlightthickness=1)
        self.label = tk.Label(
            self,
            text=text,
            background=bg,
            foreground=fg,
            justify="left",
            anchor="w",
            wraplength=wraplength,
            font=theme.fonts.bold if level == "warning" else theme.fonts.small,
        )
        self.label.pack(side="top", fill="x", padx=pad - 2, pady=(pad // 2, pad // 2))
        self.buttons: dict[str, ttk.Button] = {}
        if actions:
            row = tk.Frame(self, background=bg)
            row.pack(side="top", fill="x", padx=pad - 2, pady=(0, pad // 2))
            for label, command in actions:
                button = ttk.Button(row, text=label, command=command)
                button.pack(side="left", padx=(0, 6))
                self.buttons[label] = button

    def set_text(self, text: str) -> None:
        self.label.configure(text=text)

    @property
    def text(self) -> str:
        return str(self.label.cget("text"))
