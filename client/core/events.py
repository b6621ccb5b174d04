"""The event queue between the client's background threads and the caller's thread.

Why it exists: the socket, push, reconnect and `run_async` threads must never call a
listener (Tk is single-threaded). They only `emit`; the caller's thread drains the
queue with `process` or `wait_for`, and that is the only place listeners run.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from client.core.event_types import AsyncResult, Event
from common.errors import RequestTimeout

log = logging.getLogger(__name__)

Listener = Callable[[Event], None]
T = TypeVar("T")

ASYNC_WORKERS = 4


class Emit(Protocol):
    """How the client's parts report something: `emit(PresenceChanged(...))`."""

    def __call__(self, event: Event, /) -> None: ...


class EventTimeout(RequestTimeout, TimeoutError):
    """`wait_for_event` saw no matching event in time (catch either base class)."""


class EventHub:
    """The event queue, the listeners, and `run_async` results routed through the queue."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Event] = queue.Queue()
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(ASYNC_WORKERS, thread_name_prefix="uchat-async")

    def emit(self, event: Event, /) -> None:
        self._queue.put(event)

    def add_listener(self, callback: Listener) -> None:
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Listener) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def process(self, max_events: int = 200) -> int:
        """Deliver up to `max_events` queued events on this thread; returns how many."""
        handled = 0
        while handled < max_events:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            self._deliver(event)
            handled += 1
        return handled

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        """Deliver events until one matches; `RequestTimeout` if none does in time."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EventTimeout(f"no matching event within {timeout:g} s")
            try:
                event = self._queue.get(timeout=remaining)
            except queue.Empty:
                raise EventTimeout(f"no matching event within {timeout:g} s") from None
            self._deliver(event)
            if predicate(event):
                return event

    def _deliver(self, event: Event) -> None:
        if isinstance(event, AsyncResult):
            if event.callback is not None:
                self._guard(event.callback, event.value)
            return
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            self._guard(listener, event)

    @staticmethod
    def _guard(callback: Callable[[Any], object], value: Any) -> None:
        try:
            callback(value)
        except Exception:  # one broken listener must not starve the others
            log.exception("event listener failed")

    def run_async(
        self,
        fn: Callable[..., T],
        *args: Any,
        on_result: Callable[[T], object] | None = None,
        on_error: Callable[[BaseException], object] | None = None,
    ) -> Future[T]:
        """Run `fn(*args)` on a worker; its callback later runs on the draining thread."""

        def work() -> T:
            try:
                value = fn(*args)
            except BaseException as exc:
                self.emit(AsyncResult(on_error, exc))
                raise
            self.emit(AsyncResult(on_result, value))
            return value

        return self._executor.submit(work)

    def background(self, fn: Callable[..., object], *args: Any) -> None:
        """Run `fn(*args)` on a worker with no event at the end (failures are logged)."""

        def work() -> None:
            try:
                fn(*args)
            except Exception:  # a background task: report, never crash the process
                log.exception("background task failed")

        self._executor.submit(work)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
