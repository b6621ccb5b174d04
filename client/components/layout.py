"""Layout helpers that keep panels from leaving holes.

Tk keeps a container at its last size when its last packed or gridded child leaves:
propagation only recomputes while there are children. That is what left a blank gap
after Accept, Reject or Later, after closing the search results, after trusting a key
and after dismissing a banner. `collapse_if_empty` asks for one pixel then, and as soon
as a child arrives again propagation takes over as usual.
"""

from __future__ import annotations

import tkinter as tk
import tkinter.font as tkfont
from tkinter import ttk

FontSpec = tuple[str, int] | tuple[str, int, str]


def collapse_if_empty(container: tk.Frame | ttk.Frame) -> None:
    """Shrink `container` to nothing when no child is packed or gridded in it."""
    if container.pack_slaves() or container.grid_slaves():
        return
    container.configure(height=1)


def scaled(widget: tk.Misc, points: float) -> int:
    """`points` (1/72 inch) in pixels at this display's Tk scaling (96 dpi: 1.333)."""
    return round(points * float(widget.tk.call("tk", "scaling")))


def text_width(widget: tk.Misc, font: FontSpec, characters: float) -> int:
    """Pixels of `characters` average characters ("0") in `font`: widths follow the font."""
    measured = tkfont.Font(root=widget, font=font).measure("0")
    return int(measured * characters)
