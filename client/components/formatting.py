"""Display formatting shared by the widgets: times, sizes, badges, addresses.

Pure functions (no Tk) so the rules users see can be unit-tested.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from client import i18n
from client.core.models import ChatMessage, Contact, MessageStatus

BADGE_CAP = 99

STATUS_MARKS: dict[str, str] = {
    "sending": "\u2026",  # …
    "sent": "\u2713",  # ✓
    "delivered": "\u2713\u2713",  # ✓✓
    "read": "\u2713\u2713",  # ✓✓ in the "read" colour
    "failed": "\u2717",  # ✗
    "received": "",
}


def local_time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000)


def now_local() -> datetime:
    return datetime.fromtimestamp(time.time())


def format_message_time(ms: int, now: datetime | None = None) -> str:
    """Message header time: "14:05" today, "Yesterday 14:05", "03-07 14:05", "2023-03-07 14:05"."""
    when, now = local_time(ms), now or now_local()
    clock = when.strftime("%H:%M")
    if when.date() == now.date():
        return clock
    if when.date() == (now - timedelta(days=1)).date():
        return i18n.t("time.yesterday_at", time=clock)
    if when.year == now.year:
        return when.strftime("%m-%d ") + clock
    return when.strftime("%Y-%m-%d ") + clock


def format_list_time(ms: int, now: datetime | None = None) -> str:
    """Contact-list time: short, because the row is narrow; empty when there is none."""
    if ms <= 0:
        return ""
    when, now = local_time(ms), now or now_local()
    if when.date() == now.date():
        return when.strftime("%H:%M")
    if when.date() == (now - timedelta(days=1)).date():
        return i18n.t("time.yesterday")
    if when.year == now.year:
        return when.strftime("%m-%d")
    return when.strftime("%Y-%m-%d")


def badge_text(unread: int) -> str:
    """What the red badge says: nothing for zero, "99+" past the cap."""
    if unread <= 0:
        return ""
    return f"{BADGE_CAP}+" if unread > BADGE_CAP else str(unread)


def format_size(size: int) -> str:
    """Human file size with one decimal above a kilobyte: 512 B, 1.5 KB, 3.2 MB."""
    value = float(max(size, 0))
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def address_text(contact: Contact) -> str:
    """The second line of a contact row: IP:port for friends, number and size for groups."""
    if contact.kind == "room":
        return i18n.t("contacts.group_line", number=contact.id, count=len(contact.members))
    if contact.ip and contact.port:
        host = f"[{contact.ip}]" if ":" in contact.ip else contact.ip
        return f"{host}:{contact.port}"
    return i18n.t("contacts.never_seen")


def flag_notes(message: ChatMessage) -> list[str]:
    """What a bubble says under a message about its order and time (`ChatMessage.flags`):
    earlier messages of its sender missing, arrived late, the server's time far from the
    sender's."""
    flags = message.flags.split()
    notes = []
    if "gap" in flags:
        notes.append(i18n.t("chat.flag.gap", name=message.sender))
    if "late" in flags:
        notes.append(i18n.t("chat.flag.late"))
    if "skew" in flags:
        notes.append(i18n.t("chat.flag.skew", time=format_message_time(message.server_time)))
    return notes


def status_mark(status: MessageStatus | str) -> str:
    """Delivery mark shown after an outgoing message."""
    return STATUS_MARKS.get(status, "")


def preview_text(contact: Contact, me: str) -> tuple[str, str]:
    """The contact row's second line as (marker, text).

    A waiting draft wins ("Draft" marker); a group shows who wrote the last message
    ("You" for ourselves); a picture or file shows its translated kind and its name.
    The marker is drawn in the accent colour, the text in the muted one.
    """
    marker = i18n.t("contacts.draft_marker") if contact.draft else ""
    if not contact.last_message and contact.last_kind == "text":
        return marker, ""
    text = contact.last_message
    if contact.last_kind in ("image", "file"):
        label = i18n.t(f"contacts.preview_{contact.last_kind}")
        text = f"{label} {text}".strip()
    if contact.kind == "room" and contact.last_sender:
        who = i18n.t("contacts.you") if contact.last_sender == me else contact.last_sender
        text = i18n.t("contacts.preview_sender", name=who, text=text)
    return marker, text


def elide(text: str, width: int, measure: Callable[[str], int]) -> str:
    """`text`, or its longest beginning that fits `width` pixels with "…" after it."""
    if measure(text) <= width:
        return text
    low, high = 0, len(text)
    while low < high:  # the longest prefix whose elided form fits
        middle = (low + high + 1) // 2
        if measure(text[:middle].rstrip() + "\u2026") <= width:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + "\u2026"
