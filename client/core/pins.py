"""Trust-on-first-use pins of server certificate fingerprints.

The first connection to a host:port records the server's SHA-256 fingerprint; later
connections must present the same one. A corrupt pin file is an error, never an empty
store: treating it as empty would let whoever can damage the file re-pin a rogue server.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

from common.errors import KeyStoreError
from common.fileio import make_private_dir, write_private_file

FILE_VERSION = 1
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def pin_key(host: str, port: int) -> str:
    """`host:port`, with IPv6 literals bracketed and host names case-folded."""
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {port}")
    name = host.strip().lower()
    if not name:
        raise ValueError("empty host")
    return f"[{name}]:{port}" if ":" in name else f"{name}:{port}"


class ServerPins:
    """host:port -> fingerprint (lowercase SHA-256 hex), in a small JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _read(self) -> dict[str, str]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise KeyStoreError(f"server pin file cannot be read: {error.strerror}") from None
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise KeyStoreError("server pin file is corrupt: not valid JSON") from None
        if not isinstance(document, dict) or document.get("version") != FILE_VERSION:
            raise KeyStoreError("server pin file is corrupt or from a newer version")
        pins = document.get("pins")
        if not isinstance(pins, dict):
            raise KeyStoreError("server pin file is corrupt: no pins")
        if not all(isinstance(value, str) and _FINGERPRINT.match(value) for value in pins.values()):
            raise KeyStoreError("server pin file is corrupt: bad fingerprint")
        return {str(key): str(value) for key, value in pins.items()}

    def get(self, host: str, port: int) -> str | None:
        """The pinned fingerprint, or None on first contact."""
        with self._lock:
            return self._read().get(pin_key(host, port))

    def set(self, host: str, port: int, fingerprint: str) -> None:
        """Pin (or, after the user accepted a change, re-pin) a server's fingerprint."""
        value = fingerprint.strip().lower()
        if not _FINGERPRINT.match(value):
            raise ValueError("a fingerprint is 64 hex digits (SHA-256)")
        with self._lock:
            pins = self._read()
            pins[pin_key(host, port)] = value
            document = {"version": FILE_VERSION, "pins": dict(sorted(pins.items()))}
            # The pin directory is private too: create it 0700 before the shared writer,
            # which would create it with the default mode.
            make_private_dir(self.path.parent)
            write_private_file(self.path, json.dumps(document, indent=2).encode("utf-8"))
