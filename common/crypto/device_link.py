"""Linking a new computer: a short-authentication-string key exchange, sans-IO.

Why this shape: the server relays every byte between the two computers, so it could
sit in the middle of a plain Diffie-Hellman. As in Bluetooth numeric comparison and
ZRTP, each side derives a six-digit code from the transcript and the user compares
them; a middle-man would need both codes to agree by luck (one in a million per
attempt) because of a commitment:

    new -> old   COMMIT  SHA-256(label, new public key)
    old -> new   KEY     old public key            (sent only after COMMIT arrived)
    new -> old   REVEAL  new public key            (sent only after KEY arrived)
    both         show SAS = HKDF(X25519, salt = transcript hash)[..] as "123 456"
    old -> new   SEALED  AES-256-GCM(identity)     (only after the user said "match")

The new computer is bound to its public key before it sees the old one's, and the old
computer to its own before it learns the new one's: neither side (nor the server
playing either side) can search for keys that make the two codes agree.

The transcript binds the protocol label, the account name and the one-time code, so a
server that rewrites either also makes the codes differ. Only the old computer seals,
only after its user confirmed; the new computer opens only after its user confirmed.
Randomness is injectable so tests are exact. Every error is one `LinkError` whose
`code` a user-facing layer can translate; a bad message ends the link (a state, not a
crash).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from common.crypto.keys import UserKeys, keys_from_bytes, keys_to_bytes
from common.crypto.transcript import bind, text
from common.errors import KeyStoreError, UchatError

LABEL = b"uchat device link v1"
COMMIT_LABEL = b"uchat device link v1 commit"
KEY_INFO = b"uchat device link v1 key and sas"
PUBLIC_SIZE = 32
NONCE_SIZE = 12
SAS_DIGITS = 6
#: Far above a real identity (two raw keys plus a KEM keyring, about 200 bytes).
MAX_SEALED = 8192

Random = Callable[[int], bytes]


class LinkError(UchatError):
    """The link failed; `code` says how (for translated messages)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Tag(bytes, Enum):
    """The first byte of every relayed link message."""

    COMMIT = b"\x01"
    KEY = b"\x02"
    REVEAL = b"\x03"
    SEALED = b"\x04"


class Stage(Enum):
    """Where a side of the link is; each side uses the stages its table lists."""

    WAIT_JOIN = "wait_join"  # new: the code is shown, nobody has entered it yet
    WAIT_COMMIT = "wait_commit"  # old: code accepted, waiting for the commitment
    WAIT_KEY = "wait_key"  # new: commitment sent
    WAIT_REVEAL = "wait_reveal"  # old: our key sent
    COMPARE = "compare"  # both: the SAS is shown; the user decides
    WAIT_SEALED = "wait_sealed"  # new: the user confirmed; the identity has not come yet
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Agreed:
    """What both sides derive from the exchange."""

    key: bytes  # AES-256-GCM key for the identity
    sas: str  # "123 456"
    transcript_hash: bytes


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def commitment(public: bytes) -> bytes:
    return hashlib.sha256(bind(COMMIT_LABEL, public)).digest()


def agree(
    private: X25519PrivateKey,
    peer_public: bytes,
    *,
    username: str,
    code: str,
    new_public: bytes,
    old_public: bytes,
) -> Agreed:
    """The shared key and SAS; the transcript orders the keys by role, not by side."""
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:  # a low-order point gives an all-zero secret
        raise LinkError("bad_message", "the other computer sent an unusable key") from None
    transcript = hashlib.sha256(
        bind(LABEL, text(username), text(code), commitment(new_public), new_public, old_public)
    ).digest()
    okm = HKDF(hashes.SHA256(), 32 + 8, salt=transcript, info=KEY_INFO).derive(shared)
    number = int.from_bytes(okm[32:], "big") % 10**SAS_DIGITS
    digits = f"{number:0{SAS_DIGITS}d}"
    return Agreed(okm[:32], f"{digits[:3]} {digits[3:]}", transcript)


def _split(data: bytes) -> tuple[Tag, bytes]:
    if not data:
        raise LinkError("bad_message", "an empty link message")
    try:
        tag = Tag(data[:1])
    except ValueError:
        raise LinkError("bad_message", "an unknown link message") from None
    body = data[1:]
    if tag is Tag.SEALED:
        if not NONCE_SIZE + 16 < len(body) <= MAX_SEALED:
            raise LinkError("bad_message", "a sealed identity of impossible size")
    elif len(body) != PUBLIC_SIZE:
        raise LinkError("bad_message", "a link message of the wrong size")
    return tag, body


class _Side:
    """What both sides share: the stage, the SAS, and failing for good."""

    def __init__(self, username: str, code: str, random: Random) -> None:
        self.username = username
        self.code = code
        self._random = random
        self._private = X25519PrivateKey.from_private_bytes(random(32))
        self.public = public_bytes(self._private)
        self.stage = Stage.FAILED
        self._agreed: Agreed | None = None

    @property
    def sas(self) -> str | None:
        """The six digits to compare, once both keys are known."""
        return self._agreed.sas if self._agreed is not None else None

    def _expect(self, data: bytes, stage: Stage, tag: Tag) -> bytes:
        """The body of `data` if it is `tag` and we are at `stage`; otherwise fail."""
        if self.stage is not stage:
            self._fail()
            raise LinkError("out_of_order", "a link message arrived out of order")
        try:
            got, body = _split(data)
        except LinkError:
            self._fail()
            raise
        if got is not tag:
            self._fail()
            raise LinkError("out_of_order", "a link message arrived out of order")
        return body

    def _fail(self) -> None:
        self.stage = Stage.FAILED
        self._agreed = None


class NewComputer(_Side):
    """The computer without the identity: shows the code, receives the keys."""

    def __init__(self, username: str, code: str, random: Random = os.urandom) -> None:
        super().__init__(username, code, random)
        self.stage = Stage.WAIT_JOIN
        self._sealed: bytes | None = None
        self.identity: bytes | None = None

    @property
    def has_sealed(self) -> bool:
        """The sealed identity arrived (it opens once the user confirms)."""
        return self._sealed is not None and self.stage is not Stage.FAILED

    def joined(self) -> bytes:
        """The old computer entered the code: our commitment, to relay."""
        if self.stage is not Stage.WAIT_JOIN:
            self._fail()
            raise LinkError("out_of_order", "joined twice")
        self.stage = Stage.WAIT_KEY
        return Tag.COMMIT.value + commitment(self.public)

    def receive(self, data: bytes) -> bytes | None:
        """A relayed message: the old key (answer: our reveal) or the sealed identity."""
        if self.stage is Stage.WAIT_KEY:
            old_public = self._expect(data, Stage.WAIT_KEY, Tag.KEY)
            try:
                self._agreed = agree(
                    self._private,
                    old_public,
                    username=self.username,
                    code=self.code,
                    new_public=self.public,
                    old_public=old_public,
                )
            except LinkError:
                self._fail()
                raise
            self.stage = Stage.COMPARE
            return Tag.REVEAL.value + self.public
        if self.stage not in (Stage.COMPARE, Stage.WAIT_SEALED) or self._sealed is not None:
            self._fail()
            raise LinkError("out_of_order", "a link message arrived out of order")
        self._sealed = self._expect(data, self.stage, Tag.SEALED)
        if self.stage is Stage.WAIT_SEALED:
            self._open()
        return None

    def confirm(self, match: bool) -> None:
        """The user compared the codes. False ends the link (nothing is kept)."""
        if self.stage is not Stage.COMPARE:
            raise LinkError("out_of_order", "nothing to confirm")
        if not match:
            self._fail()
            raise LinkError("refused", "the codes did not match")
        self.stage = Stage.WAIT_SEALED
        if self._sealed is not None:
            self._open()

    def _open(self) -> None:
        agreed, sealed = self._agreed, self._sealed
        if agreed is None or sealed is None:
            raise LinkError("out_of_order", "nothing to open")
        try:
            plain = AESGCM(agreed.key).decrypt(
                sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], agreed.transcript_hash
            )
        except InvalidTag:
            self._fail()
            raise LinkError(
                "bad_seal", "the identity did not open: the link was tampered with"
            ) from None
        self.identity = plain
        self.stage = Stage.DONE


class OldComputer(_Side):
    """The logged-in computer: enters the code, seals the identity once confirmed."""

    def __init__(self, username: str, code: str, random: Random = os.urandom) -> None:
        super().__init__(username, code, random)
        self.stage = Stage.WAIT_COMMIT
        self._commitment = b""

    def receive(self, data: bytes) -> bytes | None:
        """The commitment (answer: our key) or the reveal (answer: nothing; SAS ready)."""
        if self.stage is Stage.WAIT_COMMIT:
            self._commitment = self._expect(data, Stage.WAIT_COMMIT, Tag.COMMIT)
            self.stage = Stage.WAIT_REVEAL
            return Tag.KEY.value + self.public
        new_public = self._expect(data, Stage.WAIT_REVEAL, Tag.REVEAL)
        if commitment(new_public) != self._commitment:
            self._fail()
            raise LinkError("bad_commitment", "the other computer changed its key")
        try:
            self._agreed = agree(
                self._private,
                new_public,
                username=self.username,
                code=self.code,
                new_public=new_public,
                old_public=self.public,
            )
        except LinkError:
            self._fail()
            raise
        self.stage = Stage.COMPARE
        return None

    def confirm(self, match: bool, identity: bytes) -> bytes:
        """The user compared the codes: the sealed identity to relay, or `refused`."""
        agreed = self._agreed
        if self.stage is not Stage.COMPARE or agreed is None:
            raise LinkError("out_of_order", "nothing to confirm")
        if not match:
            self._fail()
            raise LinkError("refused", "the codes did not match")
        nonce = self._random(NONCE_SIZE)
        sealed = AESGCM(agreed.key).encrypt(nonce, identity, agreed.transcript_hash)
        self.stage = Stage.DONE
        return Tag.SEALED.value + nonce + sealed


def normalise_code(code: str) -> str:
    """What people type: spaces and dashes between the digits are ignored."""
    return "".join(ch for ch in code if ch not in " -\u00a0")


def pack_identity(username: str, keys: UserKeys) -> bytes:
    """What the old computer seals: the account name and the key file's raw keys."""
    name = text(username)
    return len(name).to_bytes(2, "big") + name + keys_to_bytes(keys)


def unpack_identity(data: bytes) -> tuple[str, UserKeys]:
    """The inverse of `pack_identity`; `LinkError("bad_message")` for anything else."""
    size = int.from_bytes(data[:2], "big")
    try:
        username = data[2 : 2 + size].decode("utf-8")
        if len(data) < 2 + size or not username:
            raise ValueError("short")
        return username, keys_from_bytes(data[2 + size :])
    except (ValueError, KeyStoreError):
        raise LinkError("bad_message", "the identity received is not readable") from None
