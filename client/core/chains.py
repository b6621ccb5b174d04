"""Our sender chains and the chains we read, kept encrypted in the local store.

End-to-end v2 (DESIGN.md section 3b): each sender keeps one chain per conversation and
seals ONE envelope per message with it, whatever the number of recipients. A member
learns a chain's state from a distribution sealed (HPKE, X-Wing) to its KEM key:
when the chain starts, when it joins, and after a rotation (a member left, or the
chain reached `RotationPolicy`'s message count or age). Readers keep each sender's
chain and a bounded window of skipped keys; a used key is deleted.

Chain state is secret (whoever holds CK_n reads message n on), so every record is
sealed with AES-256-GCM under a key derived from the identity key, which itself lives
only in the password-sealed key file (`keystore.py`); the conversation, the sender and
the role are the AAD, so records cannot be swapped between rows.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from common.crypto.distribution import open_distribution, seal_distribution
from common.crypto.envelope_v2 import (
    SealedBody,
    envelope_header,
    open_envelope,
    seal_envelope,
)
from common.crypto.kem import SignedKemKey
from common.crypto.keys import UserKeys
from common.crypto.primitives import hkdf_sha256
from common.crypto.sender_chain import (
    ChainState,
    MessageKeys,
    ReceiverChain,
    RotationPolicy,
    RotationReason,
    SenderChain,
    rotation_due,
    state_at,
)
from common.crypto.transcript import bind, text
from common.errors import EndToEndError, ProtocolError
from common.protocol import codec

SEND = "send"
RECEIVE = "receive"
STATE_KEY_INFO = b"uchat-v2 local chain state"
NONCE_SIZE = 12
#: Chains of one sender kept readable: the current one and those before a rotation,
#: so a message sealed just before the rotation that arrives late still opens, and a
#: chain whose state came late (asked for again) does not push out the current one.
KEPT_CHAINS = 3
#: Chain ids remembered per sender, to recognise a distribution the server replays.
SEEN_CHAINS = 64
#: How far back a missing message still flags later ones as "after a gap" (a message a
#: sender sealed but never sent, after a refused send, must not flag everything after).
GAP_WINDOW = 50
_RECORD_LIMITS = codec.Limits(max_size=4 * 1024 * 1024, max_depth=8, max_items=200_000)


def direct_conversation(user_a: str, user_b: str) -> str:
    """The name both friends bind into the envelopes and distributions of their chat."""
    low, high = sorted((user_a, user_b))
    return "user\x00" + low + "\x00" + high


def room_conversation(room_id: int) -> str:
    return "room\x00" + str(room_id)


class ChainRecords(Protocol):
    """The slice of `LocalStore` this module needs: opaque sealed rows."""

    def load_chain(self, role: str, conversation: str, sender: str) -> bytes | None: ...

    def save_chain(self, role: str, conversation: str, sender: str, sealed: bytes) -> None: ...


class StateSeal:
    """AES-256-GCM under a key derived from our identity key: chain state at rest."""

    def __init__(self, keys: UserKeys, random: Callable[[int], bytes] = os.urandom) -> None:
        raw = keys.identity.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        self._aead = AESGCM(hkdf_sha256(raw, bytes(32), STATE_KEY_INFO, 32))
        self._random = random

    @staticmethod
    def _aad(role: str, conversation: str, sender: str) -> bytes:
        return bind(text(role), text(conversation), text(sender))

    def seal(self, role: str, conversation: str, sender: str, plain: bytes) -> bytes:
        nonce = self._random(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, plain, self._aad(role, conversation, sender))

    def open(self, role: str, conversation: str, sender: str, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(
                sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], self._aad(role, conversation, sender)
            )
        except Exception:  # InvalidTag or a short record: one opaque error
            raise EndToEndError("local chain state does not open") from None


# ---------------------------------------------------------------- records


@dataclass
class OwnChain:
    """Our chain in one conversation, and what a member may be given again.

    `first` is the iteration each member's copy of the state started at; `start` (the
    state at iteration 0) is kept for the chain's life (at most `RotationPolicy`'s
    messages or days), so a member whose copy was lost, or that asks for it
    (`client.core.chain_recovery`), gets the state it was first given, never an earlier
    one: what it holds of this chain opens, and nothing from before it joined. `owed`
    are the members to give it again with the next envelope. The chain before a rotation
    is kept too (`previous`, one deep): a member may ask for it after we moved on.
    """

    state: ChainState
    started_ms: int
    sent: int
    first: dict[str, int]
    start: ChainState | None = None  # None: a record written before starts were kept
    owed: set[str] = field(default_factory=set)
    previous: OwnChain | None = None

    @property
    def members(self) -> set[str]:
        return set(self.first)

    def state_for(self, name: str) -> ChainState:
        """The state `name` was first given (the current one if that is not known)."""
        at = self.first.get(name)
        if self.start is None or at is None:
            return self.state
        return state_at(self.start, at)

    def to_value(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "state": self.state.to_bytes(),
            "started": self.started_ms,
            "sent": self.sent,
            "first": dict(self.first),
            "owed": sorted(self.owed),
        }
        if self.start is not None:
            value["start"] = self.start.to_bytes()
        if self.previous is not None:
            value["previous"] = self.previous.to_value()
        return value

    @classmethod
    def from_value(cls, value: Any, *, nested: bool = False) -> OwnChain:
        if not isinstance(value, dict):
            raise EndToEndError("bad chain record")
        state, started, sent = value.get("state"), value.get("started"), value.get("sent")
        if not isinstance(state, bytes) or type(started) is not int or type(sent) is not int:
            raise EndToEndError("bad chain record")
        chain = cls(ChainState.from_bytes(state), started, sent, _first_of(value))
        start, owed, previous = value.get("start"), value.get("owed", []), value.get("previous")
        if start is not None:
            if not isinstance(start, bytes):
                raise EndToEndError("bad chain record")
            chain.start = ChainState.from_bytes(start)
        if not isinstance(owed, list) or not all(isinstance(name, str) for name in owed):
            raise EndToEndError("bad chain record")
        chain.owed = set(owed)
        if previous is not None and not nested:
            chain.previous = cls.from_value(previous, nested=True)
        return chain


def _first_of(value: dict[str, Any]) -> dict[str, int]:
    """Members and where their copy started; a record from before `first` has `members`."""
    first = value.get("first")
    if first is None:
        members = value.get("members")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise EndToEndError("bad chain record")
        return dict.fromkeys(members, 0)
    if not isinstance(first, dict) or not all(
        isinstance(name, str) and type(n) is int and n >= 0 for name, n in first.items()
    ):
        raise EndToEndError("bad chain record")
    return dict(first)


def _keys_value(keys: MessageKeys) -> list[Any]:
    return [keys.iteration, keys.aes_key, keys.hmac_key, keys.iv]


def _keys_from(value: Any) -> MessageKeys:
    if not isinstance(value, list) or len(value) != 4:
        raise EndToEndError("bad chain record")
    iteration, aes_key, hmac_key, iv = value
    if type(iteration) is not int or not all(
        isinstance(part, bytes) for part in (aes_key, hmac_key, iv)
    ):
        raise EndToEndError("bad chain record")
    return MessageKeys(iteration, aes_key, hmac_key, iv)


@dataclass
class PeerChains:
    """A sender's chains we can read in one conversation (newest last), and ids seen."""

    chains: list[ReceiverChain] = field(default_factory=list)
    firsts: dict[bytes, int] = field(default_factory=dict)  # chain id -> first readable n
    seen: list[bytes] = field(default_factory=list)
    newest_sent_ms: int = 0  # sender time of the newest distribution taken
    # (chain id, sender time) of each copy of a state received: one seen again is a replay
    taken: list[bytes] = field(default_factory=list)

    def find(self, chain_id: bytes) -> ReceiverChain | None:
        for chain in self.chains:
            if chain.chain_id == chain_id:
                return chain
        return None

    def to_value(self) -> dict[str, Any]:
        return {
            "chains": [
                {
                    "state": chain.state().to_bytes(),
                    "skipped": [_keys_value(keys) for keys in chain.skipped_keys()],
                    "first": self.firsts.get(chain.chain_id, 0),
                }
                for chain in self.chains
            ],
            "seen": list(self.seen),
            "newest": self.newest_sent_ms,
            "taken": list(self.taken),
        }

    @classmethod
    def from_value(cls, value: Any, max_skipped: int) -> PeerChains:
        if not isinstance(value, dict):
            raise EndToEndError("bad chain record")
        chains, seen, newest = value.get("chains"), value.get("seen"), value.get("newest")
        if not isinstance(chains, list) or not isinstance(seen, list) or type(newest) is not int:
            raise EndToEndError("bad chain record")
        readers, firsts = [], {}
        for entry in chains:
            if not isinstance(entry, dict) or not isinstance(entry.get("skipped"), list):
                raise EndToEndError("bad chain record")
            state = entry.get("state")
            if not isinstance(state, bytes):
                raise EndToEndError("bad chain record")
            skipped = OrderedDict(
                (keys.iteration, keys) for keys in map(_keys_from, entry["skipped"])
            )
            first = entry.get("first")
            if type(first) is not int:
                raise EndToEndError("bad chain record")
            reader = ReceiverChain(ChainState.from_bytes(state), skipped, max_skipped)
            readers.append(reader)
            firsts[reader.chain_id] = first
        if not all(isinstance(chain_id, bytes) for chain_id in seen):
            raise EndToEndError("bad chain record")
        taken = value.get("taken", [])
        if not isinstance(taken, list) or not all(isinstance(mark, bytes) for mark in taken):
            raise EndToEndError("bad chain record")
        return cls(readers, firsts, list(seen), newest, list(taken))


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class Sealed:
    """One message sealed on our chain: the envelope and the distributions it carries."""

    envelope: bytes
    distributions: dict[str, bytes]
    chain_id: bytes
    iteration: int
    rotated: RotationReason | None
    started: bool


@dataclass(frozen=True)
class Opened:
    """An envelope opened on a sender's chain, with what order checks need."""

    body: SealedBody
    chain_id: bytes
    iteration: int
    skipped: tuple[int, ...]  # earlier iterations (within GAP_WINDOW) not arrived yet
    late: bool  # it filled an earlier gap: it arrived after a later message
    replayed_distribution: bool  # it came with a distribution of a chain we already had


KemKeyOf = Callable[[str], SignedKemKey | None]


class ChainBook:
    """Sealing on our chains and opening on our peers' chains, persisted; thread-safe."""

    def __init__(
        self,
        *,
        username: str,
        keys: UserKeys,
        records: ChainRecords,
        policy: RotationPolicy | None = None,
        max_skipped: int = 2000,
        clock: Callable[[], int],
    ) -> None:
        self._username = username
        self._keys = keys
        self._records = records
        self._seal = StateSeal(keys)
        self._policy = policy or RotationPolicy()
        self._max_skipped = max_skipped
        self._clock = clock
        self._lock = threading.RLock()
        self._own: dict[str, OwnChain] = {}
        self._peers: dict[tuple[str, str], PeerChains] = {}

    # -- storage -----------------------------------------------------------------------

    def _load(self, role: str, conversation: str, sender: str) -> Any:
        sealed = self._records.load_chain(role, conversation, sender)
        if sealed is None:
            return None
        plain = self._seal.open(role, conversation, sender, sealed)
        try:
            return codec.decode(plain, _RECORD_LIMITS)
        except ProtocolError:
            raise EndToEndError("bad chain record") from None

    def _save(self, role: str, conversation: str, sender: str, value: dict[str, Any]) -> None:
        plain = codec.encode(value)
        self._records.save_chain(
            role, conversation, sender, self._seal.seal(role, conversation, sender, plain)
        )

    def _own_chain(self, conversation: str) -> OwnChain | None:
        chain = self._own.get(conversation)
        if chain is None:
            value = self._load(SEND, conversation, self._username)
            if value is not None:
                chain = OwnChain.from_value(value)
                self._own[conversation] = chain
        return chain

    def _peer_chains(self, conversation: str, sender: str) -> PeerChains:
        key = (conversation, sender)
        chains = self._peers.get(key)
        if chains is None:
            value = self._load(RECEIVE, conversation, sender)
            chains = (
                PeerChains() if value is None else PeerChains.from_value(value, self._max_skipped)
            )
            self._peers[key] = chains
        return chains

    # -- sending -------------------------------------------------------------------------

    def seal(
        self,
        *,
        conversation: str,
        recipients: Mapping[str, SignedKemKey | None],
        body: bytes,
        member_hash: bytes | None = None,
        sent_ms: int | None = None,
        redistribute: bool = False,
    ) -> Sealed:
        """Seal `body` once for `recipients` ({name: verified KEM key or None}).

        A recipient without a KEM key (an account not yet upgraded) gets no
        distribution and cannot read the message; it gets the chain's state with the
        first message after its key appears. The chain state is saved before the
        envelope is returned, so a key is never used twice.
        """
        now = self._clock()
        sent_at = now if sent_ms is None else sent_ms
        with self._lock:
            chain = self._own_chain(conversation)
            reason = None
            if chain is not None:
                reason = rotation_due(
                    self._policy,
                    messages_sent=chain.sent,
                    chain_started_ms=chain.started_ms,
                    now_ms=now,
                    member_left_since_start=bool(chain.members - set(recipients)),
                )
            started = chain is None or reason is not None
            if chain is None or reason is not None:
                fresh = SenderChain.start().state()
                if chain is not None:
                    chain.previous = None  # one chain back is kept, no more
                chain = OwnChain(fresh, now, 0, {}, start=fresh, previous=chain)
            distributions = self._distributions(
                chain, conversation, recipients, now, redistribute=redistribute
            )
            state = chain.state
            sender = SenderChain(state)
            keys = sender.next_keys()
            envelope = seal_envelope(
                identity=self._keys.identity,
                conversation=conversation,
                chain_id=state.chain_id,
                keys=keys,
                body=SealedBody(sent_at, body, member_hash),
            )
            chain.state = sender.state()
            chain.sent += 1
            chain.first = {name: n for name, n in chain.first.items() if name in recipients}
            self._save(SEND, conversation, self._username, chain.to_value())
            self._own[conversation] = chain
        return Sealed(envelope, distributions, state.chain_id, keys.iteration, reason, started)

    def _distributions(
        self,
        chain: OwnChain,
        conversation: str,
        recipients: Mapping[str, SignedKemKey | None],
        now: int,
        *,
        redistribute: bool,
    ) -> dict[str, bytes]:
        """The chain states this envelope carries, sealed to each recipient that needs one.

        A newcomer gets the current state; a member owed its copy (or everyone, after a
        refused send: `redistribute`) gets the state it was first given, so what it holds
        of this chain opens; a member owed the chain before a rotation gets that one when
        it needs nothing of the current chain.
        """
        given: dict[str, ChainState] = {}
        for name in sorted(recipients):
            if recipients[name] is None:
                continue
            if name not in chain.first:
                chain.first[name] = chain.state.iteration
                given[name] = chain.state
            elif redistribute or name in chain.owed:
                given[name] = chain.state_for(name)
            elif chain.previous is not None and name in chain.previous.owed:
                given[name] = chain.previous.state_for(name)
                chain.previous.owed.discard(name)
            chain.owed.discard(name)
        return {
            name: seal_distribution(
                identity=self._keys.identity,
                state=state,
                sent_ms=now,
                conversation=conversation,
                sender=self._username,
                recipient=name,
                recipient_kem=key,
            )
            for name, state in given.items()
            if (key := recipients[name]) is not None
        }

    def _owe(self, conversation: str, chain_id: bytes, names: Iterable[str]) -> bool:
        """Give `names` their copy of our chain `chain_id` again with the next envelope;
        False if that chain is gone (rotated twice) or none of them was given it."""
        with self._lock:
            current = self._own_chain(conversation)
            if current is None:
                return False
            for chain in (current, current.previous):
                if chain is None or chain.state.chain_id != chain_id:
                    continue
                owed = set(names) & chain.members
                if not owed:
                    return False
                chain.owed |= owed
                self._save(SEND, conversation, self._username, current.to_value())
                return True
        return False

    def asked(self, conversation: str, requester: str, chain_id: bytes) -> bool:
        """`requester` holds envelopes of our chain it cannot open (the envelope carrying
        its copy of the state was lost): True if it is owed a copy now."""
        return self._owe(conversation, chain_id, [requester])

    def dropped(self, params: Mapping[str, Any]) -> None:
        """SEND_MESSAGE params we sealed were dropped for good (refused by the server):
        the friends their distributions named never got our chain's state.

        Without another copy they would hold every later envelope of the chain,
        unreadable; the next envelope carries it (from where they were first given it).
        """
        distributions, envelope = params.get("distributions"), params.get("envelope")
        target, kind = params.get("target"), params.get("target_type")
        if not isinstance(distributions, dict) or not distributions:
            return
        if not isinstance(envelope, bytes):
            return
        if kind == "user" and isinstance(target, str):
            conversation = direct_conversation(self._username, target)
        elif kind == "room" and type(target) is int:
            conversation = room_conversation(target)
        else:
            return
        try:
            chain_id = envelope_header(envelope).chain_id
        except EndToEndError:
            return
        self._owe(conversation, chain_id, [str(name) for name in distributions])

    # -- receiving -----------------------------------------------------------------------

    def take_distribution(
        self, *, conversation: str, sender: str, sender_identity: bytes, data: bytes
    ) -> bool:
        """Verify and keep a chain state sent to us; False if it is a replay.

        A chain we already have is never replaced, so a distribution cannot rewind it to
        keys already used. A copy we took before, coming again when it would rewind us
        (its iteration is behind ours, or the chain was rotated away), is a replay by
        the server, which the caller reports; another copy of a chain we have (sealed
        anew by the sender, or a first copy arriving after one we asked for) is not.
        """
        kem = self._keys.kem
        distribution = open_distribution(
            data,
            conversation=conversation,
            sender=sender,
            recipient=self._username,
            sender_identity_public=sender_identity,
            kem_key=lambda key_id: None if kem is None else kem.find(key_id),
        )
        with self._lock:
            chains = self._peer_chains(conversation, sender)
            mark = distribution.state.chain_id + distribution.sent_ms.to_bytes(8, "big")
            if distribution.state.chain_id in chains.seen:
                known = chains.find(distribution.state.chain_id)
                if mark in chains.taken and (
                    known is None or distribution.state.iteration < known.iteration
                ):
                    return False  # a copy we had, behind us now: the server replays it
                # nothing to take: the sender's copy again (after a refusal or a request),
                # or its first copy arriving late; a chain is never rewound
                self._remember(chains, mark)
                self._save(RECEIVE, conversation, sender, chains.to_value())
                return True
            self._remember(chains, mark)
            chains.chains.append(ReceiverChain(distribution.state, max_skipped=self._max_skipped))
            chains.firsts[distribution.state.chain_id] = distribution.state.iteration
            del chains.chains[:-KEPT_CHAINS]
            kept = {chain.chain_id for chain in chains.chains}
            chains.firsts = {key: n for key, n in chains.firsts.items() if key in kept}
            chains.seen.append(distribution.state.chain_id)
            del chains.seen[:-SEEN_CHAINS]
            chains.newest_sent_ms = max(chains.newest_sent_ms, distribution.sent_ms)
            self._save(RECEIVE, conversation, sender, chains.to_value())
        return True

    @staticmethod
    def _remember(chains: PeerChains, mark: bytes) -> None:
        if mark not in chains.taken:
            chains.taken.append(mark)
            del chains.taken[:-SEEN_CHAINS]

    def knows(self, conversation: str, sender: str, chain_id: bytes) -> bool:
        """Whether a distribution of this chain ever reached us."""
        with self._lock:
            return chain_id in self._peer_chains(conversation, sender).seen

    def already_opened(self, conversation: str, sender: str, chain_id: bytes, n: int) -> bool:
        """Whether message n of this chain was opened before (its key is gone): a delivery
        repeated after a crash, acknowledged once already."""
        with self._lock:
            chains = self._peer_chains(conversation, sender)
            chain = chains.find(chain_id)
            return (
                chain is not None
                and chains.firsts.get(chain_id, 0) <= n < chain.iteration
                and n not in chain.skipped_iterations()
            )

    def open(
        self, *, conversation: str, sender: str, sender_identity: bytes, envelope: bytes
    ) -> Opened:
        """Open one envelope on the sender's chain; EndToEndError if it does not open.

        The chain moves (and the used key is deleted, from memory and from the store)
        only when the envelope verified and decrypted.
        """
        header = envelope_header(envelope)
        with self._lock:
            chains = self._peer_chains(conversation, sender)
            chain = chains.find(header.chain_id)
            if chain is None:
                raise EndToEndError()
            before = chain.iteration
            body = chain.open(
                header.iteration,
                lambda keys: open_envelope(
                    envelope,
                    conversation=conversation,
                    sender_identity_public=sender_identity,
                    keys=keys,
                ),
            )
            self._save(RECEIVE, conversation, sender, chains.to_value())
            n = header.iteration
            # earlier messages of this chain still missing when this one opened
            skipped = tuple(i for i in chain.skipped_iterations() if n - GAP_WINDOW <= i < n)
        late = header.iteration < before
        return Opened(body, header.chain_id, header.iteration, skipped, late, False)
