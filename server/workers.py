"""A bounded thread pool for slow CPU work (password hashing) off the reactor thread.

Workers never touch sockets or the database: they compute and hand the result back
to the reactor thread through `call_soon` (the reactor's wake-up socket). The queue
is bounded so a login storm turns into quick `server_busy` errors instead of
unbounded memory and latency.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from common.errors import UchatError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Password hashing: below the reactor, so chat traffic does not wait behind a storm.
WORKER_NICENESS = 10
#: Hashes of an address that already has a line of them (a flood, or a crowded NAT):
#: below everyone else's, so a quiet address's login does not share a core evenly
#: with another address's flood.
DEMOTED_NICENESS = 19


_Job = tuple[Callable[[], Any], Callable[["Future[Any]"], None]]


class WorkerPoolFull(UchatError):
    """The pool's queue is at its limit; the caller should answer `server_busy`."""


class WorkerPool:
    """`size` daemon threads reading a queue of at most `queue_limit` waiting jobs.

    `call_soon(fn)` must run `fn` on the reactor thread (e.g.
    `Reactor.call_soon_threadsafe`); every `on_done` is delivered that way.
    """

    def __init__(
        self,
        size: int,
        queue_limit: int,
        call_soon: Callable[[Callable[[], None]], None],
        niceness: int = WORKER_NICENESS,
        name: str = "uchat-worker",
    ) -> None:
        if size < 1 or queue_limit < 1:
            raise ValueError("a worker pool needs at least one thread and one queue slot")
        self._call_soon = call_soon
        self._niceness = niceness
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_limit)
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True)
            for index in range(size)
        ]
        self._stopped = False
        for thread in self._threads:
            thread.start()

    @property
    def queued(self) -> int:
        """Jobs waiting for a thread (not counting the ones running)."""
        return self._queue.qsize()

    def submit(self, fn: Callable[[], T], on_done: Callable[[Future[T]], None]) -> None:
        """Run `fn` on a worker; later call `on_done(future)` on the reactor thread.

        Raises WorkerPoolFull at once if the queue is at its limit (or the pool stopped).
        """
        if self._stopped:
            raise WorkerPoolFull("the worker pool is stopped")
        try:
            self._queue.put_nowait((fn, on_done))
        except queue.Full:
            raise WorkerPoolFull("the worker queue is full") from None

    def stop(self, timeout: float = 5.0) -> None:
        """Drop jobs still waiting, let running ones finish, end the threads.

        Waits at most `timeout` seconds per thread. Dropped jobs never call `on_done`:
        the server is shutting down and their connections are closing.
        """
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(queue.Empty):  # drop every job still waiting
            while True:
                self._queue.get_nowait()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)

    def _work(self) -> None:
        _lower_priority(self._niceness)
        while True:
            job = self._queue.get()
            if job is None:
                return
            fn, on_done = job
            future: Future[Any] = Future()
            try:
                future.set_result(fn())
            except Exception as exc:  # delivered to on_done, which reports it
                future.set_exception(exc)
            self._call_soon(_bind(on_done, future))


def _lower_priority(niceness: int) -> None:
    """Let the reactor win the CPU over password hashing.

    scrypt releases the GIL, so during a login storm the workers compete with the
    reactor for the cores; chat traffic must not wait behind them. Linux lets one
    thread be niced on its own; elsewhere this is a no-op. (An unprivileged thread can
    only lower its own priority, so each pool keeps one level for good.)
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):  # not Linux, or not permitted
        log.debug("could not lower the worker thread's priority")


def _bind(on_done: Callable[[Future[Any]], None], future: Future[Any]) -> Callable[[], None]:
    def deliver() -> None:
        on_done(future)

    return deliver
