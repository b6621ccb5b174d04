"""Who may connect, and how much input the server holds for connections.

Anonymous connections cost the server memory and a slot before anyone is accountable
for them, so they are counted per address (all connections, and those that have not
logged in yet) and the bytes the reactor holds for all connections are charged to one
global budget. The reactor asks this object; it keeps no sockets and no clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AdmissionLimits:
    """Per-address caps and the global input budget (from `ServerConfig`)."""

    per_address: int = 256
    anonymous_per_address: int = 32
    input_budget: int = 64 * 1024 * 1024


class Admission:
    """Counts connections per address and input bytes held server-wide."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self._limits = limits
        self._connections: dict[str, int] = {}
        self._anonymous: dict[str, int] = {}
        self._input = 0

    @property
    def input_held(self) -> int:
        """Bytes held for all connections: partial frames and undispatched reads."""
        return self._input

    @property
    def input_exhausted(self) -> bool:
        return self._input >= self._limits.input_budget

    def connections_from(self, ip: str) -> int:
        return self._connections.get(ip, 0)

    def anonymous_from(self, ip: str) -> int:
        return self._anonymous.get(ip, 0)

    def admit(self, ip: str) -> str | None:
        """Count a new anonymous connection from `ip`, or say why it is refused."""
        if self._connections.get(ip, 0) >= self._limits.per_address:
            return "too many connections from this address"
        if self._anonymous.get(ip, 0) >= self._limits.anonymous_per_address:
            return "too many connections from this address that have not logged in"
        self._connections[ip] = self._connections.get(ip, 0) + 1
        self._anonymous[ip] = self._anonymous.get(ip, 0) + 1
        return None

    def logged_in(self, ip: str) -> None:
        """A connection from `ip` logged in: it no longer counts as anonymous."""
        _decrement(self._anonymous, ip)

    def forget(self, ip: str, anonymous: bool) -> None:
        """A connection from `ip` closed."""
        _decrement(self._connections, ip)
        if anonymous:
            _decrement(self._anonymous, ip)

    def charge(self, delta: int) -> None:
        """Add (or with a negative `delta`, return) input bytes to the global budget."""
        self._input = max(0, self._input + delta)


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
