"""Fetching attachments, and knowing which message each one belongs to.

Why it exists: a caller may hand `download` a bare `Attachment` (as the GUI does from a
rendered message), yet the downloaded file's path is recorded with its *message*. So
every message the client hands out is remembered here by attachment id (threads: the
push thread adds incoming ones, the caller's thread and workers the rest; each is one
dict operation).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from client.core.keystore import KeyStore
from client.core.models import Attachment, ChatMessage
from client.core.session import SessionSlot
from client.core.transfers import Progress
from common.errors import RequestError


class Downloads:
    """Attachment id -> message id, and the download that records the saved path."""

    def __init__(self, *, slot: SessionSlot, keystore: KeyStore) -> None:
        self._slot = slot
        self._keystore = keystore
        self._messages: dict[str, str] = {}

    def remember(self, message: ChatMessage) -> None:
        if message.attachment is not None:
            self._messages[message.attachment.attachment_id] = message.message_id

    def remember_all(self, messages: Iterable[ChatMessage]) -> None:
        for message in messages:
            self.remember(message)

    def download(
        self,
        attachment: Attachment | ChatMessage,
        dest_dir: Path | str | None,
        progress: Progress | None,
    ) -> Path:
        """Fetch, verify and decrypt; see `ChatClient.download`."""
        session = self._slot.require()
        if isinstance(attachment, ChatMessage):
            if attachment.attachment is None:
                raise RequestError("no_attachment", "this message has no attachment")
            message_id: str | None = attachment.message_id
            blob = attachment.attachment
        else:
            message_id = self._messages.get(attachment.attachment_id)
            blob = attachment
        if dest_dir is None:
            folder = self._keystore.downloads_dir(session.username)
        else:
            folder = Path(dest_dir)
        path = session.transfers.download(blob, folder, session.limits.chunk_size, progress)
        if message_id is not None:
            session.store.set_attachment_path(message_id, path)
        return path
