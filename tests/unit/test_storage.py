"""The storage slices on both backends: real SQLite files and a private PostgreSQL."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from common.crypto.room_log import LegacyGenesis
from server.storage import (
    attachments,
    conversations,
    friends,
    login_attempts,
    messages,
    room_log,
    rooms,
    users,
)
from server.storage.attachment_files import AttachmentFiles, is_attachment_id
from server.storage.database import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Database,
    SchemaTooNewError,
    SqliteDatabase,
)

HASH = "scrypt$1024$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


@pytest.fixture
def db(any_db: Database) -> Database:
    """Every test taking `db` runs on SQLite and on PostgreSQL (tests/backends.py)."""
    return any_db


@contextmanager
def refused(db: Database) -> Iterator[None]:
    """A write the schema must refuse, run as the reactor runs a handler: in a step.

    The failed step is undone and the rest of the turn stays, on both backends (a
    PostgreSQL transaction is unusable after an error until it rolls back to the step).
    """
    db.begin_step()
    with pytest.raises(db.IntegrityError):
        yield
    db.end_step(keep=False)


def add_user(db: Database, name: str, now: int = 1_000) -> int:
    return users.create_user(
        db,
        username=name,
        password_hash=HASH,
        email=f"{name}@example.com",
        sex="other",
        age=30,
        certificate=f"cert-{name}".encode(),
        now=now,
    )


# -- database ------------------------------------------------------------------------


def test_open_creates_schema_in_wal_mode(tmp_path: Path) -> None:
    db = SqliteDatabase.open(tmp_path / "sub" / "server.db")
    try:
        assert db.schema_version == SCHEMA_VERSION
        assert db.scalar("PRAGMA journal_mode") == "wal"
        assert db.scalar("PRAGMA foreign_keys") == 1
        assert db.scalar("PRAGMA synchronous") == 1  # NORMAL
        tables = {row[0] for row in db.all("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {
            "users",
            "friends",
            "rooms",
            "room_user",
            "envelopes",
            "delivery_cursors",
            "chain_distributions",
            "message_attachments",
            "attachments",
            "login_attempts",
            "conversations",
        } <= tables
    finally:
        db.close()


def test_reopen_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    db = SqliteDatabase.open(path)
    add_user(db, "alice")
    db.close()
    db = SqliteDatabase.open(path)
    try:
        assert db.schema_version == SCHEMA_VERSION
        user = users.by_username(db, "alice")
        assert user is not None and user.certificate == b"cert-alice"
    finally:
        db.close()


def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(SchemaTooNewError):
        SqliteDatabase.open(path)


def test_uncommitted_writes_are_lost_and_commit_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    db = SqliteDatabase.open(path)
    add_user(db, "alice")
    db.commit()
    add_user(db, "bob")
    assert db.in_transaction
    db.rollback()
    db.close()
    db = SqliteDatabase.open(path)
    try:
        assert users.by_username(db, "alice") is not None
        assert users.by_username(db, "bob") is None
    finally:
        db.close()


def test_transaction_rolls_back_on_error(db: Database) -> None:
    with pytest.raises(RuntimeError), db.transaction():
        add_user(db, "alice")
        raise RuntimeError("boom")
    assert users.by_username(db, "alice") is None
    with db.transaction():
        add_user(db, "bob")
    assert not db.in_transaction


def test_all_in_handles_more_values_than_one_chunk(db: Database) -> None:
    keys = [conversations.room_key(room_id) for room_id in range(1_200)]
    for index, key in enumerate(keys):
        conversations.touch(db, key, index)
    times = conversations.last_message_times(db, [*keys, "r:missing"])
    assert len(times) == 1_200
    assert times[conversations.room_key(1_100)] == 1_100


def test_all_in_takes_numbers_names_and_odd_strings_alike(db: Database) -> None:
    """PostgreSQL joins a list of ids or names into one parameter and splits it in the
    server, with an array for anything else (here a name holding the separator):
    every kind finds exactly what SQLite's written-out list finds."""
    for index, name in enumerate(["a", "b", "c\x1fd", "e,f"]):
        conversations.touch(db, name, index + 10)
    by_key = "SELECT key, last_message_time FROM conversations WHERE key IN ({marks})"
    found = {row[0]: row[1] for row in db.all_in(by_key, ["a", "e,f", "zz"])}
    assert found == {"a": 10, "e,f": 13}
    found = {row[0]: row[1] for row in db.all_in(by_key, ["c\x1fd", "b"])}
    assert found == {"c\x1fd": 12, "b": 11}
    by_time = (
        "SELECT key FROM conversations WHERE key <> ? AND last_message_time IN ({marks})"
        " ORDER BY key"
    )
    assert [row[0] for row in db.all_in(by_time, [10, 11, 13, 99], leading=["b"])] == [
        "a",
        "e,f",
    ]
    assert db.all_in(by_key, []) == []


# -- users ---------------------------------------------------------------------------


def test_usernames_and_emails_are_unique_ignoring_case(db: Database) -> None:
    add_user(db, "alice")
    with refused(db):
        add_user(db, "ALICE")
    with refused(db):
        users.create_user(
            db,
            username="other",
            password_hash=HASH,
            email="Alice@Example.com",
            sex="male",
            age=20,
            certificate=b"",
            now=1,
        )
    assert users.username_taken(db, "Alice")
    assert users.email_taken(db, "ALICE@example.com")
    assert not users.username_taken(db, "bob")
    found = users.by_username(db, "aLiCe")
    assert found is not None and found.username == "alice"


def test_record_login_and_last_seen(db: Database) -> None:
    user_id = add_user(db, "alice")
    users.record_login(db, user_id, "10.0.0.7", 5555, 2_000)
    users.set_last_seen(db, user_id, 3_000)
    user = users.by_id(db, user_id)
    assert user is not None
    assert (user.ip, user.port, user.last_seen) == ("10.0.0.7", 5555, 3_000)


def test_search_is_a_canonical_prefix_match_without_wildcards_and_excludes_self(
    db: Database,
) -> None:
    me = add_user(db, "me_user")
    for name in ("bob", "bobby", "ab_c", "abXc", "percent%x", "Élise"):
        add_user(db, name)

    def names(query: str, limit: int = 20) -> list[str]:
        return [u.username for u in users.search(db, query, me, limit=limit).users]

    assert names("bob") == ["bob", "bobby"]
    assert names("ab_") == ["ab_c"]  # '_' is a character, not a wildcard
    assert names("%") == []  # nor is '%'
    assert names("perc") == ["percent%x"]
    assert names("BOB", limit=1) == ["bob"]
    assert names("ÉLI") == ["Élise"]  # folded like usernames are
    assert names("ob") == []  # prefix, not substring: an index range, not a scan
    assert names("me_") == []
    assert users.escape_like("a\\b%_") == "a\\\\b\\%\\_"


def test_search_pages_follow_the_cursor_to_the_end(db: Database) -> None:
    me = add_user(db, "me")
    for n in range(25):
        add_user(db, f"user{n:02d}")
    seen: list[str] = []
    after = ""
    while True:
        page = users.search(db, "user", me, limit=10, after=after)
        seen += [u.username for u in page.users]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [f"user{n:02d}" for n in range(25)]


def test_search_uses_the_canonical_index(db: Database) -> None:
    for after in ("", "a", "b"):
        statement, parameters = users._search_statement("a", after, 0, 10)
        if db.backend == "sqlite":
            rows = db.all("EXPLAIN QUERY PLAN " + statement, parameters)
            plan = [str(row["detail"]) for row in rows]
        else:  # an empty table is scanned whole unless the planner is told not to
            db.execute("SET LOCAL enable_seqscan = off")
            plan = [str(row[0]) for row in db.all("EXPLAIN " + statement, parameters)]
        assert any("users_canonical" in line for line in plan)


def test_a_search_reads_its_page_not_the_names_below_it(tmp_path: Path) -> None:
    """Counted in SQLite VM steps: a first page near the end of the index costs what
    one near its start does (two lower bounds once made SQLite walk every name below
    the prefix). SQLite only: the count comes from its progress handler."""
    db = SqliteDatabase.open(tmp_path / "search.db")
    me = add_user(db, "me")
    for n in range(3000):
        add_user(db, f"u{n:04d}")
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    def cost(query: str, after: str = "") -> int:
        nonlocal steps
        steps = 0
        db._connection.set_progress_handler(count, 1)
        try:
            page = users.search(db, query, me, limit=20, after=after)
        finally:
            db._connection.set_progress_handler(None, 1)
        assert len(page.users) == 20
        return steps

    first = cost("u00")
    assert cost("u29") < 2 * first
    assert cost("u2", after="u2500") < 2 * first  # a later page: past the cursor only
    assert cost("u29", after="a") < 2 * first  # a cursor below the prefix: the prefix
    # bounds the range
    db.close()


# -- friends -------------------------------------------------------------------------


def test_friend_request_accept_and_remove(db: Database) -> None:
    alice, bob = add_user(db, "alice"), add_user(db, "bob")
    friends.add_request(db, alice, bob, 10)
    assert friends.has_pending_request(db, alice, bob)
    assert not friends.has_pending_request(db, bob, alice)
    assert not friends.are_friends(db, alice, bob)
    assert friends.incoming_requests_page(db, bob, "", 10) == (["alice"], "")
    assert friends.relations(db, bob, [alice]) == {alice: "pending"}
    with refused(db):
        friends.add_request(db, alice, bob, 11)

    assert friends.accept_request(db, alice, bob, 20)
    assert not friends.accept_request(db, alice, bob, 21)
    assert friends.are_friends(db, alice, bob) and friends.are_friends(db, bob, alice)
    assert friends.incoming_requests_page(db, bob, "", 10) == ([], "")
    assert friends.friend_ids(db, bob) == [alice]
    assert friends.relations(db, alice, [bob]) == {bob: "friend"}

    assert friends.remove_friendship(db, bob, alice)
    assert not friends.remove_friendship(db, bob, alice)
    assert not friends.are_friends(db, alice, bob)
    assert friends.friend_ids(db, alice) == []


def test_reject_request(db: Database) -> None:
    alice, bob = add_user(db, "alice"), add_user(db, "bob")
    friends.add_request(db, alice, bob, 10)
    assert friends.delete_request(db, alice, bob)
    assert not friends.delete_request(db, alice, bob)
    assert friends.relations(db, alice, [bob]) == {}


def test_friends_of_reports_address_and_last_message_time(db: Database) -> None:
    alice, bob, carol = add_user(db, "alice"), add_user(db, "bob"), add_user(db, "carol")
    for other in (bob, carol):
        friends.add_request(db, alice, other, 1)
        friends.accept_request(db, alice, other, 2)
    users.record_login(db, bob, "192.168.1.2", 4000, 5)
    conversations.touch(db, conversations.user_pair_key(carol, alice), 777)
    listed = friends.friends_of(db, alice)
    assert [(f.username, f.ip, f.port, f.last_message_time) for f in listed] == [
        ("bob", "192.168.1.2", 4000, 0),
        ("carol", "", 0, 777),
    ]
    one = friends.friend(db, carol, alice)
    assert one is not None and one.last_message_time == 777
    assert friends.friend(db, bob, carol) is None


def test_self_friendship_is_refused_by_the_schema(db: Database) -> None:
    alice = add_user(db, "alice")
    with refused(db):
        friends.add_request(db, alice, alice, 1)


# -- rooms ---------------------------------------------------------------------------


def test_rooms_membership_and_views(db: Database) -> None:
    alice, bob, carol = add_user(db, "alice"), add_user(db, "bob"), add_user(db, "carol")
    room = rooms.create_room(db, "Team", alice, 100)
    with refused(db):
        rooms.create_room(db, "team", bob, 101)
    assert rooms.name_taken(db, "TEAM")
    assert rooms.add_member(db, room, alice, 100)
    assert rooms.add_member(db, room, bob, 101)
    assert not rooms.add_member(db, room, bob, 102)
    assert rooms.is_member(db, room, bob) and not rooms.is_member(db, room, carol)
    assert [m.username for m in rooms.members(db, room)] == ["alice", "bob"]
    assert rooms.member_ids(db, room) == [alice, bob]
    assert rooms.share_a_room(db, alice, bob) and not rooms.share_a_room(db, alice, carol)

    other = rooms.create_room(db, "Other", bob, 103)
    rooms.add_member(db, other, bob, 103)
    conversations.touch(db, conversations.room_key(room), 555)
    views = rooms.rooms_of(db, bob)
    assert [(v.id, v.name, v.members, v.last_message_time) for v in views] == [
        (room, "Team", ["alice", "bob"], 555),
        (other, "Other", ["bob"], 0),
    ]
    view = rooms.room_view(db, room)
    assert view is not None and view.members == ["alice", "bob"]
    assert rooms.room_view(db, 9_999) is None
    assert rooms.remove_member(db, room, bob)
    assert not rooms.remove_member(db, room, bob)
    assert [v.id for v in rooms.rooms_of(db, bob)] == [other]
    room_row = rooms.get_room(db, room)
    assert room_row is not None and room_row.created_by == alice


# -- messages ------------------------------------------------------------------------


def direct(db: Database, sender: int, recipient: int, message_id: str, **extra: Any) -> Any:
    """Store a direct message the way SEND_MESSAGE does (cursors first)."""
    messages.ensure_pair_cursors(db, sender, recipient)
    fields: dict[str, Any] = {"time": 5, "envelope": b"e"}
    fields.update(extra)
    return messages.store_message(
        db,
        message_id=message_id,
        sender_id=sender,
        target_type=messages.USER,
        target_id=recipient,
        **fields,
    )


def test_undelivered_rows_come_in_server_order_with_attachments(db: Database) -> None:
    alice, bob, carol = add_user(db, "alice"), add_user(db, "bob"), add_user(db, "carol")
    attachments.create(db, "a" * 32, uploader_id=alice, size=3, digest=b"d" * 32, now=1)
    for index in range(5):
        direct(
            db,
            alice,
            bob,
            f"{index:032x}",
            time=1_000 - index,  # client clocks may disagree; server order is row order
            envelope=f"env{index}".encode(),
            attachment_ids=["a" * 32] if index == 2 else [],
        )
    direct(db, carol, alice, "f" * 32, envelope=b"x")
    first = messages.undelivered(db, bob, limit=3)
    assert [d.message_id for d in first] == [f"{i:032x}" for i in range(3)]
    assert first[2].attachments == ["a" * 32] and first[0].attachments == []
    assert first[0].sender == "alice" and first[0].envelope == b"env0"
    rest = messages.undelivered(db, bob, after_row=first[-1].row_id, limit=10)
    assert [d.message_id for d in rest] == [f"{i:032x}" for i in (3, 4)]
    assert messages.undelivered(db, alice) and messages.undelivered(db, alice)[0].sender == "carol"
    assert messages.is_attachment_recipient(db, "a" * 32, bob)
    assert not messages.is_attachment_recipient(db, "a" * 32, carol)


def test_a_room_message_is_one_envelope_with_a_cursor_per_member(db: Database) -> None:
    alice, bob, carol = add_user(db, "alice"), add_user(db, "bob"), add_user(db, "carol")
    room = rooms.create_room(db, "r", alice, 1)
    for member in (alice, bob):
        rooms.add_member(db, room, member, 1)
    messages.sync_room_cursors(db, room)
    fields: dict[str, Any] = dict(
        sender_id=alice, target_type=messages.ROOM, target_id=room, time=50
    )
    stored = [
        messages.store_message(db, message_id="1" * 32, envelope=b"all", **fields) for _ in range(2)
    ]
    assert stored[0] is not None and stored[1] is None  # idempotent
    assert db.scalar("SELECT count(*) FROM envelopes") == 1
    # carol joins later: she gets what is sent from now on, not what came before
    rooms.add_member(db, room, carol, 2)
    messages.sync_room_cursors(db, room)
    messages.store_message(
        db, message_id="2" * 32, envelope=b"next", distributions={carol: b"d"}, **fields
    )
    assert [(d.message_id, d.distribution) for d in messages.undelivered(db, carol)] == [
        ("2" * 32, b"d")
    ]
    assert [d.message_id for d in messages.undelivered(db, bob)] == ["1" * 32, "2" * 32]
    assert messages.undelivered(db, alice) == []  # never one's own messages
    assert db.scalar("SELECT count(*) FROM envelopes") == 2
    acknowledged = messages.mark_delivered(db, carol, ["2" * 32])
    assert [a.message_id for a in acknowledged] == ["2" * 32]
    assert db.scalar("SELECT count(*) FROM chain_distributions") == 0
    # bob leaves: no cursor, nothing more for him
    rooms.remove_member(db, room, bob)
    messages.sync_room_cursors(db, room)
    messages.store_message(db, message_id="3" * 32, envelope=b"after", **fields)
    assert messages.undelivered(db, bob) == []
    stored_message = messages.find_message(db, "1" * 32)
    assert stored_message == messages.StoredMessage("1" * 32, alice, 50)
    assert messages.find_message(db, "9" * 32) is None
    assert messages.conversation_key(alice, messages.ROOM, room) == conversations.room_key(room)
    assert messages.conversation_key(bob, messages.USER, alice) == (
        conversations.user_pair_key(alice, bob)
    )


def test_a_message_id_belongs_to_its_first_sender(db: Database) -> None:
    alice, bob, carol = add_user(db, "alice"), add_user(db, "bob"), add_user(db, "carol")
    assert direct(db, alice, bob, "1" * 32) is not None
    # carol reuses alice's id for another conversation: nothing is stored under it.
    assert direct(db, carol, bob, "1" * 32) is None
    assert db.scalar("SELECT count(*) FROM envelopes") == 1
    assert messages.find_message(db, "1" * 32) == messages.StoredMessage("1" * 32, alice, 5)


def test_touch_many_keeps_the_newest_time(db: Database) -> None:
    conversations.touch(db, "r:1", 100)
    conversations.touch_many(db, [("r:1", 50), ("r:2", 70)])
    conversations.touch_many(db, [("r:2", 90)])
    assert conversations.last_message_times(db, ["r:1", "r:2"]) == {"r:1": 100, "r:2": 90}


def test_mark_delivered_only_moves_the_recipients_own_cursor(db: Database) -> None:
    alice, bob, carol = add_user(db, "alice"), add_user(db, "bob"), add_user(db, "carol")
    direct(db, alice, bob, "1" * 32)
    assert messages.mark_delivered(db, carol, ["1" * 32]) == []
    assert messages.mark_delivered(db, alice, ["1" * 32]) == []  # the sender's own message
    assert messages.mark_delivered(db, bob, ["1" * 32, "1" * 32, "9" * 32]) == [
        messages.Acknowledged("1" * 32, alice, messages.USER)
    ]
    assert messages.mark_delivered(db, bob, ["1" * 32]) == []
    assert messages.undelivered(db, bob) == []


def test_a_cursor_never_passes_an_envelope_not_acknowledged(db: Database) -> None:
    """In a cluster, a later row acknowledged first (it reached the recipient first)
    leaves the cursor below the earlier one, which is then still owed; nothing is
    skipped."""
    alice, bob = add_user(db, "alice"), add_user(db, "bob")
    for digit in "123":
        direct(db, alice, bob, digit * 32)
    direct(db, bob, alice, "4" * 32)  # bob's own message in between is not owed to him
    direct(db, alice, bob, "5" * 32)
    messages.mark_delivered(db, bob, ["3" * 32], contiguous=True)
    owed = [d.message_id for d in messages.undelivered(db, bob)]
    assert owed == ["1" * 32, "2" * 32, "3" * 32, "5" * 32]
    messages.mark_delivered(db, bob, ["1" * 32, "2" * 32], contiguous=True)
    assert [d.message_id for d in messages.undelivered(db, bob)] == ["3" * 32, "5" * 32]
    messages.mark_delivered(db, bob, ["3" * 32, "5" * 32], contiguous=True)
    assert messages.undelivered(db, bob) == []
    # one node pushes in row order: the newest acknowledged row is the cursor
    direct(db, alice, bob, "6" * 32)
    direct(db, alice, bob, "7" * 32)
    messages.mark_delivered(db, bob, ["7" * 32])
    assert messages.undelivered(db, bob) == []


def test_conversation_time_never_moves_backwards(db: Database) -> None:
    key = conversations.user_pair_key(2, 1)
    assert key == conversations.user_pair_key(1, 2) == "u:1:2"
    conversations.touch(db, key, 100)
    conversations.touch(db, key, 50)
    assert conversations.last_message_times(db, [key, "u:7:8"]) == {key: 100}


# -- attachments ---------------------------------------------------------------------


def test_attachment_rows(db: Database) -> None:
    alice = add_user(db, "alice")
    created = attachments.create(db, "b" * 32, uploader_id=alice, size=10, digest=b"z" * 32, now=7)
    assert attachments.get(db, "b" * 32) == created
    with refused(db):
        attachments.create(db, "b" * 32, uploader_id=alice, size=1, digest=b"", now=8)
    attachments.set_received(db, "b" * 32, 4)
    assert attachments.get(db, "b" * 32).received == 4  # type: ignore[union-attr]
    attachments.mark_complete(db, "b" * 32)
    done = attachments.get(db, "b" * 32)
    assert done is not None and done.complete and done.received == 10
    attachments.delete(db, "b" * 32)
    assert attachments.get(db, "b" * 32) is None


def test_attachment_files_write_at_offset_and_finish(tmp_path: Path) -> None:
    files = AttachmentFiles(tmp_path / "attachments")
    ident = "c" * 32
    assert files.partial_size(ident) == 0
    files.write_at(ident, 0, b"hello ")
    files.write_at(ident, 6, b"world!!")
    files.write_at(ident, 6, b"world")  # a resumed chunk cuts what followed
    assert files.partial_size(ident) == 11
    assert files.partial_digest(ident) == hashlib.sha256(b"hello world").digest()
    files.finish(ident)
    assert files.read(ident, 6, 100) == b"world"
    assert files.read(ident, 0, 5) == b"hello"
    files.discard(ident)
    assert not files.final_path(ident).exists()


@pytest.mark.parametrize("bad", ["../etc/passwd", "C" * 32, "c" * 31, "c" * 33, "", "c" * 31 + "/"])
def test_attachment_files_refuse_anything_but_an_id(tmp_path: Path, bad: str) -> None:
    assert not is_attachment_id(bad)
    with pytest.raises(ValueError):
        AttachmentFiles(tmp_path).partial_path(bad)


# -- login attempts ------------------------------------------------------------------


POLICY = login_attempts.BackoffPolicy(max_failures=3, base_seconds=1.0, max_seconds=10.0)


def test_backoff_policy_doubles_up_to_the_cap() -> None:
    assert [POLICY.lock_ms(n) for n in range(1, 9)] == [
        0,
        0,
        0,
        2_000,
        4_000,
        8_000,
        10_000,
        10_000,
    ]
    assert POLICY.lock_ms(10**9) == 10_000


def test_failures_lock_and_persist_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    db = SqliteDatabase.open(path)
    key = login_attempts.user_key("Alice")
    assert key == "user:alice"
    for now in (1_000, 1_001, 1_002):
        assert login_attempts.record_failure(db, key, now, POLICY).locked_until == 0
    locked = login_attempts.record_failure(db, key, 1_003, POLICY)
    assert (locked.failures, locked.locked_until) == (4, 3_003)
    db.commit()
    db.close()

    db = SqliteDatabase.open(path)
    try:
        address = login_attempts.address_key("10.0.0.1")
        assert login_attempts.locked_until(db, [key, address], 2_000) == 3_003
        assert login_attempts.locked_until(db, [key, address], 3_003) == 0
        login_attempts.reset(db, [key])
        assert login_attempts.get(db, key) is None
    finally:
        db.close()


def test_old_failures_are_forgotten(db: Database) -> None:
    key = login_attempts.address_key("10.0.0.2")
    for now in range(5):
        login_attempts.record_failure(db, key, now, POLICY)
    later = 5 + login_attempts.FAILURE_MEMORY_MS
    fresh = login_attempts.record_failure(db, key, later, POLICY)
    assert (fresh.failures, fresh.locked_until) == (1, 0)


def test_a_stored_id_takes_no_new_recipient(db: Database) -> None:
    alice, bob, carol = add_user(db, "alice"), add_user(db, "bob"), add_user(db, "carol")
    room = rooms.create_room(db, "r", alice, 1)
    assert direct(db, alice, bob, "3" * 32) is not None
    # The same sender, the same id, another conversation: a retry, nothing new stored.
    assert direct(db, alice, carol, "3" * 32) is None
    assert (
        messages.store_message(
            db,
            message_id="3" * 32,
            sender_id=alice,
            target_type=messages.ROOM,
            target_id=room,
            time=5,
            envelope=b"r",
        )
        is None
    )
    assert db.scalar("SELECT count(*) FROM envelopes") == 1


def test_a_turns_messages_are_stored_together_and_each_id_once(db: Database) -> None:
    """`store_many` (one turn's SEND_MESSAGEs): an id already stored and an id repeated
    in the same batch are stored once, with the distributions of the first."""
    alice, bob, carol = add_user(db, "alice"), add_user(db, "bob"), add_user(db, "carol")
    assert direct(db, alice, bob, "1" * 32) is not None

    def new(message_id: str, sender: int, to: int, data: bytes) -> messages.NewEnvelope:
        return messages.NewEnvelope(
            message_id, sender, messages.USER, to, 9, data, {to: b"state for " + data}
        )

    batch = [
        new("1" * 32, alice, bob, b"retry"),
        new("2" * 32, alice, bob, b"two"),
        new("3" * 32, bob, carol, b"three"),
        new("2" * 32, carol, bob, b"same id, other sender"),
        *(new(f"{n:032x}", alice, carol, b"more") for n in range(16, 16 + 250)),
    ]
    stored = messages.store_many(db, batch)
    assert "1" * 32 not in stored and {"2" * 32, "3" * 32} <= set(stored)
    assert len(stored) == 252 and len(set(stored.values())) == 252
    assert stored["2" * 32] < stored["3" * 32]  # ids in the order sent
    for_bob = {d.message_id: d for d in messages.undelivered(db, bob)}
    assert for_bob["2" * 32].envelope == b"two"
    assert for_bob["2" * 32].distribution == b"state for two"
    assert db.scalar("SELECT count(*) FROM envelopes") == 1 + 252
    assert db.scalar("SELECT count(*) FROM chain_distributions") == 252


def test_undelivered_for_many_recipients_matches_one_at_a_time(db: Database) -> None:
    """One catch-up query for many users (cluster hints) returns what `undelivered` does
    for each: per-user cursors, `after_row` and limit, distributions and attachments."""
    names = ["alice", "bob", "carol", "dave", "erin"]
    ids = [add_user(db, name) for name in names]
    attachments.create(db, "a" * 32, uploader_id=ids[0], size=3, digest=b"d" * 32, now=1)
    room = rooms.create_room(db, "r", ids[0], 1)
    for member in ids[1:4]:
        rooms.add_member(db, room, member, 2)
    messages.sync_room_cursors(db, room)
    number = iter(range(1, 1000))
    for sender in ids:
        for recipient in ids:
            if sender != recipient and (sender + recipient) % 2:
                direct(db, sender, recipient, f"{next(number):032x}", envelope=b"d")
    messages.store_message(
        db,
        message_id=f"{next(number):032x}",
        sender_id=ids[0],
        target_type=messages.ROOM,
        target_id=room,
        time=7,
        envelope=b"room",
        distributions={ids[2]: b"state for carol"},
        attachment_ids=["a" * 32],
    )
    wanted = [(user, 3 * (index % 2)) for index, user in enumerate(ids)]
    for limit in (1, 2, 50):
        many = messages.undelivered_many(db, wanted, limit)
        for user, after in wanted:
            assert many.get(user, []) == messages.undelivered(db, user, after, limit)
    assert messages.undelivered_many(db, [], 5) == {}


def test_stored_envelopes_survive_the_chains_migration(tmp_path: Path) -> None:
    """A database of the version before sender chains: every delivery row is kept as a
    (version-1) envelope, and each recipient's cursor stops before its oldest
    unacknowledged one, so the backlog and the history are what they were."""
    path = tmp_path / "old.db"
    raw = sqlite3.connect(path)
    for version, script in enumerate(MIGRATIONS[:4], start=1):
        raw.executescript(f"BEGIN;\n{script()}\nPRAGMA user_version = {version};\nCOMMIT;")
    for uid, name in ((1, "alice"), (2, "bob"), (3, "carol")):
        raw.execute(
            "INSERT INTO users (id, username, password, email, sex, age, certificate,"
            " created_at, canonical, skeleton) VALUES (?, ?, 'x', ?, 'other', 30, x'00', 1, ?, ?)",
            (uid, name, f"{name}@example.org", name, name),
        )
    raw.execute("INSERT INTO rooms (id, room_name, created_by, created_at) VALUES (9, 'r', 1, 1)")
    rows = [  # (id, message id, sender, target, type, recipient, sent)
        (1, "1" * 32, 1, 2, "user", 2, 1),
        (2, "2" * 32, 1, 2, "user", 2, 0),
        (3, "3" * 32, 1, 9, "room", 2, 0),
        (4, "3" * 32, 1, 9, "room", 3, 1),
        (5, "4" * 32, 2, 1, "user", 1, 0),
    ]
    raw.executemany(
        "INSERT INTO chat_history (id, message_id, user_id, target_id, target_type,"
        " recipient_id, data, time, sent) VALUES (?, ?, ?, ?, ?, ?, ?, 7, ?)",
        [(r[0], r[1], r[2], r[3], r[4], r[5], f"env{r[0]}".encode(), r[6]) for r in rows],
    )
    raw.commit()
    raw.close()

    db = SqliteDatabase.open(path)
    try:
        assert db.schema_version == SCHEMA_VERSION
        assert db.scalar("SELECT count(*) FROM envelopes") == 5  # history kept, row for row
        bob = messages.undelivered(db, 2)
        assert [(d.message_id, d.envelope) for d in bob] == [
            ("2" * 32, b"env2"),
            ("3" * 32, b"env3"),
        ]
        assert messages.undelivered(db, 3) == []  # carol had acknowledged hers
        assert [d.envelope for d in messages.undelivered(db, 1)] == [b"env5"]
        assert messages.mark_delivered(db, 2, ["3" * 32])[0].message_id == "3" * 32
        assert [d.message_id for d in messages.undelivered(db, 2)] == ["2" * 32]
    finally:
        db.close()


def test_a_version_4_database_upgrades_its_rooms_to_a_legacy_genesis(tmp_path: Path) -> None:
    """Rooms made before signed membership keep members and history, with a log."""
    path = tmp_path / "old.db"
    connection = sqlite3.connect(path)
    for version, migration in enumerate(MIGRATIONS[:4], start=1):
        connection.executescript(f"{migration()}\nPRAGMA user_version = {version};")
    old = SqliteDatabase(connection)
    alice, bob = add_user(old, "alice"), add_user(old, "bob")
    old.execute(
        "INSERT INTO rooms (id, room_name, created_by, created_at) VALUES (12345678, 'Old', ?, 7)",
        (alice,),
    )
    for user, joined in ((alice, 7), (bob, 8)):
        old.execute(
            "INSERT INTO room_user (room_id, user_id, joined_at) VALUES (12345678, ?, ?)",
            (user, joined),
        )
    conversations.touch(old, conversations.room_key(12345678), 99)
    old.close()

    db = SqliteDatabase.open(path)
    try:
        assert db.schema_version == SCHEMA_VERSION
        (entry,) = room_log.entries(db, 12345678, 0, 10)
        genesis = LegacyGenesis.from_wire(entry.entry)
        assert (genesis.room, genesis.name, genesis.owner) == ("12345678", "Old", "alice")
        assert genesis.members == ("alice", "bob") and genesis.time_ms == 7
        assert room_log.head(db, 12345678) == (1, genesis.hash())
        assert rooms.is_admin(db, 12345678, alice) and not rooms.is_admin(db, 12345678, bob)
        assert rooms.join_policy(db, 12345678) == "open"
        view = rooms.room_view(db, 12345678)
        assert view is not None and view.members == ["alice", "bob"]
        assert view.last_message_time == 99
    finally:
        db.close()
    again = SqliteDatabase.open(path)  # the backfill runs once
    try:
        assert len(room_log.entries(again, 12345678, 0, 10)) == 1
    finally:
        again.close()


def _room_message_fields(db: Database, owner: int, *members: int) -> dict[str, Any]:
    """A room of `owner` and `members` with their cursors; the fields of a room message
    `owner` sends to it."""
    room = rooms.create_room(db, "r", owner, 1)
    for member in (owner, *members):
        rooms.add_member(db, room, member, 1)
    messages.sync_room_cursors(db, room)
    return dict(sender_id=owner, target_type=messages.ROOM, target_id=room, time=50)


def test_mark_delivered_many_moves_each_recipients_own_cursors_forward(db: Database) -> None:
    """A turn's acknowledgements at once follow `mark_delivered`'s rules for each."""
    alice, bob, carol, dave = (add_user(db, name) for name in ("alice", "bob", "carol", "dave"))
    fields = _room_message_fields(db, alice, bob, carol)
    for digit in "123":
        extra: dict[str, Any] = {"distributions": {carol: b"d", bob: b"d"}} if digit == "2" else {}
        messages.store_message(db, message_id=digit * 32, envelope=b"e", **fields, **extra)
    direct(db, alice, dave, "4" * 32)
    messages.mark_delivered_many(
        db,
        [
            (bob, ["1" * 32, "2" * 32]),
            (carol, ["3" * 32]),  # a cursor: the newest acknowledged covers what came before
            (alice, ["1" * 32]),  # her own message: nothing
            (dave, ["1" * 32, "4" * 32, "9" * 32]),  # not in the room, an unknown id
            (bob, ["1" * 32]),  # again, in the same turn
        ],
    )
    assert [d.message_id for d in messages.undelivered(db, bob)] == ["3" * 32]
    assert messages.undelivered(db, carol) == []
    assert messages.undelivered(db, dave) == []
    assert [d.message_id for d in messages.undelivered(db, alice)] == []
    # bob took his distribution; carol's stays until she names its message
    held = "SELECT count(*) FROM chain_distributions WHERE recipient_id = ?"
    assert db.scalar(held, (bob,)) == 0
    assert db.scalar(held, (carol,)) == 1
    messages.mark_delivered_many(db, [(bob, ["1" * 32])])  # never backwards
    assert [d.message_id for d in messages.undelivered(db, bob)] == ["3" * 32]
    messages.mark_delivered_many(db, [])


def test_mark_delivered_many_contiguous_never_passes_an_envelope_not_acknowledged(
    db: Database,
) -> None:
    """A cluster turn's acknowledgements at once: each cursor stops below the first
    envelope owed to its owner that was not acknowledged, as `mark_delivered` does
    one recipient at a time."""
    alice, bob, carol = (add_user(db, name) for name in ("alice", "bob", "carol"))
    fields = _room_message_fields(db, alice, bob, carol)
    for digit in "123":
        messages.store_message(db, message_id=digit * 32, envelope=b"e", **fields)
    messages.store_message(  # bob's own message in between is not owed to him
        db, message_id="4" * 32, envelope=b"e", **{**fields, "sender_id": bob}
    )
    messages.store_message(db, message_id="5" * 32, envelope=b"e", **fields)
    for digit in "67":
        direct(db, alice, bob, digit * 32)

    def owed(user: int) -> list[str]:
        return [d.message_id for d in messages.undelivered(db, user)]

    messages.mark_delivered_many(
        db,
        [
            (bob, ["3" * 32, "7" * 32]),  # rows 1-2 and 6 not acknowledged: no move
            (carol, ["1" * 32, "2" * 32, "5" * 32]),  # up to 2: 3 and 4 are owed
        ],
        contiguous=True,
    )
    assert owed(bob) == [c * 32 for c in "123567"]
    assert owed(carol) == [c * 32 for c in "345"]
    messages.mark_delivered_many(
        db,
        [
            # an earlier acknowledgement that could not move a cursor is not kept:
            # the row is pushed again, and acknowledged again
            (bob, ["1" * 32, "2" * 32, "6" * 32]),
            (carol, ["3" * 32, "4" * 32]),
        ],
        contiguous=True,
    )
    assert owed(bob) == ["3" * 32, "5" * 32, "7" * 32]
    assert owed(carol) == ["5" * 32]
    messages.mark_delivered_many(
        db,
        [(bob, ["3" * 32, "5" * 32, "7" * 32, "5" * 32]), (carol, ["5" * 32])],
        contiguous=True,
    )
    assert owed(bob) == [] and owed(carol) == []
