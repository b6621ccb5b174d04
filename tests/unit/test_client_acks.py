"""Room acknowledgements wait a little and go together; direct ones go at once."""

from __future__ import annotations

import pytest

from client.core.acks import DELAY_S, MAX_IDS, DeliveryAcks
from common.errors import ConnectionLost


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, sent: list[list[str]]) -> DeliveryAcks:
    return DeliveryAcks(sent.append, clock=clock)


def test_room_acknowledgements_wait_for_the_delay_then_go_in_one_request(clock: Clock) -> None:
    sent: list[list[str]] = []
    acks = make(clock, sent)
    assert acks.due_in() is None
    acks.add(["a"], defer=True)
    clock.now += DELAY_S / 2
    acks.add(["b", "a"], defer=True)  # a repeat is sent once
    assert acks.due_in() == pytest.approx(DELAY_S / 2)  # counted from the oldest
    acks.flush_if_due()
    assert sent == [] and acks.pending == 2
    clock.now += DELAY_S / 2
    acks.flush_if_due()
    assert sent == [["a", "b"]]
    assert acks.pending == 0 and acks.due_in() is None


def test_a_direct_acknowledgement_goes_at_once_and_takes_the_waiting_ones(clock: Clock) -> None:
    sent: list[list[str]] = []
    acks = make(clock, sent)
    acks.add(["room-1"], defer=True)
    acks.add(["direct-1"], defer=False)
    assert sent == [["room-1", "direct-1"]]
    acks.add([], defer=False)
    assert sent == [["room-1", "direct-1"]]


def test_a_full_batch_goes_without_waiting(clock: Clock) -> None:
    sent: list[list[str]] = []
    acks = make(clock, sent)
    acks.add([f"m{i}" for i in range(MAX_IDS - 1)], defer=True)
    assert sent == []
    acks.add(["last"], defer=True)
    assert len(sent) == 1 and len(sent[0]) == MAX_IDS


def test_a_lost_connection_drops_the_batch_for_the_server_to_push_again(clock: Clock) -> None:
    calls: list[list[str]] = []

    def send(ids: list[str]) -> None:
        calls.append(ids)
        raise ConnectionLost("gone")

    acks = DeliveryAcks(send, clock=clock)
    acks.add(["a"], defer=False)  # logged, not raised: the server re-delivers after login
    assert calls == [["a"]] and acks.pending == 0
    acks.flush()
    assert calls == [["a"]]
