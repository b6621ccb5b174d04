"""The one atomic private-file writer that key files, the CA key and server pins share."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from common.fileio import write_private_file

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix_only
def test_new_file_is_owner_only_by_default(tmp_path: Path) -> None:
    target = tmp_path / "secret.json"
    write_private_file(target, b"key material")
    assert target.read_bytes() == b"key material"
    assert _mode(target) == 0o600


@posix_only
def test_mode_is_applied_from_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[int] = []
    real_open = os.open

    def spying_open(path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        opened.append(mode)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spying_open)
    old_umask = os.umask(0o022)
    try:
        write_private_file(tmp_path / "ca.pem", b"certificate", mode=0o644)
    finally:
        os.umask(old_umask)
    assert opened == [0o644]
    assert _mode(tmp_path / "ca.pem") == 0o644


def test_replaces_existing_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "pins.json"
    target.write_bytes(b"old contents that are longer than the new ones")
    write_private_file(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pins.json"]


@posix_only
def test_replace_tightens_a_loose_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "keys.json"
    target.write_bytes(b"old")
    target.chmod(0o644)
    write_private_file(target, b"new")
    assert _mode(target) == 0o600


def test_creates_missing_parent_directories(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "keys.json"
    write_private_file(target, b"data")
    assert target.read_bytes() == b"data"


def test_failed_replace_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "keys.json"
    target.write_bytes(b"old")

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        write_private_file(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]


def test_failed_first_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output"):
        write_private_file(tmp_path / "keys.json", b"new")
    assert list(tmp_path.iterdir()) == []
