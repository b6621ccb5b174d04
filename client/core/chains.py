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
)
from common.crypto.transcript import bind, text
from common.errors import EndToEndError, ProtocolError
from common.protocol import codec

SEND = "send"
RECEIVE = "receive"
STATE_KEY_INFO = b"uchat-v2 local chain state"
NONCE_SIZE = 12
#: Chains of one sender kept readable: the current one and the one before a rotation,
#: so a message sealed just before the rotation that arrives late still opens.
KEPT_CHAINS = 2
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
    """Our chain in one conversation and whom its state was distributed to."""

    state: ChainState
    started_ms: int
    sent: int
    members: set[str]

    def to_value(self) -> dict[str, Any]:
        return {
            "state": self.state.to_bytes(),
            "started": self.started_ms,
            "sent": self.sent,
            "members": sorted(self.members),
        }

    @classmethod
    def from_value(cls, value: Any) -> OwnChain:
        if not isinstance(value, dict):
            raise EndToEndError("bad chain record")
        state, members = value.get("state"), value.get("members")
        started, sent = value.get("started"), value.get("sent")
        if not isinstance(state, bytes) or not isinstance(members, list):
            raise EndToEndError("bad chain record")
        if type(started) is not int or type(sent) is not int:
            raise EndToEndError("bad chain record")
        if not all(isinstance(name, str) for name in members):
            raise EndToEndError("bad chain record")
        return cls(ChainState.from_bytes(state), started, sent, set(members))


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
        return cls(readers, firsts, list(seen), newest)


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
            reachable = {name for name, key in recipients.items() if key is not None}
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
                chain = OwnChain(SenderChain.start().state(), now, 0, set())
            # after a refused send, everyone gets the state again (a newcomer's copy went
            # out with the refused envelope, so it never arrived)
            newcomers = reachable if redistribute else reachable - chain.members
            state = chain.state
            sender = SenderChain(state)
            keys = sender.next_keys()
            distributions = {
                name: seal_distribution(
                    identity=self._keys.identity,
                    state=state,
                    sent_ms=now,
                    conversation=conversation,
                    sender=self._username,
                    recipient=name,
                    recipient_kem=key,
                )
                for name in sorted(newcomers)
                if (key := recipients[name]) is not None
            }
            envelope = seal_envelope(
                identity=self._keys.identity,
                conversation=conversation,
                chain_id=state.chain_id,
                keys=keys,
                body=SealedBody(sent_at, body, member_hash),
            )
            chain.state = sender.state()
            chain.sent += 1
            chain.members = (chain.members & set(recipients)) | newcomers
            self._save(SEND, conversation, self._username, chain.to_value())
            self._own[conversation] = chain
        return Sealed(envelope, distributions, state.chain_id, keys.iteration, reason, started)

    def _undistributed(self, conversation: str, names: Iterable[str]) -> None:
        """These recipients never got our chain's state (what carried it was refused for
        good): the next envelope we seal in `conversation` carries it to them again.

        Without this they would hold every later envelope of the chain, unreadable.
        """
        with self._lock:
            chain = self._own_chain(conversation)
            if chain is None:
                return
            left = chain.members - set(names)
            if left != chain.members:
                chain.members = left
                self._save(SEND, conversation, self._username, chain.to_value())

    def dropped(self, params: Mapping[str, Any]) -> None:
        """SEND_MESSAGE params we sealed were dropped for good (refused by the server):
        the friends their distributions named never got our chain's state."""
        distributions = params.get("distributions")
        target, kind = params.get("target"), params.get("target_type")
        if not isinstance(distributions, dict) or not distributions:
            return
        if kind == "user" and isinstance(target, str):
            conversation = direct_conversation(self._username, target)
        elif kind == "room" and type(target) is int:
            conversation = room_conversation(target)
        else:
            return
        self._undistributed(conversation, [str(name) for name in distributions])

    # -- receiving -----------------------------------------------------------------------

    def take_distribution(
        self, *, conversation: str, sender: str, sender_identity: bytes, data: bytes
    ) -> bool:
        """Verify and keep a chain state sent to us; False if it is a replay.

        A chain we already have is never replaced, so a distribution cannot rewind it to
        keys already used; one that would (its iteration is behind ours, or the chain
        was rotated away) is a replay by the server, which the caller reports.
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
            if distribution.state.chain_id in chains.seen:
                known = chains.find(distribution.state.chain_id)
                # A sender resends its current state after a refused send (nothing to
                # take); a state behind what we have read is the server replaying it.
                return known is not None and distribution.state.iteration >= known.iteration
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
