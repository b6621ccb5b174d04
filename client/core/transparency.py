"""Key transparency on the client: check every key against the server's public log.

Why it exists: the server is the CA, so on first contact it could hand us a key for a
friend that is not theirs. Every certificate reply carries an inclusion proof against
a signed tree head; we check it, keep the newest head we verified (in the local store,
so a restart cannot be rolled back), and accept a new head only with a consistency
proof that it extends the one held. We also watch our own name in the log
(monitoring) and compare heads with friends inside sealed messages (gossip), so a
server showing different logs to different people is caught when two of them talk.

A failure is loud: a `transparency_alarm` event for the GUI, and every later key
check refuses with a `TransparencyError` (chat blocked) until the user logs in again
against a server whose log is consistent with what we hold.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Collection
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from client.core.event_types import TransparencyAlarm
from client.core.events import Emit
from common.crypto import merkle
from common.crypto.kem import SignedKemKey
from common.crypto.merkle import LogEntry, ProofError, TreeHead
from common.errors import CertificateError, EndToEndError, ProtocolError, RequestError
from common.protocol import codec
from common.protocol.opcodes import MessageType

log = logging.getLogger(__name__)

Request = Callable[[MessageType, dict[str, Any] | None], dict[str, Any]]
IsMine = Callable[[str, bytes], bool]  # (kind, payload) -> this computer made it

USER_ENTRIES_PAGE = 256  # the server's KT_USER_ENTRIES page (server.transparency)


class TransparencyError(RequestError):
    """A key or tree head failed a transparency check; chat is blocked."""


class HeadStore(Protocol):
    def transparency_head(self) -> tuple[int, bytes, int, bytes] | None: ...

    def save_transparency_head(
        self, size: int, root: bytes, timestamp: int, sig: bytes
    ) -> None: ...


class KeyTransparency:
    """One session's view of one server's log; thread-safe."""

    def __init__(
        self, *, ca_public: bytes, store: HeadStore, request: Request, alarm: Emit
    ) -> None:
        self._ca_public = ca_public
        self._store = store
        self._request = request
        self._alarm = alarm
        self._lock = threading.RLock()
        self._broken: str | None = None
        self._monitoring = False
        stored = store.transparency_head()
        self._held: TreeHead | None = None if stored is None else TreeHead(*stored)

    # -- state ---------------------------------------------------------------------------

    @property
    def held(self) -> TreeHead | None:
        with self._lock:
            return self._held

    @property
    def broken(self) -> str | None:
        """Why the log was refused (an i18n reason), or None while it checks out."""
        with self._lock:
            return self._broken

    def _refuse(self, reason: str, username: str = "") -> TransparencyError:
        with self._lock:
            first = self._broken is None
            self._broken = self._broken or reason
        if first or reason in ("split_view", "not_logged"):
            log.warning("key transparency alarm: %s %s", reason, username)
            self._alarm(TransparencyAlarm(reason, username))
        return _blocked(reason, username)

    def claim_monitoring(self) -> bool:
        """True once: the caller starts the periodic monitor for this session."""
        with self._lock:
            first, self._monitoring = not self._monitoring, True
            return first

    def check_usable(self) -> None:
        """Raise TransparencyError once the log was refused: nothing may be sealed."""
        self._check_not_broken()

    def _check_not_broken(self) -> None:
        reason = self.broken
        if reason is not None:
            raise _blocked(reason, "")

    # -- heads ---------------------------------------------------------------------------

    def accept_head(self, raw: Any) -> TreeHead:
        """Verify a head from the server and make it the held one if it extends ours."""
        self._check_not_broken()
        try:
            head = TreeHead.from_wire(raw)
            merkle.verify_tree_head(head, self._ca_public)
        except ProofError:
            raise self._refuse("not_extension") from None
        with self._lock:
            held = self._held
        if held is not None:
            if head.size < held.size:
                raise self._refuse("rolled_back")
            self._check_extends(held, head, "not_extension")
        self._adopt(head)
        return head

    def _check_extends(self, old: TreeHead, new: TreeHead, reason: str, who: str = "") -> None:
        """Ask the server for a consistency proof from `old` to `new` and verify it."""
        if old.size == new.size:
            if old.root != new.root:
                raise self._refuse(reason, who)
            return
        if old.size == 0:
            return
        try:
            reply = self._request(
                MessageType.KT_CONSISTENCY, {"old_size": old.size, "new_size": new.size}
            )
        except RequestError as exc:
            if exc.code == "unknown_tree_size":
                raise self._refuse("rolled_back" if not who else reason, who) from None
            raise
        try:
            merkle.verify_consistency(old.size, new.size, old.root, new.root, _hashes(reply))
        except ProofError:
            raise self._refuse(reason, who) from None

    def _adopt(self, head: TreeHead) -> None:
        with self._lock:
            if self._held is not None and self._held.size >= head.size:
                return
            self._held = head
            self._store.save_transparency_head(head.size, head.root, head.timestamp, head.signature)

    def refresh(self) -> TreeHead:
        """Fetch the newest head (at login and periodically) and check it extends ours."""
        reply = self._request(MessageType.KT_TREE_HEAD, {})
        return self.accept_head(reply.get("head"))

    # -- keys ----------------------------------------------------------------------------

    def check_certificate(self, username: str, der: bytes, transparency: Any) -> TreeHead:
        """Refuse `der` unless the log holds it (proof against a head that extends ours);
        return the head, against which the reply's other keys are proved."""
        return self.check_key("certificate", username, der, transparency)

    def check_key(self, kind: str, username: str, payload: bytes, transparency: Any) -> TreeHead:
        """A `{head, position, proof}` for one key of `kind`; returns the accepted head."""
        if not isinstance(transparency, dict):
            raise self._refuse("not_logged", username)
        head = self.accept_head(transparency.get("head"))
        self.check_entry(kind, username, payload, transparency, head)
        return head

    def check_member(self, username: str, der: bytes, proved: Any, head: TreeHead) -> None:
        """One certificate's `{position, proof}` against an already accepted head."""
        self.check_entry("certificate", username, der, proved, head)

    def check_entry(
        self, kind: str, username: str, payload: bytes, proved: Any, head: TreeHead
    ) -> None:
        """Any key (`kind` "certificate" or "kem_key") against an accepted head."""
        self._check_not_broken()
        position = proved.get("position") if isinstance(proved, dict) else None
        try:
            if type(position) is not int or position < 0:
                raise ProofError("no log entry")
            leaf = LogEntry(kind, username, payload).leaf_hash
            merkle.verify_inclusion(leaf, position, head.size, _hashes(proved), head.root)
        except ProofError:
            raise self._refuse("not_logged", username) from None

    # -- monitoring ------------------------------------------------------------------------

    def monitor(self, username: str, is_mine: IsMine) -> int:
        """Check every entry under our own name; one we did not make raises the alarm.

        Returns how many entries were checked. The alarm does not block chat (the
        server, not a friend, lied); the user is told to compare safety numbers.
        Entries come in pages (`KT_USER_ENTRIES {after}`), each proved under its
        reply's head.
        """
        checked = foreign = 0
        after = -1
        while True:
            reply = self._request(MessageType.KT_USER_ENTRIES, {"after": after})
            head = self.accept_head(reply.get("head"))
            entries = reply.get("entries")
            if not isinstance(entries, list):
                raise self._refuse("not_extension")
            for entry in entries:
                position = self._check_own_entry(username, entry, head)
                if position <= after:
                    raise self._refuse("not_extension")  # pages must move forward
                after = position
                if not is_mine(entry["kind"], entry["payload"]):
                    foreign += 1
            checked += len(entries)
            if len(entries) < USER_ENTRIES_PAGE:
                break
        if foreign:
            log.warning("key transparency alarm: %d keys under our name are not ours", foreign)
            self._alarm(TransparencyAlarm("foreign_key", username))
        return checked

    def _check_own_entry(self, username: str, entry: Any, head: TreeHead) -> int:
        """Verify one monitoring entry's proof; return its position."""
        if not isinstance(entry, dict):
            raise self._refuse("not_extension")
        kind, payload, position = entry.get("kind"), entry.get("payload"), entry.get("position")
        if not isinstance(kind, str) or not isinstance(payload, bytes):
            raise self._refuse("not_extension")
        try:
            leaf = LogEntry(kind, username, payload).leaf_hash
            if type(position) is not int:
                raise ProofError("no position")
            merkle.verify_inclusion(leaf, position, head.size, _hashes(entry), head.root)
        except (ProofError, ValueError):
            raise self._refuse("not_extension") from None
        return position

    # -- gossip ----------------------------------------------------------------------------

    def gossip_head(self) -> dict[str, object] | None:
        """The head to put inside sealed messages to friends."""
        held = self.held
        return None if held is None else held.to_wire()

    def check_gossip(self, friend: str, raw: Any) -> None:
        """A friend reported `raw`: our log and theirs must be one log (no split view)."""
        try:
            theirs = TreeHead.from_wire(raw)
            merkle.verify_tree_head(theirs, self._ca_public)
        except ProofError:
            log.info("ignoring a malformed tree head from %s", friend)
            return  # anyone can put junk in a body; only signed heads count
        held = self.held
        if held is None:
            return
        older, newer = (theirs, held) if theirs.size <= held.size else (held, theirs)
        self._check_extends(older, newer, "split_view", friend)
        if newer is theirs:
            self._adopt(theirs)


def _hashes(reply: Any) -> list[bytes]:
    """A reply's proof: packed (the hashes concatenated) or, from older servers, a list."""
    proof = reply.get("proof") if isinstance(reply, dict) else None
    if isinstance(proof, bytes):
        return merkle.unpack_proof(proof)
    if not isinstance(proof, list) or not all(isinstance(p, bytes) for p in proof):
        raise ProofError("malformed proof")
    return list(proof)


_CODES = {
    "not_logged": "key_not_logged",
    "rolled_back": "unknown_tree_size",
    "not_extension": "log_inconsistent",
    "split_view": "log_inconsistent",
}


def _blocked(reason: str, username: str) -> TransparencyError:
    code = _CODES.get(reason, "log_inconsistent")
    who = f" for {username}" if username else ""
    return TransparencyError(
        code, f"key transparency check failed ({reason}){who}; chat is blocked", None
    )


# -- what the rest of the client calls --------------------------------------------------


def verify_standalone(ca_public: bytes, username: str, der: bytes, transparency: Any) -> TreeHead:
    """Check a certificate's proof with no head held yet (the registration reply)."""
    try:
        if not isinstance(transparency, dict):
            raise ProofError("no proof")
        head = TreeHead.from_wire(transparency.get("head"))
        merkle.verify_tree_head(head, ca_public)
        position = transparency.get("position")
        if type(position) is not int or position < 0:
            raise ProofError("no log entry")
        leaf = LogEntry("certificate", username, der).leaf_hash
        merkle.verify_inclusion(leaf, position, head.size, _hashes(transparency), head.root)
    except ProofError as exc:
        raise CertificateError(
            f"the server did not put your key in its public log: {exc}"
        ) from None
    return head


def ca_public_key(ca_der: bytes) -> bytes:
    """The raw Ed25519 key of the pinned server CA (it signs the tree heads)."""
    public = x509.load_der_x509_certificate(ca_der).public_key()
    if not isinstance(public, Ed25519PublicKey):
        raise CertificateError("the server CA key is not Ed25519")
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def own_key_checker(
    identity_public: bytes, made_kem_keys: Callable[[], Collection[bytes]] | None = None
) -> IsMine:
    """`is_mine` for one monitoring pass over our entries, oldest first.

    A certificate is ours if it certifies our identity key. A signed KEM key is ours
    if our identity key signed it and it is newer than every KEM key before it under
    our name. The server cannot sign with our identity key, so such a key was made by
    a computer holding it: this one, or one the account was linked or moved to
    (device link, identity file), which makes and rotates its own KEM keys. What the
    server *can* do with our signature is serve one of our old keys again as a new
    entry (its private half may be gone, or stolen): the server refuses a key that is
    not newer than the current one, so a log that goes back in time is not ours.
    `made_kem_keys()` (the ids of every KEM key made here) only tells, in the log,
    which keys came from another of our computers. Kinds this client cannot check
    count as not ours, so they raise the alarm.
    """
    newest = -1
    made: Collection[bytes] | None = None

    def is_mine(kind: str, payload: bytes) -> bool:
        nonlocal newest, made
        if kind == "kem_key":
            signed = _own_kem_key(payload, identity_public)
            if signed is None or signed.created_ms <= newest:
                return False
            newest = signed.created_ms
            if made_kem_keys is not None:
                made = made_kem_keys() if made is None else made
                if signed.key_id not in made:
                    log.info(
                        "KEM key %s was made on another computer of this account",
                        signed.key_id.hex()[:16],
                    )
            return True
        if kind != "certificate":
            return False
        try:
            public = x509.load_der_x509_certificate(payload).public_key()
        except ValueError:
            return False
        if not isinstance(public, Ed25519PublicKey):
            return False
        return public.public_bytes(Encoding.Raw, PublicFormat.Raw) == identity_public

    return is_mine


def _own_kem_key(payload: bytes, identity_public: bytes) -> SignedKemKey | None:
    """The signed KEM key in `payload` if our identity key signed it, else None."""
    try:
        signed = SignedKemKey.from_bytes(payload)
        signed.verify(identity_public)
    except EndToEndError:
        return None
    return signed


GOSSIP_FIELD = "tree_head"
_DICT_HEADER = struct.Struct(">BI")
_HEAD_KEY = codec.encode(GOSSIP_FIELD)


def with_tree_head(body: bytes, head: dict[str, object] | None) -> bytes:
    """A sealed body (codec dict) with our newest tree head added for the recipient.

    Older clients ignore fields they do not know, so this stays compatible.
    """
    if head is None:
        return body
    if len(body) < _DICT_HEADER.size:
        raise TypeError("a sealed body is a codec dict")
    tag, length = _DICT_HEADER.unpack_from(body)
    if tag != codec.DICT or length != len(body) - _DICT_HEADER.size:
        raise TypeError("a sealed body is a codec dict")
    if _HEAD_KEY in body:  # may already hold one: the long way replaces it
        value = codec.decode(body)
        return codec.encode({**value, GOSSIP_FIELD: head})
    # Appended as `bind_chat` appends `chat`: no decoding of the text or attachment.
    entries = body[_DICT_HEADER.size :] + _HEAD_KEY + codec.encode(head)
    return _DICT_HEADER.pack(codec.DICT, len(entries)) + entries


def gossiped_head(body: bytes, limits: codec.Limits) -> Any:
    """The tree head a friend put in a sealed body, or None."""
    try:
        value = codec.decode(body, limits)
    except ProtocolError:
        return None
    return value.get(GOSSIP_FIELD) if isinstance(value, dict) else None
