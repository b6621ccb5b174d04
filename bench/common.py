"""Shared pieces of the scenario benchmarks (`python -m bench ...`), never part of pytest.

- `ServerProcess`: a real `run_server.py` on 127.0.0.1, port 0, a temporary data
  folder and UCHAT_SERVER_SCRYPT_N=1024, with its RSS and CPU time read from /proc.
- `Link`: a lean load-generator connection, a non-blocking socket plus the real
  `SecureChannel`, so the server sees exactly what a client sends.
- `open_sessions`, `pipeline`, `register_users`, `befriend`: set-up helpers that keep
  many requests in flight on many links at once through one selector.
- `summarize`, `check`, `emit`: percentiles, bar checks and the one JSON object each
  scenario prints.

The generator shares two cores with the server, so it is built to be cheap: one
selector, batched writes, records sealed ahead of time where the scenario allows.

As `python -m bench smoke` it is the smoke scenario: server start-up
time, idle memory, and the latency of a PING and of one message between two friends.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import functools
import gc
import json
import math
import os
import platform
import resource
import select
import selectors
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from common.channel import SecureChannel
from common.crypto.certs import build_csr
from common.crypto.keys import UserKeys, generate_user_keys
from common.crypto.membership import (
    GENESIS,
    EventKind,
    MembershipEvent,
    Policy,
    member_list_hash,
    sign_event,
)
from common.protocol.ids import time_ordered_id
from common.protocol.message import Message, encode_message
from common.protocol.opcodes import MessageType
from server.launcher import RunningServer, ServerStartError, start_server

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PASSWORD = "bench-Password-1"
READ_SIZE = 256 * 1024
STARTUP_TIMEOUT = 30.0
SCRYPT_N = 1024
#: The load comes from one address; per-address limits meant for the public would
#: throttle the generator itself (scenarios about those limits pass their own).
LOAD_GENERATOR_ENV = {
    "UCHAT_SERVER_REGISTER_PER_ADDRESS": "1000000",
    "UCHAT_SERVER_HASHES_IN_FLIGHT_PER_ADDRESS": "64",
    "UCHAT_SERVER_HASHES_WAITING_PER_ADDRESS": "100000",
    "UCHAT_SERVER_MAX_CONNECTIONS_PER_ADDRESS": "100000",
    "UCHAT_SERVER_MAX_ANONYMOUS_PER_ADDRESS": "100000",
    # 64 hashes in flight from one address pre-count 64 failures on that address before
    # any of them succeeds; the public default (one in flight) never does.
    "UCHAT_SERVER_LOGIN_MAX_FAILURES": "1000000",
}

REPLY_TYPES = frozenset({MessageType.REPLY, MessageType.ERROR})

#: The 1-minute load average when `run` started: others' work skews every figure.
_LOAD_AT_START: list[float] = []


class BenchError(RuntimeError):
    """A scenario could not run as planned (server refused, timed out, died)."""


class LinkClosed(BenchError):
    """The server closed a link (EOF or reset)."""


# --- the server process -------------------------------------------------------------


@dataclass
class ServerProcess(RunningServer):
    """A server started by `server.launcher` for a scenario, with its temporary folder."""

    workdir: tempfile.TemporaryDirectory[str] | None = None
    started_at: float = field(default_factory=time.monotonic)

    @classmethod
    def start(
        cls,
        env_overrides: dict[str, str] | None = None,
        log_level: str = "INFO",
        workdir: tempfile.TemporaryDirectory[str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> ServerProcess:
        """Start a server on a free port; returns once it printed its port and fingerprint.

        The data folder is `<workdir>/server` (a fresh temporary folder by default;
        pass one prepared with `seed_users`), the config file is `{}` (defaults only,
        not the repository's config.json), the log is `<workdir>/server.log`.
        """
        workdir = workdir or new_workdir()
        base = Path(workdir.name)
        config_path = base / "bench-config.json"
        config_path.write_text("{}\n", encoding="utf-8")
        env = {"UCHAT_CONFIG": str(config_path), "UCHAT_SERVER_SCRYPT_N": str(SCRYPT_N)}
        env.update(LOAD_GENERATOR_ENV)  # every generated client comes from 127.0.0.1
        env.update(env_overrides or {})
        # The time limit raised inside `start_server` would lose the child it spawned
        # (nobody holds it yet): it waits until the server is ours, which then stops it.
        server: ServerProcess | None = None
        try:
            with signals_held():
                try:
                    running = start_server(
                        base / "server",
                        env,
                        ("--log-level", log_level, *extra_args),
                        log_path=base / "server.log",
                    )
                except ServerStartError as exc:
                    raise BenchError(str(exc)) from None
                fields = {
                    name: getattr(running, name) for name in RunningServer.__dataclass_fields__
                }
                server = cls(**fields, workdir=workdir)
        except BaseException:
            if server is not None:
                server.cleanup()
            raise
        return server

    def alive(self) -> bool:
        return self.is_alive()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (graceful shutdown), then SIGKILL if it does not go in time."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            return super().stop(timeout)
        return self.process.returncode

    def cleanup(self) -> None:
        """Stop the server and remove its folder; the time limit waits until it is done."""
        with signals_held():
            self.stop()
            if self.workdir is not None:
                self.workdir.cleanup()
                self.workdir = None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """The time limit (SIGALRM) and SIGTERM wait until the block is left, then act.

    Deferred in the handlers, not masked: a child spawned inside would inherit a mask
    and ignore the SIGTERM that stops it.
    """
    _HELD.append(True)
    try:
        yield
    finally:
        _HELD.pop()
        if not _HELD and _PENDING:
            signum = _PENDING[0]
            _PENDING.clear()
            _ACT[signum](signum, None)


def new_workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="uchat-bench-")


def seed_users(
    workdir: tempfile.TemporaryDirectory[str],
    names: Sequence[str],
    keys: UserKeys | None = None,
) -> dict[str, float]:
    """Create accounts straight in the database of a server that is not running yet.

    For scenarios that need thousands of accounts (registering 10,000 through the
    protocol costs a CSR check, a password hash and a certificate each, minutes on two
    cores). The rows are what REGISTER would store: a real scrypt hash (one salt for
    all, computed once) and a certificate issued by the server's own CA for each name,
    all for one set of `keys` (made here unless given).
    """
    from common.crypto.certs import CsrInfo, ServerIdentity, issue_certificate
    from common.crypto.passwords import ScryptParams, hash_password
    from server.app import DATABASE_FILE
    from server.storage import users
    from server.storage.database import SqliteDatabase
    from server.transparency import TransparencyLog

    started = time.perf_counter()
    data = Path(workdir.name) / "server"
    data.mkdir(mode=0o700, exist_ok=True)
    identity = ServerIdentity.load_or_create(data)
    keys = keys or generate_user_keys()
    password_hash = hash_password(PASSWORD, ScryptParams(n=SCRYPT_N))
    db = SqliteDatabase.open(data / DATABASE_FILE)
    key_log = TransparencyLog(db, identity, now_ms)  # as REGISTER does, every key is logged
    try:
        with db.transaction():
            for name in names:
                email = f"{name}@bench.example.org"
                info = CsrInfo(name, email, keys.identity_public, keys.agreement_public)
                certificate = issue_certificate(identity, info)
                users.create_user(
                    db,
                    username=name,
                    password_hash=password_hash,
                    email=email,
                    sex="other",
                    age=30,
                    certificate=certificate,
                    now=now_ms(),
                )
                key_log.append("certificate", name, certificate)
    finally:
        db.close()
    elapsed = time.perf_counter() - started
    return {"users": len(names), "seconds": round(elapsed, 3)}


# --- load-generator connections -------------------------------------------------------


class Endpoint(Protocol):
    """Where to connect and which server certificate to expect."""

    @property
    def address(self) -> tuple[str, int]: ...

    @property
    def fingerprint(self) -> str: ...


@dataclass(frozen=True)
class RemoteEndpoint:
    """A server started elsewhere (e.g. by the parent of a generator process)."""

    port: int
    fingerprint: str

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port


class Link:
    """One client connection for load generation: non-blocking, no threads, no copies kept.

    Requests are sealed with the real `SecureChannel`; `queue_sealed` takes records
    sealed in advance (in order) so a timed loop only writes bytes.
    """

    __slots__ = ("channel", "closed", "fd", "name", "next_id", "out", "pushes", "sock")

    def __init__(self, sock: socket.socket, channel: SecureChannel, name: str = "") -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.channel = channel
        self.name = name
        self.next_id = 1
        self.out = bytearray()
        self.closed = False
        self.pushes: deque[Message] = deque(maxlen=100_000)

    def __repr__(self) -> str:
        return f"<Link {self.name or self.fd}>"

    def seal(self, kind: MessageType, params: dict[str, Any]) -> tuple[int, bytes]:
        """Take a request id and seal a request, without queueing it."""
        request_id = self.next_id
        self.next_id += 1
        return request_id, self.channel.send(Message(kind, request_id, params))

    def send(self, kind: MessageType, params: dict[str, Any]) -> int:
        """Seal and queue a request; returns its id (call `flush` to write)."""
        request_id, record = self.seal(kind, params)
        self.out += record
        return request_id

    def queue_sealed(self, record: bytes) -> None:
        self.out += record

    def flush(self) -> bool:
        """Write what the socket takes; True when nothing is left queued."""
        out = self.out
        while out:
            try:
                sent = self.sock.send(out)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as exc:
                self.closed = True
                raise LinkClosed(f"{self.name}: write failed: {exc}") from None
            del out[:sent]
        return True

    def read_raw(self) -> bytes:
        """Everything the socket has now (b'' if nothing); LinkClosed on EOF or reset."""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.closed = True
                raise LinkClosed(f"{self.name}: read failed: {exc}") from None
            if not chunk:
                self.closed = True
                if chunks:
                    break
                raise LinkClosed(f"{self.name}: server closed the connection")
            chunks.append(chunk)
            if len(chunk) < READ_SIZE:
                break
        return b"".join(chunks)

    def receive(self) -> list[Message]:
        """Decode whatever arrived (possibly nothing)."""
        data = self.read_raw()
        return self.channel.receive_data(data) if data else []

    def wait(self, events: int, timeout: float) -> bool:
        poller = select.poll()
        poller.register(self.fd, events)
        return bool(poller.poll(max(0.0, timeout) * 1000))

    def call(
        self, kind: MessageType, params: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Blocking request -> REPLY params; BenchError on ERROR. Pushes go to `pushes`."""
        reply = self.call_message(kind, params or {}, timeout)
        if reply.type is MessageType.ERROR:
            raise BenchError(f"{kind.name} by {self.name}: {reply.params.get('code')}")
        return reply.params

    def call_message(self, kind: MessageType, params: dict[str, Any], timeout: float) -> Message:
        request_id = self.send(kind, params)
        deadline = time.monotonic() + timeout
        while not self.flush():
            self.wait(select.POLLOUT, deadline - time.monotonic())
        while True:
            answer: Message | None = None
            for message in self.receive():  # keep what shares the read with the answer
                mine = message.type in REPLY_TYPES and message.request_id == request_id
                if answer is None and mine:
                    answer = message
                else:
                    self.pushes.append(message)
            if answer is not None:
                return answer
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{kind.name} by {self.name}: no answer in {timeout} s")
            self.wait(select.POLLIN, left)

    def wait_push(self, kind: MessageType, timeout: float = 10.0) -> Message:
        """The first push of `kind` (from `pushes` or the socket)."""
        deadline = time.monotonic() + timeout
        while True:
            for index, message in enumerate(self.pushes):
                if message.type is kind:
                    del self.pushes[index]
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no {kind.name} push in {timeout} s")
            if self.wait(select.POLLIN, left):
                self.pushes.extend(self.receive())

    def drain(self, quiet: float = 0.05) -> int:
        """Read and drop pushes until the link stays quiet for `quiet` seconds."""
        dropped = len(self.pushes)
        self.pushes.clear()
        while self.wait(select.POLLIN, quiet):
            dropped += len(self.receive())
        return dropped

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()


def new_socket(source: str | None = None) -> socket.socket:
    """A non-blocking TCP socket; bound to `source` (e.g. 127.0.0.2) to look like another
    client machine to the server's per-address limits."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source is not None:
        sock.bind((source, 0))
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def connect(server: Endpoint, name: str = "", timeout: float = 10.0) -> Link:
    """One established link (handshake done, not logged in)."""
    return open_sessions(server, [name], login=False, timeout=timeout)[0]


def login(server: Endpoint, name: str, timeout: float = 30.0) -> Link:
    """One logged-in link for user `name` (password `PASSWORD`)."""
    return open_sessions(server, [name], timeout=timeout)[0]


@dataclass
class SessionTimes:
    """What `open_sessions` saw: seconds from each link's connect to its milestones."""

    handshake: list[float] = field(default_factory=list)
    login: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


@dataclass
class _Opening:
    """One link on its way from connect() to a login reply."""

    index: int
    link: Link
    started: float
    connected: bool = False
    login_id: int = 0


def open_sessions(
    server: Endpoint,
    names: Sequence[str],
    *,
    login: bool = True,
    window: int = 256,
    timeout: float = 120.0,
    times: SessionTimes | None = None,
    tolerate_errors: bool = False,
    source: str | None = None,
) -> list[Link]:
    """Connect, handshake and (optionally) log in one link per name, `window` at a time.

    Returns the links in `names` order. The login reply is consumed; pushes that came
    with it wait in `link.pushes` or the socket. With `tolerate_errors`, links whose
    login failed are closed and left out (their error codes are counted in `times`).
    """
    times = times if times is not None else SessionTimes()
    selector = selectors.DefaultSelector()
    done: dict[int, Link] = {}
    opening: dict[int, _Opening] = {}
    next_index = 0
    deadline = time.monotonic() + timeout
    try:
        while len(done) + times.failed < len(names):
            while next_index < len(names) and len(opening) < window:
                state = _begin_connect(server, next_index, names[next_index], source)
                selector.register(state.link.sock, selectors.EVENT_WRITE, state)
                opening[next_index] = state
                next_index += 1
            if time.monotonic() > deadline:
                raise BenchError(f"open_sessions: {len(done)}/{len(names)} after {timeout} s")
            for key, mask in selector.select(0.5):
                state = key.data
                outcome = _advance(state, mask, login, times)
                if outcome is None:
                    wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if state.link.out else 0)
                    if not state.connected:
                        wanted = selectors.EVENT_WRITE
                    if wanted != key.events:
                        selector.modify(state.link.sock, wanted, state)
                    continue
                selector.unregister(state.link.sock)
                del opening[state.index]
                if outcome:
                    done[state.index] = state.link
                elif tolerate_errors:
                    state.link.close()
                else:
                    raise BenchError(f"session for {state.link.name} failed: {times.errors}")
    except BaseException:
        for state in opening.values():
            state.link.close()
        for link in done.values():
            link.close()
        raise
    finally:
        selector.close()
    return [done[index] for index in sorted(done)]


def _begin_connect(server: Endpoint, index: int, name: str, source: str | None = None) -> _Opening:
    sock = new_socket(source)
    code = sock.connect_ex(server.address)
    if code not in (0, errno.EINPROGRESS):
        sock.close()
        raise BenchError(f"connect failed: {os.strerror(code)}")
    link = Link(sock, SecureChannel.client(server.fingerprint), name)
    return _Opening(index, link, time.perf_counter())


def _advance(state: _Opening, mask: int, login: bool, times: SessionTimes) -> bool | None:
    """One step of connect -> hello -> handshake -> login; True/False once finished."""
    link = state.link
    try:
        if not state.connected:
            code = link.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                times.error(f"connect: {os.strerror(code)}")
                return False
            state.connected = True
            link.queue_sealed(link.channel.initiate())
        elif mask & selectors.EVENT_READ:
            outcome = _on_session_data(state, login, times)
            if outcome is not None:
                return outcome
        link.flush()
    except LinkClosed:
        times.error("closed by server")
        return False
    return None


def _on_session_data(state: _Opening, login: bool, times: SessionTimes) -> bool | None:
    link = state.link
    was_established = link.channel.established
    messages = link.receive()
    if link.channel.established and not was_established:
        times.handshake.append(time.perf_counter() - state.started)
        link.queue_sealed(link.channel.data_to_send())
        if not login:
            link.flush()
            return True
        state.login_id = link.send(MessageType.LOGIN, {"username": link.name, "password": PASSWORD})
    for index, message in enumerate(messages):
        if message.request_id == state.login_id and message.type in REPLY_TYPES:
            if message.type is MessageType.ERROR:
                times.error(str(message.params.get("code")))
                return False
            times.login.append(time.perf_counter() - state.started)
            link.pushes.extend(messages[index + 1 :])  # the backlog may share the read
            link.flush()
            return True
        link.pushes.append(message)
    return None


# --- fast request encoding -------------------------------------------------------------

_SENTINEL_ID = 0x5A17_E1A7_0BAD_F00D


class RequestTemplate:
    """Encodes many requests of one shape by patching bytes, identical to `encode_message`.

    Only the request id and one fixed-length str field (a message id) change between
    SEND_MESSAGE requests of a run; everything else (envelopes included) is the same
    bytes, so the generator pays a copy instead of a codec walk per request.
    """

    def __init__(self, kind: MessageType, params: dict[str, Any], field_name: str) -> None:
        sentinel = os.urandom(16).hex()
        self._length = len(params[field_name])
        if self._length != len(sentinel):
            raise ValueError("the patched field must be 32 characters long")
        body = encode_message(Message(kind, _SENTINEL_ID, {**params, field_name: sentinel}))
        self._template = bytes(body)
        self._id_at = body.index(_SENTINEL_ID.to_bytes(8, "big"))
        self._field_at = body.index(sentinel.encode("ascii"))
        check = encode_message(Message(kind, 7, params))
        if self.encode(7, params[field_name]) != check:
            raise ValueError("request template does not reproduce encode_message")

    def encode(self, request_id: int, value: str) -> bytes:
        body = bytearray(self._template)
        body[self._id_at : self._id_at + 8] = request_id.to_bytes(8, "big")
        body[self._field_at : self._field_at + self._length] = value.encode("ascii")
        return bytes(body)

    def seal(self, link: Link, value: str) -> tuple[int, bytes]:
        """Take the link's next request id and seal the patched request for it."""
        request_id = link.next_id
        link.next_id += 1
        return request_id, seal_encoded(link.channel, self.encode(request_id, value))


def seal_encoded(channel: SecureChannel, body: bytes) -> bytes:
    """Seal an already encoded message body as the channel's next record."""
    return channel.send_encoded(body)


# --- many requests in flight ------------------------------------------------------------

Params = dict[str, Any] | Callable[[], dict[str, Any]]
Job = tuple[Link, MessageType, Params]


def pipeline(jobs: Sequence[Job], *, window: int = 32, timeout: float = 120.0) -> list[Message]:
    """Send every job, at most `window` unanswered per link; answers in job order.

    `params` may be a callable, called only when the request is about to be sent, so
    costly parameters (a CSR) are built while the server works on earlier ones.
    """
    todo: dict[Link, deque[int]] = {}
    for index, (link, _, _) in enumerate(jobs):
        todo.setdefault(link, deque()).append(index)
    results: list[Message | None] = [None] * len(jobs)
    pending: dict[Link, dict[int, int]] = {link: {} for link in todo}
    selector = selectors.DefaultSelector()
    for link in todo:
        selector.register(link.sock, selectors.EVENT_READ, link)
    answered = 0
    deadline = time.monotonic() + timeout
    try:
        for link, indexes in todo.items():
            _refill(link, jobs, indexes, pending[link], window, selector)
        while answered < len(jobs):
            if time.monotonic() > deadline:
                raise BenchError(f"pipeline: {answered}/{len(jobs)} answered after {timeout} s")
            for key, mask in selector.select(0.5):
                link = key.data
                if mask & selectors.EVENT_READ:
                    answered += _collect(link, pending[link], results)
                _refill(link, jobs, todo[link], pending[link], window, selector)
    finally:
        selector.close()
    return [message for message in results if message is not None]


def _refill(
    link: Link,
    jobs: Sequence[Job],
    todo: deque[int],
    pending: dict[int, int],
    window: int,
    selector: selectors.BaseSelector,
) -> None:
    while todo and len(pending) < window:
        index = todo.popleft()
        _, kind, params = jobs[index]
        pending[link.send(kind, params() if callable(params) else params)] = index
    events = selectors.EVENT_READ if link.flush() else selectors.EVENT_READ | selectors.EVENT_WRITE
    if selector.get_key(link.sock).events != events:
        selector.modify(link.sock, events, link)


def _collect(link: Link, pending: dict[int, int], results: list[Message | None]) -> int:
    answered = 0
    for message in link.receive():
        index = pending.pop(message.request_id, None) if message.type in REPLY_TYPES else None
        if index is None:
            link.pushes.append(message)
            continue
        results[index] = message
        answered += 1
    return answered


def errors_of(messages: Iterable[Message]) -> dict[str, int]:
    """Error code -> count among the answers."""
    counts: dict[str, int] = {}
    for message in messages:
        if message.type is MessageType.ERROR:
            code = str(message.params.get("code"))
            counts[code] = counts.get(code, 0) + 1
    return counts


def expect_ok(messages: Sequence[Message], what: str) -> list[Message]:
    errors = errors_of(messages)
    if errors:
        raise BenchError(f"{what}: errors {errors}")
    return list(messages)


# --- users, friends, rooms ---------------------------------------------------------------


def user_names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{index:05d}" for index in range(count)]


def register_users(
    server: ServerProcess, names: Sequence[str], *, links: int = 4, window: int = 16
) -> dict[str, float]:
    """Register `names` with real CSRs, pipelined over a few links; returns rates.

    One key pair signs every CSR: the server's work per registration (CSR check,
    password hash, certificate) is the same, and the generator saves a key generation.
    The same `bench_keys()` sign the users' membership events (`make_room`).
    """
    keys = bench_keys()
    connections = open_sessions(server, [f"reg{i}" for i in range(links)], login=False)

    def form(name: str) -> Callable[[], dict[str, Any]]:
        return lambda: {
            "username": name,
            "password": PASSWORD,
            "email": f"{name}@bench.example.org",
            "sex": "other",
            "age": 30,
            "csr": build_csr(name, f"{name}@bench.example.org", keys),
        }

    jobs: list[Job] = [
        (connections[i % links], MessageType.REGISTER, form(name)) for i, name in enumerate(names)
    ]
    started = time.perf_counter()
    try:
        expect_ok(pipeline(jobs, window=window, timeout=60 + len(names) * 0.05), "register")
    finally:
        for link in connections:
            link.close()
    elapsed = time.perf_counter() - started
    rate = round(len(names) / elapsed, 1)
    return {"users": len(names), "seconds": round(elapsed, 3), "per_s": rate}


@functools.cache
def bench_keys() -> UserKeys:
    """The one key pair every bench user is registered with (see `register_users`)."""
    return generate_user_keys()


def make_room(owner: Link, members: Sequence[Link], name: str) -> int:
    """An open room founded by `owner`'s signed create, joined by `members` one by one.

    Each join is signed on the head the previous event made, so they go in order.
    """
    room = SignedRoom.found(owner, name)
    for link in members:
        room.join(link)
    return room.number


@dataclass
class SignedRoom:
    """A room whose membership log the bench signs, event after event (every bench user
    holds the same identity key), so members can join in any number of sessions."""

    number: int
    head: MembershipEvent
    time_ms: int

    @classmethod
    def found(cls, owner: Link, name: str) -> SignedRoom:
        number = 10_000_000 + int.from_bytes(os.urandom(4), "big") % 90_000_000
        now = int(time.time() * 1000)
        event = sign_event(
            bench_keys().identity,
            room=str(number),
            kind=EventKind.CREATE,
            actor=owner.name,
            subject=owner.name,
            time_ms=now,
            prev=GENESIS,
            name=name,
            policy=Policy.OPEN,
        )
        owner.call(MessageType.CREATE_ROOM, {"event": event.to_wire()})
        return cls(number, event, now)

    def join(self, link: Link) -> None:
        event = sign_event(
            bench_keys().identity,
            room=str(self.number),
            kind=EventKind.JOIN,
            actor=link.name,
            subject=link.name,
            time_ms=self.time_ms,
            prev=self.head.hash(),
        )
        link.call(MessageType.JOIN_ROOM, {"room_id": self.number, "event": event.to_wire()})
        self.head = event


def befriend(pairs: Sequence[tuple[Link, Link]]) -> None:
    """Make each (a, b) friends: a asks, b accepts; the pushes are drained."""
    expect_ok(
        pipeline([(a, MessageType.ADD_FRIEND, {"username": b.name}) for a, b in pairs]),
        "add_friend",
    )
    accept = [
        (b, MessageType.RESOLVE_FRIEND_REQUEST, {"username": a.name, "decision": "accept"})
        for a, b in pairs
    ]
    expect_ok(pipeline(accept), "accept_friend")
    for a, b in pairs:
        a.drain()
        b.drain()


def drain_all(links: Iterable[Link], quiet: float = 0.2) -> int:
    """Read and drop pushes on many links until all stay quiet for `quiet` seconds."""
    selector = selectors.DefaultSelector()
    dropped = 0
    try:
        for link in links:
            dropped += len(link.pushes)
            link.pushes.clear()
            selector.register(link.sock, selectors.EVENT_READ, link)
        while events := selector.select(quiet):
            for key, _ in events:
                dropped += len(key.data.receive())
    finally:
        selector.close()
    return dropped


def message_id() -> str:
    """Time-ordered, as the client makes them (`common.protocol.ids`)."""
    return time_ordered_id()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def send_params(
    msg_id: str,
    target_type: str,
    target: str | int,
    envelope: bytes,
    attachments: Sequence[str] = (),
    members: Sequence[str] = (),
) -> dict[str, Any]:
    """SEND_MESSAGE as an end-to-end v2 client sends it: ONE envelope for every
    recipient; for a room, the hash of the member list (`members`, all of them)."""
    params: dict[str, Any] = {
        "message_id": msg_id,
        "target_type": target_type,
        "target": target,
        "time": now_ms(),
        "envelope": envelope,
        "attachments": list(attachments),
    }
    if target_type == "room":
        params["member_hash"] = member_list_hash(str(target), members)
    return params


def ack_params(message_ids: Sequence[str]) -> dict[str, Any]:
    return {"message_ids": list(message_ids)}


def new_attachment_id() -> str:
    return uuid.uuid4().hex


# --- measuring ---------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def summarize(samples: Iterable[float], scale: float = 1000.0, digits: int = 3) -> dict[str, Any]:
    """count, min, p50, p90, p99, p99.9, max and mean; seconds are scaled to ms by default."""
    values = sorted(value * scale for value in samples)
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "min": round(values[0], digits),
        "p50": round(percentile(values, 50), digits),
        "p90": round(percentile(values, 90), digits),
        "p99": round(percentile(values, 99), digits),
        "p999": round(percentile(values, 99.9), digits),
        "max": round(values[-1], digits),
        "mean": round(sum(values) / len(values), digits),
    }


def check(
    what: str, measured: float, bar: float, unit: str, higher_is_better: bool
) -> dict[str, Any]:
    """One line of the measured-vs-bar table."""
    ok = measured >= bar if higher_is_better else measured <= bar
    return {
        "what": what,
        "measured": round(measured, 3) if isinstance(measured, float) else measured,
        "bar": ("≥ " if higher_is_better else "≤ ") + f"{bar:g}",
        "unit": unit,
        "ok": bool(ok) and not math.isnan(measured),
    }


class CpuTimed(Protocol):
    """A server process whose CPU time can be read (`ServerProcess`, the reference)."""

    def cpu_seconds(self) -> float: ...


class CpuMeter:
    """CPU use of the server and of this generator process over a window, in %."""

    def __init__(self, server: CpuTimed) -> None:
        self._server = server
        self._wall = time.perf_counter()
        self._server_cpu = server.cpu_seconds()
        self._own_cpu = time.process_time()

    def read(self) -> dict[str, float]:
        wall = max(time.perf_counter() - self._wall, 1e-9)
        server = self._server.cpu_seconds() - self._server_cpu
        own = time.process_time() - self._own_cpu
        return {
            "wall_s": round(wall, 3),
            "server_cpu_pct": round(100 * server / wall, 1),
            "generator_cpu_pct": round(100 * own / wall, 1),
        }


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "loadavg_1m_at_start": _LOAD_AT_START[0] if _LOAD_AT_START else None,
    }


def emit(
    scenario: str,
    params: dict[str, Any],
    results: dict[str, Any],
    checks: Sequence[dict[str, Any]],
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Print the scenario's one JSON object on stdout (and return it)."""
    document = {
        "scenario": scenario,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "params": params,
        "results": results,
        "checks": list(checks),
        "notes": list(notes),
    }
    print(json.dumps(document, ensure_ascii=False), flush=True)
    return document


# --- running a scenario --------------------------------------------------------------------


def base_parser(description: str, time_limit: float = 180.0) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--time-limit", type=float, default=time_limit, help="abort after this many seconds"
    )
    parser.add_argument("--log-level", default="INFO", help="server log level (default INFO)")
    parser.add_argument("--json", metavar="FILE", help="also write the JSON document here")
    return parser


def raise_nofile(wanted: int) -> int:
    """Lift this process's open-files soft limit toward `wanted`; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise BenchError("time limit reached")


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"stopped by signal {signum}")


_ACT: dict[int, Callable[[int, FrameType | None], None]] = {
    signal.SIGALRM: _on_alarm,
    signal.SIGTERM: _on_term,
}
#: `signals_held` depth, and the signals that came meanwhile.
_HELD: list[bool] = []
_PENDING: list[int] = []


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _HELD:
        _PENDING.append(signum)
        return
    _ACT[signum](signum, frame)


def bench_error_in(exc: BaseException) -> BenchError | None:
    """The BenchError in `exc`'s chain: the time limit may fire inside code that wraps
    whatever it catches (`SecureChannel.receive_data` makes it a protocol error)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BenchError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def run(scenario: str, body: Callable[[], dict[str, Any]], args: argparse.Namespace) -> int:
    """Run `body` under `args.time_limit`; on failure print a JSON error object instead.

    `body` returns the document `emit` printed; with `--json FILE` it is also written
    there (the error object too, so a caller always finds one). The cyclic garbage collector is kept
    out of timed loops (everything set up so far is frozen), as a real client would not
    churn through millions of objects either.
    """
    _LOAD_AT_START.append(round(os.getloadavg()[0], 2))
    signal.signal(signal.SIGALRM, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.setitimer(signal.ITIMER_REAL, args.time_limit)
    gc.disable()
    status = 0
    try:
        document = body()
    except Exception as exc:
        cause = bench_error_in(exc)
        if cause is None:
            raise
        document = {"scenario": scenario, "error": str(cause), "machine": machine_info()}
        print(json.dumps(document))
        status = 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        gc.enable()
    if args.json:
        Path(args.json).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return status


# --- the smoke scenario ------------------------------------------------------------------


def smoke(args: argparse.Namespace) -> dict[str, Any]:
    """Start-up time, idle RSS, PING and one-message latency on an idle server."""
    started = time.perf_counter()
    with ServerProcess.start(log_level=args.log_level) as server:
        startup_s = time.perf_counter() - started
        idle_rss = server.rss_kb()
        names = user_names("k", 2)
        registration = register_users(server, names, links=1)
        times = SessionTimes()
        a, b = open_sessions(server, names, times=times)
        befriend([(a, b)])
        pings, messages = [], []
        for _ in range(args.repeats):
            begin = time.perf_counter()
            a.call(MessageType.PING)
            pings.append(time.perf_counter() - begin)
            begin = time.perf_counter()
            a.call(
                MessageType.SEND_MESSAGE,
                send_params(message_id(), "user", b.name, b"x" * 200),
            )
            push = b.wait_push(MessageType.NEW_MESSAGE)
            messages.append(time.perf_counter() - begin)
            ids = [item["message_id"] for item in push.params["messages"]]
            b.call(MessageType.ACK_DELIVERY, ack_params(ids))
        results = {
            "startup_s": round(startup_s, 3),
            "idle_rss_kb": idle_rss,
            "registration": registration,
            "handshake_ms": summarize(times.handshake),
            "handshake_and_login_ms": summarize(times.login),
            "ping_ms": summarize(pings),
            "send_to_new_message_ms": summarize(messages),
            "server_tracebacks": server.log_count("Traceback"),
        }
    checks = [check("server start-up", startup_s, 5, "s", False)]
    return emit("smoke", {"repeats": args.repeats}, results, checks)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("smoke: start-up, idle memory, PING and message latency", 60.0)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    return run("smoke", lambda: smoke(args), args)
