"""Attachments across nodes, on both stores: a shared folder, and PostgreSQL chunk rows.

alice begins an upload on node A; A is SIGKILLed in the middle; her client moves to
node B and resumes from what the cluster already holds; bob, on node C, downloads
the file, byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server.cluster.local_services import LocalRedis
from server.launcher import RunningServer, start_server
from tests.integration.cluster_env import cluster_env
from tests.integration.helpers import Accounts, befriend, make_accounts

accounts = pytest.fixture(name="accounts")(make_accounts)
FILE_SIZE = 6 * 1024 * 1024


@pytest.fixture(params=["files", "database"])
def nodes(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    fresh_pg_dsn: Callable[[], str],
    local_redis: LocalRedis,
) -> Iterator[Callable[[str], RunningServer]]:
    env = cluster_env(tmp_path, fresh_pg_dsn(), local_redis)
    if request.param == "files":
        env["UCHAT_SERVER_ATTACHMENTS_DIR"] = str(tmp_path / "shared-attachments")
    else:
        env["UCHAT_SERVER_ATTACHMENT_STORE"] = "database"
    started: list[RunningServer] = []

    def start(name: str) -> RunningServer:
        running = start_server(tmp_path / name, {**env, "UCHAT_SERVER_NODE_ID": name})
        started.append(running)
        return running

    yield start
    for running in started:
        if running.is_alive():
            running.stop()
        assert " ERROR " not in running.log_text(), running.log_text()[-3000:]
    if request.param == "database":  # nothing went to a folder
        for running in started:
            assert not any((running.data_dir / "attachments").glob("*"))


def test_an_upload_begun_on_a_dead_node_resumes_on_another_and_downloads_on_a_third(
    nodes: Callable[[str], RunningServer], accounts: Accounts, tmp_path: Path
) -> None:
    node_a, node_b, node_c = nodes("a"), nodes("b"), nodes("c")
    alice = accounts.user(node_a, "alice", servers=[(node_b.host, node_b.port)])
    bob = accounts.user(node_a, "bob")
    befriend(alice, bob)
    accounts.reopen(bob, node_c)

    payload = os.urandom(FILE_SIZE)
    source = tmp_path / "big.bin"
    source.write_bytes(payload)
    killed_at: list[int] = []
    kill_once = threading.Lock()

    def kill_a_midway(done: int, total: int) -> None:
        if 0 < done < total and kill_once.acquire(blocking=False):
            killed_at.append(done)
            node_a.process.kill()  # SIGKILL: no goodbye, mid-upload

    mark = alice.events.mark()
    sent = alice.client.send_file(bob.name, source, progress=kill_a_midway)
    assert killed_at, "the upload finished before node A could be killed"
    node_a.process.wait()
    alice.events.wait_reconnected(mark, timeout=30.0)
    assert (alice.client.host, alice.client.port) == (node_b.host, node_b.port)

    received = bob.events.message(sent.message_id, timeout=60.0)
    assert sent.attachment is not None
    progress = [
        event.data["done"]
        for event in alice.events.matching("transfer", attachment_id=sent.attachment.attachment_id)
        if event.data["direction"] == "upload"
    ]
    after_kill = progress[progress.index(killed_at[0]) :]
    # UPLOAD_BEGIN on B answered where A had got to (never back to 0), and it went on.
    assert after_kill == sorted(after_kill) and after_kill[-1] == progress[-1] > killed_at[0]
    assert len(after_kill) > 2
    path = bob.client.download(received, tmp_path / "inbox")
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(payload).digest()
