"""Audit a Uchat key transparency log from outside the server.

    python -m server.audit --db DATA_DIR/uchat.db --ca DATA_DIR/server_ca_cert.pem
    python -m server.audit --server HOST:PORT --fingerprint HEX --username U

The first reads a copy of the database file; the second downloads the log over the
real protocol (as a logged-in user; the password is read from UCHAT_AUDIT_PASSWORD
or asked for). Either way every entry is re-hashed into the tree, every certificate
is checked against the CA and the name it is logged under, every signed KEM key
against the identity keys the log holds for its name (from certificates logged
before it), every signed tree head is checked (signature, root, time order), and
usernames with more than one identity key, with a KEM key their identity key did
not sign, or with a KEM key logged again or out of order (not newer than one logged
before under the name: the server accepts only newer keys, so this is an old key of
the user served again) are reported: the trace a server leaves when it gives someone
a second key.

Exit status: 0 all good, 1 the log or a head does not verify, 2 it verifies but some
username has more than one identity key, a KEM key its identity key did not sign, or
a KEM key logged again.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from common.crypto import merkle
from common.crypto.certs import fingerprint, load_user_certificate
from common.crypto.kem import SignedKemKey
from common.crypto.merkle import LogEntry, MemoryTree, ProofError, TreeHead
from common.errors import CertificateError, EndToEndError, UchatError

PAGE = 256


@dataclass
class AuditReport:
    entries: int = 0
    heads: int = 0
    problems: list[str] = field(default_factory=list)
    identity_keys: dict[str, set[str]] = field(default_factory=dict)
    kem_keys: int = 0
    #: username -> positions of KEM key entries no identity key logged for it signed
    unsigned_kem_keys: dict[str, list[int]] = field(default_factory=dict)
    #: username -> positions of signed KEM keys not newer than one logged before them
    replayed_kem_keys: dict[str, list[int]] = field(default_factory=dict)
    newest_kem_key: dict[str, int] = field(default_factory=dict)  # name -> created (ms)

    @property
    def duplicates(self) -> dict[str, list[str]]:
        """username -> its identity keys (hex), for names with more than one."""
        return {
            name: sorted(keys) for name, keys in sorted(self.identity_keys.items()) if len(keys) > 1
        }

    @property
    def status(self) -> int:
        if self.problems:
            return 1
        return 2 if self.duplicates or self.unsigned_kem_keys or self.replayed_kem_keys else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "heads": self.heads,
            "kem_keys": self.kem_keys,
            "problems": self.problems,
            "usernames_with_several_keys": self.duplicates,
            "usernames_with_unsigned_kem_keys": dict(sorted(self.unsigned_kem_keys.items())),
            "usernames_with_replayed_kem_keys": dict(sorted(self.replayed_kem_keys.items())),
        }


def audit(
    entries: Iterable[tuple[int, LogEntry]], heads: Sequence[TreeHead], ca_der: bytes
) -> AuditReport:
    """Rebuild the tree from `entries` (in position order) and check it and `heads`."""
    report = AuditReport()
    ca_public = (
        x509.load_der_x509_certificate(ca_der)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    tree = MemoryTree()
    for position, entry in entries:
        if position != tree.size:
            report.problems.append(f"entry {position}: expected position {tree.size} (gap)")
            return report
        try:
            tree.append_leaf_hash(entry.leaf_hash)
        except ValueError as exc:
            report.problems.append(f"entry {position}: {exc}")
            return report
        _check_entry(report, position, entry, ca_der)
    report.entries = tree.size
    last_time = -1
    for head in sorted(heads, key=lambda h: h.size):
        report.heads += 1
        try:
            merkle.verify_tree_head(head, ca_public)
        except ProofError:
            report.problems.append(f"head of size {head.size}: bad signature")
            continue
        if head.size > tree.size:
            report.problems.append(
                f"head of size {head.size}: the log has only {tree.size} entries"
            )
        elif tree.root(head.size) != head.root:
            report.problems.append(f"head of size {head.size}: root does not match the entries")
        if head.timestamp < last_time:
            report.problems.append(f"head of size {head.size}: signed earlier than a smaller head")
        last_time = max(last_time, head.timestamp)
    if not heads:
        report.problems.append("no signed tree head to check the entries against")
    return report


def _check_entry(report: AuditReport, position: int, entry: LogEntry, ca_der: bytes) -> None:
    if entry.kind == "kem_key":
        _check_kem_key(report, position, entry)
        return
    try:
        certificate = x509.load_der_x509_certificate(entry.payload)
        # Expiry is not the auditor's business: check issuance as of the start date.
        verified = load_user_certificate(
            entry.payload, ca_der, now=certificate.not_valid_before_utc
        )
    except (CertificateError, ValueError) as exc:
        report.problems.append(f"entry {position}: certificate does not verify: {exc}")
        return
    if verified.username.casefold() != entry.username.casefold():
        report.problems.append(
            f"entry {position}: certificate names {verified.username!r},"
            f" logged under {entry.username!r}"
        )
    report.identity_keys.setdefault(entry.username.casefold(), set()).add(
        verified.identity_public.hex()
    )


def _check_kem_key(report: AuditReport, position: int, entry: LogEntry) -> None:
    """A signed KEM key must be signed by an identity key certified for its name, and
    be newer than every signed KEM key logged before it under that name."""
    report.kem_keys += 1
    name = entry.username.casefold()
    try:
        signed = SignedKemKey.from_bytes(entry.payload)
    except EndToEndError:
        report.unsigned_kem_keys.setdefault(name, []).append(position)
        return
    for identity in report.identity_keys.get(name, ()):
        try:
            signed.verify(bytes.fromhex(identity))
        except EndToEndError:
            continue
        if signed.created_ms <= report.newest_kem_key.get(name, -1):
            report.replayed_kem_keys.setdefault(name, []).append(position)
        else:
            report.newest_kem_key[name] = signed.created_ms
        return
    report.unsigned_kem_keys.setdefault(name, []).append(position)


# -- sources ----------------------------------------------------------------------------


def from_database(path: Path) -> tuple[list[tuple[int, LogEntry]], list[TreeHead]]:
    """Entries and heads from a database file, opened read-only."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT position, kind, username, payload FROM kt_entries ORDER BY position"
        ).fetchall()
        head_rows = connection.execute(
            "SELECT size, root, timestamp, signature FROM kt_heads ORDER BY size"
        ).fetchall()
    finally:
        connection.close()
    entries = [(int(p), LogEntry(str(k), str(u), bytes(b))) for p, k, u, b in rows]
    heads = [TreeHead(int(s), bytes(r), int(t), bytes(g)) for s, r, t, g in head_rows]
    return entries, heads


def from_server(
    host: str, port: int, fingerprint_hex: str, username: str, password: str
) -> tuple[list[tuple[int, LogEntry]], list[TreeHead], bytes]:
    """Log in and page through KT_RANGE; returns entries, the newest head and the CA."""
    from client.core.connection import Connection
    from common.protocol.opcodes import MessageType

    connection = Connection(
        host,
        port,
        on_push=lambda _c, _m: None,
        on_lost=lambda _c, _e: None,
        expected_fingerprint=fingerprint_hex,
        timeout=30.0,
    )
    connection.open()
    try:
        if connection.server_certificate is None:
            raise UchatError("the server presented no certificate")
        ca = connection.server_certificate
        connection.request(MessageType.LOGIN, {"username": username, "password": password})
        head = TreeHead.from_wire(connection.request(MessageType.KT_TREE_HEAD, {})["head"])
        entries: list[tuple[int, LogEntry]] = []
        while len(entries) < head.size:
            reply = connection.request(MessageType.KT_RANGE, {"start": len(entries), "count": PAGE})
            page = reply.get("entries")
            if not isinstance(page, list) or not page:
                raise UchatError(f"the server stopped answering at entry {len(entries)}")
            for item in page:
                entries.append(
                    (
                        int(item["position"]),
                        LogEntry(str(item["kind"]), str(item["username"]), bytes(item["payload"])),
                    )
                )
        return entries[: head.size], [head], ca
    finally:
        connection.close()


def _ca_from_file(path: Path) -> bytes:
    data = path.read_bytes()
    certificate = (
        x509.load_pem_x509_certificate(data)
        if b"-----BEGIN" in data
        else x509.load_der_x509_certificate(data)
    )
    return certificate.public_bytes(Encoding.DER)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m server.audit", description=__doc__.split("\n")[0]
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--db", type=Path, help="a copy of the server's uchat.db")
    source.add_argument("--server", help="HOST:PORT of a running server")
    parser.add_argument("--ca", type=Path, help="the server CA certificate (with --db)")
    parser.add_argument("--fingerprint", help="the server fingerprint to pin (with --server)")
    parser.add_argument("--username", help="an account to log in with (with --server)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.db is not None:
            if args.ca is None:
                raise UchatError("--db needs --ca (the server_ca_cert.pem beside it)")
            entries, heads = from_database(args.db)
            ca = _ca_from_file(args.ca)
        else:
            if not (args.fingerprint and args.username):
                raise UchatError("--server needs --fingerprint and --username")
            host, _, port = args.server.rpartition(":")
            password = os.environ.get("UCHAT_AUDIT_PASSWORD") or getpass.getpass()
            entries, heads, ca = from_server(
                host, int(port), args.fingerprint, args.username, password
            )
    except (UchatError, OSError, sqlite3.Error, ValueError, KeyError) as exc:
        print(f"audit failed: {exc}", file=sys.stderr)
        return 1
    report = audit(entries, heads, ca)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(
            f"CA {fingerprint(ca)}: {report.entries} entries ({report.kem_keys} KEM keys),"
            f" {report.heads} signed heads checked"
        )
        for problem in report.problems:
            print(f"PROBLEM {problem}")
        for name, keys in report.duplicates.items():
            print(f"SEVERAL KEYS {name}: {', '.join(keys)}")
        for name, positions in sorted(report.unsigned_kem_keys.items()):
            where = ", ".join(str(p) for p in positions)
            print(f"UNSIGNED KEM KEY {name}: entries {where} not signed by its identity key")
        for name, positions in sorted(report.replayed_kem_keys.items()):
            where = ", ".join(str(p) for p in positions)
            print(f"REPLAYED KEM KEY {name}: entries {where} not newer than a key before them")
        if report.status == 0:
            print(
                "OK: every entry and head verifies; one identity key per username;"
                " every KEM key signed by its owner's identity key and newer than the last"
            )
    return report.status


if __name__ == "__main__":
    sys.exit(main())
