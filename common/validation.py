"""Field rules shared by the client forms and the server handlers.

The same functions run on both sides so the form can say what is wrong before
anything is sent, and the server can never be talked into storing what the form
would refuse. Each returns the normalised value or raises `ValidationError` whose
code is the wire error code of docs/protocol.md.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from common.errors import ValidationError
from common.names import canonical, hidden_characters

SEXES = ("male", "female", "other")
MIN_AGE, MAX_AGE = 1, 150
PASSWORD_MAX = 128
EMAIL_MAX = 254
ROOM_NAME_MAX = 40

_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)


def _is_name_char(ch: str) -> bool:
    """Letters of any script (Chinese included), digits and underscore."""
    if ch == "_":
        return True
    category = unicodedata.category(ch)
    return category[0] == "L" or category == "Nd" or category in ("Mn", "Mc")


def validate_username(value: Any, min_len: int = 2, max_len: int = 32) -> str:
    """The name as it will be stored and shown: NFKC (fullwidth letters become ASCII).

    Invisible characters (joiners, variation selectors, the Hangul filler, bidi
    controls) are refused with their own code, so the form can say which character
    is wrong instead of "letters and digits only". Uniqueness uses
    `common.names.canonical` and look-alikes `common.names.skeleton` (server side).
    """
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("username", "invalid_username", "Username is required.")
    hidden = hidden_characters(value.strip())
    if hidden:
        raise ValidationError(
            "username",
            "username_invisible",
            f"Username contains invisible characters ({', '.join(hidden[:3])}).",
        )
    name = unicodedata.normalize("NFKC", value.strip())
    if not min_len <= len(name) <= max_len:
        raise ValidationError(
            "username",
            "invalid_username",
            f"Username must be {min_len} to {max_len} characters long.",
        )
    if not all(_is_name_char(ch) for ch in name) or unicodedata.category(name[0]) in ("Mn", "Mc"):
        raise ValidationError(
            "username",
            "invalid_username",
            "Username may contain only letters, digits and underscores.",
        )
    if canonical(name) != canonical(canonical(name)) or not canonical(name):
        raise ValidationError("username", "invalid_username", "Username is not stable.")
    return name


def validate_password(value: Any, min_len: int = 8) -> str:
    if not isinstance(value, str) or value == "":
        raise ValidationError("password", "invalid_password", "Password is required.")
    if len(value) < min_len:
        raise ValidationError(
            "password", "invalid_password", f"Password must be at least {min_len} characters."
        )
    if len(value) > PASSWORD_MAX:
        raise ValidationError(
            "password", "invalid_password", f"Password must be at most {PASSWORD_MAX} characters."
        )
    if "\x00" in value or value.strip() == "":
        raise ValidationError(
            "password", "invalid_password", "Password contains invalid characters."
        )
    has_letter = any(ch.isalpha() for ch in value)
    has_other = any(not ch.isalpha() for ch in value)
    if not (has_letter and has_other):
        raise ValidationError(
            "password",
            "invalid_password",
            "Password must mix letters with digits or symbols.",
        )
    return value


def validate_email(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("email", "invalid_email", "Email is required.")
    email = value.strip()
    if len(email) > EMAIL_MAX or not _EMAIL.match(email):
        raise ValidationError("email", "invalid_email", "Email address is not valid.")
    local, _, domain = email.rpartition("@")
    return f"{local}@{domain.lower()}"


def validate_sex(value: Any) -> str:
    if not isinstance(value, str) or value.strip().lower() not in SEXES:
        raise ValidationError("sex", "invalid_sex", "Choose male, female or other.")
    return value.strip().lower()


def validate_age(value: Any) -> int:
    if isinstance(value, bool):
        raise ValidationError("age", "invalid_age", "Age must be a whole number.")
    if isinstance(value, str):
        value = value.strip()
        # isdigit() alone accepts "²" and other digits int() refuses; three ASCII
        # digits are all an age can need.
        if not (value.isascii() and value.isdigit() and len(value) <= 3):
            raise ValidationError("age", "invalid_age", "Age must be a whole number.")
        value = int(value)
    if not isinstance(value, int):
        raise ValidationError("age", "invalid_age", "Age must be a whole number.")
    if not MIN_AGE <= value <= MAX_AGE:
        raise ValidationError("age", "invalid_age", f"Age must be between {MIN_AGE} and {MAX_AGE}.")
    return value


def validate_room_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("name", "invalid_room_name", "Group name is required.")
    name = unicodedata.normalize("NFC", value.strip())
    if len(name) > ROOM_NAME_MAX:
        raise ValidationError(
            "name", "invalid_room_name", f"Group name must be at most {ROOM_NAME_MAX} characters."
        )
    if any(unicodedata.category(ch)[0] == "C" for ch in name):
        raise ValidationError(
            "name", "invalid_room_name", "Group name contains invalid characters."
        )
    return name


def validate_registration(
    fields: Mapping[str, Any],
    *,
    username_min: int = 2,
    username_max: int = 32,
    password_min: int = 8,
) -> dict[str, Any]:
    """Validate a whole registration form; the first broken field is reported.

    `confirm` (the repeated password) is checked only when present, because only
    the form has it; the server receives the password once.
    """
    username = validate_username(fields.get("username"), username_min, username_max)
    password = validate_password(fields.get("password"), password_min)
    if "confirm" in fields and fields["confirm"] != password:
        raise ValidationError("confirm", "invalid_password", "The two passwords do not match.")
    if password.casefold() == username.casefold():
        raise ValidationError(
            "password", "invalid_password", "Password must differ from the username."
        )
    return {
        "username": username,
        "password": password,
        "email": validate_email(fields.get("email")),
        "sex": validate_sex(fields.get("sex")),
        "age": validate_age(fields.get("age")),
    }
