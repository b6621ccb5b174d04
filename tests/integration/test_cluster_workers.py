"""`run_server.py --workers 2`: two real reactor processes on one port (SO_REUSEPORT).

Which worker holds a user is read from the bus's own presence sets in Redis
(`uchat:held:<node>`), the same record every node uses to route hints.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from server.cluster.local_services import LocalRedis
from server.launcher import FAST_ENV, REPO_ROOT, RunningServer, start_server
from tests.integration.cluster_env import cluster_env
from tests.integration.helpers import Accounts, User, make_accounts, wait_until

accounts = pytest.fixture(name="accounts")(make_accounts)
USERS = 10


def child_pids(pid: int) -> set[int]:
    """Processes whose parent is `pid` (the supervisor's workers)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def holders(url: str) -> dict[int, str]:
    """{user id: node id} from the bus's presence sets."""
    client = redis.Redis.from_url(url, decode_responses=True)
    out = {}
    for key in client.scan_iter("uchat:held:*"):
        node = key.removeprefix("uchat:held:")
        for member in client.smembers(key):
            out[int(member)] = node
    return out


class Group:
    def __init__(self, running: RunningServer, url: str, dsn: str) -> None:
        self.running = running
        self.url = url
        self.dsn = dsn

    def nodes_of(self, users: list[User]) -> dict[str, list[User]]:
        """{node id: the users it holds} once every one of `users` is on the bus."""
        import psycopg

        wait_until(lambda: len(holders(self.url)) >= len(users), what="every user on the bus")
        with psycopg.connect(self.dsn) as connection:
            rows = connection.execute("SELECT id, username FROM users").fetchall()
        names = {int(row[0]): str(row[1]) for row in rows}
        by_name = {user.name: user for user in users}
        found: dict[str, list[User]] = {}
        for user_id, node in holders(self.url).items():
            found.setdefault(node, []).append(by_name[names[user_id]])
        return found


@pytest.fixture
def group(
    tmp_path: Path, fresh_pg_dsn: Callable[[], str], local_redis: LocalRedis
) -> Iterator[Group]:
    dsn = fresh_pg_dsn()
    env = cluster_env(tmp_path, dsn, local_redis)
    env["UCHAT_SERVER_NODE_ID"] = "host"
    running = start_server(tmp_path / "group", env, ("--workers", "2"))
    yield Group(running, env["UCHAT_SERVER_REDIS_URL"], dsn)
    if running.is_alive():
        running.stop()


def test_two_workers_share_one_port_and_chat_across(group: Group, accounts: Accounts) -> None:
    running = group.running
    workers = child_pids(running.pid)
    assert len(workers) == 2

    users = [accounts.user(running, "w") for _ in range(USERS)]
    by_node = group.nodes_of(users)
    assert set(by_node) == {"host-w0", "host-w1"}, by_node  # the kernel used both
    owner, member = by_node["host-w0"][0], by_node["host-w1"][0]
    room_id = int(owner.client.create_room(f"room {owner.name}").id)
    member.client.join_room(room_id)
    sent = owner.client.send_text(room_id, "from worker 0 你好")
    assert member.events.message(sent.message_id).text == "from worker 0 你好"
    answer = member.client.send_text(room_id, "from worker 1")
    assert owner.events.message(answer.message_id).text == "from worker 1"

    assert running.stop() == 0  # SIGTERM to the supervisor: every worker stops
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    log = running.log_text()
    assert log.count("stopped") >= 2 and "all workers stopped" in log
    assert " ERROR " not in log and "Traceback" not in log


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def test_a_dead_worker_is_restarted_and_its_clients_come_back(
    group: Group, accounts: Accounts
) -> None:
    running = group.running
    users = [accounts.user(running, "r") for _ in range(8)]
    by_node = group.nodes_of(users)
    index, killed = _a_worker_holding_users(running, by_node)
    victims = by_node[f"host-w{index}"]
    marks = {user.name: user.events.mark() for user in victims}
    os.kill(killed, signal.SIGKILL)
    wait_until(
        lambda: len(child_pids(running.pid)) == 2 and killed not in child_pids(running.pid),
        timeout=30.0,
        what="a replacement worker",
    )
    assert running.is_alive()
    assert f"worker {index} (pid {killed}) exited with status -9; restarting it" in (
        running.log_text()
    )
    for user in victims:  # they reconnect to the same port: to either worker
        user.events.wait_reconnected(marks[user.name], timeout=30.0)
    # The owner was on the killed worker; the member is on another worker now if
    # anyone is (all eight may have landed on one worker, before or after).
    owner = victims[0]
    placed = group.nodes_of(users)
    elsewhere = [user for held in placed.values() if owner not in held for user in held]
    member = (elsewhere or [user for user in users if user is not owner])[0]
    room_id = int(owner.client.create_room(f"after {owner.name}").id)
    member.client.join_room(room_id)
    sent = owner.client.send_text(room_id, "after the restart")
    assert member.events.message(sent.message_id).text == "after the restart"


def _a_worker_holding_users(
    running: RunningServer, by_node: dict[str, list[User]]
) -> tuple[int, int]:
    """(index, pid) of a worker holding some of the users, from the supervisor's log."""
    started = re.findall(r"worker (\d) listening, pid (\d+)", running.log_text())
    for index, pid in started:
        if f"host-w{index}" in by_node:
            return int(index), int(pid)
    raise AssertionError(f"no worker holds a user: {by_node}")


def test_workers_are_refused_on_sqlite(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("UCHAT_")}
    env.update(FAST_ENV)
    command = [sys.executable, str(REPO_ROOT / "run_server.py"), "--workers", "2"]
    result = subprocess.run(
        [*command, "--port", "0", "--data-dir", str(tmp_path / "data")],
        check=False,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--workers needs cluster mode" in result.stderr
    assert "SQLite" in result.stderr
    assert result.stdout == ""
