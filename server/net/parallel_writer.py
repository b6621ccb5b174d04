"""A helper thread that makes a big turn's first write to each socket.

Why: a room message to 500 online members ends its turn with 500 records to seal and
500 `sendmsg` calls. On loopback and on a LAN a send costs more than a seal (the
kernel runs the whole TCP path, and on loopback the receiver's too), and it runs
without the GIL. So while the reactor thread seals the next connections' records, this
thread sends the ones already sealed; the turn ends once both are done, and the last
member gets the message sooner.

Ownership stays simple: during a round the reactor thread touches none of the sockets
it handed over, and this thread touches nothing but those sockets and the round's
result list. After `Round.finish` returns, the reactor applies each result as if it had
made the call itself (bytes written, 0 for a full socket buffer, or the `OSError`);
whatever was not written waits for EPOLLOUT as always.
"""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

#: Sends handed over at a time: fewer queue operations, yet the thread starts early.
CHUNK = 16

WriteResult = int | OSError
Parts = Sequence[bytes | memoryview]


@dataclass(eq=False)
class _Chunk:
    results: list[WriteResult]
    jobs: list[tuple[socket.socket, Parts, int]] = field(default_factory=list)


@dataclass(eq=False)
class _End:
    done: threading.Event = field(default_factory=threading.Event)


class _Stop:
    pass


_Item = _Chunk | _End | _Stop


class Round:
    """The sends of one turn: `add` each as it is sealed, then `finish` once."""

    __slots__ = ("_chunk", "_queue", "results")

    def __init__(self, work: queue.SimpleQueue[_Item]) -> None:
        self._queue = work
        self.results: list[WriteResult] = []
        self._chunk = _Chunk(self.results)

    def add(self, sock: socket.socket, parts: Parts) -> int:
        """Queue one `sendmsg(parts)`; returns the index of its result."""
        index = len(self.results)
        self.results.append(0)
        self._chunk.jobs.append((sock, parts, index))
        if len(self._chunk.jobs) >= CHUNK:
            self._queue.put(self._chunk)
            self._chunk = _Chunk(self.results)
        return index

    def finish(self) -> list[WriteResult]:
        """Wait until every send of the round was made; their results, in `add` order."""
        if self._chunk.jobs:
            self._queue.put(self._chunk)
            self._chunk = _Chunk(self.results)
        end = _End()
        self._queue.put(end)
        end.done.wait()
        return self.results


def send_once(sock: socket.socket, parts: Parts) -> WriteResult:
    """One `sendmsg`, as the reactor would make it: 0 when the socket buffer is full."""
    try:
        return sock.sendmsg(parts)
    except (BlockingIOError, InterruptedError):
        return 0
    except OSError as exc:
        return exc


class ParallelWriter:
    """One daemon thread making the sends of `Round`s, in the order they were added."""

    def __init__(self, name: str = "uchat-writer") -> None:
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def begin(self) -> Round:
        return Round(self._queue)

    def close(self) -> None:
        """Stop the thread once the rounds already begun are done."""
        if self._thread.is_alive():
            self._queue.put(_Stop())
            self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, _Stop):
                return
            if isinstance(item, _End):
                item.done.set()
                continue
            results = item.results
            for sock, parts, index in item.jobs:
                results[index] = send_once(sock, parts)
