"""Attacks on the private CA: forged CSRs, foreign or doctored certificates, key swaps."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from common.crypto.certs import (
    AGREEMENT_KEY_OID,
    ServerIdentity,
    build_csr,
    issue_certificate,
    load_user_certificate,
    safety_number,
    verify_csr,
)
from common.crypto.keys import UserKeys, generate_user_keys
from common.errors import CertificateError

ED25519_ALGORITHM = bytes.fromhex("300506032b6570")


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    encoded = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(encoded)]) + encoded + content


def _signed(to_be_signed: bytes, key: Ed25519PrivateKey) -> bytes:
    """SEQUENCE {tbs, Ed25519, BIT STRING signature}: the shape of a CSR and a certificate."""
    signature = _tlv(0x03, b"\x00" + key.sign(to_be_signed))
    return _tlv(0x30, to_be_signed + ED25519_ALGORITHM + signature)


def _oid_der(dotted: str) -> bytes:
    first, second, *rest = (int(part) for part in dotted.split("."))
    body = bytearray([40 * first + second])
    for arc in rest:
        groups = [arc & 0x7F]
        remaining = arc >> 7
        while remaining:
            groups.append(0x80 | (remaining & 0x7F))
            remaining >>= 7
        body.extend(reversed(groups))
    return _tlv(0x06, bytes(body))


@pytest.fixture(scope="module")
def ca() -> ServerIdentity:
    return ServerIdentity.create()


@pytest.fixture(scope="module")
def alice() -> UserKeys:
    return generate_user_keys()


@pytest.fixture(scope="module")
def alice_der(ca: ServerIdentity, alice: UserKeys) -> bytes:
    return issue_certificate(ca, verify_csr(build_csr("alice", "alice@example.org", alice)))


def test_oid_helper_matches_the_library() -> None:
    cert_oid = x509.ObjectIdentifier(AGREEMENT_KEY_OID.dotted_string)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .add_extension(x509.UnrecognizedExtension(cert_oid, b"\x05\x00"), critical=False)
        .sign(Ed25519PrivateKey.generate(), None)
    )
    assert csr.tbs_certrequest_bytes.count(_oid_der(AGREEMENT_KEY_OID.dotted_string)) == 1


# --- CSR --------------------------------------------------------------------------------


def test_csr_signed_by_a_key_other_than_the_one_inside_is_refused(alice: UserKeys) -> None:
    genuine = x509.load_der_x509_csr(build_csr("alice", "alice@example.org", alice))
    forged = _signed(genuine.tbs_certrequest_bytes, Ed25519PrivateKey.generate())
    assert x509.load_der_x509_csr(forged).public_key() == genuine.public_key()
    with pytest.raises(CertificateError, match="no proof of possession"):
        verify_csr(forged)


def test_resigning_helper_produces_a_csr_the_verifier_accepts(alice: UserKeys) -> None:
    genuine = x509.load_der_x509_csr(build_csr("alice", "alice@example.org", alice))
    assert verify_csr(_signed(genuine.tbs_certrequest_bytes, alice.identity)).username == "alice"


def test_csr_with_a_duplicate_agreement_extension_is_refused(alice: UserKeys) -> None:
    decoy_oid = AGREEMENT_KEY_OID.dotted_string[:-1] + "2"
    other = generate_user_keys()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("a@x.org")]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(AGREEMENT_KEY_OID, b"\x04\x20" + alice.agreement_public),
            critical=False,
        )
        .add_extension(
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier(decoy_oid), b"\x04\x20" + other.agreement_public
            ),
            critical=False,
        )
        .sign(alice.identity, None)
    )
    tbs = csr.tbs_certrequest_bytes
    assert tbs.count(_oid_der(decoy_oid)) == 1
    doubled = tbs.replace(_oid_der(decoy_oid), _oid_der(AGREEMENT_KEY_OID.dotted_string))
    with pytest.raises(CertificateError, match="duplicate extension"):
        verify_csr(_signed(doubled, alice.identity))


def test_every_single_bit_flip_of_a_csr_is_refused_cleanly(alice: UserKeys) -> None:
    der = build_csr("alice", "alice@example.org", alice)
    for bit in range(len(der) * 8):
        flipped = bytearray(der)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CertificateError):
            verify_csr(bytes(flipped))


# --- certificates -----------------------------------------------------------------------


def test_certificate_from_another_ca_with_the_same_name_is_refused(
    ca: ServerIdentity, alice: UserKeys
) -> None:
    impostor = ServerIdentity.create()
    assert impostor.certificate.subject == ca.certificate.subject
    der = issue_certificate(impostor, verify_csr(build_csr("alice", "alice@example.org", alice)))
    with pytest.raises(CertificateError, match="does not verify"):
        load_user_certificate(der, ca.certificate)


def test_certificate_from_another_ca_with_another_name_is_refused(
    ca: ServerIdentity, alice: UserKeys
) -> None:
    impostor = ServerIdentity.create("Evil CA")
    der = issue_certificate(impostor, verify_csr(build_csr("alice", "alice@example.org", alice)))
    with pytest.raises(CertificateError, match="not issued by"):
        load_user_certificate(der, ca.certificate)


def test_expired_certificate_is_refused(ca: ServerIdentity, alice: UserKeys) -> None:
    info = verify_csr(build_csr("alice", "alice@example.org", alice))
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=60)
    der = issue_certificate(ca, info, days=30, now=long_ago)
    with pytest.raises(CertificateError, match="expired"):
        load_user_certificate(der, ca.certificate)
    assert load_user_certificate(der, ca.certificate, now=long_ago).username == "alice"


@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
def test_every_single_bit_flip_of_a_certificate_is_refused(
    ca: ServerIdentity, alice_der: bytes
) -> None:
    for bit in range(len(alice_der) * 8):
        flipped = bytearray(alice_der)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CertificateError):
            load_user_certificate(bytes(flipped), ca.certificate)


def _recode_signature(der: bytes) -> bytes:
    """Same signature bytes, announced as a 511-bit BIT STRING: still parseable DER."""
    assert der[-67:-64] == bytes([0x03, 0x41, 0x00])
    return der[:-65] + b"\x01" + der[-64:]


def test_a_second_encoding_of_the_signature_is_refused(ca: ServerIdentity, alice: UserKeys) -> None:
    # The parser accepts a BIT STRING with one unused bit when that bit is zero; that
    # would be the same certificate under a new fingerprint (a fake "key changed").
    info = verify_csr(build_csr("alice", "alice@example.org", alice))
    der = next(d for d in (issue_certificate(ca, info) for _ in range(200)) if d[-1] % 2 == 0)
    x509.load_der_x509_certificate(_recode_signature(der))
    with pytest.raises(CertificateError, match="plain Ed25519 signature"):
        load_user_certificate(_recode_signature(der), ca.certificate)
    csrs = (build_csr("alice", f"alice{i}@example.org", alice) for i in range(200))
    csr = next(d for d in csrs if d[-1] % 2 == 0)
    x509.load_der_x509_csr(_recode_signature(csr))
    with pytest.raises(CertificateError, match="plain Ed25519 signature"):
        verify_csr(_recode_signature(csr))


def test_swapped_agreement_key_without_resigning_is_refused(
    ca: ServerIdentity, alice: UserKeys, alice_der: bytes
) -> None:
    mallory = generate_user_keys()
    assert alice_der.count(alice.agreement_public) == 1
    swapped = alice_der.replace(alice.agreement_public, mallory.agreement_public)
    with pytest.raises(CertificateError, match="does not verify"):
        load_user_certificate(swapped, ca.certificate)


def test_certificate_without_the_agreement_extension_is_refused(
    ca: ServerIdentity, alice: UserKeys
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
        .issuer_name(ca.certificate.subject)
        .public_key(alice.identity.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("a@x.org")]), critical=False)
        .sign(ca.key, None)
    )
    with pytest.raises(CertificateError, match="missing X25519"):
        load_user_certificate(cert.public_bytes(Encoding.DER), ca.certificate)


def test_certificate_without_basic_constraints_is_refused(
    ca: ServerIdentity, alice: UserKeys
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
        .issuer_name(ca.certificate.subject)
        .public_key(alice.identity.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca.key, None)
    )
    with pytest.raises(CertificateError, match="basic constraints"):
        load_user_certificate(cert.public_bytes(Encoding.DER), ca.certificate)


def test_a_non_ed25519_ca_is_refused(alice_der: bytes) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Uchat server CA")])
    now = datetime.datetime.now(datetime.UTC)
    ec_ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(CertificateError, match="CA key must be Ed25519"):
        load_user_certificate(alice_der, ec_ca)


# --- safety numbers ---------------------------------------------------------------------


def test_safety_numbers_are_symmetric_and_change_with_either_key() -> None:
    alice, bob, mallory = (generate_user_keys().identity_public for _ in range(3))
    seen_by_alice = safety_number("alice", alice, "bob", bob)
    assert safety_number("bob", bob, "alice", alice) == seen_by_alice
    assert safety_number("alice", mallory, "bob", bob) != seen_by_alice
    assert safety_number("alice", alice, "bob", mallory) != seen_by_alice
    assert safety_number("alicf", alice, "bob", bob) != seen_by_alice
