"""The database thread of a cluster node: each turn's batch and commit, off the reactor.

Why: with PostgreSQL every statement is a network round trip. A turn's gathered work
(`server.turn`: its new messages, acknowledgements and conversation touches) and its
COMMIT are a few of them, and on the reactor thread the loop sat idle through each.
Here they run on one thread of their own while the reactor opens the records that
arrived meanwhile (`Reactor`'s overlap, which touches no database); the result comes
back to the reactor as a worker pool's does, through its wake-up socket, and the
turn's output is written only then (the group commit holds).

One job at a time: the reactor hands the connection over for the job and takes it back
when the job is `ready`, so the two threads never use the database at once (psycopg's
connection lock would make that safe, but it would put the reactor back in the wait).
SQLite stays on the reactor thread: its commit is no round trip, and its connection
belongs to the thread that made it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class DatabaseJob(Generic[T]):
    """One job's outcome: `ready` once done; `finish` (reactor thread) delivers it.

    `then(result)` runs on success; on failure `failed()` runs and the error is
    raised again, so the reactor withholds the turn's output as after a failed commit.
    """

    __slots__ = ("_done", "_error", "_failed", "_result", "_then", "work")

    def __init__(
        self, work: Callable[[], T], then: Callable[[T], None], failed: Callable[[], None]
    ) -> None:
        self.work = work
        self._then = then
        self._failed = failed
        self._done = threading.Event()
        self._result: T | None = None
        self._error: BaseException | None = None

    @property
    def ready(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def run(self) -> None:
        """On the database thread."""
        try:
            self._result = self.work()
        except BaseException as exc:  # handed to the reactor, which decides
            self._error = exc
        finally:
            self._done.set()

    def finish(self) -> None:
        """On the reactor thread, once `ready`."""
        if not self._done.is_set():
            raise RuntimeError("the database job is still running")
        if self._error is not None:
            error, self._error = self._error, None
            self._failed()
            raise error
        result: T = self._result  # type: ignore[assignment]  # set when no error
        self._then(result)


class DatabaseThread:
    """One daemon thread running `DatabaseJob`s in order, waking the reactor after each."""

    def __init__(self, wake: Callable[[], None], name: str = "uchat-database") -> None:
        self._wake = wake
        self._jobs: queue.SimpleQueue[DatabaseJob[object] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._stopped = False
        self._thread.start()

    def submit(
        self,
        work: Callable[[], T],
        then: Callable[[T], None],
        failed: Callable[[], None],
    ) -> DatabaseJob[T]:
        """Run `work` on the thread; the caller owns the database again once `ready`."""
        if self._stopped:
            raise RuntimeError("the database thread is stopped")
        job = DatabaseJob(work, then, failed)
        self._jobs.put(job)  # type: ignore[arg-type]  # the queue holds any result type
        return job

    def stop(self, timeout: float = 5.0) -> None:
        """Let the running job end, then the thread (jobs submitted later are refused)."""
        if self._stopped:
            return
        self._stopped = True
        self._jobs.put(None)
        self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job.run()
            try:
                self._wake()
            except Exception:  # the reactor is gone; its shutdown no longer waits
                log.debug("database job done after the reactor closed")
