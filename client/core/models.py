"""Plain data the headless client hands to its callers (GUI, tests, benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ChatKind = Literal["user", "room"]
MessageKind = Literal["text", "image", "file"]
MessageStatus = Literal["sending", "sent", "delivered", "read", "received", "failed"]


@dataclass(frozen=True, slots=True)
class Profile:
    username: str
    email: str
    sex: str
    age: int


@dataclass(frozen=True, slots=True)
class Contact:
    """A friend or a room as shown in the contact list."""

    kind: ChatKind
    id: str  # username, or the room number as a string
    name: str
    online: bool = False
    ip: str = ""
    port: int = 0
    unread: int = 0
    last_message: str = ""
    last_message_time: int = 0
    members: tuple[str, ...] = ()
    last_sender: str = ""  # who wrote `last_message`
    last_kind: MessageKind = "text"  # for "image"/"file", `last_message` is the file name
    draft: bool = False  # a draft waits in this chat

    @property
    def room_id(self) -> int:
        """The room number, the one type every room method takes; ValueError for a friend."""
        if self.kind != "room":
            raise ValueError(f"{self.id} is a friend, not a room")
        return int(self.id)


@dataclass(frozen=True, slots=True)
class Attachment:
    """An end-to-end encrypted blob on the server, and where it lives locally."""

    attachment_id: str
    name: str
    size: int
    key: bytes
    digest: bytes
    chunk_size: int
    local_path: Path | None = None


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation, decrypted; `chat_id` as in `Contact.id`."""

    message_id: str
    chat_kind: ChatKind
    chat_id: str
    sender: str
    time: int
    kind: MessageKind
    text: str = ""
    font_size: int = 12
    color: str = "#000000"
    attachment: Attachment | None = None
    outgoing: bool = False
    status: MessageStatus = "received"
    #: The server's time (a hint); `time` is the sender's sealed clock for v2 messages.
    server_time: int = 0
    #: Space-separated order and time findings: "gap" (earlier messages of this sender
    #: have not arrived), "late" (it arrived after later ones), "skew" (the sender's
    #: and the server's clocks differ by more than `MAX_CLOCK_SKEW_MS`).
    flags: str = ""

    def preview(self) -> str:
        """The contact list's last-message text: the first line, or the file name."""
        if self.kind == "text":
            return self.text.splitlines()[0][:60] if self.text else ""
        return self.attachment.name if self.attachment else ""
