"""Dropping files onto a window, with the tkdnd Tk extension (pip package tkinterdnd2).

Why optional: tkdnd is a compiled Tk extension; where it does not load (no wheel for
the platform, a Tk it was not built for), the client still runs and files are sent by
the buttons or pasted (Ctrl+V). `enable_drops` says which: it loads the extension into
the Tk interpreter once (Tcl remembers it, so no Python state is kept) and returns
False, logging why, when it cannot.

Registration talks to tkdnd's Tcl commands directly, so nothing depends on the
wrapper's additions to tkinter's widget classes; the list of dropped paths is parsed
by `dropped_paths`, a pure function.
"""

from __future__ import annotations

import logging
import tkinter as tk
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

log = logging.getLogger(__name__)

FILES_TYPE = "DND_Files"
COPY = "copy"
REFUSE = "refuse_drop"


def dropped_paths(data: str, splitlist: Callable[[str], Sequence[str]]) -> list[Path]:
    """The regular files in a drop: a Tcl list of paths or file:// URIs.

    Folders and anything that is not an existing absolute file are left out (a folder
    cannot be sent as one attachment).
    """
    paths: list[Path] = []
    try:
        entries = splitlist(data)
    except (tk.TclError, ValueError):  # not a well-formed list: nothing to send
        return []
    for raw in entries:
        entry = str(raw).strip()
        if entry.startswith("file://"):
            entry = unquote(urlparse(entry).path)
        path = Path(entry)
        if entry and path.is_absolute() and path.is_file():
            paths.append(path)
    return paths


def _tkdnd_present(root: tk.Misc) -> bool:
    try:
        root.tk.call("package", "present", "tkdnd")
    except tk.TclError:
        return False
    return True


def enable_drops(root: tk.Misc) -> bool:
    """Load tkdnd into this Tk interpreter if it is not there; False if it cannot be."""
    if _tkdnd_present(root):
        return True
    try:
        from tkinterdnd2 import TkinterDnD

        TkinterDnD._require(root)  # adds the bundled tkdnd to auto_path, then requires it
    except (ImportError, RuntimeError, tk.TclError, OSError) as exc:
        log.warning("dropping files is off (tkdnd did not load: %s); paste or use the buttons", exc)
        return False
    return True


def accept_file_drops(widget: tk.Misc, on_paths: Callable[[list[Path]], object]) -> bool:
    """Make `widget` take dropped files; False (nothing done) without tkdnd."""
    if not enable_drops(widget):
        return False

    def dropped(data: str) -> str:
        paths = dropped_paths(data, widget.tk.splitlist)
        if not paths:
            return REFUSE
        on_paths(paths)
        return COPY

    command = widget.register(dropped)
    widget.tk.call("tkdnd::drop_target", "register", str(widget), (FILES_TYPE,))
    widget.tk.call("bind", str(widget), "<<Drop:DND_Files>>", f"{command} %D")
    widget.tk.call("bind", str(widget), "<<DropEnter>>", f"list {COPY}")
    widget.tk.call("bind", str(widget), "<<DropPosition>>", f"list {COPY}")
    return True
