"""Opcode numbers are part of the wire format: the enum and docs/protocol.md agree."""

from __future__ import annotations

import re
from pathlib import Path

from common.protocol.opcodes import PUSHES, UNAUTHENTICATED_REQUESTS, MessageType

PROTOCOL_DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
ROW = re.compile(r"^\| (\d+) \| `([A-Z_]+)` \|", re.MULTILINE)

# Numbers already released may never change meaning; new ones are only appended.
RELEASED = {
    "REPLY": 1, "ERROR": 2, "PING": 3, "REGISTER": 10, "LOGIN": 11, "LOGOUT": 12,
    "KICKED": 13, "CONTACT_LIST": 20, "PRESENCE": 21, "CONTACT_ADDED": 22,
    "CONTACT_REMOVED": 23, "SEARCH_USERS": 30, "ADD_FRIEND": 31, "FRIEND_REQUEST": 32,
    "RESOLVE_FRIEND_REQUEST": 33, "DELETE_FRIEND": 34, "CERTIFICATE": 35,
    "FRIEND_REQUEST_REFUSED": 36,
    "SEND_MESSAGE": 40, "NEW_MESSAGE": 41, "ACK_DELIVERY": 42, "MESSAGE_DELIVERED": 43,
    "CREATE_ROOM": 50, "JOIN_ROOM": 51, "LEAVE_ROOM": 52, "ROOM_MEMBERS": 53,
    "ROOM_MEMBER_EVENT": 54, "ROOM_CERTIFICATES": 55, "UPLOAD_BEGIN": 60,
    "UPLOAD_CHUNK": 61, "DOWNLOAD_CHUNK": 62, "KT_TREE_HEAD": 70, "KT_CONSISTENCY": 71,
    "KT_USER_ENTRIES": 72, "KT_RANGE": 73,
}  # fmt: skip


def test_every_opcode_is_documented_with_its_number() -> None:
    documented = {name: int(number) for number, name in ROW.findall(PROTOCOL_DOC.read_text())}
    assert documented == {m.name: int(m) for m in MessageType}


def test_released_numbers_never_change() -> None:
    for name, number in RELEASED.items():
        assert MessageType[name] == number


def test_pushes_and_anonymous_requests_are_disjoint() -> None:
    assert not PUSHES & UNAUTHENTICATED_REQUESTS
    assert MessageType.LOGIN in UNAUTHENTICATED_REQUESTS
    assert MessageType.SEND_MESSAGE not in UNAUTHENTICATED_REQUESTS
