"""Linking a computer, without a window: the code field's check and the texts shown.

Used by `device_link_form.py` on both computers; testable without a display.
"""

from __future__ import annotations

from client import i18n
from common.crypto.device_link import normalise_code

CODE_DIGITS = 8


def check_code(text: str) -> str:
    """The eight digits typed (spaces and dashes allowed), or ValueError with the message."""
    digits = normalise_code(text.strip())
    if not digits:
        raise ValueError(i18n.t("error.required"))
    if len(digits) != CODE_DIGITS or not (digits.isascii() and digits.isdigit()):
        raise ValueError(i18n.t("link.code_format"))
    return digits


def format_code(code: str) -> str:
    """'12345678' -> '1234 5678': easier to read aloud and to type."""
    return f"{code[:4]} {code[4:]}" if len(code) == CODE_DIGITS else code


def failure_text(reason: str) -> str:
    """The sentence for a `LinkFailed` reason (unknown reasons read as a failure)."""
    key = f"link.failed.{reason}"
    return i18n.t(key) if i18n.has(key) else i18n.t("link.failed.failed")
