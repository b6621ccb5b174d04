"""`ChatClient`: the headless client the GUI, the tests and the benchmarks drive.

Why it exists: one façade with the contract of docs/api.md, so its callers never see
how the work is split. It wires the parts and forwards to them:

- `events.EventHub`: the event queue, listeners, `run_async`;
- `link.ServerLink` and `reconnect.Reconnector`: the connection and getting it back;
- `accounts.Accounts`: register, login, logout; `session`: what a login opens;
- `pushes.PushHandler`: what the server pushes; `outgoing.Outgoing`: what we send;
- `directory.Directory` (friends and rooms) and `downloads.Downloads` (attachments).

Threads: the connection's socket thread reads and completes replies; pushes go to one
push thread that handles them in order (it may make requests of its own, such as
fetching a certificate, which the socket thread could not wait for); reconnection runs
on its own thread; `run_async` work runs on a small pool. Nothing of that ever calls a
listener: events wait on a queue until the caller's thread drains it with
`process_events` or `wait_for_event`, which is what keeps Tk single-threaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from client.core.accounts import Accounts
from client.core.bodies import attachment_body, check_style
from client.core.connection import Connection
from client.core.contacts import RoomRef, Target, chat_of, misused_room_id, room_number
from client.core.device_link import LINK_PUSHES, DeviceLinking
from client.core.directory import Directory
from client.core.downloads import Downloads
from client.core.event_types import (
    ConnectionChanged,
    ContactAdded,
    Event,
    ExportProgress,
    KeyTrusted,
    MembershipChanged,
    MessageReceived,
    MessageStatusChanged,
)
from client.core.events import EventHub, EventTimeout, Listener
from client.core.history_export import PAGE as EXPORT_PAGE
from client.core.history_export import ExportResult, collect, write_export
from client.core.identity_file import export_keys, import_keys
from client.core.keystore import KeyStore, server_id_for
from client.core.link import ServerLink
from client.core.models import Attachment, ChatKind, ChatMessage, Contact, Profile
from client.core.outgoing import Outgoing
from client.core.pins import ServerPins
from client.core.pushes import PushHandler
from client.core.reconnect import Reconnector
from client.core.servers import ServerList
from client.core.session import SessionSlot, SessionWiring
from client.core.transfers import Progress
from client.core.trust import safety_number_between
from common.crypto.certs import UserCertificate
from common.crypto.kem import SignedKemKey
from common.crypto.keys import KdfParams
from common.crypto.membership import Policy
from common.crypto.sender_chain import RotationPolicy
from common.errors import RequestError, UchatError
from common.protocol.message import Message

__all__ = ["ChatClient", "EventTimeout", "Target"]


def join_policy(value: str) -> Policy:
    try:
        return Policy(value)
    except ValueError:
        raise RequestError("bad_request", "policy is 'open' or 'approval'", "policy") from None


T = TypeVar("T")


class ChatClient:
    """One user's connection to one Uchat server; see docs/api.md.

    Keyword-only extras beyond the documented constructor: `ping_interval` (seconds
    between keep-alive PINGs; two silent intervals mean a dead peer), `reconnect_min`
    / `reconnect_max` (back-off bounds), `auto_reconnect`, `key_kdf` (the scrypt
    cost used when sealing a key file; tests and benchmarks lower it), and `servers`
    (other nodes of the same cluster: after a drop the reconnect walks host:port and
    then these in turn, the back-off growing only after a whole round failed).
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
        allow_hmac_md5: bool = False,
        rotation: RotationPolicy | None = None,
        servers: Sequence[tuple[str, int]] = (),
    ) -> None:
        #: host:port first, then `servers` (other nodes of the same cluster) in turn.
        self._servers = ServerList((host, port), servers)
        self.host = host
        self._rotation = rotation or RotationPolicy()
        self.allow_hmac_md5 = allow_hmac_md5
        self.port = port
        self.data_dir = Path(data_dir)
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self._keystore = KeyStore(self.data_dir, key_kdf)
        self._events = EventHub()
        self._slot = SessionSlot()
        emit = self._events.emit
        self._downloads = Downloads(slot=self._slot, keystore=self._keystore)
        self._link = ServerLink(
            self,
            pins=ServerPins(self._keystore.pins_path),
            expected_fingerprint=expected_fingerprint.lower() if expected_fingerprint else None,
            emit=emit,
            on_push=self._on_push,
            on_lost=self._on_lost,
            cluster=lambda: self._servers.addresses,
        )
        self._directory = Directory(slot=self._slot, request=self._link.request)
        self._reconnector = Reconnector(
            self._link,
            back_off=self,
            relogin=self._relogin,
            emit=emit,
            auto_reconnect=auto_reconnect,
            failover=self._next_server,
        )
        self._outgoing = Outgoing(
            slot=self._slot,
            emit=emit,
            remember=self._downloads.remember,
            attachment_body=self._attachment_body,
        )
        self._accounts = self._make_accounts()
        self._pushes = PushHandler(slot=self._slot, emit=emit, on_kicked=self._reconnector.kicked)
        self._linking = DeviceLinking(
            link=self._link, slot=self._slot, emit=emit, connect=self.connect
        )

    def _next_server(self) -> bool:
        """Reconnect thread: use the next cluster address; True after a whole round."""
        round_done = self._servers.advance()
        self.host, self.port = self._servers.current
        return round_done

    def _make_accounts(self) -> Accounts:
        """Login and what it opens, wired to the link, the outbox's resealing and events."""
        wiring = SessionWiring(
            request=self._link.request,
            start_request=self._link.start_request,
            rebuild=self._outgoing.rebuild_params,
            announce=self._announce,
            emit=self._events.emit,
            clock=lambda: int(time.time() * 1000),
            rotation=self._rotation,
        )
        return Accounts(
            link=self._link,
            keystore=self._keystore,
            slot=self._slot,
            reconnector=self._reconnector,
            wiring=wiring,
            connect=self.connect,
            resume_uploads=self._outgoing.resume_uploads,
        )

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

    # ------------------------------------------------------------------ state

    @property
    def server_fingerprint(self) -> str:
        """SHA-256 of the server certificate we are (or were last) connected to."""
        return self._link.server_fingerprint

    @property
    def connected(self) -> bool:
        return self._link.connected

    @property
    def username(self) -> str | None:
        session = self._slot.get()
        return session.username if session else None

    @property
    def profile(self) -> Profile | None:
        session = self._slot.get()
        return session.profile if session else None

    @property
    def max_attachment_size(self) -> int:
        """The largest attachment the server takes (bytes of ciphertext); 0 before login."""
        session = self._slot.get()
        return session.limits.max_attachment_size if session else 0

    @property
    def can_send(self) -> bool:
        """False when this machine lacks the private keys (a `key_missing` event said so)."""
        session = self._slot.get()
        return session is not None and session.identity is not None

    # ------------------------------------------------------------------ connection, accounts

    def connect(self) -> None:
        """TCP + handshake, checking the server pin (configured, else trust on first use)."""
        if self._link.connect():
            self._reconnector.allow()
            self._events.emit(ConnectionChanged("connected"))

    def register(self, username: str, password: str, email: str, sex: str, age: int) -> None:
        """Create keys and a CSR, register, and seal the keys under the password."""
        self._accounts.register(username, password, email, sex, age)

    def login(self, username: str, password: str) -> Profile:
        """Log in, open this account's local store, then receive undelivered messages."""
        self.connect()
        linked = self._linking.identity_for(username)
        if linked is not None:  # brought by `start_link`: sealed under this password now
            server_id = server_id_for(self._link.server_fingerprint)
            self._keystore.save(server_id, username, linked, password)
        session = self._accounts.login(username, password)
        if linked is not None:
            self._linking.forget_identity()
        self._reconnector.allow()
        return session.profile

    def logout(self) -> None:
        """Tell the server, forget the credentials and close the local store."""
        self._accounts.logout()

    def export_identity(self, path: Path | str, passphrase: str) -> Path:
        """Write this account's private keys, sealed under `passphrase`, for another computer."""
        _, identity = self._slot.require_sender()
        return export_keys(identity.keys, Path(path), passphrase, self._keystore.kdf_params)

    def import_identity(
        self, path: Path | str, passphrase: str, username: str, password: str
    ) -> None:
        """Before `login` on a new computer: keep the file's keys for `username` here.

        Connects first, because keys are kept per server. Login then checks them against
        the account's certificate (a mismatch is reported as `KeyMissing`).
        """
        self.connect()
        server_id = server_id_for(self._link.server_fingerprint)
        import_keys(self._keystore, server_id, username, Path(path), passphrase, password)

    def start_link(self, username: str) -> tuple[str, int]:
        """New computer, before login: a one-time code for `username` and its lifetime in
        seconds. Then `LinkJoined`, `LinkCompare` (answer with `confirm_link`) and
        `LinkFinished` or `LinkFailed`; after `LinkFinished`, `login` stores the keys."""
        return self._linking.start(username)

    def join_link(self, code: str) -> str:
        """Old computer, logged in with its keys: enter the new computer's code; returns
        the new computer's address. Then `LinkCompare`, then `LinkFinished`/`LinkFailed`."""
        return self._linking.join(code)

    def confirm_link(self, match: bool) -> None:
        """The user compared the six digits on both screens: True only if they are equal."""
        self._linking.confirm(match)

    def cancel_link(self) -> None:
        """Stop the current link, if any; the other computer is told."""
        self._linking.cancel()

    def close(self) -> None:
        """Disconnect for good: no reconnect, threads stopped, store closed."""
        if self._link.closed:
            return
        self._reconnector.stop()
        self._link.close()
        self._linking.stop()
        self._pushes.stop()
        self._slot.close()
        self._events.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ wiring callbacks

    def _on_push(self, conn: Connection, message: Message) -> None:
        """Socket thread; the push handler is built after the link that calls this."""
        if message.type in LINK_PUSHES:
            self._linking.on_push(message)
            return
        self._pushes.on_push(conn, message)

    def _on_lost(self) -> None:
        self._linking.connection_lost()
        self._reconnector.schedule()

    def _relogin(self, username: str, password: str) -> None:
        self._accounts.login(username, password)

    def _attachment_body(self, kind: str, attachment: Attachment) -> bytes:
        """Looked up in this module at each call: tests stand in a modified sender here."""
        return attachment_body(kind, attachment)

    def _announce(self, message: ChatMessage) -> None:
        self._downloads.remember(message)
        self._events.emit(MessageReceived(message))

    # ------------------------------------------------------------------ friends, rooms

    def search_users(self, query: str) -> list[dict[str, Any]]:
        return self._directory.search_users(query)

    def search_users_page(
        self, query: str, after: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a name search and the cursor for the next (None at the end)."""
        return self._directory.search_users_page(query, after)

    def add_friend(self, username: str) -> bool:
        """True when they had asked us first: this accepted, and we are friends now."""
        return self._directory.add_friend(username)

    def answer_friend_request(self, username: str, accept: bool | None) -> None:
        """accept True / False, or None to decide later (it comes back at next login)."""
        self._directory.answer_friend_request(username, accept)

    def delete_friend(self, username: str) -> None:
        self._directory.delete_friend(username)

    def pending_friend_requests(self) -> list[str]:
        return self._slot.require().contacts.requests()

    def refresh_contacts(self) -> list[Contact]:
        """Ask the server for the contact list again (CONTACT_LIST)."""
        self._directory.refresh()
        return self.contacts()

    def contacts(self) -> list[Contact]:
        """Friends and rooms with unread counts and drafts, newest activity first."""
        return self._directory.contacts()

    def create_room(self, name: str, policy: str = "open") -> Contact:
        """A new room, founded by our signed create event; `policy` "open" (anyone with
        the number joins, the original's feature) or "approval" (an admin approves)."""
        return self._directory.create_room(name, join_policy(policy))

    def join_room(self, room: RoomRef) -> Contact:
        """Join by room id (an int, as everywhere in this API) or the room's Contact."""
        contact = self._directory.join_room(room_number(room))
        self._events.emit(ContactAdded(contact))  # the server pushes this to creators only
        return contact

    def leave_room(self, room: RoomRef, successor: str | None = None) -> None:
        """Leave a room; its owner names a `successor` (a member) while others remain,
        else the request fails with `successor_needed` (see `room_successors`)."""
        self._directory.leave_room(room_number(room), successor)

    def room_members(self, room: RoomRef) -> list[dict[str, Any]]:
        """[{username, online, admin, owner}] of a room you are in: the signed log's members."""
        return self._directory.room_members(room_number(room))

    # ------------------------------------------------------------------ signed membership

    def verified_members(self, room: RoomRef) -> list[tuple[str, UserCertificate]]:
        """(username, pinned certificate) of every member the room's signed log proves.

        The seam for sending to a room: chains are distributed only to this list.
        See `RoomMembership.verified_members` for what it raises.
        """
        return self._slot.require().membership.verified_members(room_number(room))

    def room_admins(self, room: RoomRef) -> list[str]:
        verified = self._slot.require().membership.verified(room_number(room))
        return sorted(verified.admins) if verified is not None else []

    def membership_lines(self, room: RoomRef) -> list[MembershipChanged]:
        """Every verified membership change of a room, oldest first (conversation lines)."""
        return self._slot.require().membership.lines(room_number(room))

    def remove_member(self, room: RoomRef, username: str) -> None:
        """An admin's signed removal of `username`."""
        self._slot.require().membership.remove(room_number(room), username)

    def grant_admin(self, room: RoomRef, username: str) -> None:
        """An admin's signed grant: `username` becomes an admin too."""
        self._slot.require().membership.grant_admin(room_number(room), username)

    def transfer_ownership(self, room: RoomRef, username: str) -> None:
        """The owner's signed handover: `username`, a member, becomes owner and admin."""
        self._slot.require().membership.transfer_owner(room_number(room), username)

    def room_owner(self, room: RoomRef) -> str | None:
        """The owner the signed log proves; None while it does not verify."""
        verified = self._slot.require().membership.verified(room_number(room))
        return verified.owner if verified is not None else None

    def room_successors(self, room: RoomRef) -> list[str]:
        """Whom the owner may hand the room to, admins first (the leave dialog's list)."""
        verified = self._slot.require().membership.verified(room_number(room))
        return verified.successors() if verified is not None else []

    def join_requests(self, room: RoomRef) -> list[str]:
        """Who waits for approval to join a room you administer."""
        return self._slot.require().membership.join_requests(room_number(room))

    def approve_join(self, room: RoomRef, username: str) -> None:
        self._slot.require().membership.approve_join(room_number(room), username)

    def refuse_join(self, room: RoomRef, username: str) -> None:
        self._slot.require().membership.refuse_join(room_number(room), username)

    # ------------------------------------------------------------------ keys

    def safety_number(self, username: str) -> str:
        """Digits to compare with `username` in person; uses a changed key if one waits."""
        session = self._slot.require()
        return safety_number_between(session.certificate, session.certificates.newest(username))

    def fingerprint(self, username: str) -> str:
        """Certificate fingerprint of `username` (yourself included; a waiting new key wins)."""
        session = self._slot.require()
        if username == session.username:
            return session.certificate.fingerprint
        return session.certificates.newest(username).fingerprint

    def verified_kem_key(self, username: str) -> SignedKemKey | None:
        """`username`'s newest KEM key verified against their pinned identity key, or None
        (not published yet, or only keys the identity did not sign were served)."""
        session = self._slot.require()
        return session.peer_kem_keys.keys.get(session.certificates.certificate(username))

    def trust_new_key(self, username: str) -> None:
        """Accept `username`'s changed key, then open the messages held back for it."""
        session = self._slot.require()
        session.certificates.trust_new_key(username)
        if session.inbox is not None:
            with self._slot.lock:
                session.inbox.release(username)
        self._events.emit(KeyTrusted(username))

    def pending_key_changes(self) -> list[str]:
        """Friends whose changed key waits for `trust_new_key`, sorted (the one list of them)."""
        certificates = self._slot.require().certificates
        return sorted(name for name in self._friend_names() if certificates.changed_key(name))

    def _friend_names(self) -> list[str]:
        return [c.id for c in self._slot.require().contacts.all() if c.kind == "user"]

    def _chat(self, target: Target) -> tuple[ChatKind, str]:
        """`chat_of`, refusing a room id given as a str (it would name a user)."""
        if misused_room_id(self._slot.require().contacts, target):
            raise RequestError(
                "invalid_target", f"a room id is an int: pass {target}, not {target!r}", "target"
            )
        return chat_of(target)

    # ------------------------------------------------------------------ sending

    def send_text(
        self, target: Target, text: str, font_size: int = 12, color: str = "#000000"
    ) -> ChatMessage:
        """Seal, store (`sending`), queue, send. Returns the message with its status.

        If the connection is down the message stays queued (status `sending`) and goes
        out after the next login; a refusal raises `RequestError` (status `failed`).
        """
        return self._outgoing.send_text(target, text, font_size, color)

    def send_file(
        self, target: Target, path: Path | str, progress: Progress | None = None
    ) -> ChatMessage:
        """Encrypt, upload (resumable, interleaved with chat) and send a file message."""
        return self._outgoing.send_attachment(target, Path(path), "file", progress)

    def send_image(
        self, target: Target, path: Path | str, progress: Progress | None = None
    ) -> ChatMessage:
        """Like `send_file`, shown inline; a file that is not a safe image goes as a file."""
        return self._outgoing.send_image(target, Path(path), progress)

    def cancel_upload(self, message: ChatMessage | str) -> None:
        """Give up sending an attachment: its upload stops and the message is `failed`."""
        session = self._slot.require()
        message_id = message.message_id if isinstance(message, ChatMessage) else message
        stored = session.store.get_message(message_id)
        if stored is None or stored.attachment is None or stored.status != "sending":
            return
        attachment_id = stored.attachment.attachment_id
        with session.uploads_lock:
            running = attachment_id in session.active_uploads
            if running:
                session.transfers.cancel(attachment_id)
        if not running:  # waiting to resume after a reconnect: drop it now
            session.store.remove_upload(attachment_id)
            session.store.set_status(message_id, "failed")
            self._events.emit(MessageStatusChanged(message_id, "failed"))

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
        return self._downloads.download(attachment, dest_dir, progress)

    # ------------------------------------------------------------------ local history

    def history(
        self,
        target: Target,
        limit: int = 50,
        before: str | ChatMessage | tuple[int, int] | None = None,
    ) -> list[ChatMessage]:
        """Up to `limit` messages, oldest first, older than `before` (a message or its id)."""
        session = self._slot.require()
        chat_kind, chat_id = self._chat(target)
        cursor: tuple[int, int] | None
        if isinstance(before, ChatMessage):
            cursor = session.store.history_cursor(before.message_id)
        elif isinstance(before, str):
            cursor = session.store.history_cursor(before)
        else:
            cursor = before
        messages = session.store.history(chat_kind, chat_id, limit, cursor)
        self._downloads.remember_all(messages)
        return messages

    def search_history(
        self, text: str, limit: int = 100, target: Target | None = None
    ) -> list[ChatMessage]:
        """Local history search, newest first; `target` limits it to one conversation."""
        chat = self._chat(target) if target is not None else None
        messages = self._slot.require().store.search(text, limit, chat)
        self._downloads.remember_all(messages)
        return messages

    def mark_read(self, target: Target) -> None:
        """The chat was shown in a focused window: mark it read and, for a friend, seal a
        "read" receipt for what was unread (sent off the caller's thread)."""
        session = self._slot.require()
        chat_kind, chat_id = self._chat(target)
        unread = session.store.unread_ids(chat_kind, chat_id) if chat_kind == "user" else []
        session.store.mark_read(chat_kind, chat_id)
        if unread and session.receipts is not None:
            self._events.background(session.receipts.send, chat_id, "read", unread)

    def unread(self, target: Target) -> int:
        return self._slot.require().store.unread(*self._chat(target))

    def save_draft(self, target: Target, text: str) -> None:
        chat_kind, chat_id = self._chat(target)
        self._slot.require().store.save_draft(chat_kind, chat_id, text)

    def draft(self, target: Target) -> str:
        return self._slot.require().store.draft(*self._chat(target))

    def export_history(
        self, folder: Path | str, targets: Sequence[Target] | None = None
    ) -> ExportResult:
        """Write the chats (all when `targets` is None) to HTML and JSON in `folder`.

        Attachments not on this computer are downloaded first; progress arrives as
        `ExportProgress` events.
        """
        session = self._slot.require()
        known = {(c.kind, c.id): c for c in self.contacts()}
        chosen: list[Contact] = []
        for target in targets if targets is not None else list(known.values()):
            key = self._chat(target)
            chosen.append(known.get(key) or Contact(key[0], key[1], key[1]))

        def page(contact: Contact, before: tuple[int, int] | None) -> list[ChatMessage]:
            return session.store.history(contact.kind, contact.id, EXPORT_PAGE, before)

        def cursor(message: ChatMessage) -> tuple[int, int] | None:
            return session.store.history_cursor(message.message_id)

        def fetch(message: ChatMessage) -> Path | None:
            local = message.attachment.local_path if message.attachment else None
            if local is not None and Path(local).is_file():
                return Path(local)
            try:
                return self.download(message)
            except UchatError:
                return None

        def progress(done: int, total: int) -> None:
            self._events.emit(ExportProgress(done, total))

        chats = collect(chosen, page, cursor)
        return write_export(chats, Path(folder), session.username, fetch, progress)

    def save_style(self, target: Target, font_size: int, color: str) -> None:
        """Remember the font size and colour used in this chat (checked like a send)."""
        check_style(font_size, color)
        chat_kind, chat_id = self._chat(target)
        self._slot.require().store.save_style(chat_kind, chat_id, font_size, color)

    def style(self, target: Target) -> tuple[int, str] | None:
        """`(font_size, color)` last used in this chat, or None."""
        return self._slot.require().store.style(*self._chat(target))
