"""Users' certificates: verified against the CA, pinned on first sight, changes parked.

Certificates come from the server but are trusted only after two checks: they must be
issued by the CA whose fingerprint we pinned in the handshake, and they must match
the certificate pinned for that user on first sight. A different key is never
accepted silently: it is parked, reported once through `on_key_changed`, and every
message to or from that user is refused until `trust_new_key` is called.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from common.crypto.certs import (
    UserCertificate,
    fingerprint,
    load_user_certificate,
    safety_number,
)
from common.crypto.e2e import open_sealed
from common.crypto.keys import UserKeys
from common.errors import (
    CertificateError,
    ConnectionLost,
    RequestError,
    RequestTimeout,
)


class PinnedCertificates(Protocol):
    """The slice of `LocalStore` this module needs."""

    def pinned_certificate(self, username: str) -> bytes | None: ...

    def pin_certificate(self, username: str, der: bytes) -> None: ...


class KeyChangedError(RequestError):
    """A user's certificate differs from the pinned one and was not trusted yet."""

    def __init__(self, username: str, old_fingerprint: str, new_fingerprint: str) -> None:
        super().__init__(
            "key_changed",
            f"{username}'s key changed; compare the safety number, then trust the new key",
            None,
        )
        self.username = username
        self.old_fingerprint = old_fingerprint
        self.new_fingerprint = new_fingerprint


KeyChangedHandler = Callable[[str, str, str], None]


class CertificateBook:
    """Verified, pinned user certificates, cached for the session; thread-safe."""

    def __init__(
        self,
        *,
        ca_certificate: bytes,
        pins: PinnedCertificates,
        fetch_user: Callable[[str], bytes],
        fetch_room: Callable[[int], Mapping[str, bytes]],
        on_key_changed: KeyChangedHandler,
    ) -> None:
        self._ca = ca_certificate
        self._pins = pins
        self._fetch_user = fetch_user
        self._fetch_room = fetch_room
        self._on_key_changed = on_key_changed
        self._lock = threading.RLock()
        self._trusted: dict[str, UserCertificate] = {}
        self._changed: dict[str, tuple[str, UserCertificate]] = {}  # user -> (old fp, new)
        self._rooms: dict[int, dict[str, UserCertificate]] = {}

    def verify(self, username: str, der: bytes) -> UserCertificate:
        """Check `der` against the CA and the pin; KeyChangedError if it differs."""
        certificate = load_user_certificate(der, self._ca)
        if certificate.username != username:
            raise CertificateError(f"certificate names {certificate.username!r}, not {username!r}")
        with self._lock:
            pinned = self._pins.pinned_certificate(username)
            if pinned is None or self._same_keys(pinned, certificate):
                if pinned != certificate.der:
                    self._pins.pin_certificate(username, certificate.der)
                self._trusted[username] = certificate
                self._changed.pop(username, None)
                return certificate
            old = fingerprint(pinned)
            self._trusted.pop(username, None)
            previous = self._changed.get(username)
            self._changed[username] = (old, certificate)
            first_report = previous is None or previous[1].fingerprint != certificate.fingerprint
        if first_report:
            self._on_key_changed(username, old, certificate.fingerprint)
        raise KeyChangedError(username, old, certificate.fingerprint)

    def _same_keys(self, pinned_der: bytes, certificate: UserCertificate) -> bool:
        """A renewed certificate with the same keys is not a key change."""
        if pinned_der == certificate.der:
            return True
        try:
            pinned = load_user_certificate(pinned_der, self._ca)
        except CertificateError:
            return False
        return (pinned.identity_public, pinned.agreement_public) == (
            certificate.identity_public,
            certificate.agreement_public,
        )

    def certificate(self, username: str, *, refresh: bool = False) -> UserCertificate:
        """The trusted certificate of `username`, fetched on first use."""
        with self._lock:
            if username in self._changed:
                old, new = self._changed[username]
                raise KeyChangedError(username, old, new.fingerprint)
            cached = self._trusted.get(username)
        if cached is not None and not refresh:
            return cached
        try:
            der = self._fetch_user(username)
        except (ConnectionLost, RequestTimeout):
            return self._pinned_while_offline(username)
        return self.verify(username, der)

    def _pinned_while_offline(self, username: str) -> UserCertificate:
        """Offline, the pinned certificate is what we trust anyway: seal to it (not cached,
        so the server's copy is checked against the pin once we are back)."""
        pinned = self._pins.pinned_certificate(username)
        if pinned is None:
            raise ConnectionLost(f"not connected, and {username}'s key was never fetched")
        return load_user_certificate(pinned, self._ca)

    def room_certificates(
        self, room_id: int, *, refresh: bool = False
    ) -> dict[str, UserCertificate]:
        """Every member's trusted certificate; KeyChangedError names the first changed one."""
        with self._lock:
            cached = self._rooms.get(room_id)
        if cached is not None and not refresh:
            return dict(cached)
        members: dict[str, UserCertificate] = {}
        first_change: KeyChangedError | None = None
        for username, der in self._fetch_room(room_id).items():
            try:
                members[username] = self.verify(username, der)
            except KeyChangedError as change:
                first_change = first_change or change
        if first_change is not None:
            raise first_change
        with self._lock:
            self._rooms[room_id] = members
        return dict(members)

    def forget_room(self, room_id: int) -> None:
        """Membership changed: fetch the member list again before the next send."""
        with self._lock:
            self._rooms.pop(room_id, None)

    def forget_user(self, username: str) -> None:
        with self._lock:
            self._trusted.pop(username, None)

    def changed_key(self, username: str) -> UserCertificate | None:
        """The new, not yet trusted certificate of `username`, if there is one."""
        with self._lock:
            entry = self._changed.get(username)
        return entry[1] if entry else None

    def trust_new_key(self, username: str) -> UserCertificate:
        """Pin the parked certificate of `username` (the user compared safety numbers)."""
        with self._lock:
            entry = self._changed.pop(username, None)
            if entry is None:
                raise RequestError("no_key_change", f"no changed key is waiting for {username}")
            certificate = entry[1]
            self._pins.pin_certificate(username, certificate.der)
            self._trusted[username] = certificate
            for room in self._rooms.values():
                if username in room:
                    room[username] = certificate
            return certificate

    def newest(self, username: str) -> UserCertificate:
        """The certificate a person should verify now: a parked new one, else the trusted."""
        return self.changed_key(username) or self.certificate(username)


@dataclass(frozen=True)
class Identity:
    """This user's keys and verified certificate: what sealing and opening need."""

    username: str
    keys: UserKeys
    certificate: UserCertificate

    def open_from(self, sender: UserCertificate, message_id: str, envelope: bytes) -> bytes:
        """Open a version-1 envelope (sealed per recipient, before sender chains): history
        the server stored before the upgrade still opens; nothing new is sealed so."""
        return open_sealed(self.keys, self.certificate.fingerprint, sender, message_id, envelope)


def safety_number_between(mine: UserCertificate, peer: UserCertificate) -> str:
    """The 60 digits both users see identically when nobody swapped a key."""
    return safety_number(mine.username, mine.identity_public, peer.username, peer.identity_public)


def keys_match(keys: UserKeys, certificate: UserCertificate) -> bool:
    """True if `certificate` certifies exactly these private keys."""
    return (keys.identity_public, keys.agreement_public) == (
        certificate.identity_public,
        certificate.agreement_public,
    )
