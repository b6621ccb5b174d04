"""The auditor's judgement of a log (`server.audit.audit`), on logs built here."""

from __future__ import annotations

from common.crypto import merkle
from common.crypto.certs import CsrInfo, ServerIdentity, issue_certificate
from common.crypto.kem import KemKeyPair, SignedKemKey
from common.crypto.keys import UserKeys, generate_user_keys
from common.crypto.merkle import LogEntry, MemoryTree, TreeHead
from server.audit import audit

CA = ServerIdentity.create()


def certificate(name: str, keys: UserKeys) -> LogEntry:
    info = CsrInfo(name, f"{name}@example.org", keys.identity_public, keys.agreement_public)
    return LogEntry("certificate", name, issue_certificate(CA, info))


def kem_key(keys: UserKeys, created: int) -> LogEntry:
    signed = SignedKemKey.sign(keys.identity, KemKeyPair.generate(), created)
    return LogEntry("kem_key", "alice", signed.to_bytes())


def judged(entries: list[LogEntry]) -> tuple[int, dict[str, object]]:
    tree = MemoryTree()
    for entry in entries:
        tree.append_leaf_hash(entry.leaf_hash)
    head: TreeHead = merkle.sign_tree_head(CA.key, tree.size, tree.root(), 1)
    report = audit(list(enumerate(entries)), [head], CA.certificate_der)
    return report.status, report.to_json()


def test_kem_keys_signed_by_the_identity_and_each_newer_pass() -> None:
    alice = generate_user_keys()
    entries = [certificate("alice", alice), kem_key(alice, 1), kem_key(alice, 2)]
    status, report = judged(entries)
    assert status == 0, report
    assert report["kem_keys"] == 2


def test_an_old_kem_key_logged_again_and_a_key_signed_by_another_identity_are_named() -> None:
    alice, server_made = generate_user_keys(), generate_user_keys()
    old, new = kem_key(alice, 1), kem_key(alice, 5)
    same_time = kem_key(alice, 5)  # another key claiming the same moment: not newer
    entries = [certificate("alice", alice), old, new, old, same_time, kem_key(server_made, 9)]
    status, report = judged(entries)
    assert status == 2
    assert report["usernames_with_replayed_kem_keys"] == {"alice": [3, 4]}
    assert report["usernames_with_unsigned_kem_keys"] == {"alice": [5]}
    assert report["problems"] == [] and report["usernames_with_several_keys"] == {}
