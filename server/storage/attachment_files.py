"""Attachment bytes on disk: `<root>/<id>.part` while uploading, `<root>/<id>` after.

File names come only from validated ids (32 lowercase hex), never from a path the
client sent, so nothing can escape `root`. Writes land at an explicit offset and cut
the file there, so bytes written after the last database commit (lost in a crash)
are simply overwritten by the client's resumed upload.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

ATTACHMENT_ID = re.compile(r"[0-9a-f]{32}")
_HASH_BLOCK = 1024 * 1024


def is_attachment_id(value: str) -> bool:
    return ATTACHMENT_ID.fullmatch(value) is not None


class AttachmentFiles:
    """The directory holding attachment files."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, attachment_id: str, suffix: str = "") -> Path:
        if not is_attachment_id(attachment_id):
            raise ValueError("not an attachment id")
        return self.root / f"{attachment_id}{suffix}"

    def partial_path(self, attachment_id: str) -> Path:
        return self._path(attachment_id, ".part")

    def final_path(self, attachment_id: str) -> Path:
        return self._path(attachment_id)

    def partial_size(self, attachment_id: str) -> int:
        """Bytes on disk for an upload in progress (0 if no file yet)."""
        try:
            return self.partial_path(attachment_id).stat().st_size
        except FileNotFoundError:
            return 0

    def write_at(self, attachment_id: str, offset: int, data: bytes) -> None:
        """Write `data` at `offset` of the partial file and cut anything after it."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.partial_path(attachment_id)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0)
        descriptor = os.open(path, flags, 0o600)
        with os.fdopen(descriptor, "r+b") as file:
            file.seek(offset)
            file.write(data)
            file.truncate()

    def partial_digest(self, attachment_id: str) -> bytes:
        """SHA-256 of the whole partial file (slow for big files: run on a worker)."""
        digest = hashlib.sha256()
        with self.partial_path(attachment_id).open("rb") as file:
            while block := file.read(_HASH_BLOCK):
                digest.update(block)
        return digest.digest()

    def finish(self, attachment_id: str) -> None:
        """Give the verified partial file its final name (atomic on one filesystem)."""
        os.replace(self.partial_path(attachment_id), self.final_path(attachment_id))

    def discard(self, attachment_id: str) -> None:
        """Remove the partial and the final file, whichever exist."""
        for path in (self.partial_path(attachment_id), self.final_path(attachment_id)):
            path.unlink(missing_ok=True)

    def read(self, attachment_id: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes of a finished attachment from `offset`."""
        with self.final_path(attachment_id).open("rb") as file:
            file.seek(offset)
            return file.read(length)
