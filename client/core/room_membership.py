"""Signed room membership on the client: sign changes, keep and verify each room's log.

Why it exists: the member list a client seals to must be the one the room's members
signed, not whatever the server says (DESIGN.md 3b; the "ghost member" of issue 7).
`RoomMembership` signs create, join, leave, remove and admin grants with this user's
identity key; keeps each room's log in the local store; verifies it with
`common.crypto.room_log.replay_log` against pinned identity keys; emits one
`MembershipChanged` per verified change (a line in the conversation) and a
`MembershipAlarm` when the server shows something that does not verify: an invalid
log, a missing event (the hash chain breaks), a log shorter than one we verified, or a
server member list that is not the verified one.

`verified_members(room_id)` is the seam the sending side uses: the only names a
room's chains may be distributed to.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from client.core.event_types import (
    JoinRefused,
    JoinRequested,
    MembershipAlarm,
    MembershipAlarmReason,
    MembershipChanged,
)
from client.core.events import Emit
from client.core.store import LocalStore
from client.core.trust import CertificateBook, Identity, KeyChangedError
from common.crypto.certs import UserCertificate
from common.crypto.membership import (
    GENESIS,
    EventKind,
    MembershipEvent,
    Policy,
    RoomState,
    approve,
    sign_event,
)
from common.crypto.room_log import LegacyGenesis, VerifiedLog, is_legacy, replay_log
from common.errors import (
    ConnectionLost,
    MembershipError,
    RemoteProtocolError,
    RequestError,
    RequestTimeout,
    UchatError,
    ValidationError,
)
from common.protocol.opcodes import MessageType
from common.room_numbers import random_room_number
from common.validation import validate_room_name

log = logging.getLogger(__name__)

Request = Callable[[MessageType, dict[str, Any] | None], dict[str, Any]]
#: (username, certificate DER, its key-transparency proof): raises unless the log holds it.
CheckLogged = Callable[[str, bytes, Any], None]
Offered = dict[str, tuple[bytes, Any]]  # a log page's signers: certificate and proof

MAX_LOG_PAGES = 1_000  # 256 entries a page: far past any room's history
SIGN_ATTEMPTS = 4  # "log_moved": someone else's event landed first; sign on the new head
REJOIN_ATTEMPTS = 3  # automatic re-requests after an approval came too late
CHAIN_BREAK = "does not follow the previous event"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class VerifiedRoom:
    """What the log proves: the state, and whether it starts from a legacy genesis."""

    state: RoomState
    legacy: LegacyGenesis | None
    length: int

    @property
    def members(self) -> frozenset[str]:
        return self.state.members

    @property
    def admins(self) -> frozenset[str]:
        return self.state.admins

    @property
    def owner(self) -> str:
        return self.state.owner

    def successors(self) -> list[str]:
        """Whom the owner can hand the room to: the other admins first, then members."""
        others = self.state.members - {self.state.owner}
        return sorted(others, key=lambda name: (name not in self.state.admins, name))


def change_of(seq: int, data: bytes, room_id: int) -> MembershipChanged:
    """The conversation line of one stored entry."""
    if is_legacy(data):
        legacy = LegacyGenesis.from_wire(data)
        members = ", ".join(legacy.members)
        return MembershipChanged(room_id, "legacy", legacy.owner, members, legacy.time_ms, seq)
    event = MembershipEvent.from_wire(data)
    return MembershipChanged(
        room_id, event.kind.value, event.actor, event.subject, event.time_ms, seq, event.approver
    )


class RoomMembership:
    """One session's view of its rooms' signed membership; thread-safe."""

    def __init__(
        self,
        *,
        username: str,
        identity: Identity | None,
        certificates: CertificateBook,
        store: LocalStore,
        request: Request,
        emit: Emit,
        check_logged: CheckLogged,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._username = username
        self._identity = identity
        self._certificates = certificates
        self._store = store
        self._request = request
        self._emit = emit
        self._check_logged = check_logged
        self._clock = clock
        self._lock = threading.RLock()
        self._verified: dict[int, VerifiedLog] = {}
        self._alarms: set[tuple[int, str, tuple[str, ...]]] = set()
        self._pending_joins: dict[tuple[int, str], bytes] = {}
        self._rejoins: dict[int, int] = {}
        self._broken: set[int] = set()  # rooms whose newest log did not verify

    # ------------------------------------------------------------------ signing

    def _key(self) -> Any:
        if self._identity is None:
            raise RequestError(
                "key_missing",
                "this computer does not hold your private keys, so it cannot sign group changes",
            )
        return self._identity.keys.identity

    def _sign(
        self,
        room_id: int,
        kind: EventKind,
        subject: str,
        prev: bytes,
        name: str = "",
        policy: Policy | None = None,
    ) -> MembershipEvent:
        return sign_event(
            self._key(),
            room=str(room_id),
            kind=kind,
            actor=self._username,
            subject=subject,
            time_ms=self._clock(),
            prev=prev,
            name=name,
            policy=policy,
        )

    def create(self, name: str, policy: Policy) -> dict[str, Any]:
        """CREATE_ROOM with a signed create event on a freshly drawn room number."""
        try:
            name = validate_room_name(name)
        except ValidationError as exc:
            raise RequestError(exc.code, exc.message, exc.field) from None
        self._key()
        for _ in range(SIGN_ATTEMPTS * 2):
            number = random_room_number()
            event = self._sign(number, EventKind.CREATE, self._username, GENESIS, name, policy)
            try:
                reply = self._request(MessageType.CREATE_ROOM, {"event": event.to_wire()})
            except RequestError as exc:
                if exc.code == "room_number_taken":
                    continue
                raise
            self._append_own(number, 0, event)
            return reply
        raise RequestError("room_number_taken", "no free room number; try again")

    def join(self, room_id: int) -> dict[str, Any]:
        """Sign a join on the room's head; JOIN_ROOM. `pending` in the reply: approval."""
        self._key()
        for _ in range(SIGN_ATTEMPTS):
            head = self._request(MessageType.ROOM_HEAD, {"room_id": room_id})
            prev = head.get("head")
            if not isinstance(prev, bytes):
                raise RemoteProtocolError("ROOM_HEAD reply lacks head")
            event = self._sign(room_id, EventKind.JOIN, self._username, prev)
            try:
                reply = self._request(
                    MessageType.JOIN_ROOM, {"room_id": room_id, "event": event.to_wire()}
                )
            except RequestError as exc:
                if exc.code == "log_moved":
                    continue
                raise
            if not reply.get("pending"):
                self.sync(room_id)
            return reply
        raise RequestError("log_moved", "the group changed too fast; try again")

    def leave(self, room_id: int) -> None:
        self._change(room_id, EventKind.LEAVE, self._username, MessageType.LEAVE_ROOM)

    def remove(self, room_id: int, username: str) -> None:
        self._change(room_id, EventKind.REMOVE, username, MessageType.ROOM_ADMIN)

    def grant_admin(self, room_id: int, username: str) -> None:
        self._change(room_id, EventKind.GRANT_ADMIN, username, MessageType.ROOM_ADMIN)

    def transfer_owner(self, room_id: int, username: str) -> None:
        """The owner's signed handover: `username` becomes owner (and admin)."""
        self._change(room_id, EventKind.TRANSFER_OWNER, username, MessageType.ROOM_ADMIN)

    def leave_handing_over(self, room_id: int, successor: str | None) -> None:
        """Leave; an owner with others still in the room first hands it to `successor`.

        Two events, so each verifies on its own: the handover (refused unless the
        successor is a member), then an ordinary member's leave.
        """
        verified = self.sync(room_id)
        alone = verified is not None and verified.members == {self._username}
        if verified is not None and verified.state.owner == self._username and not alone:
            if not successor:
                raise RequestError("successor_needed", "choose who owns the group before you leave")
            self.transfer_owner(room_id, successor)
        self.leave(room_id)

    def _change(self, room_id: int, kind: EventKind, subject: str, opcode: MessageType) -> None:
        """Sign `kind` on the verified head, send it, and keep it: our own event."""
        self._key()
        for _ in range(SIGN_ATTEMPTS):
            verified = self.sync(room_id)
            if verified is None:
                raise RequestError(
                    "membership_unverified", "this group's membership does not verify"
                )
            event = self._sign(room_id, kind, subject, verified.state.head)
            try:
                reply = self._request(opcode, {"room_id": room_id, "event": event.to_wire()})
            except RequestError as exc:
                if exc.code == "log_moved":
                    continue
                raise
            seq = reply.get("seq")
            if type(seq) is int:
                self._append_own(room_id, seq - 1, event)
            return
        raise RequestError("log_moved", "the group changed too fast; try again")

    def _append_own(self, room_id: int, stored: int, event: MembershipEvent) -> None:
        """Keep an event we signed and the server accepted at `stored + 1`, if it chains."""
        with self._lock:
            entries = self._store.room_log(room_id)
            if len(entries) != stored:
                return  # the next sync fetches what lies between
            try:
                verified = self._replay(room_id, [*entries, event.to_wire()], {})
            except MembershipError:
                return
            self._store.add_room_log(room_id, stored + 1, [event.to_wire()])
            self._verified[room_id] = verified
        self._emit(change_of(stored + 1, event.to_wire(), room_id))

    # ------------------------------------------------------------------ join requests

    def join_requests(self, room_id: int) -> list[str]:
        """Who waits for an admin's approval to join (admins only)."""
        reply = self._request(MessageType.ROOM_JOIN_REQUESTS, {"room_id": room_id})
        items = reply.get("requests")
        names: list[str] = []
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                name, entry = item.get("username"), item.get("entry")
                if isinstance(name, str) and isinstance(entry, bytes):
                    self._pending_joins[(room_id, name)] = entry
                    names.append(name)
        return names

    def approve_join(self, room_id: int, username: str) -> None:
        """Countersign the joiner's own signed join; it enters the log as any join."""
        key = self._key()
        entry = self._pending_joins.get((room_id, username))
        if entry is None:
            self.join_requests(room_id)
            entry = self._pending_joins.get((room_id, username))
        if entry is None:
            raise RequestError("no_request", f"{username} is not waiting to join", "username")
        event = MembershipEvent.from_wire(entry)
        if event.actor != username or event.kind is not EventKind.JOIN:
            raise RequestError("bad_event", f"the request is not a join signed by {username}")
        countersigned = approve(event, self._username, key)
        params = {"room_id": room_id, "username": username, "decision": "approve"}
        reply = self._request(MessageType.RESOLVE_JOIN, params | {"event": countersigned.to_wire()})
        self._pending_joins.pop((room_id, username), None)
        seq = reply.get("seq")
        if type(seq) is int:
            self._append_own(room_id, seq - 1, countersigned)

    def refuse_join(self, room_id: int, username: str) -> None:
        params = {"room_id": room_id, "username": username, "decision": "refuse"}
        self._request(MessageType.RESOLVE_JOIN, params)
        self._pending_joins.pop((room_id, username), None)

    # ------------------------------------------------------------------ verifying

    def _identity_lookup(self, offered: Offered) -> Callable[[str], bytes | None]:
        """Pinned identity keys: the server's offered certificates are checked against the
        key-transparency log, the CA and our pins before their keys count."""
        cache: dict[str, bytes | None] = {}

        def identity_of(username: str) -> bytes | None:
            if username not in cache:
                cache[username] = self._pinned_identity(username, offered.get(username))
            return cache[username]

        return identity_of

    def _pinned_identity(self, username: str, offer: tuple[bytes, Any] | None) -> bytes | None:
        if self._identity is not None and username == self._username:
            return self._identity.certificate.identity_public
        try:
            if offer is not None:
                self._check_logged(username, offer[0], offer[1])
                certificate = self._certificates.verify(username, offer[0])
            else:
                certificate = self._certificates.certificate(username)
        except KeyChangedError:
            return None  # an unconfirmed new key signs nothing we accept
        except (RequestError, UchatError, ValueError):
            return None
        return certificate.identity_public

    def _replay(self, room_id: int, entries: Sequence[bytes], offered: Offered) -> VerifiedLog:
        """Extend the cached verified state if it covers a prefix, else replay everything."""
        lookup = self._identity_lookup(offered)
        cached = self._verified.get(room_id)
        if cached is not None and 0 < cached.state.length <= len(entries):
            state = cached.state
            events = list(cached.events)
            for data in entries[state.length :]:
                event = MembershipEvent.from_wire(data)
                state = state.apply(event, lookup)
                events.append(event)
            verified = VerifiedLog(state, cached.legacy, tuple(events))
        else:
            verified = replay_log(entries, lookup)
        if verified.state.room != str(room_id):
            raise MembershipError("the log belongs to another room")
        return verified

    def _fetch(self, room_id: int, after: int) -> tuple[list[bytes], Offered, int]:
        """Every entry past `after`, the signers' certificates, and the server's length."""
        entries: list[bytes] = []
        offered: Offered = {}
        length = after
        for _ in range(MAX_LOG_PAGES):
            reply = self._request(MessageType.ROOM_LOG, {"room_id": room_id, "after": after})
            page, served = reply.get("entries"), reply.get("length")
            certificates = reply.get("certificates")
            if not isinstance(page, list) or type(served) is not int:
                raise RemoteProtocolError("malformed ROOM_LOG reply")
            length = served
            if not all(isinstance(item, bytes) for item in page):
                raise RemoteProtocolError("malformed ROOM_LOG entry")
            for name, item in (certificates if isinstance(certificates, dict) else {}).items():
                der = item.get("certificate") if isinstance(item, dict) else None
                if isinstance(name, str) and isinstance(der, bytes):
                    offered[name] = (der, item.get("transparency"))
            entries.extend(page)
            after += len(page)
            if not page or after >= length:
                break
        return entries, offered, length

    def sync(self, room_id: int) -> VerifiedRoom | None:
        """Fetch what is new in the room's log and verify it; None if it does not verify.

        What verified is kept and announced; what does not raises a `MembershipAlarm`
        and is not kept, so the verified list stays the last one members signed.
        """
        with self._lock:
            stored = self._store.room_log(room_id)
            try:
                fetched, offered, length = self._fetch(room_id, len(stored))
            except RequestError as exc:
                if exc.code != "not_member" or not stored:
                    raise
                fetched, offered, length = [], {}, len(stored)  # we left: keep what we had
            if length < len(stored):
                self._alarm(
                    room_id,
                    "rollback",
                    f"the server shows {length} membership events; we verified {len(stored)}",
                )
                fetched = []
            try:
                verified = self._replay(room_id, [*stored, *fetched], offered)
            except MembershipError as exc:
                reason: MembershipAlarmReason = "gap" if CHAIN_BREAK in str(exc) else "invalid_log"
                self._alarm(room_id, reason, str(exc))
                self._broken.add(room_id)
                return self._stored_state(room_id, stored)
            if fetched:
                self._store.add_room_log(room_id, len(stored) + 1, fetched)
            self._verified[room_id] = verified
            if length >= len(stored):
                self._broken.discard(room_id)
            else:
                self._broken.add(room_id)
        for offset, data in enumerate(fetched):
            self._emit(change_of(len(stored) + 1 + offset, data, room_id))
        return VerifiedRoom(verified.state, verified.legacy, verified.state.length)

    def _stored_state(self, room_id: int, stored: list[bytes]) -> VerifiedRoom | None:
        """What our own stored log (verified when stored) says, if anything."""
        if not stored:
            return None
        try:
            verified = self._replay(room_id, stored, {})
        except MembershipError:
            return None
        self._verified[room_id] = verified
        return VerifiedRoom(verified.state, verified.legacy, verified.state.length)

    def verified(self, room_id: int) -> VerifiedRoom | None:
        """The verified state, from memory when this session already checked the log."""
        with self._lock:
            cached = self._verified.get(room_id)
        if cached is not None:
            return VerifiedRoom(cached.state, cached.legacy, cached.state.length)
        return self.sync(room_id)

    def compare(
        self, room_id: int, server_names: Iterable[str], source: str, length: int | None = None
    ) -> bool:
        """Alarm (once) if the server's member list is not the verified one; True if equal.

        `length` is the log length the server says its list follows from: a list from
        past our log makes us fetch the log first, so a change in flight is no alarm.
        """
        verified = self.verified(room_id)
        if verified is not None and length is not None and length > verified.length:
            verified = self.sync(room_id)
        if verified is None:
            return False
        if length is not None and length > verified.length:
            self._alarm(
                room_id,
                "gap",
                f"{source} follows {length} membership events, the log served only "
                f"{verified.length}",
            )
            return False
        listed = set(server_names)
        differing = tuple(sorted(listed ^ verified.members))
        if not differing:
            return True
        extra = sorted(listed - verified.members)
        missing = sorted(verified.members - listed)
        detail = f"{source} lists {', '.join(extra) or 'nobody'} beyond the signed members"
        if missing:
            detail += f" and leaves out {', '.join(missing)}"
        self._alarm(room_id, "server_list_differs", detail, differing)
        return False

    def check_server_list(self, room_id: int) -> list[dict[str, Any]]:
        """ROOM_MEMBERS, held against the verified list; returns the server's entries."""
        reply = self._request(MessageType.ROOM_MEMBERS, {"room_id": room_id})
        members = reply.get("members")
        served = [
            m
            for m in (members if isinstance(members, list) else [])
            if isinstance(m, dict) and isinstance(m.get("username"), str)
        ]
        length = reply.get("length")
        self.compare(
            room_id,
            [m["username"] for m in served],
            "the server's member list",
            length if type(length) is int else None,
        )
        return served

    def _alarm(
        self,
        room_id: int,
        reason: MembershipAlarmReason,
        detail: str,
        names: tuple[str, ...] = (),
    ) -> None:
        key = (room_id, reason, names)
        with self._lock:
            if key in self._alarms:
                return
            self._alarms.add(key)
        log.warning("room %d membership alarm: %s", room_id, reason)
        self._emit(MembershipAlarm(room_id, reason, detail, names))

    # ------------------------------------------------------------------ the seam

    def member_names(self, room_id: int, *, fetch: bool = False) -> frozenset[str]:
        """The verified member names, from memory unless `fetch` (then the log is read
        again first); raises `RequestError("membership_unverified")` while the room's
        newest log does not verify. What the sender's chain is distributed to."""
        room = self.sync(room_id) if fetch else self.verified(room_id)
        with self._lock:
            broken = room_id in self._broken
        if room is None or broken:
            raise RequestError("membership_unverified", "this group's membership does not verify")
        return room.members

    def verified_members(self, room_id: int) -> list[tuple[str, UserCertificate]]:
        """The room's members as its signed log proves them, with pinned certificates.

        The one list a room's sender chains may be distributed to (and messages sealed
        for): names come from the verified log only, never from the server's member
        list; each certificate is the pinned one (CA-checked, key-transparency proved
        when fetched). A member the server lists but the log does not is left out and
        raises `MembershipAlarm(server_list_differs)`. Raises `RequestError
        ("membership_unverified")` when the newest log does not verify (an invalid
        event, a gap, a rollback), and `KeyChangedError` when a member's key changed and
        was not confirmed yet.
        """
        verified = self.sync(room_id)
        if verified is None or room_id in self._broken:
            raise RequestError("membership_unverified", "this group's membership does not verify")
        self.check_server_list(room_id)
        served = self._certificates.room_certificates(room_id, refresh=True)
        result: list[tuple[str, UserCertificate]] = []
        for name in sorted(verified.members):
            certificate = served.get(name) or self._certificates.certificate(name)
            result.append((name, certificate))
        return result

    def catch_up(self, room_ids: Iterable[int]) -> None:
        """After a login or reconnect: fetch what each room's log gained meanwhile (one
        line per change, pushes were lost while away) and hold each server list to it."""
        for room_id in room_ids:
            try:
                self.sync(room_id)
                self.check_server_list(room_id)
            except (RequestError, ConnectionLost, RequestTimeout, RemoteProtocolError) as exc:
                log.info("room %d membership not caught up: %s", room_id, exc)

    def lines(self, room_id: int) -> list[MembershipChanged]:
        """Every stored (verified) membership change of the room, oldest first."""
        entries = self._store.room_log(room_id)
        return [change_of(seq, data, room_id) for seq, data in enumerate(entries, start=1)]

    # ------------------------------------------------------------------ pushes

    def on_member_event(self, room_id: int, params: dict[str, Any]) -> None:
        """ROOM_MEMBER_EVENT: keep the relayed entry if it is the next one, else sync;
        then hold the server's member list against the verified one."""
        seq, entry = params.get("seq"), params.get("entry")
        taken = False
        if type(seq) is int and isinstance(entry, bytes):
            with self._lock:
                stored = self._store.room_log(room_id)
                if seq <= len(stored):
                    return  # already have it (our own event)
                if seq == len(stored) + 1 and stored:
                    taken = self._take_next(room_id, stored, entry)
        try:
            if not taken:
                self.sync(room_id)
            self.check_server_list(room_id)
        except (RequestError, ConnectionLost, RequestTimeout) as exc:
            log.info("room %d membership not checked: %s", room_id, exc)  # e.g. we left

    def _take_next(self, room_id: int, stored: list[bytes], entry: bytes) -> bool:
        """Apply a pushed entry that follows our stored log; False if it does not verify."""
        try:
            verified = self._replay(room_id, [*stored, entry], {})
        except MembershipError:
            return False  # sync fetches the log and raises the alarm if it stays wrong
        self._store.add_room_log(room_id, len(stored) + 1, [entry])
        self._verified[room_id] = verified
        self._emit(change_of(len(stored) + 1, entry, room_id))
        return True

    def on_join_request(self, params: dict[str, Any]) -> None:
        room_id, username, entry = (
            params.get("room_id"),
            params.get("username"),
            params.get("entry"),
        )
        if type(room_id) is int and isinstance(username, str) and isinstance(entry, bytes):
            self._pending_joins[(room_id, username)] = entry
            self._emit(JoinRequested(room_id, username))

    def on_join_refused(self, params: dict[str, Any]) -> None:
        room_id, reason = params.get("room_id"), params.get("reason")
        if type(room_id) is not int or not isinstance(reason, str):
            return
        if reason == "log_moved" and self._rejoins.get(room_id, 0) < REJOIN_ATTEMPTS:
            self._rejoins[room_id] = self._rejoins.get(room_id, 0) + 1
            try:
                self.join(room_id)  # sign on the new head: the admins are asked again
                return
            except (RequestError, ConnectionLost, RequestTimeout) as exc:
                log.info("join request for room %d not renewed: %s", room_id, exc)
        self._emit(JoinRefused(room_id, reason))
