"""Several addresses of one Uchat cluster, and which one the client uses now.

On a drop the client tries the address it used last, then the next one, and so on;
the back-off grows only after a whole round failed, so a dead node costs one quick
refused attempt, not a long wait. Every address serves the cluster's one identity, so
the pin taken at any of them is required at all of them (see `ServerLink`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from common.servers import Address


class ServerList:
    """The addresses in order (the configured host:port first), and which one is in use."""

    def __init__(self, first: Address, others: Iterable[Address] = ()) -> None:
        self._addresses: list[Address] = list(dict.fromkeys([first, *others]))
        self._index = 0
        self._lock = threading.Lock()

    @property
    def addresses(self) -> Sequence[Address]:
        return tuple(self._addresses)

    @property
    def current(self) -> Address:
        with self._lock:
            return self._addresses[self._index]

    def advance(self) -> bool:
        """Move to the next address; True when that starts a new round (back to the first)."""
        with self._lock:
            self._index = (self._index + 1) % len(self._addresses)
            return self._index == 0
