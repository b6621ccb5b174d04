"""Turn what a request raised into a sentence for the user, and the field it belongs to.

Every form shows errors inline, next to the field that caused them, so the mapping
from exceptions and server error codes to (field, message) lives here, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from client import i18n
from common.errors import (
    CertificateError,
    ConnectionLost,
    HandshakeError,
    KeyStoreError,
    RemoteProtocolError,
    RequestError,
    RequestTimeout,
    UchatError,
    ValidationError,
)

# Server codes whose field the server does not name but the user needs pointed at.
CODE_FIELDS: dict[str, str] = {
    "username_taken": "username",
    "email_taken": "email",
    "invalid_username": "username",
    "invalid_password": "password",
    "invalid_email": "email",
    "invalid_sex": "sex",
    "invalid_age": "age",
}

PIN_MISMATCH_HINT = "pinned fingerprint"


@dataclass(frozen=True)
class Problem:
    """A message for the user; `field` is the form field to show it under, or None."""

    message: str
    field: str | None = None


def describe_error(exc: BaseException, server: str = "") -> Problem:
    """The inline message for anything a request can raise."""
    if isinstance(exc, RequestError):
        return _describe_request_error(exc)
    if isinstance(exc, ValidationError):
        return Problem(validation_message(exc, {}), exc.field)
    if isinstance(exc, HandshakeError):
        if PIN_MISMATCH_HINT in str(exc):
            return Problem(i18n.t("error.pin_mismatch", server=server), "server")
        return Problem(i18n.t("error.handshake", detail=str(exc)), "server")
    if isinstance(exc, CertificateError):
        return Problem(i18n.t("error.certificate", detail=str(exc)))
    if isinstance(exc, ConnectionLost):
        return Problem(i18n.t("error.connection", server=server), "server")
    if isinstance(exc, RequestTimeout):
        return Problem(i18n.t("error.timeout"), "server")
    if isinstance(exc, KeyStoreError):
        return Problem(i18n.t("error.keystore", detail=str(exc)))
    if isinstance(exc, RemoteProtocolError):
        return Problem(i18n.t("error.protocol"))
    if isinstance(exc, UchatError | OSError):
        return Problem(str(exc) or i18n.t("error.unexpected"))
    return Problem(i18n.t("error.unexpected"))


def _describe_request_error(exc: RequestError) -> Problem:
    field = exc.field or CODE_FIELDS.get(exc.code)
    key = f"error.{exc.code}"
    message = i18n.t(key) if i18n.has(key) else exc.message
    return Problem(message, field)


def validation_message(exc: ValidationError, values: Mapping[str, str]) -> str:
    """A translated sentence for a broken form field (the rules are common.validation's)."""
    value = values.get(exc.field)
    if value is not None and not str(value).strip():
        return i18n.t("error.required")
    if exc.field == "confirm":
        return i18n.t("error.password_mismatch")
    username = values.get("username", "")
    password = values.get("password", "")
    if exc.field == "password" and username and password.casefold() == username.strip().casefold():
        return i18n.t("error.password_is_username")
    key = f"error.{exc.code}"
    return i18n.t(key) if i18n.has(key) else exc.message
