"""The server's key transparency log on a real SQLite file: append, backfill, proofs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.crypto import merkle
from common.crypto.certs import ServerIdentity
from common.crypto.merkle import LogEntry, MemoryTree, TreeHead
from common.protocol import codec
from server.storage import keylog
from server.storage.database import MIGRATIONS, Database, SqliteDatabase
from server.transparency import KEPT_PROOF_LEVEL, RECENT_LOW_LIMIT, TransparencyLog

CA = ServerIdentity.create()


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


def open_log(path: Path, clock: Clock | None = None) -> tuple[Database, TransparencyLog]:
    db = SqliteDatabase.open(path)
    return db, TransparencyLog(db, CA, clock or Clock())


def test_appends_prove_against_signed_heads_and_match_a_memory_tree(tmp_path: Path) -> None:
    db, log = open_log(tmp_path / "db.sqlite")
    reference = MemoryTree()
    for i in range(37):
        entry = LogEntry("certificate" if i % 3 else "kem_key", f"user{i % 5}", bytes([i]) * 40)
        assert log.append(entry.kind, entry.username, entry.payload) == i
        reference.append_leaf_hash(entry.leaf_hash)
        head = log.head()
        merkle.verify_tree_head(head, CA.public_key_bytes)
        assert (head.size, head.root) == (i + 1, reference.root())
        for position in {0, i // 2, i}:
            proof = log.inclusion(position, head)
            assert proof == merkle.inclusion_proof(position, i + 1, reference.subtree)
    db.commit()
    old = keylog.heads(db)[9]
    head = log.head()
    merkle.verify_consistency(
        old.size, head.size, old.root, head.root, log.consistency(10, head.size)
    )


def test_a_head_is_signed_only_when_the_log_grew_and_time_never_goes_back(tmp_path: Path) -> None:
    clock = Clock()
    db, log = open_log(tmp_path / "db.sqlite", clock)
    log.append("certificate", "alice", b"a")
    first = log.head()
    clock.now -= 5_000
    assert log.head() == first
    log.append("certificate", "bob", b"b")
    second = log.head()
    assert second.size == 2 and second.timestamp >= first.timestamp
    assert [h.size for h in keylog.heads(db)] == [1, 2]


def test_unknown_kinds_are_refused_before_writing(tmp_path: Path) -> None:
    db, log = open_log(tmp_path / "db.sqlite")
    with pytest.raises(ValueError):
        log.append("password", "alice", b"x")
    assert keylog.size(db) == 0


def test_proof_for_a_key_the_log_lacks_is_empty(tmp_path: Path) -> None:
    _, log = open_log(tmp_path / "db.sqlite")
    log.append("certificate", "alice", b"real")
    head = log.head()
    assert log.proof_for("certificate", "alice", b"forged", head) == {"position": -1, "proof": b""}
    assert log.proof_for("certificate", "ALICE", b"real", head)["position"] == 0


def test_log_rows_cannot_be_rewritten(tmp_path: Path) -> None:
    db, log = open_log(tmp_path / "db.sqlite")
    log.append("certificate", "alice", b"a")
    with pytest.raises(sqlite3.IntegrityError):
        keylog.insert_entry(db, 0, LogEntry("certificate", "mallory", b"m"), 0)


def test_migration_backfills_existing_certificates(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    raw = sqlite3.connect(path)
    raw.executescript(MIGRATIONS[0]() + "\nPRAGMA user_version = 1;")
    for i, name in enumerate(("carol", "alice", "bob")):
        raw.execute(
            "INSERT INTO users (username, password, email, sex, age, certificate, created_at)"
            " VALUES (?, 'x', ?, 'other', 30, ?, ?)",
            (name, f"{name}@example.org", f"cert-{name}".encode(), 1000 + i),
        )
    raw.commit()
    raw.close()
    db, log = open_log(path)
    assert log.catch_up() == 3
    assert log.catch_up() == 0
    entries = keylog.entries(db, 0, 10)
    assert [(e.position, e.entry.username, e.entry.payload) for e in entries] == [
        (0, "carol", b"cert-carol"),
        (1, "alice", b"cert-alice"),
        (2, "bob", b"cert-bob"),
    ]
    head = log.head()
    reference = MemoryTree()
    for stored in entries:
        reference.append_leaf_hash(stored.entry.leaf_hash)
    assert head.root == reference.root()
    log.append("certificate", "dave", b"cert-dave")
    assert log.head().size == 4


def test_heads_round_trip_through_storage(tmp_path: Path) -> None:
    db, log = open_log(tmp_path / "db.sqlite")
    log.append("certificate", "alice", b"a")
    head = log.head()
    assert keylog.latest_head(db) == head
    assert TreeHead.from_wire(head.to_wire()) == head


def test_a_rolled_back_append_leaves_no_trace_in_the_caches(tmp_path: Path) -> None:
    db, log = open_log(tmp_path / "db.sqlite")
    log.append("certificate", "alice", b"a")
    before = log.head()
    db.commit()
    db.begin_step()
    log.append("certificate", "mallory", b"m")
    assert log.head().size == 2
    db.end_step(keep=False)  # the handler failed after appending
    assert log.head() == before
    assert log.append("certificate", "bob", b"b") == 1
    reference = MemoryTree()
    for data, name in ((b"a", "alice"), (b"b", "bob")):
        reference.append_leaf_hash(LogEntry("certificate", name, data).leaf_hash)
    assert log.head().root == reference.root()


def test_proofs_walked_bottom_up_equal_the_reference_at_every_size(tmp_path: Path) -> None:
    """The server's iterative PATH (stored nodes, cached right edge, cold or warm
    caches) gives exactly RFC 9162's proof for every position of every size."""
    db, log = open_log(tmp_path / "db.sqlite")
    reference = MemoryTree()
    for i in range(70):
        entry = LogEntry("certificate", f"user{i}", i.to_bytes(2, "big"))
        log.append(entry.kind, entry.username, entry.payload)
        reference.append_leaf_hash(entry.leaf_hash)
        head = log.head()
        for position in range(i + 1):
            assert log.inclusion(position, head) == merkle.inclusion_proof(
                position, i + 1, reference.subtree
            ), (position, i + 1)
    db.commit()
    cold = TransparencyLog(db, CA, Clock())  # a restarted server: nothing cached
    for position in (0, 31, 32, 63, 64, 69):
        assert cold.inclusion(position, head) == merkle.inclusion_proof(
            position, 70, reference.subtree
        )
    assert cold.consistency(33, 70) == merkle.consistency_proof(33, 70, reference.subtree)
    with pytest.raises(ValueError):
        cold.inclusion(70, head)


def test_two_cluster_nodes_append_to_one_log_without_colliding(fresh_pg_dsn) -> None:
    """Each node's log object caches nothing another node can change under it."""
    from server.storage.postgres import PostgresDatabase

    dsn = fresh_pg_dsn()
    nodes = [PostgresDatabase.connect(dsn) for _ in range(2)]
    logs = [TransparencyLog(db, CA, Clock()) for db in nodes]
    reference = MemoryTree()
    try:
        for i in range(6):
            db, log = nodes[i % 2], logs[i % 2]
            entry = LogEntry("certificate", f"user{i}", bytes([i]) * 40)
            assert log.append(entry.kind, entry.username, entry.payload) == i
            reference.append_leaf_hash(entry.leaf_hash)
            head = log.head()
            assert (head.size, head.root) == (i + 1, reference.root())
            db.commit()
            other = logs[(i + 1) % 2]
            assert other.head() == head  # the other node adopts it, signs nothing new
            nodes[(i + 1) % 2].commit()
            proof = other.proof_for("certificate", f"user{i}", entry.payload, head)
            merkle.verify_inclusion(
                entry.leaf_hash, i, head.size, merkle.unpack_proof(proof["proof"]), head.root
            )
        assert len(keylog.heads(nodes[0])) == 6
    finally:
        for db in nodes:
            db.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.integers(1, 40), st.booleans(), st.integers(0, 2**31)), max_size=8))
def test_proof_parts_kept_from_older_heads_stay_right_as_the_log_grows_or_rolls_back(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, bool, int]]
) -> None:
    """Proofs under each new head reuse the parts kept from older heads (complete
    subtrees) and the right edge computed once per size; a rolled-back append must
    leave none of them behind. Every proof equals RFC 9162's from a memory tree."""
    db, log = open_log(tmp_path_factory.mktemp("kt") / "db.sqlite")
    reference = MemoryTree()
    for batch, (count, keep, seed) in enumerate(steps):
        db.begin_step()
        for i in range(count):
            log.append("certificate", f"user{batch}-{i}", seed.to_bytes(4, "big") + bytes([i]))
        head = log.head()
        proved = [(seed * (7 + k)) % head.size for k in range(6)]
        for position in proved:
            log.proof_for("certificate", "nobody", b"", head)  # a key the log lacks
            log.packed_inclusion(position, head.size)
        db.end_step(keep=keep)
        if keep:
            for i in range(count):
                entry = LogEntry(
                    "certificate", f"user{batch}-{i}", seed.to_bytes(4, "big") + bytes([i])
                )
                reference.append_leaf_hash(entry.leaf_hash)
        size = reference.size
        if size == 0:
            continue
        head = log.head()
        assert (head.size, head.root) == (size, reference.root())
        for position in {0, size - 1, *(p % size for p in proved)}:
            assert log.inclusion(position, head) == merkle.inclusion_proof(
                position, size, reference.subtree
            ), (position, size)
    db.close()


def test_a_head_is_encoded_once_and_proofs_are_kept_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every reply under one head carries the same encoded head (`codec.Encoded`,
    the same bytes as the head's own fields) and a proof asked again is made of kept
    parts, without reading the database; a new head replaces both."""
    db, log = open_log(tmp_path / "db.sqlite")
    for i in range(5):
        log.append("certificate", f"user{i}", bytes([i]))
    first = log.certificate_proof("user2", bytes([2]))
    other = log.proof_for("certificate", "user3", bytes([3]), log.head())

    def no_reads(*args: object) -> None:
        raise AssertionError("a kept proof read the database")

    with monkeypatch.context() as patch:
        patch.setattr(keylog, "node", no_reads)
        patch.setattr(keylog, "latest_for", no_reads)
        again = log.certificate_proof("user2", bytes([2]))
        assert log.proof_for("certificate", "user3", bytes([3]), log.head()) == other
    assert isinstance(first["head"], codec.Encoded) and again["head"] is first["head"]
    assert again == first
    assert codec.encode(first["head"]) == codec.encode(log.head().to_wire())
    log.append("certificate", "user5", b"\x05")
    newer = log.certificate_proof("user2", bytes([2]))
    head = TreeHead.from_wire(newer["head"])
    assert head.size == 6 and newer["head"] is not first["head"]
    merkle.verify_inclusion(
        LogEntry("certificate", "user2", bytes([2])).leaf_hash,
        newer["position"],
        head.size,
        merkle.unpack_proof(newer["proof"]),
        head.root,
    )
    db.close()


def test_proof_caches_are_compact_shared_per_block_and_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Positions are keyed by one digest, a position keeps one bytes object (its lasting
    hashes), and the top of the proofs under the newest size is kept once per block,
    not per position; every cache stays within POSITION_CACHE_LIMIT, and proofs stay
    RFC 9162's whatever was forgotten."""
    monkeypatch.setattr("server.transparency.POSITION_CACHE_LIMIT", 8)
    db, log = open_log(tmp_path / "db.sqlite")
    reference = MemoryTree()
    payloads = [bytes([i]) * 3 for i in range(100)]
    for i, payload in enumerate(payloads):
        log.append("certificate", f"User{i}", payload)
        reference.append_leaf_hash(LogEntry("certificate", f"User{i}", payload).leaf_hash)
    head = log.head()
    for rounds in range(2):
        for i, payload in enumerate(payloads):
            proof = log.proof_for("certificate", f"user{i}", payload, head)  # any case
            assert proof["position"] == i
            assert merkle.unpack_proof(proof["proof"]) == merkle.inclusion_proof(
                i, 100, reference.subtree
            ), (rounds, i)
            sizes = (len(log._positions), len(log._stable), len(log._tops))
            assert max(sizes) <= 8
    assert all(isinstance(key, bytes) and len(key) == 32 for key in log._positions)
    assert all(isinstance(kept, bytes) and len(kept) % 32 == 0 for kept in log._stable.values())
    db.close()

    monkeypatch.undo()
    db, log = open_log(tmp_path / "db.sqlite")  # within the limit: one top per block
    for i in range(100):
        log.packed_inclusion(i, 100)
    assert len(log._stable) == 100 and len(log._tops) <= 8  # 100 = 64 + 32 + 4
    # Low siblings were not kept for good: only the right edge's block of 4 is cached,
    # the others among the latest few.
    assert {key for key in log._nodes if key[0] < KEPT_PROOF_LEVEL} == {(2, 24)}
    assert {key[0] for key in log._nodes} >= {KEPT_PROOF_LEVEL}
    assert 0 < len(log._recent_low) <= RECENT_LOW_LIMIT
    db.close()

    monkeypatch.setattr("server.transparency.RECENT_LOW_LIMIT", 4)
    db, log = open_log(tmp_path / "db.sqlite")
    reads: list[tuple[int, int]] = []
    read_node = keylog.node

    def counted(db: Database, level: int, index: int) -> bytes:
        reads.append((level, index))
        return read_node(db, level, index)

    monkeypatch.setattr(keylog, "node", counted)
    log.packed_inclusion(40, 100)
    assert reads[:3] == [(0, 41), (1, 21), (2, 11)]
    reads.clear()
    log.packed_inclusion(41, 100)  # a reply's next proof: the neighbour's
    assert reads == [(0, 40)]
    for position in range(0, 100, 8):
        log.packed_inclusion(position, 100)
        assert len(log._recent_low) <= 4
    db.close()


def test_position_keys_tell_kind_name_and_payload_apart() -> None:
    """The digest keying `_positions` folds the name's letter case and nothing else."""
    from server.transparency import _position_key

    keys = {
        _position_key("certificate", "ab", b"c"),
        _position_key("certificate", "a", b"bc"),
        _position_key("kem_key", "ab", b"c"),
        _position_key("certificate", "abc", b""),
    }
    assert len(keys) == 4
    assert _position_key("certificate", "AB", b"c") == _position_key("certificate", "ab", b"c")
