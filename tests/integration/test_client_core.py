"""End-to-end smoke tests of the headless client (`client.core.ChatClient`).

The `Connection` tests talk to a scripted peer that speaks the real secure channel, to
pin down framing, pushes, timeouts and dead-peer detection. The `ChatClient` tests run
the real server process (`server` / `server_factory` from conftest.py) and two or three
clients in temporary folders.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from client.core import ChatClient, ChatMessage, Event
from client.core.connection import Connection
from client.core.keystore import KeyStore, server_id_for
from client.core.store import LocalStore
from common.channel import SecureChannel
from common.crypto.certs import CsrInfo, ServerIdentity, issue_certificate
from common.crypto.keys import KdfParams, generate_user_keys
from common.errors import ConnectionLost, HandshakeError, RequestError, RequestTimeout
from common.protocol.message import Message, error, push, reply
from common.protocol.opcodes import MessageType

# ---------------------------------------------------------------- Connection vs a scripted peer


Responder = Callable[[Message], list[Message]]


class ScriptedServer:
    """A one-connection server speaking the real channel, answering as the test scripts.

    `dribble` writes every byte separately, so the client must reassemble frames.
    """

    def __init__(self, identity: ServerIdentity, respond: Responder, dribble: bool = False):
        self.identity = identity
        self.respond = respond
        self.dribble = dribble
        self.received: list[Message] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        channel = SecureChannel.server(self.identity)
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                out = b""
                for message in channel.receive_data(data):
                    self.received.append(message)
                    out += b"".join(channel.send(reply) for reply in self.respond(message))
                out = channel.data_to_send() + out
                try:
                    if self.dribble:
                        for i in range(len(out)):
                            conn.sendall(out[i : i + 1])
                    else:
                        conn.sendall(out)
                except OSError:
                    return

    def close(self) -> None:
        self.listener.close()


class MemoryPins:
    def __init__(self) -> None:
        self.pins: dict[tuple[str, int], str] = {}

    def get(self, host: str, port: int) -> str | None:
        return self.pins.get((host, port))

    def set(self, host: str, port: int, fingerprint: str) -> None:
        self.pins[(host, port)] = fingerprint


@pytest.fixture(scope="module")
def identity() -> ServerIdentity:
    return ServerIdentity.create()


def _connection(
    port: int, pins: MemoryPins | None = None, **kwargs: Any
) -> tuple[Connection, list, list]:
    pushes: list[Message] = []
    lost: list[BaseException | None] = []
    conn = Connection(
        "127.0.0.1",
        port,
        on_push=lambda _c, m: pushes.append(m),
        on_lost=lambda _c, e: lost.append(e),
        pins=pins,
        **kwargs,
    )
    return conn, pushes, lost


def _wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_connection_reassembles_dribbled_replies_and_routes_pushes(identity):
    def respond(message: Message) -> list[Message]:
        if message.type is MessageType.SEARCH_USERS:
            return [
                push(MessageType.FRIEND_REQUEST, {"from": "李雷"}),
                reply(message.request_id, {"users": [], "echo": message.params["query"]}),
            ]
        return [error(message.request_id, "user_not_found", "no such user", "username")]

    server = ScriptedServer(identity, respond, dribble=True)
    pins = MemoryPins()
    conn, pushes, _ = _connection(server.port, pins)
    try:
        assert conn.open() == identity.fingerprint
        assert pins.get("127.0.0.1", server.port) == identity.fingerprint  # trust on first use
        result = conn.request(MessageType.SEARCH_USERS, {"query": "韩梅梅 🌸"})
        assert result == {"users": [], "echo": "韩梅梅 🌸"}
        assert [(m.type, m.params) for m in pushes] == [
            (MessageType.FRIEND_REQUEST, {"from": "李雷"})
        ]
        with pytest.raises(RequestError) as refused:
            conn.request(MessageType.ADD_FRIEND, {"username": "nobody"})
        assert (refused.value.code, refused.value.field) == ("user_not_found", "username")
    finally:
        conn.close()
        server.close()


def test_connection_refuses_a_server_that_does_not_match_its_pin(identity):
    server = ScriptedServer(identity, lambda m: [])
    pins = MemoryPins()
    pins.set("127.0.0.1", server.port, "00" * 32)
    conn, _, _ = _connection(server.port, pins)
    try:
        with pytest.raises(HandshakeError):
            conn.open()
        assert not conn.alive
        assert pins.get("127.0.0.1", server.port) == "00" * 32  # never re-pinned silently
    finally:
        server.close()


def test_a_server_that_never_answers_the_handshake_times_out():
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        conn, _, lost = _connection(listener.getsockname()[1], timeout=0.3)
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            conn.open()
        assert time.monotonic() - started < 2.0
        assert not conn.alive and not lost
    finally:
        listener.close()


def test_silent_server_times_out_requests_then_is_declared_dead(identity):
    server = ScriptedServer(identity, lambda m: [])  # completes the handshake, never answers
    conn, _, lost = _connection(server.port, ping_interval=0.2, timeout=2.0)
    try:
        conn.open()
        with pytest.raises(RequestTimeout):
            conn.request(MessageType.PING, {}, timeout=0.1)
        waiter = conn.start_request(MessageType.CONTACT_LIST, {})
        _wait_until(lambda: bool(lost), timeout=3.0)
        assert isinstance(lost[0], ConnectionLost)
        assert not conn.alive
        with pytest.raises(ConnectionLost):  # the pending request failed, it did not hang
            waiter.result(timeout=1.0)
        pings = [m for m in server.received if m.type is MessageType.PING]
        assert len(pings) >= 2  # the explicit one and at least one keep-alive
    finally:
        conn.close()
        server.close()


# ---------------------------------------------------------------- ChatClient vs the real server


class Clients:
    """Makes ChatClients in tmp folders and closes them all at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.made: list[ChatClient] = []

    def new(self, server: Any, folder: str, **kwargs: Any) -> ChatClient:
        kwargs.setdefault("reconnect_min", 0.1)
        kwargs.setdefault("reconnect_max", 0.5)
        kwargs.setdefault("key_kdf", KdfParams(n=2**10))
        client = ChatClient(server.host, server.port, self.tmp_path / folder, **kwargs)
        self.made.append(client)
        return client

    def account(self, server: Any, name: str, register: bool = True) -> ChatClient:
        client = self.new(server, name)
        if register:
            client.register(name, f"pw-{name}-secret", f"{name}@example.org", "other", 22)
        client.login(name, f"pw-{name}-secret")
        return client


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[Clients]:
    made = Clients(tmp_path)
    yield made
    for client in made.made:
        client.close()


def _event(kind: str, **match: Any) -> Callable[[Event], bool]:
    return lambda e: e.kind == kind and all(e.data.get(k) == v for k, v in match.items())


def _befriend(a: ChatClient, b: ChatClient) -> None:
    assert b.username is not None and a.username is not None
    a.add_friend(b.username)
    b.wait_for_event(_event("friend_request", username=a.username))
    assert b.pending_friend_requests() == [a.username]
    b.answer_friend_request(a.username, True)
    a.wait_for_event(lambda e: e.kind == "contact_added" and e.data["contact"].id == b.username)
    b.wait_for_event(lambda e: e.kind == "contact_added" and e.data["contact"].id == a.username)


def _next_message(client: ChatClient, timeout: float = 10.0) -> ChatMessage:
    message = client.wait_for_event(_event("message"), timeout).data["message"]
    assert isinstance(message, ChatMessage)
    return message


def test_register_befriend_and_chat_both_ways(server, clients):
    alice = clients.account(server, "alice")
    bob = clients.account(server, "bob")
    assert alice.server_fingerprint == server.fingerprint  # pinned on first use
    _befriend(alice, bob)

    sent = alice.send_text("bob", "你好，Bob 👋🏽", font_size=16, color="#c0392b")
    assert sent.status in ("sent", "delivered") and sent.outgoing
    received = _next_message(bob)
    assert (received.message_id, received.sender, received.chat_kind, received.chat_id) == (
        sent.message_id,
        "alice",
        "user",
        "alice",
    )
    assert (received.text, received.font_size, received.color) == (
        "你好，Bob 👋🏽",
        16,
        "#c0392b",
    )
    alice.wait_for_event(_event("message_status", message_id=sent.message_id, status="delivered"))

    answer = bob.send_text("alice", "回复 🎉 ok", font_size=10, color="#00ff00")
    assert _next_message(alice).text == "回复 🎉 ok"

    assert [m.message_id for m in alice.history("bob")] == [sent.message_id, answer.message_id]
    assert alice.history("bob")[0].status == "delivered"
    assert alice.unread("bob") == 1 and bob.unread("alice") == 1
    alice.mark_read("bob")
    assert alice.unread("bob") == 0
    [contact] = bob.contacts()
    assert (contact.id, contact.online, contact.unread) == ("alice", True, 1)
    assert contact.last_message == "回复 🎉 ok"
    assert [m.text for m in alice.search_history("Bob")] == ["你好，Bob 👋🏽"]
    assert alice.safety_number("bob") == bob.safety_number("alice")
    assert alice.fingerprint("bob") == bob.fingerprint("bob")
    with pytest.raises(RequestError) as refused:
        alice.send_text("bob", "x", color="red")
    assert refused.value.code == "invalid_color"


def test_listeners_and_async_results_run_on_the_draining_thread(server, clients):
    alice = clients.account(server, "alice")
    clients.account(server, "bob")
    seen: list[tuple[str, threading.Thread]] = []
    results: list[tuple[Any, threading.Thread]] = []
    alice.add_listener(lambda e: seen.append((e.kind, threading.current_thread())))
    alice.run_async(
        alice.search_users,
        "bo",
        on_result=lambda r: results.append((r, threading.current_thread())),
    )
    failures: list[BaseException] = []
    alice.run_async(alice.add_friend, "nobody-here", on_error=failures.append)
    alice.add_friend("bob")
    deadline = time.monotonic() + 10
    while (not results or not failures) and time.monotonic() < deadline:
        alice.process_events()
        time.sleep(0.01)
    [(users, thread)] = results
    assert thread is threading.current_thread()
    assert [u["username"] for u in users] == ["bob"]
    assert isinstance(failures[0], RequestError) and failures[0].code == "user_not_found"
    assert all(t is threading.current_thread() for _, t in seen)
    assert "async_result" not in [kind for kind, _ in seen]


def test_an_undecryptable_message_is_stored_acknowledged_and_shown(server, clients):
    alice = clients.account(server, "alice")
    bob = clients.account(server, "bob")
    _befriend(alice, bob)
    bob.close()
    raw, _, _ = _connection(server.port, expected_fingerprint=server.fingerprint)
    raw.open()
    try:
        raw.request(MessageType.LOGIN, {"username": "bob", "password": "pw-bob-secret"})
        bad_id = os.urandom(16).hex()
        raw.request(
            MessageType.SEND_MESSAGE,
            {
                "message_id": bad_id,
                "target_type": "user",
                "target": "alice",
                "time": int(time.time() * 1000),
                "envelope": b"\x02" + os.urandom(160),  # a forged version-2 envelope
                "attachments": [],
            },
        )
        shown = _next_message(alice)
        assert (shown.message_id, shown.sender) == (bad_id, "bob")
        assert "could not be decrypted" in shown.text
        assert alice.history("bob")[-1].message_id == bad_id
    finally:
        raw.close()
    alice.close()
    again = clients.new(server, "alice")
    again.login("alice", "pw-alice-secret")
    with pytest.raises(RequestTimeout):  # acknowledged: it is not delivered a second time
        again.wait_for_event(_event("message"), timeout=1.0)


def test_offline_messages_arrive_at_login_in_order(server, clients):
    alice = clients.account(server, "alice")
    bob = clients.account(server, "bob")
    _befriend(alice, bob)
    bob.logout()
    alice.wait_for_event(_event("presence", username="bob", online=False))
    sent = [alice.send_text("bob", f"offline {i} 🌙") for i in range(3)]
    assert all(m.status == "sent" for m in sent)  # stored by the server, not yet delivered

    bob.login("bob", "pw-bob-secret")
    received = [_next_message(bob) for _ in sent]
    assert [m.message_id for m in received] == [m.message_id for m in sent]
    assert [m.text for m in received] == ["offline 0 🌙", "offline 1 🌙", "offline 2 🌙"]
    for message in sent:
        alice.wait_for_event(
            _event("message_status", message_id=message.message_id, status="delivered")
        )


def test_files_and_images_travel_encrypted_and_verified(server_factory, clients, tmp_path):
    server = server_factory(env={"UCHAT_SERVER_MAX_ATTACHMENT_SIZE": str(2_000_000)})
    alice = clients.account(server, "alice")
    bob = clients.account(server, "bob")
    _befriend(alice, bob)

    document = tmp_path / "报告 final.bin"
    document.write_bytes(os.urandom(600_000))  # three cipher chunks
    progress: list[tuple[int, int]] = []
    sent = alice.send_file(
        "bob", document, progress=lambda done, total: progress.append((done, total))
    )
    assert sent.kind == "file" and sent.status in ("sent", "delivered")
    assert progress[-1][0] == progress[-1][1] > 600_000
    alice.wait_for_event(
        _event("transfer", attachment_id=sent.attachment.attachment_id, direction="upload")
    )
    received = _next_message(bob)
    assert received.kind == "file" and received.attachment is not None
    assert (received.attachment.name, received.attachment.size) == ("报告 final.bin", 600_000)
    path = bob.download(received, tmp_path / "downloads")
    assert path.read_bytes() == document.read_bytes()
    assert path.parent == tmp_path / "downloads" and path.name == "报告 final.bin"
    [stored] = bob.history("alice")
    assert stored.attachment is not None and stored.attachment.local_path == path

    picture = tmp_path / "pic.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(picture)
    assert alice.send_image("bob", picture).kind == "image"
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not really a png")
    assert alice.send_image("bob", fake).kind == "file"  # not an image: sent as a file
    image = _next_message(bob)
    assert image.kind == "image" and image.attachment is not None
    again = bob.download(image.attachment, tmp_path / "downloads")
    assert again.read_bytes() == picture.read_bytes()

    huge = tmp_path / "huge.bin"
    huge.write_bytes(bytes(2_000_001))
    with pytest.raises(RequestError) as refused:
        alice.send_file("bob", huge)
    assert refused.value.code == "attachment_too_large"


def test_room_messages_reach_every_other_member(server, clients):
    alice = clients.account(server, "alice")
    bob = clients.account(server, "bob")
    carol = clients.account(server, "carol")
    room = alice.create_room("晚饭 group")
    room_id = int(room.id)
    bob.join_room(room_id)
    carol.join_room(room_id)
    alice.wait_for_event(_event("room_member", room_id=room_id, username="carol", event="joined"))

    sent = alice.send_text(room_id, "七点见 🍜")
    for member in (bob, carol):
        message = _next_message(member)
        assert (message.chat_kind, message.chat_id, message.sender, message.text) == (
            "room",
            room.id,
            "alice",
            "七点见 🍜",
        )
    assert sent.status == "sent"  # rooms get no receipts: "sent" is the last mark
    carol.send_text(room_id, "ok")  # carol is no friend of bob's: room members still can
    assert _next_message(bob).text == "ok"
    assert [c.id for c in alice.contacts() if c.kind == "room"] == [room.id]


def test_reconnects_after_a_server_restart_and_resends_the_outbox(server_factory, clients):
    server = server_factory(name="restartable")
    alice = clients.account(server, "alice")
    bob = clients.account(server, "bob")
    _befriend(alice, bob)
    alice.send_text("bob", "before")  # pins bob's certificate in alice's store
    assert _next_message(bob).text == "before"

    server.stop()
    alice.wait_for_event(_event("connection", state="disconnected"))
    queued = alice.send_text("bob", "sent while the server was down")
    assert queued.status == "sending"

    restarted = server_factory(name="restartable", extra_args=("--port", str(server.port)))
    assert restarted.fingerprint == server.fingerprint
    alice.wait_for_event(_event("connection", state="connected"), timeout=15)
    bob.wait_for_event(_event("connection", state="connected"), timeout=15)
    assert _next_message(bob).message_id == queued.message_id
    alice.wait_for_event(_event("message_status", message_id=queued.message_id, status="delivered"))


def test_a_second_login_kicks_the_first_which_stays_offline(server, clients):
    first = clients.account(server, "alice")
    second = clients.new(server, "alice")  # same machine folder: same keys
    second.login("alice", "pw-alice-secret")
    kicked = first.wait_for_event(_event("kicked"))
    assert kicked.data["reason"] == "logged_in_elsewhere"
    first.wait_for_event(_event("connection", state="disconnected"))
    time.sleep(0.5)  # longer than the reconnect back-off: it must not come back
    assert not first.connected and second.connected


def test_without_keys_on_this_machine_login_works_but_sending_is_refused(server, clients):
    alice = clients.account(server, "alice")
    bob = clients.account(server, "bob")
    _befriend(alice, bob)
    alice.close()
    elsewhere = clients.new(server, "other-machine")
    elsewhere.login("alice", "pw-alice-secret")
    missing = elsewhere.wait_for_event(_event("key_missing"))
    assert missing.data["username"] == "alice"
    assert not elsewhere.can_send
    with pytest.raises(RequestError) as refused:
        elsewhere.send_text("bob", "hi")
    assert refused.value.code == "key_missing"
    bob.send_text("alice", "kept for the machine with the keys")
    elsewhere.logout()

    home = clients.new(server, "alice")
    home.login("alice", "pw-alice-secret")
    assert _next_message(home).text == "kept for the machine with the keys"


def test_changed_key_is_reported_and_blocks_until_trusted(server, clients, tmp_path):
    alice = clients.account(server, "alice")
    bob = clients.account(server, "bob")
    _befriend(alice, bob)
    bob.send_text("alice", "first")
    _next_message(alice)
    old_pin = alice.fingerprint("bob")
    alice.close()

    # Make alice's pin differ from bob's real certificate, as if bob's key had changed.
    rogue_ca = ServerIdentity.create()
    keys = generate_user_keys()
    other = issue_certificate(
        rogue_ca, CsrInfo("bob", "bob@example.org", keys.identity_public, keys.agreement_public)
    )
    store_path = KeyStore(tmp_path / "alice").store_path(server_id_for(server.fingerprint), "alice")
    with LocalStore(store_path) as store:
        store.pin_certificate("bob", other)

    alice = clients.new(server, "alice")
    alice.login("alice", "pw-alice-secret")
    held = bob.send_text("alice", "after the change")
    change = alice.wait_for_event(_event("key_changed", username="bob"))
    assert change.data["new_fingerprint"] == old_pin != change.data["old_fingerprint"]
    with pytest.raises(RequestError) as refused:
        alice.send_text("bob", "should not go")
    assert refused.value.code == "key_changed"
    assert alice.history("bob")[-1].text == "first"  # held back, not shown

    assert alice.safety_number("bob") == bob.safety_number("alice")
    alice.trust_new_key("bob")
    assert _next_message(alice).message_id == held.message_id
    assert alice.send_text("bob", "trusted now").status in ("sent", "delivered")


def test_an_interrupted_upload_resumes_after_a_restart(server, clients, tmp_path):
    alice = clients.account(server, "alice")
    bob = clients.account(server, "bob")
    _befriend(alice, bob)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8 * 256 * 1024 + 1234))

    class Crash(Exception):
        pass

    def crash_after_first_chunk(done: int, total: int) -> None:
        if done > 0:
            raise Crash

    with pytest.raises(Crash):
        alice.send_file("bob", big, progress=crash_after_first_chunk)
    alice.close()
    store_path = KeyStore(tmp_path / "alice").store_path(server_id_for(server.fingerprint), "alice")
    with LocalStore(store_path) as store:
        [pending] = store.pending_uploads()
    assert 0 < pending.offset < pending.encrypted_path.stat().st_size

    restarted = clients.new(server, "alice")
    restarted.login("alice", "pw-alice-secret")  # resumes the upload, then sends the message
    message = _next_message(bob, timeout=20)
    assert message.attachment is not None and message.attachment.name == "big.bin"
    assert bob.download(message, tmp_path / "dl").read_bytes() == big.read_bytes()
