"""Contact-list logic without a window: order, keys, input parsing, search rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

from client import i18n
from client.core.models import Contact
from common.errors import ValidationError
from common.validation import validate_room_name, validate_username

ContactKey = tuple[str, str]
MAX_ROOM_NUMBER = 2**63 - 1


class Action(Enum):
    """The inline actions of the contact window's toolbar; value = i18n key stem."""

    ADD_FRIEND = "add_friend"
    DELETE_FRIEND = "delete_friend"
    CREATE_GROUP = "create_group"
    JOIN_GROUP = "join_group"


class InputError(ValueError):
    """An action's input is unusable; the message is ready to show."""


def contact_key(contact: Contact) -> ContactKey:
    return (contact.kind, contact.id)


def sort_contacts(contacts: Iterable[Contact]) -> list[Contact]:
    """Newest activity first (our own sends count), then by name; presence is a dot only."""
    return sorted(contacts, key=lambda c: (-c.last_message_time, c.name.casefold(), c.kind))


def total_unread(contacts: Iterable[Contact]) -> int:
    return sum(max(c.unread, 0) for c in contacts)


def parse_room_number(text: str) -> int:
    """A group number typed by a person: digits, optional '#', surrounding spaces."""
    value = text.strip().removeprefix("#").strip()
    if not value:
        raise InputError(i18n.t("error.required"))
    if not value.isascii() or not value.isdigit():
        raise InputError(i18n.t("error.room_number"))
    number = int(value)
    if not 0 < number <= MAX_ROOM_NUMBER:
        raise InputError(i18n.t("error.room_number"))
    return number


def parse_username(text: str) -> str:
    try:
        return validate_username(text)
    except ValidationError as exc:
        if not text.strip():
            raise InputError(i18n.t("error.required")) from exc
        raise InputError(i18n.t("error.invalid_username")) from exc


def parse_room_name(text: str) -> str:
    try:
        return validate_room_name(text)
    except ValidationError as exc:
        if not text.strip():
            raise InputError(i18n.t("error.required")) from exc
        raise InputError(i18n.t("error.invalid_room_name")) from exc


def parse_action_input(action: Action, text: str) -> str | int:
    """The argument of the request an action makes, or InputError."""
    if action is Action.JOIN_GROUP:
        return parse_room_number(text)
    if action is Action.CREATE_GROUP:
        return parse_room_name(text)
    return parse_username(text)


def search_row_state(user: Mapping[str, Any], me: str) -> str:
    """ "friend", "pending", "self" or "add": what the row's button should offer."""
    if user.get("username") == me:
        return "self"
    if user.get("is_friend") is True:
        return "friend"
    if user.get("pending") is True:
        return "pending"
    return "add"


def search_row_detail(user: Mapping[str, Any]) -> str:
    """ "female · 30" with translated sex; parts the server left out are skipped."""
    parts: list[str] = []
    sex = user.get("sex")
    if isinstance(sex, str) and i18n.has(f"sex.{sex}"):
        parts.append(i18n.t(f"sex.{sex}"))
    age = user.get("age")
    if type(age) is int:
        parts.append(i18n.t("contacts.age", age=age))
    return " \u00b7 ".join(parts)
