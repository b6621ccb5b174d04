"""The server as a private CA: its own identity, user CSRs and user certificates.

Users prove possession of their Ed25519 identity key by signing a CSR; the CA binds the
username, e-mail and the user's X25519 agreement key (carried in a private extension)
to that identity key. Clients check certificates against the CA they pinned, and
compare fingerprints or safety numbers out of band to rule out a lying server.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import ExtensionOID, NameOID, SignatureAlgorithmOID

from common.crypto.keys import UserKeys
from common.crypto.primitives import x25519_shared
from common.errors import CertificateError, CryptoError
from common.fileio import write_private_file

AGREEMENT_KEY_OID = x509.ObjectIdentifier("1.3.6.1.4.1.59999.1.1")
CA_COMMON_NAME = "Uchat server CA"
CA_VALIDITY_DAYS = 3650
USER_VALIDITY_DAYS = 825
CLOCK_SKEW = datetime.timedelta(minutes=5)
SERVER_KEY_FILE = "server_ca_key.pem"
SERVER_CERT_FILE = "server_ca_cert.pem"
RAW_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
SAFETY_NUMBER_ITERATIONS = 5200
SAFETY_NUMBER_VERSION = b"\x00\x00"

_OCTET_STRING_HEADER = bytes([0x04, RAW_KEY_SIZE])
_SIGNATURE_HEADER = bytes([0x03, ED25519_SIGNATURE_SIZE + 1, 0x00])  # BIT STRING, 0 unused
_CSR_EXTENSIONS = frozenset({ExtensionOID.SUBJECT_ALTERNATIVE_NAME, AGREEMENT_KEY_OID})
_CERT_EXTENSIONS = _CSR_EXTENSIONS | {
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
}


def fingerprint(der: bytes) -> str:
    """SHA-256 of the DER encoding, lowercase hex: what users and configs pin."""
    return hashlib.sha256(der).hexdigest()


def format_fingerprint(fp: str) -> str:
    """`abcd1234...` -> `abcd 1234 ...` so people can read it aloud and compare."""
    compact = "".join(ch for ch in fp.lower() if ch not in " :")
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class ServerIdentity:
    """The server's Ed25519 key and self-signed CA certificate.

    The same key signs handshakes and issues user certificates, so a client that pins
    this certificate's fingerprint trusts both with one check.
    """

    key: Ed25519PrivateKey
    certificate: x509.Certificate

    @cached_property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(Encoding.DER)

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate_der)

    @cached_property
    def public_key_bytes(self) -> bytes:
        return _raw_public(self.key.public_key())

    @classmethod
    def create(cls, common_name: str = CA_COMMON_NAME) -> ServerIdentity:
        key = Ed25519PrivateKey.generate()
        return cls(key=key, certificate=_self_signed_ca(key, common_name))

    @classmethod
    def load_or_create(cls, data_dir: Path) -> ServerIdentity:
        """Reload the identity from `data_dir`, creating it on the very first start."""
        key_path = Path(data_dir) / SERVER_KEY_FILE
        cert_path = Path(data_dir) / SERVER_CERT_FILE
        if not key_path.exists():
            if cert_path.exists():
                raise CertificateError(
                    f"server key {key_path} is missing but its certificate exists"
                )
            key = Ed25519PrivateKey.generate()
            write_private_file(key_path, _private_pem(key))
        else:
            key = _load_private_key(key_path)
        if not cert_path.exists():
            # A crash between the two writes: certify the same key again. (If an operator
            # deleted a served certificate instead, pinned clients will flag the change.)
            write_private_file(
                cert_path, _self_signed_ca(key).public_bytes(Encoding.PEM), mode=0o644
            )
        identity = cls(key=key, certificate=_load_certificate_file(cert_path))
        _check_identity(identity)
        return identity

    @classmethod
    def from_pem(
        cls, key_pem: bytes, certificate_pem: bytes, password: bytes | None = None
    ) -> ServerIdentity:
        """An identity kept elsewhere than the data folder (cluster mode): the key PEM,
        encrypted with `password` when one is given, and its CA certificate."""
        try:
            key = load_pem_private_key(key_pem, password=password)
        except (ValueError, TypeError):
            raise CertificateError(
                "server key cannot be read: wrong passphrase or not a PEM private key"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise CertificateError("server key is not an Ed25519 key")
        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem)
        except ValueError:
            raise CertificateError("server certificate is not a valid PEM certificate") from None
        identity = cls(key=key, certificate=certificate)
        _check_identity(identity)
        return identity

    def encrypted_key_pem(self, password: bytes) -> bytes:
        """The key as PKCS#8 PEM encrypted with `password` (cryptography's best scheme)."""
        return self.key.private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(password)
        )

    @cached_property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(Encoding.PEM)


def _self_signed_ca(key: Ed25519PrivateKey, common_name: str = CA_COMMON_NAME) -> x509.Certificate:
    now = _utc_now()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=CA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return builder.sign(key, None)


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _load_private_key(path: Path) -> Ed25519PrivateKey:
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise CertificateError(f"server key {path} is readable by others: chmod 600 it")
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise CertificateError(f"server key {path} is not a valid PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CertificateError(f"server key {path} is not an Ed25519 key")
    return key


def _load_certificate_file(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise CertificateError(f"server certificate {path} is not a valid PEM file") from None


def _check_identity(identity: ServerIdentity) -> None:
    public = identity.certificate.public_key()
    if not isinstance(public, Ed25519PublicKey) or _raw_public(public) != identity.public_key_bytes:
        raise CertificateError("server certificate does not match the server key")
    if identity.certificate.not_valid_after_utc <= _utc_now():
        raise CertificateError("server certificate has expired")


# --- CSR --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CsrInfo:
    """What a verified CSR asks the CA to certify."""

    username: str
    email: str
    identity_public: bytes
    agreement_public: bytes


def _agreement_extension(agreement_public: bytes) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(AGREEMENT_KEY_OID, _OCTET_STRING_HEADER + agreement_public)


def _subject(username: str, email: str) -> tuple[x509.Name, x509.SubjectAlternativeName]:
    try:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, username)])
        alt_name = x509.SubjectAlternativeName([x509.RFC822Name(email)])
    except ValueError as error:
        raise CertificateError(f"cannot certify this username or e-mail: {error}") from None
    return name, alt_name


def build_csr(username: str, email: str, keys: UserKeys) -> bytes:
    """A DER CSR for `username`/`email`, signed by the identity key (proof of possession)."""
    name, alt_name = _subject(username, email)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .add_extension(alt_name, critical=False)
        .add_extension(_agreement_extension(keys.agreement_public), critical=False)
        .sign(keys.identity, None)
    )
    return csr.public_bytes(Encoding.DER)


def verify_csr(der: bytes) -> CsrInfo:
    """Parse and check a CSR; every defect is a `CertificateError` saying which."""
    with _refuse_malformed("CSR"):
        csr = x509.load_der_x509_csr(der)
        public = csr.public_key()
        if not isinstance(public, Ed25519PublicKey):
            raise CertificateError("CSR key must be an Ed25519 identity key")
        _check_signature_encoding(der, csr.signature)
        if not csr.is_signature_valid:
            raise CertificateError("CSR signature does not match its key (no proof of possession)")
        username, email, agreement = _parse_subject(csr.subject, _extensions(csr), _CSR_EXTENSIONS)
        return CsrInfo(username, email, _raw_public(public), agreement)


@contextmanager
def _refuse_malformed(what: str) -> Iterator[None]:
    """`cryptography` parses lazily: any access may find bad DER, so map it all here."""
    try:
        yield
    except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion):
        raise CertificateError(f"{what} is malformed") from None


def _check_signature_encoding(der: bytes, signature: bytes) -> None:
    """Exactly one DER encoding per signed object, so its fingerprint cannot be varied.

    The parser tolerates a non-zero "unused bits" count in the signature BIT STRING,
    which would give the same certificate a second fingerprint.
    """
    if len(signature) != ED25519_SIGNATURE_SIZE or not der.endswith(_SIGNATURE_HEADER + signature):
        raise CertificateError("signature is not a plain Ed25519 signature")


def _extensions(item: x509.CertificateSigningRequest | x509.Certificate) -> x509.Extensions:
    try:
        return item.extensions
    except x509.DuplicateExtension as error:
        raise CertificateError(f"duplicate extension {error.oid.dotted_string}") from None
    except x509.UnsupportedGeneralNameType:
        raise CertificateError("unsupported name in an extension") from None


def _parse_subject(
    name: x509.Name, extensions: x509.Extensions, known: frozenset[x509.ObjectIdentifier]
) -> tuple[str, str, bytes]:
    """(username, email, X25519 key) from the subject and extensions, strictly."""
    for extension in extensions:
        if extension.critical and extension.oid not in known:
            raise CertificateError(f"unknown critical extension {extension.oid.dotted_string}")
    return _username(name), _email(extensions), _agreement_key(extensions)


def _username(name: x509.Name) -> str:
    attributes = list(name)
    if len(attributes) != 1 or attributes[0].oid != NameOID.COMMON_NAME:
        raise CertificateError("subject must be exactly one common name (the username)")
    value = attributes[0].value
    if not isinstance(value, str) or not value:
        raise CertificateError("subject common name is not a username")
    return value


def _email(extensions: x509.Extensions) -> str:
    try:
        alt_names = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateError("missing subject alternative name (the e-mail)") from None
    emails = alt_names.get_values_for_type(x509.RFC822Name)
    if len(alt_names) != 1 or len(emails) != 1:
        raise CertificateError("subject alternative name must be exactly one e-mail")
    return emails[0]


def _agreement_key(extensions: x509.Extensions) -> bytes:
    try:
        extension = extensions.get_extension_for_oid(AGREEMENT_KEY_OID)
    except x509.ExtensionNotFound:
        raise CertificateError("missing X25519 agreement key extension") from None
    value = extension.value
    if extension.critical or not isinstance(value, x509.UnrecognizedExtension):
        raise CertificateError("malformed X25519 agreement key extension")
    raw = value.value
    if len(raw) != len(_OCTET_STRING_HEADER) + RAW_KEY_SIZE or not raw.startswith(
        _OCTET_STRING_HEADER
    ):
        raise CertificateError("malformed X25519 agreement key extension")
    agreement = raw[len(_OCTET_STRING_HEADER) :]
    _reject_small_order(agreement)
    return agreement


def _reject_small_order(agreement_public: bytes) -> None:
    """A small-order point would make every shared secret zero: refuse it up front."""
    try:
        x25519_shared(X25519PrivateKey.generate(), agreement_public)
    except CryptoError:
        raise CertificateError("X25519 agreement key is a small-order point") from None


# --- certificates -----------------------------------------------------------------------


@dataclass(frozen=True)
class UserCertificate:
    """A verified user certificate: who, their two public keys, and the pinnable fingerprint."""

    username: str
    email: str
    identity_public: bytes
    agreement_public: bytes
    fingerprint: str
    der: bytes


def issue_certificate(
    identity: ServerIdentity,
    info: CsrInfo,
    serial: int | None = None,
    days: int = USER_VALIDITY_DAYS,
    *,
    now: datetime.datetime | None = None,
) -> bytes:
    """Certify a verified CSR; `now` exists so tests can mint expired certificates."""
    if len(info.identity_public) != RAW_KEY_SIZE or len(info.agreement_public) != RAW_KEY_SIZE:
        raise CertificateError("public keys must be 32 raw bytes")
    start = now or _utc_now()
    name, alt_name = _subject(info.username, info.email)
    public = Ed25519PublicKey.from_public_bytes(info.identity_public)
    ca_public = identity.key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(identity.certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number() if serial is None else serial)
        .not_valid_before(start - CLOCK_SKEW)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(alt_name, critical=False)
        .add_extension(_agreement_extension(info.agreement_public), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False
        )
    )
    return builder.sign(identity.key, None).public_bytes(Encoding.DER)


def load_user_certificate(
    der: bytes,
    ca_certificate: x509.Certificate | bytes,
    *,
    now: datetime.datetime | None = None,
) -> UserCertificate:
    """Verify `der` was issued by `ca_certificate`, is current and is a user certificate."""
    ca = _ca_certificate(ca_certificate)
    with _refuse_malformed("certificate"):
        certificate = x509.load_der_x509_certificate(der)
        _check_issued_by(certificate, ca, der)
        _check_validity(certificate, now or _utc_now())
        extensions = _extensions(certificate)
        _check_not_ca(extensions)
        public = certificate.public_key()
        if not isinstance(public, Ed25519PublicKey):
            raise CertificateError("certificate key must be an Ed25519 identity key")
        subject = _parse_subject(certificate.subject, extensions, _CERT_EXTENSIONS)
    username, email, agreement = subject
    return UserCertificate(username, email, _raw_public(public), agreement, fingerprint(der), der)


def _ca_certificate(ca_certificate: x509.Certificate | bytes) -> x509.Certificate:
    if isinstance(ca_certificate, x509.Certificate):
        return ca_certificate
    with _refuse_malformed("CA certificate"):
        return x509.load_der_x509_certificate(ca_certificate)


def _check_issued_by(certificate: x509.Certificate, ca: x509.Certificate, der: bytes) -> None:
    ca_public = ca.public_key()
    if not isinstance(ca_public, Ed25519PublicKey):
        raise CertificateError("CA key must be Ed25519")
    if certificate.issuer != ca.subject:
        raise CertificateError("certificate was not issued by this server's CA")
    if certificate.signature_algorithm_oid != SignatureAlgorithmOID.ED25519:
        raise CertificateError("certificate is not signed with Ed25519")
    _check_signature_encoding(der, certificate.signature)
    try:
        ca_public.verify(certificate.signature, certificate.tbs_certificate_bytes)
    except InvalidSignature:
        raise CertificateError("certificate signature does not verify with the CA key") from None


def _check_validity(certificate: x509.Certificate, now: datetime.datetime) -> None:
    if now < certificate.not_valid_before_utc:
        raise CertificateError("certificate is not valid yet")
    if now > certificate.not_valid_after_utc:
        raise CertificateError("certificate has expired")


def _check_not_ca(extensions: x509.Extensions) -> None:
    try:
        constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CertificateError("certificate lacks basic constraints") from None
    if constraints.ca:
        raise CertificateError("a CA certificate cannot be a user certificate")


# --- safety numbers ---------------------------------------------------------------------


def _safety_half(name: str, identity_public: bytes) -> str:
    """30 digits from one side, as Signal's NumericFingerprint computes them."""
    digest_input = SAFETY_NUMBER_VERSION + identity_public + name.encode("utf-8")
    value = digest_input
    for _ in range(SAFETY_NUMBER_ITERATIONS):
        value = hashlib.sha512(value + identity_public).digest()
    chunks = (int.from_bytes(value[i : i + 5], "big") % 100_000 for i in range(0, 30, 5))
    return "".join(f"{chunk:05d}" for chunk in chunks)


def safety_number(name_a: str, identity_a: bytes, name_b: str, identity_b: bytes) -> str:
    """60 digits both users see identically; compare them to rule out a lying server."""
    if len(identity_a) != RAW_KEY_SIZE or len(identity_b) != RAW_KEY_SIZE:
        raise ValueError("identity keys must be 32 raw bytes")
    halves = sorted([(name_a, identity_a), (name_b, identity_b)])
    digits = "".join(_safety_half(name, key) for name, key in halves)
    return " ".join(digits[i : i + 5] for i in range(0, len(digits), 5))
