"""One exception hierarchy for the whole project.

Callers catch the narrowest class they can handle; everything Uchat raises on
purpose is a `UchatError`, so anything else escaping is a bug.
"""

from __future__ import annotations


class UchatError(Exception):
    """Base of every error Uchat raises deliberately."""


class ProtocolError(UchatError):
    """The wire format or the message flow was violated."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow: close the connection."""


class CryptoError(UchatError):
    """A record failed authentication or decryption.

    Deliberately carries no detail: a bad MAC, bad padding, a replay or a
    truncated record all look the same to whoever sent it.
    """

    def __init__(self, message: str = "record authentication failed") -> None:
        super().__init__(message)


class HandshakeError(CryptoError):
    """The secure channel could not be established; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class CertificateError(CryptoError):
    """A certificate or CSR is malformed, badly signed, expired or not ours."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class KeyStoreError(UchatError):
    """A key file could not be read: wrong password, corrupt or missing."""


class ConfigError(UchatError):
    """The configuration (file, environment or flags) is invalid."""


class ValidationError(UchatError):
    """A user-supplied field breaks a rule.

    `field` names the form field and `code` is the stable error code shared with
    the wire protocol, so the client can show the message next to the field.
    """

    def __init__(self, field: str, code: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.code = code
        self.message = message


class RequestError(UchatError):
    """The server refused a request; `code` is stable, `message` is for people."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field


class RequestTimeout(UchatError):
    """No reply arrived in time."""


class ConnectionLost(UchatError):
    """The connection closed before the request completed."""


class EndToEndError(CryptoError):
    """An end-to-end object (KEM key, distribution, envelope, ratchet step) was refused.

    Opaque on purpose, like `CryptoError`: a forged signature, a bad MAC, a wrong
    binding or a replayed key all look the same to whoever made the object.
    """

    def __init__(self, message: str = "end-to-end message rejected") -> None:
        super().__init__(message)


class MembershipError(UchatError):
    """A room's membership log does not verify; the message says which event and why.

    Unlike `EndToEndError` this is meant for people: the client shows it in the
    conversation ("event 7: a join without an admin's approval").
    """
