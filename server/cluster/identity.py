"""One server identity (CA key and certificate) for every node of a cluster.

Clients pin one fingerprint, so every node must serve the same CA. Two ways:
- the operator provides the key and certificate files (`key_file`, `cert_file`; the
  key may be PEM-encrypted with the passphrase), e.g. kept on each host by their
  configuration management;
- otherwise the first node to start creates the identity and stores it in PostgreSQL
  (`uchat_identity`), the key PKCS#8-encrypted with the operator's passphrase
  (cryptography's BestAvailableEncryption); every later node reads and decrypts it.
  A database dump or backup therefore never holds the CA key in the clear.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from common.crypto.certs import ServerIdentity
from common.errors import CertificateError
from server.storage.postgres import PostgresDatabase

MIN_PASSPHRASE = 12


def _check_passphrase(passphrase: bytes) -> None:
    if len(passphrase) < MIN_PASSPHRASE:
        raise CertificateError(
            f"the cluster CA passphrase must be at least {MIN_PASSPHRASE} bytes long"
        )


def from_files(key_file: Path, cert_file: Path, passphrase: bytes | None) -> ServerIdentity:
    """The identity the operator provides; the key file must be the owner's only."""
    if os.name == "posix" and key_file.stat().st_mode & 0o077:
        raise CertificateError(f"server key {key_file} is readable by others: chmod 600 it")
    return ServerIdentity.from_pem(
        key_file.read_bytes(), cert_file.read_bytes(), password=passphrase or None
    )


def from_database(db: PostgresDatabase, passphrase: bytes) -> ServerIdentity:
    """The cluster's identity from PostgreSQL, created there by the first node to ask.

    Two nodes starting at once both generate one, but only the first INSERT lands and
    both then read that row: one fingerprint for the cluster.
    """
    _check_passphrase(passphrase)
    row = db.one("SELECT key_pem, certificate_pem FROM uchat_identity")
    if row is None:
        fresh = ServerIdentity.create()
        db.execute(
            "INSERT INTO uchat_identity (one, key_pem, certificate_pem, created_at)"
            " VALUES (1, ?, ?, ?) ON CONFLICT (one) DO NOTHING",
            (fresh.encrypted_key_pem(passphrase), fresh.certificate_pem, int(time.time() * 1000)),
        )
        db.commit()
        row = db.one("SELECT key_pem, certificate_pem FROM uchat_identity")
        if row is None:  # pragma: no cover - the row was just written or already there
            raise CertificateError("the cluster identity could not be stored")
    db.commit()
    return ServerIdentity.from_pem(bytes(row[0]), bytes(row[1]), password=passphrase)


def cluster_identity(
    db: PostgresDatabase,
    passphrase: bytes,
    key_file: Path | None = None,
    cert_file: Path | None = None,
) -> ServerIdentity:
    """The operator's files when given, else the identity kept in the database."""
    if key_file is not None or cert_file is not None:
        if key_file is None or cert_file is None:
            raise CertificateError("give both the CA key file and the CA certificate file")
        return from_files(key_file, cert_file, passphrase)
    return from_database(db, passphrase)
