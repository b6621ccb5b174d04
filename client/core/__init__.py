"""The headless client: `ChatClient` and the plain data it hands out (docs/api.md)."""

from __future__ import annotations

from client.core.client import ChatClient, EventTimeout, Target
from client.core.models import (
    Attachment,
    ChatKind,
    ChatMessage,
    Contact,
    Event,
    MessageKind,
    MessageStatus,
    Profile,
)

__all__ = [
    "Attachment",
    "ChatClient",
    "ChatKind",
    "ChatMessage",
    "Contact",
    "Event",
    "EventTimeout",
    "MessageKind",
    "MessageStatus",
    "Profile",
    "Target",
]
