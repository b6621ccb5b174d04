"""`ChatClient`: the headless client the GUI, the tests and the benchmarks drive.

Threads: the connection's socket thread reads and completes replies; pushes go to one
push thread that handles them in order (it may make requests of its own, such as
fetching a certificate, which the socket thread could not wait for); reconnection runs
on its own thread; `run_async` work runs on a small pool. Nothing of that ever calls a
listener: events wait on a queue until the caller's thread drains it with
`process_events` or `wait_for_event`, which is what keeps Tk single-threaded.
See docs/api.md for the contract.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from client.core import media
from client.core.connection import Connection, PendingRequest
from client.core.crypto_session import (
    MAX_NAME_LENGTH,
    CertificateBook,
    Identity,
    Inbox,
    attachment_body,
    check_style,
    keys_match,
    safety_number_between,
    text_body,
)
from client.core.keystore import KeyStore, server_id_for
from client.core.models import (
    Attachment,
    ChatKind,
    ChatMessage,
    Contact,
    Event,
    MessageKind,
    MessageStatus,
    Profile,
)
from client.core.outbox import Outbox
from client.core.pins import ServerPins
from client.core.store import LocalStore, UploadState
from client.core.transfers import Progress, Transfers
from common.crypto.certs import UserCertificate, build_csr, load_user_certificate
from common.crypto.keys import KdfParams, generate_user_keys
from common.errors import (
    CertificateError,
    ConnectionLost,
    HandshakeError,
    KeyStoreError,
    RemoteProtocolError,
    RequestError,
    RequestTimeout,
    UchatError,
    ValidationError,
)
from common.protocol.message import Message
from common.protocol.opcodes import MessageType
from common.validation import validate_registration

log = logging.getLogger(__name__)

Target = str | int | Contact
Listener = Callable[[Event], None]
T = TypeVar("T")

ASYNC_RESULT = "async_result"
ASYNC_WORKERS = 4
TRANSIENT_LOGIN_ERRORS = frozenset({"server_busy", "too_many_attempts", "internal_error"})


def now_ms() -> int:
    return int(time.time() * 1000)


# ====================================================================== events


class EventTimeout(RequestTimeout, TimeoutError):
    """`wait_for_event` saw no matching event in time (catch either base class)."""


class EventHub:
    """The event queue, the listeners, and `run_async` results routed through the queue."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Event] = queue.Queue()
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(ASYNC_WORKERS, thread_name_prefix="uchat-async")

    def emit(self, kind: str, **data: Any) -> None:
        self._queue.put(Event(kind, data))

    def add_listener(self, callback: Listener) -> None:
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Listener) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def process(self, max_events: int = 200) -> int:
        """Deliver up to `max_events` queued events on this thread; returns how many."""
        handled = 0
        while handled < max_events:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            self._deliver(event)
            handled += 1
        return handled

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        """Deliver events until one matches; `RequestTimeout` if none does in time."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EventTimeout(f"no matching event within {timeout:g} s")
            try:
                event = self._queue.get(timeout=remaining)
            except queue.Empty:
                raise EventTimeout(f"no matching event within {timeout:g} s") from None
            self._deliver(event)
            if predicate(event):
                return event

    def _deliver(self, event: Event) -> None:
        if event.kind == ASYNC_RESULT:
            callback = event.data.get("callback")
            if callback is not None:
                self._guard(callback, event.data.get("value"))
            return
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            self._guard(listener, event)

    @staticmethod
    def _guard(callback: Callable[[Any], object], value: Any) -> None:
        try:
            callback(value)
        except Exception:  # one broken listener must not starve the others
            log.exception("event listener failed")

    def run_async(
        self,
        fn: Callable[..., T],
        *args: Any,
        on_result: Callable[[T], object] | None = None,
        on_error: Callable[[BaseException], object] | None = None,
    ) -> Future[T]:
        """Run `fn(*args)` on a worker; its callback later runs on the draining thread."""

        def work() -> T:
            try:
                value = fn(*args)
            except BaseException as exc:
                self.emit(ASYNC_RESULT, callback=on_error, value=exc)
                raise
            self.emit(ASYNC_RESULT, callback=on_result, value=value)
            return value

        return self._executor.submit(work)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# ====================================================================== contacts


def _friend_contact(raw: Any) -> Contact:
    if not isinstance(raw, dict) or not isinstance(raw.get("username"), str):
        raise RemoteProtocolError("malformed contact")
    ip, port, last = raw.get("ip", ""), raw.get("port", 0), raw.get("last_message_time", 0)
    return Contact(
        "user",
        raw["username"],
        raw["username"],
        online=raw.get("online") is True,
        ip=ip if isinstance(ip, str) else "",
        port=port if type(port) is int else 0,
        last_message_time=last if type(last) is int else 0,
    )


def _room_contact(raw: Any) -> Contact:
    if not isinstance(raw, dict) or type(raw.get("room_id")) is not int:
        raise RemoteProtocolError("malformed room")
    name, members, last = raw.get("name"), raw.get("members", []), raw.get("last_message_time", 0)
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise RemoteProtocolError("malformed room members")
    room_id = raw["room_id"]
    return Contact(
        "room",
        str(room_id),
        name if isinstance(name, str) else f"#{room_id}",
        members=tuple(members),
        last_message_time=last if type(last) is int else 0,
    )


def _str_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RemoteProtocolError("expected a list of names")
    return list(value)


class ContactBook:
    """Friends, rooms and friend requests as the server last described them; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._friends: dict[str, Contact] = {}
        self._rooms: dict[str, Contact] = {}
        self._requests: list[str] = []

    def replace(self, lists: Mapping[str, Any]) -> None:
        """Take the `friends`, `rooms` and `friend_requests` of LOGIN or CONTACT_LIST."""
        friends = [_friend_contact(raw) for raw in lists.get("friends", [])]
        rooms = [_room_contact(raw) for raw in lists.get("rooms", [])]
        requests = _str_list(lists.get("friend_requests", []))
        with self._lock:
            self._friends = {c.id: c for c in friends}
            self._rooms = {c.id: c for c in rooms}
            self._requests = requests

    def put(self, contact: Contact) -> None:
        with self._lock:
            (self._friends if contact.kind == "user" else self._rooms)[contact.id] = contact
            if contact.kind == "user" and contact.id in self._requests:
                self._requests.remove(contact.id)

    def pop(self, kind: ChatKind, contact_id: str) -> Contact | None:
        with self._lock:
            return (self._friends if kind == "user" else self._rooms).pop(contact_id, None)

    def get(self, kind: ChatKind, contact_id: str) -> Contact | None:
        with self._lock:
            return (self._friends if kind == "user" else self._rooms).get(contact_id)

    def set_presence(self, username: str, online: bool, ip: str, port: int) -> None:
        with self._lock:
            friend = self._friends.get(username)
            if friend is not None:
                self._friends[username] = dataclasses.replace(
                    friend, online=online, ip=ip or friend.ip, port=port or friend.port
                )

    def room_member(self, room_id: str, username: str, joined: bool) -> None:
        with self._lock:
            room = self._rooms.get(room_id)
            if room is None:
                return
            members = [m for m in room.members if m != username]
            if joined:
                members.append(username)
            self._rooms[room_id] = dataclasses.replace(room, members=tuple(members))

    def add_request(self, username: str) -> None:
        with self._lock:
            if username not in self._requests:
                self._requests.append(username)

    def remove_request(self, username: str) -> None:
        with self._lock:
            if username in self._requests:
                self._requests.remove(username)

    def requests(self) -> list[str]:
        with self._lock:
            return list(self._requests)

    def all(self) -> list[Contact]:
        with self._lock:
            return [*self._friends.values(), *self._rooms.values()]


# ====================================================================== session


@dataclass(frozen=True)
class Limits:
    max_attachment_size: int
    chunk_size: int


@dataclass
class Session:
    """Everything that belongs to one logged-in account on this machine."""

    profile: Profile
    server_id: str
    certificate: UserCertificate
    identity: Identity | None
    store: LocalStore
    certificates: CertificateBook
    outbox: Outbox
    transfers: Transfers
    inbox: Inbox | None
    contacts: ContactBook
    limits: Limits
    uploads_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    active_uploads: set[str] = dataclasses.field(default_factory=set)

    @property
    def username(self) -> str:
        return self.profile.username


def _parse_limits(raw: Any) -> Limits:
    if not isinstance(raw, dict):
        raise RemoteProtocolError("login reply lacks limits")
    size, chunk = raw.get("max_attachment_size"), raw.get("chunk_size")
    if type(size) is not int or type(chunk) is not int or size < 0 or chunk <= 0:
        raise RemoteProtocolError("login reply has bad limits")
    return Limits(size, chunk)


def _parse_profile(raw: Any) -> Profile:
    if not isinstance(raw, dict):
        raise RemoteProtocolError("login reply lacks a profile")
    username, email, sex, age = (raw.get(k) for k in ("username", "email", "sex", "age"))
    if not (isinstance(username, str) and isinstance(email, str) and isinstance(sex, str)):
        raise RemoteProtocolError("login reply has a bad profile")
    if type(age) is not int:
        raise RemoteProtocolError("login reply has a bad profile")
    return Profile(username, email, sex, age)


def _server_ca(conn: Connection) -> bytes:
    """The CA that certifies users: the server certificate the handshake authenticated."""
    if conn.server_certificate is None:
        raise HandshakeError("the server presented no certificate")
    return conn.server_certificate


def _bytes_field(reply: Mapping[str, Any], name: str) -> bytes:
    value = reply.get(name)
    if not isinstance(value, bytes):
        raise RemoteProtocolError(f"reply lacks {name}")
    return value


# ====================================================================== the client


class ChatClient:
    """One user's connection to one Uchat server; see docs/api.md.

    Keyword-only extras beyond the documented constructor: `ping_interval` (seconds
    between keep-alive PINGs; two silent intervals mean a dead peer), `reconnect_min`
    / `reconnect_max` (back-off bounds), `auto_reconnect`, and `key_kdf` (the scrypt
    cost used when sealing a key file; tests and benchmarks lower it).
    """

    def __init__(
        self,
        host: str,
        port: int,
        data_dir: Path | str,
        expected_fingerprint: str | None = None,
        timeout: float = 10.0,
        *,
        ping_interval: float = 30.0,
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        auto_reconnect: bool = True,
        key_kdf: KdfParams | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.data_dir = Path(data_dir)
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self._expected_fingerprint = expected_fingerprint.lower() if expected_fingerprint else None
        self._keystore = KeyStore(self.data_dir, key_kdf)
        self._pins = ServerPins(self._keystore.pins_path)
        self._events = EventHub()
        self._conn: Connection | None = None
        self._conn_lock = threading.Lock()
        self._session: Session | None = None
        self._session_lock = threading.RLock()
        self._credentials: tuple[str, str] | None = None  # memory only, for re-login
        self._server_fingerprint = ""
        self._auto_reconnect = auto_reconnect
        self._allow_reconnect = auto_reconnect
        self._kicked = False
        self._closed = False
        self._stop = threading.Event()
        self._reconnect_lock = threading.Lock()
        self._reconnecting = False
        self._attachment_messages: dict[str, str] = {}
        self._pushes: queue.Queue[tuple[Connection, Message] | None] = queue.Queue()
        self._push_thread = threading.Thread(
            target=self._push_loop, name="uchat-pushes", daemon=True
        )
        self._push_thread.start()

    # ------------------------------------------------------------------ events

    def add_listener(self, callback: Listener) -> None:
        self._events.add_listener(callback)

    def remove_listener(self, callback: Listener) -> None:
        self._events.remove_listener(callback)

    def process_events(self, max_events: int = 200) -> int:
        return self._events.process(max_events)

    def wait_for_event(self, predicate: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        return self._events.wait_for(predicate, timeout)

    def run_async(
        self,
        fn: Callable[..., T],
        *args: Any,
        on_result: Callable[[T], object] | None = None,
        on_error: Callable[[BaseException], object] | None = None,
    ) -> Future[T]:
        return self._events.run_async(fn, *args, on_result=on_result, on_error=on_error)

    def _emit(self, kind: str, **data: Any) -> None:
        self._events.emit(kind, **data)

    # ------------------------------------------------------------------ state

    @property
    def server_fingerprint(self) -> str:
        """SHA-256 of the server certificate we are (or were last) connected to."""
        return self._server_fingerprint

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and conn.alive

    @property
    def username(self) -> str | None:
        session = self._session
        return session.username if session else None

    @property
    def profile(self) -> Profile | None:
        session = self._session
        return session.profile if session else None

    @property
    def can_send(self) -> bool:
        """False when this machine lacks the private keys (a `key_missing` event said so)."""
        session = self._session
        return session is not None and session.identity is not None

    # ------------------------------------------------------------------ connection

    def connect(self) -> None:
        """TCP + handshake, checking the server pin (configured, else trust on first use)."""
        if self._closed:
            raise ConnectionLost("the client is closed")
        with self._conn_lock:
            if self.connected:
                return
            self._emit("connection", state="connecting")
            try:
                self._open_connection()
            except UchatError as exc:
                self._emit("connection", state="disconnected", error=str(exc))
                raise
        self._allow_reconnect = self._auto_reconnect
        self._emit("connection", state="connected")

    def _open_connection(self) -> Connection:
        conn = Connection(
            self.host,
            self.port,
            on_push=self._on_push,
            on_lost=self._on_lost,
            expected_fingerprint=self._expected_fingerprint,
            pins=self._pins,
            timeout=self.timeout,
            ping_interval=self.ping_interval,
        )
        self._server_fingerprint = conn.open()
        self._conn = conn
        return conn

    def _connection(self) -> Connection:
        conn = self._conn
        if conn is None or not conn.alive:
            raise ConnectionLost("not connected to the server")
        return conn

    def _request(self, kind: MessageType, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._connection().request(kind, params or {})

    def _start_request(self, kind: MessageType, params: dict[str, Any]) -> PendingRequest:
        return self._connection().start_request(kind, params)

    def _on_lost(self, conn: Connection, error: BaseException | None) -> None:
        if conn is not self._conn:
            return
        self._emit("connection", state="disconnected", error=str(error) if error else "")
        self._schedule_reconnect()

    def _should_reconnect(self) -> bool:
        return (
            not self._closed
            and self._allow_reconnect
            and not self._kicked
            and self._credentials is not None
        )

    def _schedule_reconnect(self) -> None:
        with self._reconnect_lock:
            if self._reconnecting or not self._should_reconnect():
                return
            self._reconnecting = True
        threading.Thread(target=self._reconnect_loop, name="uchat-reconnect", daemon=True).start()

    def _reconnect_loop(self) -> None:
        try:
            self._reconnect_until_done()
        finally:
            with self._reconnect_lock:
                self._reconnecting = False
        if not self.connected:
            self._schedule_reconnect()  # lost again while we were finishing

    def _reconnect_until_done(self) -> None:
        delay = self.reconnect_min
        self._emit("connection", state="reconnecting")
        while self._should_reconnect():
            pause = secrets.SystemRandom().uniform(delay / 2, delay)
            if self._stop.wait(pause):
                return
            credentials = self._credentials
            if credentials is None:
                return
            try:
                with self._conn_lock:
                    if not self.connected:
                        self._open_connection()
                self._login(*credentials)
            except (HandshakeError, CertificateError) as exc:
                self._give_up_reconnecting(exc)
                return
            except RequestError as exc:
                if exc.code not in TRANSIENT_LOGIN_ERRORS:
                    self._give_up_reconnecting(exc)
                    return
            except (UchatError, OSError) as exc:  # unreachable, timed out, garbled: retry
                log.info("reconnect attempt failed: %s", exc)
            else:
                self._emit("connection", state="connected")
                return
            delay = min(delay * 2, self.reconnect_max)

    def _give_up_reconnecting(self, error: BaseException) -> None:
        self._allow_reconnect = False
        self._emit("connection", state="disconnected", error=str(error))

    # ------------------------------------------------------------------ accounts

    def register(self, username: str, password: str, email: str, sex: str, age: int) -> None:
        """Create keys and a CSR, register, and seal the keys under the password."""
        try:
            fields = validate_registration(
                {"username": username, "password": password, "email": email, "sex": sex, "age": age}
            )
        except ValidationError as exc:
            raise RequestError(exc.code, exc.message, exc.field) from exc
        self.connect()
        conn = self._connection()
        keys = generate_user_keys()
        csr = build_csr(fields["username"], fields["email"], keys)
        reply = conn.request(MessageType.REGISTER, {**fields, "csr": csr})
        ca = _server_ca(conn)
        certificate = load_user_certificate(_bytes_field(reply, "certificate"), ca)
        if not keys_match(keys, certificate):
            raise CertificateError("the server certified keys that are not ours")
        server_id = server_id_for(self._server_fingerprint)
        self._keystore.save(server_id, certificate.username, keys, password)

    def login(self, username: str, password: str) -> Profile:
        """Log in, open this account's local store, then receive undelivered messages."""
        self.connect()
        session = self._login(username, password)
        self._allow_reconnect = self._auto_reconnect
        return session.profile

    def _login(self, username: str, password: str) -> Session:
        with self._session_lock:
            conn = self._connection()
            reply = conn.request(MessageType.LOGIN, {"username": username, "password": password})
            session = self._adopt_session(conn, reply, password)
            self._credentials = (session.username, password)
            self._kicked = False
        threading.Thread(
            target=self._after_login, args=(session,), name="uchat-resend", daemon=True
        ).start()
        return session

    def _adopt_session(self, conn: Connection, reply: dict[str, Any], password: str) -> Session:
        """Reuse the session on re-login; otherwise open the store and load the keys."""
        profile = _parse_profile(reply.get("profile"))
        limits = _parse_limits(reply.get("limits"))
        ca = _server_ca(conn)
        certificate = load_user_certificate(_bytes_field(reply, "certificate"), ca)
        server_id = server_id_for(self._server_fingerprint)
        current = self._session
        if current is not None and (current.username, current.server_id) == (
            profile.username,
            server_id,
        ):
            current.contacts.replace(reply)
            current.limits = limits
            return current
        if current is not None:
            self._session = None
            current.store.close()
        session = self._new_session(profile, server_id, certificate, ca, limits, password)
        session.contacts.replace(reply)
        self._session = session
        return session

    def _new_session(
        self,
        profile: Profile,
        server_id: str,
        certificate: UserCertificate,
        ca: bytes,
        limits: Limits,
        password: str,
    ) -> Session:
        store = LocalStore(self._keystore.store_path(server_id, profile.username))
        identity = self._load_identity(server_id, profile.username, password, certificate)
        certificates = CertificateBook(
            ca_certificate=ca,
            pins=store,
            fetch_user=self._fetch_certificate,
            fetch_room=self._fetch_room_certificates,
            on_key_changed=self._on_key_changed,
        )
        outbox = Outbox(
            store,
            send=lambda params: self._request(MessageType.SEND_MESSAGE, params),
            rebuild=self._rebuild_params,
            on_status=self._on_status,
        )
        transfers = Transfers(
            store=store,
            staging_dir=store.path.parent / "uploads",
            request=self._request,
            start_request=self._start_request,
            report=self._on_transfer,
        )
        inbox = None
        if identity is not None:
            inbox = Inbox(
                identity=identity,
                certificates=certificates,
                store=store,
                acknowledge=self._acknowledge,
                announce=self._announce,
            )
        return Session(
            profile,
            server_id,
            certificate,
            identity,
            store,
            certificates,
            outbox,
            transfers,
            inbox,
            ContactBook(),
            limits,
        )

    def _load_identity(
        self, server_id: str, username: str, password: str, certificate: UserCertificate
    ) -> Identity | None:
        """This machine's keys, or None (with a `key_missing` event) if we cannot use them."""
        if not self._keystore.exists(server_id, username):
            reason = "no key file for this account on this computer"
        else:
            try:
                keys = self._keystore.load(server_id, username, password)
            except KeyStoreError as exc:
                reason = str(exc)
            else:
                if keys_match(keys, certificate):
                    return Identity(username, keys, certificate)
                reason = "the key file on this computer does not match your certificate"
        self._emit("key_missing", username=username, reason=reason)
        return None

    def _after_login(self, session: Session) -> None:
        """Resend the outbox and resume uploads; failures wait for the next login."""
        try:
            session.outbox.replay()
            self._resume_uploads(session)
        except Exception as exc:  # a background task: report, never crash the process
            log.info("resending after login stopped: %s", exc)

    def logout(self) -> None:
        """Tell the server, forget the credentials and close the local store."""
        with self._session_lock:
            self._credentials = None
            conn = self._conn
            if conn is not None and conn.alive:
                try:
                    conn.request(MessageType.LOGOUT)
                except (ConnectionLost, RequestTimeout, RequestError) as exc:
                    log.info("logout request failed: %s", exc)
            session, self._session = self._session, None
            if session is not None:
                session.store.close()

    def close(self) -> None:
        """Disconnect for good: no reconnect, threads stopped, store closed."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        conn = self._conn
        if conn is not None:
            conn.close()
        self._pushes.put(None)
        with self._session_lock:
            session, self._session = self._session, None
            if session is not None:
                session.store.close()
        self._events.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ pushes

    def _on_push(self, conn: Connection, message: Message) -> None:
        """Socket thread: KICKED is handled at once, before the close it precedes."""
        if message.type is MessageType.KICKED:
            self._kicked = True
            reason, address = message.params.get("reason"), message.params.get("address")
            self._emit(
                "kicked",
                reason=reason if isinstance(reason, str) else "",
                address=address if isinstance(address, str) else "",
            )
            return
        self._pushes.put((conn, message))

    def _push_loop(self) -> None:
        while True:
            item = self._pushes.get()
            if item is None:
                return
            _, message = item
            try:
                with self._session_lock:
                    session = self._session
                    if session is not None:
                        self._handle_push(session, message)
            except (UchatError, OSError) as exc:
                log.info("push %s not handled: %s", message.type.name, exc)
            except Exception:
                log.exception("push %s handling failed", message.type.name)

    def _handle_push(self, session: Session, message: Message) -> None:
        params = message.params
        kind = message.type
        if kind is MessageType.NEW_MESSAGE:
            if session.inbox is not None:  # without keys: leave them on the server
                session.inbox.receive(params.get("messages") or [])
        elif kind is MessageType.MESSAGE_DELIVERED:
            message_id = params.get("message_id")
            if isinstance(message_id, str):
                session.store.set_status(message_id, "delivered")
                self._report_status(session, message_id)
        elif kind is MessageType.PRESENCE:
            self._on_presence(session, params)
        elif kind is MessageType.CONTACT_ADDED:
            self._on_contact_added(session, params)
        elif kind is MessageType.CONTACT_REMOVED:
            self._on_contact_removed(session, params)
        elif kind is MessageType.FRIEND_REQUEST:
            sender = params.get("from")
            if isinstance(sender, str):
                session.contacts.add_request(sender)
                self._emit("friend_request", username=sender)
        elif kind is MessageType.ROOM_MEMBER_EVENT:
            self._on_room_member(session, params)

    def _on_presence(self, session: Session, params: dict[str, Any]) -> None:
        username, online = params.get("username"), params.get("online")
        ip, port = params.get("ip", ""), params.get("port", 0)
        if not isinstance(username, str) or not isinstance(online, bool):
            return
        ip = ip if isinstance(ip, str) else ""
        port = port if type(port) is int else 0
        session.contacts.set_presence(username, online, ip, port)
        self._emit("presence", username=username, online=online, ip=ip, port=port)

    def _on_contact_added(self, session: Session, params: dict[str, Any]) -> None:
        if "contact" in params:
            contact = _friend_contact(params["contact"])
            session.certificates.forget_user(contact.id)
        else:
            contact = _room_contact(params.get("room"))
        session.contacts.put(contact)
        self._emit("contact_added", contact=contact)

    def _on_contact_removed(self, session: Session, params: dict[str, Any]) -> None:
        username, room_id = params.get("username"), params.get("room_id")
        if isinstance(username, str):
            contact = session.contacts.pop("user", username) or Contact("user", username, username)
        elif type(room_id) is int:
            key = str(room_id)
            contact = session.contacts.pop("room", key) or Contact("room", key, f"#{room_id}")
            session.certificates.forget_room(room_id)
        else:
            return
        self._emit("contact_removed", contact=contact)

    def _on_room_member(self, session: Session, params: dict[str, Any]) -> None:
        room_id, username, event = (
            params.get("room_id"),
            params.get("username"),
            params.get("event"),
        )
        if type(room_id) is not int or not isinstance(username, str):
            return
        if event not in ("joined", "left"):
            return
        session.contacts.room_member(str(room_id), username, event == "joined")
        session.certificates.forget_room(room_id)
        self._emit("room_member", room_id=room_id, username=username, event=event)

    # callbacks handed to the session's parts

    def _acknowledge(self, message_ids: list[str]) -> None:
        self._request(MessageType.ACK_DELIVERY, {"message_ids": message_ids})

    def _announce(self, message: ChatMessage) -> None:
        self._remember_attachment(message)
        self._emit("message", message=message)

    def _on_status(self, message_id: str, status: MessageStatus) -> None:
        self._emit("message_status", message_id=message_id, status=status)

    def _report_status(self, session: Session, message_id: str) -> None:
        stored = session.store.get_message(message_id)
        if stored is not None and stored.outgoing:
            self._on_status(message_id, stored.status)

    def _on_key_changed(self, username: str, old: str, new: str) -> None:
        self._emit("key_changed", username=username, old_fingerprint=old, new_fingerprint=new)

    def _on_transfer(self, attachment_id: str, done: int, total: int, direction: str) -> None:
        self._emit(
            "transfer", attachment_id=attachment_id, done=done, total=total, direction=direction
        )

    def _fetch_certificate(self, username: str) -> bytes:
        reply = self._request(MessageType.CERTIFICATE, {"username": username})
        return _bytes_field(reply, "certificate")

    def _fetch_room_certificates(self, room_id: int) -> dict[str, bytes]:
        reply = self._request(MessageType.ROOM_CERTIFICATES, {"room_id": room_id})
        members = reply.get("members")
        if not isinstance(members, list):
            raise RemoteProtocolError("ROOM_CERTIFICATES reply lacks members")
        result: dict[str, bytes] = {}
        for entry in members:
            if not isinstance(entry, dict):
                raise RemoteProtocolError("malformed room certificate")
            name, der = entry.get("username"), entry.get("certificate")
            if not isinstance(name, str) or not isinstance(der, bytes):
                raise RemoteProtocolError("malformed room certificate")
            result[name] = der
        return result

    # ------------------------------------------------------------------ session helpers

    def _require_session(self) -> Session:
        session = self._session
        if session is None:
            raise RequestError("not_authenticated", "log in first")
        return session

    def _require_sender(self) -> tuple[Session, Identity]:
        session = self._require_session()
        if session.identity is None:
            raise RequestError(
                "key_missing",
                "this computer does not hold your private keys, so it cannot send messages",
            )
        return session, session.identity

    @staticmethod
    def _chat_of(target: Target) -> tuple[ChatKind, str]:
        if isinstance(target, Contact):
            return target.kind, target.id
        if isinstance(target, bool):
            raise TypeError("a target is a username, a room id or a Contact")
        if isinstance(target, int):
            return "room", str(target)
        if isinstance(target, str) and target:
            return "user", target
        raise TypeError("a target is a username, a room id or a Contact")

    def _remember_attachment(self, message: ChatMessage) -> None:
        if message.attachment is not None:
            self._attachment_messages[message.attachment.attachment_id] = message.message_id

    # ------------------------------------------------------------------ friends

    def search_users(self, query: str) -> list[dict[str, Any]]:
        reply = self._request(MessageType.SEARCH_USERS, {"query": query})
        users = reply.get("users")
        if not isinstance(users, list):
            raise RemoteProtocolError("SEARCH_USERS reply lacks users")
        return [user for user in users if isinstance(user, dict)]

    def add_friend(self, username: str) -> None:
        self._require_session()
        self._request(MessageType.ADD_FRIEND, {"username": username})

    def answer_friend_request(self, username: str, accept: bool | None) -> None:
        """accept True / False, or None to decide later (it comes back at next login)."""
        session = self._require_session()
        decision = "later" if accept is None else ("accept" if accept else "reject")
        self._request(
            MessageType.RESOLVE_FRIEND_REQUEST, {"username": username, "decision": decision}
        )
        if accept is not None:
            session.contacts.remove_request(username)

    def delete_friend(self, username: str) -> None:
        self._require_session()
        self._request(MessageType.DELETE_FRIEND, {"username": username})

    def pending_friend_requests(self) -> list[str]:
        return self._require_session().contacts.requests()

    def refresh_contacts(self) -> list[Contact]:
        """Ask the server for the contact list again (CONTACT_LIST)."""
        session = self._require_session()
        session.contacts.replace(self._request(MessageType.CONTACT_LIST))
        return self.contacts()

    def contacts(self) -> list[Contact]:
        """Friends and rooms with unread counts; online first, then newest message first."""
        session = self._require_session()
        summaries = session.store.chat_summaries()
        merged: list[Contact] = []
        for known in session.contacts.all():
            summary = summaries.get((known.kind, known.id))
            contact = known
            if summary is not None:
                contact = dataclasses.replace(
                    known,
                    unread=summary.unread,
                    last_message=summary.last_message,
                    last_message_time=max(known.last_message_time, summary.last_time),
                )
            merged.append(contact)
        merged.sort(key=lambda c: (not c.online, -c.last_message_time, c.name.casefold()))
        return merged

    # ------------------------------------------------------------------ rooms

    def create_room(self, name: str) -> Contact:
        session = self._require_session()
        contact = _room_contact(self._request(MessageType.CREATE_ROOM, {"name": name}))
        session.contacts.put(contact)
        return contact

    def join_room(self, room_id: int) -> Contact:
        session = self._require_session()
        contact = _room_contact(self._request(MessageType.JOIN_ROOM, {"room_id": room_id}))
        session.contacts.put(contact)
        return contact

    def leave_room(self, room_id: int) -> None:
        session = self._require_session()
        self._request(MessageType.LEAVE_ROOM, {"room_id": room_id})
        session.contacts.pop("room", str(room_id))
        session.certificates.forget_room(room_id)

    def room_members(self, room_id: int) -> list[dict[str, Any]]:
        """[{username, online}] of a room you are in."""
        reply = self._request(MessageType.ROOM_MEMBERS, {"room_id": room_id})
        members = reply.get("members")
        if not isinstance(members, list):
            raise RemoteProtocolError("ROOM_MEMBERS reply lacks members")
        return [member for member in members if isinstance(member, dict)]

    # ------------------------------------------------------------------ keys

    def safety_number(self, username: str) -> str:
        """Digits to compare with `username` in person; uses a changed key if one waits."""
        session = self._require_session()
        return safety_number_between(session.certificate, session.certificates.newest(username))

    def fingerprint(self, username: str) -> str:
        """Certificate fingerprint of `username` (yourself included; a waiting new key wins)."""
        session = self._require_session()
        if username == session.username:
            return session.certificate.fingerprint
        return session.certificates.newest(username).fingerprint

    def trust_new_key(self, username: str) -> None:
        """Accept `username`'s changed key, then open the messages held back for it."""
        session = self._require_session()
        session.certificates.trust_new_key(username)
        if session.inbox is not None:
            with self._session_lock:
                session.inbox.release(username)

    # ------------------------------------------------------------------ sending

    def send_text(
        self, target: Target, text: str, font_size: int = 12, color: str = "#000000"
    ) -> ChatMessage:
        """Seal, store (`sending`), queue, send. Returns the message with its status.

        If the connection is down the message stays queued (status `sending`) and goes
        out after the next login; a refusal raises `RequestError` (status `failed`).
        """
        session, identity = self._require_sender()
        if not text.strip():
            raise RequestError("empty_message", "there is nothing to send", "text")
        check_style(font_size, color)
        chat_kind, chat_id = self._chat_of(target)
        message = ChatMessage(
            uuid.uuid4().hex,
            chat_kind,
            chat_id,
            session.username,
            now_ms(),
            "text",
            text=text,
            font_size=font_size,
            color=color,
            outgoing=True,
            status="sending",
        )
        params = self._seal_params(session, identity, message, text_body(text, font_size, color))
        return session.outbox.submit(message, params)

    def _seal_params(
        self,
        session: Session,
        identity: Identity,
        message: ChatMessage,
        body: bytes,
        attachments: Sequence[str] = (),
        *,
        refresh: bool = False,
    ) -> dict[str, Any]:
        """SEND_MESSAGE params: one envelope per recipient (every room member but us)."""
        envelopes: dict[str, bytes] = {}
        target: str | int
        if message.chat_kind == "user":
            target = message.chat_id
            recipient = session.certificates.certificate(target, refresh=refresh)
            envelopes[target] = identity.seal_for(recipient, message.message_id, body)
        else:
            target = int(message.chat_id)
            members = session.certificates.room_certificates(target, refresh=refresh)
            for username, certificate in members.items():
                if username != session.username:
                    envelopes[username] = identity.seal_for(certificate, message.message_id, body)
        return {
            "message_id": message.message_id,
            "target_type": message.chat_kind,
            "target": target,
            "time": message.time,
            "envelopes": envelopes,
            "attachments": list(attachments),
        }

    def _rebuild_params(self, message: ChatMessage, params: dict[str, Any]) -> dict[str, Any]:
        """The recipients changed since sealing: seal the stored message for the new set."""
        session, identity = self._require_sender()
        if message.attachment is not None:
            body = attachment_body(message.kind, message.attachment)
        else:
            body = text_body(message.text, message.font_size, message.color)
        attachments = params.get("attachments") or []
        return self._seal_params(session, identity, message, body, attachments, refresh=True)

    # ------------------------------------------------------------------ attachments

    def send_file(
        self, target: Target, path: Path | str, progress: Progress | None = None
    ) -> ChatMessage:
        """Encrypt, upload (resumable, interleaved with chat) and send a file message."""
        return self._send_attachment(target, Path(path), "file", progress)

    def send_image(
        self, target: Target, path: Path | str, progress: Progress | None = None
    ) -> ChatMessage:
        """Like `send_file`, shown inline; a file that is not a safe image goes as a file."""
        path = Path(path)
        kind: MessageKind = "image" if media.detect_image(path) is not None else "file"
        return self._send_attachment(target, path, kind, progress)

    def _send_attachment(
        self, target: Target, path: Path, kind: MessageKind, progress: Progress | None
    ) -> ChatMessage:
        session, _ = self._require_sender()
        chat_kind, chat_id = self._chat_of(target)
        message_id = uuid.uuid4().hex
        state = session.transfers.stage(
            path,
            message_id=message_id,
            chat_kind=chat_kind,
            chat_id=chat_id,
            kind=kind,
            max_size=session.limits.max_attachment_size,
        )
        message = ChatMessage(
            message_id,
            chat_kind,
            chat_id,
            session.username,
            now_ms(),
            kind,
            attachment=self._attachment_of(state),
            outgoing=True,
            status="sending",
        )
        session.store.add_message(message)
        self._remember_attachment(message)
        return self._complete_upload(session, state, progress)

    @staticmethod
    def _attachment_of(state: UploadState) -> Attachment:
        return Attachment(
            state.attachment_id,
            state.name[:MAX_NAME_LENGTH],
            state.size,
            state.key,
            state.digest,
            state.chunk_size,
            local_path=state.source_path,
        )

    def _complete_upload(
        self, session: Session, state: UploadState, progress: Progress | None
    ) -> ChatMessage:
        """Upload what the server lacks, then queue and send the message naming it."""
        with session.uploads_lock:
            if state.attachment_id in session.active_uploads:
                stored = session.store.get_message(state.message_id)
                if stored is None:
                    raise RequestError("upload_busy", "this upload is already running")
                return stored
            session.active_uploads.add(state.attachment_id)
        try:
            return self._upload_and_send(session, state, progress)
        finally:
            with session.uploads_lock:
                session.active_uploads.discard(state.attachment_id)

    def _upload_and_send(
        self, session: Session, state: UploadState, progress: Progress | None
    ) -> ChatMessage:
        _, identity = self._require_sender()
        attachment = self._attachment_of(state)
        stored = session.store.get_message(state.message_id)
        message = stored or ChatMessage(
            state.message_id,
            state.chat_kind,
            state.chat_id,
            session.username,
            now_ms(),
            state.kind,
            attachment=attachment,
            outgoing=True,
            status="sending",
        )
        try:
            session.transfers.upload(state, session.limits.chunk_size, progress)
            body = attachment_body(state.kind, attachment)
            params = self._seal_params(session, identity, message, body, [state.attachment_id])
        except (ConnectionLost, RequestTimeout):
            return message  # resumed after the next login
        except RequestError:
            session.transfers.finish(state)
            session.store.set_status(state.message_id, "failed")
            self._report_status(session, state.message_id)
            raise
        try:
            return session.outbox.submit(message, params)
        finally:
            session.transfers.finish(state)

    def _resume_uploads(self, session: Session) -> None:
        for state in session.store.pending_uploads():
            if not state.encrypted_path.is_file():
                session.store.remove_upload(state.attachment_id)
                session.store.set_status(state.message_id, "failed")
                self._report_status(session, state.message_id)
                continue
            try:
                self._complete_upload(session, state, None)
            except RequestError as exc:
                log.info("resumed upload refused: %s", exc.code)

    def download(
        self,
        attachment: Attachment | ChatMessage,
        dest_dir: Path | str | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Fetch, verify and decrypt an attachment; returns the file's path.

        `dest_dir` defaults to this user's downloads folder. The name is sanitised and
        made unique; the path is recorded with the message.
        """
        session = self._require_session()
        if isinstance(attachment, ChatMessage):
            if attachment.attachment is None:
                raise RequestError("no_attachment", "this message has no attachment")
            message_id: str | None = attachment.message_id
            blob = attachment.attachment
        else:
            message_id = self._attachment_messages.get(attachment.attachment_id)
            blob = attachment
        if dest_dir is None:
            folder = self._keystore.downloads_dir(session.username)
        else:
            folder = Path(dest_dir)
        path = session.transfers.download(blob, folder, session.limits.chunk_size, progress)
        if message_id is not None:
            session.store.set_attachment_path(message_id, path)
        return path

    # ------------------------------------------------------------------ local history

    def history(
        self,
        target: Target,
        limit: int = 50,
        before: str | ChatMessage | tuple[int, int] | None = None,
    ) -> list[ChatMessage]:
        """Up to `limit` messages, oldest first, older than `before` (a message or its id)."""
        session = self._require_session()
        chat_kind, chat_id = self._chat_of(target)
        cursor: tuple[int, int] | None
        if isinstance(before, ChatMessage):
            cursor = session.store.history_cursor(before.message_id)
        elif isinstance(before, str):
            cursor = session.store.history_cursor(before)
        else:
            cursor = before
        messages = session.store.history(chat_kind, chat_id, limit, cursor)
        for message in messages:
            self._remember_attachment(message)
        return messages

    def search_history(self, text: str, limit: int = 100) -> list[ChatMessage]:
        messages = self._require_session().store.search(text, limit)
        for message in messages:
            self._remember_attachment(message)
        return messages

    def mark_read(self, target: Target) -> None:
        self._require_session().store.mark_read(*self._chat_of(target))

    def unread(self, target: Target) -> int:
        return self._require_session().store.unread(*self._chat_of(target))

    def save_draft(self, target: Target, text: str) -> None:
        chat_kind, chat_id = self._chat_of(target)
        self._require_session().store.save_draft(chat_kind, chat_id, text)

    def draft(self, target: Target) -> str:
        return self._require_session().store.draft(*self._chat_of(target))
