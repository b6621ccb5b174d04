"""Sender chains: Signal's Sender Keys / Matrix Megolm hash ratchet (DESIGN.md section 3b).

Each sender keeps one chain per conversation: chain id (16 random bytes), iteration n
and chain key CK_n (32 bytes). For message n:

    MK_n      = HMAC-SHA256(CK_n, 0x01)
    keys      = HKDF-SHA256(MK_n, salt = 32 zero bytes, info = "uchat-v2 message keys", 80)
              = AES-256 key (32) || HMAC-SHA256 key (32) || CBC IV (16)
    CK_{n+1}  = HMAC-SHA256(CK_n, 0x02)

HMAC is one-way, so the stored CK_n says nothing about earlier keys: a key used and
deleted cannot be derived again (forward secrecy along the chain). A receiver keeps at
most `MAX_SKIPPED_KEYS` message keys for messages that have not arrived yet and never
jumps more than `MAX_FORWARD_JUMP` steps ahead, then refuses.

Everything here is pure: no clocks, no I/O; randomness is injectable.
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from common.crypto.primitives import hkdf_sha256, hmac_sha256
from common.errors import EndToEndError

CHAIN_ID_SIZE = 16
CHAIN_KEY_SIZE = 32
MESSAGE_KEYS_INFO = b"uchat-v2 message keys"
MESSAGE_KEYS_SALT = bytes(32)
MAX_ITERATION = 2**32 - 1
MAX_SKIPPED_KEYS = 2000  # per receiving chain: out-of-order window (Signal keeps 2000)
MAX_FORWARD_JUMP = 2000  # one message may skip at most this many iterations

RandomSource = Callable[[int], bytes]
T = TypeVar("T")

_MESSAGE_KEY_SEED = b"\x01"
_CHAIN_KEY_SEED = b"\x02"
_STATE = struct.Struct(">16sI32s")


@dataclass(frozen=True)
class MessageKeys:
    """Keys for exactly one message of one chain; used once, then dropped."""

    iteration: int
    aes_key: bytes
    hmac_key: bytes
    iv: bytes

    def __repr__(self) -> str:  # never print key material
        return f"MessageKeys(iteration={self.iteration})"


@dataclass(frozen=True)
class ChainState:
    """What a distribution message carries: enough to read from iteration n on."""

    chain_id: bytes
    iteration: int
    chain_key: bytes

    def __post_init__(self) -> None:
        if (
            len(self.chain_id) != CHAIN_ID_SIZE
            or len(self.chain_key) != CHAIN_KEY_SIZE
            or not 0 <= self.iteration <= MAX_ITERATION
        ):
            raise EndToEndError("bad chain state")

    def to_bytes(self) -> bytes:
        return _STATE.pack(self.chain_id, self.iteration, self.chain_key)

    @classmethod
    def from_bytes(cls, data: bytes) -> ChainState:
        if len(data) != _STATE.size:
            raise EndToEndError("bad chain state")
        chain_id, iteration, chain_key = _STATE.unpack(data)
        return cls(chain_id, iteration, chain_key)

    def __repr__(self) -> str:
        return f"ChainState(chain_id={self.chain_id.hex()}, iteration={self.iteration})"


def message_keys(chain_key: bytes, iteration: int) -> MessageKeys:
    """MK_n expanded into the AES key, HMAC key and IV of message n."""
    seed = hmac_sha256(chain_key, _MESSAGE_KEY_SEED)
    okm = hkdf_sha256(seed, MESSAGE_KEYS_SALT, MESSAGE_KEYS_INFO, 80)
    return MessageKeys(iteration, okm[:32], okm[32:64], okm[64:80])


def next_chain_key(chain_key: bytes) -> bytes:
    return hmac_sha256(chain_key, _CHAIN_KEY_SEED)


def state_at(start: ChainState, iteration: int) -> ChainState:
    """The chain's state at a later `iteration`, from an earlier state (one-way).

    A sender that kept its chain's first state derives what a member was first given,
    to give it again when that member's copy was lost; going back is impossible.
    """
    if not start.iteration <= iteration <= MAX_ITERATION:
        raise EndToEndError("a chain cannot go back")
    chain_key = start.chain_key
    for _ in range(iteration - start.iteration):
        chain_key = next_chain_key(chain_key)
    return ChainState(start.chain_id, iteration, chain_key)


class SenderChain:
    """The sending half: hands out each message's keys once, in order."""

    def __init__(self, state: ChainState) -> None:
        self._state = state

    @classmethod
    def start(cls, random: RandomSource = os.urandom) -> SenderChain:
        return cls(ChainState(random(CHAIN_ID_SIZE), 0, random(CHAIN_KEY_SIZE)))

    @property
    def chain_id(self) -> bytes:
        return self._state.chain_id

    @property
    def iteration(self) -> int:
        """The iteration the next message will use."""
        return self._state.iteration

    def state(self) -> ChainState:
        """The current state, for a distribution message (readers start here) or storage."""
        return self._state

    def next_keys(self) -> MessageKeys:
        """Keys for the next message; CK_n is replaced by CK_{n+1} before returning."""
        state = self._state
        if state.iteration >= MAX_ITERATION:
            raise EndToEndError("chain exhausted")
        keys = message_keys(state.chain_key, state.iteration)
        self._state = ChainState(
            state.chain_id, state.iteration + 1, next_chain_key(state.chain_key)
        )
        return keys


class ReceiverChain:
    """The receiving half of one sender's chain, with a bounded window of skipped keys.

    `open(n, attempt)` derives message n's keys and commits the new state only when
    `attempt(keys)` returns: a forged envelope (which fails its MAC or signature inside
    `attempt`) neither advances the chain nor burns a skipped key.
    """

    def __init__(
        self,
        state: ChainState,
        skipped: OrderedDict[int, MessageKeys] | None = None,
        max_skipped: int = MAX_SKIPPED_KEYS,
        max_jump: int = MAX_FORWARD_JUMP,
    ) -> None:
        self._state = state
        self._skipped: OrderedDict[int, MessageKeys] = skipped or OrderedDict()
        self._max_skipped = max_skipped
        self._max_jump = max_jump

    @property
    def chain_id(self) -> bytes:
        return self._state.chain_id

    @property
    def iteration(self) -> int:
        """The lowest iteration not yet reached (messages below it are skipped or used)."""
        return self._state.iteration

    def state(self) -> ChainState:
        return self._state

    def skipped_iterations(self) -> list[int]:
        return list(self._skipped)

    def skipped_keys(self) -> list[MessageKeys]:
        """The kept keys of messages not arrived yet, oldest gap first (for storage)."""
        return list(self._skipped.values())

    def open(self, iteration: int, attempt: Callable[[MessageKeys], T]) -> T:
        if iteration < self._state.iteration:
            keys = self._skipped.get(iteration)
            if keys is None:  # used already, evicted, or before this chain's start
                raise EndToEndError()
            result = attempt(keys)
            del self._skipped[iteration]
            return result
        if iteration - self._state.iteration > self._max_jump or iteration > MAX_ITERATION:
            raise EndToEndError()
        chain_key, skipped = self._state.chain_key, []
        for n in range(self._state.iteration, iteration):
            skipped.append(message_keys(chain_key, n))
            chain_key = next_chain_key(chain_key)
        keys = message_keys(chain_key, iteration)
        result = attempt(keys)
        for item in skipped:
            self._skipped[item.iteration] = item
        while len(self._skipped) > self._max_skipped:
            self._skipped.popitem(last=False)  # the oldest gap gives way
        self._state = ChainState(self._state.chain_id, iteration + 1, next_chain_key(chain_key))
        return result


class RotationReason(Enum):
    MEMBER_LEFT = "member_left"
    MESSAGE_LIMIT = "message_limit"
    AGE_LIMIT = "age_limit"


@dataclass(frozen=True)
class RotationPolicy:
    """Megolm's defaults: a new chain after 100 messages or a week, and on any leave."""

    max_messages: int = 100
    max_age_ms: int = 7 * 24 * 3600 * 1000


def rotation_due(
    policy: RotationPolicy,
    *,
    messages_sent: int,
    chain_started_ms: int,
    now_ms: int,
    member_left_since_start: bool,
) -> RotationReason | None:
    """Whether the sender must start a new chain before its next message, and why."""
    if member_left_since_start:
        return RotationReason.MEMBER_LEFT
    if messages_sent >= policy.max_messages:
        return RotationReason.MESSAGE_LIMIT
    if now_ms - chain_started_ms >= policy.max_age_ms:
        return RotationReason.AGE_LIMIT
    return None
