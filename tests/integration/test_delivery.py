"""Delivery guarantees end to end: resumable uploads, history search, the durable outbox,
automatic reconnection, a server killed mid-traffic, and no re-delivery at login.

Failures are made on purpose, at a chosen moment: a `TcpProxy` between client and server
cuts the link, refuses connections, or swallows the server's replies; the server process
is stopped or SIGKILLed and restarted on the same data folder and port; a sending
client runs in a subprocess that is SIGKILLed while it waits for an acknowledgement.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from client.core import ChatMessage
from common.protocol.message import Message
from common.protocol.opcodes import MessageType
from tests.integration.conftest import REPO_ROOT, RunningServer, ServerFactory
from tests.integration.helpers import (
    PASSWORD,
    QUIET,
    SENDER_READY,
    SENDER_SENDING,
    Accounts,
    TcpProxy,
    User,
    befriend,
    make_accounts,
    make_proxies,
    raw_connection,
    restart_on_same_port,
    sender_command,
    serve_one_module,
    unique_name,
    wait_until,
)

shared_server = pytest.fixture(scope="module", name="shared_server")(serve_one_module)
accounts = pytest.fixture(name="accounts")(make_accounts)
proxies = pytest.fixture(name="proxies")(make_proxies)

CHUNK = 256 * 1024  # the server's default chunk size


def new_messages(pushes: list[Message]) -> list[str]:
    """Message ids of every NEW_MESSAGE push, in order."""
    return [
        entry["message_id"]
        for push in pushes
        if push.type is MessageType.NEW_MESSAGE
        for entry in push.params["messages"]
    ]


# ---------------------------------------------------------------- resumable upload


def test_an_upload_cut_off_midway_resumes_from_the_servers_offset(
    shared_server: RunningServer, accounts: Accounts, proxies, tmp_path: Path
) -> None:
    proxy: TcpProxy = proxies(shared_server)
    alice = accounts.user(proxy, "alice")
    bob = accounts.user(shared_server, "bob")
    befriend(alice, bob)
    source = tmp_path / "resumable.bin"
    source.write_bytes(os.urandom(16 * CHUNK + 777))

    progress: list[tuple[int, int]] = []

    def cut_after_three_chunks(done: int, total: int) -> None:
        progress.append((done, total))
        if done >= 3 * CHUNK and len(proxy.upstream_bytes) == 1:
            proxy.cut()

    sent = alice.client.send_file(bob.name, source, progress=cut_after_three_chunks)
    assert sent.status == "sending"  # not refused: queued until the connection is back
    assert sent.attachment is not None
    total = progress[-1][1]
    assert 3 * CHUNK <= progress[-1][0] < total

    received = bob.events.message(sent.message_id, timeout=20)
    alice.events.status(sent.message_id, "delivered")
    alice.events.wait("connection", state="disconnected")
    uploads = [
        e.data["done"]
        for e in alice.events.matching(
            "transfer", attachment_id=sent.attachment.attachment_id, direction="upload"
        )
    ]
    # The first attempt reported through the callback too; the rest is the resumed one,
    # which begins at the offset UPLOAD_BEGIN returned: what the server already had.
    first_attempt, resumed = uploads[: len(progress)], uploads[len(progress) :]
    assert first_attempt == [done for done, _ in progress]
    assert 3 * CHUNK <= resumed[0] < total
    assert resumed == sorted(resumed) and resumed[-1] == total
    assert len(proxy.upstream_bytes) == 2  # one reconnection, which did not start over
    assert proxy.upstream_bytes[1] < total - 2 * CHUNK

    path = bob.client.download(received, tmp_path / "inbox")
    assert path.read_bytes() == source.read_bytes()


# ---------------------------------------------------------------- history search


def test_history_search_finds_english_and_chinese_words(
    shared_server: RunningServer, accounts: Accounts, tmp_path: Path
) -> None:
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    befriend(alice, bob)
    texts = [
        "I bought a pineapple at the market",
        "我今天吃了菠萝蜜和西瓜",
        "nothing to see here",
        "Pineapples are tropical 🍍",
    ]
    sent = [alice.client.send_text(bob.name, text) for text in texts]
    report = tmp_path / "年度报告.txt"
    report.write_text("numbers", encoding="utf-8")
    sent.append(alice.client.send_file(bob.name, report))
    bob.events.wait_messages(len(sent))

    def found(user: User, query: str) -> set[str]:
        return {m.message_id for m in user.client.search_history(query)}

    for user in (alice, bob):  # the sender's copy and the recipient's
        assert found(user, "pineapple") == {sent[0].message_id, sent[3].message_id}
        assert found(user, "PINEAPPLE") == found(user, "pineapple")
        assert found(user, "菠萝蜜") == {sent[1].message_id}
        assert found(user, "西瓜") == {sent[1].message_id}
        assert found(user, "报告") == {sent[4].message_id}  # file names too
        assert found(user, "see here") == {sent[2].message_id}
        assert found(user, "榴莲") == set()
        assert found(user, "100%") == set()  # wildcards are taken literally
    assert [m.text for m in bob.client.search_history("pineapple", limit=1)] == [texts[3]]


# ---------------------------------------------------------------- the outbox


class LineReader:
    """The stdout lines of a subprocess, readable with a timeout."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        stdout = process.stdout

        def read() -> None:
            for line in stdout:
                self.lines.put(line.strip())

        threading.Thread(target=read, daemon=True).start()

    def expect(self, wanted: str, timeout: float = 20.0) -> None:
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line == wanted:
                return
            seen.append(line)
        raise AssertionError(f"the sender never printed {wanted!r}; it printed {seen}")

    def rest(self) -> list[str]:
        """Whatever was printed and not read yet."""
        lines = []
        while not self.lines.empty():
            lines.append(self.lines.get_nowait())
        return lines


def test_the_outbox_survives_a_sender_killed_before_the_acknowledgement(
    shared_server: RunningServer, accounts: Accounts, proxies
) -> None:
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    befriend(alice, bob)
    alice.client.close()  # the subprocess takes over alice's data folder
    proxy: TcpProxy = proxies(shared_server)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UCHAT_")}
    sender = subprocess.Popen(
        sender_command(proxy.host, proxy.port, alice.data_dir, alice.name, bob.name),
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    output = LineReader(sender)
    try:
        output.expect(SENDER_READY)
        proxy.mode = "blackhole"  # from now on the server's answers never reach the sender
        text = f"exactly once {os.urandom(4).hex()}"
        assert sender.stdin is not None
        sender.stdin.write(text + "\n")
        sender.stdin.flush()
        output.expect(SENDER_SENDING)
        first = bob.events.wait_one("message", lambda e: e.data["message"].text == text)
        message_id = first.data["message"].message_id  # stored by the server and delivered
        time.sleep(0.2)  # the sender is still waiting for the reply it will never get
        assert sender.poll() is None
        sender.send_signal(signal.SIGKILL)
        sender.wait(10)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()
    assert sender.returncode == -signal.SIGKILL
    assert output.rest() == []  # it never saw the acknowledgement

    accounts.reopen(alice, shared_server)  # same data folder: the outbox is replayed
    # bob's receipt may come before the server's reply to the replay: "delivered" then
    alice.events.wait(
        "message_status",
        lambda e: e.data["status"] in ("sent", "delivered"),
        message_id=message_id,
    )
    [mine] = [m for m in alice.client.history(bob.name) if m.message_id == message_id]
    assert mine.text == text and mine.status in ("sent", "delivered")
    bob.events.stays_quiet("message", within=QUIET + 0.4)
    assert [m.message_id for m in bob.events.messages()] == [message_id]
    assert [m.message_id for m in bob.client.history(alice.name)] == [message_id]


# ---------------------------------------------------------------- reconnection


def test_a_dropped_client_reconnects_by_itself_and_gets_what_was_sent_meanwhile(
    server_factory: ServerFactory, accounts: Accounts, proxies
) -> None:
    server = server_factory(name="restarting")
    proxy: TcpProxy = proxies(server)
    alice = accounts.user(server, "alice")
    bob = accounts.user(proxy, "bob")
    befriend(alice, bob)
    before = alice.client.send_text(bob.name, "before the restart")
    bob.events.message(before.message_id)

    marks = alice.events.mark(), bob.events.mark()
    server.stop()
    bob.events.wait("connection", since=marks[1], state="disconnected")
    proxy.mode = "refuse"  # bob cannot get back in until we say so
    restart_on_same_port(server_factory, server)
    alice.events.wait_reconnected(since=marks[0])
    meanwhile = alice.client.send_text(bob.name, "sent while bob was away 🛰️")
    assert meanwhile.status == "sent"  # stored for bob, who is offline
    time.sleep(0.3)
    assert not bob.client.connected

    proxy.mode = "forward"
    assert bob.events.message(meanwhile.message_id, timeout=15).text == "sent while bob was away 🛰️"
    states = [e.data["state"] for e in bob.events.matching("connection", since=marks[1])]
    assert states[0] == "disconnected" and "reconnecting" in states, states
    assert states[-1] == "connected" and "connected" not in states[:-1], states
    wait_until(lambda: bob.client.connected, what="bob connected again")
    alice.events.status(meanwhile.message_id, "delivered")
    assert [m.message_id for m in bob.events.messages()] == [
        before.message_id,
        meanwhile.message_id,
    ]
    sent_back = bob.client.send_text(alice.name, "back again")  # and it works both ways
    alice.events.message(sent_back.message_id)


def test_every_acknowledged_message_survives_a_server_sigkill_exactly_once(
    server_factory: ServerFactory, accounts: Accounts
) -> None:
    server = server_factory(name="crashing")
    alice = accounts.user(server, "alice")
    bob = accounts.user(server, "bob")
    befriend(alice, bob)
    alice.client.send_text(bob.name, "warm-up")  # pins the certificates on both sides

    results: list[ChatMessage] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def keep_sending() -> None:
        number = 0
        while not stop.is_set() and number < 2000:
            try:
                results.append(alice.client.send_text(bob.name, f"traffic {number}"))
            except Exception as exc:  # reported by the assertion below
                errors.append(exc)
                return
            number += 1

    sender = threading.Thread(target=keep_sending, name="test-traffic")
    sender.start()
    try:
        wait_until(lambda: len(results) >= 40, what="traffic before the crash")
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        alice.events.wait("connection", state="disconnected")
        wait_until(lambda: results[-1].status == "sending", what="sends while the server is down")
        count = len(results)
        wait_until(lambda: len(results) >= count + 5, what="more sends while down")
    finally:
        stop.set()
        sender.join(30)
    assert errors == []
    acknowledged = {m.message_id for m in results if m.status in ("sent", "delivered")}
    queued = {m.message_id for m in results} - acknowledged
    assert len(acknowledged) >= 40 and len(queued) >= 5

    restarted = restart_on_same_port(server_factory, server)
    everything = acknowledged | queued

    def received_ids() -> set[str]:
        return {m.message_id for m in bob.events.messages()}

    wait_until(lambda: everything <= received_ids(), timeout=30, what="every message at bob")
    bob.events.stays_quiet("message", within=QUIET)
    counts = Counter(m.message_id for m in bob.events.messages())
    assert [mid for mid, n in counts.items() if n > 1] == []  # nothing shown twice
    history = Counter(m.message_id for m in bob.client.history(alice.name, limit=5000))
    assert [mid for mid, n in history.items() if n > 1] == []
    assert everything <= set(history)

    def still_queued() -> set[str]:
        mine = alice.client.history(bob.name, limit=5000)
        return {m.message_id for m in mine if m.status not in ("sent", "delivered")}

    wait_until(lambda: still_queued() == set(), what="the outbox acknowledged after restart")

    # the server itself has nothing left to push to bob: all was acknowledged exactly once
    bob.client.close()
    pushes: list[Message] = []
    with raw_connection(restarted, pushes) as raw:
        raw.request(MessageType.LOGIN, {"username": bob.name, "password": PASSWORD})
        time.sleep(QUIET)
    assert new_messages(pushes) == []


# ---------------------------------------------------------------- login backlog


def test_a_login_pushes_only_what_was_not_delivered_yet(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    befriend(alice, bob)
    early = [alice.client.send_text(bob.name, f"early {i}") for i in range(3)]
    bob.events.wait_messages(3)
    for message in early:
        alice.events.status(message.message_id, "delivered")

    bob.client.logout()
    alice.events.wait("presence", username=bob.name, online=False)
    late = [alice.client.send_text(bob.name, f"late {i}") for i in range(2)]
    bob.client.login(bob.name, bob.password)
    bob.events.wait_messages(5)
    bob.events.stays_quiet("message")
    assert [m.message_id for m in bob.events.messages()] == [m.message_id for m in early + late]

    # What the server pushes at login, before any client-side de-duplication: nothing.
    bob.client.close()
    pushes: list[Message] = []
    with raw_connection(shared_server, pushes) as raw:
        raw.request(MessageType.LOGIN, {"username": bob.name, "password": PASSWORD})
        time.sleep(QUIET)
        assert new_messages(pushes) == []
        fresh = alice.client.send_text(bob.name, "a new one")  # positive control
        wait_until(lambda: new_messages(pushes) == [fresh.message_id], what="the new push")
    # not acknowledged by the raw login: it is the only thing the next login brings
    accounts.reopen(bob, shared_server)
    assert [m.message_id for m in bob.events.wait_messages(1)] == [fresh.message_id]
    bob.events.stays_quiet("message")


def test_room_acknowledgements_wait_yet_nothing_is_lost_or_shown_twice(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    """Room messages are acknowledged together, a moment later (client/core/acks.py).
    Until then the server keeps them for the member: a new login gets them again, and
    the client recognises them instead of showing them twice. Logging out sends what
    waits, so the login after that gets nothing again."""
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    room_id = int(alice.client.create_room(unique_name("room")).id)
    bob.client.join_room(room_id)
    alice.events.wait("room_member", room_id=room_id, username=bob.name, event="joined")
    session = bob.client._slot.get()
    assert session is not None and session.acks is not None
    session.acks._delay = 30.0  # nothing goes out by the timer in this test
    sent = [alice.client.send_text(room_id, f"room {i}").message_id for i in range(3)]
    assert [m.message_id for m in bob.events.wait_messages(3)] == sent
    assert session.acks.waiting == 3

    # Stored by bob's client, not acknowledged yet: the server pushes them again.
    bob.client.close()
    pushes: list[Message] = []
    with raw_connection(shared_server, pushes) as raw:
        raw.request(MessageType.LOGIN, {"username": bob.name, "password": PASSWORD})
        wait_until(lambda: new_messages(pushes) == sent, what="the unacknowledged room messages")

    accounts.reopen(bob, shared_server)
    time.sleep(QUIET)  # the repeats arrive and are recognised
    assert [m.message_id for m in bob.client.history(room_id)] == sent
    bob.client.logout()  # acknowledges what waits
    assert bob.events.messages() == []  # nothing shown twice

    pushes = []
    with raw_connection(shared_server, pushes) as raw:
        raw.request(MessageType.LOGIN, {"username": bob.name, "password": PASSWORD})
        time.sleep(QUIET)
        assert new_messages(pushes) == []
