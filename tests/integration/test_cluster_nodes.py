"""Two real server processes on one private PostgreSQL and one redis-server.

alice is on node A, bob on node B: they see each other come and go and exchange 1:1
messages, every client pinning the one cluster fingerprint. (Friend requests and the
other pushes that are not messages, across nodes: test_cluster_pushes.py.)
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from common.errors import RequestError
from server.cluster.local_services import LocalPostgres, LocalRedis, private_root
from server.launcher import RunningServer, start_server
from tests.integration.helpers import (
    Accounts,
    EventLog,
    User,
    befriend,
    contact_of,
    make_accounts,
    refused,
    wait_until,
)

accounts = pytest.fixture(name="accounts")(make_accounts)
_redis_dbs = itertools.count(1)
NodeFactory = Callable[[str], RunningServer]


@pytest.fixture
def cluster(
    tmp_path: Path,
    fresh_pg_dsn: Callable[[], str],
    local_redis: LocalRedis,
    local_postgres: LocalPostgres,
) -> Iterator[NodeFactory]:
    """Starts nodes of one cluster: one fresh database, one Redis database number."""
    dsn = fresh_pg_dsn()
    number = next(_redis_dbs) % 16
    url = f"redis://127.0.0.1:{local_redis.port}/{number}"
    redis.Redis.from_url(url).flushdb()
    yield from _nodes_on(tmp_path, dsn, url)


def _nodes_on(
    tmp_path: Path, dsn: str, url: str, expected_errors: str = ""
) -> Iterator[NodeFactory]:
    """Starts nodes; afterwards, no error in their logs but `expected_errors` ones."""
    passphrase = tmp_path / "ca-passphrase"
    passphrase.write_text("a passphrase for the test cluster\n")
    passphrase.chmod(0o600)
    started: list[RunningServer] = []

    def start(name: str) -> RunningServer:
        env = {
            "UCHAT_SERVER_DATABASE_URL": dsn,
            "UCHAT_SERVER_REDIS_URL": url,
            "UCHAT_SERVER_CA_PASSPHRASE_FILE": str(passphrase),
            "UCHAT_SERVER_NODE_ID": name,
        }
        running = start_server(tmp_path / name, env)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.is_alive():
            running.stop()
    for running in started:
        errors = [
            line
            for line in running.log_text().splitlines()
            if " ERROR " in line and not (expected_errors and expected_errors in line)
        ]
        assert errors == [], running.log_text()[-3000:]


def test_alice_on_one_node_and_bob_on_another_chat_and_see_each_other(
    cluster: NodeFactory, accounts: Accounts
) -> None:
    node_a, node_b = cluster("a"), cluster("b")
    assert node_a.fingerprint == node_b.fingerprint  # one identity for the cluster

    alice = accounts.user(node_a, "alice")
    bob = accounts.user(node_a, "bob")
    befriend(alice, bob)

    # bob moves to node B: alice on A sees him leave, then come back from B.
    accounts.reopen(bob, node_b)
    alice.events.wait("presence", username=bob.name, online=False)
    online = alice.events.wait_one("presence", username=bob.name, online=True)
    assert online.data["ip"] == "127.0.0.1" and online.data["port"] > 0
    assert contact_of(bob, alice.name).online  # B knows alice is on A
    assert {c.id: c for c in alice.client.refresh_contacts()}[bob.name].online

    sent = alice.client.send_text(bob.name, "from node A 你好")
    assert bob.events.message(sent.message_id).text == "from node A 你好"
    alice.events.status(sent.message_id, "sent")
    reply = bob.client.send_text(alice.name, "from node B 👋")
    assert alice.events.message(reply.message_id).text == "from node B 👋"

    # Ten in a row keep their order across the nodes.
    burst = [alice.client.send_text(bob.name, f"burst {i}") for i in range(10)]
    received = [bob.events.message(m.message_id).text for m in burst]
    assert received == [f"burst {i}" for i in range(10)]

    bob.client.logout()
    alice.events.wait("presence", username=bob.name, online=False)
    assert not {c.id: c for c in alice.client.refresh_contacts()}[bob.name].online

    # Accounts register on either node: one key-transparency log, proofs valid on both.
    carol = accounts.user(node_b, "carol")
    dave = accounts.user(node_a, "dave")
    assert carol.client.connected and dave.client.connected


def test_a_message_for_a_user_offline_everywhere_waits_in_the_database(
    cluster: NodeFactory, accounts: Accounts
) -> None:
    node_a, node_b = cluster("a"), cluster("b")
    alice = accounts.user(node_a, "alice")
    bob = accounts.user(node_a, "bob")
    befriend(alice, bob)
    bob.client.logout()
    alice.events.wait("presence", username=bob.name, online=False)
    sent = [alice.client.send_text(bob.name, f"offline {i}") for i in range(5)]
    accounts.reopen(bob, node_b)  # logs in on the other node
    got = [bob.events.message(m.message_id).text for m in sent]
    assert got == [f"offline {i}" for i in range(5)]


def test_a_client_moves_to_the_next_node_when_its_node_dies(
    cluster: NodeFactory, accounts: Accounts
) -> None:
    node_a, node_b = cluster("a"), cluster("b")
    bob = accounts.user(node_a, "bob")
    alice = accounts.user(node_a, "alice")
    befriend(alice, bob)
    accounts.reopen(bob, node_b)
    # alice knows both addresses; she has only ever seen node A (and pinned it there).
    accounts.reopen(alice, node_a, servers=[(node_b.host, node_b.port)])
    assert contact_of(alice, bob.name).online  # bob is on B: the login said so

    mark = alice.events.mark()
    node_a.process.kill()  # SIGKILL: no goodbye
    node_a.process.wait()
    alice.events.wait_reconnected(mark)
    assert (alice.client.host, alice.client.port) == (node_b.host, node_b.port)
    sent = alice.client.send_text(bob.name, "after the failover")
    assert bob.events.message(sent.message_id).text == "after the failover"
    reply = bob.client.send_text(alice.name, "got it")
    assert alice.events.message(reply.message_id).text == "got it"


def test_a_listed_server_with_another_identity_is_refused(
    cluster: NodeFactory, accounts: Accounts, server_factory: Callable[..., RunningServer]
) -> None:
    node_a = cluster("a")
    stranger = server_factory(name="stranger")  # a single-node server: its own CA
    assert stranger.fingerprint != node_a.fingerprint
    alice = accounts.user(node_a, "alice", servers=[(stranger.host, stranger.port)])
    mark = alice.events.mark()
    node_a.process.kill()
    node_a.process.wait()
    alice.events.wait(
        "connection",
        lambda e: e.data["state"] == "disconnected" and "pinned fingerprint" in e.data["error"],
        since=mark,
        timeout=15.0,
    )
    alice.events.stays_quiet("connection", lambda e: e.data["state"] == "connected", 1.5)
    assert not alice.client.connected


def test_a_login_on_another_node_kicks_the_older_session(
    cluster: NodeFactory, accounts: Accounts
) -> None:
    node_a, node_b = cluster("a"), cluster("b")
    alice = accounts.user(node_a, "alice")
    bob = accounts.user(node_a, "bob")
    befriend(alice, bob)

    second = accounts.client(node_b, alice.data_dir)  # same computer: same keys
    second_events = EventLog(second)
    second.login(alice.name, alice.password)

    kicked = alice.events.wait_one("kicked")
    assert kicked.data["reason"] == "logged_in_elsewhere"
    online = bob.events.wait_one("presence", username=alice.name, online=True, since=0)
    assert kicked.data["address"] == f"{online.data['ip']}:{online.data['port']}"
    alice.events.wait("connection", state="disconnected")
    alice.events.stays_quiet("connection", lambda e: e.data["state"] == "connected", 1.0)
    bob.events.stays_quiet("presence", lambda e: e.data["online"] is False, 0.5)
    assert contact_of(bob, alice.name).online

    sent = second.send_text(bob.name, "the session on node B works")
    assert bob.events.message(sent.message_id).text == "the session on node B works"
    assert second_events.matching("kicked") == []


def test_a_room_message_reaches_members_on_the_other_node(
    cluster: NodeFactory, accounts: Accounts
) -> None:
    node_a, node_b = cluster("a"), cluster("b")
    owner = accounts.user(node_a, "owner")
    near = accounts.user(node_a, "near")
    far = accounts.user(node_a, "far")
    room_id = int(owner.client.create_room(f"room {owner.name}").id)
    near.client.join_room(room_id)
    far.client.join_room(room_id)
    accounts.reopen(far, node_b)
    assert contact_of(far, str(room_id)) is not None

    sent = owner.client.send_text(room_id, "to both nodes 🍜")
    assert near.events.message(sent.message_id).text == "to both nodes 🍜"
    assert far.events.message(sent.message_id).text == "to both nodes 🍜"
    answer = far.client.send_text(room_id, "from B")
    assert owner.events.message(answer.message_id).text == "from B"
    assert near.events.message(answer.message_id).text == "from B"


@pytest.fixture
def own_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL this test may stop and start (the suite's shared one stays up)."""
    root = private_root("uchat-test-pg-outage-")
    server = LocalPostgres(root)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_a_postgresql_restart_answers_server_busy_then_recovers(
    tmp_path: Path, own_postgres: LocalPostgres, local_redis: LocalRedis, accounts: Accounts
) -> None:
    url = f"redis://127.0.0.1:{local_redis.port}/{next(_redis_dbs) % 16}"
    redis.Redis.from_url(url).flushdb()
    # A turn whose writes went with the connection is withheld (logged as an error).
    nodes = _nodes_on(
        tmp_path, own_postgres.create_database("uchat"), url, expected_errors="StorageUnavailable"
    )
    start = next(nodes)
    try:
        node = start("a")
        alice = accounts.user(node, "alice")
        bob = accounts.user(node, "bob")
        befriend(alice, bob)

        own_postgres.stop()  # fast shutdown: every session is cut
        error = refused(alice.client.refresh_contacts)
        assert error.code == "server_busy"
        assert "database" in error.message
        assert node.is_alive()

        own_postgres.start()  # the same port: the node reconnects by itself
        wait_until(lambda: _contacts_work(alice), what="contacts after the restart")
        sent = alice.client.send_text(bob.name, "after the database came back")
        assert bob.events.message(sent.message_id).text == "after the database came back"
    finally:
        next(nodes, None)


def _contacts_work(user: User) -> bool:
    try:
        user.client.refresh_contacts()
    except RequestError as exc:
        assert exc.code == "server_busy", exc
        return False
    return True
