"""Known-answer tests from the RFCs and NIST, run through `common.crypto.primitives`.

The vectors are copied from the documents as hex; a failure here means the wrapper
(not the library) changed what the protocol computes.
"""

from __future__ import annotations

import pytest

from common.crypto import primitives
from common.errors import CryptoError


def _h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# RFC 7748 section 5.2: (scalar, u-coordinate, output).
X25519_FUNCTION_VECTORS = [
    (
        "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
        "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
    ),
    (
        "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
        "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
        "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
    ),
]

# RFC 7748 section 5.2, iterated: k = u = 9, then (k, u) = (X25519(k, u), k).
X25519_ITERATED = {
    1: "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079",
    1000: "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51",
}

# RFC 7748 section 6.1.
ALICE_PRIVATE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
ALICE_PUBLIC = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
BOB_PRIVATE = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
BOB_PUBLIC = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
ALICE_BOB_SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"


def test_x25519_rfc7748_function_vectors() -> None:
    for scalar, u_coordinate, expected in X25519_FUNCTION_VECTORS:
        private = primitives.x25519_private_from_bytes(_h(scalar))
        assert primitives.x25519_shared(private, _h(u_coordinate)) == _h(expected)


def test_x25519_rfc7748_iterated() -> None:
    k = u = bytes([9]) + bytes(31)
    for iteration in range(1, max(X25519_ITERATED) + 1):
        k, u = primitives.x25519_shared(primitives.x25519_private_from_bytes(k), u), k
        if iteration in X25519_ITERATED:
            assert k == _h(X25519_ITERATED[iteration])


def test_x25519_rfc7748_alice_and_bob() -> None:
    alice = primitives.x25519_private_from_bytes(_h(ALICE_PRIVATE))
    bob = primitives.x25519_private_from_bytes(_h(BOB_PRIVATE))
    assert primitives.x25519_public_bytes(alice) == _h(ALICE_PUBLIC)
    assert primitives.x25519_public_bytes(bob) == _h(BOB_PUBLIC)
    assert primitives.x25519_shared(alice, _h(BOB_PUBLIC)) == _h(ALICE_BOB_SHARED)
    assert primitives.x25519_shared(bob, _h(ALICE_PUBLIC)) == _h(ALICE_BOB_SHARED)


@pytest.mark.parametrize("peer", [bytes(32), bytes([1]) + bytes(31), bytes(31), bytes(33)])
def test_x25519_rejects_small_order_and_wrong_length_keys(peer: bytes) -> None:
    alice = primitives.x25519_private_from_bytes(_h(ALICE_PRIVATE))
    with pytest.raises(CryptoError, match="invalid X25519 public key"):
        primitives.x25519_shared(alice, peer)


# RFC 8032 section 7.1: (secret key, public key, message, signature).
ED25519_VECTORS = {
    "test 1": (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    "test 2": (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    "test 3": (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    "test SHA(abc)": (
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
        "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
}


@pytest.mark.parametrize("name", sorted(ED25519_VECTORS))
def test_ed25519_rfc8032(name: str) -> None:
    secret, public, message, signature = (_h(value) for value in ED25519_VECTORS[name])
    private = primitives.ed25519_private_from_bytes(secret)
    assert primitives.ed25519_public_bytes(private) == public
    assert primitives.ed25519_sign(private, message) == signature
    assert primitives.ed25519_verify(public, signature, message)
    assert not primitives.ed25519_verify(public, signature, message + b"\x00")
    forged = bytes([signature[0] ^ 1]) + signature[1:]
    assert not primitives.ed25519_verify(public, forged, message)


def test_ed25519_verify_never_raises_on_garbage() -> None:
    _, public, message, signature = (_h(value) for value in ED25519_VECTORS["test 2"])
    assert not primitives.ed25519_verify(public[:31], signature, message)
    assert not primitives.ed25519_verify(public, signature[:63], message)
    assert not primitives.ed25519_verify(b"\xff" * 32, signature, message)
    assert not primitives.ed25519_verify(b"", b"", b"")


# RFC 5869 appendix A.1-A.3: (IKM, salt, info, L, OKM).
HKDF_VECTORS = {
    "case 1": (
        "0b" * 22,
        "000102030405060708090a0b0c",
        "f0f1f2f3f4f5f6f7f8f9",
        42,
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    "case 2": (
        bytes(range(0x00, 0x50)).hex(),
        bytes(range(0x60, 0xB0)).hex(),
        bytes(range(0xB0, 0x100)).hex(),
        82,
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    "case 3": (
        "0b" * 22,
        "",
        "",
        42,
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
}


@pytest.mark.parametrize("name", sorted(HKDF_VECTORS))
def test_hkdf_sha256_rfc5869(name: str) -> None:
    ikm, salt, info, length, okm = HKDF_VECTORS[name]
    assert primitives.hkdf_sha256(_h(ikm), _h(salt), _h(info), length) == _h(okm)


_LONG_KEY_DATA = (
    b"This is a test using a larger than block-size key and a larger than block-size data."
    b" The key needs to be hashed before being used by the HMAC algorithm."
)

# RFC 4231 section 4: (key, data, HMAC-SHA-256). Case 5 is truncated to 128 bits.
HMAC_SHA256_VECTORS = {
    "case 1": (
        bytes([0x0B]) * 20,
        b"Hi There",
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    ),
    "case 2": (
        b"Jefe",
        b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    "case 3": (
        bytes([0xAA]) * 20,
        bytes([0xDD]) * 50,
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
    ),
    "case 4": (
        bytes(range(1, 26)),
        bytes([0xCD]) * 50,
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    ),
    "case 5": (
        bytes([0x0C]) * 20,
        b"Test With Truncation",
        "a3b6167473100ee06e0c796c2955552b",
    ),
    "case 6": (
        bytes([0xAA]) * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    "case 7": (
        bytes([0xAA]) * 131,
        _LONG_KEY_DATA,
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
}


@pytest.mark.parametrize("name", sorted(HMAC_SHA256_VECTORS))
def test_hmac_sha256_rfc4231(name: str) -> None:
    key, data, expected_hex = HMAC_SHA256_VECTORS[name]
    expected = _h(expected_hex)
    tag = primitives.hmac_sha256(key, data)
    assert len(tag) == 32
    assert tag[: len(expected)] == expected


# RFC 2202 section 2: (key, data, HMAC-MD5).
HMAC_MD5_VECTORS = {
    "case 1": (bytes([0x0B]) * 16, b"Hi There", "9294727a3638bb1c13f48ef8158bfc9d"),
    "case 2": (b"Jefe", b"what do ya want for nothing?", "750c783e6ab0b503eaa86e310a5db738"),
    "case 3": (bytes([0xAA]) * 16, bytes([0xDD]) * 50, "56be34521d144c88dbb8c733f0e8b3f6"),
    "case 4": (bytes(range(1, 26)), bytes([0xCD]) * 50, "697eaf0aca3a3aea3a75164746ffaa79"),
    "case 5": (bytes([0x0C]) * 16, b"Test With Truncation", "56461ef2342edc00f9bab995690efd4c"),
    "case 6": (
        bytes([0xAA]) * 80,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd",
    ),
    "case 7": (
        bytes([0xAA]) * 80,
        b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data",
        "6f630fad67cda0ee1fb1f562db3aa53e",
    ),
}


@pytest.mark.parametrize("name", sorted(HMAC_MD5_VECTORS))
def test_hmac_md5_hex_rfc2202(name: str) -> None:
    key, data, expected = HMAC_MD5_VECTORS[name]
    assert primitives.hmac_md5_hex(key, data) == expected.encode("ascii")


def test_constant_time_equal() -> None:
    assert primitives.constant_time_equal(b"same tag", b"same tag")
    assert not primitives.constant_time_equal(b"same tag", b"same taG")
    assert not primitives.constant_time_equal(b"short", b"shorter")


# NIST SP 800-38A appendix F.2.5 (encrypt) and F.2.6 (decrypt): CBC-AES256.
CBC_KEY = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"
CBC_IV = "000102030405060708090a0b0c0d0e0f"
CBC_PLAINTEXT = """
    6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51
    30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710
"""
CBC_CIPHERTEXT = """
    f58c4c04d6e5f1ba779eabfb5f7bfbd6 9cfc4e967edb808d679f777bc6702c7d
    39f23369a9d9bacfa530e26304231461 b2eb05e2c39be9fcda6c19078c6a9d1b
"""


def test_aes256_cbc_encrypt_sp800_38a_f25() -> None:
    ciphertext = primitives.aes256_cbc_encrypt(_h(CBC_KEY), _h(CBC_IV), _h(CBC_PLAINTEXT))
    assert ciphertext == _h(CBC_CIPHERTEXT)


def test_aes256_cbc_decrypt_sp800_38a_f26() -> None:
    plaintext = primitives.aes256_cbc_decrypt(_h(CBC_KEY), _h(CBC_IV), _h(CBC_CIPHERTEXT))
    assert plaintext == _h(CBC_PLAINTEXT)


@pytest.mark.parametrize(
    ("key", "iv", "data"),
    [
        (bytes(16), bytes(16), bytes(16)),
        (bytes(32), bytes(8), bytes(16)),
        (bytes(32), bytes(16), bytes(15)),
    ],
)
def test_aes256_cbc_rejects_bad_sizes(key: bytes, iv: bytes, data: bytes) -> None:
    with pytest.raises(ValueError):
        primitives.aes256_cbc_encrypt(key, iv, data)
    with pytest.raises(ValueError):
        primitives.aes256_cbc_decrypt(key, iv, data)


def test_sha256_fips180_abc() -> None:
    assert primitives.sha256(b"abc") == _h(
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


class _ZeroSecretPrivateKey:
    """Stands in for a library that forgot the RFC 7748 section 6.1 check."""

    def exchange(self, peer: object) -> bytes:
        return bytes(32)


def test_x25519_checks_the_zero_secret_itself() -> None:
    bob_public = _h(BOB_PUBLIC)
    with pytest.raises(CryptoError, match="invalid X25519 public key"):
        primitives.x25519_shared(_ZeroSecretPrivateKey(), bob_public)  # type: ignore[arg-type]
