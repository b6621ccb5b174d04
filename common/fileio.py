"""Atomic writes of private files (key files, the CA key, server pins).

Keys and pins must never exist half-written or world-readable: a crash mid-write must
leave the old file intact, and no other user may ever read the new bytes, not even for
the instant between creating a file and restricting it. So the data goes to a temp file
in the same directory, created with its final mode, fsynced, then renamed over `path`.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_private_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Atomically replace `path` with `data`; the file has `mode` from its creation.

    Creates missing parent directories. On any failure the temp file is removed and the
    old `path` (if any) is left as it was; the error (an `OSError`) propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def make_private_dir(path: Path) -> Path:
    """Create `path` and any missing parents as 0700, and make `path` itself 0700.

    `Path.mkdir(mode=...)` gives the mode to the last component only; the parents it
    creates get the umask's (often 0755). Existing parents are left as they are.
    """
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path
