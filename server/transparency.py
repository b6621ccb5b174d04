"""The server's key transparency log: append keys, sign tree heads, answer with proofs.

`append(kind, username, payload)` is the one entry point for every key the server
certifies or accepts (certificates and signed KEM keys). Proofs are built from stored
node hashes, O(log n) lookups per proof; the part of a proof made of complete subtrees
never changes, so it is kept per position and a proof under a newer head walks only
the levels near the top, with the right edge hashed once per size; the part near the
top is the same for every position of a block, so it is kept per block under the
newest size (`_tops`), and a proof asked again is two lookups. A tree head is
signed when a reply needs one covering entries the latest head lacks, so every proof
handed out is against a signed head and the log never waits a minute to show a key.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

from common.crypto import merkle
from common.crypto.certs import ServerIdentity
from common.crypto.merkle import LogEntry, TreeHead
from common.protocol import codec
from server.storage import keylog
from server.storage.database import Database

log = logging.getLogger(__name__)

MAX_RANGE = 256  # entries per KT_RANGE reply (certificates are ~500 bytes)
MAX_USER_ENTRIES = 256  # a page of KT_USER_ENTRIES (client: USER_ENTRIES_PAGE)
NODE_CACHE_LIMIT = 200_000  # about 20 MB; cleared whole when full
#: Kept positions and lasting proof parts: at most this many of each (a proof is 20
#: hashes, 640 bytes, at a million entries: 13 MB), and at most this many proof tops
#: (usually a few hundred: one per block, see `_tops`).
POSITION_CACHE_LIMIT = 20_000
#: Bits of a `_tops` key that hold the level (a proof has fewer than 64 levels).
_LEVEL_BITS = 6
_HASH_SIZE = merkle.HASH_SIZE
#: Nodes at this level and above stay cached for good: 1/32 of the entries' count of
#: nodes (31,000 at a million entries, about 4 MB), so a proof reads only its few
#: lowest siblings from the database.
UPPER_LEVEL = 6
#: A proof's siblings below this level are shared by at most 4 positions, each of
#: which keeps its lasting hashes (`_stable`) once proved: not kept in the node cache
#: (they were about 3 cache entries, 500 bytes, a logged-in user) but in a small one
#: of the latest (RECENT_LOW_LIMIT), enough for the certificate and KEM key proofs of
#: one reply, neighbours in the log. Appends and consistency proofs keep every node.
KEPT_PROOF_LEVEL = 3
RECENT_LOW_LIMIT = 256


class TransparencyLog:
    """The log inside the server database; used on the reactor thread only."""

    def __init__(self, db: Database, identity: ServerIdentity, clock: Callable[[], int]) -> None:
        self._db = db
        self._identity = identity
        self._clock = clock
        # Node hashes never change once written; the caches only forget what a
        # rollback undid (the database tells us), and the head when the log grows.
        self._nodes: dict[tuple[int, int], bytes] = {}  # below UPPER_LEVEL, bounded
        self._upper: dict[tuple[int, int], bytes] = {}
        self._recent_low: dict[tuple[int, int], bytes] = {}  # see KEPT_PROOF_LEVEL
        # The root and the hashes of the subtrees on the right edge of the tree of one
        # size (`_edges`): the same for every proof under one head.
        self._edge_size = -1
        self._edge: dict[int, bytes] = {}
        # Friends fetch the same certificates again and again: keep their positions
        # (keyed by one digest, `_position_key`), for every head to come the part of
        # each proof that cannot change (`_stable`: position -> packed hashes of its
        # lowest levels, 32 bytes a level), and the rest of the proofs under the newest
        # size, shared by every position of a block (`_tops`). Compact on purpose: a
        # logged-in user's entries were a kilobyte of a node's memory per link.
        self._positions: dict[bytes, int] = {}
        self._encoded_head: tuple[TreeHead, codec.Encoded] | None = None
        self._stable: dict[int, bytes] = {}
        self._tops_size = -1
        self._tops: dict[int, bytes] = {}  # _top_key(level, position) -> packed hashes
        self._size: int | None = None
        self._head: TreeHead | None = None
        #: Other processes (cluster nodes) append to the same log: the size is read
        #: again each time, and appends and signatures take the log's lock.
        self._shared = db.backend != "sqlite"
        db.on_rollback(self._forget)

    def _forget(self) -> None:
        self._nodes.clear()
        self._recent_low.clear()
        self._upper.clear()
        self._edge_size, self._edge = -1, {}
        self._positions.clear()
        self._stable.clear()
        self._tops_size, self._tops = -1, {}
        self._size = None
        self._head = None

    def size(self) -> int:
        if self._size is None or self._shared:
            self._size = keylog.size(self._db)
        return self._size

    def catch_up(self) -> int:
        """Hash entries that have no nodes yet (the migration's backfill); return how many."""
        start, end = keylog.hashed_size(self._db), keylog.size(self._db)
        for stored in keylog.entries(self._db, start, end):
            self._hash_in(stored.position, stored.entry)
        if end > start:
            log.info("key transparency log: hashed %d backfilled entries", end - start)
        return end - start

    # -- writing -----------------------------------------------------------------------

    def append(self, kind: str, username: str, payload: bytes) -> int:
        """Append one key to the log; return its position."""
        entry = LogEntry(kind, username, payload)
        entry.encode()  # refuses unknown kinds before anything is written
        keylog.lock_for_append(self._db)
        position = self.size()
        keylog.insert_entry(self._db, position, entry, self._clock())
        self._hash_in(position, entry)
        self._size = position + 1
        return position

    def _hash_in(self, position: int, entry: LogEntry) -> None:
        keylog.insert_nodes(
            self._db, merkle.completed_nodes(position, entry.leaf_hash, self.subtree)
        )

    def subtree(self, level: int, index: int) -> bytes:
        key = (level, index)
        cache = self._upper if level >= UPPER_LEVEL else self._nodes
        value = cache.get(key)
        if value is None:
            value = keylog.node(self._db, level, index)
            if cache is self._nodes and len(cache) >= NODE_CACHE_LIMIT:
                cache.clear()
            cache[key] = value
        return value

    # -- heads and proofs --------------------------------------------------------------

    def head(self) -> TreeHead:
        """The newest signed head, signing one now if entries were appended since."""
        size = self.size()
        if self._head is not None and self._head.size == size:
            return self._head
        latest = keylog.latest_head(self._db)
        if latest is not None and latest.size == size:
            return self._adopt(latest)
        if self._shared:  # another node may be signing this size right now
            keylog.lock_for_append(self._db)
            size = self.size()
            latest = keylog.latest_head(self._db)
            if latest is not None and latest.size == size:
                return self._adopt(latest)
        timestamp = max(self._clock(), latest.timestamp if latest else 0)
        head = merkle.sign_tree_head(self._identity.key, size, self._edges(size)[0], timestamp)
        keylog.insert_head(self._db, head)
        self._head = head
        return head

    def _adopt(self, head: TreeHead) -> TreeHead:
        """A head already stored (signed before a restart, or by another node)."""
        self._head = head
        return head

    def inclusion(self, position: int, head: TreeHead) -> list[bytes]:
        """RFC 9162 PATH(position, D[0:size]), leaf to root (see `packed_inclusion`)."""
        return merkle.unpack_proof(self.packed_inclusion(position, head.size))

    def packed_inclusion(self, position: int, size: int) -> bytes:
        """PATH(position, D[0:size]) packed (`merkle.pack_proof`), walked bottom up.

        At each level the sibling of the block holding `position` is a stored node
        when complete, the hash of the incomplete right edge when it reaches past the
        end (`_edges`, once per size), or absent when it starts past the end. The
        levels below the first incomplete or absent sibling hold hashes of complete
        subtrees, which never change: they are kept per position (`_stable`), so a
        proof under a newer head walks only the few levels near the top. Those top
        levels depend only on the size and the block of `position` at the level where
        they start: kept per block for the newest size (`_tops`), they make a proof
        asked again one join of two kept strings. The same hashes as
        `merkle.inclusion_proof` (tested), without its recursion.
        """
        if not 0 <= position < size:
            raise ValueError("leaf index outside the tree")
        if size != self._tops_size:
            self._tops_size, self._tops = size, {}
        prefix = self._stable.get(position, b"")
        level = len(prefix) // _HASH_SIZE
        top = self._tops.get((position >> level) << _LEVEL_BITS | level)  # _top_key, inline
        if top is not None:
            return prefix + top
        parts = [prefix]
        top_level = -1  # the first level whose sibling is not a complete subtree
        while (1 << level) < size:
            sibling = (position >> level) ^ 1
            start = sibling << level
            if start + (1 << level) <= size:
                if level >= KEPT_PROOF_LEVEL:
                    parts.append(self.subtree(level, sibling))
                else:
                    parts.append(self._low_node(level, sibling))
            else:
                if top_level < 0:
                    top_level = level
                    prefix = b"".join(parts)
                    parts = [prefix]
                if start < size:
                    parts.append(self._edges(size)[1][start])
            level += 1
        if top_level < 0:
            top_level = level
            prefix = b"".join(parts)
            parts = [prefix]
        self._keep_stable(position, prefix)
        top = b"".join(parts[1:])
        if len(self._tops) >= POSITION_CACHE_LIMIT:
            self._tops.clear()
        self._tops[_top_key(top_level, position)] = top
        return prefix + top

    def _low_node(self, level: int, index: int) -> bytes:
        """A complete sibling below KEPT_PROOF_LEVEL for an inclusion proof: `subtree`,
        but kept only among the latest few."""
        key = (level, index)
        value = self._nodes.get(key) or self._recent_low.get(key)
        if value is None:
            value = keylog.node(self._db, level, index)
            if len(self._recent_low) >= RECENT_LOW_LIMIT:
                self._recent_low.clear()
            self._recent_low[key] = value
        return value

    def _keep_stable(self, position: int, packed: bytes) -> None:
        """Remember the proof's hashes below the first incomplete level: all of complete
        subtrees (their count is the level)."""
        if not packed:
            return
        known = self._stable.get(position)
        if known is not None and len(known) >= len(packed):
            return
        if known is None and len(self._stable) >= POSITION_CACHE_LIMIT:
            self._stable.clear()
        self._stable[position] = packed

    def _edges(self, size: int) -> tuple[bytes, dict[int, bytes]]:
        """The root of the tree of `size` entries and MTH(D[start:size]) for every start
        on its right edge (each prefix of `size`'s binary digits): the only hashes a
        proof under this size needs that are not stored nodes. Computed once per size,
        from the smallest complete subtree on the edge up to the root."""
        if self._edge_size == size:
            return self._edge[0], self._edge
        edge: dict[int, bytes] = {}
        if size == 0:
            edge[0] = merkle.EMPTY_ROOT
        else:
            blocks = [bit for bit in range(size.bit_length()) if size >> bit & 1]
            end, value = size, b""
            for bit in blocks:  # lowest set bit first: the rightmost complete block
                start = end - (1 << bit)
                block = self.subtree(bit, start >> bit)
                value = block if not value else merkle.node_hash(block, value)
                edge[start] = value
                end = start
        self._edge_size, self._edge = size, edge
        return edge[0], edge

    def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        if old_size in (0, new_size):
            return []
        return merkle.consistency_proof(old_size, new_size, self.subtree)

    def proof_for(self, kind: str, username: str, payload: bytes, head: TreeHead) -> dict[str, Any]:
        """{position, proof} for the newest entry of exactly this key, under `head`.

        A key the log does not hold gets position -1 and no proof: clients refuse it,
        so the reply still goes out and the refusal is theirs to show.
        """
        position = self._position(kind, username, payload)
        if position is None or position >= head.size:
            log.error("key for %s served without a log entry", username)
            return {"position": -1, "proof": b""}
        return {"position": position, "proof": self.packed_inclusion(position, head.size)}

    def _position(self, kind: str, username: str, payload: bytes) -> int | None:
        key = _position_key(kind, username, payload)
        position = self._positions.get(key)
        if position is None:
            position = keylog.latest_for(self._db, kind, username, payload)
            if position is not None and len(self._positions) < POSITION_CACHE_LIMIT:
                self._positions[key] = position
        return position

    def certificate_proof(self, username: str, certificate: bytes) -> dict[str, Any]:
        """The `transparency` field of a reply carrying one certificate."""
        return self.entry_proof("certificate", username, certificate)

    def entry_proof(self, kind: str, username: str, payload: bytes) -> dict[str, Any]:
        """{head, position, proof} of one key under the newest head (signed now if the
        log grew since: after an append, the appender's reply pays for the new head)."""
        head = self.head()
        return {"head": self._head_wire(head), **self.proof_for(kind, username, payload, head)}

    def _head_wire(self, head: TreeHead) -> codec.Encoded:
        """The head as replies carry it, encoded once per head (every reply with a
        certificate carries it; the appender's reply makes it)."""
        if self._encoded_head is None or self._encoded_head[0] is not head:
            self._encoded_head = (head, codec.Encoded(head.to_wire()))
        return self._encoded_head[1]

    def kem_key_proof(self, username: str, kem_key: bytes | None) -> dict[str, Any] | None:
        """The `kem_transparency` field beside `certificate_proof`: {position, proof} of
        the signed KEM key under the same head (None when there is no key)."""
        if kem_key is None:
            return None
        return self.proof_for("kem_key", username, kem_key, self.head())


def _top_key(level: int, position: int) -> int:
    """`_tops` key: the block of `position` at `level`, and the level."""
    return (position >> level) << _LEVEL_BITS | level


def _position_key(kind: str, username: str, payload: bytes) -> bytes:
    """One 32-byte digest for (kind, case-folded username, payload): a certificate is
    ~500 bytes and a (kind, name, digest) tuple three objects, and 20,000 of either as
    keys were most of what a logged-in user cost the server. The kind (one of a few
    words, no NUL) ends at a NUL and the name is length-prefixed, so no two triples
    hash the same input; one call, as this runs for every proof handed out."""
    name = username.casefold().encode("utf-8")
    return hashlib.sha256(
        b"".join((kind.encode("ascii"), b"\0", len(name).to_bytes(4, "big"), name, payload))
    ).digest()
