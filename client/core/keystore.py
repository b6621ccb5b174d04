"""Where a user's files live under the client's data directory, and their key file.

Layout (one tree per server, so two servers' accounts named alike never mix):

    data_dir/servers/<server_id>/<user dir>/keys.json        sealed private keys (0600)
    data_dir/servers/<server_id>/<user dir>/history.sqlite3  the LocalStore
    data_dir/downloads/<username>/                           received files
    data_dir/server_pins.json                                ServerPins (TOFU)

`<user dir>` is the username plus a hash of it: usernames are letters of any script, so
"CON" (reserved on Windows) or "Alice" and "alice" (one name on a case-insensitive disk)
must still map to distinct, valid directory names.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from common.crypto.keys import KdfParams, UserKeys, load_keys, save_keys
from common.fileio import make_private_dir
from common.validation import validate_username

KEY_FILE = "keys.json"
PINS_FILE = "server_pins.json"
STORE_FILE = "history.sqlite3"
_SERVER_ID = re.compile(r"^[0-9a-f]{16}$")
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])$", re.IGNORECASE)


def server_id_for(fingerprint: str) -> str:
    """The directory name of a server: its certificate fingerprint's first 16 hex digits."""
    server_id = fingerprint.strip().lower()[:16]
    return check_server_id(server_id)


def check_server_id(server_id: str) -> str:
    if not _SERVER_ID.match(server_id):
        raise ValueError("server_id must be 16 lowercase hex digits")
    return server_id


def user_dir_name(username: str) -> str:
    """A directory name for `username` that is valid and distinct on every filesystem."""
    name = validate_username(username)
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]
    return f"{name}-{digest}"


class KeyStore:
    """Password-sealed key files, one per (server, user), and the paths beside them."""

    def __init__(self, data_dir: Path, kdf_params: KdfParams | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.kdf_params = kdf_params or KdfParams()

    @property
    def pins_path(self) -> Path:
        """The ServerPins file shared by every account on this machine."""
        return self.data_dir / PINS_FILE

    def user_dir(self, server_id: str, username: str) -> Path:
        return self.data_dir / "servers" / check_server_id(server_id) / user_dir_name(username)

    def path_for(self, server_id: str, username: str) -> Path:
        """The key file of `username` on the server `server_id`."""
        return self.user_dir(server_id, username) / KEY_FILE

    def store_path(self, server_id: str, username: str) -> Path:
        """The LocalStore (history) file of `username` on the server `server_id`."""
        return self.user_dir(server_id, username) / STORE_FILE

    def downloads_dir(self, username: str) -> Path:
        """Received files, readable by name; created on first use."""
        name = validate_username(username)
        if _WINDOWS_RESERVED.match(name):
            name = f"_{name}"
        return make_private_dir(self.data_dir / "downloads" / name)

    def exists(self, server_id: str, username: str) -> bool:
        return self.path_for(server_id, username).is_file()

    def save(self, server_id: str, username: str, keys: UserKeys, password: str) -> None:
        """Seal `keys` under `password` (replacing any previous file atomically)."""
        user_dir = make_private_dir(self.user_dir(server_id, username))
        save_keys(user_dir / KEY_FILE, keys, password, self.kdf_params)

    def load(self, server_id: str, username: str, password: str) -> UserKeys:
        """Unseal the keys; `KeyStoreError` on a wrong password, a missing or corrupt file."""
        return load_keys(self.path_for(server_id, username), password)

    def change_password(
        self, server_id: str, username: str, old_password: str, new_password: str
    ) -> None:
        """Re-seal under a new password; the old password must open the file first."""
        keys = self.load(server_id, username, old_password)
        self.save(server_id, username, keys, new_password)
