"""One CA for the whole cluster: same fingerprint on every node, key encrypted at rest."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from common.crypto.certs import ServerIdentity
from common.errors import CertificateError
from server.cluster.identity import cluster_identity
from server.storage.postgres import PostgresDatabase

PASSPHRASE = b"correct horse battery staple"


def test_every_node_gets_the_same_identity(fresh_pg_dsn: Callable[[], str]) -> None:
    dsn = fresh_pg_dsn()
    nodes = [PostgresDatabase.connect(dsn) for _ in range(4)]
    found: list[str] = []
    errors: list[BaseException] = []

    def start(db: PostgresDatabase) -> None:
        try:
            found.append(cluster_identity(db, PASSPHRASE).fingerprint)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(db,)) for db in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(found) == 4 and len(set(found)) == 1
    # A node started later (a restart) still serves the same one.
    later = PostgresDatabase.connect(dsn)
    assert cluster_identity(later, PASSPHRASE).fingerprint == found[0]
    for db in [*nodes, later]:
        db.close()


def test_the_key_is_encrypted_at_rest(fresh_pg_dsn: Callable[[], str]) -> None:
    db = PostgresDatabase.connect(fresh_pg_dsn())
    try:
        identity = cluster_identity(db, PASSPHRASE)
        key_pem = bytes(db.scalar("SELECT key_pem FROM uchat_identity"))
        assert key_pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        raw = identity.key.private_bytes_raw()
        assert raw not in key_pem
        with pytest.raises(CertificateError, match="passphrase"):
            cluster_identity(db, b"not the right passphrase")
        with pytest.raises(CertificateError, match="at least"):
            cluster_identity(db, b"short")
    finally:
        db.close()


def test_an_operator_provided_identity_wins(
    fresh_pg_dsn: Callable[[], str], tmp_path: Path
) -> None:
    provided = ServerIdentity.create()
    key_file, cert_file = tmp_path / "ca.key", tmp_path / "ca.pem"
    key_file.write_bytes(provided.encrypted_key_pem(PASSPHRASE))
    key_file.chmod(0o600)
    cert_file.write_bytes(provided.certificate_pem)
    db = PostgresDatabase.connect(fresh_pg_dsn())
    try:
        got = cluster_identity(db, PASSPHRASE, key_file, cert_file)
        assert got.fingerprint == provided.fingerprint
        assert db.scalar("SELECT count(*) FROM uchat_identity") == 0
        key_file.chmod(0o644)
        with pytest.raises(CertificateError, match="readable by others"):
            cluster_identity(db, PASSPHRASE, key_file, cert_file)
        key_file.chmod(0o600)
        with pytest.raises(CertificateError, match="both"):
            cluster_identity(db, PASSPHRASE, key_file, None)
        other = ServerIdentity.create()
        cert_file.write_bytes(other.certificate_pem)
        with pytest.raises(CertificateError, match="does not match"):
            cluster_identity(db, PASSPHRASE, key_file, cert_file)
    finally:
        db.close()
