"""Registering, logging in (again) and out: the flows that create and end a session.

Why it exists: login is more than a request. It checks the certificate the server
hands back against the pinned CA, opens this account's local store, unseals this
machine's keys (or says, with a `key_missing` event, why it cannot), reuses the live
session on a re-login after a drop, remembers the credentials for the next drop, and
then resends whatever waited in the outbox. Keeping that here leaves `ChatClient` a
façade.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from client.core.connection import Connection
from client.core.directory import fetch_remaining_requests
from client.core.event_types import KeyMissing
from client.core.events import Emit
from client.core.kem_keys import (
    made_key_ids,
    new_user_keys,
    publish_if_needed,
    with_current_kem_key,
)
from client.core.keystore import KeyStore, server_id_for
from client.core.link import ServerLink, server_ca
from client.core.models import Profile
from client.core.reconnect import Reconnector
from client.core.session import (
    Limits,
    Session,
    SessionSlot,
    SessionWiring,
    bytes_field,
    open_session,
    parse_limits,
    parse_profile,
)
from client.core.store import LocalStore
from client.core.transparency import (
    TransparencyError,
    ca_public_key,
    own_key_checker,
    verify_standalone,
)
from client.core.trust import Identity, keys_match
from common.crypto.certs import UserCertificate, build_csr, load_user_certificate
from common.crypto.keys import UserKeys
from common.errors import (
    CertificateError,
    ConnectionLost,
    KeyStoreError,
    RequestError,
    RequestTimeout,
    ValidationError,
)
from common.protocol.opcodes import MessageType
from common.validation import validate_registration

log = logging.getLogger(__name__)


MONITOR_INTERVAL = 600.0  # seconds between checks of our own entries in the key log


class Accounts:
    """Register, log in, log in again after a drop, log out."""

    def __init__(
        self,
        *,
        link: ServerLink,
        keystore: KeyStore,
        slot: SessionSlot,
        reconnector: Reconnector,
        wiring: SessionWiring,
        connect: Callable[[], None],
        resume_uploads: Callable[[Session], None],
    ) -> None:
        self._link = link
        self._connect = connect
        self._keystore = keystore
        self._slot = slot
        self._reconnector = reconnector
        self._wiring = wiring
        self._resume_uploads = resume_uploads
        self.monitor_interval = MONITOR_INTERVAL

    @property
    def _emit(self) -> Emit:
        return self._wiring.emit

    def register(self, username: str, password: str, email: str, sex: str, age: int) -> None:
        """Create keys and a CSR, register, and seal the keys under the password."""
        try:
            fields = validate_registration(
                {"username": username, "password": password, "email": email, "sex": sex, "age": age}
            )
        except ValidationError as exc:
            raise RequestError(exc.code, exc.message, exc.field) from exc
        self._connect()
        conn = self._link.current()
        keys = new_user_keys(_now_ms())
        csr = build_csr(fields["username"], fields["email"], keys)
        reply = conn.request(MessageType.REGISTER, {**fields, "csr": csr})
        ca = server_ca(conn)
        certificate = load_user_certificate(bytes_field(reply, "certificate"), ca)
        if not keys_match(keys, certificate):
            raise CertificateError("the server certified keys that are not ours")
        verify_standalone(
            ca_public_key(ca), certificate.username, certificate.der, reply.get("transparency")
        )
        server_id = server_id_for(self._link.server_fingerprint)
        self._keystore.save(server_id, certificate.username, keys, password)

    def login(self, username: str, password: str) -> Session:
        """Log in on the current connection (also the reconnect thread's re-login)."""
        with self._slot.lock:
            conn = self._link.current()
            reply = conn.request(MessageType.LOGIN, {"username": username, "password": password})
            session = self._adopt_session(conn, reply, password)
            self._reconnector.remember(session.username, password)
        # Before login returns: nobody can seal a chain to us until the key is out.
        published = self._publish_kem_key(session, conn.request)
        threading.Thread(
            target=self._after_login, args=(session, published), name="uchat-resend", daemon=True
        ).start()
        return session

    def _publish_kem_key(self, session: Session, request: Any) -> bool:
        """Publish our signed KEM key unless the server serves it; False if that failed."""
        identity = session.identity
        if identity is None or identity.keys.kem is None:
            return True
        try:
            publish_if_needed(
                request, identity.username, identity.keys, session.transparency.check_key
            )
        except Exception as exc:  # retried by the after-login task; never fail the login
            log.warning("publishing the KEM key failed: %s", exc)
            return False
        return True

    def _adopt_session(self, conn: Connection, reply: dict[str, Any], password: str) -> Session:
        """Reuse the session on re-login; otherwise open the store and load the keys."""
        profile = parse_profile(reply.get("profile"))
        limits = parse_limits(reply.get("limits"))
        ca = server_ca(conn)
        certificate = load_user_certificate(bytes_field(reply, "certificate"), ca)
        server_id = server_id_for(self._link.server_fingerprint)
        current = self._slot.get()
        if current is not None and (current.username, current.server_id) == (
            profile.username,
            server_id,
        ):
            current.contacts.replace(reply)
            current.limits = limits
            return current
        if current is not None:
            self._slot.set(None)
            current.close()
        session = self._new_session(profile, server_id, certificate, ca, limits, password)
        session.contacts.replace(reply)
        self._slot.set(session)
        self._check_own_certificate(session, certificate, reply)
        return session

    @staticmethod
    def _check_own_certificate(
        session: Session, certificate: UserCertificate, reply: dict[str, Any]
    ) -> None:
        """Our own certificate must be in the log too; a refusal alarms and blocks chat,
        but the session opens so the user can read what happened."""
        try:
            session.transparency.check_certificate(
                certificate.username, certificate.der, reply.get("transparency")
            )
        except TransparencyError as exc:
            log.warning("own certificate failed the key log check: %s", exc.code)

    def _new_session(
        self,
        profile: Profile,
        server_id: str,
        certificate: UserCertificate,
        ca: bytes,
        limits: Limits,
        password: str,
    ) -> Session:
        store = LocalStore(self._keystore.store_path(server_id, profile.username))
        identity = self._load_identity(server_id, profile.username, password, certificate)
        if identity is not None:  # remembered for good: monitoring knows our old keys too
            store.add_own_kem_keys(made_key_ids(identity.keys))
        return open_session(
            profile, server_id, certificate, ca, limits, identity, store, self._wiring
        )

    def _load_identity(
        self, server_id: str, username: str, password: str, certificate: UserCertificate
    ) -> Identity | None:
        """This machine's keys, or None (with a `key_missing` event) if we cannot use them."""
        if not self._keystore.exists(server_id, username):
            reason = "no key file for this account on this computer"
        else:
            try:
                keys = self._keystore.load(server_id, username, password)
            except KeyStoreError as exc:
                reason = str(exc)
            else:
                if keys_match(keys, certificate):
                    keys = self._upgrade_keys(server_id, username, password, keys)
                    return Identity(username, keys, certificate)
                reason = "the key file on this computer does not match your certificate"
        self._emit(KeyMissing(username, reason))
        return None

    def _upgrade_keys(
        self, server_id: str, username: str, password: str, keys: UserKeys
    ) -> UserKeys:
        """Give a key file from before end-to-end v2 its KEM key, or rotate a due one."""
        updated = with_current_kem_key(keys, _now_ms())
        if updated is None:
            return keys
        try:
            self._keystore.save(server_id, username, updated, password)
        except KeyStoreError as exc:  # keep working with the old keys; retry next login
            log.warning("could not save the new KEM key: %s", exc)
            return keys
        return updated

    def _after_login(self, session: Session, published: bool = True) -> None:
        """Publish our KEM key if login could not, resend the outbox, try held deliveries
        again and resume uploads; failures wait. Catch up on each group's signed
        membership. Then check our own entries in the key log, now and every
        `MONITOR_INTERVAL`."""
        if not published:
            self._publish_kem_key(session, self._wiring.request)
        try:
            fetch_remaining_requests(session.contacts, self._wiring.request)
            session.outbox.replay()
            if session.receipts is not None:
                session.receipts.flush()
            if session.inbox is not None:
                session.inbox.recheck_held()
            self._resume_uploads(session)
        except Exception as exc:  # a background task: report, never crash the process
            log.info("resending after login stopped: %s", exc)
        try:
            rooms = [c.room_id for c in session.contacts.all() if c.kind == "room"]
            session.membership.catch_up(rooms)
        except Exception as exc:  # a background task: report, never crash the process
            log.info("catching up on group membership stopped: %s", exc)
        self._monitor(session, periodic=session.transparency.claim_monitoring())

    def _monitor(self, session: Session, periodic: bool) -> None:
        if self._slot.get() is not session:
            return  # logged out or another account: stop
        store = session.store
        if session.identity is not None:
            checker = own_key_checker(session.identity.keys.identity_public, store.own_kem_key_ids)
        else:
            checker = own_key_checker(session.certificate.identity_public)
        try:
            session.transparency.monitor(session.username, checker)
        except Exception as exc:  # a background task: report, never crash the process
            log.info("key log monitoring did not complete: %s", exc)
        if periodic:
            timer = threading.Timer(self.monitor_interval, self._monitor, (session, True))
            timer.daemon = True
            timer.start()

    def logout(self) -> None:
        """Tell the server, forget the credentials and close the local store."""
        with self._slot.lock:
            self._reconnector.forget()
            conn = self._link.live_or_none()
            session = self._slot.get()
            if conn is not None and session is not None and session.acks is not None:
                session.acks.flush()  # what was stored is acknowledged before leaving
            if conn is not None:
                try:
                    conn.request(MessageType.LOGOUT)
                except (ConnectionLost, RequestTimeout, RequestError) as exc:
                    log.info("logout request failed: %s", exc)
            self._slot.close()


def _now_ms() -> int:
    return int(time.time() * 1000)
