"""Password hashes (LOGIN, REGISTER) per client address: a few in flight, the rest wait.

A scrypt hash costs tens of milliseconds of a worker thread. Without a limit one
address pipelining LOGINs or REGISTERs fills the worker queue, and an honest login
from elsewhere waits behind all of it (measured before: 39.5 s). Here each address
has at most `limit` hashes on the worker pool; more wait in that address's own
queue (at most `max_waiting`, then `server_busy`), and the next one starts when one
of its own finishes. Another address's login therefore waits for at most the few
jobs each busy address has in flight, never for a flood.

Reactor thread only: `Context.run_in_worker` calls `always` there when a job ends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.errors import RequestError

if TYPE_CHECKING:
    from server.dispatch import Context


@dataclass
class _Address:
    limit: int
    running: int = 0
    waiting: deque[tuple[Context, Callable[[], None]]] = field(default_factory=deque)


class HashQueue:
    """Per-address cap on hash jobs in flight, with a bounded wait line per address."""

    def __init__(self) -> None:
        self._addresses: dict[str, _Address] = {}

    def in_flight(self, address: str) -> int:
        state = self._addresses.get(address)
        return 0 if state is None else state.running

    def waiting(self, address: str) -> int:
        state = self._addresses.get(address)
        return 0 if state is None else len(state.waiting)

    def submit(self, ctx: Context, fn: Callable[[], Any], then: Callable[[Any], None]) -> None:
        """Run `fn` on the worker pool for `ctx`'s address now, or when its turn comes.

        Raises `RequestError('server_busy')` when the address already has its fill
        waiting; the caller has not spent anything yet.
        """
        address = ctx.peer[0]
        state = self._addresses.get(address)
        if state is None:
            state = _Address(limit=max(1, ctx.config.hashes_in_flight_per_address))
            self._addresses[address] = state

        def start() -> None:
            state.running += 1
            ctx.run_in_worker(fn, then, always=lambda: self._finished(address))

        if state.running < state.limit:
            start()
        elif len(state.waiting) < ctx.config.hashes_waiting_per_address:
            state.waiting.append((ctx, start))
        else:
            raise RequestError(
                "server_busy", "too many logins or registrations from your address; try again"
            )

    def _finished(self, address: str) -> None:
        state = self._addresses.get(address)
        if state is None:
            return
        state.running -= 1
        while state.waiting and state.running < state.limit:
            ctx, start = state.waiting.popleft()
            if ctx.connection.is_open:  # a caller that left costs no hash
                start()
        if not state.running and not state.waiting:
            del self._addresses[address]
