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
    "username_invisible": "username",
    "username_confusable": "username",
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


# (exception type, catalog key, field): checked in order, the first match wins.
_BY_TYPE: tuple[tuple[type[BaseException], str, str | None], ...] = (
    (CertificateError, "error.certificate", None),
    (ConnectionLost, "error.connection", "server"),
    (RequestTimeout, "error.timeout", "server"),
    (KeyStoreError, "error.keystore", None),
    (RemoteProtocolError, "error.protocol", None),
)


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
    for kind, key, field in _BY_TYPE:
        if isinstance(exc, kind):
            return Problem(i18n.t(key, server=server, detail=str(exc)), field)
    if isinstance(exc, UchatError | OSError) and str(exc):
        return Problem(str(exc))
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
