"""Taking an identity to another computer: the private keys in a passphrase-sealed file.

Why a file and not the data folder: a data folder is one computer (history, pins,
outbox); only the keys move. The file is the ordinary key-file format (scrypt, then
AES-256-GCM over the raw keys, header bound as associated data), sealed under a
passphrase the user chooses for the move; on the new computer it is opened and
re-sealed under the account password in that computer's key store. Login then checks
the keys against the certificate the server holds, so a file from another account is
reported like any missing key.
"""

from __future__ import annotations

from pathlib import Path

from client.core.keystore import KeyStore
from common.crypto.keys import KdfParams, UserKeys, load_keys, save_keys
from common.errors import KeyStoreError, RequestError, ValidationError
from common.validation import validate_password

SUFFIX = ".uchat-identity"


def check_passphrase(passphrase: str) -> str:
    """The same rule as account passwords: the file may leave the computer."""
    try:
        return validate_password(passphrase)
    except ValidationError as exc:
        raise RequestError("invalid_passphrase", str(exc), "passphrase") from None


def export_keys(keys: UserKeys, path: Path, passphrase: str, kdf: KdfParams) -> Path:
    """Write `keys` sealed under `passphrase` to `path` (mode 0600); returns the path."""
    check_passphrase(passphrase)
    target = Path(path)
    if not target.name.endswith(SUFFIX):
        target = target.with_name(target.name + SUFFIX)
    try:
        save_keys(target, keys, passphrase, kdf)
    except KeyStoreError as exc:
        raise RequestError("file_not_found", str(exc), "path") from None
    return target


def import_keys(
    keystore: KeyStore, server_id: str, username: str, path: Path, passphrase: str, password: str
) -> None:
    """Open the file and keep its keys for `username` here, sealed under `password`.

    One error for a wrong passphrase and for a file that is no identity file: the
    caller cannot tell which, and neither can someone guessing passphrases.
    """
    try:
        keys = load_keys(Path(path), passphrase)
    except KeyStoreError:
        raise RequestError(
            "bad_identity_file",
            "the passphrase does not open this file, or it is not a Uchat identity file",
            "passphrase",
        ) from None
    keystore.save(server_id, username, keys, password)
