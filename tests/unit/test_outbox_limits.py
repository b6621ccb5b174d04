"""The outbox never stores or sends a message the server could not take in one record.

An oversized SEND_MESSAGE would get the connection closed, and a stored one would be
resent after every reconnect: it must be refused before it is stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from client.core.models import ChatMessage
from client.core.outbox import MAX_SEND_BYTES, Outbox
from client.core.store import LocalStore
from common.errors import RequestError


def _message(message_id: str) -> ChatMessage:
    return ChatMessage(
        message_id, "room", "12345678", "me", 1, "text", text="hi", outgoing=True, status="sending"
    )


def _params(message_id: str, envelope_bytes: int, members: int) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "target_type": "room",
        "target": 12345678,
        "time": 1,
        "envelopes": {f"member{i}": b"e" * envelope_bytes for i in range(members)},
        "attachments": [],
    }


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "outbox.sqlite3")


def test_an_oversized_message_is_refused_before_it_is_stored(store: LocalStore) -> None:
    sent: list[dict[str, Any]] = []

    def send(params: dict[str, Any]) -> dict[str, Any]:
        sent.append(params)
        return {}

    outbox = Outbox(
        store,
        send=send,
        rebuild=lambda message, params: params,
        on_status=lambda message_id, status: None,
    )
    too_big = _params("a" * 32, 60_000, MAX_SEND_BYTES // 60_000 + 1)
    with pytest.raises(RequestError) as refused:
        outbox.submit(_message("a" * 32), too_big)
    assert refused.value.code == "message_too_large"
    assert sent == []
    assert store.get_message("a" * 32) is None
    assert store.outbox_pending() == []

    fits = _params("b" * 32, 300, 100)
    assert outbox.submit(_message("b" * 32), fits).status == "sent"
    assert len(sent) == 1


def test_a_reseal_that_grows_too_large_fails_instead_of_looping(store: LocalStore) -> None:
    attempts: list[dict[str, Any]] = []

    def send(params: dict[str, Any]) -> dict[str, Any]:
        attempts.append(params)
        if len(attempts) == 1:
            raise RequestError("missing_envelope", "the room has new members")
        return {}

    statuses: list[str] = []
    outbox = Outbox(
        store,
        send=send,
        rebuild=lambda message, params: _params("c" * 32, 60_000, 40),
        on_status=lambda message_id, status: statuses.append(status),
    )
    with pytest.raises(RequestError) as refused:
        outbox.submit(_message("c" * 32), _params("c" * 32, 300, 3))
    assert refused.value.code == "message_too_large"
    assert len(attempts) == 1  # the grown message was never put on the wire
    assert statuses[-1] == "failed"
    assert store.outbox_pending() == []


def test_a_send_racing_a_reconnect_stays_queued_and_goes_with_the_replay(
    store: LocalStore,
) -> None:
    """The new connection is up but not logged in yet: the message must not be failed."""
    answers: list[RequestError | None] = [RequestError("not_authenticated", "log in first")]
    sent: list[str] = []
    statuses: list[tuple[str, str]] = []

    def send(params: dict[str, Any]) -> dict[str, Any]:
        sent.append(params["message_id"])
        answer = answers.pop(0) if answers else None
        if answer is not None:
            raise answer
        return {}

    outbox = Outbox(
        store,
        send=send,
        rebuild=lambda message, params: params,
        on_status=lambda message_id, status: statuses.append((message_id, status)),
    )
    queued = outbox.submit(_message("b" * 32), _params("b" * 32, 10, 2))
    assert queued.status == "sending"
    assert [message_id for message_id, _ in store.outbox_pending()] == ["b" * 32]
    assert outbox.replay() == 1  # after the login
    assert sent == ["b" * 32, "b" * 32]
    assert store.outbox_pending() == []
    assert statuses == [("b" * 32, "sent")]
