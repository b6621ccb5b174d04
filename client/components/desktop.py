"""What the desktop around Uchat offers: the Downloads folder and a file manager.

Kept apart so the forms stay free of platform checks, and so tests can replace the
one function that starts another program.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import platformdirs

Opener = Callable[[Path], None]


def downloads_dir() -> Path:
    """Where Open and Save dialogs start: the user's Downloads folder, else home."""
    folder = Path(platformdirs.user_downloads_dir())
    return folder if folder.is_dir() else Path.home()


def _system_open(path: Path) -> None:
    if sys.platform.startswith("win"):
        os.startfile(path)  # type: ignore[attr-defined]  # noqa: S606 - a folder the user saved to
    else:
        program = "open" if sys.platform == "darwin" else "xdg-open"
        subprocess.Popen(  # noqa: S603 - fixed program, a path we wrote ourselves
            [program, str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


class Desktop:
    """Opens folders in the system's file manager; `opener` is replaceable in tests."""

    opener: Opener = staticmethod(_system_open)

    @classmethod
    def open_folder(cls, path: Path) -> bool:
        """Show the folder holding `path` (or `path` if it is a folder); False on failure."""
        folder = path if path.is_dir() else path.parent
        try:
            cls.opener(folder)
        except OSError:
            return False
        return True
