"""The client under hostile load: private files, no weak MAC unless configured.

Against a real server: what a user receives (files, local history) is readable by
that user only, and a server asking for HMAC-MD5 is refused unless the client's own
configuration allows it.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from common.errors import ConnectionLost, HandshakeError
from tests.integration.conftest import RunningServer, ServerFactory
from tests.integration.helpers import PASSWORD, Accounts, befriend, make_accounts

accounts = pytest.fixture(name="accounts")(make_accounts)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_received_files_and_local_databases_are_private(
    server: RunningServer, accounts: Accounts, tmp_path: Path
) -> None:
    alice = accounts.user(server, "alice")
    bob = accounts.user(server, "bob")
    befriend(alice, bob)
    source = tmp_path / "report.txt"
    source.write_text("quarterly numbers", encoding="utf-8")
    sent = alice.client.send_file(bob.name, source)
    received = bob.events.message(sent.message_id)
    saved = bob.client.download(received)  # the default folder under the data folder
    assert saved.read_text(encoding="utf-8") == "quarterly numbers"
    assert mode(saved) == 0o600
    chosen = bob.client.download(received, tmp_path / "new" / "inbox")
    assert mode(chosen) == 0o600 and mode(tmp_path / "new") == 0o700
    files = [p for p in bob.data_dir.rglob("*") if p.is_file()]
    folders = [p for p in bob.data_dir.rglob("*") if p.is_dir()]
    assert {"history.sqlite3", "keys.json", "report.txt"} <= {p.name for p in files}
    assert {str(p): mode(p) for p in files if mode(p) != 0o600} == {}
    assert {str(p): mode(p) for p in folders if mode(p) != 0o700} == {}


def test_the_server_database_is_private(server: RunningServer, accounts: Accounts) -> None:
    accounts.user(server, "carol")
    found = [p for p in server.data_dir.iterdir() if p.name.startswith("uchat.db")]
    assert found and {p.name: mode(p) for p in found if mode(p) != 0o600} == {}
    assert mode(server.data_dir) == 0o700


def test_hmac_md5_is_refused_unless_the_client_allows_it(
    server_factory: ServerFactory, accounts: Accounts, tmp_path: Path
) -> None:
    server = server_factory(extra_args=("--mac", "hmac-md5"))
    strict = accounts.client(server, tmp_path / "strict")
    with pytest.raises((HandshakeError, ConnectionLost)):  # the server finds no common MAC
        strict.connect()
    lenient = accounts.client(server, tmp_path / "lenient", allow_hmac_md5=True)
    lenient.connect()
    lenient.register("md5user", PASSWORD, "md5user@example.org", "other", 30)
    assert lenient.login("md5user", PASSWORD).username == "md5user"
