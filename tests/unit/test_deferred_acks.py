"""Room acknowledgements gathered for a moment (client/core/acks.py)."""

from __future__ import annotations

import threading

import pytest

from client.core.acks import DeferredAcks
from common.errors import ConnectionLost


class Recorder:
    def __init__(self) -> None:
        self.sent: list[list[str]] = []
        self.event = threading.Event()

    def __call__(self, ids: list[str]) -> None:
        self.sent.append(ids)
        self.event.set()


def test_deferred_ids_go_together_in_one_request_after_the_delay() -> None:
    send = Recorder()
    acks = DeferredAcks(send, delay=0.05)
    acks.defer(["a"])
    acks.defer(["b", "c"])
    assert send.sent == []
    assert send.event.wait(5)
    assert send.sent == [["a", "b", "c"]]
    assert acks.waiting == 0


def test_an_immediate_acknowledgement_takes_the_waiting_ids_along() -> None:
    send = Recorder()
    acks = DeferredAcks(send, delay=60)
    acks.defer(["room-1"])
    acks.now(["direct-1"])
    assert send.sent == [["room-1", "direct-1"]]
    acks.flush()  # nothing left: no empty request
    assert send.sent == [["room-1", "direct-1"]]


def test_too_many_waiting_ids_go_at_once() -> None:
    send = Recorder()
    acks = DeferredAcks(send, delay=60, max_deferred=3)
    acks.defer(["a", "b"])
    assert send.sent == []
    acks.defer(["c"])
    assert send.sent == [["a", "b", "c"]]


def test_closing_drops_what_waits_and_later_ids_are_ignored() -> None:
    send = Recorder()
    acks = DeferredAcks(send, delay=0.05)
    acks.defer(["a"])
    acks.close()
    acks.defer(["b"])
    assert not send.event.wait(0.3)
    assert send.sent == []


def test_a_failed_timed_flush_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def lost(ids: list[str]) -> None:
        raise ConnectionLost("gone")

    acks = DeferredAcks(lost, delay=60)
    acks.defer(["a"])
    with caplog.at_level("INFO"):
        acks.flush()
    assert "will push again" in caplog.text
    assert acks.waiting == 0


def test_an_immediate_failure_reaches_the_caller() -> None:
    def lost(ids: list[str]) -> None:
        raise ConnectionLost("gone")

    with pytest.raises(ConnectionLost):
        DeferredAcks(lost).now(["a"])
