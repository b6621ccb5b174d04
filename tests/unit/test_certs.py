"""Unit tests for the private CA: server identity, CSRs, user certificates, safety numbers."""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtensionOID, NameOID

from common.crypto.certs import (
    AGREEMENT_KEY_OID,
    SERVER_CERT_FILE,
    SERVER_KEY_FILE,
    CsrInfo,
    ServerIdentity,
    UserCertificate,
    _safety_half,
    build_csr,
    fingerprint,
    format_fingerprint,
    issue_certificate,
    load_user_certificate,
    safety_number,
    verify_csr,
)
from common.crypto.keys import UserKeys, generate_user_keys
from common.errors import CertificateError


@pytest.fixture(scope="module")
def ca() -> ServerIdentity:
    return ServerIdentity.create()


@pytest.fixture(scope="module")
def alice_keys() -> UserKeys:
    return generate_user_keys()


def _certify(ca: ServerIdentity, keys: UserKeys, name: str = "alice") -> bytes:
    return issue_certificate(ca, verify_csr(build_csr(name, f"{name}@example.org", keys)))


# --- server identity --------------------------------------------------------------------


def test_created_identity_is_a_self_signed_ed25519_ca(ca: ServerIdentity) -> None:
    cert = ca.certificate
    assert cert.issuer == cert.subject
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Uchat server CA"
    public = cert.public_key()
    assert isinstance(public, Ed25519PublicKey)
    public.verify(cert.signature, cert.tbs_certificate_bytes)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.digital_signature
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=3650) <= lifetime <= datetime.timedelta(days=3651)


def test_identity_exposes_der_fingerprint_and_raw_public_key(ca: ServerIdentity) -> None:
    der = ca.certificate.public_bytes(Encoding.DER)
    assert ca.certificate_der == der
    assert ca.fingerprint == hashlib.sha256(der).hexdigest()
    raw = ca.certificate.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert ca.public_key_bytes == raw
    assert len(ca.public_key_bytes) == 32


def test_create_uses_the_common_name_and_fresh_keys() -> None:
    one = ServerIdentity.create("Office CA")
    two = ServerIdentity.create("Office CA")
    assert one.certificate.subject.rfc4514_string() == "CN=Office CA"
    assert one.public_key_bytes != two.public_key_bytes


def test_load_or_create_creates_then_reloads_the_same_identity(tmp_path: Path) -> None:
    first = ServerIdentity.load_or_create(tmp_path / "data")
    key_file = tmp_path / "data" / SERVER_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (tmp_path / "data" / SERVER_CERT_FILE).read_bytes().startswith(b"-----BEGIN CERT")
    second = ServerIdentity.load_or_create(tmp_path / "data")
    assert second.fingerprint == first.fingerprint
    assert second.public_key_bytes == first.public_key_bytes
    assert [p.name for p in (tmp_path / "data").iterdir() if p.name.endswith(".tmp")] == []


def test_load_or_create_recovers_a_crash_between_key_and_certificate(tmp_path: Path) -> None:
    first = ServerIdentity.load_or_create(tmp_path)
    (tmp_path / SERVER_CERT_FILE).unlink()
    again = ServerIdentity.load_or_create(tmp_path)
    assert again.public_key_bytes == first.public_key_bytes


def test_load_or_create_refuses_a_certificate_without_its_key(tmp_path: Path) -> None:
    ServerIdentity.load_or_create(tmp_path)
    (tmp_path / SERVER_KEY_FILE).unlink()
    with pytest.raises(CertificateError, match="missing"):
        ServerIdentity.load_or_create(tmp_path)


def test_load_or_create_refuses_a_certificate_for_another_key(tmp_path: Path) -> None:
    ServerIdentity.load_or_create(tmp_path)
    other = ServerIdentity.create().certificate.public_bytes(Encoding.PEM)
    (tmp_path / SERVER_CERT_FILE).write_bytes(other)
    with pytest.raises(CertificateError, match="does not match"):
        ServerIdentity.load_or_create(tmp_path)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_load_or_create_refuses_a_key_readable_by_others(tmp_path: Path) -> None:
    ServerIdentity.load_or_create(tmp_path)
    os.chmod(tmp_path / SERVER_KEY_FILE, 0o644)
    with pytest.raises(CertificateError, match="readable by others"):
        ServerIdentity.load_or_create(tmp_path)


def test_load_or_create_refuses_a_corrupt_key_or_certificate(tmp_path: Path) -> None:
    ServerIdentity.load_or_create(tmp_path)
    cert_file = tmp_path / SERVER_CERT_FILE
    cert_file.write_bytes(b"not a certificate")
    with pytest.raises(CertificateError, match="certificate"):
        ServerIdentity.load_or_create(tmp_path)
    (tmp_path / SERVER_KEY_FILE).write_bytes(b"not a key")
    with pytest.raises(CertificateError, match="not a valid PEM"):
        ServerIdentity.load_or_create(tmp_path)


# --- CSR --------------------------------------------------------------------------------


def test_csr_round_trip_carries_username_email_and_both_keys(alice_keys: UserKeys) -> None:
    der = build_csr("alice", "alice@example.org", alice_keys)
    info = verify_csr(der)
    assert info == CsrInfo(
        "alice", "alice@example.org", alice_keys.identity_public, alice_keys.agreement_public
    )


def test_csr_structure_matches_the_design(alice_keys: UserKeys) -> None:
    csr = x509.load_der_x509_csr(build_csr("alice", "alice@example.org", alice_keys))
    assert csr.subject.rfc4514_string() == "CN=alice"
    extension = csr.extensions.get_extension_for_oid(AGREEMENT_KEY_OID)
    assert not extension.critical
    assert isinstance(extension.value, x509.UnrecognizedExtension)
    assert extension.value.value == b"\x04\x20" + alice_keys.agreement_public
    alt = csr.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    assert isinstance(alt.value, x509.SubjectAlternativeName)
    assert alt.value.get_values_for_type(x509.RFC822Name) == ["alice@example.org"]


def test_csr_accepts_a_unicode_username(alice_keys: UserKeys) -> None:
    assert verify_csr(build_csr("小明", "xm@example.org", alice_keys)).username == "小明"


@pytest.mark.parametrize(
    ("username", "email"), [("a" * 65, "a@example.org"), ("alice", "ü@example.org")]
)
def test_build_csr_refuses_what_x509_cannot_carry(
    alice_keys: UserKeys, username: str, email: str
) -> None:
    with pytest.raises(CertificateError, match="cannot certify"):
        build_csr(username, email, alice_keys)


def test_verify_csr_refuses_garbage() -> None:
    with pytest.raises(CertificateError, match="is malformed"):
        verify_csr(b"\x30\x03\x02\x01\x00")


def test_verify_csr_refuses_a_non_ed25519_key(alice_keys: UserKeys) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(CertificateError, match="Ed25519"):
        verify_csr(csr.public_bytes(Encoding.DER))


def _csr(
    keys: UserKeys,
    names: list[x509.NameAttribute[str]] | None = None,
    extensions: list[tuple[x509.ExtensionType, bool]] | None = None,
) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name(names or [x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
    )
    for value, critical in extensions or []:
        builder = builder.add_extension(value, critical=critical)
    return builder.sign(keys.identity, None).public_bytes(Encoding.DER)


def _san(*emails: str) -> tuple[x509.ExtensionType, bool]:
    return x509.SubjectAlternativeName([x509.RFC822Name(e) for e in emails]), False


def _agreement(value: bytes, critical: bool = False) -> tuple[x509.ExtensionType, bool]:
    return x509.UnrecognizedExtension(AGREEMENT_KEY_OID, value), critical


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("no_agreement", "missing X25519"),
        ("short_agreement", "malformed X25519"),
        ("not_octet_string", "malformed X25519"),
        ("critical_agreement", "malformed X25519"),
        ("small_order", "small-order"),
        ("no_email", "missing subject alternative name"),
        ("two_emails", "exactly one e-mail"),
        ("extra_subject", "exactly one common name"),
        ("unknown_critical", "unknown critical extension"),
    ],
)
def test_verify_csr_refuses_malformed_contents(
    alice_keys: UserKeys, shape: str, message: str
) -> None:
    good_key = b"\x04\x20" + alice_keys.agreement_public
    cn = x509.NameAttribute(NameOID.COMMON_NAME, "alice")
    shapes: dict[
        str, tuple[list[x509.NameAttribute[str]], list[tuple[x509.ExtensionType, bool]]]
    ] = {
        "no_agreement": ([cn], [_san("a@example.org")]),
        "short_agreement": ([cn], [_san("a@example.org"), _agreement(good_key[:-1])]),
        "not_octet_string": ([cn], [_san("a@example.org"), _agreement(b"\x03\x20" + good_key[2:])]),
        "critical_agreement": ([cn], [_san("a@example.org"), _agreement(good_key, True)]),
        "small_order": ([cn], [_san("a@example.org"), _agreement(b"\x04\x20" + bytes(32))]),
        "no_email": ([cn], [_agreement(good_key)]),
        "two_emails": ([cn], [_san("a@example.org", "b@example.org"), _agreement(good_key)]),
        "extra_subject": (
            [cn, x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x")],
            [_san("a@example.org"), _agreement(good_key)],
        ),
        "unknown_critical": (
            [cn],
            [
                _san("a@example.org"),
                _agreement(good_key),
                (x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00"), True),
            ],
        ),
    }
    names, extensions = shapes[shape]
    with pytest.raises(CertificateError, match=message):
        verify_csr(_csr(alice_keys, names, extensions))


def test_verify_csr_ignores_unknown_non_critical_extensions(alice_keys: UserKeys) -> None:
    extra = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00")
    der = _csr(
        alice_keys,
        extensions=[
            _san("a@example.org"),
            _agreement(b"\x04\x20" + alice_keys.agreement_public),
            (extra, False),
        ],
    )
    assert verify_csr(der).email == "a@example.org"


# --- certificates -----------------------------------------------------------------------


def test_issued_certificate_is_a_user_certificate_from_the_ca(
    ca: ServerIdentity, alice_keys: UserKeys
) -> None:
    der = issue_certificate(ca, verify_csr(build_csr("alice", "a@example.org", alice_keys)), 77)
    cert = x509.load_der_x509_certificate(der)
    assert cert.serial_number == 77
    assert cert.issuer == ca.certificate.subject
    assert cert.subject.rfc4514_string() == "CN=alice"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    agreement = cert.extensions.get_extension_for_oid(AGREEMENT_KEY_OID).value
    assert isinstance(agreement, x509.UnrecognizedExtension)
    assert agreement.value == b"\x04\x20" + alice_keys.agreement_public
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=825) <= lifetime <= datetime.timedelta(days=826)
    cert.verify_directly_issued_by(ca.certificate)


def test_issue_certificate_honours_the_validity_in_days(
    ca: ServerIdentity, alice_keys: UserKeys
) -> None:
    info = verify_csr(build_csr("alice", "a@example.org", alice_keys))
    cert = x509.load_der_x509_certificate(issue_certificate(ca, info, days=30))
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=30) <= lifetime <= datetime.timedelta(days=31)


def test_issue_certificate_uses_random_distinct_serials(
    ca: ServerIdentity, alice_keys: UserKeys
) -> None:
    serials = {x509.load_der_x509_certificate(_certify(ca, alice_keys)).serial_number for _ in "ab"}
    assert len(serials) == 2


def test_issue_certificate_refuses_wrong_key_sizes(ca: ServerIdentity) -> None:
    with pytest.raises(CertificateError, match="32 raw bytes"):
        issue_certificate(ca, CsrInfo("alice", "a@example.org", b"\x01" * 31, b"\x02" * 32))


@pytest.mark.parametrize("as_der", [False, True])
def test_load_user_certificate_round_trip(
    ca: ServerIdentity, alice_keys: UserKeys, as_der: bool
) -> None:
    der = _certify(ca, alice_keys)
    authority = ca.certificate_der if as_der else ca.certificate
    loaded = load_user_certificate(der, authority)
    assert loaded == UserCertificate(
        username="alice",
        email="alice@example.org",
        identity_public=alice_keys.identity_public,
        agreement_public=alice_keys.agreement_public,
        fingerprint=hashlib.sha256(der).hexdigest(),
        der=der,
    )


def test_load_user_certificate_refuses_the_ca_certificate_itself(ca: ServerIdentity) -> None:
    with pytest.raises(CertificateError, match="CA certificate cannot be a user"):
        load_user_certificate(ca.certificate_der, ca.certificate)


def test_load_user_certificate_refuses_a_certificate_not_valid_yet(
    ca: ServerIdentity, alice_keys: UserKeys
) -> None:
    info = verify_csr(build_csr("alice", "a@example.org", alice_keys))
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)
    with pytest.raises(CertificateError, match="not valid yet"):
        load_user_certificate(issue_certificate(ca, info, now=later), ca.certificate)


def test_load_user_certificate_refuses_a_garbage_ca(
    ca: ServerIdentity, alice_keys: UserKeys
) -> None:
    with pytest.raises(CertificateError, match="CA certificate is malformed"):
        load_user_certificate(_certify(ca, alice_keys), b"junk")


def test_load_user_certificate_refuses_garbage(ca: ServerIdentity) -> None:
    with pytest.raises(CertificateError, match="is malformed"):
        load_user_certificate(b"\x30\x00", ca.certificate)


# --- fingerprints and safety numbers -----------------------------------------------------


def test_fingerprint_is_lowercase_sha256_hex() -> None:
    assert fingerprint(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint(b""))


def test_format_fingerprint_groups_by_four() -> None:
    fp = hashlib.sha256(b"x").hexdigest()
    shown = format_fingerprint(fp.upper())
    assert shown.split(" ") == [fp[i : i + 4] for i in range(0, 64, 4)]
    assert format_fingerprint(shown) == shown


def test_safety_number_half_matches_libsignal_test_vector() -> None:
    # libsignal NumericFingerprintGeneratorTest: 5200 iterations, these keys and ids.
    alice = bytes.fromhex("0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868")
    bob = bytes.fromhex("05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b")
    expected = "300354477692869396892869876765458257569162576843440918079131"
    assert _safety_half("+14152222222", alice) + _safety_half("+14153333333", bob) == expected


def test_safety_number_shape_and_order(alice_keys: UserKeys) -> None:
    bob = generate_user_keys()
    number = safety_number("bob", bob.identity_public, "alice", alice_keys.identity_public)
    assert re.fullmatch(r"\d{5}( \d{5}){11}", number)
    digits = number.replace(" ", "")
    assert digits[:30] == _safety_half("alice", alice_keys.identity_public)
    assert digits[30:] == _safety_half("bob", bob.identity_public)


def test_safety_number_refuses_wrong_key_sizes(alice_keys: UserKeys) -> None:
    with pytest.raises(ValueError, match="32 raw bytes"):
        safety_number("a", alice_keys.identity_public, "b", b"\x00" * 33)
