"""Accepting a user's signed KEM key: the one place a KEM key enters the server.

The server cannot be trusted with end-to-end keys, so clients verify every KEM key
against their pin of the owner's identity key anyway; the server's check only keeps
garbage and other users' keys out of its directory. The key-transparency append is
made here, after the checks and beside `kem_keys.store`, in the same transaction, so
every KEM key the server will ever serve is in the log, and neither exists alone.
"""

from __future__ import annotations

from common.crypto.certs import ServerIdentity, load_user_certificate
from common.crypto.kem import SignedKemKey
from common.errors import CertificateError, EndToEndError, RequestError
from server.storage import kem_keys, keylog
from server.storage.database import Database
from server.storage.users import User
from server.transparency import TransparencyLog

#: A key may claim a creation time at most this far in the server's future (clock skew).
MAX_FUTURE_SKEW_MS = 24 * 3600 * 1000


def accept_kem_key(
    db: Database,
    identity: ServerIdentity,
    log: TransparencyLog,
    user: User,
    encoded: bytes,
    now_ms: int,
) -> SignedKemKey:
    """Verify `encoded` was signed by `user`'s certified identity key, store it, log it.

    Refused (RequestError): malformed, signed by any other key, dated in the future,
    or not newer than the user's current key (no rollback to an old key).
    """
    try:
        signed = SignedKemKey.from_bytes(encoded)
        certificate = load_user_certificate(user.certificate, identity.certificate_der)
        signed.verify(certificate.identity_public)
    except (EndToEndError, CertificateError):
        raise RequestError(
            "bad_kem_key", "the KEM key is not signed by your identity key", "kem_key"
        ) from None
    if signed.created_ms > now_ms + MAX_FUTURE_SKEW_MS:
        raise RequestError("bad_kem_key", "the KEM key is dated in the future", "kem_key")
    # Cluster nodes: hold the log from this check to the append, so two publications
    # of one account on two nodes cannot both pass it and log an older key after a
    # newer one (monitoring and the auditor alarm on that). SQLite: one writer anyway.
    keylog.lock_for_append(db)
    newest = kem_keys.current_created(db, user.id)
    if newest is not None and signed.created_ms <= newest:
        raise RequestError("stale_kem_key", "a newer KEM key is already published", "kem_key")
    kem_keys.store(db, user.id, signed.key_id, signed.created_ms, encoded, now_ms)
    log.append("kem_key", user.username, encoded)
    return signed
