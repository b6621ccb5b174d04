"""The client's key transparency checks against an in-memory log (no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from client.core.event_types import Event, TransparencyAlarm
from client.core.kem_keys import new_user_keys, signed_current
from client.core.transparency import (
    USER_ENTRIES_PAGE,
    KeyTransparency,
    TransparencyError,
    gossiped_head,
    own_key_checker,
    verify_standalone,
    with_tree_head,
)
from common.crypto import merkle
from common.crypto.certs import ServerIdentity
from common.crypto.kem import KemKeyPair, SignedKemKey
from common.crypto.merkle import LogEntry, MemoryTree, TreeHead
from common.errors import CertificateError, RequestError
from common.protocol import codec
from common.protocol.opcodes import MessageType
from server.transparency import MAX_USER_ENTRIES

CA = ServerIdentity.create()


class FakeLog:
    """A log the way an honest server keeps it, answering the client's requests."""

    def __init__(self) -> None:
        self.tree = MemoryTree()
        self.entries: list[LogEntry] = []
        self.requests: list[MessageType] = []

    def append(self, name: str, payload: bytes, kind: str = "certificate") -> int:
        entry = LogEntry(kind, name, payload)
        self.entries.append(entry)
        self.tree.append_leaf_hash(entry.leaf_hash)
        return self.tree.size - 1

    def head(self, size: int | None = None) -> TreeHead:
        size = self.tree.size if size is None else size
        return merkle.sign_tree_head(CA.key, size, self.tree.root(size), 1000 + size)

    def proof(self, name: str, payload: bytes) -> dict[str, Any]:
        position = self.entries.index(LogEntry("certificate", name, payload))
        head = self.head()
        path = merkle.inclusion_proof(position, head.size, self.tree.subtree)
        return {"head": head.to_wire(), "position": position, "proof": path}

    def request(self, kind: MessageType, params: dict[str, Any] | None) -> dict[str, Any]:
        self.requests.append(kind)
        params = params or {}
        if kind is MessageType.KT_TREE_HEAD:
            return {"head": self.head().to_wire()}
        if kind is MessageType.KT_CONSISTENCY:
            old, new = params["old_size"], params.get("new_size", self.tree.size)
            if new > self.tree.size:
                raise RequestError("unknown_tree_size", "no", "new_size")
            path = merkle.consistency_proof(old, new, self.tree.subtree) if old < new else []
            return {"head": self.head().to_wire(), "proof": path}
        if kind is MessageType.KT_USER_ENTRIES:
            head = self.head()
            after = params.get("after", -1)
            mine = [
                (i, e) for i, e in enumerate(self.entries) if e.username == "alice" and i > after
            ][:USER_ENTRIES_PAGE]
            entries = [
                {
                    "position": i,
                    "kind": e.kind,
                    "payload": e.payload,
                    "proof": merkle.inclusion_proof(i, head.size, self.tree.subtree),
                }
                for i, e in mine
            ]
            return {"head": head.to_wire(), "entries": entries}
        raise AssertionError(kind)


class Store:
    def __init__(self) -> None:
        self.saved: tuple[int, bytes, int, bytes] | None = None

    def transparency_head(self) -> tuple[int, bytes, int, bytes] | None:
        return self.saved

    def save_transparency_head(self, size: int, root: bytes, timestamp: int, sig: bytes) -> None:
        self.saved = (size, root, timestamp, sig)


def client(log: FakeLog, store: Store | None = None) -> tuple[KeyTransparency, list[Event]]:
    alarms: list[Event] = []
    checker = KeyTransparency(
        ca_public=CA.public_key_bytes,
        store=store or Store(),
        request=log.request,
        alarm=alarms.append,
    )
    return checker, alarms


def test_proved_certificates_are_accepted_and_the_newest_head_is_kept() -> None:
    log, store = FakeLog(), Store()
    log.append("alice", b"A")
    log.append("carol", b"C")
    kt, alarms = client(log, store)
    kt.check_certificate("carol", b"C", log.proof("carol", b"C"))
    log.append("dave", b"D")
    kt.check_certificate("dave", b"D", log.proof("dave", b"D"))
    assert kt.held == log.head() and store.saved is not None and store.saved[0] == 3
    assert MessageType.KT_CONSISTENCY in log.requests
    assert alarms == []
    again, _ = client(log, store)  # a restart keeps the head
    assert again.held == log.head()


def test_a_key_without_a_valid_proof_is_refused_loudly_and_blocks_everything() -> None:
    log = FakeLog()
    log.append("carol", b"C")
    kt, alarms = client(log)
    with pytest.raises(TransparencyError) as refused:
        kt.check_certificate("carol", b"forged", log.proof("carol", b"C"))
    assert refused.value.code == "key_not_logged"
    assert alarms == [TransparencyAlarm("not_logged", "carol")]
    with pytest.raises(TransparencyError):
        kt.check_usable()
    with pytest.raises(TransparencyError):  # even a good key: the server lied once
        kt.check_certificate("carol", b"C", log.proof("carol", b"C"))


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {"head": None},
        {"position": -1, "proof": []},
        {"position": "0", "proof": []},
        {"position": 0, "proof": [b"x"]},
    ],
)
def test_malformed_proofs_are_refused(bad: Any) -> None:
    log = FakeLog()
    log.append("carol", b"C")
    kt, alarms = client(log)
    if isinstance(bad, dict) and "position" in bad:
        bad = {**bad, "head": log.head().to_wire()}
    with pytest.raises(TransparencyError):
        kt.check_certificate("carol", b"C", bad)
    assert alarms


def test_a_rolled_back_head_is_refused() -> None:
    log = FakeLog()
    for name in ("a", "b", "c"):
        log.append(name, name.encode())
    kt, alarms = client(log)
    kt.accept_head(log.head().to_wire())
    with pytest.raises(TransparencyError) as refused:
        kt.accept_head(log.head(2).to_wire())
    assert refused.value.code == "unknown_tree_size"
    assert alarms == [TransparencyAlarm("rolled_back", "")]


def test_a_head_that_does_not_extend_ours_is_refused() -> None:
    log, other = FakeLog(), FakeLog()
    for name in ("a", "b"):
        log.append(name, name.encode())
    other.append("a", b"a")
    other.append("b", b"forged")
    kt, alarms = client(log)
    kt.accept_head(other.head().to_wire())  # first sight: nothing to compare with
    log.append("c", b"c")
    with pytest.raises(TransparencyError) as refused:
        kt.accept_head(log.head().to_wire())
    assert refused.value.code == "log_inconsistent"
    assert alarms == [TransparencyAlarm("not_extension", "")]


def test_a_head_not_signed_by_the_ca_is_refused() -> None:
    log = FakeLog()
    log.append("a", b"a")
    head = log.head()
    forged = TreeHead(head.size, head.root, head.timestamp, bytes(64))
    kt, _ = client(log)
    with pytest.raises(TransparencyError):
        kt.accept_head(forged.to_wire())


def test_gossip_detects_a_split_view_and_accepts_a_consistent_head() -> None:
    log = FakeLog()
    log.append("a", b"a")
    kt, alarms = client(log)
    kt.accept_head(log.head().to_wire())
    log.append("b", b"b")
    kt.check_gossip("bob", log.head().to_wire())  # bob saw more of the same log
    assert kt.held == log.head() and alarms == []
    fork = FakeLog()
    fork.append("a", b"a")
    fork.append("b", b"forged")
    with pytest.raises(TransparencyError):
        kt.check_gossip("mallory", fork.head().to_wire())
    assert alarms == [TransparencyAlarm("split_view", "mallory")]


def test_gossip_ignores_unsigned_junk() -> None:
    log = FakeLog()
    log.append("a", b"a")
    kt, alarms = client(log)
    kt.check_gossip("bob", {"size": 1})
    kt.check_gossip("bob", TreeHead(1, bytes(32), 0, bytes(64)).to_wire())
    assert alarms == [] and kt.broken is None


def test_monitoring_alarms_on_a_key_we_did_not_make() -> None:
    log = FakeLog()
    log.append("alice", b"mine")
    kt, alarms = client(log)
    assert kt.monitor("alice", lambda kind, payload: payload == b"mine") == 1
    assert alarms == []
    log.append("alice", b"server made this")
    assert kt.monitor("alice", lambda kind, payload: payload == b"mine") == 2
    assert alarms == [TransparencyAlarm("foreign_key", "alice")]
    kt.check_usable()  # an alarm to the user, not a block


def test_the_tree_head_rides_in_the_sealed_body_compatibly() -> None:
    log = FakeLog()
    log.append("a", b"a")
    head = log.head().to_wire()
    body = codec.encode({"kind": "text", "text": "hi", "chat": ["user", "bob"]})
    sealed = with_tree_head(body, head)
    assert codec.decode(sealed) == {**codec.decode(body), "tree_head": head}
    assert gossiped_head(sealed, codec.Limits(max_size=1 << 20, max_depth=2, max_items=32)) == head
    assert with_tree_head(body, None) == body
    assert with_tree_head(sealed, head) == sealed  # a second head replaces the first
    assert gossiped_head(body, codec.DEFAULT_LIMITS) is None
    assert gossiped_head(b"\xff", codec.DEFAULT_LIMITS) is None


def test_registration_reply_proof_is_checked_without_a_held_head() -> None:
    log = FakeLog()
    log.append("alice", b"A")
    assert verify_standalone(CA.public_key_bytes, "alice", b"A", log.proof("alice", b"A")).size == 1
    with pytest.raises(CertificateError):
        verify_standalone(CA.public_key_bytes, "alice", b"B", log.proof("alice", b"A"))
    with pytest.raises(CertificateError):
        verify_standalone(CA.public_key_bytes, "alice", b"A", None)


def test_kem_key_entries_are_checked_as_their_own_kind() -> None:
    log = FakeLog()
    log.append("bob", b"B")
    position = log.append("bob", b"K", kind="kem_key")
    kt, alarms = client(log)
    head = kt.check_certificate("bob", b"B", log.proof("bob", b"B"))
    path = merkle.inclusion_proof(position, head.size, log.tree.subtree)
    kt.check_entry("kem_key", "bob", b"K", {"position": position, "proof": path}, head)
    assert alarms == []
    with pytest.raises(TransparencyError):  # the same bytes as another kind are not logged
        kt.check_entry("certificate", "bob", b"K", {"position": position, "proof": path}, head)
    assert alarms == [TransparencyAlarm("not_logged", "bob")]


def test_own_key_checker_takes_kem_keys_our_identity_signed_from_any_of_our_computers() -> None:
    alice, mallory = new_user_keys(1), new_user_keys(1)
    older = SignedKemKey.sign(alice.identity, KemKeyPair.generate(), 0)
    current = signed_current(alice)  # created at 1
    # made on a computer the account was linked to: signed by the same identity key
    elsewhere = SignedKemKey.sign(alice.identity, KemKeyPair.generate(), 2)
    for made in (lambda: {older.key_id, current.key_id}, None):
        is_mine = own_key_checker(alice.identity_public, made)
        assert is_mine("kem_key", older.to_bytes())  # rotated away, pruned from the keyring
        assert is_mine("kem_key", current.to_bytes())
        assert is_mine("kem_key", elsewhere.to_bytes())
    # the server's own key under our name: not signed by us
    forged = SignedKemKey(
        current.key_id, current.created_ms, current.public, signed_current(mallory).signature
    )
    is_mine = own_key_checker(alice.identity_public)
    assert not is_mine("kem_key", forged.to_bytes())
    assert not is_mine("kem_key", signed_current(mallory).to_bytes())
    assert not is_mine("kem_key", b"junk")
    assert not is_mine("something new", current.to_bytes())


def test_an_old_kem_key_of_ours_logged_again_is_not_ours() -> None:
    """Our signature cannot be forged, but it can be replayed: the server refuses a key
    that is not newer than the current one, so an older key logged after a newer one
    was put there by the server (it may hope the private half leaked)."""
    alice = new_user_keys(1)
    older = SignedKemKey.sign(alice.identity, KemKeyPair.generate(), 0)
    newer = signed_current(alice)
    is_mine = own_key_checker(alice.identity_public)
    assert is_mine("kem_key", older.to_bytes()) and is_mine("kem_key", newer.to_bytes())
    assert not is_mine("kem_key", older.to_bytes())
    assert not is_mine("kem_key", newer.to_bytes())  # the same key twice: a replay too
    log = FakeLog()
    for key in (older, newer, older):
        log.append("alice", key.to_bytes(), kind="kem_key")
    kt, alarms = client(log)
    assert kt.monitor("alice", own_key_checker(alice.identity_public)) == 3
    assert alarms == [TransparencyAlarm("foreign_key", "alice")]


def test_monitoring_pages_through_every_entry_under_our_name() -> None:
    assert USER_ENTRIES_PAGE == MAX_USER_ENTRIES  # the client knows the server's page
    log = FakeLog()
    for i in range(USER_ENTRIES_PAGE + 3):
        log.append("alice", b"mine")
        log.append("bob", bytes([i % 256]))
    kt, alarms = client(log)
    assert kt.monitor("alice", lambda kind, payload: payload == b"mine") == USER_ENTRIES_PAGE + 3
    assert alarms == []
    log.append("alice", b"server made this")  # beyond the first page
    assert kt.monitor("alice", lambda kind, payload: payload == b"mine") == USER_ENTRIES_PAGE + 4
    assert alarms == [TransparencyAlarm("foreign_key", "alice")]
