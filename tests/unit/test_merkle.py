"""RFC 9162 Merkle tree: reference vectors, random trees, tampering, signed tree heads."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from common.crypto import merkle
from common.crypto.merkle import LogEntry, MemoryTree, ProofError, TreeHead

# Certificate Transparency reference leaves and roots for sizes 1..8 (RFC 6962 test data).
LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
H = bytes.fromhex
INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (0, 1, []),
]  # fmt: skip
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip


def tree_of(leaves: list[bytes]) -> MemoryTree:
    tree = MemoryTree()
    for data in leaves:
        tree.append_leaf_hash(merkle.leaf_hash(data))
    return tree


def naive_root(hashes: list[bytes]) -> bytes:
    """MTH straight from RFC 9162 §2.1.1, recursion and all."""
    if not hashes:
        return merkle.EMPTY_ROOT
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return merkle.node_hash(naive_root(hashes[:k]), naive_root(hashes[k:]))


REFERENCE = tree_of(LEAVES)


def test_empty_root_and_leaf_prefix() -> None:
    assert (
        merkle.EMPTY_ROOT.hex()
        == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle.leaf_hash(b"").hex() == ROOTS[0]


@pytest.mark.parametrize("size", range(1, 9))
def test_reference_roots(size: int) -> None:
    assert REFERENCE.root(size).hex() == ROOTS[size - 1]
    assert tree_of(LEAVES[:size]).root().hex() == ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_reference_inclusion_proofs(index: int, size: int, proof: list[str]) -> None:
    got = merkle.inclusion_proof(index, size, REFERENCE.subtree)
    assert [p.hex() for p in got] == proof
    merkle.verify_inclusion(merkle.leaf_hash(LEAVES[index]), index, size, got, H(ROOTS[size - 1]))


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_reference_consistency_proofs(old: int, new: int, proof: list[str]) -> None:
    got = merkle.consistency_proof(old, new, REFERENCE.subtree)
    assert [p.hex() for p in got] == proof
    merkle.verify_consistency(old, new, H(ROOTS[old - 1]), H(ROOTS[new - 1]), got)


@pytest.mark.parametrize("size", range(1, 9))
def test_every_reference_proof_verifies(size: int) -> None:
    for index in range(size):
        proof = merkle.inclusion_proof(index, size, REFERENCE.subtree)
        merkle.verify_inclusion(
            merkle.leaf_hash(LEAVES[index]), index, size, proof, H(ROOTS[size - 1])
        )
    for old in range(1, size + 1):
        proof = merkle.consistency_proof(old, size, REFERENCE.subtree)
        merkle.verify_consistency(old, size, H(ROOTS[old - 1]), H(ROOTS[size - 1]), proof)


leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=70, unique=True)


@settings(max_examples=60, deadline=None)
@given(leaf_lists, st.data())
def test_random_inclusion(leaves: list[bytes], data: st.DataObject) -> None:
    tree = tree_of(leaves)
    size = data.draw(st.integers(1, len(leaves)))
    index = data.draw(st.integers(0, size - 1))
    assert tree.root(size) == naive_root([merkle.leaf_hash(x) for x in leaves[:size]])
    proof = merkle.inclusion_proof(index, size, tree.subtree)
    root = tree.root(size)
    merkle.verify_inclusion(merkle.leaf_hash(leaves[index]), index, size, proof, root)
    assert len(proof) <= (size - 1).bit_length()
    with pytest.raises(ProofError):
        merkle.verify_inclusion(merkle.leaf_hash(leaves[index] + b"x"), index, size, proof, root)
    if size > 1:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(
                merkle.leaf_hash(leaves[index]), (index + 1) % size, size, proof, root
            )


@settings(max_examples=60, deadline=None)
@given(leaf_lists, st.data())
def test_random_consistency(leaves: list[bytes], data: st.DataObject) -> None:
    tree = tree_of(leaves)
    new = data.draw(st.integers(1, len(leaves)))
    old = data.draw(st.integers(1, new))
    proof = merkle.consistency_proof(old, new, tree.subtree)
    merkle.verify_consistency(old, new, tree.root(old), tree.root(new), proof)
    # A forked log: same old size, one old entry replaced.
    forked = list(leaves)
    forked[data.draw(st.integers(0, old - 1))] += b"fork"
    fork = tree_of(forked)
    if old < new:
        with pytest.raises(ProofError):
            merkle.verify_consistency(old, new, tree.root(old), fork.root(new), proof)
        with pytest.raises(ProofError):
            fork_proof = merkle.consistency_proof(old, new, fork.subtree)
            merkle.verify_consistency(old, new, tree.root(old), fork.root(new), fork_proof)


@pytest.mark.parametrize("position", range(3))
def test_tampered_proof_hash_is_refused(position: int) -> None:
    proof = merkle.inclusion_proof(5, 8, REFERENCE.subtree)
    proof[position] = bytes([proof[position][0] ^ 1]) + proof[position][1:]
    with pytest.raises(ProofError):
        merkle.verify_inclusion(merkle.leaf_hash(LEAVES[5]), 5, 8, proof, H(ROOTS[7]))
    cproof = merkle.consistency_proof(6, 8, REFERENCE.subtree)
    cproof[position] = bytes(32)
    with pytest.raises(ProofError):
        merkle.verify_consistency(6, 8, H(ROOTS[5]), H(ROOTS[7]), cproof)


def test_truncated_extended_and_malformed_proofs_are_refused() -> None:
    proof = merkle.inclusion_proof(5, 8, REFERENCE.subtree)
    leaf, root = merkle.leaf_hash(LEAVES[5]), H(ROOTS[7])
    for bad in (proof[:-1], [*proof, proof[0]], [*proof[:-1], proof[-1][:31]], [bytes(32)] * 65):
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaf, 5, 8, bad, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaf, 8, 8, proof, root)
    cproof = merkle.consistency_proof(2, 5, REFERENCE.subtree)
    with pytest.raises(ProofError):
        merkle.verify_consistency(5, 2, H(ROOTS[4]), H(ROOTS[1]), cproof)
    with pytest.raises(ProofError):
        merkle.verify_consistency(2, 5, H(ROOTS[1]), H(ROOTS[4]), [*cproof, bytes(32)])
    with pytest.raises(ProofError):
        merkle.verify_consistency(2, 5, H(ROOTS[1]), H(ROOTS[4]), cproof[:1])
    with pytest.raises(ProofError):  # a rolled-back or rewritten head of the same size
        merkle.verify_consistency(8, 8, H(ROOTS[7]), H(ROOTS[6]), [])


def test_proof_generation_rejects_impossible_ranges() -> None:
    with pytest.raises(ValueError):
        merkle.inclusion_proof(8, 8, REFERENCE.subtree)
    with pytest.raises(ValueError):
        merkle.consistency_proof(0, 8, REFERENCE.subtree)
    with pytest.raises(ValueError):
        merkle.consistency_proof(5, 4, REFERENCE.subtree)


def test_completed_nodes_match_memory_tree() -> None:
    tree = MemoryTree()
    for i, data in enumerate(LEAVES):
        leaf = merkle.leaf_hash(data)
        nodes = merkle.completed_nodes(i, leaf, tree.subtree)
        tree.append_leaf_hash(leaf)
        for level, index, value in nodes:
            assert tree.subtree(level, index) == value
    assert len(merkle.completed_nodes(7, b"\x00" * 32, REFERENCE.subtree)) == 4


def _public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_tree_head_signature_and_tampering() -> None:
    key = Ed25519PrivateKey.generate()
    head = merkle.sign_tree_head(key, 8, H(ROOTS[7]), 1_700_000_000_000)
    merkle.verify_tree_head(head, _public(key))
    assert TreeHead.from_wire(head.to_wire()) == head
    for bad in (
        TreeHead(7, head.root, head.timestamp, head.signature),
        TreeHead(8, H(ROOTS[6]), head.timestamp, head.signature),
        TreeHead(8, head.root, head.timestamp + 1, head.signature),
    ):
        with pytest.raises(ProofError):
            merkle.verify_tree_head(bad, _public(key))
    with pytest.raises(ProofError):
        merkle.verify_tree_head(head, _public(Ed25519PrivateKey.generate()))
    # Domain separation: a signature over the bare fields is not a tree head signature.
    raw = key.sign(
        merkle.tree_head_message(8, head.root, head.timestamp)[len(merkle.TREE_HEAD_CONTEXT) :]
    )
    with pytest.raises(ProofError):
        merkle.verify_tree_head(TreeHead(8, head.root, head.timestamp, raw), _public(key))


@pytest.mark.parametrize(
    "wire",
    [None, {}, {"size": -1, "root": bytes(32), "timestamp": 0, "signature": bytes(64)},
     {"size": 1, "root": bytes(31), "timestamp": 0, "signature": bytes(64)},
     {"size": True, "root": bytes(32), "timestamp": 0, "signature": bytes(64)},
     {"size": 1, "root": bytes(32), "timestamp": 0, "signature": bytes(63)}],
)  # fmt: skip
def test_malformed_tree_heads(wire: object) -> None:
    with pytest.raises(ProofError):
        TreeHead.from_wire(wire)


def test_log_entry_encoding_is_unambiguous_and_kinds_are_closed() -> None:
    a = LogEntry("certificate", "ab", b"c").encode()
    b = LogEntry("certificate", "a", b"bc").encode()
    assert a != b
    assert (
        LogEntry("kem_key", "ab", b"c").leaf_hash != LogEntry("certificate", "ab", b"c").leaf_hash
    )
    with pytest.raises(ValueError):
        LogEntry("password", "ab", b"c").encode()


def test_packed_proofs_round_trip_and_refuse_bad_lengths() -> None:
    hashes = [bytes([i]) * 32 for i in range(20)]
    packed = merkle.pack_proof(hashes)
    assert len(packed) == 640 and merkle.unpack_proof(packed) == hashes
    assert merkle.unpack_proof(b"") == []
    for bad in (b"x" * 31, b"x" * 33, b"x" * 32 * 65):
        with pytest.raises(merkle.ProofError):
            merkle.unpack_proof(bad)
    with pytest.raises(merkle.ProofError):
        merkle.pack_proof([b"short"])
