"""The server engine end to end: a real `run_server.py` process, raw sockets and a
client-side SecureChannel.

What is checked is the engine's promise: bad input of any kind closes only the
connection it came on, the server keeps serving everyone else, slow readers are
dropped, idle connections are kept, and SIGTERM stops it cleanly with nothing lost.
"""

from __future__ import annotations

import itertools
import os
import select
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from common.channel import SecureChannel
from common.crypto.certs import build_csr
from common.crypto.keys import generate_user_keys
from common.errors import HandshakeError
from common.protocol import codec
from common.protocol.framing import HEADER_SIZE, encode_handshake_frame
from common.protocol.message import Message, request
from common.protocol.opcodes import MessageType
from tests.integration.conftest import REPO_ROOT, RunningServer, ServerFactory

TIMEOUT = 5.0
PASSWORD = "integration pass 1"


class RawClient:
    """A socket with a client SecureChannel; synchronous requests for tests."""

    def __init__(
        self,
        server: RunningServer,
        fingerprint: str | None = None,
        rcvbuf: int | None = None,
        source: str | None = None,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source is not None:  # another 127.x address: another machine to per-address caps
            self.sock.bind((source, 0))
        if rcvbuf is not None:  # set before connecting, so the TCP window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(server.address)
        self.channel = SecureChannel.client(expected_fingerprint=fingerprint or server.fingerprint)
        self.inbox: list[Message] = []
        self._ids = itertools.count(1)
        self.sock.sendall(self.channel.initiate())
        while not self.channel.established:
            self.inbox += self._receive_some()
        self.sock.sendall(self.channel.data_to_send())  # ClientFinished

    def _receive_some(self) -> list[Message]:
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("server closed the connection")
        return self.channel.receive_data(data)

    def send(self, kind: MessageType, request_id: int | None = None, **params: Any) -> int:
        rid = next(self._ids) if request_id is None else request_id
        self.sock.sendall(self.channel.send(Message(kind, rid, params)))
        return rid

    def wait_for(self, request_id: int) -> Message:
        deadline = time.monotonic() + TIMEOUT
        while True:
            for message in self.inbox:
                if message.request_id == request_id and message.type in (
                    MessageType.REPLY,
                    MessageType.ERROR,
                ):
                    self.inbox.remove(message)
                    return message
            assert time.monotonic() < deadline, "no answer in time"
            self.inbox += self._receive_some()

    def wait_for_push(self, kind: MessageType) -> Message:
        deadline = time.monotonic() + TIMEOUT
        while True:
            for message in self.inbox:
                if message.type is kind:
                    self.inbox.remove(message)
                    return message
            assert time.monotonic() < deadline, f"no {kind.name} push in time"
            self.inbox += self._receive_some()

    def call(self, kind: MessageType, **params: Any) -> Message:
        return self.wait_for(self.send(kind, **params))

    def ping(self) -> Message:
        answer = self.call(MessageType.PING)
        assert answer.type is MessageType.REPLY
        return answer

    def close(self) -> None:
        self.sock.close()


def closed_by_server(sock: socket.socket, timeout: float = TIMEOUT) -> bool:
    """True once the server has closed `sock` (EOF or reset), reading whatever arrives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], deadline - time.monotonic())
        if not ready:
            break
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def assert_still_serving(server: RunningServer, *clients: RawClient) -> None:
    assert server.is_alive(), server.log_text()
    for client in clients:
        client.ping()
    fresh = RawClient(server)
    fresh.ping()
    fresh.close()


def register_and_login(
    server: RunningServer, username: str, rcvbuf: int | None = None, source: str | None = None
) -> RawClient:
    keys = generate_user_keys()
    email = f"{username}@example.test"
    client = RawClient(server, rcvbuf=rcvbuf, source=source)
    answer = client.call(
        MessageType.REGISTER,
        username=username,
        password=PASSWORD,
        email=email,
        sex="other",
        age=30,
        csr=build_csr(username, email, keys),
    )
    assert answer.type is MessageType.REPLY, answer.params
    login = client.call(MessageType.LOGIN, username=username, password=PASSWORD)
    assert login.type is MessageType.REPLY, login.params
    return client


@pytest.fixture
def server(shared_server: RunningServer) -> RunningServer:
    """Most tests here need no fresh state, so they share one server (much faster)."""
    return shared_server


# -- start, handshake, liveness ------------------------------------------------------


def test_server_prints_its_port_and_fingerprint_and_answers_ping(server: RunningServer) -> None:
    assert server.port > 0
    client = RawClient(server)
    assert client.channel.peer_fingerprint == server.fingerprint
    answer = client.ping()
    assert abs(answer.params["time"] - time.time() * 1000) < 60_000
    client.close()


def test_a_wrong_pin_fails_the_handshake_on_the_client(server: RunningServer) -> None:
    with pytest.raises(HandshakeError):
        RawClient(server, fingerprint="00" * 32)
    assert_still_serving(server)


def test_the_mac_flag_selects_hmac_md5(server_factory: ServerFactory) -> None:
    server = server_factory(extra_args=("--mac", "hmac-md5"))
    client = RawClient(server)
    assert client.channel.mac_alg == "hmac-md5"
    client.ping()


def test_a_bad_setting_exits_with_code_2_and_a_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run_server.py"), "--port", "70000"],
        cwd=REPO_ROOT,
        env={**os.environ, "UCHAT_SERVER_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "port" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# -- bad input closes that connection only ---------------------------------------------


def send_garbage(server: RunningServer) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=TIMEOUT)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: uchat\r\n\r\n" * 4)
    return sock


def send_oversized_header(server: RunningServer) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=TIMEOUT)
    header = struct.pack("!IB16s32s", 64 * 1024 * 1024, 0x80, bytes(16), bytes(32))
    sock.sendall(header)
    return sock


def send_bad_mac_record(server: RunningServer) -> socket.socket:
    client = RawClient(server)
    frame = bytearray(client.channel.send(request(MessageType.PING, 1)))
    frame[HEADER_SIZE - 1] ^= 0x01  # last byte of the MAC field
    client.sock.sendall(bytes(frame))
    return client.sock


def send_handshake_garbage(server: RunningServer) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=TIMEOUT)
    sock.sendall(encode_handshake_frame(codec.encode({"version": 1, "nonce": b"short"})))
    return sock


def send_unknown_opcode_record(server: RunningServer) -> socket.socket:
    """A well-formed record whose opcode no MessageType has: undecodable, so fatal."""
    client = RawClient(server)
    sender = client.channel._sender
    assert sender is not None
    client.sock.sendall(sender.seal(codec.encode([999, 5, {}])))
    return client.sock


@pytest.mark.parametrize(
    "attack",
    [
        send_garbage,
        send_oversized_header,
        send_bad_mac_record,
        send_handshake_garbage,
        send_unknown_opcode_record,
    ],
)
def test_bad_input_closes_only_that_connection(server: RunningServer, attack: Any) -> None:
    bystander = RawClient(server)
    bystander.ping()
    bad = attack(server)
    assert closed_by_server(bad)
    assert_still_serving(server, bystander)
    assert "Traceback" not in server.log_text()


def test_a_truncated_connection_is_dropped_and_others_are_served(server: RunningServer) -> None:
    closes_before = server.log_text().count("peer closed the connection")
    bystander = RawClient(server)
    half_hello = SecureChannel.client().initiate()[:30]
    for cut in (b"", half_hello):
        sock = socket.create_connection(server.address, timeout=TIMEOUT)
        sock.sendall(cut)
        sock.close()
    established = RawClient(server)
    frame = established.channel.send(request(MessageType.PING, 1))
    established.sock.sendall(frame[: len(frame) // 2])
    established.close()
    assert_still_serving(server, bystander)
    deadline = time.monotonic() + TIMEOUT
    while server.log_text().count("peer closed the connection") < closes_before + 3:
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.05)


# -- requests the dispatcher refuses -----------------------------------------------------


@pytest.mark.parametrize(
    "kind", [MessageType.KICKED, MessageType.NEW_MESSAGE, MessageType.REPLY, MessageType.ERROR]
)
def test_pushes_and_replies_from_a_client_get_bad_request(
    server: RunningServer, kind: MessageType
) -> None:
    client = RawClient(server)
    answer = client.wait_for(client.send(kind, request_id=77))
    assert answer.type is MessageType.ERROR
    assert answer.params["code"] == "bad_request"
    client.ping()  # the connection stays usable


def test_request_id_zero_gets_bad_request(server: RunningServer) -> None:
    client = RawClient(server)
    client.send(MessageType.PING, request_id=0)
    answer = client.wait_for(0)
    assert (answer.type, answer.params["code"]) == (MessageType.ERROR, "bad_request")
    client.ping()


@pytest.mark.parametrize("kind", [MessageType.CONTACT_LIST, MessageType.SEND_MESSAGE])
def test_requests_needing_a_login_get_not_authenticated(
    server: RunningServer, kind: MessageType
) -> None:
    client = RawClient(server)
    answer = client.call(kind)
    assert answer.type is MessageType.ERROR
    assert answer.params["code"] == "not_authenticated"
    client.ping()


def test_a_handler_error_answers_but_keeps_the_connection(server: RunningServer) -> None:
    client = RawClient(server)
    answer = client.call(MessageType.LOGIN, username=5, password=[])
    assert answer.type is MessageType.ERROR
    assert answer.params["code"] == "bad_request"
    client.ping()


# -- sessions ---------------------------------------------------------------------------


def test_a_second_login_kicks_the_first_session(server: RunningServer) -> None:
    first = register_and_login(server, "kickme")
    second = RawClient(server)
    login = second.call(MessageType.LOGIN, username="kickme", password=PASSWORD)
    assert login.type is MessageType.REPLY
    kicked = first.wait_for_push(MessageType.KICKED)
    local_ip, local_port = second.sock.getsockname()[:2]
    assert kicked.params == {"reason": "logged_in_elsewhere", "address": f"{local_ip}:{local_port}"}
    assert closed_by_server(first.sock)
    assert second.call(MessageType.CONTACT_LIST).type is MessageType.REPLY


# -- many connections, slow readers ---------------------------------------------------------


def test_two_hundred_idle_connections_are_all_still_served(server: RunningServer) -> None:
    # From ten addresses: one address may hold only a few anonymous connections.
    clients = [RawClient(server, source=f"127.0.1.{1 + n % 10}") for n in range(200)]
    time.sleep(0.5)
    request_ids = [client.send(MessageType.PING) for client in clients]
    for client, rid in zip(clients, request_ids, strict=True):
        assert client.wait_for(rid).type is MessageType.REPLY
    for client in clients:
        client.close()
    assert_still_serving(server)


def befriend(asker: RawClient, asker_name: str, target: RawClient, target_name: str) -> None:
    assert asker.call(MessageType.ADD_FRIEND, username=target_name).type is MessageType.REPLY
    target.wait_for_push(MessageType.FRIEND_REQUEST)
    accepted = target.call(
        MessageType.RESOLVE_FRIEND_REQUEST, username=asker_name, decision="accept"
    )
    assert accepted.type is MessageType.REPLY, accepted.params


def test_a_reader_that_stops_reading_is_dropped_and_others_are_unaffected(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"UCHAT_SERVER_WRITE_BUFFER_LIMIT": str(256 * 1024)})
    sleepy = register_and_login(server, "sleepy", rcvbuf=4096)
    chatty = register_and_login(server, "chatty")
    bystander = RawClient(server)
    befriend(chatty, "chatty", sleepy, "sleepy")
    envelope = os.urandom(60 * 1024)
    # sleepy stops reading; every message chatty sends is pushed to it
    for number in range(400):  # at most ~24 MB, far beyond any socket buffers
        sent = chatty.call(
            MessageType.SEND_MESSAGE,
            message_id=f"{number:032x}",
            target_type="user",
            target="sleepy",
            time=int(time.time() * 1000),
            envelope=envelope,
            attachments=[],
        )
        assert sent.type is MessageType.REPLY, sent.params
        if "dropping slow reader" in server.log_text():
            break
    assert "dropping slow reader" in server.log_text()
    assert closed_by_server(sleepy.sock, timeout=10)
    assert_still_serving(server, chatty, bystander)


# -- stopping ---------------------------------------------------------------------------


def test_sigterm_exits_cleanly_and_keeps_what_was_stored(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    client = register_and_login(server, "durable")
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 5
    assert closed_by_server(client.sock)
    restarted = server_factory()  # same data folder: same identity, same users
    assert restarted.fingerprint == server.fingerprint
    again = RawClient(restarted)
    login = again.call(MessageType.LOGIN, username="durable", password=PASSWORD)
    assert login.type is MessageType.REPLY, login.params
    assert login.params["profile"]["username"] == "durable"
