"""RFC 9162 Merkle trees: hashes, inclusion and consistency proofs, signed tree heads.

Pure functions. Proof generation takes a `Subtree` callable returning the hash of a
complete, aligned subtree (2**level leaves starting at index * 2**level), so the
server can answer from stored node hashes in O(log n) and tests from a leaf list.
Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 literally.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from common.errors import CryptoError

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
TREE_HEAD_CONTEXT = b"uchat key transparency tree head v1\x00"
MAX_PROOF_HASHES = 64

#: (level, index) -> hash of leaves [index * 2**level, (index + 1) * 2**level).
Subtree = Callable[[int, int], bytes]


class ProofError(CryptoError):
    """A proof or tree head does not verify."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()


def _split(size: int) -> int:
    """The largest power of two smaller than `size` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def range_hash(start: int, end: int, subtree: Subtree) -> bytes:
    """MTH(D[start:end]) where `start` is aligned to the largest power of two below the size."""
    size = end - start
    if size <= 0:
        return EMPTY_ROOT
    if size & (size - 1) == 0:
        level = size.bit_length() - 1
        return subtree(level, start >> level)
    k = _split(size)
    return node_hash(subtree((k.bit_length() - 1), start // k), range_hash(start + k, end, subtree))


def root(size: int, subtree: Subtree) -> bytes:
    return range_hash(0, size, subtree)


def inclusion_proof(index: int, size: int, subtree: Subtree) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[0:size]), leaf-to-root order."""
    if not 0 <= index < size:
        raise ValueError("leaf index outside the tree")
    proof: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            proof.append(range_hash(start + k, end, subtree))
            end = start + k
        else:
            proof.append(range_hash(start, start + k, subtree))
            start += k
    proof.reverse()
    return proof


def consistency_proof(old_size: int, new_size: int, subtree: Subtree) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(old_size, D[0:new_size])."""
    if not 0 < old_size <= new_size:
        raise ValueError("consistency needs 0 < old size <= new size")
    proof: list[bytes] = []
    start, end, m, complete = 0, new_size, old_size, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                proof.append(range_hash(start, end, subtree))
            break
        k = _split(n)
        if m <= k:
            proof.append(range_hash(start + k, end, subtree))
            end = start + k
        else:
            proof.append(range_hash(start, start + k, subtree))
            start, m, complete = start + k, m - k, False
    proof.reverse()
    return proof


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """RFC 9162 §2.1.3.2; raises ProofError unless `leaf` is entry `index` of the tree."""
    _check_hashes(proof)
    if not 0 <= index < size:
        raise ProofError("leaf index outside the tree")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or r != expected_root:
        raise ProofError("inclusion proof does not match the tree head")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2; raises ProofError unless the new tree extends the old one."""
    _check_hashes(proof)
    if old_size > new_size or old_size < 0:
        raise ProofError("the new tree is smaller than the old one")
    if old_size == new_size:
        if proof or old_root != new_root:
            raise ProofError("same size but different trees")
        return
    if old_size == 0:
        if proof:
            raise ProofError("consistency with the empty tree takes no proof")
        return
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    if not path:
        raise ProofError("consistency proof is empty")
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != old_root or sr != new_root:
        raise ProofError("the new tree head is not an extension of the old one")


def pack_proof(proof: Sequence[bytes]) -> bytes:
    """A proof on the wire: its hashes concatenated (one value to encode, not a list)."""
    _check_hashes(proof)
    return b"".join(proof)


def unpack_proof(data: bytes) -> list[bytes]:
    """The hashes of a packed proof; ProofError unless whole 32-byte hashes, at most 64."""
    if len(data) % HASH_SIZE or len(data) > MAX_PROOF_HASHES * HASH_SIZE:
        raise ProofError("malformed proof")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def _check_hashes(proof: Sequence[bytes]) -> None:
    if len(proof) > MAX_PROOF_HASHES or any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("malformed proof")


# --- a tree over an in-memory leaf list (tests, auditor, backfill) ----------------------


class MemoryTree:
    """Leaf hashes plus every complete node, so proofs are O(log n) here too."""

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = [[]]

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append_leaf_hash(self, leaf: bytes) -> None:
        self.levels[0].append(leaf)
        level = 0
        while len(self.levels[level]) % 2 == 0:
            pair = self.levels[level][-2:]
            if level + 1 == len(self.levels):
                self.levels.append([])
            self.levels[level + 1].append(node_hash(pair[0], pair[1]))
            level += 1

    def subtree(self, level: int, index: int) -> bytes:
        return self.levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        return root(self.size if size is None else size, self.subtree)


def completed_nodes(
    size_before: int, leaf: bytes, subtree: Subtree
) -> list[tuple[int, int, bytes]]:
    """The (level, index, hash) nodes that appending `leaf` as leaf `size_before` completes."""
    nodes = [(0, size_before, leaf)]
    level, index, current = 0, size_before, leaf
    while index & 1:
        current = node_hash(subtree(level, index - 1), current)
        level, index = level + 1, index >> 1
        nodes.append((level, index, current))
    return nodes


# --- signed tree heads ------------------------------------------------------------------


@dataclass(frozen=True)
class TreeHead:
    """The server's signed statement: the log had `size` entries with this root at this time."""

    size: int
    root: bytes
    timestamp: int  # milliseconds since the epoch
    signature: bytes

    def to_wire(self) -> dict[str, object]:
        return {
            "size": self.size,
            "root": self.root,
            "timestamp": self.timestamp,
            "signature": self.signature,
        }

    @classmethod
    def from_wire(cls, value: object) -> TreeHead:
        if not isinstance(value, Mapping):  # a decoded dict, or the server's own `Encoded`
            raise ProofError("malformed tree head")
        size, root_, timestamp, signature = (
            value.get("size"),
            value.get("root"),
            value.get("timestamp"),
            value.get("signature"),
        )
        if (
            not isinstance(size, int)
            or isinstance(size, bool)
            or not 0 <= size < 1 << 63
            or not isinstance(timestamp, int)
            or isinstance(timestamp, bool)
            or not 0 <= timestamp < 1 << 63
            or not isinstance(root_, bytes)
            or len(root_) != HASH_SIZE
            or not isinstance(signature, bytes)
            or len(signature) != 64
        ):
            raise ProofError("malformed tree head")
        return cls(size, root_, timestamp, signature)


def tree_head_message(size: int, root_: bytes, timestamp: int) -> bytes:
    """What is signed: a context string (domain separation) then size, time and root."""
    return TREE_HEAD_CONTEXT + struct.pack(">QQ", size, timestamp) + root_


def sign_tree_head(key: Ed25519PrivateKey, size: int, root_: bytes, timestamp: int) -> TreeHead:
    signature = key.sign(tree_head_message(size, root_, timestamp))
    return TreeHead(size, root_, timestamp, signature)


def verify_tree_head(head: TreeHead, ca_public: bytes) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(ca_public).verify(
            head.signature, tree_head_message(head.size, head.root, head.timestamp)
        )
    except (InvalidSignature, ValueError):
        raise ProofError("tree head signature does not verify") from None


# --- log entries ------------------------------------------------------------------------

ENTRY_KINDS = ("certificate", "kem_key")
_ENTRY_VERSION = 1


@dataclass(frozen=True)
class LogEntry:
    """One leaf: what kind of key, whose, and the key's bytes (a DER certificate, ...)."""

    kind: str
    username: str
    payload: bytes

    def encode(self) -> bytes:
        """Unambiguous leaf bytes: version, then length-prefixed kind, username, payload."""
        if self.kind not in ENTRY_KINDS:
            raise ValueError(f"unknown log entry kind {self.kind!r}")
        kind = self.kind.encode("ascii")
        name = self.username.encode("utf-8")
        return (
            struct.pack(">BB", _ENTRY_VERSION, len(kind))
            + kind
            + struct.pack(">H", len(name))
            + name
            + struct.pack(">I", len(self.payload))
            + self.payload
        )

    @property
    def leaf_hash(self) -> bytes:
        return leaf_hash(self.encode())
