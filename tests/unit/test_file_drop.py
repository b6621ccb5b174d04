"""What a drop names, parsed without a display (a bare Tcl interpreter splits the list)."""

from __future__ import annotations

import tkinter as tk
from pathlib import Path

import pytest

from client.components import file_drop
from client.components.file_drop import dropped_paths


@pytest.fixture(scope="module")
def tcl() -> tk.Tk:
    return tk.Tcl()


def test_paths_with_spaces_uris_and_folders(tmp_path: Path, tcl: tk.Tk) -> None:
    spaced = tmp_path / "my holiday {1}.png"
    plain = tmp_path / "notes.txt"
    chinese = tmp_path / "笔记 二.txt"
    for path in (spaced, plain, chinese):
        path.write_bytes(b"x")
    listed = tcl.call("list", str(spaced), plain.as_uri(), str(tmp_path), str(chinese))
    data = str(tcl.call("string", "range", listed, 0, "end"))  # the list as Tcl text
    assert dropped_paths(data, tcl.splitlist) == [spaced, plain, chinese]


def test_nothing_usable_is_an_empty_list(tmp_path: Path, tcl: tk.Tk) -> None:
    for data in ("", "relative.txt", str(tmp_path / "missing.txt"), "http://x.org/a", "{a}b"):
        assert dropped_paths(data, tcl.splitlist) == []


def test_without_the_extension_drops_are_off_and_say_why(
    tcl: tk.Tk, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import tkinterdnd2.TkinterDnD as wrapper

    def broken(root: tk.Misc) -> None:
        raise RuntimeError("Unable to load tkdnd library.")

    monkeypatch.setattr(wrapper, "_require", broken)
    assert file_drop.enable_drops(tcl) is False
    assert "dropping files is off" in caplog.text
    assert file_drop.accept_file_drops(tcl, lambda paths: None) is False
