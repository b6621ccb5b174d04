"""Sealed bodies that are not messages: receipts, and requests for a chain's state.

They ride on the sender's chain like any message, so the server can neither read nor
forge them, and they are consumed by the recipient's client instead of being shown:

- a receipt (`receipt`): the friend's client stored ("delivered") or showed ("read")
  our messages (`client.core.receipts`);
- a chain request (`chain_request`): a member holds envelopes of `sender`'s chain
  `chain` that it cannot open, since the envelope carrying its copy of the chain's
  state never reached it; the sender gives that copy again (`client.core.chain_recovery`);
- a chain copy (`chain_copy`): an envelope with nothing to show, sent only to carry
  the chain states asked for.

Each is sealed for its conversation (`chat`), like any body (`client.core.binding`).
One decode tells a control body from a message (`parse_control`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from client.core.binding import chat_matches
from client.core.models import ChatKind
from common.crypto.sender_chain import CHAIN_ID_SIZE
from common.errors import ProtocolError, RemoteProtocolError, ValidationError
from common.protocol import codec
from common.validation import validate_username

RECEIPT_STATES = ("delivered", "read")
MAX_RECEIPT_IDS = 1000
CONTROL_LIMITS = codec.Limits(max_size=64 * 1024, max_depth=3, max_items=MAX_RECEIPT_IDS + 16)
MESSAGE_ID_PATTERN = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Receipt:
    """What the recipient's client seals back to a sender: these messages reached it
    ("delivered": stored) or were seen ("read": shown in a focused window)."""

    state: str
    ids: tuple[str, ...]


@dataclass(frozen=True)
class ChainRequest:
    """The member that sealed this cannot open `sender`'s chain `chain_id`."""

    sender: str
    chain_id: bytes


@dataclass(frozen=True)
class ChainCopy:
    """An envelope that only carries chain states; nothing to store or show."""


Control = Receipt | ChainRequest | ChainCopy


def receipt_body(state: str, ids: list[str]) -> bytes:
    if state not in RECEIPT_STATES or not 0 < len(ids) <= MAX_RECEIPT_IDS:
        raise ValueError("bad receipt")
    return codec.encode({"kind": "receipt", "state": state, "ids": ids})


def chain_request_body(sender: str, chain_id: bytes) -> bytes:
    if len(chain_id) != CHAIN_ID_SIZE:
        raise ValueError("bad chain id")
    return codec.encode({"kind": "chain_request", "sender": sender, "chain": chain_id})


def chain_copy_body() -> bytes:
    return codec.encode({"kind": "chain_copy"})


def parse_control(
    body: bytes, target_type: ChatKind, target: str | int, recipient: str
) -> Control | None:
    """The control body in an opened body, None if the body is a message.

    A control body must be sealed for the conversation it was delivered in (a receipt
    only for a direct chat with us); anything malformed is RemoteProtocolError.
    """
    try:
        value = codec.decode(body, CONTROL_LIMITS)
    except ProtocolError:
        return None  # larger than any control body: a message body
    if not isinstance(value, dict):
        return None
    kind = value.get("kind")
    if kind not in ("receipt", "chain_request", "chain_copy"):
        return None
    if not chat_matches(value.get("chat"), target_type, target, recipient):
        raise RemoteProtocolError(f"{kind} sealed for another conversation")
    if kind == "receipt":
        if target_type != "user":
            raise RemoteProtocolError("a receipt in a room")
        return _receipt(value)
    if kind == "chain_copy":
        return ChainCopy()
    sender, chain_id = value.get("sender"), value.get("chain")
    try:
        valid = validate_username(sender) == sender  # as stored: no other spelling
    except ValidationError:
        valid = False
    if not valid or not isinstance(sender, str):
        raise RemoteProtocolError("malformed chain request")
    if not isinstance(chain_id, bytes) or len(chain_id) != CHAIN_ID_SIZE:
        raise RemoteProtocolError("malformed chain request")
    return ChainRequest(sender, chain_id)


def _receipt(value: dict[str, object]) -> Receipt:
    state, ids = value.get("state"), value.get("ids")
    if state not in RECEIPT_STATES or not isinstance(ids, list) or len(ids) > MAX_RECEIPT_IDS:
        raise RemoteProtocolError("malformed receipt")
    if not all(isinstance(item, str) and MESSAGE_ID_PATTERN.fullmatch(item) for item in ids):
        raise RemoteProtocolError("malformed receipt")
    return Receipt(str(state), tuple(ids))
