"""A picture at full size in its own window, scaled down only to fit the screen.

Decoding happens in `load_fitted` on a worker (a large picture would freeze the
window), after `media.detect_image` vouched for the file (format and pixel budget);
the window only shows the result.
"""

from __future__ import annotations

import tkinter as tk
from pathlib import Path

from PIL import Image, ImageTk

from client import i18n
from client.core import media

SCREEN_SHARE = 0.85  # the largest part of the screen the viewer takes


def fitted_size(size: tuple[int, int], bounds: tuple[int, int]) -> tuple[int, int]:
    """`size` scaled down (never up) to fit `bounds`, keeping the aspect ratio."""
    width, height = size
    scale = min(1.0, bounds[0] / max(width, 1), bounds[1] / max(height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def screen_bounds(widget: tk.Misc) -> tuple[int, int]:
    return (
        int(widget.winfo_screenwidth() * SCREEN_SHARE),
        int(widget.winfo_screenheight() * SCREEN_SHARE),
    )


def load_fitted(path: Path, bounds: tuple[int, int]) -> Image.Image | None:
    """The picture scaled to `bounds`, or None if it is not a picture we open."""
    if media.detect_image(path) is None:
        return None
    with Image.open(path) as opened:
        opened.load()
        picture = opened.convert("RGBA") if opened.mode not in ("RGB", "RGBA") else opened
        size = fitted_size(picture.size, bounds)
        return (
            picture.resize(size, Image.Resampling.LANCZOS)
            if size != picture.size
            else picture.copy()
        )


class ImageViewer(tk.Toplevel):
    """Esc, a click or closing the window dismisses it."""

    def __init__(self, master: tk.Misc, picture: Image.Image, title: str) -> None:
        super().__init__(master, background="#000000")
        self.title(i18n.t("viewer.title", name=title))
        self.shown_size = picture.size
        self.photo = ImageTk.PhotoImage(picture, master=self)
        self.label = tk.Label(self, image=self.photo, background="#000000", borderwidth=0)
        self.label.pack(fill="both", expand=True)
        for sequence in ("<Escape>", "<Button-1>", "<Control-w>"):
            self.bind(sequence, lambda _e: self.destroy())
        self.focus_set()
