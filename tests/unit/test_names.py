"""Canonical usernames, invisible characters and TR39 skeletons (common/names.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import ValidationError
from common.names import canonical, hidden_characters, skeleton
from common.validation import validate_username
from server.storage import users
from server.storage.database import SqliteDatabase

CYRILLIC_A = "\u0430"
FULLWIDTH_ALICE = "\uff41\uff4c\uff49\uff43\uff45"


@pytest.mark.parametrize(
    ("left", "right"),
    [("Élise", "élise"), (FULLWIDTH_ALICE, "alice"), ("ALICE", "alice"), ("Straße", "STRASSE")],
)
def test_spellings_of_one_name_share_a_canonical_form(left: str, right: str) -> None:
    assert canonical(left) == canonical(right)


@pytest.mark.parametrize("name", [f"{CYRILLIC_A}lice", "a1ice", FULLWIDTH_ALICE, "ALICE"])
def test_look_alikes_share_a_skeleton(name: str) -> None:
    assert skeleton(name) == skeleton("alice")


@pytest.mark.parametrize("name", ["bob", "élise", "elise_2", "张三"])
def test_different_names_keep_different_skeletons(name: str) -> None:
    assert skeleton(name) != skeleton("alice")


@pytest.mark.parametrize("mark", ["\u034f", "\ufe0f", "\u3164", "\u200b", "\u202e", "\u2066"])
def test_invisible_characters_are_refused_with_their_own_code(mark: str) -> None:
    assert hidden_characters(f"alice{mark}") == [f"U+{ord(mark):04X}"]
    with pytest.raises(ValidationError) as caught:
        validate_username(f"alice{mark}")
    assert caught.value.code == "username_invisible"
    assert f"U+{ord(mark):04X}" in caught.value.message


def test_validation_stores_the_nfkc_spelling() -> None:
    assert validate_username(FULLWIDTH_ALICE) == "alice"
    assert validate_username("Élise") == "Élise"


@given(st.text(max_size=40))
def test_validation_never_raises_anything_else_and_its_result_is_stable(text: str) -> None:
    try:
        name = validate_username(text)
    except ValidationError:
        return
    assert validate_username(name) == name
    assert not hidden_characters(name)
    assert canonical(canonical(name)) == canonical(name)


def _v1_database(path: Path, names: list[str]) -> None:
    """A database as version 1 left it: usernames unique under ASCII NOCASE only."""
    from server.storage.database import _schema_v1

    connection = sqlite3.connect(path)
    connection.executescript(_schema_v1() + "\nPRAGMA user_version = 1;")
    for index, name in enumerate(names):
        connection.execute(
            "INSERT INTO users (username, password, email, sex, age, certificate, created_at)"
            " VALUES (?, 'x', ?, 'other', 30, x'00', 0)",
            (name, f"u{index}@example.org"),
        )
    connection.commit()
    connection.close()


def test_migration_folds_old_names_and_keeps_colliding_accounts_apart(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    _v1_database(path, ["élise", "Élise", "bob"])
    db = SqliteDatabase.open(path)
    try:
        rows = {row["username"]: row["canonical"] for row in db.all("SELECT * FROM users")}
        assert rows["élise"] == "élise"  # the oldest keeps the canonical form
        assert rows["Élise"] == "élise#2"  # the later one is kept apart ...
        assert rows["bob"] == "bob"
        newer = users.by_username(db, "Élise")  # ... and still logs in by its spelling
        assert newer is not None and newer.id == 2
        older = users.by_username(db, "ÉLISE")
        assert older is not None and older.id == 1
        assert users.username_taken(db, "ELISE") is False
        assert users.username_taken(db, "ÉLISE")
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("UPDATE users SET canonical = 'bob' WHERE id = 1")
    finally:
        db.close()
    assert SqliteDatabase.open(path).schema_version >= 2


def test_database_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "server.db"
    db = SqliteDatabase.open(path)
    db.execute("CREATE TABLE probe (x)")
    db.commit()
    modes = {p.name: p.stat().st_mode & 0o777 for p in path.parent.iterdir()}
    db.close()
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert modes and all(mode == 0o600 for mode in modes.values()), modes
