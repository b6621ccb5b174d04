"""LocalStore: dedupe, unread counts, paging, search, outbox, drafts, pins, uploads."""

from __future__ import annotations

import sqlite3
import stat
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.core import store as store_module
from client.core.models import Attachment, ChatMessage
from client.core.store import (
    SCHEMA_VERSION,
    ChatSummary,
    LocalStore,
    StoreVersionError,
    UploadState,
    fts_phrase,
    like_pattern,
)

_counter = iter(range(10**9))


def msg(
    text: str = "hello",
    *,
    chat_id: str = "bob",
    chat_kind: str = "user",
    time: int = 1000,
    outgoing: bool = False,
    status: str = "received",
    message_id: str | None = None,
    attachment: Attachment | None = None,
    kind: str = "text",
) -> ChatMessage:
    return ChatMessage(
        message_id=message_id or f"{next(_counter):032x}",
        chat_kind=chat_kind,  # type: ignore[arg-type]
        chat_id=chat_id,
        sender="me" if outgoing else chat_id,
        time=time,
        kind=kind,  # type: ignore[arg-type]
        text=text,
        attachment=attachment,
        outgoing=outgoing,
        status=status,  # type: ignore[arg-type]
    )


@pytest.fixture
def store(tmp_path: Path):
    with LocalStore(tmp_path / "history.sqlite3") as s:
        yield s


# ---------------------------------------------------------------- messages


def test_message_round_trips_with_attachment(store: LocalStore) -> None:
    attachment = Attachment("a" * 32, "report.pdf", 1234, b"k" * 32, b"d" * 32, 262144)
    m = msg("", kind="file", attachment=attachment)
    assert store.add_message(m)
    assert store.get_message(m.message_id) == m
    store.set_attachment_path(m.message_id, Path("/tmp/report.pdf"))
    stored = store.get_message(m.message_id)
    assert stored is not None and stored.attachment is not None
    assert stored.attachment.local_path == Path("/tmp/report.pdf")
    assert store.get_message("missing") is None


def test_duplicate_message_is_ignored_and_changes_nothing(store: LocalStore) -> None:
    m = msg("first")
    assert store.add_message(m) is True
    assert store.add_message(replace(m, text="second", time=2000)) is False
    assert store.get_message(m.message_id) == m
    assert store.unread("user", "bob") == 1
    assert store.search("second") == []


def test_add_messages_reports_each_and_dedupes_inside_the_batch(store: LocalStore) -> None:
    a, b = msg("a"), msg("b")
    store.add_message(a)
    assert store.add_messages([a, b, b]) == [False, True, False]
    assert [m.text for m in store.history("user", "bob")] == ["a", "b"]


def test_failed_batch_rolls_back_entirely(store: LocalStore) -> None:
    bad = msg("bad", chat_kind="nonsense")
    with pytest.raises(sqlite3.IntegrityError):
        store.add_messages([msg("good"), bad])
    assert store.history("user", "bob") == []
    assert store.chat_summaries() == {}
    good = msg("good again")
    assert store.add_messages([good]) == [True]  # nothing stale left in the staging table
    assert store.history("user", "bob") == [good]


def test_status_moves_forward_only(store: LocalStore) -> None:
    m = msg("out", outgoing=True, status="sending")
    store.add_message(m)

    def status() -> str:
        got = store.get_message(m.message_id)
        assert got is not None
        return got.status

    store.set_status(m.message_id, "sent")
    assert status() == "sent"
    store.set_status(m.message_id, "failed")  # the server stored it: cannot fail now
    assert status() == "sent"
    store.set_status(m.message_id, "delivered")
    assert status() == "delivered"
    for older in ("sent", "sending", "failed", "received"):
        store.set_status(m.message_id, older)
        assert status() == "delivered"


def test_failed_message_can_be_retried(store: LocalStore) -> None:
    m = msg("out", outgoing=True, status="sending")
    store.add_message(m)
    store.set_status(m.message_id, "failed")
    assert store.get_message(m.message_id).status == "failed"  # type: ignore[union-attr]
    store.set_status(m.message_id, "sending")
    assert store.get_message(m.message_id).status == "sending"  # type: ignore[union-attr]


# ---------------------------------------------------------------- unread and summaries


def test_unread_counts_incoming_only_and_mark_read_resets(store: LocalStore) -> None:
    store.add_messages([msg("1"), msg("2"), msg("mine", outgoing=True, status="sent")])
    store.add_message(msg("room", chat_kind="room", chat_id="7"))
    assert store.unread("user", "bob") == 2
    assert store.unread("room", "7") == 1
    assert store.unread("user", "nobody") == 0
    store.mark_read("user", "bob")
    assert store.unread("user", "bob") == 0
    assert store.unread("room", "7") == 1
    store.add_message(msg("3"))
    assert store.unread("user", "bob") == 1
    unread_rows = store._query("SELECT count(*) FROM messages WHERE is_read = 0")
    assert unread_rows[0][0] == 2


def test_summaries_keep_newest_preview_even_when_older_arrives_late(store: LocalStore) -> None:
    store.add_message(msg("newest line\nsecond line", time=500))
    store.add_message(msg("late offline message", time=100))
    store.add_message(
        msg("x", chat_kind="room", chat_id="3", outgoing=True, status="sent", time=50)
    )
    summaries = store.chat_summaries()
    assert summaries == {
        ("user", "bob"): ChatSummary("newest line", 500, 2, last_sender="bob"),
        ("room", "3"): ChatSummary("x", 50, 0, last_sender="me"),
    }


def test_batch_summary_matches_one_by_one_inserts(tmp_path: Path) -> None:
    batch = [
        msg("b old", time=10),
        msg("b new", time=30),
        msg("b tie later wins", time=30),
        msg("b older again", time=20),
        msg("mine", outgoing=True, status="sent", time=5),
        msg("room", chat_kind="room", chat_id="9", time=1),
        msg("carol", chat_id="carol", outgoing=True, status="sent", time=3),
    ]
    with LocalStore(tmp_path / "batch.sqlite3") as batched:
        batched.add_message(msg("before", time=25))
        batched.add_messages(batch)
        batch_summaries = batched.chat_summaries()
    with LocalStore(tmp_path / "single.sqlite3") as single:
        single.add_message(msg("before", time=25))
        for m in batch:
            single.add_message(m)
        assert single.chat_summaries() == batch_summaries
    assert batch_summaries == {
        ("user", "bob"): ChatSummary("b tie later wins", 30, 5, "bob"),
        ("room", "9"): ChatSummary("room", 1, 1, "9"),
        ("user", "carol"): ChatSummary("carol", 3, 0, "me"),
    }


def test_summary_preview_of_attachment(store: LocalStore) -> None:
    attachment = Attachment("b" * 32, "cat.png", 10, b"k" * 32, b"d" * 32, 1024)
    store.add_message(msg("", kind="image", attachment=attachment, time=9))
    summary = store.chat_summaries()[("user", "bob")]
    assert (summary.last_message, summary.last_kind, summary.last_sender) == (
        "cat.png",
        "image",
        "bob",
    )  # the contact list translates the kind, so the store keeps it apart


def test_drafts_and_styles_per_chat(store: LocalStore) -> None:
    store.save_draft("user", "bob", "half a thought")
    store.save_draft("room", "3", "")
    assert store.drafted_chats() == {("user", "bob")}
    assert store.style("user", "bob") is None
    store.save_style("user", "bob", 18, "#aa0000")
    store.save_style("user", "bob", 20, "#00aa00")
    assert store.style("user", "bob") == (20, "#00aa00")
    assert store.style("room", "3") is None


def test_version_1_store_gains_sender_and_kind_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with LocalStore(path) as fresh:
        fresh.add_message(msg("before the upgrade", time=7))
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE receipt_queue")  # version 8
    conn.execute("ALTER TABLE messages DROP COLUMN server_time")  # version 7
    conn.execute("ALTER TABLE messages DROP COLUMN flags")
    conn.execute("DROP TABLE chains")  # version 6
    conn.execute("DROP TABLE held_deliveries")
    conn.execute("DROP TABLE peer_kem_keys")  # version 5
    conn.execute("DROP TABLE own_kem_keys")
    conn.execute("DROP TABLE room_log")  # version 4
    conn.execute("DROP TABLE transparency_head")  # version 3
    conn.execute("DROP TABLE chat_styles")
    conn.execute("ALTER TABLE chats DROP COLUMN last_sender")
    conn.execute("ALTER TABLE chats DROP COLUMN last_kind")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    with LocalStore(path) as upgraded:
        assert upgraded.chat_summaries()[("user", "bob")] == ChatSummary("before the upgrade", 7, 1)
        upgraded.add_message(msg("after", time=8))
        assert upgraded.chat_summaries()[("user", "bob")].last_sender == "bob"
        upgraded.save_style("user", "bob", 14, "#123456")
        upgraded.queue_receipt("r1", b"sealed")  # version 8
        assert upgraded.queued_receipts() == [("r1", b"sealed")]


# ---------------------------------------------------------------- history paging


def test_history_pages_backwards_across_equal_timestamps(store: LocalStore) -> None:
    # 23 messages, many sharing a timestamp, inserted out of time order.
    times = [5, 5, 5, 1, 9, 9, 9, 9, 2, 5, 5, 3, 9, 1, 1, 7, 7, 7, 7, 7, 8, 0, 5]
    store.add_messages([msg(str(i), time=t) for i, t in enumerate(times)])
    expected = sorted(range(len(times)), key=lambda i: (times[i], i))
    pages: list[list[str]] = []
    before = None
    while True:
        page = store.history("user", "bob", limit=5, before=before)
        if not page:
            break
        assert [m.time for m in page] == sorted(m.time for m in page)
        pages.append([m.text for m in page])
        before = store.history_cursor(page[0].message_id)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    flattened = [text for page in reversed(pages) for text in page]
    assert flattened == [str(i) for i in expected]


def test_history_is_per_chat_and_limit_is_respected(store: LocalStore) -> None:
    store.add_messages([msg(f"b{i}", time=i) for i in range(10)])
    store.add_messages([msg(f"c{i}", chat_id="carol", time=i) for i in range(10)])
    store.add_message(msg("room", chat_kind="room", chat_id="bob"))
    page = store.history("user", "bob", limit=3)
    assert [m.text for m in page] == ["b7", "b8", "b9"]
    assert store.history("user", "bob", limit=0) == []
    assert [m.text for m in store.history("room", "bob")] == ["room"]
    assert store.history_cursor("missing") is None


def test_history_paging_uses_the_chat_index(store: LocalStore) -> None:
    plan = store._query(
        "EXPLAIN QUERY PLAN SELECT id FROM messages WHERE chat_kind = ? AND chat_id = ? "
        "AND (time, id) < (?, ?) ORDER BY time DESC, id DESC LIMIT 50",
        ("user", "bob", 1, 1),
    )
    details = " ".join(str(row[-1]) for row in plan)
    assert "messages_by_chat" in details
    assert "TEMP B-TREE" not in details


# ---------------------------------------------------------------- search


def test_search_english_is_case_insensitive_and_newest_first(store: LocalStore) -> None:
    store.add_messages(
        [
            msg("Hello World", time=1),
            msg("say hello", time=3, chat_id="carol"),
            msg("goodbye", time=2),
        ]
    )
    assert [m.text for m in store.search("HELLO")] == ["say hello", "Hello World"]
    assert [m.text for m in store.search("hello", limit=1)] == ["say hello"]
    assert store.search("nothing here") == []
    assert store.search("   ") == []


def test_search_chinese_and_emoji(store: LocalStore) -> None:
    store.add_messages(
        [msg("你好世界", time=1), msg("今天天气很好", time=2), msg("party 🎉🎂 time", time=3)]
    )
    assert [m.text for m in store.search("你好世")] == ["你好世界"]
    assert [m.text for m in store.search("你好")] == ["你好世界"]
    assert [m.text for m in store.search("好")] == ["今天天气很好", "你好世界"]
    assert [m.text for m in store.search("🎉")] == ["party 🎉🎂 time"]
    assert [m.text for m in store.search("🎉🎂 t")] == ["party 🎉🎂 time"]


def test_search_finds_file_names(store: LocalStore) -> None:
    attachment = Attachment("c" * 32, "Quarterly_Report.xlsx", 1, b"k" * 32, b"d" * 32, 1)
    store.add_message(msg("", kind="file", attachment=attachment))
    assert len(store.search("report.xls")) == 1
    assert len(store.search("y_R")) == 1  # short query, LIKE path, "_" literal


SPECIALS = [
    "100% sure",
    "snake_case name",
    'he said "hi" there',
    "a * b = c",
    "x NEAR y",
    "NEAR(a b)",
    "col:value",
    "back\\slash",
    "a OR b",
    "-minus ^caret",
]


@pytest.mark.parametrize("full_text", [True, False])
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("%", ["100% sure"]),
        ("0%", ["100% sure"]),
        ("% s", ["100% sure"]),
        ("_", ["snake_case name"]),
        ("e_c", ["snake_case name"]),
        ('"', ['he said "hi" there']),
        ('"hi"', ['he said "hi" there']),
        ('d "h', ['he said "hi" there']),
        ("*", ["a * b = c"]),
        ("a *", ["a * b = c"]),
        ("NEAR", ["NEAR(a b)", "x NEAR y"]),
        ("NEAR(a", ["NEAR(a b)"]),
        ("col:value", ["col:value"]),
        ("\\", ["back\\slash"]),
        ("k\\s", ["back\\slash"]),
        ("a OR b", ["a OR b"]),
        ("-minus", ["-minus ^caret"]),
        ("^ca", ["-minus ^caret"]),
        ("a%b", []),
        ("s_c", []),
    ],
)
def test_special_characters_in_queries_are_literal(
    tmp_path: Path, full_text: bool, query: str, expected: list[str]
) -> None:
    with LocalStore(tmp_path / "s.sqlite3", full_text=full_text) as s:
        s.add_messages([msg(text, time=i) for i, text in enumerate(SPECIALS)])
        assert sorted(m.text for m in s.search(query)) == sorted(expected)


def test_query_helpers_escape() -> None:
    assert fts_phrase('a"b') == '"a""b"'
    assert like_pattern("5%_\\") == "%5\\%\\_\\\\%"


_ALPHABET = st.sampled_from(list('abc %_\\"*:()你好世界🎉-^'))


@given(
    texts=st.lists(st.text(_ALPHABET, max_size=12), min_size=1, max_size=12),
    query=st.text(_ALPHABET, min_size=1, max_size=5),
)
def test_search_matches_a_plain_substring_reference(
    tmp_path_factory: pytest.TempPathFactory, texts: list[str], query: str
) -> None:
    path = tmp_path_factory.mktemp("ref") / "s.sqlite3"
    with LocalStore(path) as s:
        s.add_messages([msg(text, time=i) for i, text in enumerate(texts)])
        needle = query.strip()
        expected = [t for t in reversed(texts) if needle and needle in t]
        assert [m.text for m in s.search(query)] == expected


@pytest.mark.parametrize("limit", [1, 3, 10])
def test_short_queries_scan_recent_rows_then_everything(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    monkeypatch.setattr(store_module, "LIKE_RECENT_ROWS", 5)
    texts = [f"{'ab' if i % 2 else 'zz'}{'q' if i < 3 else ''} {i}" for i in range(30)]
    store.add_messages([msg(text, time=i) for i, text in enumerate(texts)])
    for query in ("ab", "q", "zz", "none"):  # dense in recent rows / only old / both / none
        expected = [t for t in reversed(texts) if query in t][:limit]
        assert [m.text for m in store.search(query, limit=limit)] == expected


def test_fts_index_stays_consistent_after_deletes_and_updates(store: LocalStore) -> None:
    store.add_messages([msg(f"message number {i}") for i in range(20)])
    with store._transaction() as conn:
        conn.execute("DELETE FROM messages WHERE text = 'message number 3'")
        conn.execute("UPDATE messages SET text = 'edited text' WHERE text = 'message number 4'")
        conn.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")
    assert store.search("number 3") == []
    assert store.search("number 4") == []
    assert [m.text for m in store.search("edited")] == ["edited text"]


def test_search_without_full_text_uses_like(tmp_path: Path) -> None:
    with LocalStore(tmp_path / "s.sqlite3", full_text=False) as s:
        assert s.full_text is False
        s.add_message(msg("你好世界"))
        assert [m.text for m in s.search("你好世")] == ["你好世界"]


# ---------------------------------------------------------------- outbox, drafts, pins


def test_outbox_keeps_insertion_order_and_removes(store: LocalStore) -> None:
    store.outbox_add("m3", b"three")
    store.outbox_add("m1", b"one")
    store.outbox_add("m2", b"two")
    store.outbox_add("m3", b"three again")  # replaced in place, not moved to the end
    assert store.outbox_pending() == [("m3", b"three again"), ("m1", b"one"), ("m2", b"two")]
    store.outbox_remove("m1")
    store.outbox_remove("unknown")
    assert store.outbox_pending() == [("m3", b"three again"), ("m2", b"two")]


def test_drafts_save_replace_and_delete(store: LocalStore) -> None:
    assert store.draft("user", "bob") == ""
    store.save_draft("user", "bob", "half a thought")
    store.save_draft("room", "bob", "room draft")
    store.save_draft("user", "bob", "a whole thought 你好")
    assert store.draft("user", "bob") == "a whole thought 你好"
    assert store.draft("room", "bob") == "room draft"
    store.save_draft("user", "bob", "")
    assert store.draft("user", "bob") == ""
    assert store.draft("room", "bob") == "room draft"


def test_pinned_certificates(store: LocalStore) -> None:
    assert store.pinned_certificate("bob") is None
    store.pin_certificate("bob", b"\x30\x82der1")
    assert store.pinned_certificate("bob") == b"\x30\x82der1"
    store.pin_certificate("bob", b"\x30\x82der2")
    assert store.pinned_certificate("bob") == b"\x30\x82der2"
    assert store.pinned_certificate("carol") is None


# ---------------------------------------------------------------- uploads


def upload(attachment_id: str, tmp_path: Path) -> UploadState:
    return UploadState(
        attachment_id=attachment_id,
        message_id="m" * 32,
        chat_kind="room",
        chat_id="12",
        kind="file",
        name="big.bin",
        source_path=tmp_path / "big.bin",
        encrypted_path=tmp_path / "big.bin.enc",
        size=10_000_000,
        key=b"k" * 32,
        digest=b"d" * 32,
        chunk_size=262_144,
    )


def test_uploads_survive_reopen_in_order(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    with LocalStore(path) as s:
        for attachment_id in ("b" * 32, "a" * 32, "c" * 32):
            s.save_upload(upload(attachment_id, tmp_path))
        s.set_upload_offset("a" * 32, 524_288)
        s.save_upload(upload("b" * 32, tmp_path))  # re-save keeps its place
        s.remove_upload("c" * 32)
    with LocalStore(path) as s:
        assert s.upload_state("c" * 32) is None
        state = s.upload_state("a" * 32)
        assert state == replace(upload("a" * 32, tmp_path), offset=524_288)
        assert [u.attachment_id for u in s.pending_uploads()] == ["b" * 32, "a" * 32]
        s.save_upload(upload("d" * 32, tmp_path))
        assert [u.attachment_id for u in s.pending_uploads()][-1] == "d" * 32


# ---------------------------------------------------------------- files, schema, threads


def test_file_is_private_and_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "history.sqlite3"
    with LocalStore(path) as s:
        s.add_message(msg("persisted"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with LocalStore(path) as s:
        assert [m.text for m in s.history("user", "bob")] == ["persisted"]
        assert s.unread("user", "bob") == 1
        assert s._query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
        assert s._query("PRAGMA journal_mode")[0][0] == "wal"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreVersionError):
        LocalStore(path)


def test_concurrent_writers_do_not_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = LocalStore(path)
    per_thread = 300
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for i in range(per_thread):
                store.add_message(msg(f"{name} {i}", chat_id=name, time=i))
                store.add_message(msg(f"shared {name} {i}", chat_id="shared", time=i))
                if i % 50 == 0:
                    store.mark_read("user", "shared")
                    store.history("user", "shared", limit=10)
                    store.search(name)
        except BaseException as error:  # surfaced in the main thread below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("t1", "t2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    store.close()

    with LocalStore(path) as s:
        assert s._query("PRAGMA integrity_check")[0][0] == "ok"
        s._query("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")
        assert len(s.history("user", "t1", limit=1000)) == per_thread
        assert len(s.history("user", "shared", limit=1000)) == 2 * per_thread
        unread_in_rows = s._query(
            "SELECT count(*) FROM messages WHERE chat_id = 'shared' AND is_read = 0"
        )[0][0]
        assert s.unread("user", "shared") == unread_in_rows
        assert s.unread("user", "t2") == per_thread
        assert len(s.search("shared t2", limit=1000)) == per_thread


def test_a_closed_store_refuses_with_a_clear_error(tmp_path: Path) -> None:
    from client.core.store import StoreClosed

    store = LocalStore(tmp_path / "closed.sqlite3")
    store.close()
    with pytest.raises(StoreClosed) as info:
        store.unread("user", "bob")
    assert info.value.code == "not_authenticated"
    with pytest.raises(StoreClosed):
        store.save_draft("user", "bob", "text")


def test_search_can_be_limited_to_one_chat(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "chat_search.sqlite3")
    try:
        crowd = [
            ChatMessage(f"{i:032x}", "user", "carol", "carol", 1000 + i, "text", text="hotpot 火锅")
            for i in range(30)
        ]
        mine = ChatMessage("f" * 32, "user", "bob", "bob", 10, "text", text="hotpot 火锅 old")
        store.add_messages([mine, *crowd])
        for query in ("hotpot", "火锅"):
            assert [m.message_id for m in store.search(query, limit=5)] != [mine.message_id]
            found = store.search(query, limit=5, chat=("user", "bob"))
            assert [m.message_id for m in found] == [mine.message_id]
    finally:
        store.close()


def test_held_deliveries_are_kept_per_sender_and_listed_by_sender(store: LocalStore) -> None:
    store.hold_delivery("m1", "carol", b"one")
    store.hold_delivery("m2", "alice", b"two")
    store.hold_delivery("m3", "carol", b"three")
    store.hold_delivery("m1", "carol", b"one again")  # the same delivery held twice: once
    assert store.held_senders() == ["carol", "alice"]
    assert store.held_deliveries("carol") == [b"one", b"three"]
    store.drop_held("carol")
    assert store.held_senders() == ["alice"] and store.held_deliveries("carol") == []
