"""The headless client: `ChatClient` and the plain data it hands out (docs/api.md)."""

from __future__ import annotations

from client.core.client import ChatClient, EventTimeout, Target
from client.core.event_types import (
    ConnectionChanged,
    ContactAdded,
    ContactRemoved,
    Event,
    ExportProgress,
    FriendRequest,
    FriendRequestRefused,
    KeyChanged,
    KeyMissing,
    KeyTrusted,
    Kicked,
    MessageReceived,
    MessageSent,
    MessageStatusChanged,
    PresenceChanged,
    RoomMemberChanged,
    TransferProgress,
)
from client.core.models import (
    Attachment,
    ChatKind,
    ChatMessage,
    Contact,
    MessageKind,
    MessageStatus,
    Profile,
)

__all__ = [
    "Attachment",
    "ChatClient",
    "ChatKind",
    "ChatMessage",
    "ConnectionChanged",
    "Contact",
    "ContactAdded",
    "ContactRemoved",
    "Event",
    "EventTimeout",
    "ExportProgress",
    "FriendRequest",
    "FriendRequestRefused",
    "KeyChanged",
    "KeyMissing",
    "KeyTrusted",
    "Kicked",
    "MessageKind",
    "MessageReceived",
    "MessageSent",
    "MessageStatus",
    "MessageStatusChanged",
    "PresenceChanged",
    "Profile",
    "RoomMemberChanged",
    "Target",
    "TransferProgress",
]
