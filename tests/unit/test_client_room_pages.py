"""The client fetches every page of ROOM_CERTIFICATES (rooms of up to 10,000 members)."""

from __future__ import annotations

from typing import Any

import pytest

from client.core.session import SessionWiring
from common.errors import RemoteProtocolError
from common.protocol.opcodes import MessageType


class Proofs:
    """Stands in for KeyTransparency: these tests are about paging, not proofs."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    def accept_head(self, raw: Any) -> str:
        return "head"

    def check_member(self, name: str, der: bytes, proof: Any, head: Any) -> None:
        self.checked.append(name)


class KemKeys:
    """Stands in for PeerKemObserver: these pages carry no KEM keys."""

    def observe(self, name: str, der: bytes, encoded: Any) -> None:
        raise AssertionError("no KEM key was served")


def wiring(pages: list[dict[str, Any]], asked: list[dict[str, Any]]) -> SessionWiring:
    def request(kind: MessageType, params: dict[str, Any] | None) -> dict[str, Any]:
        assert kind is MessageType.ROOM_CERTIFICATES and params is not None
        asked.append(params)
        return pages[len(asked) - 1]

    return SessionWiring(
        request=request,
        start_request=None,  # type: ignore[arg-type]
        rebuild=None,  # type: ignore[arg-type]
        announce=lambda _m: None,
        emit=lambda _e: None,
    )


def page(names: list[str], next_after: int | None) -> dict[str, Any]:
    members = [{"username": n, "certificate": n.encode(), "transparency": {}} for n in names]
    return {"members": members, "transparency_head": {}, "next": next_after}


def test_every_page_is_fetched_from_its_cursor() -> None:
    asked: list[dict[str, Any]] = []
    pages = [page(["a", "b"], 7), page(["c", "d"], 9), page(["e"], None)]
    proofs = Proofs()
    got = wiring(pages, asked).fetch_room_certificates(5, proofs, KemKeys())  # type: ignore[arg-type]
    assert list(got) == ["a", "b", "c", "d", "e"] and got["c"] == b"c"
    assert asked == [{"room_id": 5}, {"room_id": 5, "after": 7}, {"room_id": 5, "after": 9}]
    assert proofs.checked == ["a", "b", "c", "d", "e"]


def test_a_malformed_page_is_refused() -> None:
    bad: dict[str, Any] = {"members": [{"username": 3}], "transparency_head": {}, "next": None}
    with pytest.raises(RemoteProtocolError):
        wiring([bad], []).fetch_room_certificates(5, Proofs(), KemKeys())  # type: ignore[arg-type]
