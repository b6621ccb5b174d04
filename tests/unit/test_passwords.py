"""Password hashing: format, verification, bounds on stored parameters, rehash."""

from __future__ import annotations

import base64
import hashlib

import pytest

from common.crypto.passwords import (
    ScryptParams,
    hash_password,
    needs_rehash,
    params_within_bounds,
    verify_password,
)

FAST = ScryptParams(n=2**10, r=8, p=1)


def test_hash_format_and_round_trip() -> None:
    stored = hash_password("correct horse", FAST)
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "1024", "8", "1")
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(digest)) == 32
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsE", stored)
    assert not verify_password("", stored)


def test_hash_is_scrypt_of_the_password_with_the_stored_salt() -> None:
    stored = hash_password("pässwörd", FAST)
    _, _, _, _, salt, digest = stored.split("$")
    expected = hashlib.scrypt(
        "pässwörd".encode(), salt=base64.b64decode(salt), n=1024, r=8, p=1, dklen=32
    )
    assert base64.b64decode(digest) == expected


def test_salts_are_fresh() -> None:
    assert hash_password("same", FAST) != hash_password("same", FAST)


def test_default_parameters() -> None:
    assert ScryptParams() == ScryptParams(n=2**15, r=8, p=1)
    assert hash_password("x").startswith("scrypt$32768$8$1$")


def _with_params(stored: str, n: str, r: str, p: str) -> str:
    scheme, _, _, _, salt, digest = stored.split("$")
    return "$".join((scheme, n, r, p, salt, digest))


@pytest.mark.parametrize(
    ("n", "r", "p"),
    [
        ("2097152", "8", "1"),  # n above 2**20
        ("1048576", "8", "1"),  # 1 GiB of memory
        ("1000", "8", "1"),  # not a power of two
        ("1", "8", "1"),
        ("0", "8", "1"),
        ("1024", "0", "1"),
        ("1024", "33", "1"),
        ("1024", "8", "0"),
        ("1024", "8", "17"),
        ("-1024", "8", "1"),
        ("1024", "8", "1.0"),
        ("9" * 100, "8", "1"),
        ("\uff11\uff10\uff12\uff14", "8", "1"),  # full-width digits
    ],
)
def test_stored_parameters_out_of_bounds_are_refused(n: str, r: str, p: str) -> None:
    stored = _with_params(hash_password("pw", FAST), n, r, p)
    assert not verify_password("pw", stored)
    assert needs_rehash(stored, FAST)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "scrypt",
        "scrypt$1024$8$1$c2FsdA==",
        "bcrypt$1024$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
        "scrypt$1024$8$1$not base64!$" + "A" * 44,
        "scrypt$1024$8$1$AAAA$" + "A" * 44,  # short salt
        "scrypt$1024$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA",  # short hash
        "scrypt$1024$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44 + "$extra",
    ],
)
def test_malformed_strings_verify_false(stored: str) -> None:
    assert not verify_password("pw", stored)
    assert needs_rehash(stored, FAST)


def test_tampered_hash_fails() -> None:
    stored = hash_password("pw", FAST)
    head, digest = stored.rsplit("$", 1)
    raw = bytearray(base64.b64decode(digest))
    raw[0] ^= 1
    assert not verify_password("pw", f"{head}${base64.b64encode(bytes(raw)).decode()}")


def test_needs_rehash_compares_parameters() -> None:
    stored = hash_password("pw", FAST)
    assert not needs_rehash(stored, FAST)
    assert needs_rehash(stored, ScryptParams(n=2**11))
    assert needs_rehash(stored, ScryptParams(n=2**10, r=4))
    assert needs_rehash(stored)


def test_out_of_bounds_parameters_cannot_be_hashed() -> None:
    with pytest.raises(ValueError):
        hash_password("pw", ScryptParams(n=2**21))
    with pytest.raises(ValueError):
        hash_password("pw", ScryptParams(n=3000))


def test_params_within_bounds() -> None:
    assert params_within_bounds(ScryptParams())
    assert params_within_bounds(ScryptParams(n=2**18))
    assert not params_within_bounds(ScryptParams(n=2**19))  # 512 MiB at r=8
    assert params_within_bounds(ScryptParams(n=2**20, r=2))
    assert not params_within_bounds(ScryptParams(n=2**21, r=1))
