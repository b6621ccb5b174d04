"""The right side of the main window: the open conversation, or a hint when none is."""

from __future__ import annotations

import tkinter as tk

from client import i18n
from client.theme import Theme


class ConversationArea(tk.Frame):
    """Holds at most one embedded chat panel; shows a quiet hint while empty."""

    def __init__(self, parent: tk.Misc, theme: Theme) -> None:
        p = theme.palette
        super().__init__(parent, background=p.window)
        self.panel: tk.Widget | None = None
        self.hint = tk.Label(
            self,
            text=i18n.t("main.no_chat"),
            background=p.window,
            foreground=p.subtle,
            font=theme.fonts.body,
        )
        self.hint.place(relx=0.5, rely=0.5, anchor="center")

    def show(self, panel: tk.Widget) -> None:
        """`panel` (a child of this frame) fills the area."""
        self.hint.place_forget()
        self.panel = panel
        panel.pack(fill="both", expand=True)
        panel.bind("<Destroy>", lambda e: self._gone(e.widget), add="+")

    def _gone(self, widget: object) -> None:
        if widget is self.panel:
            self.panel = None
            self.hint.place(relx=0.5, rely=0.5, anchor="center")
