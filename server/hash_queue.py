"""Password hashes (LOGIN, REGISTER) per client address: a few in flight, the rest wait.

A scrypt hash costs tens of milliseconds of a worker thread. Without a limit one
address pipelining LOGINs or REGISTERs fills the worker queue, and an honest login
from elsewhere waits behind all of it (measured before: 39.5 s). Here each address
has at most `limit` hashes on the worker pool; more wait in that address's own
queue (at most `max_waiting`, then `server_busy`), and the next one starts when one
of its own finishes. Another address's login therefore waits for at most the few
jobs each busy address has in flight, never for a flood. And for the CPU: a job that
starts while its address has others waiting runs on the demoted pool (nice 19, below
the usual workers' 10), so a flood's hashes yield the cores to a quiet address's
login instead of halving its speed (measured with `bench account_flood`).

`admit` runs on the reactor thread at the moment a job is about to start, not when it
is queued: LOGIN checks its locks and counts the attempt there. Counting at queue time
would let forty colleagues behind one NAT address, logging in at once, pre-count forty
"failures" and lock their own address before a single hash had run.

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

    def submit(
        self,
        ctx: Context,
        fn: Callable[[], Any],
        then: Callable[[Any], None],
        admit: Callable[[], None] | None = None,
    ) -> None:
        """Run `fn` on the worker pool for `ctx`'s address now, or when its turn comes.

        Raises `RequestError('server_busy')` when the address already has its fill
        waiting; the caller has not spent anything yet. `admit`, if given, runs just
        before the job starts; a `RequestError` from it answers the request instead
        (raised to the caller when the job starts at once).
        """
        address = ctx.peer[0]
        state = self._addresses.get(address)
        if state is None:
            state = _Address(limit=max(1, ctx.config.hashes_in_flight_per_address))
            self._addresses[address] = state

        def run() -> None:
            state.running += 1
            ctx.run_in_worker(
                fn, then, always=lambda: self._finished(address), demoted=bool(state.waiting)
            )

        def start_later() -> None:
            if admit is None or _admitted(ctx, admit):
                run()

        if state.running < state.limit:
            if admit is not None:
                admit()
            run()
        elif len(state.waiting) < ctx.config.hashes_waiting_per_address:
            state.waiting.append((ctx, start_later))
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


def _admitted(ctx: Context, admit: Callable[[], None]) -> bool:
    """Run `admit` for a job that waited; a refusal is answered, and False returned."""
    from server.dispatch import run_guarded  # dispatch imports this module

    def step() -> bool:
        admit()
        return True

    return run_guarded(ctx, step) is True
