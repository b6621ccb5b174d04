"""Chat window logic without a window: the loaded transcript and the input rules."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from client import i18n
from client.core.models import ChatMessage, Contact, MessageStatus

MIN_FONT_SIZE = 8  # the protocol allows 6..72; the picker keeps to readable sizes
MAX_FONT_SIZE = 36
DEFAULT_FONT_SIZE = 12
PAGE_SIZE = 50
EARLY_STATUS_LIMIT = 64  # statuses of messages other chats sent pass by too: keep few
SHIFT_MASK = 0x0001
SEND_KEYS = frozenset({"Return", "KP_Enter"})
_COLOR = re.compile(r"#[0-9a-fA-F]{6}")


def clamp_font_size(value: object, default: int = DEFAULT_FONT_SIZE) -> int:
    """What the size spinbox holds, as a size the protocol accepts."""
    try:
        number = int(str(value).strip())
    except ValueError:
        return max(MIN_FONT_SIZE, min(MAX_FONT_SIZE, default))
    return max(MIN_FONT_SIZE, min(MAX_FONT_SIZE, number))


def normalise_color(value: object) -> str | None:
    """ "#RRGGBB" from a colour chooser (which may return None) as lowercase, else None."""
    if isinstance(value, str) and _COLOR.fullmatch(value.strip()):
        return value.strip().lower()
    return None


def should_send(keysym: str, state: int) -> bool:
    """Enter sends; Shift+Enter inserts a new line."""
    return keysym in SEND_KEYS and not state & SHIFT_MASK


def target_of(contact: Contact) -> str | int:
    """What ChatClient takes as a target: a username, or the room number as an int."""
    return int(contact.id) if contact.kind == "room" else contact.id


def in_chat(message: ChatMessage, contact: Contact) -> bool:
    return (message.chat_kind, message.chat_id) == (contact.kind, contact.id)


def search_in_chat(messages: Iterable[ChatMessage], contact: Contact) -> list[ChatMessage]:
    """search_history covers every chat; the window shows only its own hits, newest first."""
    hits = [m for m in messages if in_chat(m, contact)]
    return sorted(hits, key=lambda m: m.time, reverse=True)


class ChatTranscript:
    """The messages a chat window shows, oldest first, each once, with paging state."""

    def __init__(self, page_size: int = PAGE_SIZE) -> None:
        self.page_size = page_size
        self.has_more = True
        self._messages: list[ChatMessage] = []
        self._ids: set[str] = set()
        self._early_status: dict[str, MessageStatus] = {}

    @property
    def messages(self) -> list[ChatMessage]:
        return list(self._messages)

    def __len__(self) -> int:
        return len(self._messages)

    def oldest(self) -> ChatMessage | None:
        return self._messages[0] if self._messages else None

    def newest(self) -> ChatMessage | None:
        return self._messages[-1] if self._messages else None

    def get(self, message_id: str) -> ChatMessage | None:
        for message in self._messages:
            if message.message_id == message_id:
                return message
        return None

    def add(self, message: ChatMessage) -> ChatMessage | None:
        """Append a new message and return it as stored; None if it is already shown.

        A delivery status that arrived before the message itself is applied now.
        """
        if message.message_id in self._ids:
            return None
        early = self._early_status.pop(message.message_id, None)
        if early is not None and message.outgoing:
            message = dataclasses.replace(message, status=early)
        self._ids.add(message.message_id)
        self._messages.append(message)
        return message

    def prepend(
        self, older: Iterable[ChatMessage], requested: int | None = None
    ) -> list[ChatMessage]:
        """Put a page of older messages in front; returns the ones that were new.

        A page shorter than requested means the beginning of the chat was reached.
        """
        page = list(older)
        if len(page) < (requested if requested is not None else self.page_size):
            self.has_more = False
        fresh = [m for m in page if m.message_id not in self._ids]
        self._ids.update(m.message_id for m in fresh)
        self._messages[:0] = fresh
        return fresh

    def set_status(self, message_id: str, status: MessageStatus) -> ChatMessage | None:
        """Record a delivery state change; returns the updated message if it is shown."""
        for index, message in enumerate(self._messages):
            if message.message_id == message_id:
                updated = dataclasses.replace(message, status=status)
                self._messages[index] = updated
                return updated
        self.remember_status(message_id, status)
        return None

    def remember_status(self, message_id: str, status: MessageStatus) -> None:
        """A status for a message not shown yet: our own send may still be returning."""
        self._early_status[message_id] = status
        while len(self._early_status) > EARLY_STATUS_LIMIT:
            del self._early_status[next(iter(self._early_status))]

    def replace(self, message: ChatMessage) -> None:
        """Swap in a newer copy of a shown message (e.g. once its file is downloaded)."""
        for index, shown in enumerate(self._messages):
            if shown.message_id == message.message_id:
                self._messages[index] = message
                return


class SearchHits:
    """The hits of a history search, newest first, and which one is shown."""

    def __init__(self) -> None:
        self.query = ""
        self.hits: list[ChatMessage] = []
        self.index = 0

    def start(self, query: str, hits: list[ChatMessage]) -> ChatMessage | None:
        self.query, self.hits, self.index = query, hits, 0
        return self.current()

    def step(self, delta: int) -> ChatMessage | None:
        """+1 = the next older hit, -1 = the next newer; stays within the hits."""
        if not self.hits:
            return None
        self.index = max(0, min(len(self.hits) - 1, self.index + delta))
        return self.current()

    def current(self) -> ChatMessage | None:
        return self.hits[self.index] if self.hits else None

    def clear(self) -> None:
        self.query, self.hits, self.index = "", [], 0


def membership_line(change: str, actor: str, subject: str, approver: str = "") -> str:
    """The conversation line for one verified membership change (`MembershipChanged`)."""
    if change == "join" and approver:
        return i18n.t("membership.join_approved", subject=subject, approver=approver)
    key = f"membership.{change}"
    if not i18n.has(key):
        key = "membership.join"
    return i18n.t(key, actor=actor, subject=subject)


def membership_alarm_line(reason: str, detail: str, names: Iterable[str]) -> str:
    """The warning line for a `MembershipAlarm` in its conversation."""
    return i18n.t(f"membership.alarm.{reason}", detail=detail, names=", ".join(names))
